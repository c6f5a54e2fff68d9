"""restr.book.site without a browser: which executed notebooks the site shows, the MathJax it serves, --serve.

``jupyter-book build .`` itself, after a smoke book and without one: tests/book/test_jupyter_book.py."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from restr.book import site

REPO = Path(__file__).resolve().parents[2]


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


def test_a_page_shows_the_executed_copy_with_the_injected_cell_hidden(tmp_path):
    copy = tmp_path / "01_x.ipynb"
    copy.write_text(json.dumps(notebook([code('profile = "smoke"', ["injected-parameters"]), code("a = 1")])))
    shown = json.loads(site.executed_text(copy))
    assert [c["metadata"]["tags"] for c in shown["cells"]] == [["injected-parameters", "remove-cell"], []]
    assert "remove-cell" not in copy.read_text()  # the executed copy is left as it is
    copy.write_text("{not json")
    with pytest.raises(site.SiteError, match=f"{copy}.*python -m restr book"):
        site.executed_text(copy)


def test_cell_sources_leave_out_the_injected_cell():
    committed = notebook([code('profile = "quick"', ["parameters"]), code("x = 1")])
    executed = notebook([code('profile = "quick"', ["parameters"]), code('profile = "smoke"', ["injected-parameters"]),
                         code(["x", " = 1"])])
    assert site.cell_sources(json.dumps(committed)) == site.cell_sources(json.dumps(executed))
    edited = notebook([code('profile = "quick"', ["parameters"]), code("x = 2")])
    assert site.cell_sources(json.dumps(edited)) != site.cell_sources(json.dumps(executed))


def test_the_last_finished_run_names_the_folder_the_site_shows(tmp_path):
    executed = tmp_path / "_build" / "executed"
    (executed / "quick").mkdir(parents=True)
    (executed / "smoke").mkdir()
    record = site.record_last_run(executed, "quick", ["02_b.ipynb", "01_a.ipynb"])
    assert json.loads(record.read_text())["notebooks"] == ["01_a.ipynb", "02_b.ipynb"]
    assert site.last_run_folder(executed) == executed / "quick"
    site.forget_last_run(executed, "smoke")  # a smoke run starts: the quick folder is still whole
    assert site.last_run_folder(executed) == executed / "quick"
    site.record_last_run(executed, "smoke", ["01_a.ipynb"])
    assert site.last_run_folder(executed) == executed / "smoke"  # the most recent finished run
    site.forget_last_run(executed, "smoke")  # a smoke run starts again and overwrites its folder
    with pytest.raises(site.SiteError) as err:
        site.last_run_folder(executed)  # until it finishes, no folder is known to be whole
    assert "no executed notebooks" in str(err.value) and "run `python -m restr book` first" in str(err.value)


@pytest.mark.parametrize("text, match", [
    ("{not json", "is not a record"),
    ('{"notebooks": []}', "is not a record"),
    ('["quick"]', "is not a record"),
    ('{"profile": "../../etc"}', "names the profile '../../etc', which is none of smoke"),
    ('{"profile": "full"}', "names the full profile, but there is no .*full; "
                            "run `python -m restr book --profile full`"),
])
def test_a_bad_run_record_is_named(tmp_path, text, match):
    (tmp_path / "quick").mkdir()
    (tmp_path / site.LAST_RUN).write_text(text)
    with pytest.raises(site.SiteError, match=match) as err:
        site.last_run_folder(tmp_path)
    assert str(tmp_path / site.LAST_RUN) in str(err.value)
    site.forget_last_run(tmp_path, "quick")  # an unreadable record is dropped when a run starts
    assert (tmp_path / site.LAST_RUN).exists() == ("full" in text)  # full's record is not quick's


def test_config_points_mathjax_at_the_served_copy():
    config = (REPO / "_config.yml").read_text()
    assert "restr.book.site" in config and "mathjax_path: mathjax/tex-mml-chtml.js" in config
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
