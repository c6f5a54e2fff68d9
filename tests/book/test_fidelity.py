"""The fidelity table, its generated page and README block, and the config agree."""
from __future__ import annotations

import json

import pytest

from restr import get_preset
from restr.book import fidelity
from restr.config import RELEASE_OVERRIDES, _coerce


def _option(choice):
    key, value = choice.option.split("=", 1)
    section, name = key.split(".", 1)
    return key, section, name, value


def test_book_page_is_generated_from_the_table():
    assert fidelity.PAGE.read_text() == fidelity.page_markdown(), "run: python -m restr fidelity page"


def test_readme_block_is_generated_from_the_table():
    readme = fidelity.README.read_text()
    assert fidelity.readme_with_block(readme, fidelity.readme_block()) == readme, "run: python -m restr fidelity page"
    assert "book/fidelity.md" in readme and "FIDELITY.md" not in readme


def test_the_fidelity_page_is_in_the_book():
    assert "file: book/fidelity" in (fidelity.REPO / "_toc.yml").read_text()


def test_every_release_override_is_a_row_and_every_row_option_is_real():
    rows = [c for c in fidelity.CHOICES if c.option]
    named = {_option(c)[0] for c in rows}
    assert set(RELEASE_OVERRIDES) <= named, "a release override without a row on the fidelity page"
    paper, release = get_preset("paper"), get_preset("release")
    for c in rows:
        key, section, name, text = _option(c)
        current = getattr(getattr(paper, section), name)  # the field exists
        value = _coerce(text, current, key)
        if c.gives == "release":
            assert getattr(getattr(release, section), name) == value, f"{key}: the release preset sets another value"
            assert current != value, f"{key}: the paper preset already has the release's value"
        else:  # an option that gives the text's form: the paper preset takes the release's
            assert getattr(getattr(release, section), name) == current != value


def test_rows_are_complete():
    kinds = {fidelity.FOLLOWS_TEXT, fidelity.FOLLOWS_RELEASE, fidelity.OURS, fidelity.SAME, fidelity.UNOFFERED}
    for c in fidelity.CHOICES:
        assert c.kind in kinds and c.topic and c.release and c.ours and c.source
        if c.kind in (fidelity.FOLLOWS_TEXT, fidelity.OURS) and c.option:
            assert c.gives == "release"
        if c.kind == fidelity.OURS:
            assert c.why or c.effect, f"{c.topic}: our own choice needs a reason or a measured effect"
        if c.effect.startswith("measure:"):
            key = c.effect.split(":", 1)[1]
            assert key in fidelity.VARIANTS or key == "pos_resize", f"{c.topic}: no variant measures {key}"


def test_measured_effects_are_quoted_from_the_stored_runs(tmp_path):
    runs = {"baseline": {"cum_iou": [0.2, 0.22], "seeds": [0, 1]}, "head": {"cum_iou": [0.3], "seeds": [0]}}
    measured = {"runs": runs, "settings": {"iterations": 600, "batch_size": 16, "val_expressions": 1000,
                                           "minutes_per_run": 3.0}, "commands": ["python -m restr fidelity measure"]}
    page = fidelity.page_markdown(measured)
    assert ("cIoU 30.0 % against the baseline's 20.0 / 22.0 %; +9.0 points on the mean, beyond the baseline seeds' "
            "spread (2.0)") in page
    assert "not measured yet" in page  # rows whose variant is not in these runs
    stored = fidelity.load_measured()
    if stored:  # the committed measurements name their seeds and commands
        assert all("seeds" in r and len(r["seeds"]) == len(r["cum_iou"]) for r in stored["runs"].values())
        assert stored["commands"] and json.dumps(stored)


@pytest.mark.parametrize("variant", sorted(fidelity.VARIANTS))
def test_measured_variants_are_valid_tiny_configs(variant):
    get_preset("tiny").override(fidelity.VARIANTS[variant])
    get_preset("tiny").override(fidelity.tiny_release_overrides())
