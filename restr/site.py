"""The book's web site: staged from the executed notebooks, built by Sphinx, served locally.

* :func:`stage` lays out a copy of the book's sources with papermill's executed
  notebooks in place; the cell papermill injects (the batch run's parameters) is tagged
  ``remove-cell`` there, so the site shows each notebook's own ``parameters`` cell only.
* :func:`build` writes the Sphinx configuration with ``jupyter-book config sphinx`` and
  runs ``sphinx-build`` into ``<build>/html``; a value glued into a page's prose that
  cannot be found or formatted stops the build (:func:`glue_problems`).
* This module is also the Sphinx extension ``restr.site`` (listed in ``_config.yml``):
  it copies the pinned MathJax of the PyPI package ``django-static-mathjax`` (MathJax's
  own ``es5`` distribution; Django is not needed) into the site's ``_static/mathjax``,
  and ``_config.yml`` points ``mathjax_path`` at it, so equations render offline. It
  also drops the second copy of a script that Sphinx lists twice (sphinx-thebe's).
* :func:`serve` serves a built site on the loopback interface.
"""
from __future__ import annotations

import functools
import http
import http.server
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MATHJAX_PACKAGE = "django-static-mathjax"  # the requirements.txt line that ships MathJax
MATHJAX_STATIC = "mathjax"  # folder under the site's _static/
INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it adds
HIDDEN_TAG = "remove-cell"  # myst-nb leaves such a cell out of the page


class SiteError(RuntimeError):
    """A site that could not be staged, built or served."""


# ----------------------------------------------------------------------------------------
# MathJax, served with the site


def mathjax_dir() -> Path:
    """The installed MathJax ``es5`` folder (``tex-mml-chtml.js`` and what it loads)."""
    spec = importlib.util.find_spec("mathjax")
    root = Path(spec.origin).parent / "static" / "mathjax" if spec and spec.origin else None
    if root is None or not (root / "es5" / "tex-mml-chtml.js").is_file():
        raise SiteError(f"MathJax is not installed: the site serves the copy of the PyPI package {MATHJAX_PACKAGE} "
                        f"(pip install -r requirements.txt)")
    return root / "es5"


def mathjax_version() -> str:
    return json.loads((mathjax_dir().parent / "package.json").read_text())["version"]


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        shutil.copytree(mathjax_dir(), Path(app.outdir) / "_static" / MATHJAX_STATIC, dirs_exist_ok=True)


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    """sphinx-thebe registers its inline configuration script after the HTML builder has
    taken the registered scripts, and Sphinx then lists it twice on every page: a
    JavaScript error (``THEBE_JS_URL`` declared twice). Keep the first of equal scripts."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        name = getattr(js, "filename", js) or ""  # an inline script's is None or ""
        key = (str(name), tuple(sorted((getattr(js, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    """Sphinx extension: the pinned MathJax is copied into every HTML build; no page lists
    a script twice."""
    mathjax_dir()  # fail at the start of the build, not after it
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _unique_scripts, priority=990)  # after the handlers that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ----------------------------------------------------------------------------------------
# staging and building


def hide_injected_parameters(nb: dict) -> int:
    """Tag papermill's injected-parameters cell so the site leaves it out; returns how many."""
    n = 0
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)
            n += 1
    return n


def stage(executed_dir: Path, stage_dir: Path) -> Path:
    """A copy of the book's sources (``_config.yml``, ``_toc.yml``, ``book/``) with the
    executed notebooks under ``notebooks/``."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, stage_dir / name)
    shutil.copytree(REPO / "book", stage_dir / "book")
    (stage_dir / "notebooks").mkdir()
    for path in sorted(executed_dir.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        hide_injected_parameters(nb)
        (stage_dir / "notebooks" / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stage_dir


def _run(cmd: list[str], log: Path, what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode != 0:
        raise SiteError(f"{what} failed (exit {proc.returncode}); see {log}\n{proc.stderr[-2000:]}")
    return proc


def glue_problems(sphinx_output: str) -> list[str]:
    """myst-nb's warnings about glued values (a key no notebook glued, a value that cannot
    be formatted): Sphinx leaves such a value out of the page and carries on, but a page
    whose numbers are pasted from the run must not lose one silently."""
    return [line.strip() for line in sphinx_output.splitlines() if "[mystnb.glue" in line]


def build(executed_dir: Path, build_root: Path) -> Path:
    """Build the site from the executed notebooks into ``<build_root>/html``; returns that folder."""
    src = stage(executed_dir, build_root / "site-src")
    html = build_root / "html"
    log = build_root / "site-build.log"
    log.write_text("")
    jb = Path(sys.executable).parent / "jupyter-book"
    _run([str(jb) if jb.exists() else "jupyter-book", "config", "sphinx", str(src)], log, "jupyter-book config sphinx")
    if html.exists():
        shutil.rmtree(html)  # no page of an earlier build survives
    proc = _run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(build_root / "site-doctrees"), str(src),
                 str(html)], log, "sphinx-build")
    problems = glue_problems(proc.stderr)
    if problems:
        raise SiteError(f"{len(problems)} glued value(s) missing from the site (see {log}):\n"
                        + "\n".join(problems[:20]))
    if not (html / "index.html").exists():
        raise SiteError(f"the site build produced no index.html under {html}; see {log}")
    return html


# ----------------------------------------------------------------------------------------
# serving


class SiteRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site's own regular files (and its folders' index pages) only: a path that
    is or passes through a symlink, or is not a regular file or folder, is a 404, so a link
    inside the site folder cannot serve a file from elsewhere."""

    def send_head(self):
        if not self.servable(Path(self.translate_path(self.path))):
            self.send_error(http.HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def servable(self, target: Path) -> bool:
        """Whether ``target`` (a request's path in the site folder) may be served."""
        try:
            relative = target.relative_to(self.directory)
        except ValueError:
            return False
        walked = Path(self.directory)
        for part in relative.parts:  # no symlink on the way, even one pointing inside the site
            walked = walked / part
            if walked.is_symlink():
                return False
        return not target.exists() or target.is_file() or target.is_dir()  # not a FIFO, socket or device


def serve(html: Path, port: int = 8000, host: str = "127.0.0.1", build_command: str = "python -m restr book") -> None:
    """Serve a built site until interrupted (Ctrl-C): its regular files only (:class:`SiteRequestHandler`).
    ``build_command``: the command that builds this site, printed when there is none."""
    if not (html / "index.html").is_file():
        raise SiteError(f"no site at {html}: build it first with `{build_command}`")
    handler = functools.partial(SiteRequestHandler, directory=str(html))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"serving {html} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
