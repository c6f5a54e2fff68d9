"""A cache of trained runs for the notebooks: ``get_run(cfg)`` trains once, then reuses.

Runs live in ``<runs_dir>/<preset>-<cfg.run_key()>-<data fingerprint>``: the hash covers the
whole config (model, data, train) as the caller gave it, and the fingerprint the data's
contents (:mod:`restr.data.fingerprint`: the refs and instances files, the vocabulary),
since the config names the data only by its path. Data regenerated in place thus gets
runs of its own; a run of the same config on other data is reported stale (and kept).
A run counts as finished when its ``checkpoints/last.json`` says so (step ==
train.iterations); an unfinished one (a notebook interrupted mid-training) is resumed; a
missing one is trained. One process at a time trains a run: another one that needs it
waits for it (:mod:`restr.runs.lock`), then uses it.

    from restr.config import get_preset
    from restr.zoo.cache import get_run, load_predictor
    run_dir = get_run(get_preset("tiny"))
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..config import Config
from ..data.fingerprint import changes, data_fingerprint, short
from ..engine.trainer import train
from ..eval.predict import Predictor
from ..runs.folder import CKPT_DIR, CONFIG_FILE, NO_WEIGHTS_FILE, checkpoint_path, read_run_fingerprint
from ..runs.lock import RunLock
from . import manifest as zoo


class RunMissing(FileNotFoundError):
    """The run is not in the cache and ``train_if_missing`` is False."""


def run_dir_for(cfg: Config, runs_dir: str | os.PathLike = "runs", fingerprint: dict | None = None) -> Path:
    """``<runs_dir>/<preset>-<config hash>-<data fingerprint>`` (the data is read if no
    ``fingerprint`` is given)."""
    fp = fingerprint if fingerprint is not None else data_fingerprint(cfg.data)
    return Path(runs_dir) / f"{cfg.preset}-{cfg.run_key()}-{short(fp)}"


def stale_runs(cfg: Config, runs_dir: str | os.PathLike = "runs", fingerprint: dict | None = None) -> list[str]:
    """Runs of this config trained on other data than ``cfg.data`` holds now, each as
    ``"<run dir> is stale: ..."`` naming what changed."""
    fp = fingerprint if fingerprint is not None else data_fingerprint(cfg.data)
    current = run_dir_for(cfg, runs_dir, fp)
    out = []
    for other in sorted(Path(runs_dir).glob(f"{cfg.preset}-{cfg.run_key()}*")):
        if other != current and (other / CONFIG_FILE).is_file():
            what = changes(read_run_fingerprint(other), fp, cfg.data)
            out.append(f"{other} is stale: it was trained on other data at {cfg.data.root} ({'; '.join(what)})")
    return out


def run_status(run_dir: str | os.PathLike) -> dict:
    """``{"exists", "finished", "step", "iterations"}`` read from the checkpoint sidecar."""
    run_dir = Path(run_dir)
    side = checkpoint_path(run_dir, "last").with_suffix(".json")
    status = {"exists": (run_dir / CONFIG_FILE).is_file(), "finished": False, "step": 0, "iterations": None}
    weights = checkpoint_path(run_dir, "last").is_file() or (run_dir / CKPT_DIR / NO_WEIGHTS_FILE).is_file()
    if side.is_file() and weights:  # a zoo model that ships no weights is a finished run without them
        try:
            info = json.loads(side.read_text())
            status.update(finished=status["exists"] and bool(info.get("finished"))
                          and info.get("step") == info.get("iterations"),
                          step=int(info.get("step", 0)), iterations=info.get("iterations"))
        except (json.JSONDecodeError, ValueError):
            pass
    return status


def get_run(cfg: Config, runs_dir: str | os.PathLike = "runs", train_if_missing: bool = True,
            progress: bool = True, device: str = "auto", use_zoo: bool | None = None) -> Path:
    """The directory of a finished run of ``cfg``: cached, rebuilt from the model zoo
    (:mod:`restr.zoo.manifest`; ``use_zoo``, default on unless ``$RESTR_NO_ZOO`` is set), resumed,
    or trained now."""

    fp = data_fingerprint(cfg.data)
    run_dir = run_dir_for(cfg, runs_dir, fp)
    if run_status(run_dir)["finished"]:
        return run_dir
    stale = stale_runs(cfg, runs_dir, fp)
    if not train_if_missing:
        status = run_status(run_dir)
        what = f"unfinished (step {status['step']})" if status["exists"] else "missing"
        raise RunMissing(f"run {run_dir} for this config is {what}; call get_run(..., train_if_missing=True) to "
                         f"train it" + "".join(f"\n{s}" for s in stale))
    for line in stale:
        print(f"notice: {line}; training {run_dir} for the current data", file=sys.stderr)
    with RunLock(run_dir, wait=True):  # another process training it: wait, then use its run
        status = run_status(run_dir)
        if not status["finished"] and not (not status["exists"] and from_zoo(cfg, run_dir, use_zoo)):
            train(cfg, run_dir, resume=status["exists"], device=device, progress=progress, requested_hash=cfg.run_key())
    return run_dir


def from_zoo(cfg: Config, run_dir: Path, use_zoo: bool | None = None) -> bool:
    """Rebuild ``run_dir`` from the zoo model ``cfg`` asks for, if the zoo has one; say
    which. A zoo file that is corrupt or does not match is an error, never a retrain."""

    if use_zoo is None:
        use_zoo = not os.environ.get("RESTR_NO_ZOO")
    entry = zoo.find(cfg) if use_zoo else None
    if entry is None:
        print(f"training {run_dir.name}: not in the model zoo", file=sys.stderr)
        return False
    zoo.materialize(entry, run_dir, cfg)
    shipped = entry["file"] or "its log and scores, no weights"
    print(f"zoo: {run_dir.name} is zoo model {entry['name']} ({shipped}, checked)", file=sys.stderr)
    return True


def load_predictor(cfg: Config, runs_dir: str | os.PathLike = "runs", **kw):
    """A :class:`restr.eval.predict.Predictor` for the (cached or freshly trained) run of ``cfg``."""

    return Predictor.from_run(get_run(cfg, runs_dir, **kw))
