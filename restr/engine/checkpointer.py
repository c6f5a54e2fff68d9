"""The trainer's side of a run folder: its checkpoints and random state.

:class:`Checkpointer` (in the shape of detectron2's) holds the folder's lock and its
metrics log; :meth:`~Checkpointer.start` writes a new run's files,
:meth:`~Checkpointer.restore` puts the :class:`~restr.engine.resume.ResumePlan`'s
checkpoint back into the model, optimiser and loop, :meth:`~Checkpointer.save` writes one
and :meth:`~Checkpointer.load_best` reloads the best weights. Where a command starts (a
new run, or which checkpoint) is decided before, once, by
:func:`restr.engine.resume.plan_resume`; the folder's format is :mod:`restr.runs.folder`.
"""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..runs.folder import (CHECKPOINT_FORMAT, CKPT_DIR, METRICS_FILE, VOCAB_FILE, LoopState, MetricsLog,
                           checkpoint_path, load_checkpoint, read_metrics, read_run_fingerprint, save_checkpoint,
                           write_run_config)
from ..runs.lock import RunLock
from ..utils.files import DiskFullError, atomic_write_text, human_size, write_jsonl
from .optim import load_optimizer_state
from .resume import ResumePlan, TrainingError, note


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


def planned_iterations(state: dict) -> int | None:
    """The ``train.iterations`` a checkpoint's config planned (None for a checkpoint without one)."""
    try:
        return int(state["config"]["train"]["iterations"])
    except (KeyError, TypeError, ValueError):
        return None


class Checkpointer:
    """The run directory of one training run, as the trainer sees it.

    Only the main process (``main=True``) writes (and holds the folder's lock); every
    process reads. The training objects (model, optimiser, schedule, scaler, log window)
    are those of a :class:`restr.engine.step.TrainStep`.
    """

    def __init__(self, run_dir: str | os.PathLike, main: bool = True):
        self.run_dir, self.main = Path(run_dir), main
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE, enabled=main)
        self.lock = RunLock(self.run_dir)
        self.existed = self.run_dir.exists()  # before the lock file (which creates the folder)
        self.plan = ResumePlan(self.run_dir)  # where training starts (restr.engine.resume.plan_resume)
        self.kept: tuple[Path, int] | None = None  # the last good checkpoint on disk and its step
        self.kept_plan: int | None = None  # the iterations that checkpoint's config planned

    def path(self, which: str) -> Path:
        return checkpoint_path(self.run_dir, which)

    # -- the folder: lock and leftovers -------------------------------------------------
    def clean_temporaries(self) -> None:
        """Remove the temporary files of writes that a kill interrupted (call with the lock held)."""
        folders = [f for f in (self.run_dir, self.run_dir / CKPT_DIR) if f.is_dir()]
        found = [p for f in folders for p in f.iterdir() if p.name.endswith(".tmp") and p.is_file()]
        if not found:
            return
        size = sum(p.stat().st_size for p in found)
        for p in found:
            p.unlink(missing_ok=True)
        note(f"{self.run_dir}: removed {len(found)} temporary files ({human_size(size)}) left by killed writes")

    def start(self, cfg: Config, vocab, config_hash: str) -> None:
        """A run with no checkpoint yet gets its files (vocabulary, an empty metrics log,
        then config.json, which marks a run); a resumed one loses the log rows after its
        checkpoint; an extended one gets its new length in config.json and an event row."""
        plan = self.plan
        if not self.main:
            return
        if plan.state is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            vocab.save(self.run_dir / VOCAB_FILE)
            write_jsonl(self.metrics.path, [])
            write_run_config(self.run_dir, cfg, config_hash, plan.fingerprint)
            return
        self.metrics.truncate_after(plan.step)
        if plan.extended_from is not None:
            write_run_config(self.run_dir, cfg, config_hash, read_run_fingerprint(self.run_dir) or plan.fingerprint)
            row = {"step": plan.step, "event": "extended", "from": plan.extended_from, "to": cfg.train.iterations}
            if row not in read_metrics(self.run_dir):
                self.metrics.write(row)

    def disk_full_error(self, exc: DiskFullError, step: int | None) -> TrainingError:
        """The message of a write that found the disk full: the run, the step, what is kept, the space."""
        at = f" at step {step}" if step is not None else " while starting"
        if self.kept is not None:
            kept = f"the last good checkpoint {self.kept[0]} (step {self.kept[1]}) is kept"
        else:
            kept = "no checkpoint had been saved yet"
        what = "the checkpoint" if exc.path.suffix == ".pt" else exc.path.name
        free = f", {human_size(exc.free)} free on {exc.path.parent}" if exc.free is not None else ""
        then = self._after_disk_full(step is None)
        return TrainingError(f"disk full: run {self.run_dir} could not write {exc.path.name}{at}; {kept}: {what} "
                             f"needs {human_size(exc.needed)}{free}. Free some space, then {then}.")

    def _after_disk_full(self, starting: bool) -> str:
        """The command that goes on after a full disk, for the run's state on disk."""
        if starting:  # nothing of this command reached the disk, or only files it writes again
            return "run the same command again"
        command = f"`python -m restr train --run {self.run_dir} --resume"
        extended_from = self.plan.extended_from
        if extended_from is not None and self.kept_plan == extended_from:
            # config.json says the longer run, the kept checkpoint the shorter one: --resume alone is refused
            return (f"resume with {command} --extend` (its config.json is already the extended run's, its kept "
                    f"checkpoint the {extended_from}-iteration run's)")
        return f"resume with {command}`"

    def restore(self, step, rank: int = 0) -> LoopState:
        """Load the plan's checkpoint (none for a new run) into the TrainStep ``step`` and
        this rank's random generators; return the loop's position."""
        state = self.plan.state
        if state is None:
            return LoopState()
        step.core.load_state_dict(state["model"])
        load_optimizer_state(step.optimizer, state["optimizer"])
        step.scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        loop = LoopState(int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"]),
                         float(state.get("best_val", -math.inf)), float(state.get("train_s", 0.0)),
                         state.get("cpu_s"))  # None: a checkpoint from before the CPU time was kept
        step.set_step(loop.step)
        self.kept = (self.plan.source or self.path("last"), loop.step)
        self.kept_plan = planned_iterations(state)
        if "log_window" in state:
            step.load_window(state["log_window"])
        rngs = state["rng"]
        if isinstance(rngs, list) and rank < len(rngs):
            set_rng_state(rngs[rank])
        return loop

    def save(self, which: str, loop: LoopState, step, rngs: list, cfg: Config, finished: bool = False) -> Path:
        """Write checkpoint ``which`` ("last" or "best") and its JSON summary (main process
        only; ``rngs``: every rank's :func:`rng_state`, gathered by the caller)."""
        path = self.path(which)
        if not self.main:
            return path
        save_checkpoint(path, {
            "format": CHECKPOINT_FORMAT, "step": loop.step, "epoch": loop.epoch, "step_in_epoch": loop.step_in_epoch,
            "finished": finished, "best_val": loop.best_val, "train_s": loop.train_s,
            "cpu_s": loop.cpu_s,
            "model": step.core.state_dict(), "optimizer": step.optimizer.state_dict(),
            "scheduler": step.scheduler.state_dict(), "scaler": step.scaler.state_dict(), "rng": rngs,
            "log_window": step.window_state(),  # partial sums of the next log row: the same after a resume
            "world_size": len(rngs), "config": cfg.to_dict(),
        })
        atomic_write_text(path.with_suffix(".json"), json.dumps(loop.summary(cfg.train.iterations, finished)) + "\n")
        if which == "last":
            self.kept, self.kept_plan = (path, loop.step), cfg.train.iterations
        return path

    def load_best(self, model: torch.nn.Module) -> int:
        """Load the best validation's weights into ``model``; return their step."""
        state = load_checkpoint(self.path("best"))
        getattr(model, "module", model).load_state_dict(state["model"])
        return int(state["step"])
