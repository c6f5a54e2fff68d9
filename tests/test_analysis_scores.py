"""restr.analysis' per-expression numbers for the verdicts, on a 4-step smoke run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from restr import analysis
from restr.checkpoint import load_run, read_run_config
from restr.data import ReferDataset, collate
from restr.evaluate import evaluate_run


def test_expression_scores_are_the_evaluation_per_expression(smoke_run):
    scores = analysis.expression_scores(smoke_run, "val")
    result = evaluate_run(smoke_run, "val", num_workers=0)
    assert len(scores) == result["expressions"] == result["expressions_total"]
    assert scores.intersection.sum() / scores.union.sum() == pytest.approx(result["cum_iou"])
    assert scores.iou.mean() == pytest.approx(result["mean_iou"])
    some = analysis.expression_scores(smoke_run, "val", max_expressions=5)
    assert len(some) == 5 and set(some.sent_id) <= set(scores.sent_id)
    with pytest.raises(ValueError, match="pixel or patch"):
        analysis.expression_scores(smoke_run, "val", level="coarse")


def test_patch_level_is_the_prediction_without_the_decoder(smoke_run, tmp_path):
    """A model without the decoder predicts its upsampled patch map: both levels agree;
    with the decoder they differ."""
    from restr.train import train

    cfg = read_run_config(smoke_run).override({"model.decoder": False, "train.iterations": 2})
    no_decoder = train(cfg, tmp_path / "nodec", progress=False)
    pixel = analysis.expression_scores(no_decoder, "val", level="pixel")
    patch = analysis.expression_scores(no_decoder, "val", level="patch")
    assert pixel[["intersection", "union"]].equals(patch[["intersection", "union"]])
    with_decoder = [analysis.expression_scores(smoke_run, "val", level=lv) for lv in ("pixel", "patch")]
    assert not with_decoder[0][["intersection", "union"]].equals(with_decoder[1][["intersection", "union"]])
    assert (with_decoder[0].sent_id == with_decoder[1].sent_id).all()


def test_whole_image_scores(smoke_run):
    cfg = read_run_config(smoke_run)
    scores = analysis.expression_scores(smoke_run, "val", max_expressions=6)
    base = analysis.whole_image_scores(scores, cfg.data.root, cfg.data.dataset, cfg.data.split_by)
    assert list(base.sent_id) == list(scores.sent_id)
    ds = ReferDataset(cfg.data.root, cfg.data.dataset, cfg.data.split_by, "val", return_original=True,
                      image_size=cfg.model.image_hw)
    by_sent = {int(ds.item_ref(i)[1]["sent_id"]): i for i in range(len(ds))}
    for row in base.itertuples():
        target = ds[by_sent[row.sent_id]]["orig_mask"]
        assert row.intersection == int(target.sum()) and row.union == target.numel()
    assert ((base.iou > 0) & (base.iou < 1)).all()


def test_seed_attention_records(smoke_run, tmp_path):
    from restr.train import train

    cfg = read_run_config(smoke_run).override({"model.fusion": "vme", "model.fusion_layers": 3,
                                               "train.iterations": 2})
    run = load_run(train(cfg, tmp_path / "vme", progress=False))
    ds = ReferDataset(cfg.data.root, cfg.data.dataset, cfg.data.split_by, "train", vocab=run.vocab,
                      image_size=cfg.model.image_hw)
    loader = DataLoader(ds, batch_size=4, collate_fn=collate)
    rec = analysis.seed_attention_records(run.model, loader, max_expressions=10)
    assert len(rec) == 10 and analysis.attention_layers(rec) == ["f_1", "f_2", "f_3"]
    for k in ("f_1", "f_2", "f_3"):  # the seed's attention row sums to 100 %
        total = rec[f"a_v@{k}"] + rec[f"a_l@{k}"] + rec[f"seed@{k}"]
        assert np.allclose(total, 100, atol=1e-3)
    nv = cfg.model.num_patches
    assert np.allclose(rec.uniform_a_v, 100 * nv / (nv + rec.words + 1))  # padding masked: real words only
    assert (rec.attended_words == rec.words).all()
    shares = analysis.seed_attention_shares(run.model, DataLoader(ds, batch_size=4, collate_fn=collate),
                                            max_expressions=8)
    first8 = rec.iloc[:8]
    for row in shares:
        assert row["a_v"] == pytest.approx(first8[f"a_v@{row['layer']}"].mean())
    # the release's form attends to the padding too: uniform over all max_words positions
    run.model.cfg.mask_padding = False
    with torch.no_grad():
        rec = analysis.seed_attention_records(run.model, loader, max_expressions=4)
    assert (rec.attended_words == cfg.model.max_words).all()
    assert np.allclose(rec.uniform_a_v, 100 * nv / (nv + cfg.model.max_words + 1))
