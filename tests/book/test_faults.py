"""Kill -9 at random (seeded) moments during smoke ``book`` runs, two at a time on the
same data and runs folders, then a clean rerun.

Each round starts two ``python -m restr book --profile smoke --only 02`` processes (the
notebook that trains four runs: the four fusion variants of Table 3(b)) on one data
folder (which does not exist at first: both want to generate it) and one runs folder,
and SIGKILLs each one, with every process under it (notebook kernel, DataLoader
workers), a delay drawn from a seeded generator after training got under way in the
round (a run folder is locked), so that the kills land in training, validation and
checkpoint writes rather than in the kernels' start. A clean rerun must then succeed,
and leave:

- every run folder consistent: config, vocabulary, metrics and a finished last.pt that
  loads; no duplicate metrics rows; no lock and no temporary file left;
- the data identical to a fresh generation;
- every run identical to the same config trained once, cleanly, in a fresh folder
  (weights bit for bit, metrics rows but for timings, config.json).

The kill moments are seeded; what the test asserts holds for any of them.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from restr.runs.folder import load_checkpoint, read_metrics

ROOT = Path(__file__).resolve().parents[2]
SEED = 16
ROUNDS = 2
KILL_AFTER = (1.0, 15.0)  # seconds after training got under way in the round, drawn uniformly
WAIT_FOR_TRAINING = 120.0  # seconds; a book that trains nothing by then is killed then
TIMING = ("images_per_s", "elapsed_s", "val_seconds", "cpu_s")
pytestmark = pytest.mark.slow


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def book(data: Path, runs: Path, build: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "restr", "book", "--profile", "smoke", "--only", "02", "--no-site",
           "--data", str(data), "--runs", str(runs), "--build", str(build)]
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=fh, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything under it at once: stop the tree top-down (a stopped
    process starts no more children), then kill every process of it."""
    stopped, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            os.kill(p, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        stopped.append(p)
        todo.extend(children(p))
    for p in stopped:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def training_started(runs: Path, procs: list[subprocess.Popen], limit: float) -> float:
    """When a run folder of ``runs`` is first locked (a process is training it), polled;
    or when every book has ended, or at ``limit``."""
    while time.monotonic() < limit and any(p.poll() is None for p in procs):
        if runs.is_dir() and any(runs.glob("*/.lock")):
            break
        time.sleep(0.1)
    return time.monotonic()


def progress(runs: Path) -> str:
    """Each run folder's checkpoint step, for the log of a round."""
    if not runs.is_dir():
        return "no runs yet"
    out = []
    for run in sorted(runs.iterdir()):
        side = run / "checkpoints" / "last.json"
        out.append(f"{run.name}: {json.loads(side.read_text())['step'] if side.is_file() else '-'}")
    return ", ".join(out) or "no runs yet"


def check_run_folder(run: Path) -> None:
    for name in ("config.json", "vocab.json", "metrics.jsonl", "checkpoints/last.json"):
        assert (run / name).is_file(), (run, name)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    side = json.loads((run / "checkpoints" / "last.json").read_text())
    assert state["finished"] and side["finished"] and state["step"] == side["step"] == side["iterations"], run
    keys = [(r["step"], r.get("event") or r.get("split") or "log") for r in read_metrics(run)]
    assert len(keys) == len(set(keys)), (run, keys)
    assert keys[-1] == (state["step"], "finished"), run
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]
    assert not leftovers, (run, leftovers)


REFERENCE = """
import json, sys
from pathlib import Path
from restr.config import Config
from restr.engine.trainer import train
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    d = json.loads((Path(src) / "config.json").read_text())
    train(Config.from_dict(d), dst, progress=False, requested_hash=d["config_hash"])
"""


def test_kill_9_during_concurrent_book_runs_then_a_clean_rerun(tmp_path):
    from restr.book.runner import book_profile
    from restr.data.synth import generate

    rng = random.Random(SEED)
    data, runs = tmp_path / "data", tmp_path / "runs"
    for r in range(ROUNDS):
        procs = [book(data, runs, tmp_path / f"build-{r}-{i}", tmp_path / f"book-{r}-{i}.log") for i in range(2)]
        delays = [rng.uniform(*KILL_AFTER) for _ in procs]
        start = training_started(runs, procs, time.monotonic() + WAIT_FOR_TRAINING)
        for p, delay in sorted(zip(procs, delays), key=lambda x: x[1]):
            try:
                p.wait(timeout=max(0.0, start + delay - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_tree(p.pid)
                p.wait()
        print(f"round {r}: killed {delays[0]:.1f} s and {delays[1]:.1f} s into training; {progress(runs)}")

    log = tmp_path / "rerun.log"
    rerun = book(data, runs, tmp_path / "build-rerun", log)
    assert rerun.wait(timeout=900) == 0, log.read_text()[-3000:]

    # the data: complete, no leftovers, the same bytes as a fresh generation
    fresh = tmp_path / "fresh"
    synth = book_profile("smoke").synth
    generate(fresh, seed=synth.seed, num_images=synth.num_images, progress=False)
    for name in ("refs(unc).p", "instances.json", "scenes.json"):
        assert (data / "synthref" / name).read_bytes() == (fresh / "synthref" / name).read_bytes(), name
    images = sorted(p.name for p in (data / "synthref" / "images").iterdir())
    assert images == sorted(p.name for p in (fresh / "synthref" / "images").iterdir())
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]

    # the runs: consistent, and identical to clean trainings of the same configs
    folders = sorted(p for p in runs.iterdir() if p.is_dir())
    assert len(folders) == 4, [p.name for p in runs.iterdir()]  # chapter 2's four variants
    for run in folders:
        check_run_folder(run)
    ref = tmp_path / "reference"
    pairs = [str(x) for run in folders for x in (run, ref / run.name)]
    p = subprocess.run([sys.executable, "-c", REFERENCE, *pairs], cwd=ROOT, env=env(), capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    for run in folders:
        clean = ref / run.name
        a, b = load_checkpoint(run / "checkpoints" / "last.pt"), load_checkpoint(clean / "checkpoints" / "last.pt")
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (run.name, k)
        assert strip(read_metrics(run)) == strip(read_metrics(clean)), run.name
        assert json.loads((run / "config.json").read_text()) == json.loads((clean / "config.json").read_text())
