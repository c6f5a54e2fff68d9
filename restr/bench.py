"""Speed benchmark on synthetic tensors: ``python -m restr bench``.

Times training steps (forward, loss, backward, AdamW step) or inference forwards of a
preset on the current device after warm-up, and prints images/s, step time, peak GPU
memory, achieved TFLOP/s and, on a GPU with a known peak, MFU. FLOPs per step are
measured once by running the same step under ``FlopCounterMode`` (the counter behind
``python -m restr cost``), backward included, not estimated by formula.

Each run also times the eager fp32 baseline with the same batch, and prints the ratio.

``--mode data`` times the DataLoader instead (letterbox pipeline over a refer-format
data set), in images per second.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .config import ConfigError, ModelConfig, TrainConfig
from .cli import add_model_overrides, config_from_args

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.5,
    "H200": 989.4,
    "A100": 312.0,
}


def device_peak_tflops(device: torch.device) -> tuple[str, float | None]:
    """Name of the device and its bf16 dense peak, when the table knows it."""
    if device.type != "cuda":
        return ("CPU", None)
    name = torch.cuda.get_device_name(device)
    upper = name.upper()
    if "H200" in upper:
        return (name, PEAK_BF16_TFLOPS["H200"])
    if "H100" in upper:
        if "PCIE" in upper:
            return (name, PEAK_BF16_TFLOPS["H100 PCIe"])
        if "NVL" in upper:
            return (name, PEAK_BF16_TFLOPS["H100 NVL"])
        return (name, PEAK_BF16_TFLOPS["H100 SXM"])
    if "A100" in upper:
        return (name, PEAK_BF16_TFLOPS["A100"])
    return (name, None)


@dataclass
class BenchResult:
    mode: str
    dtype: str
    compiled: bool
    batch: int
    steps: int
    step_ms: float
    images_per_s: float
    flops_per_step: float
    tflops: float
    mfu: float | None
    peak_mem_gb: float | None
    compile_s: float | None


class _Step:
    """One training or inference step on fixed synthetic tensors."""

    def __init__(self, cfg: ModelConfig, mode: str, batch: int, dtype: str, device: torch.device, compile: bool):
        from .losses import restr_loss
        from .model import build_model

        torch.manual_seed(0)
        self.mode, self.device = mode, device
        self.model = build_model(cfg).to(device)
        self.model.train(mode == "train")
        h, w = cfg.image_hw
        g = torch.Generator(device="cpu").manual_seed(0)
        self.images = torch.randn(batch, 3, h, w, generator=g).to(device)
        self.words = torch.randint(2, cfg.vocab_size, (batch, cfg.max_words), generator=g).to(device)
        self.masks = (torch.rand(batch, h, w, generator=g) > 0.7).float().to(device)
        self.loss_fn = restr_loss
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        )
        self.train_step = None
        if mode == "train":
            # the trainer's own step (restr.train.TrainStep): fused AdamW with the paper's two
            # groups and schedule, no host sync; the model is compiled inside it when asked
            from .optim import build_optimizer, build_scheduler
            from .distributed import Dist
            from .step import TrainStep

            t = TrainConfig()
            opt = build_optimizer(self.model, t)
            self.train_step = TrainStep(
                self.model, opt, build_scheduler(opt, t), torch.amp.GradScaler(device.type, enabled=False), t,
                torch.bfloat16 if dtype == "bf16" else None, Dist(device=device), compile=compile,
            )
            self.forward = self.train_step.fwd
        else:
            self.forward = torch.compile(self.model) if compile else self.model

    def __call__(self) -> None:
        if self.train_step is not None:
            self.train_step([(self.images, self.words, self.masks)])
        else:
            with torch.inference_mode(), self.autocast:
                self.forward(self.images, self.words)

    def count_flops(self) -> float:
        """FLOPs of one step, measured on the eager model under FlopCounterMode."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        forward, self.forward = self.forward, self.model
        try:
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                if self.mode == "train":
                    out = self.model(self.images, self.words)
                    loss, _ = self.loss_fn(out.mask_logits, out.patch_logits, self.masks)
                    loss.backward()
                    self.model.zero_grad(set_to_none=True)
                else:
                    with torch.no_grad():
                        self.model(self.images, self.words)
        finally:
            self.forward = forward
        return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(
    cfg: ModelConfig,
    mode: str = "train",
    batch: int = 8,
    dtype: str = "bf16",
    compile: bool = False,
    steps: int = 20,
    warmup: int = 5,
    device: str | None = None,
    peak_tflops: float | None = None,
    flops_per_step: float | None = None,
) -> BenchResult:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype not in ("bf16", "fp32"):
        raise ConfigError(f"--dtype {dtype!r}: choose bf16 or fp32")
    if mode not in ("train", "infer"):
        raise ConfigError(f"--mode {mode!r}: choose train, infer or data")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # an honest fp32 baseline
        torch.cuda.reset_peak_memory_stats(dev)
    step = _Step(cfg, mode, batch, dtype, dev, compile)
    if flops_per_step is None:
        flops_per_step = step.count_flops()

    compile_s = None
    t0 = time.perf_counter()
    step()  # first step: compilation happens here when asked
    _sync(dev)
    if compile:
        compile_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    _sync(dev)

    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize(dev)
        elapsed = start.elapsed_time(end) / 1000.0
        peak_mem = torch.cuda.max_memory_allocated(dev) / 1e9
    else:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - t0
        peak_mem = None
    if step.train_step is not None:
        from .step import Diverged

        try:
            step.train_step.check()
        except Diverged as exc:
            raise RuntimeError(f"the benchmark's training step gave a non-finite loss ({exc.value}) at step "
                               f"{exc.step}: its timings would not be of real work") from None
    step_s = elapsed / steps
    tflops = flops_per_step / step_s / 1e12
    _, table_peak = device_peak_tflops(dev)
    peak = peak_tflops or table_peak
    mfu = tflops / peak if (peak and dev.type == "cuda") else None
    return BenchResult(
        mode=mode, dtype=dtype, compiled=compile, batch=batch, steps=steps, step_ms=step_s * 1000,
        images_per_s=batch / step_s, flops_per_step=flops_per_step, tflops=tflops, mfu=mfu,
        peak_mem_gb=peak_mem, compile_s=compile_s,
    )


def bench_data(root: str, dataset: str, split_by: str, split: str, image_size, batch: int,
               workers: int, batches: int, uint8: bool = True) -> dict[str, Any]:
    """Images per second delivered by the DataLoader over the letterbox pipeline.

    ``uint8=True`` times the trainer's pipeline (letterboxed uint8 items, normalised
    later on the device); ``False`` the float32 items that evaluation uses.
    """
    from torch.utils.data import DataLoader

    from .data.refer import ReferDataset, collate

    ds = ReferDataset(root, dataset, split_by, split, image_size=image_size, augment=(split == "train"),
                      uint8=uint8)
    if len(ds) < batch * (batches + 1):
        batches = max(1, len(ds) // batch - 1)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    first = next(it)  # start the workers
    per_image = sum(first[k][0].numel() * first[k].element_size() for k in ("image", "mask", "words"))
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += b["image"].shape[0]
        if i + 1 >= batches:
            break
    elapsed = time.perf_counter() - t0
    sizes = [ds.data.images[i] for i in ds.image_ids()[:200]]
    mean_pixels = sum(int(im["height"]) * int(im["width"]) for im in sizes) / max(len(sizes), 1)
    return {"mode": "data", "split": split, "batch": batch, "workers": workers, "images": n,
            "format": "uint8" if uint8 else "float32", "bytes_per_image": per_image,
            "source_megapixels": mean_pixels / 1e6, "seconds": elapsed, "images_per_s": n / elapsed}


def _fmt(r: BenchResult) -> str:
    mem = f"{r.peak_mem_gb:.2f} GB" if r.peak_mem_gb is not None else "n/a (CPU)"
    mfu = f"{100 * r.mfu:.1f} %" if r.mfu is not None else "n/a"
    comp = f", compile {r.compile_s:.1f} s" if r.compile_s is not None else ""
    return (f"{r.mode:<5} {r.dtype:<4} {'compiled' if r.compiled else 'eager':<8} batch {r.batch:<3} "
            f"step {r.step_ms:9.2f} ms  {r.images_per_s:9.2f} img/s  {r.tflops:9.4f} TFLOP/s  "
            f"MFU {mfu:>7}  peak mem {mem}{comp}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr bench", description=__doc__.split("\n\n")[0])
    add_model_overrides(parser)
    parser.add_argument("--mode", default="train", choices=["train", "infer", "data"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (compile time reported)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 dense peak")
    parser.add_argument("--no-baseline", action="store_true", help="skip the eager fp32 baseline")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--data", default="data/synthref", help="--mode data: data root")
    parser.add_argument("--dataset", default="synthref")
    parser.add_argument("--split-by", default="unc")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--format", default="uint8", choices=["uint8", "float32"],
                        help="--mode data: the trainer's uint8 items (default) or evaluation's float32 ones")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args).model
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.mode == "data":
        res = bench_data(args.data, args.dataset, args.split_by, args.split, cfg.image_hw, args.batch,
                         args.workers, args.batches, uint8=args.format == "uint8")
        h, w = cfg.image_hw
        print(json.dumps(res, indent=2) if args.json else
              f"DataLoader: {res['images_per_s']:.1f} images/s ({res['images']} images, batch {res['batch']}, "
              f"{res['workers']} workers, split {res['split']}, {res['source_megapixels']:.2f} MP sources "
              f"letterboxed to {h}x{w}, {res['format']} items of {res['bytes_per_image'] / 1e6:.2f} MB)")
        return 0

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name, peak = device_peak_tflops(dev)
    peak = args.peak_tflops or peak
    h, w = cfg.image_hw
    header = (f"device: {name}; preset {args.preset}, {h}x{w}, {cfg.fusion}, batch {args.batch}; "
              f"peak bf16 dense: {f'{peak:.1f} TFLOP/s' if peak and dev.type == 'cuda' else 'n/a (no MFU on CPU)'}")
    results = []
    main_res = run_bench(cfg, args.mode, args.batch, args.dtype, args.compile, args.steps, args.warmup,
                         str(dev), args.peak_tflops)
    results.append(main_res)
    if not args.no_baseline and (args.dtype != "fp32" or args.compile):
        results.append(run_bench(cfg, args.mode, args.batch, "fp32", False, args.steps, args.warmup, str(dev),
                                 args.peak_tflops, flops_per_step=main_res.flops_per_step))
    ratio = results[0].images_per_s / results[1].images_per_s if len(results) > 1 else None
    if args.json:
        print(json.dumps({"device": name, "peak_tflops": peak if dev.type == "cuda" else None,
                          "results": [asdict(r) for r in results], "speedup_vs_eager_fp32": ratio}, indent=2))
    else:
        print(header)
        print(f"FLOPs per step (measured under FlopCounterMode): {main_res.flops_per_step / 1e9:.3f} GFLOP")
        for r in results:
            print(_fmt(r))
        if ratio is not None:
            print(f"speed-up over eager fp32: {ratio:.2f}x")
    return 0
