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
    peak = f"  {100 * r.peak_fraction:5.1f} % of the CPU's {r.dtype} matmul peak" if r.peak_fraction else ""
    return (f"{r.mode:<5} {r.dtype:<4} {'compiled' if r.compiled else 'eager':<8} batch {r.batch:<3} "
            f"x{r.per_image}/img {r.threads} thr  step {r.step_ms:9.2f} ms  {r.images_per_s:9.2f} img/s  "
            f"{r.tflops * 1000:8.2f} GFLOP/s  MFU {mfu:>7}  peak mem {mem}{comp}{peak}")


def parse_setup(spec: str, base: BenchSetup) -> BenchSetup:
    """``"batch=16,dtype=fp32,per_image=1,threads=2"`` -> ``base`` with those fields."""
    types = {f.name: f.type for f in fields(BenchSetup)}
    changes: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in types or not value:
            raise ConfigError(f"--compare {spec!r}: write key=value pairs with keys from "
                              f"{', '.join(sorted(types))}")
        if key in ("mode", "dtype", "device"):
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
    parser.add_argument("--batch", type=int, help="expressions per step (default: the preset's train.batch_size)")
    parser.add_argument("--per-image", type=int,
                        help="expressions per image (default: the preset's train.expressions_per_image)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="autocast precision (default: bf16)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, or OMP_NUM_THREADS)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time reported)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--compare", default="dtype=fp32,compile=false",
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
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--format", default="uint8", choices=["uint8", "float32"],
                        help="--mode data: the trainer's uint8 items (default) or evaluation's float32 ones")
    return parser


def _setup_from_args(args: argparse.Namespace, cfg, dev: torch.device) -> BenchSetup:
    t = cfg.train
    return BenchSetup(mode=args.mode, batch=args.batch or t.batch_size, dtype=args.dtype or "bf16",
                      compile=args.compile, per_image=args.per_image or t.expressions_per_image,
                      threads=args.threads, steps=args.steps, warmup=args.warmup, device=str(dev)).check()


def _print_data(args: argparse.Namespace, cfg) -> None:
    res = bench_data(args.data, args.dataset, args.split_by, args.split, cfg.model.image_hw,
                     batch=args.batch or cfg.train.batch_size, workers=args.workers, batches=args.batches,
                     uint8=args.format == "uint8", per_image=args.per_image or 1)
    h, w = cfg.model.image_hw
    print(json.dumps(res, indent=2) if args.json else
          f"DataLoader: {res['images_per_s']:.1f} expressions/s ({res['images']} expressions, "
          f"{res['per_image']} per image, batch {res['batch']}, "
          f"{res['workers']} workers, split {res['split']}, {res['source_megapixels']:.2f} MP sources "
          f"letterboxed to {h}x{w}, {res['format']} items of {res['bytes_per_image'] / 1e6:.2f} MB)")


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
        print(f"\ntop ops by self time, {setup.mode} {setup.dtype} batch {setup.batch} x{setup.per_image}/img "
              f"{setup.threads or torch.get_num_threads()} thr ({setup.steps} profiled steps):")
        for row in top_ops(cfg.model, setup, args.top_ops):
            print(f"  {row['op']:<40} {row['calls']:>5} calls/step {row['self_ms']:9.2f} ms/step {row['share']:7.1%}")
    return 0
