"""The speed benchmark runs on CPU (figures printed, no MFU) and counts FLOPs by measurement."""
from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import torch

from restr import get_preset
from restr.config import ModelConfig
from restr.model import build_model
from restr.perf.bench import BenchResult, BenchSetup, TimedSetup, device_peak_tflops, top_ops
from restr.perf.cost import count_macs


def run_bench(cfg: ModelConfig, peak_tflops: float | None = None, flops_per_step: float | None = None,
              **setup: Any) -> BenchResult:
    """Time one setup (the fields of :class:`BenchSetup` as keywords), one round."""
    t = TimedSetup(cfg, BenchSetup(**setup), flops_per_step)
    t.time_round()
    return t.result(peak_tflops, None)


def test_inference_flops_match_the_profiler():
    cfg = get_preset("smoke").model
    r = run_bench(cfg, mode="infer", batch_size=2, amp="off", steps=2, warmup=1, device="cpu")
    macs = count_macs(build_model(cfg), cfg.image_hw, batch=2, as_drawn=False)["total"]  # what runs
    assert r.flops_per_step == pytest.approx(2 * macs)
    assert r.mfu is None and r.peak_mem_gb is None
    assert r.images_per_s > 0 and r.step_ms > 0


def test_training_step_counts_backward_too():
    cfg = get_preset("smoke").model
    infer = run_bench(cfg, mode="infer", batch_size=2, amp="off", steps=1, warmup=1, device="cpu")
    train = run_bench(cfg, mode="train", batch_size=2, amp="off", steps=1, warmup=1, device="cpu")
    # backward costs about twice the forward: a training step is ~3x (a bit less: no
    # gradient for the input images of the patch embedding)
    assert 2.5 < train.flops_per_step / infer.flops_per_step < 3.05


def test_peak_table(monkeypatch):
    assert device_peak_tflops(torch.device("cpu")) == ("CPU", None)
    for name, peak in [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H200", 989.4),
                       ("NVIDIA GeForce RTX 4090", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d, n=name: n)
        assert device_peak_tflops(torch.device("cuda", 0)) == (name, peak)


@pytest.mark.slow
def test_cli_prints_figures_and_the_baseline():
    out = subprocess.run(
        [sys.executable, "-m", "restr", "bench", "--preset", "smoke", "--batch", "2", "--steps", "2",
         "--warmup", "1", "--mode", "train"],
        capture_output=True, text=True, check=True,
    )
    assert "device: CPU" in out.stdout and "n/a (no MFU on CPU)" in out.stdout
    assert "train bf16" in out.stdout and "train fp32" in out.stdout and "speed-up over the baseline" in out.stdout


def test_bad_dtype_is_refused():
    from restr.config import ConfigError

    with pytest.raises(ConfigError, match="--amp 'fp8'"):
        run_bench(get_preset("smoke").model, amp="fp8", device="cpu")


def test_data_mode_times_the_trainers_items(tmp_path):
    from restr.data.synth import generate
    from restr.perf.bench import bench_data

    generate(tmp_path, seed=0, num_images=12, workers=1, progress=False)
    u8 = bench_data(str(tmp_path), "synthref", "unc", "train", (32, 32), batch_size=4, num_workers=0, batches=3)
    f32 = bench_data(str(tmp_path), "synthref", "unc", "train", (32, 32), batch_size=4, num_workers=0, batches=3,
                     uint8=False)
    assert u8["images"] == f32["images"] == 12 and u8["images_per_s"] > 0
    # image 3x32x32 + mask 32x32 + 20 word ids: uint8 items are a quarter of the float32 pixels
    assert u8["bytes_per_image"] == 3 * 32 * 32 + 32 * 32 + 20 * 8
    assert f32["bytes_per_image"] == 4 * (3 * 32 * 32 + 32 * 32) + 20 * 8
    assert 0.009 < u8["source_megapixels"] < 0.017  # synthref: 96-128 px sides
    assert u8["preloaded"] == "not preloaded"
    kept = bench_data(str(tmp_path), "synthref", "unc", "train", (32, 32), batch_size=4, num_workers=0, batches=3,
                      preload=True)
    assert kept["images"] == 12 and "images and" in kept["preloaded"] and "MB in" in kept["preloaded"]


def test_data_mode_prints_preloaded_beside_decoded(tmp_path):
    from restr.data.synth import generate

    generate(tmp_path, seed=0, num_images=12, workers=1, progress=False)
    out = subprocess.run([sys.executable, "-m", "restr", "bench", "--mode", "data", "--preset", "smoke", "--data",
                          str(tmp_path), "--workers", "0", "--batches", "2", "--batch-size", "4"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert "preloaded (" in lines[0] and lines[1].endswith("not preloaded)")
    assert re.match(r"preloaded / decoded each time: \d+\.\d\dx the expressions/s", lines[2]), out


def test_top_ops_profiles_the_step():
    cfg = get_preset("smoke").model
    setup = BenchSetup(mode="train", batch_size=4, amp="off", expressions_per_image=2, steps=2, warmup=1,
                       device="cpu")
    rows = top_ops(cfg, setup, count=40)
    assert 6 <= len(rows) <= 40
    shares = [r["share"] for r in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0
    # the matrix products are among the step's ops (which ones lead depends on the machine's load: a smoke
    # model's step is milliseconds, so the test does not rank them)
    ops = {r["op"] for r in rows}
    assert ops & {"aten::mm", "aten::addmm", "aten::bmm", "aten::linear"}, ops
    assert all(r["calls"] >= 1 and r["self_ms"] > 0 for r in rows)


def test_the_training_configs_words_and_the_former_ones_give_the_same_setup():
    """``--compare`` and the options take train.batch_size, expressions_per_image and amp;
    the former batch, per_image and dtype=fp32 are read as them."""
    from restr.commands.bench import _parser, _setup_from_args, parse_setup

    base = BenchSetup(device="cpu")
    new = parse_setup("batch_size=16,amp=off,expressions_per_image=2,threads=2", base)
    assert parse_setup("batch=16,dtype=fp32,per_image=2,threads=2", base) == new
    assert (new.batch_size, new.amp, new.expressions_per_image, new.precision) == (16, "off", 2, "fp32")
    cfg = get_preset("smoke")
    a = _parser().parse_args(["--batch-size", "8", "--expressions-per-image", "2", "--amp", "off"])
    b = _parser().parse_args(["--batch", "8", "--per-image", "2", "--dtype", "fp32"])
    cpu = torch.device("cpu")
    assert _setup_from_args(a, cfg, cpu) == _setup_from_args(b, cfg, cpu)
    assert _setup_from_args(a, cfg, cpu).amp == "off"


def test_matmul_peak_stops_at_its_budget_when_a_product_is_slow(monkeypatch):
    """A precision the CPU lacks (bf16 here: 19 s a product, 13 min for the 41 of a full
    measurement) is measured with single products while the budget lasts."""
    from restr.perf import bench

    clock = iter(range(0, 1000, 10))  # every reading of the clock 10 s after the last: each product "takes" 10 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    rate = bench.matmul_peak(torch.float32, threads=1, budget_s=30.0)
    assert rate == pytest.approx(2 * 4096 * 1024 * 1024 / 10)
    assert next(clock) == 60  # the first product and two single-product rounds: 6 readings, within 30 s
