"""``python -m restr recipe``: the command line of :mod:`restr.book.recipe`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..book import recipe
from ..book.recipe import SWEEP_DATA, SWEEPS, _check_sweep_args, format_sweep, merge_rows, run_sweep
from ..config import ConfigError
from ..engine.resume import TrainingStopped
from ..engine.trainer import stop_requests
from ..utils.files import REPO, atomic_write_text


def budget_command(args) -> int:
    from ..book import budget

    if args.cap is not None and args.fix:
        print("error: --fix writes the doubling test's answer, --cap a rung the machine can afford: give one",
              file=sys.stderr)
        return 2
    if args.reason and args.cap is None:
        print("error: --reason goes with --cap (a moved budget's reason is --replace's)", file=sys.stderr)
        return 2
    try:
        if args.cap is not None:
            fixed = budget.cap_budget(args.cap, args.reason or "", replace=args.replace)
            print(f"the protocol's budget: {budget.describe(fixed)}, written to {budget.BUDGET_FILE}; list the "
                  f"change on book/protocol.md")
            return 0
        if args.fix:
            fixed = budget.fix_budget(replace=args.replace)
            print(f"the protocol's budget: {fixed['steps']:,} steps of {fixed['expressions_per_step']} expressions, "
                  f"written to {budget.BUDGET_FILE}")
            return 0
        table = budget.doubling_test()
        steps, fixed = budget.passing_steps(table), budget.read_budget()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"the doubling test on the main arm ('{budget.MAIN_ROW}' of the converged sweep):")
    print(budget.format_test(table))
    answer = "none yet" if steps is None else f"{steps:,} steps"
    fixed_at = "not yet (--fix writes it)" if fixed is None else budget.describe(fixed)
    print(f"answer: {answer}; the protocol's budget fixed: {fixed_at}")
    if len(table):
        runs = budget.campaign_runs()
        print(budget.format_cost(budget.campaign_cost(table, runs), runs))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr recipe", description=recipe.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sweep", help="train each row of the sweep (cached) and write the table")
    s.add_argument("--sweep", choices=list(SWEEPS), default="recipe",
                   help="recipe: the tiny recipe's sweep (version 1 data); converged: the converged recipe's "
                        "(version 2 data, the classification start)")
    s.add_argument("--data", help="data root (default: data/synthref, data/synthref-v2 for --sweep converged)")
    s.add_argument("--runs", default="runs")
    s.add_argument("--expressions", type=int, default=96_000, help="training expressions per row")
    s.add_argument("--val-every", type=int, default=8, help="validations per row (default: 8)")
    s.add_argument("--only", nargs="*", help="rows to run (names as in restr.book.recipe.SWEEPS)")
    s.add_argument("--out", help="default: data/zoo/sweep.json (recipe), data/zoo/sweep-converged-<N>.json; "
                                 "rows already in the file (same sweep and budget) and not run again are kept")
    b = sub.add_parser("budget", help="the doubling test on the main arm's converged-sweep runs; --fix writes the "
                                      "protocol's budget (data/zoo/protocol-budget.json) that the converged profile "
                                      "trains every arm for")
    b.add_argument("--fix", action="store_true", help="write the doubling test's answer as the protocol's budget")
    b.add_argument("--replace", metavar="REASON", help="with --fix or --cap: move a budget fixed before (a protocol "
                                                       "change)")
    b.add_argument("--cap", type=int, metavar="STEPS", help="fix the budget at this rung of the ladder, which the "
                   "machine can afford, while the doubling test has no answer up to it (a protocol change; needs "
                   "--reason, and the main arm's run at STEPS in the converged sweep)")
    b.add_argument("--reason", help="with --cap: why (written to the budget file; list it on book/protocol.md)")
    args = parser.parse_args(argv)
    if args.what == "budget":
        return budget_command(args)
    data = args.data or SWEEP_DATA[args.sweep][0]
    out = args.out or str(REPO / "data" / "zoo" / ("sweep.json" if args.sweep == "recipe"
                                                   else f"sweep-{args.sweep}-{args.expressions}.json"))
    try:
        _check_sweep_args(args, data)
        with stop_requests():  # kill PID: the row under way stops at a checkpoint
            rows = run_sweep(data, args.expressions, args.runs, args.only, args.sweep, args.val_every)
    except TrainingStopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)  # it says that the same command resumes it
        return exc.exit_code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    old = json.loads(Path(out).read_text()) if Path(out).is_file() else None
    rows = merge_rows(old, rows, args.sweep, args.expressions)
    atomic_write_text(out, json.dumps({"sweep": args.sweep, "expressions": args.expressions, "rows": rows},
                                      indent=1) + "\n")
    print(format_sweep(rows))
    print(f"written to {out}")
    return 0
