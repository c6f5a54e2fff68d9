"""restr.book.progress: the batch run's live progress, with a fake clock and written run files."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from restr.book.progress import BatchProgress, TrainingStatus, clock, training_status


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def write_run(runs: Path, name: str, rows: list[dict], iterations: int = 100, batch_size: int = 16) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"iterations": iterations, "batch_size": batch_size}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_clock():
    assert [clock(s) for s in (0, 9.6, 75, 3725)] == ["0:00", "0:10", "1:15", "1:02:05"]


def test_training_status_reads_the_newest_unfinished_run(tmp_path):
    assert training_status(tmp_path / "nothing", since=0) is None
    rows = [{"step": 20, "loss": 0.9, "images_per_s": 80.0}, {"step": 40, "loss": 0.7, "images_per_s": 64.0},
            {"step": 40, "split": "val", "cum_iou": 0.1}]
    write_run(tmp_path, "tiny-aaa", rows)
    status = training_status(tmp_path, since=0)
    # 60 steps of 16 images left at 64 images/s: 15 s
    assert status == TrainingStatus(run="tiny-aaa", step=40, iterations=100, loss=0.7, images_per_s=64.0,
                                    batch_size=16)
    assert status.eta_s == pytest.approx(15.0)
    assert status.describe() == "train step 40/100, loss 0.700, 64 img/s, ETA 0:15"
    assert status.describe(compact=True) == "step 40/100 loss 0.700 ETA 0:15 64 img/s"
    # a run that changed before the notebook started is not this notebook's
    mtime = (tmp_path / "tiny-aaa" / "metrics.jsonl").stat().st_mtime
    assert training_status(tmp_path, since=mtime + 1) is None
    # a finished (or diverged) run shows nothing
    write_run(tmp_path / "other", "tiny-bbb", [*rows, {"step": 100, "event": "finished"}])
    assert training_status(tmp_path / "other", since=0) is None


def test_training_status_of_a_run_that_just_started(tmp_path):
    write_run(tmp_path, "tiny-new", [])
    status = training_status(tmp_path, since=0)
    assert status.step == 0 and status.eta_s is None and status.describe() == "train step 0/100"


def test_training_status_skips_a_half_written_row(tmp_path):
    run = write_run(tmp_path, "tiny-x", [{"step": 20, "loss": 0.5, "images_per_s": 32.0}])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 40, "lo')
    assert training_status(tmp_path, since=0).step == 20


def test_plain_lines_when_not_a_terminal(tmp_path):
    now, out = FakeClock(), io.StringIO()
    p = BatchProgress(2, runs_dir=tmp_path, stream=out, tty=False, interval=30, now=now, wall=lambda: 0.0)
    p.notebook_started("01_intro", code_cells=5)
    p.cell_started(1)
    now.t += 10
    p.refresh()  # within the interval: nothing
    p.cell_started(3)
    write_run(tmp_path, "tiny-aaa", [{"step": 50, "loss": 0.25, "images_per_s": 100.0}])
    now.t += 25
    p.refresh()
    now.t += 5
    p.refresh()  # printed 5 s ago: nothing
    now.t += 10
    assert p.notebook_done() == pytest.approx(50)
    p.notebook_started("02_next", code_cells=2)
    now.t += 3
    p.notebook_done(ok=False)
    assert out.getvalue().splitlines() == [
        "[1/2] 01_intro: started (5 code cells)",
        "[1/2] 01_intro: cell 3/5, 0:25 in this cell, 0:35 in the notebook; "
        "train step 50/100, loss 0.250, 100 img/s, ETA 0:08",
        "[1/2] 01_intro: done in 0:50",
        "[2/2] 02_next: started (2 code cells)",
        "[2/2] 02_next: FAILED in 0:03 (cell 0/2)",
    ]


def test_one_line_per_notebook_on_a_terminal(tmp_path):
    now, out = FakeClock(), io.StringIO()
    p = BatchProgress(2, runs_dir=tmp_path, stream=out, tty=True, now=now, wall=lambda: 0.0)
    p.notebook_started("01_intro", code_cells=2)  # an estimate; the engine knows better
    for cell in (1, 2, 3):
        now.t += 2
        p.cell_started(cell, 3)
        p.refresh()
    write_run(tmp_path, "tiny-aaa", [{"step": 50, "loss": 0.25, "images_per_s": 100.0}])
    p.refresh()
    now.t += 1
    p.notebook_done()
    p.notebook_started("02_next", code_cells=1)
    p.notebook_done()
    text = out.getvalue()
    lines = text.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # one finished line per notebook
    assert lines[0].split("\r")[-1].rstrip() == "[1/2] 01_intro: done in 0:07"
    assert "[1/2] 01_intro cell 3/3 0:00\r" in lines[0]
    assert "[1/2] 01_intro cell 3/3 0:00 | step 50/100 loss 0.250 ETA 0:08 100 img/s\r" in lines[0]
    assert lines[1].split("\r")[-1].rstrip() == "[2/2] 02_next: done in 0:00"
    # a message between notebooks gets a line of its own
    p.message("building the site ...")
    assert out.getvalue().endswith("building the site ...\n")


def test_runs_dir_survives_a_change_of_working_folder(tmp_path, monkeypatch):
    write_run(tmp_path / "runs", "tiny-aaa", [{"step": 5, "loss": 0.5, "images_per_s": 8.0}])
    monkeypatch.chdir(tmp_path)
    p = BatchProgress(1, runs_dir="runs", stream=io.StringIO(), tty=False, wall=lambda: 0.0)
    p.notebook_started("01_intro", code_cells=1)
    monkeypatch.chdir(tmp_path / "runs")  # as papermill does for each notebook
    assert "train step 5/100" in p.status_line()
