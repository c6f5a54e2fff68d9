"""Parking: an unfinished run copied into the repository, unparked in another working
block (a fresh runs/ folder) and resumed, ends with the weights of a run never stopped."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restr.engine.trainer import KILL_ENV
from restr.runs import park
from restr.runs.folder import RunError, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "restr", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_a_parked_run_resumes_in_a_new_block_to_the_same_weights(data_root, tmp_path):
    common = ["train", "--preset", "smoke", "--data", str(data_root), "--dataset", "synthref", "--split-by", "unc",
              "--no-progress", "--iterations", "12", "--batch-size", "4", "--workers", "0",
              "--set", "train.ckpt_every=4", "--set", "train.val_every=6"]
    ref = tmp_path / "ref"
    assert cli(*common, "--out", str(ref)).returncode == 0
    runs, parking = tmp_path / "block1" / "runs", tmp_path / "repo" / "data" / "parked"
    run = runs / "tiny-0123-abcd"
    p = cli(*common, "--out", str(run), env={KILL_ENV: "7"})  # the block ends after step 7; last checkpoint: 4
    assert p.returncode == -9, p.stderr
    with pytest.raises(RunError, match="no such folder"):
        park.park(tmp_path / "nope", parking)
    target = park.park(run, parking)
    assert target == parking / run.name and park.progress(target) == {"step": 4, "iterations": 12, "finished": False}
    assert sorted(str(f.relative_to(target)) for f in target.rglob("*") if f.is_file()) == sorted(park.PARKED_FILES)
    # the next block: a fresh runs folder; unparking restores the run, the same command resumes it
    runs2 = tmp_path / "block2" / "runs"
    assert park.unpark(runs2, parking) == [f"{run.name}: unparked at step 4 of 12 into {runs2 / run.name}; the "
                                            "command that started it resumes it"]
    assert "not behind the parked 4" in park.unpark(runs2, parking)[0]  # a second unpark changes nothing
    p = cli(*common, "--out", str(runs2 / run.name), "--resume")
    assert p.returncode == 0, p.stderr
    a = load_checkpoint(ref / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(runs2 / run.name / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "finished in" in park.unpark(runs2, parking)[0]  # its parked copy is now to be removed
    assert park.parked(parking, runs2)[0]["in runs"] == "finished"
    with pytest.raises(RunError, match="has finished"):
        park.park(runs2 / run.name, parking)


def test_park_refuses_a_run_without_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(RunError, match="nothing to park"):
        park.park(tmp_path / "run", tmp_path / "parked")
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"x")
    (tmp_path / "run" / "checkpoints" / "last.json").write_text("{broken")
    with pytest.raises(RunError, match="is not a checkpoint summary"):
        park.progress(tmp_path / "run")


def test_git_tracks_every_file_a_parked_run_holds():
    """The repository's .gitignore ignores *.pt and data/: a parked run's files must be the exceptions, or
    parking would commit a run without its checkpoint."""
    probe = ["git", "check-ignore", "-q", "--no-index"]
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    for name in park.PARKED_FILES:
        path = f"data/parked/tiny-0123-abcd/{name}"
        assert subprocess.run([*probe, path], cwd=ROOT).returncode == 1, f"git ignores {path}"
