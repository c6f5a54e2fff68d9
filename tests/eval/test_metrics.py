"""Metrics against hand-computed values on constructed masks."""
from __future__ import annotations

import math
from typing import Iterable

import pytest
import torch

from restr.eval.metrics import PREC_THRESHOLDS, SegmentationMeter, intersection_union, iou_of


def summarize(pairs: Iterable[tuple[float, float]]) -> dict:
    """Summary of ``(I, U)`` pairs without buckets (the tests' shorthand)."""
    meter = SegmentationMeter()
    for inter, union in pairs:
        meter.add(inter, union)
    return meter.summary()


def test_intersection_union_counts():
    pred = torch.zeros(4, 4, dtype=torch.bool)
    gt = torch.zeros(4, 4, dtype=torch.bool)
    pred[:2, :2] = True  # 4 px
    gt[1:3, 1:3] = True  # 4 px, overlap 1 px
    assert intersection_union(pred, gt) == (1, 7)
    assert iou_of(1, 7) == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="differ in shape"):
        intersection_union(pred, gt[:3])


def test_empty_prediction_and_empty_union():
    gt = torch.zeros(3, 3)
    gt[0, 0] = 1
    empty = torch.zeros(3, 3)
    assert intersection_union(empty, gt) == (0, 1)  # empty prediction: IoU 0
    assert iou_of(0, 1) == 0.0
    assert intersection_union(empty, empty) == (0, 0)  # empty union: defined as 1
    assert iou_of(0, 0) == 1.0


def test_meter_hand_computed():
    # three expressions: IoU 1/7, 0.75 (3/4), both empty (1.0), and one empty prediction (0/5)
    meter = SegmentationMeter(buckets=["1-2", "3", "4-5", "6-20"])
    meter.add(1, 7, "1-2")
    meter.add(3, 4, "3")
    meter.add(0, 0, "3")
    meter.add(0, 5, "6-20")
    s = meter.summary()
    assert s["n"] == 4
    assert s["cum_iou"] == pytest.approx((1 + 3 + 0 + 0) / (7 + 4 + 0 + 5))
    assert s["mean_iou"] == pytest.approx((1 / 7 + 0.75 + 1.0 + 0.0) / 4)
    assert s["prec@0.5"] == pytest.approx(2 / 4)
    assert s["prec@0.7"] == pytest.approx(2 / 4)
    assert s["prec@0.8"] == pytest.approx(1 / 4)
    assert s["prec@0.9"] == pytest.approx(1 / 4)
    b = s["buckets"]
    assert b["3"]["n"] == 2 and b["3"]["cum_iou"] == pytest.approx(3 / 4)
    assert b["3"]["mean_iou"] == pytest.approx((0.75 + 1.0) / 2)
    assert b["1-2"]["cum_iou"] == pytest.approx(1 / 7)
    assert b["6-20"]["cum_iou"] == 0.0 and b["6-20"]["prec@0.5"] == 0.0
    assert b["4-5"]["n"] == 0 and math.isnan(b["4-5"]["cum_iou"])


def test_prec_threshold_is_inclusive_and_state_round_trip():
    s = summarize([(1, 2), (9, 10)])  # IoU exactly 0.5 and 0.9
    assert s["prec@0.5"] == 1.0 and s["prec@0.9"] == 0.5 and s["prec@0.6"] == 0.5
    m = SegmentationMeter(["a", "b"])
    m.add(2, 3, "a")
    m.add(1, 4, "b")
    m2 = SegmentationMeter(["a", "b"])
    m2.load_state_vector(m.state_vector() * 2)  # what an all-reduce over two equal ranks gives
    assert m2.summary()["n"] == 4
    assert m2.summary()["cum_iou"] == pytest.approx(m.summary()["cum_iou"])
    assert len(PREC_THRESHOLDS) == 5
    with pytest.raises(KeyError):
        m.add(1, 1, "zzz")
