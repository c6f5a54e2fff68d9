"""The lr schedule (warm-up start, warm-up end, last step) and the two lr groups."""
from __future__ import annotations

import pytest

from restr.config import get_preset
from restr.engine.optim import build_optimizer, build_scheduler, lr_at, lr_factor, warmup_steps
from restr.model import build_model


def test_paper_schedule_values():
    t = get_preset("paper").train
    assert warmup_steps(t) == 40_000
    assert lr_at(0, t) == 0.0  # warm-up starts from 0
    assert lr_at(20_000, t) == pytest.approx(0.5e-5)
    assert lr_at(40_000, t) == pytest.approx(1e-5)  # end of warm-up: the base lr
    assert lr_at(399_999, t) == pytest.approx(0.0, abs=1e-20)  # last step: end_lr
    mid = 40_000 + (399_999 - 40_000) // 2
    assert lr_at(mid, t) == pytest.approx(1e-5 * (1 - (mid - 40_000) / 359_999) ** 0.9)
    t2 = get_preset("paper", train={"end_lr": 1e-7}).train
    assert lr_at(399_999, t2) == pytest.approx(1e-7)
    assert lr_factor(5, 10, 0) == pytest.approx((1 - 5 / 9) ** 0.9)


def test_two_groups_and_scheduler_follow_lr_at():
    cfg = get_preset("smoke", train={"vit_lr_scale": 0.1, "iterations": 10, "warmup": 0.2, "lr": 1e-3})
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train)
    names = [g["name"] for g in opt.param_groups]
    assert names == ["vision", "rest"]
    vit_ids = {id(p) for p in model.vision.parameters()}
    assert {id(p) for p in opt.param_groups[0]["params"]} == vit_ids
    n_all = sum(1 for _ in model.parameters())
    assert len(opt.param_groups[0]["params"]) + len(opt.param_groups[1]["params"]) == n_all
    assert opt.param_groups[0]["weight_decay"] == cfg.train.weight_decay
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    seen = []
    for step in range(10):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        opt.step()
        sched.step()
    for step, (vit_lr, rest_lr) in enumerate(seen):
        assert rest_lr == pytest.approx(lr_at(step, cfg.train), abs=1e-15)
        assert vit_lr == pytest.approx(0.1 * lr_at(step, cfg.train), abs=1e-15)
    assert seen[0] == (0.0, 0.0)
    assert seen[2][1] == pytest.approx(1e-3)  # warm-up of 2 steps ends at step 2
    assert seen[-1][1] == pytest.approx(0.0, abs=1e-15)
