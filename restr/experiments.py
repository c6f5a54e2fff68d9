"""A cache of trained runs for the notebooks: ``get_run(cfg)`` trains once, then reuses.

Runs live in ``<runs_dir>/<preset>-<cfg.hash()>``; the hash covers the whole config
(model, data, train) as the caller gave it. A run counts as finished when its
``checkpoints/last.json`` says so (step == train.iterations); an unfinished one (a
notebook interrupted mid-training) is resumed; a missing one is trained.

    from restr.config import get_preset
    from restr.experiments import get_run, load_predictor
    run_dir = get_run(get_preset("tiny"))
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import CONFIG_FILE, checkpoint_path
from .config import Config


class RunMissing(FileNotFoundError):
    """The run is not in the cache and ``train_if_missing`` is False."""


def run_dir_for(cfg: Config, runs_dir: str | os.PathLike = "runs") -> Path:
    return Path(runs_dir) / f"{cfg.preset}-{cfg.hash()}"


def run_status(run_dir: str | os.PathLike) -> dict:
    """``{"exists", "finished", "step", "iterations"}`` read from the checkpoint sidecar."""
    run_dir = Path(run_dir)
    side = checkpoint_path(run_dir, "last").with_suffix(".json")
    status = {"exists": (run_dir / CONFIG_FILE).is_file(), "finished": False, "step": 0, "iterations": None}
    if side.is_file() and checkpoint_path(run_dir, "last").is_file():
        try:
            info = json.loads(side.read_text())
            status.update(finished=bool(info.get("finished")) and info.get("step") == info.get("iterations"),
                          step=int(info.get("step", 0)), iterations=info.get("iterations"))
        except (json.JSONDecodeError, ValueError):
            pass
    return status


def get_run(cfg: Config, runs_dir: str | os.PathLike = "runs", train_if_missing: bool = True,
            progress: bool = True, device: str = "auto") -> Path:
    """The directory of a finished run of ``cfg``: cached, resumed, or trained now."""
    from .train import train

    run_dir = run_dir_for(cfg, runs_dir)
    status = run_status(run_dir)
    if status["finished"]:
        return run_dir
    if not train_if_missing:
        what = f"unfinished (step {status['step']})" if status["exists"] else "missing"
        raise RunMissing(f"run {run_dir} for this config is {what}; call get_run(..., train_if_missing=True) "
                         f"or `python -m restr train ... --out {run_dir}`")
    train(cfg, run_dir, resume=status["exists"], device=device, progress=progress, requested_hash=cfg.hash())
    return run_dir


def load_predictor(cfg: Config, runs_dir: str | os.PathLike = "runs", **kw):
    """A :class:`restr.predict.Predictor` for the (cached or freshly trained) run of ``cfg``."""
    from .predict import Predictor

    return Predictor.from_run(get_run(cfg, runs_dir, **kw))
