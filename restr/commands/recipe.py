"""``python -m restr recipe``: the command line of :mod:`restr.book.recipe`."""
from __future__ import annotations

import argparse
import json
import sys

from ..book import recipe
from pathlib import Path

from ..book.recipe import SWEEP_DATA, SWEEPS, _check_sweep_args, format_sweep, merge_rows, run_sweep
from ..config import ConfigError
from ..utils.files import REPO, atomic_write_text


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
    args = parser.parse_args(argv)
    data = args.data or SWEEP_DATA[args.sweep][0]
    out = args.out or str(REPO / "data" / "zoo" / ("sweep.json" if args.sweep == "recipe"
                                                   else f"sweep-{args.sweep}-{args.expressions}.json"))
    try:
        _check_sweep_args(args, data)
        rows = run_sweep(data, args.expressions, args.runs, args.only, args.sweep, args.val_every)
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
