"""restr.book.interim: the claims read from the campaign's runs so far, with the book's rules."""
from __future__ import annotations

import pytest

from restr.book import interim
from restr.book.verdict import INCONCLUSIVE, REPRODUCED

from test_claims import FLOOR, arm


@pytest.fixture
def trained(monkeypatch):
    """The campaign's trained arms, by model name (the rest untrained); no data set needed."""
    have: dict[str, object] = {}
    asked: list[str] = []

    def trained_arm(profile, data_root, name, runs_dir, label):
        asked.append(name)
        return have.get(name)

    monkeypatch.setattr(interim, "trained_arm", trained_arm)
    monkeypatch.setattr(interim, "ensure_data", lambda profile, root: None)
    monkeypatch.setattr(interim, "all_objects_scores", lambda scores, *a, **k: FLOOR)
    return have, asked


def test_a_claim_is_read_once_each_of_its_arms_has_a_seed_and_says_what_waits(trained):
    have, asked = trained
    for name, quality in (("table3-cme", 0.60), ("table3-vme", 0.55), ("table3-ime", 0.45),
                          ("table3-cme-dagger", 0.60)):
        have[name] = arm(quality, n=1, spread=0.01, iterations=9000)
    have["main"] = arm(0.62, n=1, iterations=9000)
    report = interim.interim_readings(samples=300)
    table = report.readings.set_index("claims of")
    fusion = table.loc["Table 3(b): the fusion variants"]
    assert list(fusion["the parts say"]) == [REPRODUCED, REPRODUCED]  # the ranking, and CME-dagger within a point
    assert list(fusion["reading"]) == [REPRODUCED, REPRODUCED]
    assert fusion["seeds trained"].iloc[0] == "table3-vme 1/3, table3-ime 1/3, table3-cme 1/3, table3-cme-dagger 1/3"
    assert fusion["ours (95 % interval)"].iloc[0].startswith("CME 59.8 [")  # 0.60 floored to whole pixels
    assert fusion["parts"].iloc[0].startswith("CME - VME (IoU points) +5.0")  # each part, its interval, its outcome
    # the other claims wait, each naming its untrained arms; a model shared by two claims is looked up once
    assert table.loc["Table 2: accuracy by expression length", "the parts say"] == "waiting for table2-conv"
    # table4-4L is table3-cme's model (one config): trained with it, and never looked up under its other name
    assert table.loc["Table 4: fusion depth", "the parts say"] == "waiting for table4-2L, table4-6L"
    assert "table4-4L 1/3" in table.loc["Table 4: fusion depth", "seeds trained"] and "table4-4L" not in asked
    assert table.loc["M3Att, Tables I and II", "seeds trained"].startswith("m3att 0/3, m3att-generic 0/3")
    assert len(asked) == len(set(asked))
    # each comparison whose two arms are trained is read along the budget, the rest are not
    assert list(report.trajectory.comparison) == ["CME - VME", "CME - IME", "VME - IME", "CME† - VME", "CME† - IME",
                                                  "CME† - CME", "table4-4L-dec - table4-4L"]  # main - table3-cme
    assert report.trajectory.set_index("comparison").loc["CME - IME", "at the end"] == 0  # the same curves
    text = interim.format_readings(report)
    assert text.startswith("Interim readings") and "not verdicts" in text and "waiting for table2-conv" in text
    assert "Each comparison along the budget" in text
    # each trained model once along the budget by what the expression needs (the test's logs hold no kinds)
    assert report.by_kind.empty and "by what the expression needs" not in text


def test_a_run_still_learning_keeps_its_claim_inconclusive_whatever_the_parts_say(trained):
    have, _ = trained
    for name, quality in (("table3-cme", 0.60), ("table3-vme", 0.55), ("table3-ime", 0.45),
                          ("table3-cme-dagger", 0.60)):
        have[name] = arm(quality, n=1, spread=0.01, iterations=9000, rise=3.0)
    readings = interim.interim_readings(samples=300).readings
    fusion = readings.set_index("claims of").loc["Table 3(b): the fusion variants"]
    assert fusion["the parts say"].iloc[0] == REPRODUCED
    assert fusion["reading"].iloc[0] == f"{INCONCLUSIVE} (still learning)"


def test_an_untrained_model_is_never_trained_to_read_a_claim(monkeypatch, tmp_path):
    from restr.book.runner import book_profile

    monkeypatch.setattr(interim, "find", lambda cfg: None)  # not in the zoo
    monkeypatch.setattr(interim, "run_dir_for", lambda cfg, runs_dir: tmp_path / "runs" / "a-run")
    monkeypatch.setattr(interim, "run_status", lambda run_dir: {"finished": False, "exists": True})  # under way
    monkeypatch.setattr(interim, "get_run", lambda *a, **k: pytest.fail("get_run would train"))
    profile = book_profile("converged")
    assert interim.trained_arm(profile, tmp_path / "data", "table4-6L", tmp_path / "runs", "6 layers") is None
