"""restr.book.analysis.bootstrap_ci against answers computed another way."""
from __future__ import annotations

import math

import numpy as np
import pytest

from restr.book.analysis import bootstrap_ci


def brute_force_ci(inter, union, samples, level, seed):
    """The same resampling rule written out one resample at a time: draw len(inter)
    expressions with replacement (the same generator calls), take each resample's
    cumulative IoU, and read the percentiles off the sorted list by linear interpolation."""
    n = len(inter)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    stats = []
    for row in idx:
        i = sum(float(inter[k]) for k in row)
        u = sum(float(union[k]) for k in row)
        stats.append(i / u if u > 0 else 1.0)
    stats.sort()

    def percentile(q):
        pos = (len(stats) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        return stats[lo] + (pos - lo) * (stats[hi] - stats[lo])

    alpha = (1 - level) / 2
    return percentile(alpha), percentile(1 - alpha)


def test_point_estimate_is_cumulative_iou():
    point, _, _ = bootstrap_ci([3, 0, 5], [4, 2, 10], samples=50)
    assert point == pytest.approx(8 / 16)


def test_expressions_with_one_ratio_give_a_zero_width_interval():
    # every expression has I / U = 0.25, so every resample does too
    point, lo, hi = bootstrap_ci([1, 2, 5, 10], [4, 8, 20, 40], samples=300, seed=3)
    assert point == lo == hi == pytest.approx(0.25)


def test_two_expressions_exact_distribution():
    # I = (1, 0), U = (1, 1): a resample of two draws has cumulative IoU 1 (both draws the
    # first expression, probability 1/4), 1/2 (one of each, 1/2) or 0 (1/4). The 30 % and 70 %
    # quantiles both fall inside the middle mass; the 2.5 % and 97.5 % ones at the extremes.
    _, lo, hi = bootstrap_ci([1, 0], [1, 1], samples=4000, level=0.4, seed=0)
    assert lo == hi == 0.5
    _, lo, hi = bootstrap_ci([1, 0], [1, 1], samples=4000, level=0.95, seed=0)
    assert (lo, hi) == (0.0, 1.0)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_interval_matches_brute_force_resampling(level):
    rng = np.random.default_rng(7)
    union = rng.integers(50, 400, size=25).astype(float)
    inter = np.floor(union * rng.uniform(0, 1, size=25))
    union[3] = 0.0  # an empty target predicted empty: I = U = 0
    inter[3] = 0.0
    point, lo, hi = bootstrap_ci(inter, union, samples=400, level=level, seed=11)
    ref_lo, ref_hi = brute_force_ci(inter, union, samples=400, level=level, seed=11)
    assert lo == pytest.approx(ref_lo, rel=1e-12) and hi == pytest.approx(ref_hi, rel=1e-12)
    assert lo <= point <= hi
    assert point == pytest.approx(inter.sum() / union.sum())


def test_wider_level_gives_a_wider_interval_and_the_seed_fixes_it():
    rng = np.random.default_rng(1)
    union = rng.integers(10, 100, size=40).astype(float)
    inter = np.floor(union * rng.uniform(0, 1, size=40))
    _, lo50, hi50 = bootstrap_ci(inter, union, samples=500, level=0.5, seed=0)
    _, lo99, hi99 = bootstrap_ci(inter, union, samples=500, level=0.99, seed=0)
    assert lo99 < lo50 < hi50 < hi99
    assert bootstrap_ci(inter, union, samples=500, seed=5) == bootstrap_ci(inter, union, samples=500, seed=5)


def test_empty_and_all_empty_unions():
    assert all(math.isnan(v) for v in bootstrap_ci([], [], samples=10))
    # every target empty and predicted empty: IoU 1 by the convention of the metrics
    assert bootstrap_ci([0, 0, 0], [0, 0, 0], samples=20) == (1.0, 1.0, 1.0)


def test_vit_start_says_where_the_vit_begins():
    from restr.book import analysis
    from restr.config import get_preset

    assert analysis.vit_start(get_preset("tiny").model).startswith("pretrained to classify generated pictures")
    assert analysis.vit_start(get_preset("tiny", model={"vit_pretrain": "dense"}).model).startswith(
        "pretrained on the training images")
    assert analysis.vit_start(get_preset("smoke").override({"model.vit_weights": None}).model) == "trained from scratch"
    assert "vit_base_patch16_384" in analysis.vit_start(get_preset("paper").model)
    assert analysis.vit_start(get_preset("smoke").override({"model.vit_weights": "/x/vit.safetensors"}).model) == \
        "started from vit.safetensors"
