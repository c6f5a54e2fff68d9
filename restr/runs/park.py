"""Parking an unfinished run in the repository, so that a long run outlives a working block.

A working block ends at its time limit and takes its running processes and every file
outside the repository's tracked files with it (``runs/`` is not tracked). A run longer
than a block (the doubling test's longest runs; a campaign's last job of a block) is
*parked* before the block ends: the files its resumption needs are copied into
``data/parked/<run name>/``, which git tracks, and committed. The next block *unparks* it
into ``runs/`` and the same command that started it (``recipe sweep``, ``zoo train``, ``train
--resume``) resumes it from its last checkpoint::

    python -m restr runs park runs/tiny-ae257c9e34b3-ef385256   # then git add data/parked && git commit
    python -m restr runs unpark                                 # in the next block
    python -m restr runs parked                                 # what is parked, and how far

A parked run is its config, vocabulary, log and last checkpoint (weights, optimiser and
schedule state, random states: about 21 MB for the tiny model), nothing else. Unparking
never replaces a run that is further along or finished; a parked run whose run in
``runs/`` has finished is reported as done, to be removed from ``data/parked/``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..utils.files import REPO, atomic_write_bytes
from .folder import CKPT_DIR, CONFIG_FILE, METRICS_FILE, VOCAB_FILE, RunError, checkpoint_path, load_checkpoint

PARK_DIR = Path(os.environ.get("RESTR_PARK_DIR") or REPO / "data" / "parked")  # $RESTR_PARK_DIR: elsewhere
PARKED_FILES = (CONFIG_FILE, VOCAB_FILE, METRICS_FILE, f"{CKPT_DIR}/last.pt", f"{CKPT_DIR}/last.json")


def progress(run_dir: str | os.PathLike) -> dict:
    """``{"step", "iterations", "finished"}`` from a run's ``checkpoints/last.json`` (step 0
    when it has no checkpoint)."""
    side = checkpoint_path(run_dir, "last").with_suffix(".json")
    if not side.is_file() or not checkpoint_path(run_dir, "last").is_file():
        return {"step": 0, "iterations": None, "finished": False}
    try:
        info = json.loads(side.read_text())
        return {"step": int(info.get("step", 0)), "iterations": info.get("iterations"),
                "finished": bool(info.get("finished"))}
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise RunError(f"{side} is not a checkpoint summary ({exc})") from None


def park(run_dir: str | os.PathLike, park_dir: str | os.PathLike | None = None) -> Path:
    """Copy what resuming ``run_dir`` needs into ``<park_dir>/<run name>/`` and return it.
    Refuses a run with no checkpoint (nothing to resume) and a finished one (the zoo, not
    the parking, keeps finished models)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a run folder (no such folder)")
    state = progress(run_dir)
    if state["step"] == 0:
        raise RunError(f"{run_dir} has no checkpoint (checkpoints/last.pt): nothing to park; a run saves one every "
                       f"train.ckpt_every steps")
    if state["finished"]:
        raise RunError(f"{run_dir} has finished (step {state['step']:,}): add it to the zoo instead of parking it")
    target = Path(park_dir or PARK_DIR) / run_dir.name
    for name in PARKED_FILES:
        src = run_dir / name
        if not src.is_file():
            raise RunError(f"{src} is missing: {run_dir} is not a complete run folder")
    # the run may still be training: its summary is written from the copied checkpoint
    # itself, so the two always agree; the log may run past the checkpoint (resuming redoes it)
    ckpt = target / CKPT_DIR / "last.pt"
    atomic_write_bytes(ckpt, checkpoint_path(run_dir, "last").read_bytes())
    state = load_checkpoint(ckpt)
    summary = {k: state.get(k) for k in ("step", "epoch", "step_in_epoch", "finished", "best_val")}
    summary["iterations"] = state["config"]["train"]["iterations"]
    for name in (CONFIG_FILE, VOCAB_FILE, METRICS_FILE):
        atomic_write_bytes(target / name, (run_dir / name).read_bytes())
    atomic_write_bytes(ckpt.with_suffix(".json"), (json.dumps(summary) + "\n").encode())
    return target


def drop_parked(run_name: str, park_dir: str | os.PathLike | None = None) -> Path | None:
    """Delete the parked copy of run ``run_name`` (once the run has finished and its model is
    in the zoo, the copy only takes space) and return where it was; None if there was none."""
    target = Path(park_dir or PARK_DIR) / run_name
    if not target.is_dir():
        return None
    shutil.rmtree(target)
    return target


def unpark(runs_dir: str | os.PathLike = "runs", park_dir: str | os.PathLike | None = None) -> list[str]:
    """Copy every parked run into ``runs_dir`` where the run there is missing or behind it;
    returns one line per parked run saying what was done."""
    lines = []
    for parked in sorted(p for p in Path(park_dir or PARK_DIR).glob("*") if p.is_dir()):
        here = Path(runs_dir) / parked.name
        theirs, ours = progress(parked), progress(here)
        if ours["finished"]:
            lines.append(f"{parked.name}: finished in {here}; remove {parked} from the repository")
        elif ours["step"] >= theirs["step"]:
            lines.append(f"{parked.name}: {here} is at step {ours['step']:,}, not behind the parked "
                         f"{theirs['step']:,}; left as it is")
        else:
            if here.exists():
                shutil.rmtree(here / CKPT_DIR, ignore_errors=True)
            for name in PARKED_FILES:
                atomic_write_bytes(here / name, (parked / name).read_bytes())
            lines.append(f"{parked.name}: unparked at step {theirs['step']:,} of {theirs['iterations']:,} into {here}; "
                         f"the command that started it resumes it")
    return lines


def parked(park_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs") -> list[dict]:
    """Each parked run: its name, step, iterations, size in MB and its state in ``runs_dir``."""
    out = []
    for p in sorted(q for q in Path(park_dir or PARK_DIR).glob("*") if q.is_dir()):
        state, here = progress(p), progress(Path(runs_dir) / p.name)
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6
        out.append({"run": p.name, "step": state["step"], "iterations": state["iterations"], "MB": size,
                    "in runs": "finished" if here["finished"] else f"step {here['step']:,}"})
    return out
