"""Run directories and checkpoint files: the format of a training run's folder.

A run directory (written by ``python -m restr train``, rank 0 only) holds::

    config.json          the full resolved Config (``Config.to_dict()``; model.vocab_size
                         is the data's vocabulary size) plus "vocab_file", "config_hash" and
                         "vocab_sha256" (the hash of vocab.json's words in order, checked
                         whenever the run is read: the same words in another order are
                         another vocabulary)
    vocab.json           the training split's vocabulary (restr.data.vocab.Vocabulary)
    metrics.jsonl        one JSON object per line: training logs, validations, events
    checkpoints/last.pt  the latest checkpoint, checkpoints/last.json its summary
    checkpoints/best.pt  the best validation's checkpoint (and best.json)
    checkpoints/no-weights.json  instead of last.pt, in a run rebuilt from a zoo model that
                         ships its log and scores but not its weights (restr.zoo.manifest):
                         the model's name, its weights' digest, the command that retrains it

    .lock                while a process trains the run: its pid (restr.runs.lock)

Every file is written atomically (:func:`restr.utils.files.atomic_write_bytes`), so a killed
process never leaves a half-written checkpoint behind; the temporary files of writes that
a kill interrupted are removed when the run next starts. A checkpoint is a plain dict
(``torch.save``)::

    {"format": 1, "step", "epoch", "step_in_epoch", "finished", "best_val",
     "model", "optimizer", "scheduler", "scaler"   (state_dicts),
     "rng": [one {"python", "numpy", "torch", "cuda"} per rank],
     "log_window": the partial sums of the next log row, "world_size", "config"}

The trainer's side (writing checkpoints, resuming) is :mod:`restr.engine.checkpointer`.

Everything that reads a run reports a missing folder, a missing checkpoint or a
corrupt/truncated file as a :class:`RunError` naming the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data.errors import DataError
from ..data.vocab import Vocabulary
from ..model import build_model
from ..utils.files import append_jsonl, atomic_write_bytes, atomic_write_text, read_jsonl, write_jsonl

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "checkpoints"
NO_WEIGHTS_FILE = "no-weights.json"  # in CKPT_DIR: a finished run whose weights were not kept


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic write (tmp file + fsync + rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _checkpoint_globals() -> list:
    """The only Python globals a restr checkpoint names: NumPy's random state (a uint32
    array inside ``rng[i]["numpy"]``) is pickled through these (array, dtype, the uint32
    dtype's class, and NumPy's array rebuilder). Everything else is tensors, dicts, lists,
    tuples, strings and numbers, which ``weights_only`` admits."""
    from numpy._core import multiarray

    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), multiarray._reconstruct,
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]  # written under NumPy 1.x


def _refused_global(exc: BaseException) -> str | None:
    """The global a ``weights_only`` load refused (``"os.system"``), from its message."""

    if "Weights only load failed" not in str(exc):
        return None
    found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
    return next(g for g in found.groups() if g) if found else None


def _load_error_detail(exc: BaseException) -> str:
    """The line of a ``torch.load`` error that says what is wrong (not its advice boilerplate)."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        for line in text.splitlines():
            if "WeightsUnpickler error:" in line and line.split("WeightsUnpickler error:", 1)[1].strip():
                return line.split("WeightsUnpickler error:", 1)[1].strip()
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        useful = [line for line in lines if not line.startswith(("Please file", "Check the documentation", "(1)",
                                                                 "(2)", "WeightsUnpickler error:"))]
        return useful[0] if useful else "not a plain checkpoint"
    return text.splitlines()[0] if text else type(exc).__name__


def _torch_load(path: Path, map_location) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only (and the
    NumPy globals of :func:`_checkpoint_globals`); a file naming any other global is refused,
    so no code in a checkpoint ever runs."""
    with torch.serialization.safe_globals(_checkpoint_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; clear errors for bad files.

    Only plain data is read (``weights_only``); a checkpoint that names a Python global a
    restr checkpoint never holds is a :class:`RunError` naming the file and the global."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        state = _torch_load(path, map_location)
    except Exception as exc:  # noqa: BLE001 - torch.load raises anything its unpickler meets
        refused = _refused_global(exc)
        if refused is not None:
            raise RunError(f"{path}: refused to load: it names the Python global {refused}, which a restr checkpoint "
                           f"never holds (a foreign or crafted file; nothing in it was run)") from None
        first = _load_error_detail(exc)
        with open(path, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"  # torch.save's format: a zip archive
        if not zipped:
            raise RunError(f"{path} is not a restr checkpoint (torch.load cannot read it: {first})") from None
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


def no_weights(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What a finished run without weights says of itself (``checkpoints/no-weights.json``:
    ``zoo``, ``weights_sha256``, ``retrain``), or None for a run with its checkpoint."""
    path = Path(run_dir) / CKPT_DIR / NO_WEIGHTS_FILE
    if checkpoint_path(run_dir, "last").is_file() or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("weights_sha256"), str):
        raise RunError(f"{path} does not name the run's weights (weights_sha256)")
    return info


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """The sha256 of model weights: every tensor's name, dtype, shape and bytes, in name
    order. It names the weights, not the file torch wrote them in, so a zoo model has the
    same digest wherever (and by whichever torch) it is materialised."""

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_run_config(run_dir: str | os.PathLike, cfg: Config, requested_hash: str | None = None,
                     fingerprint: dict | None = None) -> None:
    d = cfg.to_dict()
    d["vocab_file"] = VOCAB_FILE
    d["config_hash"] = requested_hash or cfg.run_key()
    if (Path(run_dir) / VOCAB_FILE).is_file():  # written before config.json, by every writer of runs
        d["vocab_sha256"] = Vocabulary.load(Path(run_dir) / VOCAB_FILE).sha256()
    if fingerprint is not None:
        d["data_fingerprint"] = fingerprint  # restr.data.fingerprint: what the run was trained on
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(d, indent=2) + "\n")


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a config.json that :func:`write_run_config` wrote."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("vocab_file") == VOCAB_FILE and "config_hash" in d


def check_run_vocab(run_dir: str | os.PathLike, vocab) -> None:
    """A :class:`RunError` naming both files if ``vocab`` (the run's vocab.json) is not the
    vocabulary its config.json records (by the hash of its words in order; runs from before
    the hash was recorded are checked by count only, in :func:`load_run`)."""
    run_dir = Path(run_dir)
    try:
        recorded = json.loads((run_dir / CONFIG_FILE).read_text()).get("vocab_sha256")
    except (OSError, ValueError, AttributeError):
        return  # read_run_config reports an unreadable config.json
    if recorded is not None and recorded != vocab.sha256():
        raise RunError(f"{run_dir / VOCAB_FILE} is not the vocabulary the run was trained with: its words (in order) "
                       f"hash to {vocab.sha256()[:12]}..., {run_dir / CONFIG_FILE} records {str(recorded)[:12]}... "
                       f"(words changed, added, removed or reordered); restore the run's own {VOCAB_FILE}")


def read_run_fingerprint(run_dir: str | os.PathLike) -> dict | None:
    """The data fingerprint recorded in a run's config.json (None for runs from before)."""
    try:
        fp = json.loads((Path(run_dir) / CONFIG_FILE).read_text()).get("data_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return fp if isinstance(fp, dict) else None


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

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    ckpt = checkpoint_path(run_dir, which)
    if ckpt.is_dir():
        raise RunError(f"{ckpt} is a folder, not a checkpoint file")
    shipped = no_weights(run_dir) if which == "last" else None
    if shipped is not None:
        raise RunError(f"{run_dir} is zoo model {shipped.get('zoo')!r}, which ships its training log and its "
                       f"scores but not its weights (README, \"Which weights the zoo ships\"); retrain it with "
                       f"`{shipped.get('retrain')}`")
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
    check_run_vocab(run_dir, vocab)
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
        """Drop rows logged after ``step`` (work that a resumed run redoes) and "finished"
        events (a resumed run is not finished until it says so again)."""
        if self.enabled and self.path.is_file():
            write_jsonl(self.path, [r for r in read_jsonl(self.path)
                                    if int(r.get("step", 0)) <= step and r.get("event") != "finished"])


@dataclass
class LoopState:
    """Where a training run is: optimiser steps done, epoch, steps into the epoch, and the
    best validation cumulative IoU so far."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val: float = -math.inf
    train_s: float = 0.0  # seconds of training so far, validation left out
    cpu_s: float | None = 0.0  # CPU seconds so far, validation included: this process and its ended children
    # (None: unknown, a run resumed from a checkpoint written before the CPU time was kept)

    def advance(self) -> None:
        self.step += 1
        self.step_in_epoch += 1

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def summary(self, iterations: int, finished: bool) -> dict:
        """The checkpoint's JSON sidecar (read by :func:`restr.zoo.cache.run_status`)."""
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "finished": finished,
                "iterations": iterations, "best_val": self.best_val if math.isfinite(self.best_val) else None}
