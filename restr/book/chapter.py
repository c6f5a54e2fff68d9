"""One call at the top of every chapter: ``ch = open_chapter(profile, data_root, runs_dir, overrides, random_seed)``.

The chapter's parameters cell holds everything its results depend on (``python -m restr
book`` sets them with papermill); :func:`open_chapter` resolves them once (the profile, its data,
generated if missing, the random state) and returns a :class:`Chapter` that hands the
cells the book's models by name: ``ch.config("main")``, ``ch.run("table3-vme", seed=1)``,
``ch.arm("main", label=...)``. Every config comes from :func:`restr.book.models.model_config`
with the chapter's ``overrides``, so it is a pure function of the parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import BookProfile, Config
from ..utils.files import REPO
from ..zoo.cache import get_run
from .claims import Arm
from .models import arm, model_config, model_seeds, requests
from .runner import book_profile, ensure_data, notebook_path_param


@dataclass(frozen=True)
class Chapter:
    """What a chapter's cells need: the profile, where its data and runs are, the ``--set`` overrides."""

    profile: BookProfile
    data_root: str  # as the kernel reads it (relative to the notebook's folder when in the repository)
    runs_dir: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    random_seed: int = 0  # the chapter's own randomness (bootstraps, samples), not a training seed

    def config(self, name: str, seed: int | None = None) -> Config:
        """The training config of the book's model ``name`` (restr.book.models) with ``seed``."""
        return model_config(self.profile, self.data_root, name, seed=seed, overrides=self.overrides)

    def run(self, name: str, seed: int | None = None) -> Path:
        """The run folder of model ``name`` with ``seed``: cached, taken from the zoo, or trained."""
        return get_run(self.config(name, seed), runs_dir=self.runs_dir)

    def seeds(self, name: str) -> tuple[int, ...]:
        """The seeds the book trains model ``name`` with."""
        return model_seeds(self.profile, name)

    def arm(self, name: str, label: str | None = None, max_expressions: int | None = None,
            level: str = "pixel") -> Arm:
        """Model ``name`` as an arm of a claim: every seed's run scored on the evaluation split."""
        return arm(self.profile, self.data_root, name, self.runs_dir, label=label,
                   max_expressions=max_expressions, level=level, overrides=self.overrides)

    def asks_for(self, name: str) -> bool:
        """Whether this profile's book holds model ``name`` (some arms are in the larger profiles only)."""
        return name in [r.name for r in requests(self.profile)]


def open_chapter(profile: str, data_root: str | None = None, runs_dir: str = "../runs",
          overrides: Mapping[str, Any] | None = None, random_seed: int = 0) -> Chapter:
    """The chapter's parameters resolved: ``data_root`` None means the profile's own data
    (``BookProfile.data_root``, relative to the repository); the data set is generated if
    missing; torch's random state is seeded with ``random_seed``; the overrides are checked
    against the profile's preset (an unknown field fails here, by name)."""
    prof = book_profile(profile)
    if data_root is None:
        data_root = notebook_path_param(REPO / prof.data_root, Path.cwd())
    overrides = dict(overrides or {})
    model_config(prof, data_root, "main", overrides=overrides)  # bad overrides fail before any work
    ensure_data(prof, Path(data_root))
    torch.manual_seed(random_seed)
    return Chapter(prof, str(data_root), str(runs_dir), overrides, random_seed)
