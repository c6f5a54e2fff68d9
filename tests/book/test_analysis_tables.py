"""restr.book.analysis's table functions (the chapters' former pandas cells), on frames checked by hand."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from restr.book import analysis
from restr.book.claims import Arm
from restr.book.models import TABLE3_VARIANTS
from restr.book.paper import TABLE3B


def scores(iou_inter_union):
    return pd.DataFrame([{"sent_id": i, "iou": it / un, "intersection": it, "union": un}
                         for i, (it, un) in enumerate(iou_inter_union)])


def test_scores_by_kind_sums_before_it_divides():
    s = scores([(1, 2), (3, 4), (0, 5), (2, 2)])
    kinds = pd.DataFrame({"sent_id": [0, 1, 2, 3], "kind": ["ordinal", "ordinal", "attributes", "attributes"]})
    t = analysis.scores_by_kind(s, kinds)
    assert list(t.index) == ["attributes", "ordinal"]  # KINDS' order, the absent ones left out
    assert t.loc["ordinal", "cIoU %"] == pytest.approx(100 * 4 / 6)  # (1 + 3) / (2 + 4), not the mean of ratios
    assert t.loc["ordinal", "mean IoU %"] == pytest.approx(100 * (0.5 + 0.75) / 2)
    assert t.loc["attributes", "expressions"] == 2 and t.loc["attributes", "cIoU %"] == pytest.approx(100 * 2 / 7)


def test_programs_and_counts_by_bucket_keep_the_bucket_order():
    tagged = pd.DataFrame({"sent_id": range(5), "bucket": ["1-5", "1-5", "6-7", "6-7", "6-7"],
                           "clauses": [0, 1, 2, 2, 2], "attributes_suffice": [True, True, False, True, False]})
    t = analysis.programs_by_bucket(tagged, ["1-5", "6-7", "8-10"])
    assert list(t.index) == ["1-5", "6-7", "8-10"] and np.isnan(t.loc["8-10", "clauses"])
    assert t.loc["6-7", "attributes_suffice"] == pytest.approx(1 / 3) and t.loc["1-5", "clauses"] == 0.5
    counts = analysis.bucket_counts({"train": np.array([1, 2, 9]), "val": np.array([3])},
                                    lambda n: "short" if n < 5 else "long", ["short", "long"])
    assert counts.loc["short", "train"] == 2 and counts.loc["long", "train"] == 1
    assert np.isnan(counts.loc["long", "val"])


def test_levels_reached_and_the_sweep_table():
    t = analysis.levels_reached({50: {"minutes": 1.25, "expressions": 3200.0}, 70: None})
    assert t.to_dict("records") == [{"level": "50 %", "reached after": "1.2 min, 3200 expressions"},
                                    {"level": "70 %", "reached after": "not reached"}]
    sweep = {"rows": [{"name": "A", "what": "former", "final": {"cum_iou": 0.25, "seconds": 90, "expressions": 640}}]}
    assert analysis.sweep_table(sweep).to_dict("records") == [
        {"row": "A", "change": "former", "val cIoU %": 25.0, "training minutes": 1.5, "expressions": 640}]


def test_arms_summary_averages_the_seeds():
    two = [scores([(1, 2), (1, 1)]), scores([(0, 2), (1, 1)])]
    t = analysis.arms_summary({(4, False): Arm("a", two, [], 300, 16, (0, 1))}, ("layers", "shared"))
    row = t.iloc[0]
    assert (row["layers"], row["shared"], row["seeds"], row["steps"]) == (4, False, 2, 300)
    assert row["IoU"] == pytest.approx(100 * (2 / 3 + 1 / 3) / 2)


def test_table3b_cost_matches_the_paper_s_parameter_counts():
    t = analysis.table3b_cost({name: kw for name, (_, kw) in TABLE3_VARIANTS.items()}, TABLE3B).set_index("encoder")
    assert (t["params (ours) M"] - t["params (paper) M"]).abs().max() < 0.05
    assert t.loc["VME", "MACs (ours) G"] == pytest.approx(2 * t.loc["CME", "MACs (ours) G"], rel=0.1)
    assert (t["MACs below the paper's %"] > 0).all()


def test_converged_sweep_table_reads_the_rule_from_each_rows_curve(tmp_path):
    def row(name, ious, steps=1000):
        points = [{"step": s, "expressions": 64 * s, "seconds": s * 0.5, "cum_iou": v, "mean_iou": v}
                  for s, v in zip(range(100, steps + 1, 100), ious)]
        return {"name": name, "what": name, "config": {"train": {"iterations": steps}}, "curve": points,
                "final": points[-1]}

    flat = [0.1, 0.2, 0.3, 0.35, 0.36, 0.37, 0.38, 0.40, 0.40, 0.40]  # last fifth: steps 800-1000, flat
    rising = [0.1, 0.2, 0.3, 0.35, 0.36, 0.37, 0.38, 0.40, 0.42, 0.44]  # 2 points a 100 steps at the end
    (tmp_path / "a.json").write_text(json.dumps({"expressions": 64000, "rows": [row("final start", flat)]}))
    (tmp_path / "b.json").write_text(json.dumps({"expressions": 64000, "rows": [row("batch 32", rising)]}))
    t = analysis.converged_sweep_table(sorted(tmp_path.glob("*.json")))
    assert list(t.row) == ["batch 32", "final start"] and list(t.arithmetic) == ["unrecorded"] * 2
    batch, final = t.iloc[0], t.iloc[1]
    assert final["val cIoU %"] == pytest.approx(40.0) and final["training minutes"] == pytest.approx(1000 * 0.5 / 60)
    assert final["last-fifth rise (points)"] == pytest.approx(0.0, abs=1e-9) and final["converged"]
    assert batch["last-fifth rise (points)"] == pytest.approx(4.0) and not batch["converged"]
    assert final["doubling test"] == "untested (no run at 2x)" and batch["doubling test"] == "fails (still learning)"
    # the same row at twice the steps: under one point more passes the doubling test, more fails it
    for twice_final, verdict in ((0.405, "passes"), (0.43, "fails (2x scores higher)")):
        (tmp_path / "c.json").write_text(json.dumps({"expressions": 128000, "rows": [row("final start", [
            0.1, 0.2, 0.3, 0.35, 0.36, 0.37, 0.38, 0.40, twice_final, twice_final], steps=2000)]}))
        t = analysis.converged_sweep_table(sorted(tmp_path.glob("*.json"))).set_index(["row", "steps"])
        assert t.loc[("final start", 1000), "gain at 2x steps (points)"] == pytest.approx(100 * twice_final - 40)
        assert t.loc[("final start", 1000), "doubling test"] == verdict
    assert analysis.converged_sweep_table([]).empty


def test_budget_trajectory_reads_each_comparison_at_fractions_of_the_budget():
    def arm(name, ious_by_seed, iterations=600):
        curves = [pd.DataFrame({"step": [100, 200, 300, 400, 500, 600], "IoU": ious}) for ious in ious_by_seed]
        return Arm(name, [], curves, iterations, 64, tuple(range(len(ious_by_seed))))

    # a leads early, b catches up and passes it by the end; c is ahead throughout
    a = arm("a", [[30, 40, 45, 46, 47, 48], [32, 42, 45, 46, 47, 48]])
    b = arm("b", [[20, 35, 44, 48, 50, 52]])
    c = arm("c", [[35, 45, 50, 52, 54, 56]])
    t = analysis.budget_trajectory({"a - b": (a, b), "c - b": (c, b), "missing - b": (None, b)}).set_index("comparison")
    assert list(t.index) == ["a - b", "c - b"]  # an arm not trained is left out
    assert t.loc["a - b", "at 1/6"] == pytest.approx(31 - 20)  # step 100: seeds of a averaged
    assert t.loc["a - b", "at 1/2"] == pytest.approx(45 - 44)  # step 300
    assert t.loc["a - b", "at the end"] == pytest.approx(48 - 52)
    assert t.loc["a - b", "steps read"] == "100 / 300 / 600"
    assert t.loc["a - b", "ranking changes"] and t.loc["a - b", "sign as at the end (at 1/6 / 1/2)"] == "no / no"
    assert not t.loc["c - b", "ranking changes"] and t.loc["c - b", "sign as at the end (at 1/6 / 1/2)"] == "yes / yes"
    early = Arm("early", [], [pd.DataFrame({"step": [2000], "IoU": [30.0]})], 6000, 64, (0,))
    with pytest.raises(ValueError, match="early .seed 0. has no validation at or before step 1000"):
        analysis.curve_at(early, 1 / 6)


def test_kinds_trajectory_reads_each_arm_by_what_the_expression_needs():
    def log(ordinal):  # a training log's validations, each with its cIoU by kind (version 2 data)
        return [{"step": 100 * (i + 1), "split": "val", "cum_iou": 0.5, "mean_iou": 0.5,
                 "kinds": {"attributes": {"n": 5, "cum_iou": 0.6}, "region": {"n": 2, "cum_iou": 0.4},
                           "relation": {"n": 2, "cum_iou": 0.3}, "ordinal": {"n": 1, "cum_iou": v}}}
                for i, v in enumerate(ordinal)]

    def arm(name, *ordinals):
        curves = [analysis.curve_frame([{"step": 10, "loss": 1.0}] + log(o)) for o in ordinals]
        return Arm(name, [], curves, 600, 64, tuple(range(len(ordinals))))

    late = arm("late", [0.0, 0.05, 0.1, 0.5, 0.6, 0.7], [0.0, 0.15, 0.3, 0.5, 0.6, 0.7])  # two seeds
    early = arm("early", [0.4, 0.5, 0.6, 0.65, 0.7, 0.7])
    old = Arm("v1", [], [pd.DataFrame({"step": [100, 300, 600], "IoU": [1.0, 2.0, 3.0]})], 600, 64, (0,))
    t = analysis.kinds_trajectory({"late": late, "early": early, "v1": old, "missing": None}).set_index("arm")
    assert list(t.index) == ["late", "early"]  # a log without kinds, and an untrained arm, are left out
    assert t.loc["late", "ordinal"] == "0 / 20 / 70"  # steps 100, 300, 600; seeds averaged: (10 + 30) / 2
    assert t.loc["early", "ordinal"] == "40 / 60 / 70" and t.loc["early", "attributes"] == "60 / 60 / 60"
    assert list(t.columns) == ["attributes", "region", "relation", "ordinal"]
