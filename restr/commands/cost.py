"""``python -m restr cost``: the command line of :mod:`restr.perf.cost`."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError
from ..perf import cost
from ..perf.cost import format_table, measure
from .options import add_model_overrides, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr cost", description=cost.__doc__.split("\n\n")[0])
    add_model_overrides(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or meta (shape-only run: same counts, instant)")
    parser.add_argument("--json", action="store_true", help="print JSON with keys params and macs")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = measure(cfg.model, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0
