"""The batch run of the book: ``python -m restr book [--profile smoke|quick|full|paper|converged] [--data ROOT]``.

1. generates the embedded data set if it is missing;
2. executes every notebook in ``notebooks/`` in order with papermill into
   ``_build/executed/<profile>/``, injecting the profile's parameters, and stops with
   the failing notebook's name and cell on error; meanwhile it shows each notebook's
   cell and, while a model trains, its step, loss, speed and ETA (:mod:`restr.book.progress`);
3. records that profile as the last run's in ``_build/executed/last-run.json`` (the
   notebooks ``jupyter-book build .`` shows), builds the site from the executed
   notebooks into ``_build/html/`` as ``jupyter-book build .`` does (:mod:`restr.book.site`;
   the site's own execution is off, so it shows exactly what papermill ran), and ends
   with the time per notebook and the site's address. ``--serve`` serves that site.

Profiles (:class:`restr.config.BookProfile`, in ``restr.config.BOOK_PROFILES`` and
``PROTOCOL_PROFILES``): ``converged`` (the default, the README's main job: the protocol's,
every arm for the main arm's budget, three seeds of each claim's arms, on the embedded
data's version 2; minutes with the model zoo, which the campaign of ``python -m restr zoo
train --profile converged`` filled, and 56.5 hours of
training without it),
``smoke`` (minutes; what the notebook tests run), ``quick`` (the former default: the
variants trained a sixth as long as the main model, on version 1 of the data, from the
former backbone start; its zoo is kept), ``full`` (quick with every variant trained as
long as the main model: about a day on a 2-core CPU, none of it in the zoo), ``paper``
(paper-scale settings, for a GPU and real data).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import PROTOCOL_PROFILES, BookProfile, ConfigError, get_book_profile, get_preset
from ..data.synth import generate, version_of
from ..engine.assets import check_assets
from ..runs.lock import RunLock
from ..utils.files import REPO
from . import site
from .models import model_config
from .progress import BatchProgress, clock

DEFAULT_BUILD = "_build"


class BookError(RuntimeError):
    """A notebook that failed, or a site that did not build."""


def book_profile(name: str) -> BookProfile:
    """The book profile a notebook's ``profile`` parameter names (see :data:`restr.config.BOOK_PROFILES`);
    ``converged`` with the protocol's budget (:mod:`restr.book.budget`), refused until it is fixed."""
    if name not in PROTOCOL_PROFILES:
        return get_book_profile(name)
    from .budget import BUDGET_FILE, read_budget

    fixed = read_budget()
    if fixed is None:
        raise ConfigError(f"the {name} profile trains every arm for the protocol's budget, which is not fixed yet "
                          f"({BUDGET_FILE} is missing): `python -m restr recipe budget` shows the doubling test on "
                          f"the main arm, and `--fix` writes its answer once it has one")
    steps = int(fixed["steps"])
    return dataclasses.replace(PROTOCOL_PROFILES[name], iterations=steps, variant_iterations=steps)


PROTOCOL_PAGE = "book/protocol.md"


def protocol_history(repo: Path = REPO) -> list[dict[str, str]]:
    """Every commit that changed the protocol page (``book/protocol.md``), newest first:
    ``{"commit", "date", "subject"}``; empty outside a git checkout. The status page shows
    the newest (the protocol the verdicts were judged under) and lists them all."""

    try:
        out = subprocess.run(["git", "log", "--format=%h%x09%ad%x09%s", "--date=short", "--", PROTOCOL_PAGE],
                             cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    rows = [line.split("\t", 2) for line in out.stdout.splitlines() if line.count("\t") >= 2]
    return [{"commit": c, "date": d, "subject": s} for c, d, s in rows]


def protocol_commit(repo: Path = REPO) -> str:
    """``abc1234 (2026-12-03)``: the protocol page's newest commit, or why there is none
    (not a git checkout; the page changed since its last commit)."""
    history = protocol_history(repo)
    if not history:
        return "unknown (not a git checkout, or the page is not committed)"

    dirty = subprocess.run(["git", "status", "--porcelain", "--", PROTOCOL_PAGE], cwd=repo, capture_output=True,
                           text=True).stdout.strip()
    newest = f"{history[0]['commit']} ({history[0]['date']})"
    return newest + (", with uncommitted changes" if dirty else "")


def notebook_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or REPO / "notebooks"
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise BookError(f"no notebooks found in {folder}")
    return paths


def ensure_data(profile: BookProfile, data_root: Path) -> Path:
    """Generate the embedded data set at ``data_root`` if it is not there yet."""
    refs = data_root / profile.dataset / f"refs({profile.split_by}).p"
    if refs.exists():
        _check_synth_version(profile, data_root)
        return data_root
    if profile.synth is None:
        raise BookError(
            f"no data at {refs}: the {profile.name} profile needs the real {profile.dataset} download "
            f"(see the book's page on running with real data), or pass --data"
        )

    with RunLock(data_root, what="data folder", wait=True):  # one process generates; the others wait for it
        if not refs.exists():
            print(f"generating the embedded data set into {data_root} ...", file=sys.stderr)
            sizes = {} if profile.synth.num_images is None else {"num_images": profile.synth.num_images}
            # a bar on a terminal; in a log (not a terminal) one line when it is done
            done = generate(str(data_root), seed=profile.synth.seed, version=profile.synth.version,
                            progress=sys.stderr.isatty(), **sizes)
            print(f"generated {done['images']} images in {done['seconds']:.0f} s", file=sys.stderr)
    return data_root


def _check_synth_version(profile: BookProfile, data_root: Path) -> None:
    """Refuse an embedded data set of another version than the profile's (it is not regenerated
    in place: runs may have been trained on it). A folder without ``scenes.json`` is not checked."""
    if profile.synth is None or profile.dataset != "synthref" or not (data_root / "synthref" / "scenes.json").is_file():
        return

    try:
        found = version_of(data_root)
    except (OSError, ValueError) as exc:
        raise BookError(f"cannot read {data_root / profile.dataset / 'scenes.json'}: {exc}") from None
    if found != profile.synth.version:
        raise BookError(f"{data_root} holds synthref version {found}, the {profile.name} profile asks for version "
                        f"{profile.synth.version}: pass another --data folder, or delete this one to generate it")


ENGINE = "restr-progress"  # papermill engine name of :class:`_ProgressEngine`


def _register_engine() -> None:
    """A papermill engine that reports each code cell as it starts: ``on_cell(n, N)``."""
    from papermill.engines import NBClientEngine, papermill_engines

    class _ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
            if on_cell is not None:
                code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
                number = {index: n for n, index in enumerate(code, 1)}
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    if cell_index in number:
                        on_cell(number[cell_index], len(code))
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, _ProgressEngine)


def kernel_config(socket_dir: Path):
    """Kernels talk to papermill over Unix sockets in ``socket_dir`` instead of unencrypted
    loopback TCP (which ipykernel warns about at every start); POSIX only. The sockets'
    path is absolute: a relative one would put them in the notebooks' folder."""
    from traitlets.config import Config as KernelConfig

    c = KernelConfig()
    if os.name == "posix":
        c.KernelManager.transport = "ipc"
        c.KernelManager.ip = str(Path(socket_dir).resolve() / "kernel")
    return c


def notebook_path_param(path: Path, nb_dir: Path) -> str:
    """A path as a notebook's kernel (whose working folder is the notebook's) should get
    it: relative when it lies inside the repository, as the notebooks' own defaults are
    (``../data/synthref``), so a run the batch trains is the run JupyterLab asks for and
    no machine path reaches the site; absolute otherwise."""
    p = path.resolve()
    try:
        p.relative_to(REPO)
    except ValueError:
        return str(p)
    return os.path.relpath(p, nb_dir.resolve())


def execute_notebooks(
    profile_name: str,
    data_root: Path,
    out_dir: Path,
    runs_dir: Path,
    notebooks: list[Path] | None = None,
    progress: BatchProgress | None = None,
    overrides: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run each notebook with papermill, its parameters set to the profile, the data and
    runs folders and the ``--set`` ``overrides``; return one record per notebook (notebook,
    seconds, output)."""

    _register_engine()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="restr-kernels-") as sockets:  # removed with its sockets
        return [_execute_one(nb, out_dir, notebook_parameters(nb, profile_name, data_root, runs_dir, overrides),
                             Path(sockets), progress)
                for nb in notebooks or notebook_paths()]


def notebook_parameters(nb: Path, profile_name: str, data_root: Path, runs_dir: Path,
                        overrides: dict[str, str] | None) -> dict[str, Any]:
    """What papermill sets in notebook ``nb``'s parameters cell: everything its config
    depends on (paths as the kernel, working in the notebook's folder, should read them)."""
    return {
        "profile": profile_name,
        "data_root": notebook_path_param(data_root, nb.parent),
        "runs_dir": notebook_path_param(runs_dir, nb.parent),
        "overrides": dict(overrides or {}),
        "interactive": False,
    }


def _execute_one(nb: Path, out_dir: Path, params: dict[str, Any], sockets: Path,
                 progress: BatchProgress | None) -> dict[str, Any]:
    """Run one notebook with papermill (see :func:`execute_notebooks`)."""
    import nbformat
    import papermill as pm

    target = out_dir / nb.name
    declared = pm.inspect_notebook(str(nb))
    params = {k: v for k, v in params.items() if k in declared}
    if progress is not None:  # the code cells, and the one papermill injects
        progress.notebook_started(nb.stem, sum(c.cell_type == "code" for c in nbformat.read(nb, 4).cells) + 1)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb), str(target), parameters=params, cwd=str(nb.parent), kernel_name="python3",
            engine_name=ENGINE, on_cell=progress.cell_started if progress is not None else None,
            config=kernel_config(sockets), progress_bar=False, log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        if progress is not None:
            progress.notebook_done(ok=False)
        raise BookError(
            f"notebook {nb.name} failed in cell {exc.exec_count} with {exc.ename}: {exc.evalue}\n"
            f"(the executed copy with the error is {target})"
        ) from None
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress.notebook_done()
    return {"notebook": nb.name, "seconds": seconds, "output": str(target)}


def build_site(executed_dir: Path, build_root: Path) -> Path:
    """The site from the executed notebooks, in ``<build_root>/html``; returns that folder."""
    try:
        return site.build(executed_dir, build_root)
    except site.SiteError as exc:
        raise BookError(str(exc)) from None


def summary(records: list[dict[str, Any]], timings: dict[str, float], html: Path | None, build: Path) -> str:
    """The closing report: time per notebook and step, where the site is and how to open it."""
    lines = [f"{'notebook':<32} {'time':>8}"]
    lines += [f"{r['notebook']:<32} {clock(r['seconds']):>8}" for r in records]
    lines += [f"{name:<32} {clock(seconds):>8}" for name, seconds in timings.items()]
    if html is not None:
        index = html.resolve() / "index.html"
        serve = "python -m restr book --serve" + ("" if build == Path(DEFAULT_BUILD) else f" --build {build}")
        lines += ["", f"site: {os.path.relpath(index, REPO) if index.is_relative_to(REPO) else index}",
                  f"open: {index.as_uri()}",
                  f"or serve it: {serve}  (then http://127.0.0.1:8000/)"]
    return "\n".join(lines)


def check_book_overrides(overrides: dict[str, str], preset: str) -> dict[str, str]:
    """``--set`` overrides (``{"section.field": value}``) checked against the config: unknown
    fields and bad values fail here, by name; the notebooks get them as their ``overrides``
    parameter."""
    get_preset(preset).override(overrides)
    return dict(overrides)


def check_book_assets(profile: BookProfile, data_root: Path, overrides: dict[str, str] | None = None) -> None:
    """Stop before any work if the profile's models need files this machine lacks (the
    paper profile: the ViT weights and a 300-d GloVe file, given with ``--set``;
    restr.engine.assets names them)."""
    check_assets(model_config(profile, data_root, "main", overrides=overrides))
