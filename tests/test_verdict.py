"""restr.verdict: the rules on constructed intervals, the resampler on constructed scores."""
from __future__ import annotations

import numpy as np
import pytest

from restr.analysis import bootstrap_ci
from restr.verdict import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, RULES, Estimate, Resampler, Stat, all_of,
                           cum_iou, greater, judge, mean_of, missing_part, part, relative_gain, within)


def est(lo, hi, point=None):
    return Estimate((lo + hi) / 2 if point is None else point, lo, hi)


# ----------------------------------------------------------------------------------------
# rules

@pytest.mark.parametrize("lo, hi, label", [
    (0.1, 2.0, REPRODUCED), (-2.0, -0.1, NOT_REPRODUCED), (-1.0, 1.0, INCONCLUSIVE),
    (0.0, 1.0, INCONCLUSIVE),  # touching 0 is not above it
    (-1.0, 0.0, INCONCLUSIVE), (0.0, 0.0, INCONCLUSIVE),  # two dead models: nothing to read
    (float("nan"), float("nan"), INCONCLUSIVE),
])
def test_greater(lo, hi, label):
    assert greater(est(lo, hi)) == label


@pytest.mark.parametrize("lo, hi, label", [
    (-0.4, 0.3, REPRODUCED), (-0.5, 0.5, REPRODUCED),  # the margin itself is inside
    (0.6, 1.5, NOT_REPRODUCED), (-2.0, -0.51, NOT_REPRODUCED),
    (-0.2, 0.9, INCONCLUSIVE), (-1.0, 1.0, INCONCLUSIVE), (0.4, 0.7, INCONCLUSIVE),
    (float("nan"), 0.1, INCONCLUSIVE),
])
def test_within(lo, hi, label):
    assert within(est(lo, hi), 0.5) == label


def test_all_of():
    assert all_of([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert all_of([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert all_of([]) == INCONCLUSIVE


def test_judge_combines_parts_then_the_learned_and_testable_rules():
    good = [part("a - b", est(1.0, 2.0), 1.5), part("c - d", est(-0.2, 0.2), 0.0, rule="within", margin=0.5)]
    v = judge(9, "a beats b", "1.5", "ours", good, learned={"a": est(5, 9), "b": est(1, 3)})
    assert (v.label, v.measured) == (REPRODUCED, REPRODUCED)
    assert [p.label for p in v.parts] == [REPRODUCED, REPRODUCED] and v.parts[1].rule == "within 0.5"
    dead = judge(9, "a beats b", "1.5", "ours", good, learned={"a": est(5, 9), "b": est(-1, 3)})
    assert (dead.label, dead.measured) == (INCONCLUSIVE, REPRODUCED)
    assert dead.why.startswith("b did not learn")
    two_dead = judge(9, "a beats b", "1.5", "ours", good, learned={"a": est(-1, 9), "b": est(-1, 3)})
    assert two_dead.why.startswith("a and b did not learn") and "a - b +1.50 [+1.00, +2.00]: reproduced" in two_dead.why
    untestable = judge(9, "a beats b", "1.5", "ours", good, untestable="our data lack it")
    assert untestable.label == INCONCLUSIVE and untestable.measured == REPRODUCED
    assert "our data lack it" in untestable.why and "'reproduced'" in untestable.why
    refuted = judge(9, "a beats b", "1.5", "ours", [part("a - b", est(-3, -1), 1.5), missing_part("x", 1.0, "n/a")])
    assert refuted.label == NOT_REPRODUCED and "x: inconclusive (n/a)" in refuted.why
    assert set(refuted.row()) == {"claim", "paper", "ours (95 % interval)", "verdict", "why"}
    with pytest.raises(ValueError, match="unknown rule"):
        part("a", est(0, 1), None, rule="less")


def test_the_rules_are_stated():
    assert set(RULES) == {"greater", "within", "learned", "hits", "all", "testable"}
    assert all(len(text) > 40 for text in RULES.values())


def test_estimate_format():
    assert est(-0.25, 2.5, 1.0).fmt(1, signed=True) == "+1.0 [-0.2, +2.5]"  # round half to even
    assert str(Estimate(31.234, 29.0, 33.5)) == "31.2 [29.0, 33.5]"


# ----------------------------------------------------------------------------------------
# the resampler

def scores(rng, n, quality):
    """Per-expression columns of a model whose IoU is about ``quality``."""
    union = rng.integers(50, 500, size=n).astype(float)
    inter = np.floor(union * np.clip(rng.normal(quality, 0.1, size=n), 0, 1))
    return {"intersection": inter, "union": union, "iou": inter / union}


def test_one_seed_is_the_bootstrap_over_expressions():
    rng = np.random.default_rng(0)
    cols = scores(rng, 200, 0.4)
    s = Resampler(200, samples=2000, seed=1).stat([cols], cum_iou())
    point, lo, hi = bootstrap_ci(cols["intersection"], cols["union"], samples=2000, seed=1)
    e = s.estimate()
    assert e.point == pytest.approx(100 * point)
    # the same statistic resampled with another generator: the same interval up to its noise
    assert e.lo == pytest.approx(100 * lo, abs=0.6) and e.hi == pytest.approx(100 * hi, abs=0.6)
    assert e.lo < e.point < e.hi


def test_seeds_widen_the_interval_and_identical_seeds_do_not():
    rng = np.random.default_rng(0)
    a = scores(rng, 300, 0.3)
    b = {k: v.copy() for k, v in a.items()}
    b["intersection"] = np.minimum(b["union"], b["intersection"] + 0.3 * b["union"])  # a much better seed
    rs = Resampler(300, samples=1000, seed=0)
    one = rs.stat([a], cum_iou()).estimate()
    same = rs.stat([a, a], cum_iou()).estimate()
    two = rs.stat([a, b], cum_iou()).estimate()
    assert same.point == pytest.approx(one.point) and same.hi - same.lo == pytest.approx(one.hi - one.lo)
    iou_a, iou_b = (100 * c["intersection"].sum() / c["union"].sum() for c in (a, b))
    assert two.point == pytest.approx((iou_a + iou_b) / 2)
    # replicates that drew seed a twice or seed b twice: the interval reaches both seeds' values
    assert two.lo < iou_a + 2 and two.hi > iou_b - 2
    assert two.hi - two.lo > 3 * (one.hi - one.lo)


def test_differences_are_paired_over_expressions():
    rng = np.random.default_rng(2)
    b = scores(rng, 400, 0.4)
    a = dict(b, intersection=np.minimum(b["union"], b["intersection"] + 0.01 * b["union"]))  # 1 point better
    rs = Resampler(400, samples=1000, seed=0)
    sa, sb = rs.stat([a], cum_iou()), rs.stat([b], cum_iou())
    diff = (sa - sb).estimate()
    assert diff.point == pytest.approx(1.0, abs=0.05)
    assert greater(diff) == REPRODUCED  # each model's own interval is far wider than 1 point ...
    ea, eb = sa.estimate(), sb.estimate()
    assert ea.lo < eb.hi  # ... and they overlap: unpaired intervals could not separate them
    assert diff.hi - diff.lo < 0.2 * (ea.hi - ea.lo)


def test_metrics_and_relative_gain():
    cols = {"intersection": np.array([1.0, 3.0]), "union": np.array([2.0, 4.0]), "hit": np.array([1.0, 0.0])}
    rs = Resampler(2, samples=50, seed=0)
    assert rs.stat([cols], cum_iou()).point == pytest.approx(100 * 4 / 6)
    assert rs.stat([cols], mean_of("hit")).point == pytest.approx(50.0)
    grouped = {"intersection|x": np.array([0.0, 3.0]), "union|x": np.array([0.0, 4.0])}
    assert rs.stat([grouped], cum_iou("x")).point == pytest.approx(75.0)
    on, off = Stat(12.0, np.array([12.0, 0.0, 4.0])), Stat(8.0, np.array([8.0, 0.0, 0.0]))
    g = relative_gain(on, off)
    assert g.point == pytest.approx(0.2) and list(g.reps) == pytest.approx([0.2, 0.0, 1.0])


def test_resampler_refuses_what_it_cannot_use():
    rs = Resampler(3, samples=10)
    with pytest.raises(ValueError, match="one value per expression"):
        rs.stat([{"intersection": np.ones(4), "union": np.ones(4)}], cum_iou())
    with pytest.raises(ValueError, match="at least one seed"):
        rs.stat([], cum_iou())
    with pytest.raises(ValueError, match="different resamplers"):
        _ = Stat(1.0, np.zeros(10)) - Stat(1.0, np.zeros(5))
    with pytest.raises(ValueError, match="no expressions"):
        Resampler(0)
