"""``python -m restr runs park|unpark|parked``: the command line of :mod:`restr.runs.park`."""
from __future__ import annotations

import argparse
import sys

from ..runs import park
from ..runs.folder import RunError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr runs", description=park.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("park", help="copy unfinished runs' resumable state into data/parked/ (commit it then)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="run folders, e.g. runs/tiny-ae257c9e34b3-ef385256")
    p.add_argument("--to", default=None, help="default: data/parked/")
    u = sub.add_parser("unpark", help="copy the parked runs back into the runs folder where it is behind them")
    u.add_argument("--runs", default="runs")
    u.add_argument("--from", dest="source", default=None, help="default: data/parked/")
    ls = sub.add_parser("parked", help="list the parked runs and how far each is")
    ls.add_argument("--runs", default="runs")
    args = parser.parse_args(argv)
    try:
        if args.what == "park":
            for run in args.run_dirs:
                target = park.park(run, args.to)
                state = park.progress(target)
                print(f"parked {run} at step {state['step']:,} of {state['iterations']:,} in {target}")
            print("commit it (git add data/parked && git commit) before the working block ends")
        elif args.what == "unpark":
            lines = park.unpark(args.runs, args.source)
            print("\n".join(lines) if lines else f"nothing is parked in {args.source or park.PARK_DIR}")
        else:
            rows = park.parked(runs_dir=args.runs)
            for r in rows:
                print(f"{r['run']}: step {r['step']:,} of {r['iterations']:,} ({r['MB']:.0f} MB); in {args.runs}: "
                      f"{r['in runs']}")
            if not rows:
                print(f"nothing is parked in {park.PARK_DIR}")
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
