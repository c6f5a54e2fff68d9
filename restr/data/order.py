"""The training data order: deterministic, resumable, split over processes.

Each epoch is a permutation of the training items drawn from a generator seeded by
(seed, epoch), cut into global batches (the last incomplete one dropped); process r
takes the r-th slice of each. Each item's augmentation is seeded by (seed, epoch,
position), whichever DataLoader worker loads it. The order is therefore a function of
the seed alone, and a run resumed at step s of an epoch skips exactly the batches it
had consumed: on CPU with deterministic settings, a run killed at any point and
resumed ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import os
import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import ConfigError
from .refer import collate
from .transforms import normalize_batch


def item_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the augmentation of the item at ``position`` of ``epoch``'s permutation."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, position]).generate_state(1, np.uint64)[0] >> 1)


class ResumableSampler(Sampler):
    """Yields ``(dataset index, item seed)`` for one process, from a given step of an epoch.

    Epoch ``e``'s permutation comes from ``torch.Generator().manual_seed(seed + e)``
    (identity order with ``shuffle=False``); global batch ``s`` is items
    ``[s*G, (s+1)*G)`` of it; process ``rank`` takes the slice
    ``[rank*G/W, (rank+1)*G/W)`` of each global batch, in ``grad_accum`` micro-batches.
    """

    def __init__(self, n: int, global_batch: int, world: int, rank: int, seed: int, shuffle: bool = True):
        if global_batch % world:
            raise ConfigError(f"train.batch_size = {global_batch} is not divisible by the {world} processes")
        if n < global_batch:
            raise ConfigError(f"the training split has {n} items, fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.world, self.rank = n, global_batch, world, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_position(self, epoch: int, step_in_epoch: int) -> None:
        self.epoch, self.start_step = int(epoch), int(step_in_epoch)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = self.order(self.epoch).tolist()
        share = self.global_batch // self.world
        for s in range(self.start_step, self.steps_per_epoch):
            lo = s * self.global_batch + self.rank * share
            for pos in range(lo, lo + share):
                yield perm[pos], item_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * (self.global_batch // self.world)


class SeededItems(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is drawn under ``torch.manual_seed(seed)``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.base[index]


def loader_workers(num_workers: int, processes_per_machine: int = 1) -> int:
    """``data.num_workers``, with -1 resolved to one worker per core left to this process
    (the cores this process may use, shared among the processes on the machine, minus
    one for the training loop), at most 12."""
    if num_workers >= 0:
        return num_workers
    if num_workers != -1:
        raise ConfigError(f"data.num_workers = {num_workers}: give a count >= 0, or -1 for one per free core")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(12, cores // max(processes_per_machine, 1) - 1))


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


class TrainBatches:
    """The optimiser steps' batches of one process, epoch by epoch, on the device.

    ``epoch(e, start)`` yields, for each remaining step of epoch ``e`` from step
    ``start``, the list of ``grad_accum`` micro-batches ``(images, words, masks,
    image_index)``: images normalised on the device (they travel as uint8) and cast to
    ``dtype``; ``image_index`` is None for flat batches, and maps each expression to its
    image for batches of expression groups (:mod:`restr.data.groups`). ``micro_batch``
    counts the sampler's units (expressions, or groups).
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, micro_batch: int, grad_accum: int,
                 workers: int, device: torch.device, dtype: torch.dtype = torch.float32, collate=None):
        self.data, self.sampler, self.collate = SeededItems(dataset), sampler, collate
        self.micro_batch, self.grad_accum, self.workers = micro_batch, grad_accum, workers
        self.device, self.dtype = device, dtype

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        collate_fn = self.collate or collate
        self.sampler.set_position(epoch, start)
        generator = torch.Generator().manual_seed(self.sampler.seed + epoch)
        loader = DataLoader(self.data, batch_size=self.micro_batch, sampler=self.sampler, num_workers=self.workers,
                            collate_fn=collate_fn, pin_memory=self.device.type == "cuda", drop_last=False,
                            worker_init_fn=_worker_init, generator=generator, persistent_workers=False)
        it = iter(loader)
        for _ in range(start, self.steps_per_epoch):
            yield [self.to_device(next(it)) for _ in range(self.grad_accum)]

    def to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        dev = self.device
        images = normalize_batch(batch["image"].to(dev, non_blocking=True)).to(self.dtype)
        words = batch["words"].to(dev, non_blocking=True)
        index = batch["image_index"].to(dev, non_blocking=True) if "image_index" in batch else None
        return images, words, batch["mask"].to(dev, non_blocking=True).to(self.dtype), index
