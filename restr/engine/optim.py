"""The paper's optimisation: AdamW with two learning-rate groups and a warm-up/poly schedule.

The paper and its release (the book's fidelity page, ``book/fidelity.md``): AdamW, betas
(0.9, 0.999), weight decay 5e-4, lr for the fusion, language and decoder parts and
``vit_lr_scale`` (0.1) x lr for the ViT; a linear warm-up from 0 over the first ``warmup``
fraction of the iterations, then polynomial decay (power 0.9) to ``end_lr``.

Steps are counted from 0; step ``s`` is the s-th optimiser update and uses ``lr_at(s)``:

- warm-up, ``s < W`` with ``W = round(warmup * iterations)``: ``lr * s / W`` (0 at step 0);
- decay, ``W <= s <= T - 1``: ``end + (lr - end) * (1 - (s - W) / (T - 1 - W)) ** power``,
  which is ``lr`` at step ``W`` and exactly ``end_lr`` at the last step ``T - 1``.
  With ``decay_to_last_step=False`` the denominator is ``T - W``, as in the authors'
  release (``lr_poly``): the curve would reach ``end_lr`` at step ``T``, one step after
  the last, so the last step keeps ``(1 / (T - W)) ** power`` of the rate.

The ViT group follows the same curve scaled by ``vit_lr_scale`` (its end value is
``vit_lr_scale * end_lr``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig


def warmup_steps(cfg: TrainConfig) -> int:
    return int(round(cfg.warmup * cfg.iterations))


def lr_factor(step: int, iterations: int, warmup: int, power: float = 0.9, end_ratio: float = 0.0,
              to_last_step: bool = True) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (see the module docstring)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    step = min(max(int(step), 0), iterations - 1)
    warmup = min(max(int(warmup), 0), iterations - 1)
    if step < warmup:
        return step / warmup
    span = iterations - warmup - (1 if to_last_step else 0)
    if span <= 0:
        return 1.0
    frac = (step - warmup) / span
    return end_ratio + (1.0 - end_ratio) * (1.0 - frac) ** power


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of the non-ViT group at optimiser step ``step``."""
    end_ratio = cfg.end_lr / cfg.lr if cfg.lr else 0.0
    return cfg.lr * lr_factor(step, cfg.iterations, warmup_steps(cfg), cfg.power, end_ratio, cfg.decay_to_last_step)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``model.param_groups()``: group 0 the ViT (``vit_lr_scale * lr``), group 1 the rest.

    Fused AdamW (one kernel over all parameters) on every device; the trainer relies on
    its ``found_inf`` input to skip an update without a host sync. The groups carry a
    ``name`` key ("vision", "rest").
    """
    core = getattr(model, "module", model)  # unwrap DDP
    groups = core.param_groups()
    param_groups = [
        {"params": groups["vision"], "lr": cfg.lr * cfg.vit_lr_scale, "name": "vision"},
        {"params": groups["rest"], "lr": cfg.lr, "name": "rest"},
    ]
    param_groups = [g for g in param_groups if g["params"]]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimiser's implementation flags.

    A saved state carries its groups' ``fused``/``foreach`` flags, which would otherwise
    replace the fused kernel that :func:`build_optimizer` chose (checkpoints written
    before the trainer used fused AdamW on CPU hold ``fused=None``). The maths, AdamW,
    is the same either way.
    """
    flags = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for g, f in zip(optimizer.param_groups, flags):
        g.update(f)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying :func:`lr_factor` to every group's initial lr.

    Call ``scheduler.step()`` after each optimiser step; before the first step the
    groups already hold the lr of step 0 (0 with a warm-up).
    """
    end_ratio = cfg.end_lr / cfg.lr if cfg.lr else 0.0
    w = warmup_steps(cfg)

    def fn(step: int) -> float:
        return lr_factor(step, cfg.iterations, w, cfg.power, end_ratio, cfg.decay_to_last_step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
