"""``python -m restr models``: the command line of :mod:`restr.book.models`."""
from __future__ import annotations

import argparse
import sys

from ..book import models
from ..book.models import book_models, describe, runs_count, ships_weights, weights_megabytes
from ..book.runner import book_profile
from ..config import DEFAULT_PROFILE, PROFILE_NAMES, ConfigError


def main(argv: list[str] | None = None) -> int:
    """``python -m restr models [--profile converged]``: the book's models as a table."""
    parser = argparse.ArgumentParser(prog="python -m restr models", description=models.__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILE_NAMES),
                        help=f"default: {DEFAULT_PROFILE}")
    parser.add_argument("--vocab-size", type=int, default=58,
                        help="vocabulary size for the weights' size (default: 58, the embedded data's)")
    args = parser.parse_args(argv)
    try:
        prof = book_profile(args.profile)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = describe(prof)
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  {'steps':>7}  {'seeds':<6} overrides; answers")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['iterations']:>7}  {r['seeds']:<6} {r['overrides']}; {r['answers']}")
    size = weights_megabytes(prof, args.vocab_size)
    bare = sum(not ships_weights(prof, m.name, s) for m in book_models(prof) for s in m.seeds)
    print(f"{len(rows)} models, {runs_count(prof)} trained runs (one per model and seed), "
          f"about {size:.0f} MB of fp16 weights in the zoo"
          + (f" ({bare} runs ship their log and scores, not their weights)" if bare else ""))
    return 0
