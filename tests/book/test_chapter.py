"""restr.book.chapter: one call opens a chapter; a chapter's configs are a function of its parameters."""
from __future__ import annotations

import json
import os
from pathlib import Path

import papermill as pm
import pytest

from restr.book import chapter, runner
from restr.book.models import model_config
from restr.config import BOOK_PROFILES, ConfigError
from restr.utils.files import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture
def no_data(monkeypatch):
    """setup() without generating a data set: the folders it would fill are recorded."""
    asked = []
    monkeypatch.setattr(chapter, "ensure_data", lambda prof, root: asked.append((prof.name, root)))
    return asked


def test_data_root_defaults_to_the_profile_s_data(monkeypatch, no_data):
    monkeypatch.chdir(REPO / "notebooks")
    for name, expected in (("smoke", "../_build/data/synthref-smoke"), ("quick", "../data/synthref")):
        assert BOOK_PROFILES[name].data_root == expected[3:]
        ch = chapter.open_chapter(name)
        assert ch.data_root == expected and ch.config("main").data.root == expected
    assert no_data == [("smoke", Path("../_build/data/synthref-smoke")), ("quick", Path("../data/synthref"))]
    # the same config the batch run's parameters ask for: the run cache finds the same runs
    nb_dir = REPO / "notebooks"
    params = runner.notebook_parameters(nb_dir / "x.ipynb", "quick", REPO / "data" / "synthref", REPO / "runs", {})
    assert chapter.open_chapter("quick", params["data_root"]).config("main").run_key() == \
        model_config(BOOK_PROFILES["quick"], "../data/synthref", "main").run_key()


def test_overrides_are_a_parameter_not_the_environment(no_data):
    before = dict(os.environ)
    ch = chapter.open_chapter("smoke", "data", overrides={"train.iterations": 7, "model.decoder": False})
    assert os.environ == before
    cfg = ch.config("table3-vme", seed=0)
    assert cfg.train.iterations == 7 and cfg.model.decoder is False and cfg.model.fusion == "vme"
    assert chapter.open_chapter("smoke", "data").config("table3-vme").train.iterations != 7  # nothing left behind
    with pytest.raises(ConfigError, match="no_such_field"):
        chapter.open_chapter("smoke", "data", overrides={"train.no_such_field": 1})
    assert runner.check_book_overrides({"train.iterations": "9"}, "tiny") == {"train.iterations": "9"}
    with pytest.raises(ConfigError):
        runner.check_book_overrides({"model.fusion": "nope"}, "tiny")


def test_random_seed_seeds_the_chapter_not_the_models(no_data):
    import torch

    a = chapter.open_chapter("smoke", "data", random_seed=3)
    first = torch.rand(3)
    b = chapter.open_chapter("smoke", "data", random_seed=3)
    assert torch.equal(first, torch.rand(3))
    assert a.config("main").run_key() == b.config("main").run_key()
    assert chapter.open_chapter("smoke", "data", random_seed=4).config("main").train.seed == a.config("main").train.seed


def test_every_notebook_declares_what_the_batch_run_sets():
    params = runner.notebook_parameters(NOTEBOOKS[0], "smoke", REPO / "data", REPO / "runs", {"train.iterations": 3})
    assert params["overrides"] == {"train.iterations": 3}
    for nb in NOTEBOOKS:
        declared = pm.inspect_notebook(str(nb))
        missing = {"profile", "data_root", "runs_dir", "overrides", "random_seed"} - set(declared)
        assert not missing, f"{nb.name}: no {missing} parameter"
        assert "seed" not in declared, f"{nb.name}: the old ambiguous `seed` parameter"
        source = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        assert "os.environ" not in source and "RESTR_" not in source and "open_chapter(profile, " in source, nb.name
