"""The book's web site: built by Jupyter Book from the executed notebooks, served locally.

* ``python -m restr book`` executes the notebooks with papermill into
  ``<build>/executed/<profile>/`` (default ``_build/executed/converged/``) and, when all of
  them ran, records that profile in ``<build>/executed/last-run.json``
  (:func:`record_last_run`).
* This module is the Sphinx extension ``restr.book.site`` (listed in ``_config.yml``), and it
  makes ``jupyter-book build .`` build the real site: each notebook page is read from its
  executed copy instead of the committed notebook (which has no outputs), through
  Sphinx's ``source-read`` event, with the cell papermill injects (the batch run's
  parameters) tagged ``remove-cell``, so the page shows the notebook's own ``parameters``
  cell only. Which copies: those of the last finished ``python -m restr book`` run, the
  profile named in ``_build/executed/last-run.json``. With none, the build stops at once
  with one message that names the command to run first (:func:`last_run_folder`); a
  notebook without an executed copy stops it too. A page is read again when its copy or
  the record changes, so a new batch run updates an incremental build.
* :func:`build` (the site step of ``python -m restr book``) runs Jupyter Book's own
  build (``jupyter_book.sphinx.build_sphinx``, what ``jupyter-book build .`` calls) with
  the same configuration, pointed at the folder it just executed, into ``<build>/html``:
  one way to build, so both commands make the same site. A value glued into a page's
  prose that cannot be found or formatted stops that build (:func:`glue_problems`).
* The extension also copies the pinned MathJax of the PyPI package
  ``django-static-mathjax`` (MathJax's own ``es5`` distribution; Django is not needed)
  into the site's ``_static/mathjax``, and ``_config.yml`` points ``mathjax_path`` at it,
  so equations render offline; and it drops the second copy of a script that Sphinx lists
  twice (sphinx-thebe's).
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
import time
from pathlib import Path

from ..config import PROFILE_NAMES
from ..utils.files import REPO, atomic_write_text

MATHJAX_PACKAGE = "django-static-mathjax"  # the requirements.txt line that ships MathJax
MATHJAX_STATIC = "mathjax"  # folder under the site's _static/
INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it adds
HIDDEN_TAG = "remove-cell"  # myst-nb leaves such a cell out of the page
BOOK_COMMAND = "python -m restr book"
EXECUTED = Path("_build") / "executed"  # where BOOK_COMMAND executes the notebooks, under the book's folder
LAST_RUN = "last-run.json"  # in EXECUTED: the profile of the last run that executed all its notebooks
# Sphinx config value: the folder of executed notebooks to show (BOOK_COMMAND sets it; empty: the last run's)
EXECUTED_CONFIG = "restr_executed_notebooks"
NOTEBOOK_FOLDER = "notebooks"  # the pages read from executed copies: the notebooks BOOK_COMMAND runs


class SiteError(RuntimeError):
    """A site that could not be built or served, or has no executed notebooks to show."""


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


# ----------------------------------------------------------------------------------------
# which executed notebooks: the record of the last finished batch run


def record_last_run(executed_root: Path, profile: str, notebooks: list[str]) -> Path:
    """Record that ``python -m restr book`` has executed all its notebooks into
    ``<executed_root>/<profile>/``: ``jupyter-book build .`` shows that folder until the
    next run finishes. Returns the record (``last-run.json``)."""

    record = executed_root / LAST_RUN
    data = {"profile": profile, "notebooks": sorted(notebooks), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(record, json.dumps(data, indent=1) + "\n")  # a build never reads half a record
    return record


def forget_last_run(executed_root: Path, profile: str) -> None:
    """Before a run overwrites ``<executed_root>/<profile>/``: drop the record if it names
    that folder, so that a run which stops half-way leaves no record of a finished one. A
    record of another profile (a folder this run does not touch) stays; one that names no
    profile is of no use and goes too."""

    record = executed_root / LAST_RUN
    try:
        named = json.loads(record.read_text()).get("profile")
    except (OSError, ValueError, AttributeError):  # missing, or not a record
        named = None
    if named == profile or not isinstance(named, str) or named not in PROFILE_NAMES:
        record.unlink(missing_ok=True)


def last_run_folder(executed_root: Path) -> Path:
    """The folder of the notebooks the last finished ``python -m restr book`` executed, as
    ``<executed_root>/last-run.json`` names it; a :class:`SiteError` saying what to run
    when there is none."""

    record = executed_root / LAST_RUN
    if not record.is_file():
        raise SiteError(
            f"no executed notebooks to build the site from ({record} is missing). The site shows the notebooks "
            f"as `{BOOK_COMMAND}` executes them: run `{BOOK_COMMAND}` first (it builds the site too); "
            f"`jupyter-book build .` then builds it again from those notebooks.")
    try:
        profile = json.loads(record.read_text())["profile"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiteError(f"{record} is not a record of a `{BOOK_COMMAND}` run ({type(exc).__name__}: {exc}); "
                        f"run `{BOOK_COMMAND}` to write it again") from None
    if not isinstance(profile, str) or profile not in PROFILE_NAMES:
        raise SiteError(f"{record} names the profile {profile!r}, which is none of {', '.join(PROFILE_NAMES)}; "
                        f"run `{BOOK_COMMAND}` to write it again")
    folder = executed_root / profile
    if not folder.is_dir():
        raise SiteError(f"{record} names the {profile} profile, but there is no {folder}; "
                        f"run `{BOOK_COMMAND} --profile {profile}`")
    return folder


# ----------------------------------------------------------------------------------------
# the Sphinx extension: notebook pages read from their executed copies


def hide_injected_parameters(nb: dict) -> int:
    """Tag papermill's injected-parameters cell so the site leaves it out; returns how many."""
    n = 0
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)
            n += 1
    return n


def executed_text(copy: Path) -> str:
    """A notebook as its page shows it: the executed copy, papermill's cell hidden."""
    try:
        nb = json.loads(copy.read_text())
    except (OSError, ValueError) as exc:
        raise SiteError(f"{copy} cannot be read as a notebook ({exc}); run `{BOOK_COMMAND}` again") from None
    hide_injected_parameters(nb)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def cell_sources(text: str) -> list[tuple[str, str]]:
    """A notebook's cells as (type, source), papermill's injected cell left out."""
    nb = json.loads(text)
    return [(c.get("cell_type", ""), "".join(c.get("source", ""))) for c in nb.get("cells", [])
            if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]


def _logger():
    from sphinx.util import logging  # Sphinx only when it runs the extension

    return logging.getLogger(__name__)


def _stop(exc: SiteError):
    """End the build with the message alone: Jupyter Book answers any exception with a
    traceback and "There was an error in building your book. Look above for the cause.",
    so the message leaves as ``SystemExit`` (exit status 1), which it lets through."""
    raise SystemExit(f"error: {exc}")


def _executed_copy(app, docname: str) -> Path | None:
    """The executed copy a page is read from; None for a page that is not one of the notebooks."""
    folder, _, name = docname.rpartition("/")
    if folder != NOTEBOOK_FOLDER or not app.env.doc2path(docname, False).endswith(".ipynb"):
        return None
    return Path(app.config[EXECUTED_CONFIG]) / f"{name}.ipynb"


def _choose_executed(app, config) -> None:
    """``config-inited``: the folder of executed notebooks, stored resolved in the config
    value (a different folder than the last build's is then a changed config: every page is
    read again)."""
    try:
        if config[EXECUTED_CONFIG]:
            folder = Path(config[EXECUTED_CONFIG])
            if not folder.is_dir():
                raise SiteError(f"{EXECUTED_CONFIG} = {folder}: there is no such folder of executed notebooks")
        else:
            folder = last_run_folder(Path(app.srcdir) / EXECUTED)
    except SiteError as exc:
        _stop(exc)
    config[EXECUTED_CONFIG] = str(folder.resolve())
    _logger().info("restr.book.site: the notebooks as executed in %s", config[EXECUTED_CONFIG])


def _check_copies(app, env, added, changed, removed) -> list[str]:
    """``env-get-outdated``: before any page is read, every notebook has an executed copy."""
    missing = [d for d in sorted(env.found_docs) if (copy := _executed_copy(app, d)) and not copy.is_file()]
    if missing:
        folder = Path(app.config[EXECUTED_CONFIG])
        _stop(SiteError(f"{folder} has no executed copy of {', '.join(missing)}: the last `{BOOK_COMMAND}` "
                        f"run did not execute {'it' if len(missing) == 1 else 'them'}; run "
                        f"`{BOOK_COMMAND} --profile {folder.name}`, which executes every notebook"))
    return []


def _read_executed(app, docname: str, source: list[str]) -> None:
    """``source-read``: a notebook page gets its executed copy's content instead of the
    committed notebook's. Every page is read again when the run record or an executed
    notebook changes (the prose pages paste values glued in the notebooks)."""
    folder = Path(app.config[EXECUTED_CONFIG])
    for dependency in [folder.parent / LAST_RUN, *sorted(folder.glob("*.ipynb"))]:
        if dependency.is_file():
            app.env.note_dependency(str(dependency))
    copy = _executed_copy(app, docname)
    if copy is None:
        return
    try:
        text = executed_text(copy)
    except SiteError as exc:
        _stop(exc)
    try:
        edited = cell_sources(source[0]) != cell_sources(text)
    except (ValueError, AttributeError, TypeError):
        edited = True
    if edited:  # a notebook edited since the run: say which page is behind it
        _logger().warning("the notebook differs from its copy that `%s` executed (%s): the page shows that "
                          "copy; run `%s` to show the notebook as it is now", BOOK_COMMAND, copy, BOOK_COMMAND,
                          location=docname, type="restr", subtype="executed")
    source[0] = text


def _copy_executed_sources(app, exception) -> None:
    """``build-finished``: the notebook a page offers for download (its ``_sources/`` copy)
    is the one the page shows, not the committed notebook Sphinx copied."""
    if exception is not None or app.builder.format != "html" or not app.config.html_copy_source:
        return
    link_suffix = app.config.html_sourcelink_suffix
    for docname in sorted(app.env.found_docs):
        copy = _executed_copy(app, docname)
        target = Path(app.outdir) / "_sources" / (docname + ".ipynb" + (link_suffix if link_suffix != ".ipynb" else ""))
        if copy is not None and target.is_file():
            target.write_text(executed_text(copy))


def _copy_package_sources(app, exception) -> None:
    """``build-finished``: the package's Python files under the site's ``restr/``, so a
    chapter's link to the code it shows (:func:`restr.book.source.source_link`,
    ``../restr/model/fusion.py#L94-L130`` from a notebook page) opens that file."""
    if exception is not None or app.builder.format != "html":
        return
    package = REPO / "restr"
    for src in sorted(package.rglob("*.py")):
        target = Path(app.outdir) / "restr" / src.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def setup(app):
    """Sphinx extension: notebook pages from the executed notebooks; the pinned MathJax is
    copied into every HTML build; no page lists a script twice."""
    mathjax_dir()  # fail at the start of the build, not after it
    app.add_config_value(EXECUTED_CONFIG, "", "env", types=[str])
    app.connect("config-inited", _choose_executed)
    app.connect("env-get-outdated", _check_copies)
    app.connect("source-read", _read_executed)
    app.connect("build-finished", _copy_executed_sources)
    app.connect("build-finished", _copy_package_sources)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _unique_scripts, priority=990)  # after the handlers that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ----------------------------------------------------------------------------------------
# the batch run's build


def jupyter_book_build(executed_dir: str, html: str) -> int:
    """What ``jupyter-book build <repository>`` runs (``jupyter_book.cli.main.build``: the
    configuration of ``_config.yml`` and ``_toc.yml``), into ``html`` (the doctrees next to
    it, in ``.doctrees``), with the notebooks of ``executed_dir`` and a fresh environment;
    returns the exit status."""
    from jupyter_book.sphinx import build_sphinx

    overrides = {"external_toc_path": (REPO / "_toc.yml").as_posix(), "latex_individualpages": False,
                 EXECUTED_CONFIG: str(Path(executed_dir).resolve())}
    result = build_sphinx(REPO, Path(html).resolve(), use_external_toc=True, noconfig=True,
                          path_config=str(REPO / "_config.yml"), confoverrides=overrides, builder="html",
                          freshenv=True, quiet=True)
    return result if isinstance(result, int) else 1  # an exception: Sphinx has reported it


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
    """Build the site from the executed notebooks into ``<build_root>/html`` as
    ``jupyter-book build .`` does (:func:`jupyter_book_build`, in a process of its own);
    returns that folder."""
    html = build_root / "html"
    build_root.mkdir(parents=True, exist_ok=True)
    log = build_root / "site-build.log"
    log.write_text("")
    if html.exists():
        shutil.rmtree(html)  # no page of an earlier build survives
    script = "import sys; from restr.book.site import jupyter_book_build; sys.exit(jupyter_book_build(*sys.argv[1:]))"
    proc = _run([sys.executable, "-c", script, str(executed_dir), str(html)], log, "the site's build (Jupyter Book)")
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
