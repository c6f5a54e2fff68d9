"""The trainer's and evaluator's parts on their own: config validation, the checkpointer,
the metrics log, the evaluator's arithmetic, and inference that leaves the model alone."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from restr.config import ConfigError, TrainConfig, get_preset
from restr.data.transforms import compute_meta
from restr.engine.checkpointer import Checkpointer
from restr.engine.trainer import train
from restr.eval.evaluate import SegmentationEvaluator, distinct_images, eval_loader, inference_on_dataset, split_dataset
from restr.runs.folder import LoopState, MetricsLog, load_run
from restr.utils import atomic_write_text, mask_outline, overlay_mask, read_jsonl


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "train.batch_size = 0: must be a whole number >= 1"),
    ("batch_size", -4, "train.batch_size = -4"),
    ("batch_size", 2.5, "train.batch_size = 2.5: must be a whole number"),
    ("iterations", 0, "train.iterations = 0"),
    ("lr", -1.0, "train.lr = -1.0: must be > 0"),
    ("lr", float("nan"), "train.lr = nan"),
    ("warmup", 1.0, "train.warmup = 1.0"),
    ("tau", 1.5, "train.tau = 1.5"),
    ("grad_clip", 0.0, "train.grad_clip = 0.0"),
    ("amp", "fp8", "train.amp = 'fp8'"),
    ("betas", (0.9,), "train.betas"),
])
def test_train_config_names_the_bad_value(field, value, message):
    t = TrainConfig(**{field: value})
    with pytest.raises(ConfigError) as err:
        t.validate()
    assert message in str(err.value)


def test_batch_must_split_over_processes_and_micro_steps():
    TrainConfig(batch_size=8, grad_accum=2).validate(world=2)
    with pytest.raises(ConfigError, match="divisible by processes x grad_accum x expressions_per_image = 3 x 2 x 1"):
        TrainConfig(batch_size=8, grad_accum=2).validate(world=3)


def test_presets_are_valid_and_overrides_are_checked():
    for name in ("paper", "tiny", "smoke"):
        get_preset(name).train.validate()
    with pytest.raises(ConfigError, match="train.iterations = 0"):
        get_preset("smoke").override({"train.iterations": 0})


def test_a_bad_value_leaves_nothing_on_disk(tmp_path):
    cfg = get_preset("smoke", data={"root": str(tmp_path / "no-data")})
    cfg.train.batch_size = 0  # set directly, past override's check: train() must catch it itself
    with pytest.raises(ConfigError, match="batch_size"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_metrics_log_truncates_and_skips_a_cut_line(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for s in (1, 2, 3):
        log.write({"step": s})
    with open(log.path, "a") as fh:
        fh.write('{"step": 4, "lo')  # a line cut short by a kill
    assert [r["step"] for r in read_jsonl(log.path)] == [1, 2, 3]
    log.truncate_after(2)
    assert [r["step"] for r in read_jsonl(log.path)] == [1, 2]
    MetricsLog(tmp_path / "other.jsonl", enabled=False).write({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()  # only the main process writes


def test_loop_state_summary():
    loop = LoopState()
    loop.advance()
    loop.advance()
    loop.next_epoch()
    loop.advance()
    assert (loop.step, loop.epoch, loop.step_in_epoch) == (3, 1, 1)
    assert loop.summary(10, finished=False) == {"step": 3, "epoch": 1, "step_in_epoch": 1, "finished": False,
                                                "iterations": 10, "best_val": None}


def test_checkpointer_load_best_restores_the_best_weights(smoke_run, tmp_path):
    from restr.runs.folder import read_run_config

    root = read_run_config(smoke_run).data.root
    cfg = get_preset("smoke", train={"iterations": 4, "val_every": 1, "ckpt_every": 0, "batch_size": 4},
                     data={"root": root, "num_workers": 0})
    run_dir = train(cfg, tmp_path / "run", progress=False)
    best_step = json.loads((run_dir / "checkpoints" / "best.json").read_text())["step"]
    model = load_run(run_dir).model
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert Checkpointer(run_dir).load_best(model) == best_step
    fresh = load_run(run_dir, "best").model
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_the_resume_plan_refuses_what_does_not_fit(smoke_run, tmp_path):
    from restr.engine.resume import TrainingError, plan_resume
    from restr.runs.folder import read_run_config

    cfg = read_run_config(smoke_run)
    with pytest.raises(TrainingError, match="already holds a run"):
        plan_resume(smoke_run, cfg, resume=False)
    with pytest.raises(TrainingError, match="does not exist"):
        plan_resume(tmp_path / "nothing", cfg, resume=True)
    with pytest.raises(ConfigError, match="train.lr"):
        plan_resume(smoke_run, cfg.override({"train.lr": 0.5}), resume=True)
    plan = plan_resume(smoke_run, cfg, resume=True)
    assert len(plan.vocab) == cfg.model.vocab_size and plan.step == 4 and plan.state["step"] == 4
    assert plan.source == smoke_run / "checkpoints" / "last.pt" and plan.extended_from is None
    assert not plan.finished(cfg.train.iterations + 1)


def _batch(ious: list[tuple[int, int]], lengths: list[int]) -> tuple[dict, torch.Tensor]:
    """A batch of 4 x 4 images whose predictions overlap the targets as asked:
    (target pixels, predicted pixels inside the target) per item, predictions never outside."""
    n = len(ious)
    logits = torch.full((n, 4, 4), -1.0)
    targets = []
    for i, (target, hit) in enumerate(ious):
        t = torch.zeros(16, dtype=torch.uint8)
        t[:target] = 1
        logits[i].view(-1)[:hit] = 1.0
        targets.append(t.view(4, 4))
    meta = compute_meta((4, 4), 4).to_tensor()
    batch = {"meta": meta[None].repeat(n, 1), "orig_mask": targets, "num_words": torch.tensor(lengths),
             "ref_id": torch.arange(n), "sent_id": torch.arange(n), "ann_id": torch.arange(n),
             "image_id": torch.arange(n), "sentence": [f"s{i}" for i in range(n)]}
    return batch, logits


def test_evaluator_cumulative_and_mean_iou_by_hand():
    ev = SegmentationEvaluator("synthref", keep_records=True)
    # item 0: target 8, predicted 4 inside -> I 4, U 8; item 1: target 4, all found -> I 4, U 4
    ev.process(*_batch([(8, 4), (4, 4)], [2, 7]))
    ev.process(*_batch([(16, 0)], [3]))  # item 2: nothing found -> I 0, U 16
    s = ev.summary()
    assert s["n"] == 3
    assert s["cum_iou"] == pytest.approx(8 / 28)
    assert s["mean_iou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["prec@0.5"] == pytest.approx(2 / 3) and s["prec@0.9"] == pytest.approx(1 / 3)
    assert s["buckets"]["1-2"]["n"] == 1 and s["buckets"]["6-20"]["cum_iou"] == 1.0
    assert [r["index"] for r in ev.records] == [0, 1, 2] and ev.records[0]["bucket"] == "1-2"
    ev.reset()
    assert ev.summary()["n"] == 0 and ev.records == []


def test_distinct_images_picks_each_image_once():
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    batch = {"image": images, "image_id": [7, 3, 7, 3, 9]}
    unique, index = distinct_images(batch)
    assert torch.equal(unique[index], images[[0, 1, 0, 1, 4]])
    assert len(unique) == 3
    batch["image_id"] = [1, 2, 3, 4, 5]
    assert distinct_images(batch)[1] is None


def test_inference_leaves_the_model_as_it_found_it(smoke_run):
    run = load_run(smoke_run)
    model = run.model.train()
    vision = model.vision
    dataset = split_dataset(run, "val")
    r = inference_on_dataset(model, eval_loader(dataset, batch_size=16), SegmentationEvaluator(dataset.dataset))
    assert model.training and model.vision is vision
    assert r["n"] == len(dataset) and 0.0 <= r["cum_iou"] <= 1.0


def test_overlay_and_outline():
    rgb = np.zeros((5, 5, 3), np.uint8)
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    edge = mask_outline(mask)
    assert edge.sum() == 8 and not edge[2, 2]  # a 3 x 3 square: 8 border pixels, the centre inside
    out = overlay_mask(rgb, mask, colour=(200, 0, 0), alpha=0.5, outline=mask)
    assert tuple(out[2, 2]) == (100, 0, 0) and tuple(out[1, 1]) == (0, 255, 0) and tuple(out[0, 0]) == (0, 0, 0)


def test_atomic_write_keeps_permissions_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_text(target, json.dumps({"a": 1}))
    atomic_write_text(target, json.dumps({"a": 2}))
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in Path(target.parent).iterdir()] == ["f.json"]
    assert target.stat().st_mode & 0o044  # readable by others (the umask's usual bits), not 0600
