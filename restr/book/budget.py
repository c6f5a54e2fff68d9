"""The protocol's budget: the doubling test on the main arm, and the budget once fixed.

``python -m restr recipe budget [--fix] [--replace REASON]``

The protocol (``book/protocol.md``) trains every compared arm for one budget T, the main
arm's: the smallest budget on the ladder (2,250 x 2^k steps of 64 expressions) at which
the main arm passes the ``converged`` rule and the main arm trained for 2T scores under
one IoU point above it. The runs that decide it are the converged sweep's row
:data:`MAIN_ROW` at each budget (``data/zoo/sweep-converged-<N>.json``, read by
:func:`restr.book.analysis.converged_sweep_table`).

Once the test has an answer, ``--fix`` writes it to :data:`BUDGET_FILE` with its evidence,
and the ``converged`` book profile trains every arm at that many steps. The file is the
budget's one source: a later sweep run does not move it (``--replace`` with a reason
does, and the protocol page lists that change), so a campaign started at T finishes at T.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..utils.files import REPO, atomic_write_text

MAIN_ROW = "final start"  # the converged sweep's row that is the main arm under the final recipe
BUDGET_FILE = REPO / "data" / "zoo" / "protocol-budget.json"


def sweep_files(zoo: Path | None = None) -> list[Path]:
    return sorted((zoo or REPO / "data" / "zoo").glob("sweep-converged-*.json"))


def doubling_test(files: list[Path] | None = None):
    """The main arm's rows of the converged sweep, one per budget and arithmetic, with the
    ``converged`` rule and the doubling test (a pandas frame, smallest budget first)."""
    from .analysis import converged_sweep_table

    table = converged_sweep_table(sweep_files() if files is None else files)
    if table.empty:
        return table
    return table[table.row == MAIN_ROW].sort_values(["steps", "arithmetic"], ignore_index=True)


def passing_steps(table) -> int | None:
    """The smallest number of steps at which the main arm passes the doubling test."""
    passed = table[table["doubling test"] == "passes"] if len(table) else table
    return int(passed.steps.min()) if len(passed) else None


def read_budget(path: Path | None = None) -> dict[str, Any] | None:
    """The fixed budget (``{"steps", "expressions_per_step", "fixed", "evidence", ...}``) in
    ``path`` (default: :data:`BUDGET_FILE`), or None."""
    path = Path(path or BUDGET_FILE)
    if not path.is_file():
        return None
    try:
        budget = json.loads(path.read_text())
        int(budget["steps"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a protocol budget file ({exc}); restore it with git") from None
    return budget


def fix_budget(files: list[Path] | None = None, path: Path | None = None, replace: str | None = None
               ) -> dict[str, Any]:
    """Write the doubling test's answer to ``path`` (default: :data:`BUDGET_FILE`); refuse
    when there is none yet, and refuse to move a budget already fixed unless ``replace``
    gives the reason."""
    path = Path(path or BUDGET_FILE)
    table = doubling_test(files)
    steps = passing_steps(table)
    if steps is None:
        raise ConfigError("the doubling test has no answer yet: no budget of the main arm passes the converged rule "
                          "with its run at twice the steps under one point above it\n" + format_test(table))
    old = read_budget(path)
    if old is not None and int(old["steps"]) != steps and not replace:
        raise ConfigError(f"{path} fixes the budget at {int(old['steps']):,} steps (on {old.get('fixed')}); the "
                          f"sweep's runs now say {steps:,}. Moving it changes the protocol: give the reason with "
                          f"--replace, and list the change on book/protocol.md")
    evidence = [{k: (None if v != v else v) for k, v in row.items()}  # NaN -> null
                for row in table.to_dict(orient="records")]
    per_step = int(table[table.steps == steps]["budget (expressions)"].iloc[0]) // steps
    budget = {"steps": steps, "expressions_per_step": per_step, "row": MAIN_ROW,
              "fixed": time.strftime("%Y-%m-%d"), "rule": "smallest budget on the ladder passing the converged rule "
              "whose run at twice the steps scores under one IoU point above it", "evidence": evidence}
    if replace:
        budget["replaces"] = {"steps": int(old["steps"]) if old else None, "reason": replace}
    atomic_write_text(path, json.dumps(budget, indent=1) + "\n")
    return budget


LADDER_START = 2250  # the ladder's first rung, in steps: 2,250 x 2^k


def on_the_ladder(steps: int) -> bool:
    k = steps // LADDER_START
    return steps > 0 and steps % LADDER_START == 0 and k & (k - 1) == 0


def cap_budget(steps: int, reason: str, files: list[Path] | None = None, path: Path | None = None,
               replace: str | None = None) -> dict[str, Any]:
    """Fix the budget at a rung of the ladder the machine can afford when the doubling test
    has no answer at or below it (a protocol change: ``reason`` says why, the protocol
    page lists it). Every arm is trained for ``steps``; the ``converged`` rule still judges
    each run, so a claim whose runs are still learning reads *inconclusive (still learning)*.
    Refused off the ladder, without a run of the main arm at ``steps``, when the doubling
    test already answers (``--fix`` is the protocol's way then), and over a fixed budget
    unless ``replace`` gives the reason."""
    path = Path(path or BUDGET_FILE)
    if not reason or not reason.strip():
        raise ConfigError("a capped budget needs its reason (--reason): it is a change of the protocol")
    if not on_the_ladder(steps):
        raise ConfigError(f"{steps:,} steps is not on the ladder ({LADDER_START:,} x 2^k: 2,250, 4,500, 9,000, ...)")
    table = doubling_test(files)
    answer = passing_steps(table)
    if answer is not None and answer <= steps:
        raise ConfigError(f"the doubling test answers {answer:,} steps, within the cap: fix that with --fix")
    here = table[table.steps == steps] if len(table) else table
    if not len(here):
        raise ConfigError(f"the main arm has no run of {steps:,} steps in the converged sweep: train it first "
                          f"(python -m restr recipe sweep --sweep converged --only \"{MAIN_ROW}\" --expressions "
                          f"{64 * steps} --val-every 25)")
    old = read_budget(path)
    if old is not None and not replace:
        raise ConfigError(f"{path} fixes the budget at {int(old['steps']):,} steps (on {old.get('fixed')}); moving "
                          f"it changes the protocol: give the reason with --replace, and list the change on "
                          f"book/protocol.md")
    evidence = [{k: (None if v != v else v) for k, v in row.items()} for row in table.to_dict(orient="records")]
    per_step = int(here["budget (expressions)"].iloc[0]) // steps
    budget = {"steps": steps, "expressions_per_step": per_step, "row": MAIN_ROW, "fixed": time.strftime("%Y-%m-%d"),
              "rule": "a cap: the doubling test has no answer at or below it; every run is still judged by the "
                      "converged rule", "capped": True, "reason": reason.strip(),
              "doubling test answer": answer, "evidence": evidence}
    if replace:
        budget["replaces"] = {"steps": int(old["steps"]) if old else None, "reason": replace}
    atomic_write_text(path, json.dumps(budget, indent=1) + "\n")
    return budget


def describe(fixed: dict[str, Any]) -> str:
    """One line on a fixed budget: its steps, when, and whether the doubling test or a cap set it."""
    how = (f"a cap ({fixed['reason']})" if fixed.get("capped")
           else "the doubling test's answer")
    return (f"{int(fixed['steps']):,} steps of {fixed.get('expressions_per_step', 64)} expressions, fixed on "
            f"{fixed.get('fixed')} by {how}")


def campaign_runs(profile_name: str = "converged") -> int:
    """How many runs the protocol's campaign trains: every model of the profile, each seed."""
    from ..config import PROTOCOL_PROFILES
    from .models import book_models

    profile = dataclasses.replace(PROTOCOL_PROFILES[profile_name], iterations=1, variant_iterations=1)
    return sum(len(m.seeds) for m in book_models(profile))


def campaign_cost(table, runs: int, jobs: int = 2) -> list[dict[str, float]]:
    """What the campaign would take at each budget of the doubling test: ``runs`` runs, each
    costed at the main arm's measured training minutes at that budget (wall time beside
    other jobs, as the sweep ran), in core-hours and in hours of wall time ``jobs`` at a time."""
    out = []
    for _, r in table.iterrows():
        minutes = float(r["training minutes"])
        out.append({"steps": int(r.steps), "arithmetic": r.arithmetic, "minutes per run": minutes,
                    "core-hours": runs * minutes / 60, "wall hours": runs * minutes / 60 / jobs})
    return out


def format_cost(costs: list[dict[str, float]], runs: int, jobs: int = 2) -> str:
    lines = [f"the campaign at each budget ({runs} runs of the converged profile, each costed at the main arm's "
             f"minutes there, {jobs} at a time):"]
    lines += [f"  {c['steps']:7,d} {c['arithmetic']:<10} {c['minutes per run']:7.1f} min a run: "
              f"{c['core-hours']:6.0f} core-hours, about {c['wall hours']:.0f} hours of wall time" for c in costs]
    return "\n".join(lines)


def format_test(table) -> str:
    if not len(table):
        return "  (no run of the main arm in data/zoo/sweep-converged-*.json)"
    lines = [f"  {'steps':>7} {'arithmetic':<10} {'val cIoU %':>10} {'last-fifth rise':>16} {'gain at 2x':>11}  "
             "doubling test"]
    for _, r in table.iterrows():
        gain = r["gain at 2x steps (points)"]
        lines.append(f"  {r.steps:7,d} {r.arithmetic:<10} {r['val cIoU %']:10.1f} "
                     f"{r['last-fifth rise (points)']:+16.2f} {'' if gain != gain else f'{gain:+.2f}':>11}  "
                     f"{r['doubling test']}")
    return "\n".join(lines)
