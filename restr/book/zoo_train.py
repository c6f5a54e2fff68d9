"""``python -m restr zoo train``: train what a book profile needs and the zoo lacks, and add it.

The one part of the zoo that knows the book: which models a profile's notebooks ask for
(:mod:`restr.book.models`) and where its data comes from (:mod:`restr.book.runner`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DEFAULT_PROFILE, BookProfile, Config
from ..data.fingerprint import data_fingerprint, short
from ..utils.files import read_jsonl
from ..runs.folder import RunError, checkpoint_path, load_checkpoint
from ..engine.resume import TrainingStopped
from ..runs.park import drop_parked, park, unpark
from ..zoo.cache import get_run, run_dir_for, run_status
from ..zoo.manifest import (MANIFEST, SCORES_DIR, ZooError, add_to_zoo, current_identity, entry_model, entry_name,
                            Shipping, find, load_weights, materialize, read_manifest, ship_score_files, ship_scores,
                            zoo_folder, zoo_identity)
from .analysis import SCORES_FORMAT, expression_scores, state_digest, weights_digest
from .models import book_models, model_config, ships_weights
from .runner import book_profile, ensure_data


def zoo_train(profile_name: str = DEFAULT_PROFILE, only: list[str] | None = None, seeds: list[int] | None = None,
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
        val_rows = [r for r in read_jsonl(Path(run) / "metrics.jsonl") if r.get("split")]
        seconds = max((r.get("elapsed_s") or 0.0 for r in val_rows), default=0.0)
        cpu_s = run_cpu_seconds(val_rows, time.process_time() - cpu0)
        add_to_zoo(run, name, command, seconds, zoo_dir, profile=profile_name, cpu_s=cpu_s,
                   shipping=shipping(profile, m.name, seed))
        added.append(name)
    return added


def shipping(profile: BookProfile, name: str, seed: int) -> Shipping:
    """What the zoo ships of model ``name``'s run with ``seed``: its weights unless the
    profile keeps only some seeds' (:func:`restr.book.models.ships_weights`); in such a
    profile, every model's scores as the chapters read them (the evaluation split, every
    expression they score, pixel level), computed when it joins the zoo."""
    if profile.every_seed_weights is None:
        return Shipping()

    def score(run: Path) -> None:
        for max_expressions in joining_scores(profile):
            print(f"zoo: scoring the fp16 weights on {profile.eval_split} ({max_expressions or 'all'} expressions)",
                  file=sys.stderr, flush=True)
            expression_scores(run, profile.eval_split, max_expressions)

    return Shipping(weights=ships_weights(profile, name, seed), score=score)


def joining_scores(profile: BookProfile) -> list[int | None]:
    """The evaluation sizes (None: the whole split) a model is scored at when it joins the
    zoo (:func:`shipping`): the ones the chapters' claims read, at pixel level."""
    return sorted({profile.eval_max_expressions, profile.grid_eval_expressions}, key=lambda m: m or 0)


def compute_scores(profile_name: str, zoo_dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Score, from its weights, every zoo model of ``profile_name`` that lacks the scores
    :func:`shipping` gives a model joining the zoo now (those that joined before it did),
    and ship them. Returns the number of files shipped per model."""
    profile = book_profile(profile_name)
    data_root = Path(profile.data_root)
    ensure_data(profile, data_root)
    done = {}
    for entry in read_manifest(zoo_dir):
        owner, model = entry_model(entry)
        ship = shipping(profile, model, entry["seed"]) if owner == profile_name else None
        if ship is None or ship.score is None or entry["file"] is None:
            continue
        target = zoo_folder(zoo_dir) / SCORES_DIR / entry["name"]
        wanted = [f"{profile.eval_split}-pixel-{m or 'all'}.csv.gz" for m in joining_scores(profile)]
        if all((target / f).is_file() for f in wanted):
            continue
        print(f"zoo: {entry['name']}", file=sys.stderr, flush=True)
        cfg = model_config(profile, data_root, model, entry["seed"])
        with tempfile.TemporaryDirectory(prefix="restr-scores-") as tmp:
            run = materialize(entry, Path(tmp) / "run", cfg, zoo_dir)
            ship.score(run)
            done[entry["name"]] = ship_scores(run, target)
    return done


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
            ship_score_files(stamp_file, target)
    return {name: 2 * len(files) for name, files in found.items()}


def run_cpu_seconds(val_rows: list[dict[str, Any]], this_session: float) -> float | None:
    """A run's CPU time over all its sessions, as its last validation row keeps it (None:
    unknown, the run was resumed from a checkpoint that did not keep it); for a log from
    before the CPU time was kept, ``this_session``'s, as the manifest recorded it then."""
    if val_rows and "cpu_s" in val_rows[-1]:
        return val_rows[-1]["cpu_s"]
    return this_session


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


SPILL_MIN_MINUTES = 20  # with --spill, a job starts only if at least this long is left before --until
STOP_LEAD_S = 90  # --until: running jobs are asked to stop this long before it (a step, a checkpoint, exiting)


def resume_order(pending: list, done: dict[int, float]) -> list[int]:
    """The indices of ``pending`` in the order to try them: seed by seed as :func:`queue`
    has them, and within a seed the runs already under way first, the furthest along first,
    so that a stopped run is finished before new ones start and work already paid for lands
    first."""
    return sorted(range(len(pending)), key=lambda i: (pending[i][1], -done.get(i, 0.0), i))


def next_job(pending: list, profile_name: str, entries: list[dict[str, Any]], deadline: float | None,
             now: float, done: dict[int, float] | None = None, spill: bool = False) -> tuple[int | None, str]:
    """The index in ``pending`` of the first (model, seed) expected to finish before
    ``deadline`` (epoch seconds; None: the first), and a note on the jobs passed over.
    Only the jobs of the first seed still pending are candidates: no job of a later seed
    starts while one of an earlier seed waits (seed 0 of every arm lands first).
    ``done``: the fraction of each pending job (by index) that a stopped run already holds;
    its expected time is the rest, and it is tried before the new jobs of its seed
    (:func:`resume_order`). A job with no recorded time starts only when at least
    :data:`SPILL_MIN_MINUTES` are left, and none starts once the deadline's
    :data:`STOP_LEAD_S` has come. ``spill``: if none fits, the first one still starts when
    at least :data:`SPILL_MIN_MINUTES` are left (it will be stopped at the deadline at a
    checkpoint, and the next call resumes it)."""
    done = done or {}
    # only the first seed still pending: a shorter job of a later seed never goes ahead of it
    order = [i for i in resume_order(pending, done) if pending[i][1] == min(seed for _, seed in pending)]
    if deadline is None:
        return (order[0] if pending else None), ""
    left = (deadline - now) / 60
    if 60 * left <= STOP_LEAD_S:  # the block is ending: running jobs are being stopped, none starts
        return None, "--until has come: no job starts"
    passed = []
    for i in order:
        m, seed = pending[i]
        need = expected_minutes(m.name, profile_name, entries)
        if need is not None:
            need *= 1.0 - done.get(i, 0.0)
        elif left >= SPILL_MIN_MINUTES:
            return i, f"{m.name} seed {seed}: no recorded time, started without an estimate"
        if need is not None and 1.1 * need <= left:
            return i, ""
        passed.append(f"{m.name} seed {seed} (" + ("no recorded time" if need is None else f"about {need:.0f} min")
                      + ")")
    if spill and pending and left >= SPILL_MIN_MINUTES:
        return order[0], (f"{left:.0f} min left before --until: {passed[0]} will not finish; started anyway (--spill), "
                   f"to be stopped at a checkpoint before --until and resumed by the next call")
    return None, f"{left:.0f} min left before --until; not started: {', '.join(passed)}"


@dataclass
class Schedule:
    """How ``zoo train`` runs its queue: ``jobs`` processes at a time; ``commit`` each model
    as it lands; ``deadline`` (epoch seconds, --until); ``spill`` (start jobs longer than what
    is left, stop them at the deadline); ``park`` (park each stopped run in data/parked/)."""
    jobs: int = 1
    commit: bool = False
    deadline: float | None = None
    spill: bool = False
    park: bool = False


@dataclass
class Job:
    name: str
    log: Path
    run_dir: Path
    started: float = field(default_factory=time.monotonic)
    asked_to_stop: bool = False


def zoo_train_jobs(profile_name: str, only: list[str] | None, seeds: list[int] | None, retrain: bool,
                   runs_dir: str, schedule: Schedule) -> tuple[list[str], list[str], list[str]]:
    """:func:`zoo_train` with ``schedule.jobs`` processes at a time, one compute thread each
    (a campaign on a machine of that many cores): each process trains one (model, seed) of
    the seed-by-seed :func:`queue` and adds it to the zoo; its output goes to
    ``<runs>/zoo-logs/<name>.log``. With ``commit``, each model is committed to git with its
    log as soon as it is in the zoo, so a campaign cut short keeps every finished model, and
    the same command resumes it. With a ``deadline`` (the end of a working block, which
    takes running processes with it), a job is started only if its :func:`expected_minutes`
    (less what a stopped run of it holds) fit before it, with a tenth to spare; shorter jobs
    further down the queue may go first, within the first seed still pending only, the rest
    wait for the next call. ``spill``: jobs
    longer than what is left start anyway (:func:`next_job`), and :data:`STOP_LEAD_S` before
    the deadline every running job is sent SIGTERM and stops at a checkpoint of the step it
    is at (the trainer's :class:`~restr.engine.resume.TrainingStopped`); the next call resumes
    it. ``park``: each stopped run is also parked in ``data/parked/`` (:mod:`restr.runs.park`,
    committed with ``commit``) and what is parked is unparked first, for a machine whose
    ``runs/`` may not survive. Returns the names added, failed and stopped."""
    profile = book_profile(profile_name)
    data_root = Path(profile.data_root)
    ensure_data(profile, data_root)
    runs_root = Path(runs_dir) / "zoo" if retrain else Path(runs_dir)  # where get_run trains, in zoo_train
    if schedule.park:
        for line in unpark(runs_root):
            print(f"zoo: unparked: {line}", file=sys.stderr, flush=True)
    pending = [(m, seed) for m, seed in queue(book_models(profile), only, seeds)
               if retrain or find(m.config(profile, data_root, seed)) is None]
    logs = Path(runs_dir) / "zoo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"zoo: {len(pending)} model(s) to train, {schedule.jobs} at a time; logs in {logs}", file=sys.stderr,
          flush=True)
    running: dict[subprocess.Popen, Job] = {}
    outcome: dict[str, list[str]] = {"added": [], "failed": [], "stopped": []}
    told, last_report = "", time.monotonic()
    while pending or running:
        while pending and len(running) < schedule.jobs:
            runs = [run_dir_for(m.config(profile, data_root, seed), runs_root) for m, seed in pending]
            done = {i: fraction_done(r) for i, r in enumerate(runs)}
            pick, note = next_job(pending, profile_name, read_manifest(), schedule.deadline, time.time(), done,
                                  schedule.spill)
            if note and note != told:
                print(f"zoo: {note}", file=sys.stderr, flush=True)
                told = note
            if pick is None:
                break
            m, seed = pending.pop(pick)
            name = entry_name(m.name, seed, profile_name)
            job = Job(name, logs / f"{name}.log", runs[pick])
            cmd = [sys.executable, "-m", "restr", "zoo", "train", "--profile", profile_name, "--only", m.name,
                   "--seeds", str(seed), "--runs", runs_dir] + (["--retrain"] if retrain else [])
            with open(job.log, "a" if done[pick] else "w") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
            running[proc] = job
            resumed = f", resuming at {100 * done[pick]:.0f} %" if done[pick] else ""
            print(f"zoo: started {job.name}{resumed}", file=sys.stderr, flush=True)
        if not running:
            break  # nothing fits before the deadline
        time.sleep(2)
        if schedule.deadline is not None and time.time() >= schedule.deadline - STOP_LEAD_S:
            ask_to_stop(running)
        for proc in [p for p in running if p.poll() is not None]:
            reap(proc.returncode, running.pop(proc), schedule, outcome)
        if time.monotonic() - last_report > 60 and running:
            last_report = time.monotonic()
            for job in running.values():
                print(f"zoo: {job.name}, {(time.monotonic() - job.started) / 60:.0f} min: {_last_line(job.log)}",
                      file=sys.stderr, flush=True)
    return outcome["added"], outcome["failed"], outcome["stopped"]


def reap(returncode: int, job: Job, schedule: Schedule, outcome: dict[str, list[str]]) -> None:
    """A finished job's outcome: added (and committed), stopped at --until (and parked), or failed."""
    minutes = (time.monotonic() - job.started) / 60
    if returncode == 0:
        outcome["added"].append(job.name)
        print(f"zoo: {job.name} done in {minutes:.1f} min", file=sys.stderr, flush=True)
        dropped = drop_parked(job.run_dir.name)  # a parked copy of a finished run is dead weight
        if dropped is not None:
            print(f"zoo: {job.name}: its parked copy {dropped} is deleted", file=sys.stderr, flush=True)
        if schedule.commit:
            commit_model(job.name, also=[str(dropped)] if dropped is not None else [])
    elif returncode == TrainingStopped.exit_code or (job.asked_to_stop and returncode == -signal.SIGTERM):
        # -SIGTERM: asked to stop before its training had begun (no handler yet, nothing lost)
        outcome["stopped"].append(job.name)
        where = (f"at {100 * fraction_done(job.run_dir):.0f} % after {minutes:.1f} min, at a checkpoint in "
                 f"{job.run_dir}" if returncode > 0 else f"after {minutes:.1f} min, before its training began")
        print(f"zoo: {job.name} stopped {where}; the same command resumes it", file=sys.stderr, flush=True)
        if schedule.park:
            park_run(job.name, job.run_dir, schedule.commit)
    else:
        outcome["failed"].append(job.name)
        print(f"zoo: {job.name} failed (exit {returncode}); its output: {job.log}", file=sys.stderr, flush=True)


def fraction_done(run_dir: Path) -> float:
    """How much of its schedule an unfinished run holds at its last checkpoint (0 if none)."""
    status = run_status(run_dir)
    if status["finished"] or not status["iterations"]:
        return 0.0
    return status["step"] / status["iterations"]


def ask_to_stop(running: dict[subprocess.Popen, Job]) -> None:
    """SIGTERM, once, to every running job: each stops after its step under way, at a checkpoint."""
    for proc, job in running.items():
        if proc.poll() is None and not job.asked_to_stop:
            proc.send_signal(signal.SIGTERM)
            job.asked_to_stop = True
            print(f"zoo: {job.name}: asked to stop (--until is near)", file=sys.stderr, flush=True)


def park_run(name: str, run_dir: Path, commit: bool) -> None:
    """Park a stopped job's run in data/parked/ (and commit it with ``commit``)."""
    try:
        target = park(run_dir)
    except RunError as exc:  # stopped before its first step: nothing to park
        print(f"zoo: {name} not parked: {exc}", file=sys.stderr, flush=True)
        return
    print(f"zoo: {name} parked in {target}", file=sys.stderr, flush=True)
    if commit:
        git_commit([str(target)], f"parked: zoo model {name} stopped at the block's end "
                                  f"({100 * fraction_done(run_dir):.0f} %)", target.parent, f"the parked {name}")


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-160:] if lines else ""


def commit_model(name: str, zoo_dir: str | os.PathLike | None = None, also: list[str] | None = None) -> None:
    """Commit a zoo model's weights, its log and the manifest to git (only those files, and
    ``also``: the deletion of the run's parked copy)."""
    entry = next(e for e in read_manifest(zoo_dir) if e["name"] == name)
    folder = zoo_folder(zoo_dir)
    paths = [str(folder / entry["metrics_file"]), str(folder / MANIFEST), *(also or [])]
    if entry["file"] is not None:
        paths.append(str(folder / entry["file"]))
    if (folder / SCORES_DIR / name).is_dir():  # the scores computed when it joined the zoo
        paths.append(str(folder / SCORES_DIR / name))
    plain_log = folder / f"{name}.metrics.jsonl"  # the uncompressed log of the model this one replaced
    if plain_log.name != entry["metrics_file"] and not plain_log.exists() and subprocess.run(
            ["git", "ls-files", "--", str(plain_log)], cwd=folder, capture_output=True, text=True).stdout.strip():
        paths.append(str(plain_log))  # stage its removal
    m = entry.get("metrics", {})
    message = (f"zoo: {name} (val slice cIoU {100 * m.get('cum_iou', float('nan')):.1f} %, "
               f"{entry.get('wall_s', 0) / 60:.0f} min, {entry['config']['train']['iterations']:,} steps)")
    if git_commit(paths, message, folder, name):
        print(f"zoo: committed {name}", file=sys.stderr, flush=True)


def git_commit(paths: list[str], message: str, cwd: Path, what: str) -> bool:
    """``git add`` and ``git commit`` only ``paths``; a failure is reported, not raised (the
    campaign goes on). Returns whether it committed."""
    for cmd in (["git", "add", "--", *paths], ["git", "commit", "-q", "-m", message, "--", *paths]):
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"zoo: could not commit {what}: {out.stderr.strip() or out.stdout.strip()}", file=sys.stderr)
            return False
    return True


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
        raise ZooError(f"the zoo already holds a model called {name!r} ({entry['file'] or 'its log and scores'}) of "
                       f"another config or data (trained by `{entry.get('command', '?')}`); not replacing it with this "
                       f"config's model. To replace it: `{command} --retrain`")
