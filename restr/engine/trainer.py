"""Train ReSTR: ``python -m restr train --preset P --data ROOT --dataset D --split-by S --run RUN_DIR``.

The same command runs on several GPUs (or CPU processes) under torchrun::

    torchrun --nproc_per_node N -m restr train ...

Optimisation (FIDELITY.md): AdamW, two lr groups (the ViT at ``vit_lr_scale`` x lr),
weight decay, linear warm-up from 0 then polynomial decay (:mod:`restr.engine.optim`), loss
Eq. (12) with lambda and tau. ``train.batch_size`` is the GLOBAL batch of one optimiser
step: it is split over the processes and the ``grad_accum`` micro-steps, so the same
config trains the same way on 1 or N processes.

The pieces: the data order (:mod:`restr.data.order`: deterministic and resumable, so a
run killed at any point and resumed with ``--resume`` ends with the same weights as an
uninterrupted one), one optimiser step (:class:`restr.engine.step.TrainStep`: it never makes
the host wait for the device; ``python -m restr bench`` times the same step), the run
directory (:class:`restr.engine.checkpointer.Checkpointer`; only rank 0 writes) and validation
(:func:`validate`, the evaluator of :mod:`restr.eval.evaluate`). :func:`train` is the loop
that ties them together.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..config import Config, ConfigError
from ..data.errors import DataError
from ..data.groups import ExpressionGroups, GroupedSampler, collate_groups
from ..data.order import ResumableSampler, TrainBatches, loader_workers
from ..eval.evaluate import Inference, SegmentationEvaluator, spread_indices
from ..utils.devices import cpu_threads
from ..utils.files import DiskFullError
from .checkpointer import Checkpointer, TrainingError, rng_state
from .distributed import Dist, setup_distributed
from .step import Diverged, TrainStep, build_train_step

PRETRAIN = "pretrain"  # model.vit_weights: the ViT pretrained on the run's own training images
# Testing hook: SIGKILL this process right after the given optimiser step (see tests).
KILL_ENV = "RESTR_TEST_KILL_AT_STEP"


# ----------------------------------------------------------------------------------------
# the pieces

def build_datasets(cfg: Config, vocab=None):
    """(train ReferDataset, val ReferDataset or None) for ``cfg.data``; the vocabulary comes
    from the training split unless ``vocab`` is given."""
    from ..data.refer import ReferDataset

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
    from ..data.vocab import embedding_matrix, load_glove

    words, vectors = load_glove(cfg.data.glove)
    if vectors.shape[1] != cfg.model.word_dim:
        raise ConfigError(
            f"model.word_dim = {cfg.model.word_dim} but the GloVe vectors ({cfg.data.glove or 'GloVe 6B 50d'}) are "
            f"{vectors.shape[1]}-d: set data.glove to a {cfg.model.word_dim}-d glove.*.txt or model.word_dim = "
            f"{vectors.shape[1]}")
    matrix, _ = embedding_matrix(vocab, words, vectors)
    return matrix


def training_batches(train_set, t, d: Dist, workers: int, dtype: torch.dtype) -> TrainBatches:
    """This process's batches: flat (one expression per item) or, with
    ``train.expressions_per_image = E > 1``, groups of E expressions of one image."""
    per_image = t.expressions_per_image
    micro = t.batch_size // (per_image * d.world * t.grad_accum)  # items (expressions or groups) per micro-batch
    if per_image == 1:
        sampler = ResumableSampler(len(train_set), t.batch_size, d.world, d.rank, t.seed, shuffle=True)
        return TrainBatches(train_set, sampler, micro, t.grad_accum, workers, d.device, dtype)
    sampler = GroupedSampler(train_set, per_image, t.batch_size, d.world, d.rank, t.seed)
    return TrainBatches(ExpressionGroups(train_set), sampler, micro, t.grad_accum, workers, d.device, dtype,
                        collate=collate_groups)


def set_cpu_threads(threads: int, workers: int, processes: int, d: Dist) -> None:
    """On a CPU: ``train.threads`` intra-op threads, or with 0 the cores left after the
    loader workers; an OMP_NUM_THREADS set by the user is left alone."""
    if d.device.type != "cpu" or (threads == 0 and "OMP_NUM_THREADS" in os.environ):
        return
    torch.set_num_threads(threads or cpu_threads(workers, processes))


def vit_weights_for(cfg: Config, state: dict | None, d: Dist):
    """The model config to build, with ``model.vit_weights = "pretrain"`` resolved to the
    ViT pretrained for this data set as ``model.vit_pretrain`` says (:mod:`restr.engine.pretrain`;
    made once, by the main process, and cached). A resumed run takes its weights from the checkpoint."""
    if cfg.model.vit_weights != PRETRAIN:
        return cfg.model
    if state is not None:
        return cfg.override({"model.vit_weights": None}).model
    from .pretrain import ensure_vit_start

    data = cfg.data
    if d.main:
        ensure_vit_start(cfg.model, data.root, data.dataset, data.split_by)
    d.barrier()
    path = ensure_vit_start(cfg.model, data.root, data.dataset, data.split_by)
    return cfg.override({"model.vit_weights": str(path)}).model


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, ask torch for deterministic kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def validate(model: torch.nn.Module, val_set, indices: list[int], t, d: Dist, batch_size: int) -> dict:
    """The paper's metrics of ``model`` on this rank's share ``indices`` of the validation
    split, summed over the ranks (every rank must call it)."""
    from ..utils.devices import resolve_amp

    evaluator = SegmentationEvaluator(val_set.dataset, distributed=d.enabled)
    inference = Inference(model, resolve_amp(t.amp, d.device), max(batch_size, 32), num_workers=0)
    return inference.run(val_set, evaluator, indices)


def log_row(loop, step: TrainStep, images: int, seconds: float) -> dict:
    """The metrics row of a log step: mean losses since the last one, lr, speed."""
    means, _ = step.take_window()  # the host waits for the device here
    # the step's three loss parts: loss, loss_patch (ReSTR) or loss_rec (M3Att), loss_pixel
    row = {"step": loop.step, "epoch": loop.epoch, **dict(zip(step.part_names, means)), "lr": step.lr["rest"]}
    if "vision" in step.lr:
        row["lr_vit"] = step.lr["vision"]
    row.update(images_per_s=images / seconds, elapsed_s=seconds)
    if step.grad_norm is not None:
        row["grad_norm"] = float(step.grad_norm)
    return row


def val_row(loop, split: str, result: dict, batch_size: int) -> dict:
    """The metrics row of a validation, with the training done so far: expressions seen
    and seconds of training (validation time left out), for learning curves."""
    row = {"step": loop.step, "epoch": loop.epoch, "split": split,
           **{k: v for k, v in result.items() if k not in ("buckets", "seconds", "expressions_per_s")}}
    row.update(val_seconds=result["seconds"], expressions_seen=loop.step * batch_size, elapsed_s=loop.train_s)
    return row


def progress_bar(enabled: bool, total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="train", unit="it", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, disable=not enabled)


def events_after(step: int, t, validating: bool) -> tuple[bool, bool, bool]:
    """Whether to (log, validate, checkpoint) after optimiser step ``step``. The last step
    always logs; its validation and checkpoint come after the loop."""
    last = step == t.iterations
    log_now = step % max(t.log_every, 1) == 0 or last
    val_now = validating and t.val_every > 0 and step % t.val_every == 0 and not last
    ckpt_now = t.ckpt_every > 0 and step % t.ckpt_every == 0 and not last
    return log_now, val_now, ckpt_now


def kill_if_asked(step: int) -> None:
    """The kill-and-resume tests' hook: SIGKILL right after step ``$RESTR_TEST_KILL_AT_STEP``."""
    if step == int(os.environ.get(KILL_ENV, "-1")):
        os.kill(os.getpid(), signal.SIGKILL)


def diverged_error(exc: Diverged, ckpt: Checkpointer, steps_per_epoch: int) -> TrainingError:
    last = ckpt.path("last")
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint had been saved yet"
    ckpt.metrics.write({"step": exc.step, "event": "diverged", "loss": str(exc.value)})
    return TrainingError(f"loss is {exc.value} at step {exc.step} (epoch {exc.step // steps_per_epoch}); no weights "
                         f"from that step on were kept or saved; {kept}. Lower train.lr or set train.grad_clip.")


# ----------------------------------------------------------------------------------------
# the trainer

RESUME_CHOICES = (False, True, "last", "best")


def take_run_folder(ckpt: Checkpointer, d: Dist) -> None:
    """The main process takes the run folder's lock (every rank learns whether it could)
    and removes the leftovers of writes that kills interrupted."""
    from ..runs.lock import RunLocked

    refused = None
    if d.main:
        try:
            ckpt.lock.acquire(wait=False)
            ckpt.clean_temporaries()
        except RunLocked as exc:
            refused = str(exc)
    refused = d.gather(refused)[0]
    if refused:
        raise TrainingError(refused)


def data_stats_hint(cfg: Config) -> str:
    d = cfg.data
    image_root = f" --image-root {d.image_root}" if d.image_root else ""
    return (f"(every file of the data set is checked by: python -m restr data stats --root {d.root} --dataset "
            f"{d.dataset} --split-by {d.split_by}{image_root})")


def train(cfg: Config, out: str | os.PathLike, resume: bool | str = False, device: str = "auto", progress: bool = True,
          dtype: torch.dtype = torch.float32, requested_hash: str | None = None, allow: Iterable[str] = ()) -> Path:
    """Train ``cfg`` into the run directory ``out`` (or resume it); return the run directory.

    ``resume``: False for a new run; True (or "last") continues from checkpoints/last.pt,
    "best" from checkpoints/best.pt. A finished run resumes to nothing. ``allow`` holds what
    the command may do beyond that: "extend", give a resumed run more iterations than it
    had (its lr schedule becomes that of the new length; a notice gives the lr before and
    after); "force", start a new run in an ``out`` that holds files a run does not write
    (the user's; refused otherwise). ``dtype=torch.float64`` trains in double precision
    (used by the tests to compare runs exactly). Only one process at a time trains in
    ``out`` (:mod:`restr.runs.lock`).

    Raises :class:`TrainingError` on a diverged loss, a full disk, a run folder held by
    another process or one that does not fit the command; :class:`ConfigError` on a bad
    value or a config that differs from the run's; :class:`RunError` on a corrupt checkpoint.
    """
    from ..data.fingerprint import data_fingerprint
    from .assets import check_assets

    d = setup_distributed(device)
    cfg.train.validate(world=d.world)  # every value checked before anything touches the disk
    if resume not in RESUME_CHOICES:
        raise ConfigError(f"resume = {resume!r}: choose False, True, 'last' or 'best'")
    unknown = set(allow) - {"extend", "force"}
    if unknown:
        raise ConfigError(f"allow = {sorted(unknown)}: choose among 'extend' and 'force'")
    extend = "extend" in allow
    if extend and not resume:
        raise ConfigError("--extend lengthens an existing run: use it with --resume")
    if not resume:  # a resumed run takes its ViT and word vectors from its checkpoint
        check_assets(cfg)  # the ViT weights and GloVe file it needs, before any work
    ckpt = Checkpointer(out, main=d.main)
    take_run_folder(ckpt, d)
    try:
        vocab, state = ckpt.open(cfg, resume, extend, data_fingerprint(cfg.data), force="force" in allow)
        iterations = cfg.train.iterations
        if state is not None and state.get("finished") and int(state["step"]) == iterations:
            if d.main:
                print(f"{ckpt.run_dir} is finished (step {iterations} of {iterations}); nothing to do",
                      file=sys.stderr)
            return ckpt.run_dir
        if d.main and resume:
            where = (f"from {ckpt.source} (step {state['step']} of {iterations})" if state is not None
                     else "it saved no checkpoint yet: starting from step 0")
            print(f"resuming {ckpt.run_dir} {where}", file=sys.stderr)
            if ckpt.extended_from is not None:
                print(ckpt.extension_note(cfg, state), file=sys.stderr)
        d.barrier()  # every rank has looked at the run directory before rank 0 writes into it
        return run_training(cfg, ckpt, d, (vocab, state), requested_hash or cfg.hash(), progress, dtype)
    finally:
        ckpt.lock.release()


def run_training(cfg: Config, ckpt: Checkpointer, d: Dist, opened: tuple, requested_hash: str, progress: bool,
                 dtype: torch.dtype) -> Path:
    """Build everything, then write the run's files and train (the run folder is held)."""
    from ..model import build_model

    vocab, state = opened
    train_set, val_set = build_datasets(cfg, vocab)
    cfg = cfg.override({"model.vocab_size": len(train_set.vocab)})
    t = cfg.train
    seed_everything(t.seed, t.deterministic)
    vectors = None if state is not None else word_vectors_for(cfg, train_set.vocab)
    model = build_model(vit_weights_for(cfg, state, d), vectors).to(d.device, dtype=dtype)
    step = build_train_step(model, t, d)  # fused AdamW, lr schedule, DDP under torchrun
    loop = ckpt.restore(state, step, d.rank)  # a new run starts at step 0
    if ckpt.extended_from is not None:
        schedule_at(step, loop.step)  # the new length's lr from the first step on
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = loader_workers(cfg.data.num_workers, local_processes)
    set_cpu_threads(t.threads, workers, local_processes, d)
    batches = training_batches(train_set, t, d, workers, dtype)
    started = False
    try:  # the run's files are written only now: a config that cannot train never reaches the disk
        ckpt.start(cfg, train_set.vocab, requested_hash, state)
        started = True
        train_loop(cfg, ckpt, d, step, loop, batches, val_set, progress)
    except Diverged as exc:
        raise diverged_error(exc, ckpt, batches.steps_per_epoch) from None
    except DiskFullError as exc:
        raise ckpt.disk_full_error(exc, loop.step if started else None) from None
    except DataError as exc:  # an image or mask that cannot be read (from a loader worker, in one line)
        raise type(exc)(f"{exc}\n{data_stats_hint(cfg)}") from None
    return ckpt.run_dir


def train_loop(cfg: Config, ckpt: Checkpointer, d: Dist, step: TrainStep, loop, batches: TrainBatches, val_set,
               progress: bool) -> None:
    """Optimiser steps from ``loop``'s position to ``train.iterations``, with the logs,
    validations and checkpoints on the way, and the final ones."""
    t = cfg.train
    micro = t.batch_size // (d.world * t.grad_accum)  # expressions per micro-batch
    val_cap = t.val_max_expressions if t.val_max_expressions and t.val_max_expressions > 0 else None
    val_indices = spread_indices(len(val_set), val_cap)[d.rank::d.world] if val_set is not None else []
    final_validation = val_set is not None and loop.step < t.iterations  # else done before the checkpoint

    def validate_and_save_best() -> None:  # every rank validates its share; rank 0 writes
        result = validate(step.core, val_set, val_indices, t, d, micro)
        ckpt.metrics.write(val_row(loop, cfg.data.val_split, result, t.batch_size))
        if not bar.disable:
            bar.write(f"step {loop.step}: val cIoU {result['cum_iou']:.4f} mIoU {result['mean_iou']:.4f} "
                      f"({result['n']} expressions)", file=sys.stderr)
        if result["cum_iou"] > loop.best_val:
            loop.best_val = result["cum_iou"]
            ckpt.save("best", loop, step, d.gather(rng_state()), cfg)

    bar = progress_bar(progress and d.main, t.iterations, loop.step)
    images, t0 = 0, time.perf_counter()
    step.model.train()
    try:
        while loop.step < t.iterations:
            if loop.step_in_epoch >= batches.steps_per_epoch:
                loop.next_epoch()
            for micro_batches in islice(batches.epoch(loop.epoch, loop.step_in_epoch), t.iterations - loop.step):
                step(micro_batches)  # queued on the device; nothing is read back here
                loop.advance()
                images += t.batch_size
                bar.update(1)
                log_now, val_now, ckpt_now = events_after(loop.step, t, val_set is not None)
                if log_now or val_now or ckpt_now:
                    step.check()  # the host waits for the device: is the loss still finite?
                if log_now or val_now:
                    seconds = time.perf_counter() - t0
                    loop.train_s += seconds
                if log_now:
                    row = log_row(loop, step, images, seconds)
                    ckpt.metrics.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                    img_s=f"{row['images_per_s']:.0f}")
                if val_now:
                    validate_and_save_best()
                if log_now or val_now:
                    images, t0 = 0, time.perf_counter()  # the speed window leaves validation out
                if ckpt_now:
                    ckpt.save("last", loop, step, d.gather(rng_state()), cfg)
                kill_if_asked(loop.step)
        step.check()
        if final_validation:
            validate_and_save_best()
        ckpt.save("last", loop, step, d.gather(rng_state()), cfg, finished=True)
        ckpt.metrics.write({"step": loop.step, "event": "finished"})
    finally:
        bar.close()


def schedule_at(step: TrainStep, at: int) -> None:
    """Set every group's lr to its schedule's value at optimiser step ``at`` (an extended run)."""
    sched = step.scheduler
    for group, base, fn in zip(step.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(at)
    sched._last_lr = [g["lr"] for g in step.optimizer.param_groups]


# ----------------------------------------------------------------------------------------
# command line
