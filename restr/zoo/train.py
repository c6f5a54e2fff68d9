"""``python -m restr zoo train``: train what a book profile needs and the zoo lacks, and add it.

The one part of the zoo that knows the book: which models a profile's notebooks ask for
(:mod:`restr.book_models`) and where its data comes from (:mod:`restr.book`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..book import book_profile, ensure_data
from ..book_models import book_models
from ..config import Config
from ..data.fingerprint import data_fingerprint, short
from ..utils.files import read_jsonl
from .cache import get_run
from .manifest import ZooError, add_to_zoo, current_identity, entry_name, find, identity, read_manifest, zoo_folder


def zoo_train(profile_name: str = "quick", only: list[str] | None = None, seeds: list[int] | None = None,
              retrain: bool = False, runs_dir: str = "runs", zoo_dir: str | os.PathLike | None = None) -> list[str]:
    """Train what the book's ``profile_name`` needs and the zoo lacks (``retrain``: every
    model asked for, again), and add each to the zoo. Returns the names added."""
    profile = book_profile(profile_name)
    data_root = Path(profile.data_root)
    ensure_data(profile, data_root)
    models = book_models(profile)
    unknown = set(only or []) - {m.name for m in models}
    if unknown:
        raise ZooError(f"no book model named {sorted(unknown)}; the {profile_name} book's models are: "
                       f"{', '.join(m.name for m in models)}")
    added = []
    for m in models:
        if only and m.name not in only:
            continue
        for seed in [s for s in m.seeds if not seeds or s in seeds]:
            cfg, name = m.config(profile, data_root, seed), entry_name(m.name, seed, profile_name)
            if not retrain and find(cfg, zoo_dir) is not None:
                print(f"zoo: {name} is in the zoo already", file=sys.stderr)
                continue
            command = f"python -m restr zoo train --profile {profile_name} --only {m.name} --seeds {seed}"
            if not retrain:
                refuse_replacing(name, cfg, command, zoo_dir)
            print(f"zoo: training {name} ({cfg.train.iterations} steps)", file=sys.stderr)
            run = get_run(cfg, Path(runs_dir) / "zoo" if retrain else runs_dir, use_zoo=False)
            seconds = max((r.get("elapsed_s") or 0.0 for r in read_jsonl(Path(run) / "metrics.jsonl")
                           if r.get("split")), default=0.0)
            add_to_zoo(run, name, command, seconds, zoo_dir, profile=profile_name)
            added.append(name)
    return added


def refuse_replacing(name: str, cfg: Config, command: str, zoo_dir: str | os.PathLike | None = None) -> None:
    """A :class:`ZooError` if the zoo holds a model called ``name`` of another config (or data)
    than ``cfg``: training ``cfg`` (by ``command``) would replace it; ``--retrain`` asks for that."""
    entry = next((e for e in read_manifest(zoo_dir) if e["name"] == name), None)
    if entry is None:
        return
    try:
        same = current_identity(entry) == identity(cfg, short(data_fingerprint(cfg.data)))
    except ZooError:
        same = False  # its config no longer loads: it is another config now
    if not same:
        raise ZooError(f"the zoo already holds a model called {name!r} ({zoo_folder(zoo_dir) / entry['file']}) of "
                       f"another config or data (trained by `{entry.get('command', '?')}`); not replacing it with this "
                       f"config's model. To replace it: `{command} --retrain`")
