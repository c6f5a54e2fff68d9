"""Live progress of the book's batch run (``python -m restr book``).

What the user sees while a notebook runs: the notebook, the code cell being executed
(n of N), the time spent in it, and, while a model trains, the step, loss, images/s
and an ETA. On a terminal that is one line per notebook, redrawn in place twice a
second and left behind, with the notebook's time, when the notebook is done; on
anything else (CI, a log file) it is a plain line when a notebook starts and ends and
one every ``interval`` seconds in between.

The training figures come from the run directory the notebook's kernel is writing:
the trainer appends a row to ``<runs>/<run>/metrics.jsonl`` every ``train.log_every``
steps, so the batch run reads the newest row instead of talking to the kernel.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

TTY_REFRESH_S = 0.5
PLAIN_INTERVAL_S = 30.0
_TAIL_BYTES = 8192  # enough for the last few rows of metrics.jsonl


def clock(seconds: float) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    s = max(int(round(seconds)), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class TrainingStatus:
    run: str  # the run directory's name
    step: int
    iterations: int
    loss: float | None = None
    images_per_s: float | None = None
    batch_size: int | None = None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the last logged speed (None before the first log row)."""
        if not self.images_per_s or not self.batch_size:
            return None
        return (self.iterations - self.step) * self.batch_size / self.images_per_s

    def describe(self, compact: bool = False) -> str:
        """``train step 40/100, loss 0.700, 64 img/s, ETA 0:15``; compact (for a terminal
        line, most important first): ``step 40/100 loss 0.700 ETA 0:15 64 img/s``."""
        loss = f"loss {self.loss:.3f}" if self.loss is not None else None
        speed = f"{self.images_per_s:.0f} img/s" if self.images_per_s is not None else None
        eta = f"ETA {clock(self.eta_s)}" if self.eta_s is not None else None
        if compact:
            return " ".join(p for p in (f"step {self.step}/{self.iterations}", loss, eta, speed) if p)
        return ", ".join(p for p in (f"train step {self.step}/{self.iterations}", loss, speed, eta) if p)


def _last_rows(path: Path) -> list[dict]:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(size - _TAIL_BYTES, 0))
        text = f.read().decode("utf-8", errors="replace")
    rows = []
    for line in text.splitlines()[1 if size > _TAIL_BYTES else 0:]:  # the first line may be cut
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a row being written
    return rows


def training_status(runs_dir: str | os.PathLike, since: float) -> TrainingStatus | None:
    """The run under ``runs_dir`` whose metrics changed last, if that was at or after
    ``since`` (a ``time.time()``) and it has not finished; else None."""
    newest, newest_t = None, since
    try:
        candidates = list(Path(runs_dir).glob("*/metrics.jsonl"))
    except OSError:
        return None
    for path in candidates:
        try:
            t = path.stat().st_mtime
        except OSError:
            continue
        if t >= newest_t:
            newest, newest_t = path, t
    if newest is None:
        return None
    try:
        cfg = json.loads((newest.parent / "config.json").read_text())
        rows = _last_rows(newest)
    except (OSError, json.JSONDecodeError):
        return None
    if rows and "event" in rows[-1]:
        return None  # finished or diverged
    train = cfg.get("train", {})
    logs = [r for r in rows if "loss" in r and "step" in r]
    last = logs[-1] if logs else {}
    step = max([int(r.get("step", 0)) for r in rows] or [0])
    return TrainingStatus(run=newest.parent.name, step=step, iterations=int(train.get("iterations", 0)),
                          loss=last.get("loss"), images_per_s=last.get("images_per_s"),
                          batch_size=train.get("batch_size"))


class BatchProgress:
    """Progress lines for a sequence of notebooks.

    The batch run calls :meth:`notebook_started`, :meth:`cell_started` (from the
    execution engine) and :meth:`notebook_done`; :meth:`start` runs a thread that calls
    :meth:`refresh`, which redraws (terminal) or prints when ``interval`` has passed.
    ``now`` and ``wall`` are injectable clocks (monotonic and ``time.time``-like).
    """

    def __init__(self, total: int, runs_dir: str | os.PathLike | None = None, stream: TextIO | None = None,
                 tty: bool | None = None, interval: float = PLAIN_INTERVAL_S,
                 now: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.total = total
        # absolute: papermill runs each notebook in the notebook's folder (a process-wide chdir)
        self.runs_dir = Path(runs_dir).resolve() if runs_dir is not None else None
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.now, self.wall = now, wall
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.index = 0
        self.name: str | None = None
        self.cell, self.cells = 0, 0
        self._nb_t0 = self._cell_t0 = 0.0
        self._wall_t0 = 0.0
        self._last_print = 0.0
        self._width = 0

    # -- events ------------------------------------------------------------------------------
    def notebook_started(self, name: str, code_cells: int) -> None:
        with self._lock:
            self.index += 1
            self.name, self.cell, self.cells = name, 0, code_cells
            self._nb_t0 = self._cell_t0 = self.now()
            self._wall_t0 = self.wall()
            if not self.tty:
                self._print(f"{self._prefix()}: started ({code_cells} code cells)")
            else:
                self._draw()

    def cell_started(self, cell: int, cells: int | None = None) -> None:
        with self._lock:
            self.cell = cell
            self.cells = cells or self.cells
            self._cell_t0 = self.now()
            if self.tty:
                self._draw()

    def notebook_done(self, ok: bool = True) -> float:
        """End the notebook's line; returns its seconds."""
        with self._lock:
            seconds = self.now() - self._nb_t0
            word = "done" if ok else "FAILED"
            text = f"{self._prefix()}: {word} in {clock(seconds)}"
            if not ok:
                text += f" (cell {self.cell}/{self.cells})"
            if self.tty:
                self._draw(text)
                self.stream.write("\n")
                self.stream.flush()
                self._width = 0
            else:
                self._print(text)
            self.name = None
            return seconds

    def message(self, text: str) -> None:
        """A line of its own (between notebooks)."""
        with self._lock:
            self._print(text)

    # -- rendering ---------------------------------------------------------------------------
    def _prefix(self) -> str:
        return f"[{self.index}/{self.total}] {self.name}"

    def status_line(self, compact: bool = False) -> str:
        """What is happening now, as one line (``compact``: short enough for a terminal)."""
        t = self.now()
        training = training_status(self.runs_dir, self._wall_t0) if self.runs_dir is not None else None
        if compact:
            line = f"{self._prefix()} cell {self.cell}/{self.cells} {clock(t - self._cell_t0)}"
            return line + (f" | {training.describe(compact=True)}" if training is not None else "")
        line = f"{self._prefix()}: cell {self.cell}/{self.cells}, {clock(t - self._cell_t0)} in this cell, " \
               f"{clock(t - self._nb_t0)} in the notebook"
        return line + (f"; {training.describe()}" if training is not None else "")

    def _draw(self, text: str | None = None) -> None:
        text = text if text is not None else self.status_line(compact=True)
        columns = shutil.get_terminal_size((100, 24)).columns
        if len(text) > columns - 1:
            text = text[: columns - 4] + "..."
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def _print(self, text: str) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_print = self.now()

    def refresh(self) -> None:
        """Redraw the live line (terminal), or print a status line if ``interval`` has passed."""
        with self._lock:
            if self.name is None:
                return
            if self.tty:
                self._draw()
            elif self.now() - self._last_print >= self.interval:
                self._print(self.status_line())

    # -- the thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        period = TTY_REFRESH_S if self.tty else min(self.interval, 5.0)
        while not self._stop.wait(period):
            self.refresh()

    def start(self) -> "BatchProgress":
        self._thread = threading.Thread(target=self._loop, name="book-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "BatchProgress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
