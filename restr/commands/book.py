"""``python -m restr book``: the command line of :mod:`restr.book.runner`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..book import runner, site
from ..book.progress import PLAIN_INTERVAL_S, BatchProgress
from ..book.runner import (DEFAULT_BUILD, BookError, book_profile, build_site, check_book_assets, ensure_data,
                           check_book_overrides, execute_notebooks, notebook_paths, summary)
from ..config import DEFAULT_PROFILE, PROFILE_NAMES, ConfigError
from ..utils.files import REPO
from .options import parse_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr book", description=runner.__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILE_NAMES),
                        help=f"default: {DEFAULT_PROFILE}")
    parser.add_argument("--data", default=None, help="data root (default: the profile's)")
    parser.add_argument("--runs", default="runs", help="where trained runs are cached (default: runs/)")
    parser.add_argument("--retrain", action="store_true",
                        help="the full reproduction: train every model (none from data/zoo/) into <runs>/retrain")
    parser.add_argument("--build", default=DEFAULT_BUILD, help=f"build folder (default: {DEFAULT_BUILD}/; "
                        "the site goes to its html/ folder)")
    parser.add_argument("--only", nargs="*", help="run only these notebooks (e.g. 01 03)")
    parser.add_argument("--no-site", action="store_true", help="execute the notebooks but do not build the site")
    parser.add_argument("--serve", action="store_true", help="serve the built site on 127.0.0.1 (builds nothing)")
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (default: 8000)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="an override for every model the book trains, e.g. "
                        "--set model.vit_weights=vit.safetensors --set data.glove=glove.840B.300d.txt "
                        "for the paper profile (repeatable)")
    parser.add_argument("--progress-every", type=float, default=PLAIN_INTERVAL_S, metavar="SECONDS",
                        help="when the output is not a terminal, a progress line this often "
                        f"(default: {PLAIN_INTERVAL_S:.0f})")
    args = parser.parse_args(argv)

    if args.only:  # checked first: a selection that matches nothing must not run everything
        names = [p.name for p in notebook_paths()]
        unmatched = [o for o in args.only if not any(n.startswith(o) for n in names)]
        if unmatched:
            print(f"error: --only {' '.join(unmatched)} matches no notebook; the notebooks are: {', '.join(names)}",
                  file=sys.stderr)
            return 2
    os.chdir(REPO)
    if args.retrain:  # the notebooks' kernels inherit the environment
        os.environ["RESTR_NO_ZOO"] = "1"
        args.runs = str(Path(args.runs) / "retrain")
    build = Path(args.build)
    if args.serve:
        try:
            site.serve(build / "html", args.port, build_command="python -m restr book" + (
                "" if args.profile == DEFAULT_PROFILE else f" --profile {args.profile}") + (
                "" if build == Path(DEFAULT_BUILD) else f" --build {build}"))
        except (site.SiteError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        profile = book_profile(args.profile)
        data_root = Path(args.data or profile.data_root)
        overrides = check_book_overrides(parse_set(args.set), profile.preset)
        if profile.synth is None or data_root.is_dir():  # a synthetic set is generated below
            check_book_assets(profile, data_root, overrides)
    except ConfigError as exc:  # an unknown field, a bad value, a missing file: nothing has run
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = notebook_paths()
    if args.only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in args.only)]
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    html = None
    progress = BatchProgress(len(paths), runs_dir=args.runs, interval=args.progress_every)
    try:
        with progress:
            progress.message(f"book ({args.profile} profile): {len(paths)} notebook{'s' if len(paths) != 1 else ''}")
            ensure_data(profile, data_root)
            site.forget_last_run(build / "executed", args.profile)  # its folder is about to change
            records = execute_notebooks(args.profile, data_root, build / "executed" / args.profile,
                                        Path(args.runs), paths, progress=progress, overrides=overrides)
            site.record_last_run(build / "executed", args.profile, [r["notebook"] for r in records])
            if not args.no_site:
                progress.message("building the site ...")
                t = time.perf_counter()
                html = build_site(build / "executed" / args.profile, build)
                timings["site"] = time.perf_counter() - t
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    timings["total (data, notebooks, site)"] = time.perf_counter() - t0
    print(summary(records, timings, html, build))
    return 0
