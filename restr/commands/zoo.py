"""``python -m restr zoo list|train|campaign|scores``: the command line of :mod:`restr.zoo`."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta

from ..book.zoo_train import Schedule, compute_scores, zoo_scores, zoo_train, zoo_train_jobs
from ..config import DEFAULT_PROFILE, ConfigError
from ..engine.resume import TrainingError, TrainingStopped
from ..engine.trainer import stop_requests
from ..zoo import manifest
from ..zoo.manifest import MANIFEST, ZooError, format_manifest, read_manifest, zoo_folder


UNTIL_WRAP_HOURS = 12  # --until HH:MM already past today means tomorrow's if that is at most this far ahead


def parse_until(text: str, now: float | None = None) -> float:
    """``--until``: "HH:MM" (local time; tomorrow's when today's has passed and tomorrow's is
    at most :data:`UNTIL_WRAP_HOURS` away: a block that ends after midnight) or "+MIN"
    (minutes from now), as epoch seconds."""
    now = time.time() if now is None else now
    try:
        if text.startswith("+"):
            return now + 60 * float(text[1:])
        hour, minute = (int(x) for x in text.split(":"))
        when = datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise ZooError(f"--until {text!r}: give a local time today as HH:MM (17:05) or minutes from now as +MIN "
                       f"(+150)") from None
    if when.timestamp() <= now:
        when += timedelta(days=1)
        if when.timestamp() - now > UNTIL_WRAP_HOURS * 3600:
            raise ZooError(f"--until {text}: that time has passed today (it is {datetime.fromtimestamp(now):%H:%M}); "
                           f"give minutes from now as +MIN")
    return when.timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr zoo", description=manifest.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("list", help="print the manifest as a table")
    c = sub.add_parser("campaign", help="every run the protocol's campaign trains, and where it is (in the zoo, "
                                        "parked part-way, under way here, to train), with each finished run's "
                                        "arithmetic and converged rule")
    c.add_argument("--profile", default="converged", help="the protocol profile (default: converged)")
    c.add_argument("--runs", default="runs", help="this machine's runs folder, for runs under way (default: runs/)")
    c.add_argument("--interim", action="store_true",
                   help="instead, read the claims the shipped scores answer from the runs trained so far, with the "
                        "book's rules: interim readings, not verdicts, then each comparison and each model along "
                        "the budget (restr.book.interim)")
    t = sub.add_parser("train", help="train the book's models that the zoo lacks, and add them")
    t.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"the book profile whose models to train (default: {DEFAULT_PROFILE})")
    t.add_argument("--only", nargs="*", help="model names (python -m restr models lists them)")
    t.add_argument("--seeds", nargs="*", type=int, help="only these seeds")
    t.add_argument("--retrain", action="store_true", help="train them again even if the zoo has them")
    t.add_argument("--runs", default="runs", help="runs folder (default: runs/)")
    t.add_argument("--jobs", type=int, default=1,
                   help="train this many models at a time, one compute thread each (default: 1, in this process)")
    t.add_argument("--commit", action="store_true",
                   help="commit each model to git (weights, log, manifest) as soon as it is in the zoo")
    t.add_argument("--until", metavar="HH:MM|+MIN",
                   help="start a model only if its expected time (the manifest's wall time of the same model's "
                        "other seeds, else of the profile's models) ends before this local time (tomorrow's if "
                        "today's has passed, up to 12 hours ahead), or this many minutes from now: the end of a "
                        "working block, which stops running processes")
    t.add_argument("--spill", action="store_true",
                   help="with --until: start jobs that will not finish before it too; 90 s before it, every "
                        "running job stops at a checkpoint of its current step (exit status 3), and the same "
                        "command resumes it in the next block")
    t.add_argument("--park", action="store_true",
                   help="park each job stopped at --until in data/parked/ (committed with --commit) and unpark "
                        "what is parked first: for a machine whose runs/ folder may not survive the block")
    sc = sub.add_parser("scores", help="ship with each zoo model the per-expression scores the last book run "
                                       "computed from its weights (data/zoo/scores/)")
    sc.add_argument("--runs", default="runs", help="runs folder the book used (default: runs/)")
    sc.add_argument("--compute", metavar="PROFILE",
                    help="instead, score from its weights every zoo model of PROFILE (converged) that lacks the "
                         "scores a model joining the zoo gets now, and ship them")
    args = parser.parse_args(argv)
    try:
        if args.what == "list":
            models = read_manifest()
            print(format_manifest(models) if models else f"the zoo is empty ({zoo_folder() / MANIFEST} not found)")
        elif args.what == "campaign":
            from ..book.campaign import campaign_status, format_status
            from ..book.interim import format_readings, interim_readings

            print(format_readings(interim_readings(args.profile, args.runs)) if args.interim else
                  format_status(campaign_status(args.profile, runs_dir=args.runs)))
        elif args.what == "scores":
            shipped = compute_scores(args.compute) if args.compute else zoo_scores(args.runs)
            print(f"shipped scores of {len(shipped)} model(s) in {zoo_folder() / 'scores'}: "
                  f"{sum(shipped.values())} files")
        elif args.jobs > 1 or args.commit or args.until:
            if args.spill and not args.until:
                raise ZooError("--spill stops jobs at --until: give --until HH:MM or +MIN too")
            deadline = parse_until(args.until) if args.until else None
            if deadline is not None:
                print(f"zoo: --until {args.until}: no job starts after, and with --spill running jobs stop at, "
                      f"{datetime.fromtimestamp(deadline):%a %H:%M}", file=sys.stderr, flush=True)
            schedule = Schedule(max(1, args.jobs), args.commit, deadline, args.spill, args.park)
            added, failed, stopped = zoo_train_jobs(args.profile, args.only, args.seeds, args.retrain, args.runs,
                                                    schedule)
            print(f"added {len(added)} model(s) to {zoo_folder()}: {', '.join(added) or 'none'}")
            if stopped:
                print(f"stopped at a checkpoint, to resume with the same command: {', '.join(stopped)}")
            if failed:
                print(f"error: {len(failed)} failed: {', '.join(failed)} (their logs: {args.runs}/zoo-logs/)",
                      file=sys.stderr)
                return 1
        else:
            # a job of zoo_train_jobs may be asked to stop while it starts up
            with stop_requests(enabled=args.what == "train"):
                added = zoo_train(args.profile, args.only, args.seeds, args.retrain, args.runs)
            print(f"added {len(added)} model(s) to {zoo_folder()}: {', '.join(added) or 'none'}")
    except TrainingStopped as exc:  # a job of zoo_train_jobs, asked to stop at --until
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ZooError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
