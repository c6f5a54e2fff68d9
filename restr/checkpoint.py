"""Run directories, checkpoints and the checkpointer of a training run.

A run directory (written by ``python -m restr train``, rank 0 only) holds::

    config.json          the full resolved Config (``Config.to_dict()``; model.vocab_size
                         is the data's vocabulary size) plus "vocab_file" and "config_hash"
    vocab.json           the training split's vocabulary (restr.data.vocab.Vocabulary)
    metrics.jsonl        one JSON object per line: training logs, validations, events
    checkpoints/last.pt  the latest checkpoint, checkpoints/last.json its summary
    checkpoints/best.pt  the best validation's checkpoint (and best.json)

Every file is written atomically (:func:`restr.utils.atomic_write_bytes`), so a killed
process never leaves a half-written checkpoint behind. A checkpoint is a plain dict
(``torch.save``)::

    {"format": 1, "step", "epoch", "step_in_epoch", "finished", "best_val",
     "model", "optimizer", "scheduler", "scaler"   (state_dicts),
     "rng": [one {"python", "numpy", "torch", "cuda"} per rank],
     "log_window": the partial sums of the next log row, "world_size", "config"}

:class:`Checkpointer` is the trainer's view of its run directory (in the shape of
detectron2's checkpointer): :meth:`~Checkpointer.open` checks it against the command,
:meth:`~Checkpointer.start` writes a new run's files, :meth:`~Checkpointer.restore`
puts a checkpoint back into the model, optimiser and loop, :meth:`~Checkpointer.save`
writes one, :meth:`~Checkpointer.load_best` reloads the best weights.

Everything that reads a run reports a missing folder, a missing checkpoint or a
corrupt/truncated file as a :class:`RunError` naming the file.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, ConfigError
from .optim import load_optimizer_state
from .utils import append_jsonl, atomic_write_bytes, atomic_write_text, read_jsonl, write_jsonl

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "checkpoints"


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


class TrainingError(RuntimeError):
    """Training cannot go on: a diverged loss, or a run directory that does not fit the
    command (a run where a new one should start, nothing where one should resume)."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic write (tmp file + fsync + rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError,
            ImportError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"checkpoint {path} is corrupt or truncated ({path.stat().st_size} bytes) and cannot be loaded: "
            f"{first}. Delete it, or resume from another checkpoint."
        ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise RunError(f"{path} is not a restr checkpoint (expected a dict with 'model' and 'step')")
    return state


# ----------------------------------------------------------------------------------------
# run directories

def checkpoint_path(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """``which``: "last", "best", or a file path."""
    if which in ("last", "best"):
        return Path(run_dir) / CKPT_DIR / f"{which}.pt"
    return Path(which)


def write_run_config(run_dir: str | os.PathLike, cfg: Config, requested_hash: str | None = None) -> None:
    d = cfg.to_dict()
    d["vocab_file"] = VOCAB_FILE
    d["config_hash"] = requested_hash or cfg.hash()
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(d, indent=2) + "\n")


def read_run_config(run_dir: str | os.PathLike) -> Config:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory does not exist: {run_dir}")
    if not run_dir.is_dir():
        raise RunError(f"not a directory: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory: {path} is missing")
    try:
        d = json.loads(path.read_text())
        return Config.from_dict(d)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from None


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    vocab: Any  # restr.data.vocab.Vocabulary
    model: torch.nn.Module
    step: int
    checkpoint: Path


def load_run(run_dir: str | os.PathLike, which: str = "last", device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run from its directory alone (config, vocabulary, checkpoint).

    The model is in eval mode on ``device``. Raises :class:`RunError` for a missing run
    directory, a missing or corrupt checkpoint, or a vocabulary that does not match.
    """
    from .data.vocab import Vocabulary
    from .data.errors import DataError
    from .model import build_model

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    ckpt = checkpoint_path(run_dir, which)
    if not ckpt.is_file():
        others = sorted(p.name for p in (run_dir / CKPT_DIR).glob("*.pt")) if (run_dir / CKPT_DIR).is_dir() else []
        hint = f" (found: {', '.join(others)})" if others else " (the run has not saved a checkpoint yet)"
        raise RunError(f"no checkpoint at {ckpt}{hint}")
    try:
        vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    except DataError as exc:
        raise RunError(str(exc)) from None
    if len(vocab) != cfg.model.vocab_size:
        raise RunError(f"{run_dir / VOCAB_FILE} has {len(vocab)} words but config.json says "
                       f"model.vocab_size = {cfg.model.vocab_size}")
    state = load_checkpoint(ckpt, map_location="cpu")
    model_cfg = cfg.override({"model.vit_weights": None}).model  # the checkpoint holds the weights
    model = build_model(model_cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise RunError(f"{ckpt} does not match the model in {run_dir / CONFIG_FILE}: "
                       f"{str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, vocab, model, int(state["step"]), ckpt)


# ----------------------------------------------------------------------------------------
# the trainer's side: metrics log, loop position, random state, checkpointer

def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl (a line cut short by a kill is skipped)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


class MetricsLog:
    """A run's ``metrics.jsonl``. Only the main process writes (``enabled``)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, row: dict) -> None:
        if self.enabled:
            append_jsonl(self.path, row)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (work that a resumed run redoes)."""
        if self.enabled and self.path.is_file():
            write_jsonl(self.path, [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= step])


@dataclass
class LoopState:
    """Where a training run is: optimiser steps done, epoch, steps into the epoch, and the
    best validation cumulative IoU so far."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val: float = -math.inf
    train_s: float = 0.0  # seconds of training so far, validation left out

    def advance(self) -> None:
        self.step += 1
        self.step_in_epoch += 1

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def summary(self, iterations: int, finished: bool) -> dict:
        """The checkpoint's JSON sidecar (read by :func:`restr.experiments.run_status`)."""
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "finished": finished,
                "iterations": iterations, "best_val": self.best_val if math.isfinite(self.best_val) else None}


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


# Fields that may change between a run and its resumption: they do not affect the weights.
RESUME_MUTABLE = ("data.num_workers", "train.log_every")


def config_mismatch(stored: Config, requested: Config) -> list[str]:
    return [line for line in stored.diff(requested) if line.split(":", 1)[0] not in RESUME_MUTABLE]


class Checkpointer:
    """The run directory of one training run, as the trainer sees it.

    Only the main process (``main=True``) writes; every process reads. The training
    objects (model, optimiser, schedule, scaler, log window) are those of a
    :class:`restr.step.TrainStep`.
    """

    def __init__(self, run_dir: str | os.PathLike, main: bool = True):
        self.run_dir, self.main = Path(run_dir), main
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE, enabled=main)

    def path(self, which: str) -> Path:
        return checkpoint_path(self.run_dir, which)

    def open(self, cfg: Config, resume: bool) -> tuple[Any, dict | None]:
        """Check the run directory against the command: ``(vocabulary, last checkpoint)``
        of the run being resumed, or ``(None, None)`` for a new run."""
        from .data.vocab import Vocabulary

        out = self.run_dir
        if not (out / CONFIG_FILE).is_file():
            if resume:
                why = f"has no {CONFIG_FILE}" if out.exists() else "does not exist"
                raise TrainingError(f"nothing to resume: {out} {why}")
            return None, None
        if not resume:
            raise TrainingError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        vocab = Vocabulary.load(out / VOCAB_FILE)
        diff = config_mismatch(read_run_config(out), cfg.override({"model.vocab_size": len(vocab)}))
        if diff:
            raise ConfigError(f"cannot resume {out}: the config differs from the run's {out / CONFIG_FILE} in "
                           f"{len(diff)} field(s) (run's value != this command's):\n  " + "\n  ".join(diff))
        last = self.path("last")
        return vocab, (load_checkpoint(last) if last.is_file() else None)

    def start(self, cfg: Config, vocab, config_hash: str, state: dict | None) -> None:
        """A run with no checkpoint yet gets its files (config, vocabulary, an empty
        metrics log); a resumed one loses the log rows after its checkpoint."""
        if not self.main:
            return
        if state is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            vocab.save(self.run_dir / VOCAB_FILE)
            write_run_config(self.run_dir, cfg, config_hash)
            self.metrics.path.write_text("")
        else:
            self.metrics.truncate_after(int(state["step"]))

    def restore(self, state: dict | None, step, rank: int = 0) -> LoopState:
        """Load ``state`` (a checkpoint, or None for a new run) into the TrainStep ``step``
        and this rank's random generators; return the loop's position."""
        if state is None:
            return LoopState()
        step.core.load_state_dict(state["model"])
        load_optimizer_state(step.optimizer, state["optimizer"])
        step.scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        loop = LoopState(int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"]),
                         float(state.get("best_val", -math.inf)), float(state.get("train_s", 0.0)))
        step.set_step(loop.step)
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
            "model": step.core.state_dict(), "optimizer": step.optimizer.state_dict(),
            "scheduler": step.scheduler.state_dict(), "scaler": step.scaler.state_dict(), "rng": rngs,
            "log_window": step.window_state(),  # partial sums of the next log row: the same after a resume
            "world_size": len(rngs), "config": cfg.to_dict(),
        })
        atomic_write_text(path.with_suffix(".json"), json.dumps(loop.summary(cfg.train.iterations, finished)) + "\n")
        return path

    def load_best(self, model: torch.nn.Module) -> int:
        """Load the best validation's weights into ``model``; return their step."""
        state = load_checkpoint(self.path("best"))
        getattr(model, "module", model).load_state_dict(state["model"])
        return int(state["step"])
