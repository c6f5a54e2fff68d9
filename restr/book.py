"""The batch run of the book: ``python -m restr book [--profile smoke|quick|paper] [--data ROOT]``.

1. generates the embedded data set if it is missing;
2. executes every notebook in ``notebooks/`` in order with papermill into
   ``_build/executed/<profile>/``, injecting the profile's parameters, and stops with
   the failing notebook's name and cell on error;
3. builds the Jupyter Book site from the executed notebooks (the site's own
   execution is off, so it shows exactly what papermill ran).

Profiles: ``smoke`` (minutes; what the notebook tests run), ``quick`` (the default,
the README's main job: a laptop CPU in under 20 minutes; the variant grids are
trained briefly), ``full`` (every variant trained as long as the main model: about two
hours on a 2-core CPU), ``paper`` (paper-scale settings, for a GPU and real data).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Everything a notebook needs to know about a profile. Notebooks call
# ``book_profile(profile)`` and read what they need; nothing here is notebook code.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "preset": "smoke",
        "data_root": "_build/data/synthref-smoke",
        "dataset": "synthref",
        "split_by": "unc",
        "synth": {"num_images": 40, "seed": 0},
        "iterations": 30,  # the main run
        "variant_iterations": 12,  # each run of the variant grids (Tables 3 and 4)
        "eval_split": "val",
        "eval_max_expressions": 64,
        "grid_eval_expressions": 64,
        "attention_expressions": 32,
        "bootstrap": 200,
        "table4_layers": (2, 4),
    },
    "quick": {
        "preset": "tiny",
        "data_root": "data/synthref",
        "dataset": "synthref",
        "split_by": "unc",
        "synth": {"seed": 0},
        "iterations": 2400,  # the tiny preset's full length (~8 min)
        "variant_iterations": 150,  # each variant run: ~30 s; far from converged (the book says so)
        "eval_split": "val",
        "eval_max_expressions": None,
        "grid_eval_expressions": 1000,  # variant grids: 1,000 val expressions spread over the split
        "attention_expressions": 500,
        "bootstrap": 1000,
        "table4_layers": (2, 4, 6),
    },
    "full": {  # the quick profile with every variant trained as long as the main run (~2 h on CPU)
        "preset": "tiny",
        "data_root": "data/synthref",
        "dataset": "synthref",
        "split_by": "unc",
        "synth": {"seed": 0},
        "iterations": 2400,
        "variant_iterations": 2400,
        "eval_split": "val",
        "eval_max_expressions": None,
        "grid_eval_expressions": None,
        "attention_expressions": 500,
        "bootstrap": 1000,
        "table4_layers": (2, 4, 6),
    },
    "paper": {
        "preset": "paper",
        "data_root": "data/refer",
        "dataset": "refcocog",
        "split_by": "google",
        "synth": None,
        "iterations": 400_000,
        "variant_iterations": 400_000,
        "eval_split": "val",
        "eval_max_expressions": None,
        "grid_eval_expressions": None,
        "attention_expressions": 5000,
        "bootstrap": 1000,
        "table4_layers": (2, 4, 6),
    },
}


class BookError(RuntimeError):
    """A notebook that failed, or a site that did not build."""


def book_profile(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ValueError(f"unknown book profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return dict(PROFILES[name], name=name)


def notebook_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or REPO / "notebooks"
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise BookError(f"no notebooks found in {folder}")
    return paths


def ensure_data(profile: dict[str, Any], data_root: Path) -> Path:
    """Generate the embedded data set at ``data_root`` if it is not there yet."""
    refs = data_root / profile["dataset"] / f"refs({profile['split_by']}).p"
    if refs.exists():
        return data_root
    if profile["synth"] is None:
        raise BookError(
            f"no data at {refs}: the {profile['name']} profile needs the real {profile['dataset']} download "
            f"(see the book's page on running with real data), or pass --data"
        )
    from .data.synth import generate
    from .runlock import RunLock

    with RunLock(data_root, what="data folder", wait=True):  # one process generates; the others wait for it
        if not refs.exists():
            print(f"generating the embedded data set into {data_root} ...", file=sys.stderr)
            generate(str(data_root), **profile["synth"])
    return data_root


def execute_notebooks(
    profile_name: str,
    data_root: Path,
    out_dir: Path,
    runs_dir: Path,
    notebooks: list[Path] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run each notebook with papermill; return one record per notebook (path, seconds)."""
    import papermill as pm
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    paths = notebooks or notebook_paths()
    bar = tqdm(paths, desc=f"notebooks ({profile_name})", unit="nb", disable=not progress, file=sys.stderr)
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        target = out_dir / nb.name
        params = {
            "profile": profile_name,
            "data_root": str(data_root.resolve()),
            "runs_dir": str(runs_dir.resolve()),
            "interactive": False,
        }
        declared = pm.inspect_notebook(str(nb))
        params = {k: v for k, v in params.items() if k in declared}
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb), str(target), parameters=params, cwd=str(nb.parent), kernel_name="python3",
                progress_bar=False, log_output=False,
            )
        except pm.PapermillExecutionError as exc:
            raise BookError(
                f"notebook {nb.name} failed in cell {exc.exec_count} with {exc.ename}: {exc.evalue}\n"
                f"(the executed copy with the error is {target})"
            ) from None
        records.append({"notebook": nb.name, "seconds": time.perf_counter() - t0, "output": str(target)})
        print(f"  {nb.name}: {records[-1]['seconds']:.1f} s", file=sys.stderr)
    return records


def stage_site(executed_dir: Path, stage: Path) -> Path:
    """Lay out a copy of the book's sources with the executed notebooks in place."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, stage / name)
    shutil.copytree(REPO / "book", stage / "book")
    (stage / "notebooks").mkdir()
    for nb in sorted(executed_dir.glob("*.ipynb")):
        shutil.copy2(nb, stage / "notebooks" / nb.name)
    return stage


def build_site(executed_dir: Path, build_root: Path) -> Path:
    """``jupyter-book build`` over the executed notebooks; returns the HTML folder."""
    stage = stage_site(executed_dir, build_root / "site-src")
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(stage), "--path-output", str(build_root / "site")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = build_root / "site-build.log"
    log.write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}); see {log}\n{proc.stderr[-2000:]}")
    html = build_root / "site" / "_build" / "html"
    if not (html / "index.html").exists():
        raise BookError(f"jupyter-book build produced no index.html under {html}; see {log}")
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=list(PROFILES), help="default: quick")
    parser.add_argument("--data", default=None, help="data root (default: the profile's)")
    parser.add_argument("--runs", default="runs", help="where trained runs are cached (default: runs/)")
    parser.add_argument("--build", default="_build", help="build folder (default: _build/)")
    parser.add_argument("--only", nargs="*", help="run only these notebooks (e.g. 01 03)")
    parser.add_argument("--no-site", action="store_true", help="execute the notebooks but do not build the site")
    args = parser.parse_args(argv)

    profile = book_profile(args.profile)
    if args.only:  # checked first: a selection that matches nothing must not run everything
        names = [p.name for p in notebook_paths()]
        unmatched = [o for o in args.only if not any(n.startswith(o) for n in names)]
        if unmatched:
            print(f"error: --only {' '.join(unmatched)} matches no notebook; the notebooks are: {', '.join(names)}",
                  file=sys.stderr)
            return 2
    os.chdir(REPO)
    t0 = time.perf_counter()
    data_root = Path(args.data or profile["data_root"])
    build = Path(args.build)
    try:
        ensure_data(profile, data_root)
        paths = notebook_paths()
        if args.only:
            paths = [p for p in paths if any(p.name.startswith(o) for o in args.only)]
        records = execute_notebooks(args.profile, data_root, build / "executed" / args.profile, Path(args.runs), paths)
        html = None if args.no_site else build_site(build / "executed" / args.profile, build / args.profile)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = time.perf_counter() - t0
    for r in records:
        print(f"{r['notebook']:<32} {r['seconds']:8.1f} s")
    print(f"{'total (data, notebooks, site)':<32} {total:8.1f} s")
    if html is not None:
        print(f"site: {html / 'index.html'}")
    return 0


def run_config(profile: dict[str, Any], data_root: str | Path, iterations: int | None = None, seed: int = 0,
               **model: Any):
    """The full config of one of the book's training runs: the profile's preset on its data,
    with ``model`` overrides (e.g. ``fusion="vme"``) and the profile's iteration count."""
    from .config import get_preset

    its = int(iterations or profile["iterations"])
    cfg = get_preset(profile["preset"])
    overrides: dict[str, Any] = {
        "data.root": str(data_root),
        "data.dataset": profile["dataset"],
        "data.split_by": profile["split_by"],
        "train.iterations": its,
        "train.seed": seed,
        "train.val_every": max(its // 4, 1),
        "train.ckpt_every": max(its // 4, 1),
    }
    overrides.update({f"model.{k}": v for k, v in model.items()})
    return cfg.override(overrides)
