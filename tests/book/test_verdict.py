"""restr.book.verdict: the rules on constructed intervals, the resampler on constructed scores."""
from __future__ import annotations

import numpy as np
import pytest

from restr.book.analysis import bootstrap_ci
from restr.book.verdict import (BIASED_SHARE, INCONCLUSIVE, MARGINAL, NOT_REPRODUCED, REPRODUCED, RULES, ArmCheck,
                                Estimate, Resampler, Stat, Statement, above, all_of, convergence, cum_iou, greater,
                                judge, mean_of, missing_part, part, relative_gain, within)


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
def test_within(lo, hi, label):  # the marginal rule
    assert within(est(lo, hi), 0.5) == label


def test_all_of():
    assert all_of([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert all_of([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert all_of([]) == INCONCLUSIVE


@pytest.mark.parametrize("lo, hi, threshold, label", [
    (1.1, 3.0, 1.0, REPRODUCED), (-1.0, 0.9, 1.0, NOT_REPRODUCED), (0.5, 1.5, 1.0, INCONCLUSIVE),
    (1.0, 2.0, 1.0, INCONCLUSIVE),  # touching the threshold is not above it
    (-0.9, 0.5, -1.0, REPRODUCED), (-3.0, -1.1, -1.0, NOT_REPRODUCED), (81.0, 90.0, 80.0, REPRODUCED),
    (float("nan"), 2.0, 1.0, INCONCLUSIVE),
])
def test_above(lo, hi, threshold, label):
    assert above(est(lo, hi), threshold) == label


def test_named_rules_use_the_protocols_margins():
    assert MARGINAL == 1.0 and BIASED_SHARE == 80.0
    fairly = part("4 - 2", est(1.2, 3.0), 4.69, rule="fairly")
    assert (fairly.rule, fairly.label) == ("above +1", REPRODUCED)
    # a real but small gain is not "fairly" an increase
    assert part("4 - 2", est(0.2, 0.8), 4.69, rule="fairly").label == NOT_REPRODUCED
    marginal = part("6 - 4", est(-0.6, 0.9), 0.03, rule="marginal")
    assert (marginal.rule, marginal.label) == ("within ±1", REPRODUCED)
    assert part("6 - 4", est(1.5, 2.5), 0.03, rule="marginal").label == NOT_REPRODUCED
    loss = part("shared - unshared", est(-0.8, 3.0), -0.41, rule="marginal loss")
    assert (loss.rule, loss.label) == ("above -1", REPRODUCED)  # a gain is no degradation at all
    assert part("shared - unshared", est(-2.5, -1.2), -0.41, rule="marginal loss").label == NOT_REPRODUCED
    share = part("a_v", est(85.0, 92.0), 94.5, rule="share")
    assert (share.rule, share.label) == ("above 80 %", REPRODUCED)
    assert part("a_v", est(55.0, 60.0), 94.5, rule="share").label == NOT_REPRODUCED
    assert part("x", est(0.1, 0.4), None, rule="marginal", margin=0.5).rule == "within ±0.5"
    with pytest.raises(ValueError, match="unknown rule"):
        part("a", est(0, 1), None, rule="less")


def test_convergence_fits_the_last_fifth():
    steps = np.arange(125, 1501, 125)
    flat = convergence(steps, 40 + 0.0 * steps, 1500)
    assert flat.passed and flat.rise == pytest.approx(0.0, abs=1e-9) and flat.points == 3  # 1250, 1375, 1500
    # 1 point every 100 steps: +3 over the last 300 steps, whatever happened before
    rising = convergence(steps, 10 + steps / 100, 1500)
    assert not rising.passed and rising.rise == pytest.approx(3.0)
    # just under the margin passes, just over it fails
    assert convergence(steps, steps * 0.9 / 300, 1500).passed
    assert not convergence(steps, steps * 1.1 / 300, 1500).passed
    # noise around a plateau: the fitted line, not the last two points
    noisy = convergence([1250, 1375, 1500], [42.2, 41.7, 42.8], 1500)
    assert noisy.rise == pytest.approx(np.polyfit([1250, 1375, 1500], [42.2, 41.7, 42.8], 1)[0] * 300)
    # too few validations in the last fifth: not shown to have converged
    sparse = convergence([750, 1500], [40.0, 40.0], 1500)
    assert not sparse.passed and sparse.points == 1 and "fewer than 3" in sparse.fmt()


def checked(name, over=(5.0, 9.0), rises=(0.2,), iterations=1500):
    steps = np.array([1250, 1375, 1500])
    curves = tuple(convergence(steps, 40 + r * (steps - 1250) / 300, iterations) for r in rises)  # fitted rise r
    return ArmCheck(name, iterations, 64, tuple(range(len(rises))), est(*over), curves)


def test_judge_combines_parts_then_the_gates():
    good = [part("a - b", est(1.0, 2.0), 1.5), part("c - d", est(-0.2, 0.2), 0.0, rule="marginal")]
    st = Statement("a beats b", "a is better than b", "Sec. 9")
    v = judge("claim9", st, "1.5", "ours", good, [checked("a"), checked("b")])
    assert (v.label, v.measured, v.tag, v.text) == (REPRODUCED, REPRODUCED, "", REPRODUCED)
    assert (v.quote, v.source, v.reading) == ("a is better than b", "Sec. 9", False)
    assert v.budgets() == ("a: 1,500 steps x 64 = 96,000 expressions, 1 seed; "
                           "b: 1,500 steps x 64 = 96,000 expressions, 1 seed")
    dead = judge("claim9", st, "1.5", "ours", good, [checked("a"), checked("b", over=(-1, 3))])
    assert (dead.label, dead.measured, dead.text) == (INCONCLUSIVE, REPRODUCED, "inconclusive (did not learn)")
    assert dead.why.startswith("b did not learn (not above the language-blind floor")
    learning = judge("claim9", st, "1.5", "ours", good, [checked("a", rises=(0.2, 2.5, 0.4)), checked("b")])
    assert learning.text == "inconclusive (still learning)" and learning.measured == REPRODUCED
    assert "a rose +0.2, +2.5, +0.4 over the last fifth of its 1,500 steps" in learning.why
    assert "'reproduced'" in learning.why and "a - b +1.50 [+1.00, +2.00]: reproduced" in learning.why
    # every gate is listed, the first one names the verdict
    both = judge("claim9", st, "1.5", "ours", good, [checked("a", rises=(2.0,)), checked("b", over=(-1, 3))])
    assert both.tag == "did not learn" and "still learning" in both.why
    untestable = judge("claim9", st, "1.5", "ours", good, [checked("a")], untestable="our data lack it")
    assert untestable.text == "inconclusive (not testable here)" and "our data lack it" in untestable.why
    refuted = judge("reading9", "a beats b", "1.5", "ours", [part("a - b", est(-3, -1), 1.5),
                                                              missing_part("x", 1.0, "n/a")])
    assert refuted.label == NOT_REPRODUCED and "x: inconclusive (n/a)" in refuted.why and refuted.reading
    assert set(refuted.row()) == {"claim", "the paper says", "paper", "models (budget, seeds)",
                                  "ours (95 % interval)", "verdict", "why"}


def test_the_rules_are_stated():
    assert set(RULES) == {"greater", "fairly", "marginal", "marginal loss", "share", "learned", "converged", "hits",
                          "all", "testable"}
    assert all(len(text) > 40 for text in RULES.values())
    assert "every object" in RULES["learned"] and "last fifth" in RULES["converged"]


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
