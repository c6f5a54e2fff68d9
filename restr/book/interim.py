"""Where each claim stands while the campaign runs: ``python -m restr zoo campaign --interim``.

The converged campaign (:mod:`restr.book.campaign`) takes many working blocks. The book's
verdicts wait for it: the ``converged`` profile reads every claim from three seeds of every
arm. In the meantime this module reads the claims the shipped scores can answer from the
runs trained so far, with the book's own claim functions (:mod:`restr.book.claims`), the
same rules and the same bootstrap. A claim is read as soon as each of its arms has one
seed, and says how many seeds each has.

These are **interim readings, not verdicts.** With one seed the intervals hold no
seed-to-seed spread, and the protocol (``book/protocol.md``) judges a claim on three
seeds. The ``converged`` gate applies as in the book, so a claim whose runs are still
learning reads *inconclusive (still learning)*. The table also shows what the parts say
before the gates, so the numbers can be followed from block to block.

Nothing is trained or scored here. A run comes from the zoo (its shipped scores, the same
whether it ships its weights or not) or from this machine's finished runs. Claims whose
numbers need a model's weights (the seed's attention, the patch-level scores) are left to
the chapters.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from ..zoo.cache import get_run, run_dir_for, run_status
from ..zoo.manifest import find
from . import claims
from .analysis import all_objects_scores, budget_trajectory, kinds_trajectory
from .claims import Arm, ClaimResult, load_arm
from .models import M3ATT_ARMS, TABLE3_VARIANTS, find_model, model_config, model_seeds, table4_name
from .runner import book_profile, ensure_data


@dataclass(frozen=True)
class InterimClaim:
    """Claims the shipped scores answer: their arms (the claim functions' keys -> the book's
    model names) and how :mod:`restr.book.claims` reads them,
    ``read(arms, floor, dataset, samples, seed) -> [ClaimResult, ...]``."""

    title: str
    arms: Mapping[Any, str]
    read: Callable[..., list[ClaimResult]]
    compare: tuple[tuple[Any, Any], ...] = ()  # (a, b) keys of ``arms``: a - b read along the budget


TABLE3 = {label: request for label, (request, _) in TABLE3_VARIANTS.items()}
DECODER = {(n, d): table4_name(n, False, d) for n in (2, 4) for d in (False, True)}
DEPTH = {n: table4_name(n, False, False) for n in (2, 4, 6)}
SHARING = {("4 layers, decoder", 0): table4_name(4, True, True), ("4 layers, decoder", 1): table4_name(4, False, True),
           ("6 layers", 0): table4_name(6, True, False), ("6 layers", 1): table4_name(6, False, False)}
M3ATT = dict(zip(claims.M3ATT_ARMS, M3ATT_ARMS))  # the claims' arm name -> request name


def _sharing(arms, floor, dataset, samples, seed):
    pairs = {name: (arms[(name, 0)], arms[(name, 1)]) for name in ("4 layers, decoder", "6 layers")}
    return [claims.weight_sharing(pairs, floor, samples=samples, seed=seed)]


CLAIMS = (
    InterimClaim("Table 3(b): the fusion variants", TABLE3, lambda a, f, d, n, s: [
        claims.fusion_ranking(a, f, samples=n, seed=s), claims.dagger_equivalence(a, f, samples=n, seed=s)],
        (("CME", "VME"), ("CME", "IME"), ("VME", "IME"), ("CME†", "VME"), ("CME†", "IME"), ("CME†", "CME"))),
    InterimClaim("Table 4: the decoder's gain", DECODER, lambda a, f, d, n, s: [
        claims.decoder_gain(a, f, samples=n, seed=s),
        claims.decoder_precision(a[(4, True)], a[(4, False)], f, samples=n, seed=s)],
        (((2, True), (2, False)), ((4, True), (4, False)))),
    InterimClaim("Table 4: fusion depth", DEPTH, lambda a, f, d, n, s: [claims.fusion_depth(a, f, samples=n, seed=s)],
                 ((4, 2), (6, 4))),
    InterimClaim("Table 4: weight sharing", SHARING, _sharing,
                 ((("4 layers, decoder", 0), ("4 layers, decoder", 1)), (("6 layers", 0), ("6 layers", 1)))),
    InterimClaim("Table 2: accuracy by expression length", {"main": "main", "baseline": "table2-conv"},
                 lambda a, f, d, n, s: [claims.length_trend(a["main"], f, d, baseline=a["baseline"], samples=n,
                                                            seed=s)], (("main", "baseline"),)),
    InterimClaim("M3Att, Tables I and II", M3ATT, lambda a, f, d, n, s: claims.m3att_claims(a, f, samples=n, seed=s),
                 tuple(("M3Att", k) for k in claims.M3ATT_ARMS[1:])),
)


def trained_arm(profile, data_root: str | Path, name: str, runs_dir: str | Path, label: str) -> Arm | None:
    """Model ``name`` as an arm of a claim from the seeds trained so far: those in the zoo
    (rebuilt in ``runs_dir`` from their shipped files) or finished in ``runs_dir``; None
    when there is none. Never trains."""
    runs, seeds = [], []
    for seed in model_seeds(profile, name):
        cfg = model_config(profile, data_root, name, seed=seed)
        if find(cfg) is None and not run_status(run_dir_for(cfg, runs_dir))["finished"]:
            continue
        runs.append(get_run(cfg, runs_dir=runs_dir, progress=False))
        seeds.append(seed)
    if not runs:
        return None
    return load_arm(label, runs, seeds, profile.eval_split, profile.grid_eval_expressions)


@dataclass(frozen=True)
class InterimReport:
    """What :func:`interim_readings` reads: one row per claim (or per group of claims
    waiting for an arm), and each comparison whose two arms have a seed read along the
    budget (:func:`restr.book.analysis.budget_trajectory`), and each trained arm along the
    budget by what the expression needs (:func:`restr.book.analysis.kinds_trajectory`)."""

    readings: pd.DataFrame
    trajectory: pd.DataFrame
    by_kind: pd.DataFrame


def interim_readings(profile_name: str = "converged", runs_dir: str | Path = "runs", samples: int = 1000,
                     seed: int = 0) -> InterimReport:
    """Every claim of :data:`CLAIMS`: its arms' seeds so far, and, once every arm has one,
    what its parts say, the gate that stops it (the book's rules) and its numbers; and its
    comparisons along the budget, each as soon as its two arms have a seed."""
    profile = book_profile(profile_name)
    data_root = Path(profile.data_root)
    ensure_data(profile, data_root)
    arms: dict[str, Arm | None] = {}  # by model: one model answers several requests (table4-4L is table3-cme)
    rows, comparisons = [], {}
    for claim in CLAIMS:
        model = {name: find_model(profile, name).name for name in claim.arms.values()}
        for label, name in claim.arms.items():
            if model[name] not in arms:
                arms[model[name]] = trained_arm(profile, data_root, model[name], runs_dir, str(label))
        mine = {label: _relabel(arms[model[name]], label if isinstance(label, str) else name)
                for label, name in claim.arms.items() if arms[model[name]] is not None}
        comparisons.update({f"{mine[a].name} - {mine[b].name}": (mine[a], mine[b])
                            for a, b in claim.compare if a in mine and b in mine})
        seeds = {name: (len(arms[model[name]].seeds) if arms[model[name]] else 0, len(model_seeds(profile, name)))
                 for name in dict.fromkeys(claim.arms.values())}
        trained = ", ".join(f"{name} {have}/{want}" for name, (have, want) in seeds.items())
        missing = [name for name, (have, _) in seeds.items() if not have]
        if missing:
            rows.append({"claims of": claim.title, "claim": "", "seeds trained": trained, "reading": "",
                         "the parts say": f"waiting for {', '.join(missing)}", "ours (95 % interval)": "", "parts": ""})
            continue
        floor = all_objects_scores(next(iter(mine.values())).scores[0], data_root, profile.dataset, profile.split_by)
        rows += [_reading(claim.title, trained, result) for result in
                 claim.read(mine, floor, profile.dataset, samples, seed)]
    return InterimReport(pd.DataFrame(rows), budget_trajectory(comparisons), kinds_trajectory(arms))


def _reading(title: str, trained: str, result: ClaimResult) -> dict[str, str]:
    v = result.verdict
    parts = "; ".join(f"{p.what} {p.ours.fmt(2, signed=True)}: {p.label}" if p.ours is not None else
                      f"{p.what}: {p.label}" for p in v.parts)
    return {"claims of": title, "claim": v.statement, "seeds trained": trained, "the parts say": v.measured,
            "reading": v.text, "ours (95 % interval)": v.ours, "parts": parts}


def _relabel(arm: Arm, label: str) -> Arm:
    """The same arm under the name the claim gives it (one model answers several claims)."""
    return replace(arm, name=label)


def format_readings(report: InterimReport) -> str:
    """The report as the command prints it: one block per claim, then the comparisons along the budget."""
    lines = ["Interim readings of the campaign so far: the book's claim functions and rules on the runs trained, "
             "not verdicts (the protocol judges each claim on 3 seeds of every arm).", ""]
    for _, r in report.readings.iterrows():
        lines.append(f"{r['claims of']}" + (f": {r['claim']}" if r["claim"] else ""))
        lines.append(f"  seeds trained: {r['seeds trained']}")
        if r["claim"]:
            lines.append(f"  the parts say: {r['the parts say']}; reading: {r['reading']}")
            lines.append(f"  ours: {r['ours (95 % interval)']}")
            lines.append(f"  parts: {r['parts']}")
        else:
            lines.append(f"  {r['the parts say']}")
    if len(report.trajectory):
        lines += ["", "Each comparison along the budget (IoU points, from the training logs' validations on a fixed "
                      "slice of val, seed means, no interval): does its sign at the end hold earlier?",
                  report.trajectory.round(2).to_string(index=False)]
    if len(report.by_kind):
        lines += ["", "Each arm along the budget by what the expression needs (cIoU % on the logs' slice of val at "
                      "1/6 / 1/2 / the end, seed means): when it learns the place words (region, relation, ordinal)",
                  report.by_kind.to_string(index=False)]
    return "\n".join(lines)
