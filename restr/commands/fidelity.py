"""``python -m restr fidelity``: the command line of :mod:`restr.book.fidelity`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..book import fidelity
from ..book.fidelity import (MAIN_ITERATIONS, MEASURED, PAGE, README, TINY_SCALE_RELEASE, VARIANTS, load_measured,
                             measure, page_markdown, readme_block, readme_with_block, write_pages)
from ..utils.files import REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr fidelity", description=fidelity.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("page", help="write book/fidelity.md and the README's block from the table")
    sub.add_parser("check", help="exit 1 if book/fidelity.md or the README's block is out of date")
    m = sub.add_parser("measure", help="train the variants at tiny scale and store their effect")
    m.add_argument("--data", default="data/synthref", help="embedded data set root (python -m restr data synth)")
    m.add_argument("--runs", default="runs/fidelity", help="where the runs go")
    m.add_argument("--iterations", type=int, default=MAIN_ITERATIONS,
                   help=f"steps per run; other than {MAIN_ITERATIONS}, results are stored as <variant>@<steps>")
    m.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    m.add_argument("--val-expressions", type=int, default=1000)
    m.add_argument("--variants", nargs="+", default=[*VARIANTS, TINY_SCALE_RELEASE])
    args = parser.parse_args(argv)

    if args.what == "page":
        for path in write_pages():
            print(f"wrote {path.relative_to(REPO)}")
        return 0
    if args.what == "check":
        stale = []
        if not PAGE.is_file() or PAGE.read_text() != page_markdown():
            stale.append(str(PAGE.relative_to(REPO)))
        if readme_with_block(README.read_text(), readme_block()) != README.read_text():
            stale.append("README.md")
        if stale:
            print(f"out of date: {', '.join(stale)}; run python -m restr fidelity page", file=sys.stderr)
            return 1
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS and v != TINY_SCALE_RELEASE]
    if unknown:
        known = ", ".join([*VARIANTS, TINY_SCALE_RELEASE])
        parser.error(f"unknown variants: {', '.join(unknown)}; choose from {known}")
    result = measure(Path(args.runs), args.data, args.iterations, args.seeds, args.variants, args.val_expressions)
    old = load_measured()
    old.setdefault("runs", {}).update(result["runs"])
    old["label_stats"] = result["label_stats"]
    if args.iterations == MAIN_ITERATIONS:  # longer runs are stored as <variant>@<steps> beside the main set
        old["settings"] = result["settings"]
    old.setdefault("commands", []).append(
        "python -m restr fidelity measure --iterations {} --seeds {} --val-expressions {} --variants {}".format(
            args.iterations, " ".join(map(str, args.seeds)), args.val_expressions, " ".join(args.variants)))
    MEASURED.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    print(f"wrote {MEASURED.relative_to(REPO)}; now run python -m restr fidelity page")
    return 0
