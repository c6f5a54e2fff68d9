"""``python -m restr evaluate``: the command line of :mod:`restr.eval.evaluate`."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError
from ..data.errors import DataError
from ..eval import evaluate
from ..eval.evaluate import DEFAULT_BATCH, evaluate_run, format_result
from ..runs.folder import RunError
from ..utils.devices import device_from_arg
from ..utils.files import atomic_write_text, finite_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr evaluate", description=evaluate.__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m restr train`")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--checkpoint", default="last", help="last | best | a checkpoint path (default: last)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--output", help="also write the result JSON to this file")
    parser.add_argument("--csv", help="write per-expression results to this CSV file")
    parser.add_argument("--save-images", metavar="DIR", help="save each prediction (mask and overlay PNG) here")
    parser.add_argument("--swap-control", action="store_true",
                        help="also score with each expression swapped for another object's in the same image")
    parser.add_argument("--max-expressions", type=int, help="score only N expressions spread over the split")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--workers", type=int,
                        help="DataLoader workers (default: 0 on a CPU; on a GPU the run's data.num_workers, "
                             "at most CPU cores - 1)")
    parser.add_argument("--threads", type=int,
                        help="intra-op threads on a CPU (default: half the cores, which holds up when the machine "
                             "is shared; on an idle machine every core is faster)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--data", help="data root, if it moved since training")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    for option, value, low in (("--batch-size", args.batch_size, 1), ("--max-expressions", args.max_expressions, 1),
                               ("--workers", args.workers, 0), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            print(f"error: {option} {value}: must be >= {low}", file=sys.stderr)
            return 2
    try:
        device = str(device_from_arg(args.device))
        result = evaluate_run(args.run, args.split, swap_control=args.swap_control, csv_path=args.csv,
                              save_images=args.save_images, progress=not args.no_progress and not args.json,
                              checkpoint=args.checkpoint, device=device, batch_size=args.batch_size,
                              num_workers=args.workers, threads=args.threads, max_expressions=args.max_expressions,
                              data_root=args.data)
    except (RunError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(finite_json(result), indent=2, allow_nan=False)  # standard JSON: no NaN
    if args.output:
        atomic_write_text(args.output, text + "\n")
    print(text if args.json else format_result(result))
    return 0
