"""The book's profiles (restr.config.BookProfile) and book.run_config."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from restr.book import models
from restr.book import runner as book
from restr.config import BOOK_PROFILES, BookProfile, ConfigError, SynthData, get_book_profile, get_preset


def test_registry_and_lookup():
    assert list(BOOK_PROFILES) == ["smoke", "quick", "full", "paper"]
    for name, prof in BOOK_PROFILES.items():
        assert isinstance(prof, BookProfile) and prof.name == name
        assert book.book_profile(name) is prof is get_book_profile(name)
        get_preset(prof.preset)  # every profile names a preset that exists
    with pytest.raises(ConfigError, match="unknown book profile 'fast'; choose one of: smoke, quick, full, paper"):
        get_book_profile("fast")


def test_profiles_are_frozen_and_derived():
    quick, full = BOOK_PROFILES["quick"], BOOK_PROFILES["full"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.iterations = 1
    differ = {f.name for f in dataclasses.fields(BookProfile) if getattr(quick, f.name) != getattr(full, f.name)}
    assert differ == {"name", "variant_iterations", "grid_eval_expressions"}
    assert full.variant_iterations == quick.iterations and full.grid_eval_expressions is None
    assert BOOK_PROFILES["paper"].synth is None  # real data only: never generated


def test_run_config_takes_the_profile_values(tmp_path):
    prof = BOOK_PROFILES["smoke"]
    cfg = models.run_config(prof, tmp_path / "data")
    assert cfg.preset == prof.preset
    assert cfg.data.root == str(tmp_path / "data")
    assert (cfg.data.dataset, cfg.data.split_by) == (prof.dataset, prof.split_by)
    assert cfg.train.iterations == prof.iterations and cfg.train.seed == 0
    assert cfg.train.val_every == prof.iterations // 12 and cfg.train.ckpt_every == prof.iterations // 4
    # the rest is the preset's
    base = get_preset(prof.preset)
    assert cfg.model == base.model
    assert cfg.train.lr == base.train.lr and cfg.train.batch_size == base.train.batch_size


def test_run_config_overrides_and_hash(tmp_path):
    prof = BOOK_PROFILES["quick"]
    main = models.run_config(prof, "data/synthref")
    assert models.run_config(prof, "data/synthref").run_key() == main.run_key()  # a function of its arguments
    variant = models.run_config(prof, "data/synthref", iterations=prof.variant_iterations, seed=2,
                              fusion="vme", shared=True)
    its = prof.variant_iterations
    assert variant.train.iterations == its
    assert variant.train.val_every == its // 12 and variant.train.ckpt_every == its // 4
    assert variant.train.seed == 2 and variant.model.fusion == "vme" and variant.model.shared
    assert variant.model.dim == main.model.dim  # untouched fields stay
    hashes = {
        main.run_key(),
        variant.run_key(),
        models.run_config(prof, "data/synthref", seed=1).run_key(),
        models.run_config(prof, "data/synthref", fusion="ime").run_key(),
        models.run_config(prof, "data/synthref", iterations=prof.iterations + 1).run_key(),
        models.run_config(prof, "elsewhere").run_key(),
        models.run_config(BOOK_PROFILES["full"], "data/synthref").run_key(),
    }
    # every change but the last gives another run; full's main run is quick's (same preset, length, data)
    assert len(hashes) == 6 and models.run_config(BOOK_PROFILES["full"], "data/synthref").run_key() == main.run_key()
    with pytest.raises(ConfigError, match="model.no_such_field"):
        models.run_config(prof, "data/synthref", no_such_field=1)


def test_ensure_data_generates_once_and_refuses_real_data(tmp_path):
    tiny = dataclasses.replace(BOOK_PROFILES["smoke"], synth=SynthData(seed=1, num_images=8))
    root = book.ensure_data(tiny, tmp_path / "synth")
    refs = root / "synthref" / "refs(unc).p"
    assert refs.is_file()
    stamp = refs.stat().st_mtime_ns
    book.ensure_data(tiny, tmp_path / "synth")
    assert refs.stat().st_mtime_ns == stamp  # there already: not written again
    with pytest.raises(book.BookError, match="needs the real refcocog download"):
        book.ensure_data(BOOK_PROFILES["paper"], tmp_path / "nothing")


def test_notebook_paths_are_relative_inside_the_book(tmp_path):
    nb_dir = book.REPO / "notebooks"
    assert book.notebook_path_param(book.REPO / "data" / "synthref", nb_dir) == "../data/synthref"
    assert book.notebook_path_param(book.REPO / "runs", nb_dir) == "../runs"
    assert book.notebook_path_param(tmp_path / "data", nb_dir) == str((tmp_path / "data").resolve())


def test_summary_names_every_notebook_and_the_site(tmp_path):
    records = [{"notebook": "01_a.ipynb", "seconds": 75.0}, {"notebook": "02_b.ipynb", "seconds": 3725.0}]
    html = tmp_path / "out" / "html"
    text = book.summary(records, {"site": 20.0, "total": 3820.0}, html, tmp_path / "out")
    lines = text.splitlines()
    assert lines[1].split() == ["01_a.ipynb", "1:15"] and lines[2].split() == ["02_b.ipynb", "1:02:05"]
    assert lines[3].split() == ["site", "0:20"]
    index = (html / "index.html").resolve()
    assert f"site: {index}" in text and f"open: {index.as_uri()}" in text
    assert f"python -m restr book --serve --build {tmp_path / 'out'}" in text
    assert "--build" not in book.summary(records, {}, Path("_build/html"), Path("_build"))
    assert "site:" not in book.summary(records, {}, None, Path("_build"))
