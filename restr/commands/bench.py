"""``python -m restr bench``: the command line of :mod:`restr.perf.bench`."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields, replace
from typing import Any

import torch

from ..config import ConfigError
from ..perf import bench
from ..perf.bench import BenchResult, BenchSetup, bench_data, device_peak_tflops, run_benches, top_ops
from .options import add_model_overrides, config_from_args


def _fmt(r: BenchResult) -> str:
    mem = f"{r.peak_mem_gb:.2f} GB" if r.peak_mem_gb is not None else "n/a (CPU)"
    mfu = f"{100 * r.mfu:.1f} %" if r.mfu is not None else "n/a"
    comp = f", compile {r.compile_s:.1f} s" if r.compile_s is not None else ""
    peak = f"  {100 * r.peak_fraction:5.1f} % of the CPU's {r.precision} matmul peak" if r.peak_fraction else ""
    return (f"{r.mode:<5} {r.precision:<4} {'compiled' if r.compiled else 'eager':<8} batch {r.batch_size:<3} "
            f"x{r.expressions_per_image}/img {r.threads} thr  step {r.step_ms:9.2f} ms  {r.images_per_s:9.2f} img/s  "
            f"{r.tflops * 1000:8.2f} GFLOP/s  MFU {mfu:>7}  peak mem {mem}{comp}{peak}")


# the --compare keys and --amp values of before the training config's words (still accepted)
FORMER_KEYS = {"batch": "batch_size", "per_image": "expressions_per_image", "dtype": "amp"}
FORMER_AMP = {"fp32": "off"}


def parse_setup(spec: str, base: BenchSetup) -> BenchSetup:
    """``"batch_size=16,amp=off,expressions_per_image=1,threads=2"`` -> ``base`` with those
    fields (the former keys ``batch``, ``per_image``, ``dtype=fp32`` are read as these)."""
    types = {f.name: f.type for f in fields(BenchSetup)}
    changes: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        key = FORMER_KEYS.get(key, key)
        if key not in types or not value:
            raise ConfigError(f"--compare {spec!r}: write key=value pairs with keys from "
                              f"{', '.join(sorted(types))}")
        if key == "amp":
            changes[key] = FORMER_AMP.get(value, value)
        elif key in ("mode", "device"):
            changes[key] = value
        elif key == "compile":
            changes[key] = value.lower() in ("1", "true", "yes")
        else:
            changes[key] = int(value)
    return replace(base, **changes).check()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m restr bench", description=bench.__doc__.split("\n\n")[0])
    add_model_overrides(parser)
    parser.add_argument("--mode", default="train", choices=["train", "infer", "data"])
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int,
                        help="expressions per step (default: the preset's train.batch_size; --batch: the former name)")
    parser.add_argument("--expressions-per-image", "--per-image", dest="expressions_per_image", type=int,
                        help="expressions per image (default: the preset's train.expressions_per_image; --per-image: "
                             "the former name)")
    parser.add_argument("--amp", "--dtype", dest="amp", choices=["bf16", "off", "fp32"],
                        help="bf16 autocast, or off: fp32 (default: bf16; --dtype and fp32: the former names)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, or OMP_NUM_THREADS)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time reported)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--compare", default="amp=off,compile=false",
                        help="the baseline: key=value changes to the timed setup (default: eager fp32)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 dense peak")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--top-ops", type=int, default=0, metavar="N",
                        help="also profile each setup (torch.profiler) and print its N ops with the most self time")
    parser.add_argument("--data", default="data/synthref", help="--mode data: data root")
    parser.add_argument("--dataset", default="synthref")
    parser.add_argument("--split-by", default="unc")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", dest="num_workers", type=int, default=4, help="--mode data: loader workers")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--format", default="uint8", choices=["uint8", "float32"],
                        help="--mode data: the trainer's uint8 items (default) or evaluation's float32 ones")
    return parser


def _setup_from_args(args: argparse.Namespace, cfg, dev: torch.device) -> BenchSetup:
    t = cfg.train
    return BenchSetup(mode=args.mode, batch_size=args.batch_size or t.batch_size,
                      amp=FORMER_AMP.get(args.amp, args.amp or "bf16"), compile=args.compile,
                      expressions_per_image=args.expressions_per_image or t.expressions_per_image,
                      threads=args.threads, steps=args.steps, warmup=args.warmup, device=str(dev)).check()


def _print_data(args: argparse.Namespace, cfg) -> None:
    """The loader's speed; for the training split, with the split preloaded (as the
    trainer does) and, unless --no-baseline, without, side by side in one run."""
    preloads = [True] if args.split == "train" else [False]
    if args.split == "train" and not args.no_baseline:
        preloads.append(False)
    results = [bench_data(args.data, args.dataset, args.split_by, args.split, cfg.model.image_hw,
                          batch_size=args.batch_size or cfg.train.batch_size, num_workers=args.num_workers,
                          batches=args.batches, uint8=args.format == "uint8",
                          expressions_per_image=args.expressions_per_image or 1, preload=preload)
               for preload in preloads]
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    h, w = cfg.model.image_hw
    for res in results:
        print(f"DataLoader: {res['images_per_s']:.1f} expressions/s ({res['images']} expressions, "
              f"{res['expressions_per_image']} per image, batch {res['batch_size']}, "
              f"{res['num_workers']} workers, split {res['split']}, {res['source_megapixels']:.2f} MP sources "
              f"letterboxed to {h}x{w}, {res['format']} items of {res['bytes_per_image'] / 1e6:.2f} MB; "
              f"{res['preloaded']})")
    if len(results) == 2:
        print(f"preloaded / decoded each time: {results[0]['images_per_s'] / results[1]['images_per_s']:.2f}x "
              f"the expressions/s (preloading took {results[0]['preload_seconds']:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        cfg = config_from_args(args)
        if args.mode == "data":
            _print_data(args, cfg)
            return 0
        setups = [_setup_from_args(args, cfg, dev)]
        if not args.no_baseline:
            setups.append(parse_setup(args.compare, setups[0]))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results, peaks = run_benches(cfg.model, setups, args.repeats, args.peak_tflops)
    name, peak = device_peak_tflops(dev)
    peak = args.peak_tflops or peak
    ratio = results[0].images_per_s / results[1].images_per_s if len(results) > 1 else None
    if args.json:
        print(json.dumps({"device": name, "peak_tflops": peak if dev.type == "cuda" else None,
                          "cpu_matmul_peaks_gflops": {f"{d} {n} thr": v / 1e9 for (d, n), v in (peaks or {}).items()},
                          "results": [asdict(r) for r in results], "speedup": ratio}, indent=2))
        return 0
    h, w = cfg.model.image_hw
    print(f"device: {name}; preset {args.preset}, {h}x{w}, {cfg.model.fusion}; "
          f"peak bf16 dense: {f'{peak:.1f} TFLOP/s' if peak and dev.type == 'cuda' else 'n/a (no MFU on CPU)'}")
    if peaks:
        print("CPU matmul peak, measured now (4096x1024x1024): " +
              ", ".join(f"{d} {n} thr {v / 1e9:.1f} GFLOP/s" for (d, n), v in peaks.items()))
    print(f"FLOPs per step (measured under FlopCounterMode): {results[0].flops_per_step / 1e9:.3f} GFLOP; "
          f"medians of {args.repeats} alternating rounds of {args.steps} steps")
    for r in results:
        print(_fmt(r))
    if ratio is not None:
        print(f"speed-up over the baseline ({args.compare}): {ratio:.2f}x")
    for setup in setups if args.top_ops else []:
        print(f"\ntop ops by self time, {setup.mode} {setup.precision} batch {setup.batch_size} "
              f"x{setup.expressions_per_image}/img "
              f"{setup.threads or torch.get_num_threads()} thr ({setup.steps} profiled steps):")
        for row in top_ops(cfg.model, setup, args.top_ops):
            print(f"  {row['op']:<40} {row['calls']:>5} calls/step {row['self_ms']:9.2f} ms/step {row['share']:7.1%}")
    return 0
