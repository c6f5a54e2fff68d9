"""``python -m restr zoo train``: train what a book profile needs and the zoo lacks, and add it.

The one part of the zoo that knows the book: which models a profile's notebooks ask for
(:mod:`restr.book.models`) and where its data comes from (:mod:`restr.book.runner`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..data.fingerprint import data_fingerprint, short
from ..utils.files import atomic_write_bytes, read_jsonl
from ..runs.folder import checkpoint_path, load_checkpoint
from ..zoo.cache import get_run
from ..zoo.manifest import (MANIFEST, SCORES_DIR, ZooError, add_to_zoo, current_identity, entry_model, entry_name,
                            find, load_weights, read_manifest, zoo_folder, zoo_identity)
from .analysis import SCORES_FORMAT, state_digest, weights_digest
from .models import book_models
from .runner import book_profile, ensure_data


def zoo_train(profile_name: str = "quick", only: list[str] | None = None, seeds: list[int] | None = None,
              retrain: bool = False, runs_dir: str = "runs", zoo_dir: str | os.PathLike | None = None) -> list[str]:
    """Train what the book's ``profile_name`` needs and the zoo lacks (``retrain``: every
    model asked for, again), and add each to the zoo. Returns the names added."""
    profile = book_profile(profile_name)
    data_root = Path(profile.data_root)
    ensure_data(profile, data_root)
    models = book_models(profile)
    unknown = set(only or []) - {m.name for m in models}
    if unknown:
        raise ZooError(f"no book model named {sorted(unknown)}; the {profile_name} book's models are: "
                       f"{', '.join(m.name for m in models)}")
    added = []
    for m, seed in queue(models, only, seeds):
        cfg, name = m.config(profile, data_root, seed), entry_name(m.name, seed, profile_name)
        if not retrain and find(cfg, zoo_dir) is not None:
            print(f"zoo: {name} is in the zoo already", file=sys.stderr)
            continue
        command = f"python -m restr zoo train --profile {profile_name} --only {m.name} --seeds {seed}"
        if not retrain:
            refuse_replacing(name, cfg, command, zoo_dir)
        print(f"zoo: training {name} ({cfg.train.iterations} steps)", file=sys.stderr)
        cpu0 = time.process_time()
        run = get_run(cfg, Path(runs_dir) / "zoo" if retrain else runs_dir, use_zoo=False)
        seconds = max((r.get("elapsed_s") or 0.0 for r in read_jsonl(Path(run) / "metrics.jsonl")
                       if r.get("split")), default=0.0)
        add_to_zoo(run, name, command, seconds, zoo_dir, profile=profile_name, cpu_s=time.process_time() - cpu0)
        added.append(name)
    return added


def zoo_scores(runs_dir: str | os.PathLike = "runs", zoo_dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Ship with each zoo model the per-expression scores a book run computed from its
    weights: every run in ``runs_dir`` rebuilt from a zoo model (its checkpoint names the
    model) whose weights are the model's, each of its ``scores/`` files whose stamp names
    those weights in this code's scoring format, into ``data/zoo/scores/<name>/`` (which it
    replaces). Returns the number of files shipped per model."""

    entries = {e["name"]: e for e in read_manifest(zoo_dir)}
    found: dict[str, dict[str, Path]] = {}
    for run_dir in sorted(p for p in Path(runs_dir).glob("*") if checkpoint_path(p, "last").is_file()):
        name = load_checkpoint(checkpoint_path(run_dir, "last")).get("zoo")
        if name not in entries or not (run_dir / "scores").is_dir():
            continue
        digest = weights_digest(run_dir)
        if digest != state_digest(load_weights(entries[name], zoo_dir)):
            continue  # a run of that name with other weights: not the zoo's model
        for stamp_file in sorted((run_dir / "scores").glob("*.json")):
            stamp = json.loads(stamp_file.read_text())
            if stamp.get("weights_sha256") == digest and stamp.get("format") == SCORES_FORMAT \
                    and stamp_file.with_suffix(".csv").is_file():
                found.setdefault(name, {})[stamp_file.stem] = stamp_file
    for name, files in found.items():
        target = zoo_folder(zoo_dir) / SCORES_DIR / name
        shutil.rmtree(target, ignore_errors=True)
        for stamp_file in files.values():
            for f in (stamp_file, stamp_file.with_suffix(".csv")):
                atomic_write_bytes(target / f.name, f.read_bytes(), durable=False)
    return {name: 2 * len(files) for name, files in found.items()}


def queue(models: list, only: list[str] | None = None, seeds: list[int] | None = None) -> list[tuple[Any, int]]:
    """The ``(model, seed)`` pairs to train, seed by seed: seed 0 of every model before any
    model's seed 1, so that a campaign stopped half-way has every arm once."""
    pairs = [(m, s) for m in models if not only or m.name in only for s in m.seeds if not seeds or s in seeds]
    order = {s: i for i, s in enumerate(sorted({s for _, s in pairs}))}
    return sorted(pairs, key=lambda p: order[p[1]])  # stable: the book's order within a seed


def expected_minutes(model: str, profile_name: str, entries: list[dict[str, Any]]) -> float | None:
    """How long one seed of a book model is expected to train, from the zoo's manifest: the
    longest recorded wall time of its other seeds in this profile, else the longest of any
    model of the profile of the same family (every arm trains the same budget), else None."""

    family = "m3att" if model.startswith("m3att") else "restr"
    timed = [(entry_model(e), e) for e in entries if e.get("wall_s")]
    same = [e["wall_s"] / 60 for (p, m), e in timed if p == profile_name and m == model]
    kin = [e["wall_s"] / 60 for (p, _), e in timed
           if p == profile_name and e["config"]["model"].get("family", "restr") == family]
    return max(same) if same else max(kin) if kin else None


def next_job(pending: list, profile_name: str, entries: list[dict[str, Any]], deadline: float | None,
             now: float) -> tuple[int | None, str]:
    """The index in ``pending`` of the first (model, seed) expected to finish before
    ``deadline`` (epoch seconds; None: the first), and a note on the jobs passed over."""
    if deadline is None:
        return (0 if pending else None), ""
    left = (deadline - now) / 60
    passed = []
    for i, (m, seed) in enumerate(pending):
        need = expected_minutes(m.name, profile_name, entries)
        if need is None or 1.1 * need <= left:
            return i, ("" if need is not None else f"{m.name} seed {seed}: no recorded time, started without an "
                                                     f"estimate")
        passed.append(f"{m.name} seed {seed} (about {need:.0f} min)")
    return None, f"{left:.0f} min left before --until; not started: {', '.join(passed)}"


def zoo_train_jobs(profile_name: str, only: list[str] | None, seeds: list[int] | None, retrain: bool,
                   runs_dir: str, jobs: int, commit: bool = False, deadline: float | None = None
                   ) -> tuple[list[str], list[str]]:
    """:func:`zoo_train` with ``jobs`` processes at a time, one compute thread each (a
    campaign on a machine of ``jobs`` cores): each process trains one (model, seed) of the
    seed-by-seed :func:`queue` and adds it to the zoo; its output goes to
    ``<runs>/zoo-logs/<name>.log``. With ``commit``, each model is committed to git with its
    log as soon as it is in the zoo, so a campaign cut short keeps every finished model, and
    the same command resumes it. With ``deadline`` (epoch seconds: the end of a working
    block, which takes running processes with it), a job is started only if its
    :func:`expected_minutes` fit before it (with a tenth to spare); shorter jobs further down
    the queue may go first, and the rest wait for the next call. Returns the names added
    and those that failed."""
    profile = book_profile(profile_name)
    data_root = Path(profile.data_root)
    ensure_data(profile, data_root)
    pending = [(m, seed) for m, seed in queue(book_models(profile), only, seeds)
               if retrain or find(m.config(profile, data_root, seed)) is None]
    logs = Path(runs_dir) / "zoo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"zoo: {len(pending)} model(s) to train, {jobs} at a time; logs in {logs}", file=sys.stderr, flush=True)
    running: dict[subprocess.Popen, tuple[str, Path, float]] = {}
    added, failed, last_report = [], [], time.monotonic()
    told = ""
    while pending or running:
        while pending and len(running) < jobs:
            pick, note = next_job(pending, profile_name, read_manifest(), deadline, time.time())
            if note and note != told:
                print(f"zoo: {note}", file=sys.stderr, flush=True)
                told = note
            if pick is None:
                break
            m, seed = pending.pop(pick)
            name = entry_name(m.name, seed, profile_name)
            cmd = [sys.executable, "-m", "restr", "zoo", "train", "--profile", profile_name, "--only", m.name,
                   "--seeds", str(seed), "--runs", runs_dir] + (["--retrain"] if retrain else [])
            log = logs / f"{name}.log"
            with open(log, "w") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
            running[proc] = (name, log, time.monotonic())
            print(f"zoo: started {name}", file=sys.stderr, flush=True)
        if not running:
            break  # nothing fits before the deadline
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            name, log, t0 = running.pop(proc)
            minutes = (time.monotonic() - t0) / 60
            if proc.returncode == 0:
                added.append(name)
                print(f"zoo: {name} done in {minutes:.1f} min", file=sys.stderr, flush=True)
                if commit:
                    commit_model(name)
            else:
                failed.append(name)
                print(f"zoo: {name} failed (exit {proc.returncode}); its output: {log}", file=sys.stderr, flush=True)
        if time.monotonic() - last_report > 60 and running:
            last_report = time.monotonic()
            for name, log, t0 in running.values():
                print(f"zoo: {name}, {(time.monotonic() - t0) / 60:.0f} min: {_last_line(log)}", file=sys.stderr,
                      flush=True)
    return added, failed


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-160:] if lines else ""


def commit_model(name: str, zoo_dir: str | os.PathLike | None = None) -> None:
    """Commit a zoo model's weights, its log and the manifest to git (only those files)."""
    entry = next(e for e in read_manifest(zoo_dir) if e["name"] == name)
    folder = zoo_folder(zoo_dir)
    paths = [str(folder / entry["file"]), str(folder / entry["metrics_file"]), str(folder / MANIFEST)]
    plain_log = folder / f"{name}.metrics.jsonl"  # the uncompressed log of the model this one replaced
    if plain_log.name != entry["metrics_file"] and not plain_log.exists() and subprocess.run(
            ["git", "ls-files", "--", str(plain_log)], cwd=folder, capture_output=True, text=True).stdout.strip():
        paths.append(str(plain_log))  # stage its removal
    m = entry.get("metrics", {})
    message = (f"zoo: {name} (val slice cIoU {100 * m.get('cum_iou', float('nan')):.1f} %, "
               f"{entry.get('wall_s', 0) / 60:.0f} min, {entry['config']['train']['iterations']:,} steps)")
    for cmd in (["git", "add", "--", *paths], ["git", "commit", "-q", "-m", message, "--", *paths]):
        out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"zoo: could not commit {name}: {out.stderr.strip() or out.stdout.strip()}", file=sys.stderr)
            return
    print(f"zoo: committed {name}", file=sys.stderr, flush=True)


def refuse_replacing(name: str, cfg: Config, command: str, zoo_dir: str | os.PathLike | None = None) -> None:
    """A :class:`ZooError` if the zoo holds a model called ``name`` of another config (or data)
    than ``cfg``: training ``cfg`` (by ``command``) would replace it; ``--retrain`` asks for that."""
    entry = next((e for e in read_manifest(zoo_dir) if e["name"] == name), None)
    if entry is None:
        return
    try:
        same = current_identity(entry) == zoo_identity(cfg, short(data_fingerprint(cfg.data)))
    except ZooError:
        same = False  # its config no longer loads: it is another config now
    if not same:
        raise ZooError(f"the zoo already holds a model called {name!r} ({zoo_folder(zoo_dir) / entry['file']}) of "
                       f"another config or data (trained by `{entry.get('command', '?')}`); not replacing it with this "
                       f"config's model. To replace it: `{command} --retrain`")
