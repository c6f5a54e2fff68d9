"""Evaluation: protocol, every expression, original resolution, swap control, CSV/images, bad runs."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from restr.data.errors import DataError
from restr.data.refer import ReferDataset
from restr.data.transforms import compute_meta
from restr.eval.evaluate import SegmentationEvaluator, SwapDataset, evaluate_run, score_batch, spread_indices
from restr.runs.folder import RunError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(smoke_run):
    return smoke_run


def test_score_batch_maps_back_to_the_original_resolution():
    # a 4 x 8 image letterboxed into 8 x 8 (scale 1, 2 rows of padding top and bottom)
    meta = compute_meta((4, 8), 8)
    assert (meta.pad_top, meta.new_h, meta.scale) == (2, 4, 1.0)
    logits = torch.full((1, 8, 8), -5.0)
    logits[0, 2:4, 0:4] = 5.0  # predicted: rows 0-1, cols 0-3 of the original image
    logits[0, 0, :] = 5.0  # padding: must be ignored
    target = torch.zeros(4, 8, dtype=torch.uint8)
    target[0:2, 2:6] = 1
    batch = {"meta": meta.to_tensor()[None], "orig_mask": [target]}
    (inter, union, pred), = score_batch(batch, logits)
    assert pred.shape == (4, 8)
    assert (inter, union) == (4, 12)
    # exactly at logit 0 (probability 0.5) a pixel is positive
    (i2, u2, p2), = score_batch(batch, torch.zeros(1, 8, 8))
    assert bool(p2.all()) and (i2, u2) == (8, 32)


def test_evaluator_scores_each_kind_of_expression_apart():
    meta = compute_meta((4, 4), 4)  # no padding: logits at the original size
    target = torch.zeros(4, 4, dtype=torch.uint8)
    target[:2] = 1  # 8 pixels
    logits = torch.full((3, 4, 4), -5.0)
    logits[0, :2] = 5.0  # exact: I 8, U 8
    logits[1, :1] = 5.0  # half: I 4, U 8
    # item 2 predicts nothing (I 0, U 8) and its sentence has no kind: it counts in the totals only
    batch = {"meta": meta.to_tensor()[None].repeat(3, 1), "orig_mask": [target] * 3,
             "num_words": torch.tensor([3, 3, 3]), "sent_id": torch.tensor([10, 11, 12])}
    evaluator = SegmentationEvaluator("synthref", kinds=(("attributes", "region"), {10: "attributes", 11: "region"}))
    evaluator.process(batch, logits)
    summary = evaluator.summary()
    assert summary["n"] == 3 and summary["cum_iou"] == pytest.approx(12 / 24)
    kinds = summary["kinds"]
    assert list(kinds) == ["attributes", "region"]
    assert (kinds["attributes"]["n"], kinds["attributes"]["cum_iou"]) == (1, 1.0)
    assert (kinds["region"]["n"], kinds["region"]["cum_iou"]) == (1, 0.5)
    assert "kinds" not in SegmentationEvaluator("synthref").summary()


def test_spread_indices():
    assert spread_indices(10, None) == list(range(10))
    assert spread_indices(10, 3) == [0, 4, 9] or spread_indices(10, 3) == [0, 5, 9]
    assert spread_indices(3, 10) == [0, 1, 2]


def test_evaluate_every_expression_with_protocol_and_swap(run, tmp_path):
    cfg = json.loads((run / "config.json").read_text())
    val = ReferDataset(cfg["data"]["root"], "synthref", "unc", "val")
    csv_path, img_dir = tmp_path / "per_expr.csv", tmp_path / "img"
    r = evaluate_run(run, "val", swap_control=True, csv_path=csv_path, save_images=img_dir, num_workers=0)
    assert r["expressions"] == len(val) == r["expressions_total"]
    assert 0.0 <= r["cum_iou"] <= 1.0 and 0.0 <= r["mean_iou"] <= 1.0
    assert r["prec@0.5"] >= r["prec@0.6"] >= r["prec@0.7"] >= r["prec@0.8"] >= r["prec@0.9"]
    assert list(r["buckets"]) == ["1-2", "3", "4-5", "6-20"]  # synthref uses the UNC buckets
    assert sum(b["n"] for b in r["buckets"].values()) == len(val)
    assert r["protocol"]["resolution"].startswith("original")
    assert "probability >= 0.5" in r["protocol"]["threshold"]
    s = r["swap_control"]
    assert s["expressions"] + s["skipped_single_ref_images"] == len(val)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == len(val) + s["expressions"]
    assert {"ref_id", "sentence", "iou", "bucket", "intersection", "union"} <= set(rows[0])
    assert len(list(img_dir.glob("*_mask.png"))) == len(val) + s["expressions"]
    cum = sum(float(x["intersection"]) for x in rows if x["control"] == "none") / \
        sum(float(x["union"]) for x in rows if x["control"] == "none")
    assert cum == pytest.approx(r["cum_iou"])
    sub = evaluate_run(run, "val", max_expressions=5, num_workers=0)
    assert sub["expressions"] == 5


def test_swap_dataset_uses_another_object_of_the_same_image(run):
    cfg = json.loads((run / "config.json").read_text())
    val = ReferDataset(cfg["data"]["root"], "synthref", "unc", "val", image_size=32, return_original=True)
    swap = SwapDataset(val)
    refs = {r["ref_id"]: r for r in val.refs}
    for k in range(len(swap)):
        index, text, other = swap.items[k]
        ref, _ = val.item_ref(index)
        assert other != ref["ref_id"] and refs[other]["image_id"] == ref["image_id"]
        assert refs[other]["ann_id"] != ref["ann_id"]
        assert text in [s["sent"] for s in refs[other]["sentences"]]
    item = swap[0]
    base = val[swap.items[0][0]]
    assert torch.equal(item["orig_mask"], base["orig_mask"]) and item["sentence"] != base["sentence"]


def test_bad_run_directories(run, tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        evaluate_run(tmp_path / "missing", "val")
    empty = tmp_path / "nockpt"
    empty.mkdir()
    (empty / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(RunError, match="no checkpoint"):
        evaluate_run(empty, "val")
    p = subprocess.run([sys.executable, "-m", "restr", "evaluate", "--run", str(tmp_path / "missing")],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_an_in_order_pass_decodes_each_image_once_and_gives_the_same_items(data_root, monkeypatch):
    """Without augmentation the data set keeps its last image and mask: evaluation, which
    reads an image's expressions one after the other, decodes each image once, and every
    item equals the one a fresh data set makes for that index alone."""
    from restr.data import refer

    ds = ReferDataset(data_root, "synthref", "unc", "val", image_size=32, augment=False, return_original=True)
    reads = []
    real_read = refer.read_image
    monkeypatch.setattr(refer, "read_image", lambda path, hw=None: reads.append(path) or real_read(path, hw))
    items = [ds[i] for i in range(len(ds))]
    assert len(reads) == len(set(reads)) == len(ds.image_ids()) < len(ds)
    for i in (0, len(ds) // 2, len(ds) - 1, 1):  # out of order, each from a fresh data set
        alone = ReferDataset(data_root, "synthref", "unc", "val", image_size=32, augment=False,
                             return_original=True)[i]
        assert alone.keys() == items[i].keys()
        for key, value in alone.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, items[i][key]), key
            else:
                assert value == items[i][key], key


def test_a_mask_of_another_size_than_its_image_is_refused_by_name(data_root, monkeypatch):
    ds = ReferDataset(data_root, "synthref", "unc", "val", image_size=32, augment=False)
    monkeypatch.setattr(ds.data, "load_mask", lambda ann_id: np.ones((3, 5), dtype=np.uint8))
    ref_id = ds.refs[0]["ref_id"]
    with pytest.raises(DataError, match=rf"ref {ref_id}: mask \(3, 5\) and image \(\d+, \d+\) differ in size"):
        ds[0]
