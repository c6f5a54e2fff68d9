"""A run folder under bad luck and bad input: invalid values never touch it, one process
at a time holds it (a lock file with the holder's pid, stale locks detected), a finished
run resumes to a no-op and is extended only when asked, a resume says which checkpoint it
starts from and offers best.pt when last.pt is gone, a full disk is reported with the
run, the step kept and the space needed, leftovers of killed writes are cleaned, and
files follow the umask."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from disk_faults import fail_fsync_of

import pytest
import torch

from restr.commands.train import main as train_main
from restr.config import get_preset
from restr.engine.trainer import KILL_ENV, TrainingError, train
from restr.runs.folder import load_checkpoint, read_metrics

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("images_per_s", "elapsed_s", "val_seconds", "cpu_s")


def smoke_cfg(root: Path, **train_values):
    t = {"iterations": 8, "ckpt_every": 4, "val_every": 4, "log_every": 2, "batch_size": 4, **train_values}
    return get_preset("smoke", train=t, data={"root": str(root), "num_workers": 0})


def data_args(root: Path) -> list[str]:
    return ["--preset", "smoke", "--data", str(root), "--dataset", "synthref", "--split-by", "unc", "--no-progress",
            "--workers", "0"]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "restr", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=300)


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_no_duplicate_rows(run: Path) -> None:
    keys = [(r["step"], r.get("event") or r.get("split") or "log") for r in read_metrics(run)]
    assert len(keys) == len(set(keys)), keys


# ----------------------------------------------------------------------------------------
# item 5: invalid values never reach the disk

@pytest.mark.parametrize("option,value,message", [
    ("--batch-size", "0", "train.batch_size = 0: must be a whole number >= 1"),
    ("--batch-size", "-4", "train.batch_size = -4: must be a whole number >= 1"),
    ("--iterations", "0", "train.iterations = 0: must be a whole number >= 1"),
    ("--lr", "-1", "train.lr = -1.0: must be > 0"),
    ("--batch-size", "2.5", "--batch-size: invalid int value: '2.5'"),
    ("--set", "train.batch_size=2.5", "train.batch_size = 2.5: must be a whole number >= 1"),
])
def test_invalid_training_values_leave_no_trace(data_root, tmp_path, capsys, option, value, message):
    out = tmp_path / "run"
    try:
        code = train_main([*data_args(data_root), option, value, "--run", str(out)])
    except SystemExit as exc:  # argparse's own refusal of a non-integer
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "divisible" not in err
    assert not out.exists()


def test_a_failure_after_the_checks_does_not_poison_the_folder(data_root, tmp_path, capsys):
    """Errors found while building the run (GloVe of the wrong width, a batch larger than
    the training split) come before config.json is written: a fixed rerun just works."""
    glove = tmp_path / "glove.3d.txt"
    glove.write_text("the 0.1 0.2 0.3\nred 0.4 0.5 0.6\n")
    out = tmp_path / "run"
    assert train_main([*data_args(data_root), "--glove", str(glove), "--run", str(out)]) == 2
    assert "GloVe vectors" in capsys.readouterr().err and not (out / "config.json").exists()
    assert train_main([*data_args(data_root), "--batch-size", "4096", "--run", str(out)]) == 2
    assert "fewer than one batch" in capsys.readouterr().err and not (out / "config.json").exists()
    assert train_main([*data_args(data_root), "--iterations", "2", "--run", str(out)]) == 0


# ----------------------------------------------------------------------------------------
# item 7: one process at a time per run folder

HOLD = ("import sys; from restr.runs.lock import RunLock; lock = RunLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); sys.stdin.read(); lock.release()")


def hold_lock(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_run_held_by_another_process_is_refused_or_waited_for(data_root, tmp_path):
    run = tmp_path / "run"
    cfg = smoke_cfg(data_root, iterations=2, val_every=0, ckpt_every=0)
    holder = hold_lock(run)
    try:
        lock = json.loads((run / ".lock").read_text())
        assert lock["pid"] == holder.pid
        with pytest.raises(TrainingError, match=rf"{run} is in use by process {holder.pid} .*--wait"):
            train(cfg, run, progress=False)
        assert not (run / "config.json").exists()
        # `train --wait` waits: it says so, and trains once the holder lets go
        waiter = subprocess.Popen([sys.executable, "-m", "restr", "train", *data_args(data_root), "--iterations", "2",
                                   "--set", "train.val_every=0", "--wait", "--out", str(run)], cwd=ROOT,
                                  stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = []
        for line in waiter.stderr:
            lines.append(line)
            if "waiting" in line:
                break
        assert f"waiting for process {holder.pid}" in "".join(lines), lines
        holder.stdin.close()
        holder.wait(timeout=60)
        out, err = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, err
    finally:
        holder.kill()
    assert not (run / ".lock").exists()  # released
    assert json.loads((run / "checkpoints" / "last.json").read_text())["finished"]


def test_a_stale_lock_is_detected_and_taken_over(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "command": "killed"}))
    train(smoke_cfg(data_root, iterations=2, val_every=0, ckpt_every=0), run, progress=False)
    assert f"stale lock of process {pid}" in capsys.readouterr().err
    assert not (run / ".lock").exists()


# ----------------------------------------------------------------------------------------
# item 8: a finished run resumes to a no-op; extending is explicit

def test_a_finished_run_resumes_to_a_no_op_and_extends_only_when_asked(data_root, tmp_path, capsys):
    run = train(smoke_cfg(data_root), tmp_path / "run", progress=False)
    rows, ckpt = read_metrics(run), (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    train(smoke_cfg(data_root), run, resume=True, progress=False)
    assert f"{run} is finished (step 8 of 8); nothing to do" in capsys.readouterr().err
    assert train_main(["--run", str(run), "--resume", "--no-progress"]) == 0
    assert read_metrics(run) == rows and (run / "checkpoints" / "last.pt").read_bytes() == ckpt

    # iterations raised by hand in config.json: refused, pointing at --extend
    cfg_file = run / "config.json"
    d = json.loads(cfg_file.read_text())
    d["train"]["iterations"] = 12
    cfg_file.write_text(json.dumps(d))
    assert train_main(["--run", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.iterations: 8 != 12" in err and "--extend" in err
    assert read_metrics(run) == rows

    assert train_main(["--run", str(run), "--resume", "--extend", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "extending" in err and "from 8 to 12 iterations" in err and "schedule" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 12 and state["finished"]
    assert_no_duplicate_rows(run)
    assert [r["step"] for r in read_metrics(run) if r.get("split") == "val"] == [4, 8, 12]
    assert [r for r in read_metrics(run) if r.get("event") == "extended"][0]["to"] == 12


# ----------------------------------------------------------------------------------------
# item 9: resume says where it starts; best.pt is offered when last.pt is gone

@pytest.mark.slow
def test_resume_from_best_after_losing_last(data_root, tmp_path, capsys):
    common = [*data_args(data_root), "--iterations", "12", "--set", "train.ckpt_every=4",
              "--set", "train.val_every=4", "--set", "train.log_every=2"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert cli("train", *common, "--run", str(ref)).returncode == 0
    p = cli("train", *common, "--run", str(run), env={KILL_ENV: "5"})  # killed after step 5: last and best at 4
    assert p.returncode == -9, p.stderr
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])  # corrupt
    assert train_main([*common, "--run", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "best.pt (step 4)" in err and "--resume-from best" in err
    last.unlink()  # "delete it", as the error advises: no silent restart from step 0
    assert train_main([*common, "--run", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "no checkpoints/last.pt" in err and "best.pt (step 4)" in err and "--resume-from best" in err
    p = cli("train", *common, "--run", str(run), "--resume-from", "best")  # a process like ref's: same threads
    assert p.returncode == 0, p.stderr
    assert f"resuming {run} from {run / 'checkpoints' / 'best.pt'} (step 4 of 12)" in p.stderr
    a, b = load_checkpoint(ref / "checkpoints" / "last.pt")["model"], load_checkpoint(last)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert strip(read_metrics(run)) == strip(read_metrics(ref))


@pytest.mark.slow
def test_a_run_killed_before_its_first_last_checkpoint_resumes_from_best(data_root, tmp_path):
    """Validation every 4 steps, checkpoints every 8: killed after step 5, the run holds
    best.pt (step 4) and never wrote last.pt (as a kill between the two writes of one step
    leaves it). best.pt is then its newest state: --resume continues from it, and the run
    ends with the weights and log of an uninterrupted one."""
    common = [*data_args(data_root), "--iterations", "12", "--set", "train.ckpt_every=8",
              "--set", "train.val_every=4", "--set", "train.log_every=2"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert cli("train", *common, "--run", str(ref)).returncode == 0
    p = cli("train", *common, "--run", str(run), env={KILL_ENV: "5"})
    assert p.returncode == -9, p.stderr
    assert sorted(f.name for f in (run / "checkpoints").iterdir()) == ["best.json", "best.pt"]
    p = cli("train", *common, "--run", str(run), "--resume")
    assert p.returncode == 0, p.stderr
    assert "never saved checkpoints/last.pt" in p.stderr
    assert f"resuming {run} from {run / 'checkpoints' / 'best.pt'} (step 4 of 12)" in p.stderr
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (ref, run))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert strip(read_metrics(run)) == strip(read_metrics(ref))


# ----------------------------------------------------------------------------------------
# item 10: a full disk

def temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def test_disk_full_names_the_run_the_step_kept_and_the_space_needed(data_root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    cfg = smoke_cfg(data_root, iterations=12)
    fail_fsync_of(monkeypatch, "last.pt", after=1)  # the checkpoint of step 4 is written, step 8's is not
    with pytest.raises(TrainingError) as err:
        train(cfg, run, progress=False)
    msg = str(err.value)
    size = (run / "checkpoints" / "last.pt").stat().st_size
    assert f"disk full: run {run}" in msg and "at step 8" in msg
    assert "last.pt (step 4) is kept" in msg
    assert re.search(r"the checkpoint needs \d+(\.\d)? [kMG]B, [\d.]+ [kMGT]?B free", msg) and "--resume" in msg
    assert size > 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert temporaries(run) == []
    monkeypatch.undo()
    train(cfg, run, resume=True, progress=False)  # space freed: the run goes on
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 12
    assert_no_duplicate_rows(run)


def test_disk_full_at_start_leaves_nothing_half_done(data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    fail_fsync_of(monkeypatch, "vocab.json")
    with pytest.raises(TrainingError, match=rf"disk full: run {run} could not write vocab\.json"):
        train(smoke_cfg(data_root), run, progress=False)
    assert temporaries(run) == [] and not (run / "config.json").exists()
    monkeypatch.undo()
    train(smoke_cfg(data_root, iterations=2, val_every=0), run, progress=False)  # the folder is still usable


def test_leftover_temporary_files_are_cleaned_at_the_next_start(data_root, tmp_path, capsys):
    common = [*data_args(data_root), "--iterations", "8", "--set", "train.ckpt_every=4"]
    run = tmp_path / "run"
    assert cli("train", *common, "--run", str(run), env={KILL_ENV: "6"}).returncode == -9
    for name in (".last.pt.4242.0a1b2c3d.tmp", ".last.json.4242.0a1b2c3d.tmp"):
        (run / "checkpoints" / name).write_bytes(b"x" * 3000)
    (run / ".config.json.777.deadbeef.tmp").write_bytes(b"{")
    assert train_main([*common, "--run", str(run), "--resume"]) == 0
    assert "removed 3 temporary files (5.9 kB) left by killed writes" in capsys.readouterr().err
    assert temporaries(run) == []


# ----------------------------------------------------------------------------------------
# item 12: file modes follow the umask

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_run_files_follow_the_umask(data_root, tmp_path, umask):
    old = os.umask(umask)
    try:
        run = train(smoke_cfg(data_root, iterations=4, ckpt_every=2, val_every=2), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "vocab.json", "metrics.jsonl", "last.pt", "best.pt", "last.json"}
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, (p, oct(p.stat().st_mode))
    for p in [run, run / "checkpoints"]:
        assert p.stat().st_mode & 0o777 == 0o777 & ~umask, p



def test_a_killed_writers_temporary_files_are_removed_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from restr.utils.files import atomic_write_text, remove_dead_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended
    left = tmp_path / f".val-pixel-64.json.{dead_pid}.c9f7c903.tmp"
    live = tmp_path / f".val-pixel-64.csv.{os.getpid()}.0123abcd.tmp"  # this process's: a write under way
    other = tmp_path / ".notes.tmp"  # not one of atomic_write_bytes' names
    for p in (left, live, other):
        p.write_text("partial")
    atomic_write_text(tmp_path / "val-pixel-64.json", "{}\n")
    assert remove_dead_temporaries(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "val-pixel-64.json"])
    assert remove_dead_temporaries(tmp_path / "missing") == []
