"""Prediction: Python API (mask, probability, patch map, seed attention) and CLI, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restr.data.errors import DataError, EmptyExpressionError
from restr.eval.predict import Predictor, UnknownWordsWarning
from restr.runs.folder import RunError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(smoke_run):
    return smoke_run


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_api(run, image):
    p = Predictor.from_run(run)
    r = p.predict(image, "the red circle", return_attention=True)
    assert r["mask"].shape == (45, 70) and r["mask"].dtype == bool
    assert r["probability"].shape == (45, 70)
    assert np.array_equal(r["mask"], r["probability"] >= 0.5)
    gh, gw = p.cfg.model.grid
    assert r["patch_map"].shape == (gh, gw) and (0 <= r["patch_map"]).all() and (r["patch_map"] <= 1).all()
    assert len(r["seed_attention"]) >= 1
    # the same from an array and a PIL image
    arr = np.asarray(Image.open(image).convert("RGB"))
    assert np.array_equal(p.predict(arr, "the red circle")["probability"], r["probability"])
    assert "seed_attention" not in p.predict(Image.open(image), "the red circle")


def test_predict_expressions(run, image):
    p = Predictor.from_run(run)
    with pytest.raises(EmptyExpressionError):
        p.predict(image, " . ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = p.predict(image, "zyzzyva qwxq")
    assert any(issubclass(w.category, UnknownWordsWarning) for w in caught)
    assert r["unknown_words"] == ["zyzzyva", "qwxq"]
    with pytest.raises(DataError, match="outside the run's vocabulary"):
        p.predict(image, "zyzzyva", strict=True)
    with pytest.raises(DataError, match="not found"):
        p.predict(image.parent / "nope.png", "red circle")


@pytest.mark.slow
def test_predict_cli(run, image, tmp_path):
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    cmd = [sys.executable, "-m", "restr", "predict", "--run", str(run), "--image", str(image),
           "--text", "the red circle", "--out", str(out), "--overlay", str(overlay), "--json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert Image.open(out).size == (70, 45) and Image.open(overlay).size == (70, 45)
    assert json.loads(p.stdout)["size"] == [45, 70]
    bad = subprocess.run([*cmd[:7], str(tmp_path / "missing.jpg"), *cmd[8:]], cwd=ROOT, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "image file not found" in bad.stderr and "missing.jpg" in bad.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(image.read_bytes()[:40])
    bad = subprocess.run([*cmd[:7], str(broken), *cmd[8:]], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read image" in bad.stderr


def test_predict_bad_runs(run, tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        Predictor.from_run(tmp_path / "nope")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    ckpt = broken / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(RunError, match=r"last\.pt is corrupt or truncated"):
        Predictor.from_run(broken)
