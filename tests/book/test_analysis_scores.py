"""restr.book.analysis' per-expression numbers for the verdicts, on a 4-step smoke run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from restr.book import analysis
from restr.data import ReferDataset, collate
from restr.eval.evaluate import evaluate_run
from restr.runs.folder import load_run, read_run_config


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
    from restr.engine.trainer import train

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
    from restr.engine.trainer import train

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


def test_scores_summary_and_training_seconds():
    import pandas as pd

    a = pd.DataFrame({"intersection": [1.0, 3.0], "union": [2.0, 4.0], "iou": [0.5, 0.75]})
    b = pd.DataFrame({"intersection": [0.0, 4.0], "union": [2.0, 4.0], "iou": [0.0, 1.0]})
    s = analysis.scores_summary([a, b])
    assert s["IoU"] == pytest.approx((100 * 4 / 6 + 100 * 4 / 6) / 2)
    assert s["mean IoU"] == pytest.approx((62.5 + 50) / 2)
    assert s["prec@0.5"] == pytest.approx((100 + 50) / 2) and s["prec@0.9"] == pytest.approx((0 + 50) / 2)
    # two timed windows (the second restarts after a validation) and the validation's own time
    log = pd.DataFrame([{"step": 20, "elapsed_s": 10.0}, {"step": 40, "elapsed_s": 21.0},
                        {"step": 40, "split": "val", "val_seconds": 3.0}, {"step": 60, "elapsed_s": 9.0},
                        {"step": 80, "elapsed_s": 18.5}, {"step": 80, "event": "finished"}])
    assert analysis.training_seconds(log) == pytest.approx(21.0 + 18.5 + 3.0)
    assert np.isnan(analysis.training_seconds(pd.DataFrame([{"step": 1}])))
    # validation rows that count the training seconds so far (the trainer's rows now)
    log = pd.DataFrame([{"step": 20, "elapsed_s": 10.0}, {"step": 40, "elapsed_s": 11.0},
                        {"step": 40, "split": "val", "val_seconds": 3.0, "elapsed_s": 21.0, "expressions_seen": 640},
                        {"step": 60, "elapsed_s": 9.0}, {"step": 80, "elapsed_s": 9.5},
                        {"step": 80, "split": "val", "val_seconds": 2.0, "elapsed_s": 39.5, "expressions_seen": 1280},
                        {"step": 80, "event": "finished"}])
    assert analysis.training_seconds(log) == pytest.approx(39.5 + 3.0 + 2.0)


def test_neighbour_similarity_of_a_smooth_and_a_random_embedding():
    grid = (4, 5)
    ys, xs = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    smooth = torch.tensor(np.stack([np.cos(xs / 3), np.sin(xs / 3), np.cos(ys / 3), np.sin(ys / 3)], -1),
                          dtype=torch.float32).reshape(20, 4)
    adjacent, all_pairs = analysis.neighbour_similarity(smooth, grid)
    # horizontal neighbours differ in x only: cosine (cos(1/3) + 1) / 2
    assert adjacent > all_pairs and adjacent == pytest.approx((np.cos(1 / 3) + 1) / 2, abs=1e-5)
    rand_adjacent, rand_all = analysis.neighbour_similarity(torch.randn(20, 64, generator=torch.Generator()
                                                                        .manual_seed(0)), grid)
    assert abs(rand_adjacent) < 0.3


def test_synthref_programs_count_clauses_and_tell_redundant_ones(smoke_run):
    from restr.data.refer import ReferData
    from restr.data.synth import load_scenes, scene_shapes
    from restr.data.synth_language import referents

    root = read_run_config(smoke_run).data.root
    refs = [r for r in ReferData(root, "synthref", "unc").refs if r["split"] == "val"]
    ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    table = analysis.synthref_programs(root, ids)
    assert sorted(table.sent_id) == sorted(ids)
    programs = {}
    for scene in load_scenes(root)["images"]:
        for t, obj in enumerate(scene["objects"]):
            ref = next((r for r in refs if r["ref_id"] == obj["ref_id"]), None)
            for sent, program in zip(ref["sentences"] if ref else [], obj["programs"]):
                programs[sent["sent_id"]] = (program, scene, t)
    for row in table.itertuples():
        program, scene, t = programs[row.sent_id]
        assert row.clauses == (1 if program.get("ordinal") else 0) + len(program.get("relations", [])) + (
            1 if program.get("region") else 0)
        # every program picks out its target; with its clauses dropped it may or may not
        assert referents(program, scene_shapes(scene), scene["width"], scene["height"]) == [t]
        if row.clauses == 0:
            assert row.attributes_suffice
    assert table.attributes_suffice.any() and (table.clauses > 0).any()


def test_scores_are_cached_while_the_checkpoint_stays_the_same(smoke_run, tmp_path, monkeypatch):
    import shutil

    from restr.eval import evaluate
    from restr.runs.folder import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    fresh = analysis.expression_scores(run, "val", max_expressions=7, level="patch")
    assert (run / "scores" / "val-patch-7.csv").is_file() and (run / "scores" / "val-patch-7.json").is_file()

    def no_inference(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(evaluate.Inference, "run", no_inference)
    cached = analysis.expression_scores(run, "val", max_expressions=7, level="patch")
    assert cached.to_dict("list") == fresh.to_dict("list")
    with pytest.raises(AssertionError, match="scored again"):  # another subset is not in the cache
        analysis.expression_scores(run, "val", max_expressions=6, level="patch")
    with pytest.raises(AssertionError, match="scored again"):  # nor is it when the caller says so
        analysis.expression_scores(run, "val", max_expressions=7, level="patch", cache=False)
    # other weights under the same name: the stamp no longer matches
    ckpt = run / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1
    save_checkpoint(ckpt, state)
    with pytest.raises(AssertionError, match="scored again"):
        analysis.expression_scores(run, "val", max_expressions=7, level="patch")
