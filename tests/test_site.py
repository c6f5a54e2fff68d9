"""restr.site without a browser: staging, the MathJax it serves, --serve."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from restr import site

REPO = Path(__file__).resolve().parent.parent


def notebook(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def code(source: str, tags: list[str] | None = None) -> dict:
    meta = {"tags": tags} if tags is not None else {}
    return {"cell_type": "code", "source": source, "metadata": meta, "outputs": [], "execution_count": None}


def test_only_the_injected_parameters_cell_is_hidden():
    nb = notebook([code('profile = "quick"', ["parameters"]), code('profile = "smoke"', ["injected-parameters"]),
                   code("x = 1")])
    assert site.hide_injected_parameters(nb) == 1
    assert [c["metadata"]["tags"] for c in nb["cells"]] == [["parameters"], ["injected-parameters", "remove-cell"], []]
    assert site.hide_injected_parameters(nb) == 0  # already hidden


def test_stage_lays_out_the_book_with_the_executed_notebooks(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "01_x.ipynb").write_text(json.dumps(notebook([code("a = 1", ["injected-parameters"])])))
    out = site.stage(executed, tmp_path / "stage")
    assert (out / "_config.yml").read_text() == (REPO / "_config.yml").read_text()
    assert (out / "book" / "intro.md").is_file() and (out / "book" / "_static" / "book.css").is_file()
    staged = json.loads((out / "notebooks" / "01_x.ipynb").read_text())
    assert "remove-cell" in staged["cells"][0]["metadata"]["tags"]
    assert "remove-cell" not in (executed / "01_x.ipynb").read_text()  # the executed copy is left as it is


def test_config_points_mathjax_at_the_served_copy():
    config = (REPO / "_config.yml").read_text()
    assert "restr.site" in config and "mathjax_path: mathjax/tex-mml-chtml.js" in config
    assert (site.mathjax_dir() / "tex-mml-chtml.js").is_file()
    assert "django-static-mathjax==3.2.2.1" in (REPO / "requirements.txt").read_text()


def test_serve_needs_a_site(tmp_path):
    with pytest.raises(site.SiteError, match="build it first"):
        site.serve(tmp_path / "html")


def test_book_serve_serves_the_built_site(tmp_path):
    html = tmp_path / "build" / "html"
    html.mkdir(parents=True)
    (html / "index.html").write_text("<p>the book</p>")
    from browser_harness import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "restr", "book", "--serve", "--build", str(tmp_path / "build"),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the server listens
        assert f"http://127.0.0.1:{port}/" in line
        body = None
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body == "<p>the book</p>"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_missing_glued_value_is_a_problem():
    out = ("/b/site-src/book/status.md:16: WARNING: No key 'x' found in glue data for this document. [mystnb.glue]\n"
           "/b/site-src/book/status.md:17: WARNING: Glue reference 'y' not found in doc 'notebooks/02' "
           "[mystnb.glue_ref]\n"
           "/b/site-src/book/intro.md:3: WARNING: something else [myst.xref_missing]\n")
    problems = site.glue_problems(out)
    assert len(problems) == 2 and "'x'" in problems[0] and "'y'" in problems[1]
    assert site.glue_problems("") == []
