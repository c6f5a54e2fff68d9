"""restr.book.analysis's table functions (the chapters' former pandas cells), on frames checked by hand."""
from __future__ import annotations

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
