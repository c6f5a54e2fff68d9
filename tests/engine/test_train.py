"""Trainer: run directory, kill-and-resume equality, DDP (2 gloo processes) vs 1 process,
config mismatch on resume, NaN loss, corrupt checkpoints."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restr.config import ConfigError, get_preset
from restr.data.order import ResumableSampler, item_seed
from restr.data.preload import BUDGET_ENV
from restr.engine.trainer import KILL_ENV, TERM_ENV, TrainingError, train
from restr.runs.folder import RunError, load_checkpoint, load_run, read_metrics
from restr.utils import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[2]


def smoke_cfg(root: Path, **train):
    t = {"iterations": 8, "ckpt_every": 4, "val_every": 4, "log_every": 2, "batch_size": 4, **train}
    return get_preset("smoke", train=t, data={"root": str(root), "num_workers": 0})


def cli(*args: str, env: dict | None = None, torchrun: int = 0) -> subprocess.CompletedProcess:
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "restr", *args]
    else:
        cmd = [sys.executable, "-m", "restr", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def data_args(root: Path) -> list[str]:
    return ["--preset", "smoke", "--data", str(root), "--dataset", "synthref", "--split-by", "unc", "--no-progress"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_sampler_is_a_function_of_seed_epoch_and_position():
    full = list(ResumableSampler(10, 4, world=1, rank=0, seed=3))
    assert len(full) == 8  # 2 steps of 4, the incomplete last batch is dropped
    again = ResumableSampler(10, 4, world=1, rank=0, seed=3)
    again.set_position(0, 1)
    assert list(again) == full[4:]  # resuming at step 1 skips exactly one batch
    r0 = ResumableSampler(10, 4, world=2, rank=0, seed=3)
    r1 = ResumableSampler(10, 4, world=2, rank=1, seed=3)
    a, b = list(r0), list(r1)
    assert a[:2] + b[:2] + a[2:] + b[2:] == full  # the ranks split each global batch
    e1 = ResumableSampler(10, 4, world=1, rank=0, seed=3)
    e1.set_position(1, 0)
    assert [i for i, _ in e1] != [i for i, _ in full]
    assert item_seed(3, 0, 5) == item_seed(3, 0, 5) != item_seed(3, 1, 5)


def test_train_writes_a_complete_run_dir(data_root, tmp_path):
    run = train(smoke_cfg(data_root), tmp_path / "run", progress=False)
    for name in ("config.json", "vocab.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["vocab_file"] == "vocab.json" and cfg["train"]["iterations"] == 8
    rows = read_metrics(run)
    logs = [r for r in rows if "loss" in r and "event" not in r]
    vals = [r for r in rows if r.get("split") == "val"]
    assert [r["step"] for r in logs] == [2, 4, 6, 8]
    assert all(k in logs[0] for k in ("lr", "lr_vit", "images_per_s", "loss_patch", "loss_pixel"))
    assert {r["arithmetic"] for r in logs} == {"float32"}  # the smoke preset: train.amp = auto, fp32 on a CPU
    assert [r["step"] for r in vals] == [4, 8] and "cum_iou" in vals[0] and "prec@0.5" in vals[0]
    # the embedded data's programs say what each val expression needs: a curve per kind
    assert set(vals[0]["kinds"]) == {"attributes", "region", "relation", "ordinal"}
    assert sum(k["n"] for k in vals[0]["kinds"].values()) == vals[0]["n"]
    assert rows[-1]["event"] == "finished"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "step", "epoch", "step_in_epoch", "config"):
        assert key in state, key
    assert state["step"] == 8 and state["finished"]
    assert set(state["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    loaded = load_run(run)  # the run dir alone rebuilds the model
    assert loaded.step == 8 and loaded.cfg.model.vocab_size == len(loaded.vocab)
    # an existing run is not overwritten without --resume
    with pytest.raises(TrainingError, match="--resume"):
        train(smoke_cfg(data_root), run, progress=False)
    # resuming with a different config is refused, naming the fields
    with pytest.raises(ConfigError) as err:
        train(smoke_cfg(data_root, lr=0.5, grad_clip=2.0), run, resume=True, progress=False)
    assert "train.lr: 0.001 != 0.5" in str(err.value) and "train.grad_clip" in str(err.value)
    # the CLI says the same and exits with status 2
    p = cli("train", *data_args(data_root), "--set", "train.lr=0.5", "--out", str(run), "--resume")
    assert p.returncode == 2 and "train.lr" in p.stderr
    # a corrupt (truncated) checkpoint is named in the error
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    ckpt = broken / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(RunError, match="corrupt or truncated"):
        load_run(broken)
    p = cli("train", "--out", str(broken), "--resume", "--no-progress")
    assert p.returncode == 2 and str(ckpt) in p.stderr


def test_resume_needs_a_run(tmp_path, data_root):
    with pytest.raises(TrainingError, match="does not exist"):
        train(smoke_cfg(data_root), tmp_path / "nothing", resume=True, progress=False)


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_weights(data_root, tmp_path):
    # 8 train images -> ~25 steps of 4 per epoch: 30 steps cross an epoch boundary; augmentation on
    common = [*data_args(data_root), "--iterations", "30", "--batch-size", "4",
              "--set", "train.ckpt_every=4", "--set", "train.val_every=10", "--set", "data.augment=true"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p = cli("train", *common, "--workers", "0", "--out", str(ref))
    assert p.returncode == 0, p.stderr
    # SIGKILL after step 19, mid-epoch and 3 steps after the last checkpoint (step 16);
    # the killed run loads its data with 2 workers, the others in the main process
    p = cli("train", *common, "--workers", "2", "--out", str(killed), env={KILL_ENV: "19"})
    assert p.returncode == -9, (p.returncode, p.stderr)
    assert json.loads((killed / "checkpoints" / "last.json").read_text())["step"] == 16
    p = cli("train", *common, "--workers", "0", "--out", str(killed), "--resume")
    assert p.returncode == 0, p.stderr
    a, b = weights(ref), weights(killed)
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["epoch"] >= 1
    for k in a:
        assert torch.equal(a[k], b[k]), k
    def strip(rows):
        timing = ("images_per_s", "elapsed_s", "val_seconds", "cpu_s")
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    assert strip(read_metrics(ref)) == strip(read_metrics(killed))  # rows after step 16 were redone, not doubled

    # SIGTERM after step 19: the run stops there at a checkpoint of that step (exit 3, an
    # event in its log) and resumes from it to the same weights
    stopped = tmp_path / "stopped"
    p = cli("train", *common, "--workers", "2", "--out", str(stopped), env={TERM_ENV: "19"})
    assert p.returncode == 3 and "stopped on request (SIGTERM) at step 19 of 30" in p.stderr, (p.returncode, p.stderr)
    assert json.loads((stopped / "checkpoints" / "last.json").read_text())["step"] == 19
    assert [r["step"] for r in read_metrics(stopped) if r.get("event") == "stopped"] == [19]
    cpu_at_stop = load_checkpoint(stopped / "checkpoints" / "last.pt")["cpu_s"]
    p = cli("train", *common, "--workers", "0", "--out", str(stopped), "--resume")
    assert p.returncode == 0, p.stderr
    # the CPU time is the run's, over both sessions: the resumed one adds to what the stop kept
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["cpu_s"] > cpu_at_stop > 0
    c = weights(stopped)
    for k in a:
        assert torch.equal(a[k], c[k]), k
    assert strip(read_metrics(ref)) == [r for r in strip(read_metrics(stopped)) if r.get("event") != "stopped"]


@pytest.mark.slow
def test_a_preloaded_training_split_trains_to_the_same_weights(data_root, tmp_path):
    # groups of 2 expressions of one image, augmented, loaded by a forked worker from the
    # preloaded split, against a run that decodes every file each time (RESTR_PRELOAD_MB=0)
    common = [*data_args(data_root), "--iterations", "12", "--batch-size", "4", "--workers", "1",
              "--set", "train.expressions_per_image=2", "--set", "data.augment=true", "--set", "train.val_every=0"]
    p = cli("train", *common, "--out", str(tmp_path / "kept"))
    assert p.returncode == 0, p.stderr
    assert re.search(r"synthref train: \d+ images and \d+ masks preloaded \(\d+ MB in", p.stderr), p.stderr
    p = cli("train", *common, "--out", str(tmp_path / "decoded"), env={BUDGET_ENV: "0"})
    assert p.returncode == 0, p.stderr
    assert f"synthref train: not preloaded ({BUDGET_ENV}=0)" in p.stderr
    a, b = weights(tmp_path / "kept"), weights(tmp_path / "decoded")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(data_root, tmp_path):
    common = [*data_args(data_root), "--iterations", "6", "--batch-size", "4", "--dtype", "float64",
              "--set", "train.val_every=3", "--workers", "0", "--set", "train.grad_clip=1.0"]
    one, two = tmp_path / "one", tmp_path / "two"
    p = cli("train", *common, "--out", str(one))
    assert p.returncode == 0, p.stderr
    p = cli("train", *common, "--out", str(two), torchrun=2)
    assert p.returncode == 0, p.stderr
    a, b = weights(one), weights(two)
    assert a[next(iter(a))].dtype == torch.float64
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-11, msg=k)
    def val(run):
        return [r["cum_iou"] for r in read_metrics(run) if r.get("split") == "val"]

    assert val(one) == pytest.approx(val(two), abs=1e-6)  # validation reduced over both ranks
    assert not (two / "checkpoints" / "last.pt.tmp").exists()


@pytest.mark.slow
def test_torchrun_with_one_process_takes_the_distributed_path(data_root, tmp_path):
    """``torchrun --nproc_per_node 1`` (how one GPU checks the DDP path) runs the process
    group, DDP and the all-reduces, and trains exactly as the plain command does."""
    common = [*data_args(data_root), "--iterations", "4", "--batch-size", "4", "--dtype", "float64",
              "--set", "train.val_every=2", "--workers", "0"]
    plain, launched = tmp_path / "plain", tmp_path / "launched"
    p = cli("train", *common, "--out", str(plain))
    assert p.returncode == 0, p.stderr
    assert "distributed:" not in p.stderr
    p = cli("train", *common, "--out", str(launched), torchrun=1)
    assert p.returncode == 0, p.stderr
    assert "distributed: gloo, world size 1, DistributedDataParallel" in p.stderr
    a, b = weights(plain), weights(launched)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-14, msg=k)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    import restr.engine.step as T

    calls = {"n": 0}
    real = T.restr_loss

    def flaky(*args, **kw):
        calls["n"] += 1
        total, parts = real(*args, **kw)
        if calls["n"] > 5:  # the 6th optimiser step (step index 5) diverges
            total = total * float("nan")
            parts = {k: v * float("nan") for k, v in parts.items()}
        return total, parts

    monkeypatch.setattr(T, "restr_loss", flaky)
    run = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"loss is nan at step 5.*last good checkpoint .*last\.pt is kept"):
        train(smoke_cfg(data_root), run, progress=False)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert read_metrics(run)[-1]["event"] == "diverged"


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run) if "loss" in r]


@pytest.fixture(scope="module")
def eager_fp32_run(data_root, tmp_path_factory) -> Path:
    return train(smoke_cfg(data_root), tmp_path_factory.mktemp("eager") / "run", progress=False)


def test_bf16_autocast_trains_with_fp32_weights(data_root, tmp_path, eager_fp32_run):
    """The GPU default (bf16 autocast) run on CPU: the same code path, checked end to end."""
    run = train(smoke_cfg(data_root, amp="bf16"), tmp_path / "bf16", progress=False)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    ref, got = _losses(eager_fp32_run), _losses(run)
    assert len(got) == len(ref) == 4
    if cpu_has_fast_bf16():
        # bf16 keeps 8 bits of mantissa: the losses agree to ~1 %, not to the last digit
        assert got == pytest.approx(ref, rel=0.02)
        assert got != ref
    else:  # a CPU without native bf16 (AVX512-BF16 or AMX) computes in fp32 instead, with a notice
        assert got == ref
    out = load_run(run).model(torch.zeros(1, 3, 32, 32), torch.ones(1, 20, dtype=torch.long))
    assert out.mask_logits.isfinite().all()


def test_compiled_training_matches_eager(data_root, tmp_path, eager_fp32_run):
    """train.compile=True (inductor, code-generated for the CPU here): same losses as eager up to
    float rounding, and a checkpoint that loads into the plain model."""
    run = train(smoke_cfg(data_root, compile=True), tmp_path / "compiled", progress=False)
    assert _losses(run) == pytest.approx(_losses(eager_fp32_run), rel=1e-3)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not any(k.startswith("_orig_mod") for k in state["model"])
    load_run(run)


def test_loader_workers_auto_sizes_to_the_machine(monkeypatch):
    from restr.data.order import loader_workers

    assert get_preset("paper").data.num_workers == -1  # paper scale: size the loader to the machine
    assert get_preset("tiny").data.num_workers == 1  # one loader worker beside one compute thread
    assert loader_workers(3) == 3 and loader_workers(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers(-1) == 12  # 15 free cores, capped at 12
    assert loader_workers(-1, processes_per_machine=4) == 3  # 16 cores over 4 GPUs' processes, minus one each
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert loader_workers(-1) == 0  # one core: load in the training process
    with pytest.raises(ConfigError, match="data.num_workers = -2"):
        loader_workers(-2)
