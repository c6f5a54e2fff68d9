"""Fixtures shared by several test modules.

The tests mirror the package's layers (``tests/model/``, ``tests/data/``, ``tests/runs/``,
``tests/engine/``, ``tests/eval/``, ``tests/perf/``, ``tests/zoo/``, ``tests/book/``,
``tests/commands/``); ``test_security.py`` crosses them. The helpers beside this file
(``browser_harness``, ``toolkit_reader``) are importable from every folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """An 8-image embedded data set, generated once per test module that asks for it."""
    from restr.data.synth import generate

    root = tmp_path_factory.mktemp("synthref")
    generate(root, seed=1, num_images=8, progress=False)
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A smoke-preset run trained for 4 steps on a freshly generated 8-image synthref set."""
    from restr.config import get_preset
    from restr.data.synth import generate
    from restr.engine.trainer import train

    root = tmp_path_factory.mktemp("synthref")
    generate(root, seed=2, num_images=8, progress=False)
    cfg = get_preset("smoke", train={"iterations": 4, "ckpt_every": 0, "val_every": 0, "batch_size": 4},
                     data={"root": str(root), "num_workers": 0})
    return train(cfg, tmp_path_factory.mktemp("runs") / "smoke", progress=False)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """One ``python -m restr book --profile smoke`` into a temporary folder: ``data/``,
    ``runs/``, ``build/`` (``executed/smoke/`` and the site in ``html/``), the command's
    arguments in ``book.args`` (one a line) and its output in ``book.stdout`` and
    ``book.stderr`` (not a terminal, so the progress is plain lines, one every 5 seconds).

    ``RESTR_SMOKE_BOOK=<folder>`` reuses the folder of an earlier such run instead (to
    iterate on the tests that read it)."""
    if os.environ.get("RESTR_SMOKE_BOOK"):
        root = Path(os.environ["RESTR_SMOKE_BOOK"])
        assert (root / "book.stdout").is_file(), f"{root} does not hold a smoke book run of this fixture"
        return root
    root = tmp_path_factory.mktemp("book")
    cmd = [sys.executable, "-m", "restr", "book", "--profile", "smoke", "--build", str(root / "build"),
           "--runs", str(root / "runs"), "--data", str(root / "data"), "--progress-every", "5"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    (root / "book.args").write_text("\n".join(cmd[3:]) + "\n")  # the command's arguments after -m restr
    (root / "book.stdout").write_text(proc.stdout)
    (root / "book.stderr").write_text(proc.stderr)
    assert proc.returncode == 0, f"python -m restr book --profile smoke failed:\n{proc.stderr[-4000:]}"
    return root
