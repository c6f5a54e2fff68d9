"""Train ReSTR: ``python -m restr train --preset P --data ROOT --dataset D --split-by S --run RUN_DIR``.

The same command runs on several GPUs (or CPU processes) under torchrun::

    torchrun --nproc_per_node N -m restr train ...

Optimisation (the book's fidelity page, ``book/fidelity.md``): AdamW, two lr groups (the ViT at ``vit_lr_scale`` x lr),
weight decay, linear warm-up from 0 then polynomial decay (:mod:`restr.engine.optim`), loss
Eq. (12) with lambda and tau. ``train.batch_size`` is the GLOBAL batch of one optimiser
step: it is split over the processes and the ``grad_accum`` micro-steps, so the same
config trains the same way on 1 or N processes.

The pieces: the data order (:mod:`restr.data.order`: deterministic and resumable, so a
run killed at any point and resumed with ``--resume`` ends with the same weights as an
uninterrupted one), one optimiser step (:class:`restr.engine.step.TrainStep`: it never makes
the host wait for the device; ``python -m restr bench`` times the same step), the run
directory (:class:`restr.engine.checkpointer.Checkpointer`; only rank 0 writes) and validation
(:func:`run_validation`, the evaluator of :mod:`restr.eval.evaluate`). The :class:`Trainer`
ties them together: it resolves the config once (the resume plan, the vocabulary, the ViT
weights) and holds what it built; its :meth:`~Trainer.fit` is the loop. :func:`train` is
``Trainer(...).fit()`` with the run folder's lock let go at the end.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..config import Config, ConfigError
from ..data.errors import DataError
from ..data.fingerprint import data_fingerprint
from ..data.groups import ExpressionGroups, GroupedSampler, collate_groups
from ..data.order import ResumableSampler, TrainBatches, loader_workers
from ..data.preload import workers_share_it
from ..data.refer import ReferDataset
from ..data.synth import KINDS, expression_kinds
from ..data.vocab import embedding_matrix, load_glove
from ..eval.evaluate import Inference, SegmentationEvaluator, spread_indices
from ..model import build_model
from ..runs.lock import RunLocked
from ..utils.devices import cpu_threads, resolve_amp
from ..utils.files import DiskFullError
from .assets import check_assets
from .checkpointer import Checkpointer, rng_state
from .distributed import Dist, setup_distributed
from .pretrain import ensure_vit_start
from .resume import (STOP_REQUESTS, TrainingError, TrainingStopped, check_request, plan_resume,
                     request_stop)
from .step import Diverged, TrainStep, build_train_step

PRETRAIN = "pretrain"  # model.vit_weights: the ViT pretrained on the run's own training images
# Testing hook: SIGKILL this process right after the given optimiser step (see tests).
KILL_ENV = "RESTR_TEST_KILL_AT_STEP"
TERM_ENV = "RESTR_TEST_TERM_AT_STEP"
SLOW_ENV = "RESTR_TEST_STEP_SLEEP"


# ----------------------------------------------------------------------------------------
# the pieces

def build_datasets(cfg: Config, vocab=None):
    """(train ReferDataset, val ReferDataset or None) for ``cfg.data``; the vocabulary comes
    from the training split unless ``vocab`` is given."""

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

    words, vectors = load_glove(cfg.data.glove)
    if vectors.shape[1] != cfg.model.word_dim:
        raise ConfigError(
            f"model.word_dim = {cfg.model.word_dim} but the GloVe vectors ({cfg.data.glove or 'GloVe 6B 50d'}) are "
            f"{vectors.shape[1]}-d: set data.glove to a {cfg.model.word_dim}-d glove.*.txt or model.word_dim = "
            f"{vectors.shape[1]}")
    matrix, _ = embedding_matrix(vocab, words, vectors)
    return matrix


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the loader's
    workers, made anew each epoch), user and system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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


def val_kinds(val_set) -> tuple[tuple[str, ...], dict[int, str]] | None:
    """What each validation expression needs (attributes only, a region, a relation, an
    ordinal), when the data set is the embedded one and its programs say it; else None."""
    if val_set is None or val_set.dataset != "synthref":
        return None
    kinds = expression_kinds(val_set.data.root, val_set.refs)
    return (KINDS, kinds) if kinds else None


def run_validation(model: torch.nn.Module, val_set, indices: list[int], t, d: Dist, batch_size: int,
                   kinds=None) -> dict:
    """The paper's metrics of ``model`` on this rank's share ``indices`` of the validation
    split, summed over the ranks (every rank must call it); with ``kinds``
    (:func:`val_kinds`), also by what the expressions need."""

    evaluator = SegmentationEvaluator(val_set.dataset, distributed=d.enabled, kinds=kinds)
    inference = Inference(model, resolve_amp(t.amp, d.device), max(batch_size, 32), num_workers=0)
    return inference.run(val_set, evaluator, indices)


def arithmetic_name(amp_dtype: torch.dtype | None) -> str:
    """What the matrix products of a step compute in: the autocast dtype, else float32. A
    run resumed on another machine may change it; every log row records its own."""
    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(amp_dtype, "float32")


def log_row(loop, step: TrainStep, images: int, seconds: float) -> dict:
    """The metrics row of a log step: mean losses since the last one, lr, speed."""
    means, _ = step.take_window()  # the host waits for the device here
    # the step's three loss parts: loss, loss_patch (ReSTR) or loss_rec (M3Att), loss_pixel
    row = {"step": loop.step, "epoch": loop.epoch, **dict(zip(step.part_names, means)), "lr": step.lr["rest"]}
    if "vision" in step.lr:
        row["lr_vit"] = step.lr["vision"]
    row.update(images_per_s=images / seconds, elapsed_s=seconds, arithmetic=arithmetic_name(step.amp_dtype))
    if step.grad_norm is not None:
        row["grad_norm"] = float(step.grad_norm)
    return row


def val_row(loop, split: str, result: dict, batch_size: int) -> dict:
    """The metrics row of a validation, with the training done so far: expressions seen
    and seconds of training (validation time left out), for learning curves."""
    row = {"step": loop.step, "epoch": loop.epoch, "split": split,
           **{k: v for k, v in result.items() if k not in ("buckets", "kinds", "seconds", "expressions_per_s")}}
    if "kinds" in result:  # the curve of each kind of expression: where a model learns place words
        row["kinds"] = {k: {"n": m["n"], "cum_iou": m["cum_iou"]} for k, m in result["kinds"].items()}
    row.update(val_seconds=result["seconds"], expressions_seen=loop.step * batch_size, elapsed_s=loop.train_s,
               cpu_s=loop.cpu_s)
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
    """The kill-and-resume tests' hook: SIGKILL right after step ``$RESTR_TEST_KILL_AT_STEP``,
    SIGTERM (a request to stop) right after step ``$RESTR_TEST_TERM_AT_STEP``; a pause of
    ``$RESTR_TEST_STEP_SLEEP`` seconds after every step (a long run in a short test)."""
    for env, sig in ((KILL_ENV, signal.SIGKILL), (TERM_ENV, signal.SIGTERM)):
        if step == int(os.environ.get(env, "-1")):
            os.kill(os.getpid(), sig)
    if os.environ.get(SLOW_ENV):
        time.sleep(float(os.environ[SLOW_ENV]))


@contextmanager
def stop_requests(enabled: bool = True):
    """Within: a SIGTERM no longer kills the process; it is recorded in the list this
    yields, and the loop stops after the step under way, at a checkpoint
    (:class:`TrainingStopped`). Not in a worker thread (Python delivers signals to the main
    one) and not with several processes (each would stop at its own step); there the
    default, a kill, stays."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield []
        return
    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield STOP_REQUESTS
    finally:
        signal.signal(signal.SIGTERM, previous)


def diverged_error(exc: Diverged, ckpt: Checkpointer, steps_per_epoch: int) -> TrainingError:
    last = ckpt.path("last")
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint had been saved yet"
    ckpt.metrics.write({"step": exc.step, "event": "diverged", "loss": str(exc.value)})
    return TrainingError(f"loss is {exc.value} at step {exc.step} (epoch {exc.step // steps_per_epoch}); no weights "
                         f"from that step on were kept or saved; {kept}. Lower train.lr or set train.grad_clip.")


# ----------------------------------------------------------------------------------------
# the trainer

def take_run_folder(ckpt: Checkpointer, d: Dist) -> None:
    """The main process takes the run folder's lock (every rank learns whether it could)
    and removes the leftovers of writes that kills interrupted."""

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


def preload_split(train_set, workers: int, cfg: Config, d: Dist) -> None:
    """Decode the training split once, before the loader's workers fork (when they would
    read it: :func:`restr.data.preload.workers_share_it`), and say what was done. A file that
    cannot be read stops the run here, before its first step, with the data check's command."""
    if not workers_share_it(workers):
        return
    try:
        said = train_set.preload()
    except DataError as exc:
        raise type(exc)(f"{exc}\n{data_stats_hint(cfg)}") from None
    if d.main:
        print(said, file=sys.stderr)


def data_stats_hint(cfg: Config) -> str:
    d = cfg.data
    image_root = f" --image-root {d.image_root}" if d.image_root else ""
    return (f"(every file of the data set is checked by: python -m restr data stats --root {d.root} --dataset "
            f"{d.dataset} --split-by {d.split_by}{image_root})")


class Trainer:
    """One training run, in the shape of detectron2's and minGPT's trainers.

    Construction resolves the command once: the distributed setup, the checks of the
    config and the run folder (taking its lock), the resume plan
    (:func:`restr.engine.resume.plan_resume`), and, unless the run is finished already,
    the data and its vocabulary, the word vectors, the ViT weights, the model, the
    optimiser step with the checkpoint's state restored into it and the batches.
    :meth:`fit` then trains from the plan's step to ``train.iterations``. The lock is
    held from construction to :meth:`close` (or the end of a ``with`` block).

    ``resume``: False for a new run; True (or "last") continues from checkpoints/last.pt,
    "best" from checkpoints/best.pt; a finished run resumes to nothing. ``allow``: "extend"
    (give a resumed run more iterations than it had: its lr schedule becomes that of the
    new length) and "force" (start a new run in a folder holding files a run does not
    write). ``dtype=torch.float64`` trains in double precision (the tests' exact
    comparisons). ``requested_hash``: the config hash recorded in config.json (default:
    ``cfg``'s).
    """

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, resume: bool | str = False, *, device: str = "auto",
                 progress: bool = True, dtype: torch.dtype = torch.float32, requested_hash: str | None = None,
                 allow: Iterable[str] = ()):
        self.dist = setup_distributed(device)
        extend, force = check_request(cfg, resume, allow, self.dist.world)
        if not resume:  # a resumed run takes its ViT and word vectors from its checkpoint
            check_assets(cfg)  # the ViT weights and GloVe file it needs, before any work
        self.ckpt = Checkpointer(run_dir, main=self.dist.main)
        take_run_folder(self.ckpt, self.dist)  # held until close()
        self.cfg, self.progress, self.dtype = cfg, progress, dtype
        self.requested_hash = requested_hash or cfg.run_key()
        try:
            self.plan = self.ckpt.plan = plan_resume(self.ckpt.run_dir, cfg, resume, extend,
                                                     data_fingerprint(cfg.data), force, self.ckpt.existed)
            self.finished = self.plan.finished(cfg.train.iterations)
            if not self.finished:
                self._announce(resume)
                self.dist.barrier()  # every rank has looked at the run directory before rank 0 writes into it
                self._build()
        except BaseException:
            self.close()
            raise

    def _announce(self, resume: bool | str) -> None:
        if self.dist.main and resume:
            print(self.plan.describe(self.cfg.train.iterations), file=sys.stderr)
            if self.plan.extended_from is not None:
                print(self.plan.extension_note(self.cfg), file=sys.stderr)

    def _build(self) -> None:
        """The data, the model, the optimiser step at the plan's position, the batches."""
        dist, plan = self.dist, self.plan
        train_set, self.val_set = build_datasets(self.cfg, plan.vocab)
        self.vocab = train_set.vocab
        self.cfg = cfg = self.cfg.override({"model.vocab_size": len(self.vocab)})
        t = cfg.train
        seed_everything(t.seed, t.deterministic)
        vectors = None if plan.state is not None else word_vectors_for(cfg, self.vocab)
        model = build_model(vit_weights_for(cfg, plan.state, dist), vectors).to(dist.device, dtype=self.dtype)
        self.train_step = build_train_step(model, t, dist)  # fused AdamW, lr schedule, DDP under torchrun
        self.loop = self.ckpt.restore(self.train_step, dist.rank)  # a new run starts at step 0
        if plan.extended_from is not None:
            schedule_at(self.train_step, self.loop.step)  # the new length's lr from the first step on
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        workers = loader_workers(cfg.data.num_workers, local_processes)
        set_cpu_threads(t.threads, workers, local_processes, dist)
        preload_split(train_set, workers, cfg, dist)
        self.batches = training_batches(train_set, t, dist, workers, self.dtype)
        self.val_kinds = val_kinds(self.val_set)
        cap = t.val_max_expressions if t.val_max_expressions and t.val_max_expressions > 0 else None
        self.val_indices = (spread_indices(len(self.val_set), cap)[dist.rank::dist.world]
                            if self.val_set is not None else [])

    # -- the loop ---------------------------------------------------------------------
    def fit(self) -> Path:
        """Optimiser steps from the plan's position to ``train.iterations``, with the logs,
        validations and checkpoints on the way and the final ones; returns the run folder.
        The run's files are written only now: a config that cannot train never reaches the disk."""
        t, loop, run_dir = self.cfg.train, getattr(self, "loop", None), self.ckpt.run_dir
        if self.finished:
            if self.dist.main:
                print(f"{run_dir} is finished (step {t.iterations} of {t.iterations}); nothing to do", file=sys.stderr)
            return run_dir
        final_validation = self.val_set is not None and loop.step < t.iterations  # else done before the checkpoint
        self.bar = progress_bar(self.progress and self.dist.main, t.iterations, loop.step)
        with self._errors_named(), stop_requests(self.dist.world == 1) as self._stop:
            self.ckpt.start(self.cfg, self.vocab, self.requested_hash)
            self.started = True
            self._images, self._t0 = 0, time.perf_counter()  # the speed window since the last log
            self._cpu_mark = cpu_seconds()
            self.train_step.model.train()
            if self._stop:  # asked before the first step
                self.stop_here()
            while loop.step < t.iterations:
                if loop.step_in_epoch >= self.batches.steps_per_epoch:
                    loop.next_epoch()
                for micro_batches in islice(self.batches.epoch(loop.epoch, loop.step_in_epoch),
                                            t.iterations - loop.step):
                    self.train_step(micro_batches)  # queued on the device; nothing is read back here
                    loop.advance()
                    self._after_step()
            self.train_step.check()
            if final_validation:
                self.validate_and_save_best()
            self.save("last", finished=True)
            self.ckpt.metrics.write({"step": loop.step, "event": "finished"})
        return run_dir

    def _after_step(self) -> None:
        """The log, validation and checkpoint that the step just taken calls for."""
        t, loop = self.cfg.train, self.loop
        self._images += t.batch_size
        self.bar.update(1)
        log_now, val_now, ckpt_now = events_after(loop.step, t, self.val_set is not None)
        if log_now or val_now or ckpt_now:
            self.train_step.check()  # the host waits for the device: is the loss still finite?
        if log_now or val_now:
            seconds = time.perf_counter() - self._t0
            loop.train_s += seconds
        if log_now:
            row = log_row(loop, self.train_step, self._images, seconds)
            self.ckpt.metrics.write(row)
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                 img_s=f"{row['images_per_s']:.0f}")
        if val_now:
            self.validate_and_save_best()
        if log_now or val_now:
            self._images, self._t0 = 0, time.perf_counter()  # the speed window leaves validation out
        if ckpt_now:
            self.save("last")
        kill_if_asked(loop.step)
        if self._stop and loop.step < t.iterations:
            self.stop_here()

    def stop_here(self) -> None:
        """Asked to stop (SIGTERM): checkpoint this step, log it, and raise :class:`TrainingStopped`."""
        step, iterations = self.loop.step, self.cfg.train.iterations
        self.train_step.check()
        path = self.save("last")
        self.ckpt.metrics.write({"step": step, "event": "stopped", "reason": "SIGTERM"})
        raise TrainingStopped(f"{self.ckpt.run_dir}: stopped on request (SIGTERM) at step {step} of {iterations}, "
                              f"checkpoint {path} saved; the same command resumes it from there")

    def validate_and_save_best(self) -> None:
        """Every rank validates its share; rank 0 writes the row and, on a new best, best.pt."""
        t, loop = self.cfg.train, self.loop
        micro = t.batch_size // (self.dist.world * t.grad_accum)  # expressions per micro-batch
        result = run_validation(self.train_step.core, self.val_set, self.val_indices, t, self.dist, micro,
                                self.val_kinds)
        self._count_cpu()
        self.ckpt.metrics.write(val_row(loop, self.cfg.data.val_split, result, t.batch_size))
        if not self.bar.disable:
            self.bar.write(f"step {loop.step}: val cIoU {result['cum_iou']:.4f} mIoU {result['mean_iou']:.4f} "
                           f"({result['n']} expressions)", file=sys.stderr)
        if result["cum_iou"] > loop.best_val:
            loop.best_val = result["cum_iou"]
            self.save("best")

    def _count_cpu(self) -> None:
        """Add the CPU time since the last count to the run's (kept across resumes)."""
        mark, now = getattr(self, "_cpu_mark", None), cpu_seconds()
        if mark is not None and self.loop.cpu_s is not None:  # None: the part before a resume is unknown
            self.loop.cpu_s += now - mark
        self._cpu_mark = now

    def save(self, which: str, finished: bool = False) -> Path:
        """Checkpoint ``which`` ("last" or "best") with every rank's random state."""
        self._count_cpu()
        return self.ckpt.save(which, self.loop, self.train_step, self.dist.gather(rng_state()), self.cfg,
                              finished=finished)

    @contextmanager
    def _errors_named(self):
        """A diverged loss, a full disk or an unreadable image as one message naming the run,
        the step and what is kept; the progress bar closed whatever happens."""
        self.started = False
        try:
            yield
        except Diverged as exc:
            raise diverged_error(exc, self.ckpt, self.batches.steps_per_epoch) from None
        except DiskFullError as exc:
            raise self.ckpt.disk_full_error(exc, self.loop.step if self.started else None) from None
        except DataError as exc:  # an image or mask that cannot be read (from a loader worker, in one line)
            raise type(exc)(f"{exc}\n{data_stats_hint(self.cfg)}") from None
        finally:
            self.bar.close()

    # -- the run folder's lock ----------------------------------------------------------
    def close(self) -> None:
        self.ckpt.lock.release()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train(cfg: Config, out: str | os.PathLike, resume: bool | str = False, device: str = "auto", progress: bool = True,
          dtype: torch.dtype = torch.float32, requested_hash: str | None = None, allow: Iterable[str] = ()) -> Path:
    """Train ``cfg`` into the run directory ``out`` (or resume it); return the run directory
    (:class:`Trainer`: the arguments, and what it refuses).

    Raises :class:`TrainingError` on a diverged loss, a full disk, a run folder held by
    another process or one that does not fit the command; :class:`ConfigError` on a bad
    value or a config that differs from the run's; :class:`RunError` on a corrupt checkpoint.
    """
    with Trainer(cfg, out, resume, device=device, progress=progress, dtype=dtype, requested_hash=requested_hash,
                 allow=allow) as trainer:
        return trainer.fit()


def schedule_at(step: TrainStep, at: int) -> None:
    """Set every group's lr to its schedule's value at optimiser step ``at`` (an extended run)."""
    sched = step.scheduler
    for group, base, fn in zip(step.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(at)
    sched._last_lr = [g["lr"] for g in step.optimizer.param_groups]
