"""Speed benchmark on synthetic tensors: ``python -m restr bench``.

Times training steps (forward, loss, backward, AdamW step) or inference forwards of a
preset on the current device after warm-up, and prints images/s, step time, peak GPU
memory, achieved TFLOP/s and, on a GPU with a known peak, MFU. FLOPs per step are
measured once by running the same step under ``FlopCounterMode`` (the counter behind
``python -m restr cost``), backward included, not estimated by formula.

Each run also times a baseline, the eager fp32 step of the same batch unless
``--compare`` names another setup (e.g. the tiny preset's former default,
``--compare batch_size=16,amp=off,expressions_per_image=1,threads=2``), and prints the ratio. The two
are timed in alternation, ``--repeats`` times, and the medians are reported: on a
shared machine a ratio measured side by side means more than either figure.

On a CPU the run first measures the machine's own matrix-product peak (a 4096 x 1024
x 1024 product, fp32 and bf16, with each setup's thread count), and each row reports
its achieved FLOP/s as a fraction of that peak in the row's precision.

``--mode data`` times the DataLoader instead (letterbox pipeline over a refer-format
data set), in images per second; on the training split, with the split preloaded (as the
trainer does, :mod:`restr.data.preload`) beside decoding every file each time.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError, ModelConfig, TrainConfig
from ..data.groups import ExpressionGroups, collate_groups, expression_groups
from ..data.refer import ReferDataset, collate
from ..engine.distributed import Dist
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.step import Diverged, TrainStep
from ..model import build_model

BENCH_AMP = ("bf16", "off")  # the step computes in bf16 autocast, or in fp32
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
class BenchSetup:
    """One configuration to time, in the training config's words: ``batch_size``
    expressions a step, ``expressions_per_image`` of them sharing each image (the ViT runs
    once per image), ``amp`` "bf16" (autocast) or "off" (fp32); ``threads``: intra-op threads
    on a CPU (None: leave torch's setting)."""

    mode: str = "train"
    batch_size: int = 8
    amp: str = "bf16"
    compile: bool = False
    expressions_per_image: int = 1
    threads: int | None = None
    steps: int = 20
    warmup: int = 5
    device: str | None = None

    def check(self) -> "BenchSetup":
        if self.amp not in BENCH_AMP:
            raise ConfigError(f"--amp {self.amp!r}: choose bf16 or off (fp32)")
        if self.mode not in ("train", "infer"):
            raise ConfigError(f"--mode {self.mode!r}: choose train, infer or data")
        if self.expressions_per_image < 1 or self.batch_size % self.expressions_per_image:
            raise ConfigError(f"--batch-size {self.batch_size} must be a multiple of --expressions-per-image "
                              f"{self.expressions_per_image}")
        return self

    def label(self) -> str:
        threads = f", {self.threads} thr" if self.threads else ""
        return (f"{self.mode:<5} {self.precision:<4} {'compiled' if self.compile else 'eager':<8} batch "
                f"{self.batch_size:<3} x{self.expressions_per_image}/img{threads}")

    @property
    def precision(self) -> str:
        """What the step computes in: "bf16" or "fp32"."""
        return "fp32" if self.amp == "off" else self.amp


@dataclass
class BenchResult:
    mode: str
    amp: str
    compiled: bool
    batch_size: int
    expressions_per_image: int
    threads: int
    steps: int
    step_ms: float
    images_per_s: float
    flops_per_step: float
    tflops: float
    mfu: float | None
    peak_mem_gb: float | None
    compile_s: float | None
    peak_fraction: float | None = None  # CPU: achieved / measured matmul peak in this precision

    @property
    def precision(self) -> str:
        return "fp32" if self.amp == "off" else self.amp


class _Step:
    """One training or inference step on fixed synthetic tensors."""

    def __init__(self, cfg: ModelConfig, setup: BenchSetup, device: torch.device):
        torch.manual_seed(0)
        self.mode, self.device = setup.mode, device
        cfg = ModelConfig(**{**cfg.__dict__, "vit_weights": None})  # timing needs no pre-trained weights
        self.model = build_model(cfg).to(device)
        self.model.train(setup.mode == "train")
        h, w = cfg.image_hw
        g = torch.Generator(device="cpu").manual_seed(0)
        n_images = setup.batch_size // setup.expressions_per_image
        self.images = torch.randn(n_images, 3, h, w, generator=g).to(device)
        self.words = torch.randint(2, cfg.vocab_size, (setup.batch_size, cfg.max_words), generator=g).to(device)
        self.masks = (torch.rand(setup.batch_size, h, w, generator=g) > 0.7).float().to(device)
        self.index = (torch.arange(n_images).repeat_interleave(setup.expressions_per_image).to(device)
                      if setup.expressions_per_image > 1 else None)
        self.amp = torch.bfloat16 if setup.amp == "bf16" else None
        self.train_step = None
        if setup.mode == "train":
            # the trainer's own step (restr.engine.step.TrainStep): fused AdamW with the paper's two
            # groups and schedule, no host sync; the model is compiled inside it when asked
            t = TrainConfig()
            opt = build_optimizer(self.model, t)
            self.train_step = TrainStep(self.model, opt, build_scheduler(opt, t),
                                        torch.amp.GradScaler(device.type, enabled=False), t, self.amp,
                                        Dist(device=device), compile=setup.compile)
            self.forward = self.train_step.fwd
        else:
            self.forward = torch.compile(self.model) if setup.compile else self.model

    def __call__(self) -> None:
        if self.train_step is not None:
            self.train_step([(self.images, self.words, self.masks, self.index)])
        else:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp, enabled=bool(self.amp)):
                self.forward(self.images, self.words, self.index)

    def count_flops(self) -> float:
        """FLOPs of one step, measured on the eager model under FlopCounterMode."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            if self.mode == "train":
                out = self.model(self.images, self.words, self.index)
                loss, _ = self.train_step.loss(out, self.masks)  # the family's loss, as the step computes it
                loss.backward()
                self.model.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    self.model(self.images, self.words, self.index)
        return float(counter.get_total_flops())

    def check(self) -> None:
        """A training step that diverged timed no real work: refuse its figures."""
        if self.train_step is None:
            return

        try:
            self.train_step.check()
        except Diverged as exc:
            raise RuntimeError(f"the benchmark's training step gave a non-finite loss ({exc.value}) at step "
                               f"{exc.step}: its timings would not be of real work") from None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, threads: int | None = None, repeats: int = 5, budget_s: float = 20.0) -> float:
    """The CPU's measured matrix-product rate in FLOP/s: a 4096 x 1024 x 1024 product in
    ``dtype``, best of ``repeats`` rounds of 8, with ``threads`` intra-op threads.

    A CPU without native support for ``dtype`` (bf16 on most CPUs before AVX-512 BF16 /
    AMX) runs one such product in seconds, and the 41 products would take many minutes:
    when the first product says the rounds would not fit in ``budget_s``, each round is
    one product, and the rounds stop when the budget is spent (the first product counts
    as one)."""
    flop = 2 * 4096 * 1024 * 1024
    with _threads(threads):
        a, b = torch.randn(4096, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)
        t0 = time.perf_counter()
        a @ b
        first = time.perf_counter() - t0
        if first * 8 * repeats <= budget_s:
            per_round, rounds, best = 8, repeats, 0.0
        else:  # slow in this precision: single products while the budget lasts
            per_round, rounds, best = 1, int(max(0.0, budget_s - first) // first), flop / first
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(per_round):
                a @ b
            best = max(best, per_round * flop / (time.perf_counter() - t0))
    return best


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TimedSetup:
    """A prepared step and the seconds of its timed rounds (see :func:`run_benches`)."""

    def __init__(self, cfg: ModelConfig, setup: BenchSetup, flops_per_step: float | None):
        self.setup = setup.check()
        self.device = torch.device(setup.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False  # an honest fp32 baseline
            torch.cuda.reset_peak_memory_stats(self.device)
        with _threads(setup.threads):
            self.step = _Step(cfg, setup, self.device)
            self.flops = flops_per_step if flops_per_step is not None else self.step.count_flops()
            t0 = time.perf_counter()
            self.step()  # the first step: compilation happens here when asked
            _sync(self.device)
            self.compile_s = time.perf_counter() - t0 if setup.compile else None
            for _ in range(max(0, setup.warmup - 1)):
                self.step()
            _sync(self.device)
        self.seconds: list[float] = []

    def time_round(self) -> None:
        with _threads(self.setup.threads):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(self.setup.steps):
                    self.step()
                end.record()
                torch.cuda.synchronize(self.device)
                self.seconds.append(start.elapsed_time(end) / 1000.0)
            else:
                t0 = time.perf_counter()
                for _ in range(self.setup.steps):
                    self.step()
                self.seconds.append(time.perf_counter() - t0)
        self.step.check()

    def result(self, peak_tflops: float | None, cpu_peaks: dict | None) -> BenchResult:
        s = self.setup
        step_s = sorted(self.seconds)[len(self.seconds) // 2] / s.steps  # the median round
        tflops = self.flops / step_s / 1e12
        _, table_peak = device_peak_tflops(self.device)
        peak = peak_tflops or table_peak
        on_gpu = self.device.type == "cuda"
        threads = s.threads or torch.get_num_threads()
        fraction = None
        if cpu_peaks is not None:
            fraction = tflops * 1e12 / cpu_peaks[(s.precision, threads)]
        return BenchResult(
            mode=s.mode, amp=s.amp, compiled=s.compile, batch_size=s.batch_size,
            expressions_per_image=s.expressions_per_image, threads=threads, steps=s.steps, step_ms=step_s * 1000,
            images_per_s=s.batch_size / step_s, flops_per_step=self.flops,
            tflops=tflops, mfu=tflops / peak if (peak and on_gpu) else None,
            peak_mem_gb=torch.cuda.max_memory_allocated(self.device) / 1e9 if on_gpu else None,
            compile_s=self.compile_s, peak_fraction=fraction,
        )


def run_benches(cfg: ModelConfig, setups: list[BenchSetup], repeats: int = 3, peak_tflops: float | None = None,
                cpu_peaks: bool = True) -> tuple[list[BenchResult], dict | None]:
    """Time each setup in alternation, ``repeats`` rounds of ``steps`` steps each, and
    report each one's median round. On a CPU (``cpu_peaks``) the matrix-product peaks of
    each precision and thread count are measured first. Returns (results, peaks)."""
    timed = [TimedSetup(cfg, s, None) for s in setups]
    peaks = None
    if cpu_peaks and timed[0].device.type == "cpu":
        wanted = {(s.precision, s.threads or torch.get_num_threads()) for s in setups}
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
        peaks = {(d, n): matmul_peak(dtypes[d], n) for d, n in sorted(wanted)}
    for _ in range(max(1, repeats)):
        for t in timed:
            t.time_round()
    return [t.result(peak_tflops, peaks) for t in timed], peaks


def top_ops(cfg: ModelConfig, setup: BenchSetup, count: int = 8) -> list[dict[str, Any]]:
    """The ``count`` operators with the most self time over ``setup.steps`` profiled steps
    (after the warm-up), as rows: op, calls, self ms per step, share of all self time."""
    from torch.profiler import ProfilerActivity, profile

    timed = TimedSetup(cfg, setup, flops_per_step=0.0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if timed.device.type == "cuda" else [])
    with _threads(setup.threads), profile(activities=activities) as prof:
        for _ in range(setup.steps):
            timed.step()
        _sync(timed.device)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "calls": e.count // setup.steps, "self_ms": e.self_cpu_time_total / 1000 / setup.steps,
             "share": e.self_cpu_time_total / total} for e in events[:count]]


@dataclass
class DataBench:
    """How :func:`bench_data` loads, in the training config's words: ``batch_size``
    (expressions), ``num_workers``, batches to time, the item format, and
    ``expressions_per_image`` (groups, as the trainer loads them)."""

    batch_size: int = 16
    num_workers: int = 4
    batches: int = 50
    uint8: bool = True
    expressions_per_image: int = 1
    preload: bool = False  # decode the split once before the workers start (the trainer's default)


def bench_data(root: str, dataset: str, split_by: str, split: str, image_size, **options: Any) -> dict[str, Any]:
    """Expressions per second delivered by the DataLoader over the letterbox pipeline
    (``options``: the fields of :class:`DataBench`).

    ``uint8=True`` times the trainer's pipeline (letterboxed uint8 items, normalised
    later on the device); ``False`` the float32 items that evaluation uses. With
    ``expressions_per_image > 1`` the items are groups of expressions of one image (the trainer's
    ``train.expressions_per_image``; uint8 only).
    """
    from torch.utils.data import DataLoader


    o = DataBench(**options)
    ds = ReferDataset(root, dataset, split_by, split, image_size=image_size, augment=(split == "train"),
                      uint8=o.uint8 or o.expressions_per_image > 1)
    t_preload = time.perf_counter()
    preloaded = ds.preload() if o.preload else "not preloaded"
    t_preload = time.perf_counter() - t_preload
    per_image = o.expressions_per_image
    units = len(ds) // per_image
    per_batch = max(1, o.batch_size // per_image)
    batches = o.batches if units >= per_batch * (o.batches + 1) else max(1, units // per_batch - 1)
    if per_image > 1:
        data, sampler, fn = ExpressionGroups(ds), expression_groups(ds, per_image, 0, 0), collate_groups
    else:
        data, sampler, fn = ds, None, collate
    loader = DataLoader(data, batch_size=per_batch, shuffle=sampler is None, sampler=sampler, num_workers=o.num_workers,
                        collate_fn=fn, persistent_workers=o.num_workers > 0, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    first = next(it)  # start the workers
    per_item = sum(first[k][0].numel() * first[k].element_size() for k in ("image", "mask", "words"))
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += b["words"].shape[0]
        if i + 1 >= batches:
            break
    elapsed = time.perf_counter() - t0
    sizes = [ds.data.images[i] for i in ds.image_ids()[:200]]
    mean_pixels = sum(int(im["height"]) * int(im["width"]) for im in sizes) / max(len(sizes), 1)
    return {"mode": "data", "split": split, "batch_size": o.batch_size, "num_workers": o.num_workers,
            "images": n, "expressions_per_image": per_image, "format": "uint8" if o.uint8 else "float32",
            "bytes_per_image": per_item, "source_megapixels": mean_pixels / 1e6, "seconds": elapsed,
            "images_per_s": n / elapsed, "preloaded": preloaded, "preload_seconds": t_preload}
