"""The converged campaign's progress: every run the protocol asks for, and where it is.

``python -m restr zoo campaign [--profile converged]``

The campaign trains every model of the ``converged`` profile (:mod:`restr.book.models`)
with each of its seeds for the protocol's budget (:mod:`restr.book.budget`), seed 0 of
every model first, over several working blocks (``python -m restr zoo train --profile
converged --jobs 2 --commit --until HH:MM --spill --park``). This module reads how far it
is from the repository alone, so that a fresh clone shows it: a run is *in the zoo*
(``data/zoo/manifest.json``: its minutes, its CPU time, and from its shipped log its last
validation and its ``converged`` rule), *parked* part-way (``data/parked/``), or *to train*.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.park import parked, progress
from ..utils.devices import cpu_has_fast_bf16
from ..zoo.manifest import entry_name, read_log_bytes, read_manifest, zoo_folder
from .models import book_models, ships_weights
from .runner import book_profile
from .verdict import convergence

COLUMNS = ["model", "seed", "zoo name", "state", "zoo keeps", "steps", "minutes", "CPU hours", "trained in",
           "val cIoU %", "last-fifth rise", "converged", "minutes left"]
JOBS = 2  # runs trained at a time (the campaign's --jobs on this 2-core machine), for the time left


def log_rows(entry: dict[str, Any], zoo_dir: Path) -> list[dict[str, Any]]:
    """The rows of a zoo model's shipped training log (its ``metrics.jsonl``)."""
    return [json.loads(line) for line in read_log_bytes(zoo_dir / entry["metrics_file"]).splitlines() if line]


def train_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A log's training rows (losses, speed, arithmetic), without its validations."""
    return [r for r in rows if "loss" in r and "split" not in r]


def trained_in(rows: list[dict[str, Any]]) -> str:
    """The arithmetic a run's steps computed in, read from its log's training rows:
    ``bfloat16`` on a CPU with native bf16, ``float32`` on one without (``train.amp=bf16``
    falls back), or both in the order the run met them when it was resumed on another
    machine, e.g. ``bfloat16, float32 from step 5,040`` (the first log step in the new one)."""
    spans: list[tuple[str, int]] = []
    for r in train_rows(rows):
        kind = r.get("arithmetic", "unrecorded")
        if not spans or spans[-1][0] != kind:
            spans.append((kind, int(r["step"])))
    if not spans:
        return "unrecorded"
    return ", ".join([spans[0][0]] + [f"{k} from step {s:,}" for k, s in spans[1:]])


def float32_slowdown(logs: list[list[dict[str, Any]]]) -> float | None:
    """How many times longer a training step took in float32 than in bfloat16, measured in
    the runs whose logs hold both (resumed on a machine of the other kind, beside the same
    number of jobs): the median over those runs of their bf16 rows' median speed over their
    float32 rows'. None while no run met both. It folds the two machines' other differences
    into the arithmetic's, which is what an estimate of the time left needs."""
    ratios = []
    for rows in logs:
        speed: dict[str, list[float]] = {}
        for r in train_rows(rows):
            if r.get("images_per_s"):
                speed.setdefault(r.get("arithmetic", "unrecorded"), []).append(float(r["images_per_s"]))
        if speed.get("bfloat16") and speed.get("float32"):
            ratios.append(statistics.median(speed["bfloat16"]) / statistics.median(speed["float32"]))
    return statistics.median(ratios) if ratios else None


def log_curve(rows: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """The validation steps and cIoU (%) of a training log's rows (:func:`log_rows`)."""
    val = [r for r in rows if r.get("split") and "cum_iou" in r]
    return [int(r["step"]) for r in val], [100 * float(r["cum_iou"]) for r in val]


START_ARMS = ("main", "start-dense", "start-none")  # the main arm from each backbone start (book/protocol.md)


def starts_from_zoo(profile_name: str = "converged", zoo_dir: str | Path | None = None,
                    levels=(50, 60, 70)) -> pd.DataFrame:
    """The main arm trained from each backbone start, read from the zoo's seed-0 models of
    ``profile_name`` and their shipped logs (:func:`restr.book.analysis.starts_table`'s
    columns, plus the last fifth's rise): the arms not in the zoo yet are left out."""
    from types import SimpleNamespace

    from .analysis import curve_frame, starts_from_curves, vit_start

    zoo = zoo_folder(zoo_dir)
    entries = {e["name"]: e for e in read_manifest(zoo)}
    curves, rises = {}, {}
    for arm in START_ARMS:
        entry = entries.get(entry_name(arm, 0, profile_name))
        if entry is None:
            continue
        curve = curve_frame(log_rows(entry, zoo))
        start = vit_start(SimpleNamespace(**entry["config"]["model"]))
        curves[arm] = (start, curve, entry["metrics_file"])
        rises[arm] = convergence(curve["step"], curve["IoU"], int(entry["config"]["train"]["iterations"])).rise
    table = starts_from_curves(curves, levels) if curves else pd.DataFrame()
    if len(table):
        table["last-fifth rise"] = table.model.map(rises)
    return table


def run_prefix(cfg) -> str:
    """The part of a run folder's name that its config sets (``<preset>-<config hash>-``);
    the rest is the data's fingerprint, which needs the data to compute."""
    return f"{cfg.preset}-{cfg.run_key()}-"


def local_step(runs_dir: str | Path, prefix: str) -> int | None:
    """The checkpointed step of this machine's run folder whose name starts with ``prefix``
    (0 before its first checkpoint; None if there is no such folder)."""
    folders = Path(runs_dir).glob(f"{prefix}*") if Path(runs_dir).is_dir() else []
    return max((progress(f)["step"] for f in folders), default=None)


def campaign_status(profile_name: str = "converged", zoo_dir: str | Path | None = None,
                    park_dir: str | Path | None = None, runs_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per run of the campaign, in the order ``zoo train`` trains them (seed 0 of
    every model first): where it is, what the zoo keeps of it (its weights, or its log and
    scores: :func:`restr.book.models.ships_weights`), and for a run in the zoo its minutes, CPU hours, last
    validation cIoU on the logs' slice and the ``converged`` rule read from its own log.
    Parked runs, and runs under way in this machine's ``runs_dir`` (if given), are found by their config
    (the data root as ``zoo train`` names it: the profile's, relative to the repository), so
    no data set need be on disk. A local run ahead of its parked copy shows its own step."""
    from .zoo_train import expected_minutes, queue

    profile = book_profile(profile_name)  # refused until the budget is fixed
    zoo = zoo_folder(zoo_dir)
    entries = {e["name"]: e for e in read_manifest(zoo)}
    waiting = parked(park_dir)
    rows, logs = [], []
    for m, seed in queue(book_models(profile)):
        name = entry_name(m.name, seed, profile_name)
        row: dict[str, Any] = {"model": m.name, "seed": seed, "zoo name": name, "steps": m.iterations,
                               "zoo keeps": "weights" if ships_weights(profile, m.name, seed) else "log, scores"}
        entry = entries.get(name)
        if entry is not None:
            logs.append(log_rows(entry, zoo))  # read once: its curve and its arithmetic
            steps, ious = log_curve(logs[-1])
            row["trained in"] = trained_in(logs[-1])
            rule = convergence(steps, ious, m.iterations)
            row.update({"state": "in the zoo", "minutes": entry.get("wall_s", float("nan")) / 60,
                        "CPU hours": (entry.get("cpu_s") or float("nan")) / 3600,  # None: not known
                        "val cIoU %": ious[-1] if ious else float("nan"), "last-fifth rise": rule.rise,
                        "converged": "passes" if rule.passed else "fails (still learning)"})
        else:
            prefix = run_prefix(m.config(profile, profile.data_root, seed))
            spot = next((p for p in waiting if p["run"].startswith(prefix)), None)
            here = local_step(runs_dir, prefix) if runs_dir is not None else None
            step = 0
            if here is not None and (spot is None or here > spot["step"]):
                row["state"] = f"at step {here:,} here" if here else "started here"
                step = here
            else:
                row["state"] = f"parked at step {spot['step']:,}" if spot else "to train"
                step = spot["step"] if spot else 0
            expected = expected_minutes(m.name, profile_name, list(entries.values()))
            row["minutes left"] = float("nan") if expected is None else expected * (1 - step / m.iterations)
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update(float32_slowdown=float32_slowdown(logs), native_bf16=cpu_has_fast_bf16())
    return table


def summary(table: pd.DataFrame) -> str:
    """One sentence: how many runs are in the zoo (all seeds, and seed 0), what they took."""
    done = table[table.state == "in the zoo"]
    first = table[table.seed == table.seed.min()] if len(table) else table
    first_done = first[first.state == "in the zoo"]
    parked_runs = table[table.state.str.startswith("parked")]
    here = table[table.state.str.endswith(" here")]
    text = (f"{len(done)} of the campaign's {len(table)} runs are in the zoo ({len(first_done)} of the "
            f"{len(first)} first seeds, which are trained first)")
    if len(parked_runs):
        text += f", {len(parked_runs)} parked part-way"
    if len(here):
        text += f", {len(here)} under way on this machine"
    if len(done):
        passing = int((done.converged == "passes").sum())
        unknown = int(done["CPU hours"].isna().sum())
        cpu = f"{done['CPU hours'].sum():.1f} CPU hours" + (f" ({unknown} run(s) not counted: resumed from a "
                                                             f"checkpoint that did not keep its CPU time)"
                                                             if unknown else "")
        text += (f"; they took {cpu}, {done.minutes.mean():.0f} minutes a run on average, and {passing} of them "
                 f"pass the converged rule")
        other = int(done["trained in"].map(lambda t: any(
            part.split(" from ")[0] not in ("bfloat16", "unrecorded") for part in t.split(", "))).sum())
        if other:
            text += (f"; {other} of them computed some or all of their steps in another arithmetic than "
                     f"bfloat16 (column 'trained in': a machine without native bf16 trains in float32)")
    left = table[table.state != "in the zoo"]
    if len(left):
        unknown = int(left["minutes left"].isna().sum())
        text += (f". Left: about {left['minutes left'].sum() / 60 / JOBS:.0f} hours of wall time, {JOBS} runs at a "
                 f"time (each run's minutes: the longest of its model's other seeds in the zoo, else of its "
                 f"family's, less what it has done)")
        if unknown:
            text += f", {unknown} run(s) with no estimate yet"
        if table.attrs.get("native_bf16") is False:
            text += ". This machine has no native bf16, so its runs compute in float32"
            slowdown = table.attrs.get("float32_slowdown")
            text += (f": at the {slowdown:.1f} times longer steps measured in the runs whose logs hold both "
                     f"arithmetics, about {left['minutes left'].sum() * slowdown / 60 / JOBS:.0f} hours here"
                     if slowdown else " and take longer than this estimate, which comes from runs in bfloat16")
    return text


def format_status(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["zoo name"]).copy()
    for column, digits in (("minutes", 0), ("CPU hours", 2), ("val cIoU %", 1), ("last-fifth rise", 2),
                           ("minutes left", 0)):
        shown[column] = shown[column].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    shown["converged"] = shown["converged"].fillna("")
    shown["trained in"] = shown["trained in"].fillna("")
    return shown.to_string(index=False) + "\n" + summary(table)
