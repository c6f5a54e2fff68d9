"""Run directories and checkpoints.

A run directory (written by ``python -m restr train``, rank 0 only) holds::

    config.json          the full resolved Config (``Config.to_dict()``; model.vocab_size
                         is the data's vocabulary size) plus "vocab_file" and "config_hash"
    vocab.json           the training split's vocabulary (restr.data.vocab.Vocabulary)
    metrics.jsonl        one JSON object per line: training logs and validations
    checkpoints/last.pt  the latest checkpoint; checkpoints/best.pt the best validation

Every file is written atomically: to a temporary file in the same folder, flushed and
fsynced, then renamed over the target, so a killed process never leaves a half-written
checkpoint behind. A checkpoint is a plain dict of state_dicts (torch.save)::

    {"format": 1, "step", "epoch", "batch_in_epoch", "model", "optimizer", "scheduler",
     "scaler", "rng": {"python", "numpy", "torch", "cuda"}, "config", "metrics"}

Everything that reads a run reports a missing folder, a missing checkpoint or a
corrupt/truncated file as a :class:`RunError` naming the file.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .utils import atomic_write_bytes, atomic_write_text

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "checkpoints"


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


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
