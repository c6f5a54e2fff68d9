"""``jupyter-book build .`` as a Jupyter Book user types it, in a fresh copy of the repository.

* After ``python -m restr book`` (the ``smoke_book`` fixture's run, its ``executed/``
  folder copied to where the batch run puts it by default, ``_build/executed/``), it
  builds the real site: the status page carries the verdicts the notebooks computed,
  data frames are HTML tables, and every file of the site is the one the batch run built.
* Without executed notebooks it stops with one message that names the command to run
  first, and a non-zero exit; so does a run record whose folder lacks a notebook.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_notebooks import NOTEBOOKS, cell_text, glued_values

REPO = Path(__file__).resolve().parents[2]


def fresh_copy(dst: Path) -> Path:
    """The repository's files as a clone of this checkout has them (tracked ones and new
    ones git does not ignore), without ``data/`` (the model zoo: the site reads none of it)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in listed:
        if name and not name.startswith("data/") and (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


def jupyter_book_build(repo: Path) -> subprocess.CompletedProcess:
    """``jupyter-book build .`` in ``repo``, its ``restr`` (the extension) first on the path."""
    jb = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([str(jb) if jb.exists() else "jupyter-book", "build", "."], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)


def site_files(html: Path) -> dict[str, bytes]:
    return {p.relative_to(html).as_posix(): p.read_bytes() for p in sorted(html.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_jupyter_book_build_makes_the_site_of_the_last_book_run(smoke_book, tmp_path):
    executed = smoke_book / "build" / "executed"
    record = json.loads((executed / "last-run.json").read_text())
    assert record["profile"] == "smoke" and record["notebooks"] == NOTEBOOKS  # written by the batch run
    repo = fresh_copy(tmp_path / "repo")
    shutil.copytree(executed, repo / "_build" / "executed")
    proc = jupyter_book_build(repo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]  # no glued value missing, no notebook edited since
    assert "restr.book.site: the notebooks as executed in " + str((repo / "_build" / "executed" / "smoke").resolve()) \
        in proc.stdout
    html = repo / "_build" / "html"

    # the status page: one row per claim, each with the numbers the notebooks glued
    glued = glued_values(repo / "_build" / "executed" / "smoke")
    status = (html / "book" / "status.html").read_text()
    assert "glue:text" not in status
    table = status[status.index("<table"):status.index("</table>")]
    rows = [[cell_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]
    rows = [r for r in rows if r]
    assert len(rows) == 7  # the paper's seven claims (the book's readings and M3Att's follow in their own tables)
    for n, (claim, words, budget, theirs, ours, verdict) in enumerate(rows, 1):
        assert claim == f"{n}. {glued[f'claim{n}_statement']}"
        assert glued[f"claim{n}_quote"] in words and budget == glued[f"claim{n}_budget"]
        assert theirs == glued[f"claim{n}_paper"] and ours == glued[f"claim{n}_ours"]
        assert re.search(r"\[[-+]?\d+\.\d+, [-+]?\d+\.\d+\]", ours), ours  # a measured interval
        assert verdict == glued[f"claim{n}_verdict"]
        assert verdict.split(" (")[0] in ("reproduced", "not reproduced", "inconclusive")
    assert f"{glued['main_iou']:.1f} % (mean IoU {glued['main_mean_iou']:.1f} %" in cell_text(status)

    # data frames are HTML tables, not text: chapter 2's Table 3(b), chapter 1's costs by patch size
    for page, columns in (("02_fusion_variants", ("encoder", "MACs (ours) G", "MACs below the paper's %")),
                          ("01_patch_embedding", ("patch_size", "N_v", "total_GMACs"))):
        tables = re.findall(r"<table[^>]*>.*?</table>", (html / "notebooks" / f"{page}.html").read_text(), re.S)
        assert any(all(f">{c}</th>" in t.replace("&#39;", "'") for c in columns) for t in tables), page
    table3b = next(t for t in re.findall(r"<table.*?</table>", (html / "notebooks" / "02_fusion_variants.html")
                                         .read_text(), re.S) if "MACs (ours) G" in t)
    assert [cell_text(h) for h in re.findall(r"<th>(.*?)</th>", table3b.split("<tbody>")[1])] == \
        ["VME", "IME", "CME", "CME†"]

    # the same site as the one `python -m restr book` built, file for file
    ours, batch = site_files(html), site_files(smoke_book / "build" / "html")
    assert ours.keys() == batch.keys()
    assert [name for name in ours if ours[name] != batch[name]] == []


def test_jupyter_book_build_without_executed_notebooks_says_what_to_run(tmp_path):
    repo = fresh_copy(tmp_path / "repo")
    proc = jupyter_book_build(repo)
    assert proc.returncode != 0
    message = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(message) == 1, proc.stderr  # one message: no warnings, no traceback
    assert message[0].startswith("error: no executed notebooks to build the site from")
    assert "run `python -m restr book` first" in message[0]
    assert "Traceback" not in proc.stdout
    assert not list((repo / "_build").rglob("*.html"))  # no site of empty chapters


def test_jupyter_book_build_stops_at_a_notebook_the_last_run_did_not_execute(tmp_path):
    repo = fresh_copy(tmp_path / "repo")
    folder = repo / "_build" / "executed" / "smoke"
    folder.mkdir(parents=True)
    shutil.copy2(repo / "notebooks" / NOTEBOOKS[0], folder / NOTEBOOKS[0])  # (an executed copy has outputs)
    (folder.parent / "last-run.json").write_text(json.dumps({"profile": "smoke", "notebooks": NOTEBOOKS[:1]}))
    proc = jupyter_book_build(repo)
    assert proc.returncode != 0
    message = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(message) == 1, proc.stderr
    missing = ", ".join(f"notebooks/{n.removesuffix('.ipynb')}" for n in NOTEBOOKS[1:])
    assert f"has no executed copy of {missing}" in message[0]
    assert "run `python -m restr book --profile smoke`" in message[0]
    assert not list((repo / "_build").rglob("*.html"))
