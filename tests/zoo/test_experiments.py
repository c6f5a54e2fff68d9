"""restr.zoo.cache.get_run on a missing, an unfinished and a finished run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import restr.engine.trainer
import restr.zoo.cache
from restr.config import get_preset
from restr.engine.trainer import KILL_ENV
from restr.runs.folder import read_metrics
from restr.zoo.cache import RunMissing, get_run, run_dir_for, run_status

ROOT = Path(__file__).resolve().parents[2]


def smoke_cfg(root: Path):
    train = {"iterations": 4, "ckpt_every": 2, "val_every": 0, "log_every": 1, "batch_size": 4}
    return get_preset("smoke", train=train, data={"root": str(root), "num_workers": 0})


@pytest.fixture
def train_calls(monkeypatch):
    """Record every call get_run makes to the trainer (and still train)."""
    calls = []
    real = restr.engine.trainer.train

    def recording(cfg, out, **kw):
        calls.append({"out": Path(out), **kw})
        return real(cfg, out, **kw)

    monkeypatch.setattr(restr.zoo.cache, "train", recording)  # the name get_run calls
    return calls


def test_missing_run_is_reported_or_trained(data_root, tmp_path, train_calls):
    cfg = smoke_cfg(data_root)
    expected = run_dir_for(cfg, tmp_path)
    from restr.data.fingerprint import data_fingerprint, short

    assert expected == tmp_path / f"smoke-{cfg.run_key()}-{short(data_fingerprint(cfg.data))}"
    assert run_status(expected) == {"exists": False, "finished": False, "step": 0, "iterations": None}
    with pytest.raises(RunMissing, match="missing"):
        get_run(cfg, tmp_path, train_if_missing=False)
    assert not expected.exists() and train_calls == []

    run = get_run(cfg, tmp_path, progress=False)
    assert run == expected
    assert [c["resume"] for c in train_calls] == [False]
    assert run_status(run) == {"exists": True, "finished": True, "step": 4, "iterations": 4}


def test_finished_run_is_reused_without_training(data_root, tmp_path, train_calls):
    cfg = smoke_cfg(data_root)
    run = get_run(cfg, tmp_path, progress=False)
    assert len(train_calls) == 1
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert get_run(cfg, tmp_path, progress=False) == run
    assert get_run(cfg, tmp_path, train_if_missing=False) == run
    assert len(train_calls) == 1  # no second training
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    # another config (one more step) is another run
    other = cfg.override({"train.iterations": 5})
    with pytest.raises(RunMissing, match="missing"):
        get_run(other, tmp_path, train_if_missing=False)


def test_unfinished_run_is_resumed(data_root, tmp_path, train_calls):
    cfg = smoke_cfg(data_root)
    # a notebook's kernel dies after step 3; its last checkpoint is from step 2
    child = ("import json, sys\nfrom restr.config import Config\nfrom restr.zoo.cache import get_run\n"
             "get_run(Config.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", KILL_ENV: "3"}
    proc = subprocess.run([sys.executable, "-c", child, json.dumps(cfg.to_dict()), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = run_dir_for(cfg, tmp_path)
    assert run_status(run) == {"exists": True, "finished": False, "step": 2, "iterations": 4}
    with pytest.raises(RunMissing, match=r"unfinished \(step 2\)"):
        get_run(cfg, tmp_path, train_if_missing=False)

    assert get_run(cfg, tmp_path, progress=False) == run
    assert [c["resume"] for c in train_calls] == [True]
    assert run_status(run)["finished"]
    losses = [r["step"] for r in read_metrics(run) if "loss" in r and "event" not in r]
    assert losses == [1, 2, 3, 4]  # step 3 of the killed process was redone, not logged twice
