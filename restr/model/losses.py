"""Patch labels (Eq. (11)) and the training loss (Eq. (12))."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..config import PATCH_LABEL_RULES


def patch_labels(mask: torch.Tensor, patch_size: int, tau: float = 0.8, rule: str = "mean") -> torch.Tensor:
    """Which patches count as positive.

    ``rule="mean"`` (Eq. (11)): the mean of the ground truth over the patch exceeds tau.
    ``rule="sum"`` (the authors' ``Patch_label_gen``: a convolution of ones): the SUM of
    the mask over the patch exceeds tau; for a binary mask and tau = 0.8 a patch is
    positive as soon as one of its pixels belongs to the target.

    mask: (B, H, W) or (B, 1, H, W) in {0, 1}; returns (B, 1, H/P, W/P) float in {0, 1}.
    """
    if rule not in PATCH_LABEL_RULES:
        raise ValueError(f"patch-label rule {rule!r}: choose one of {', '.join(PATCH_LABEL_RULES)}")
    if mask.ndim == 3:
        mask = mask[:, None]
    H, W = mask.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f"mask size {H}x{W} is not a multiple of the patch size {patch_size}")
    # divisor 1: the sum over each patch, as the release's convolution of ones computes it
    share = F.avg_pool2d(mask.float(), kernel_size=patch_size, stride=patch_size,
                         divisor_override=1 if rule == "sum" else None)
    return (share > tau).to(mask.dtype if mask.is_floating_point() else torch.float32)


def restr_loss(
    mask_logits: torch.Tensor,  # (B, 1, H, W)
    patch_logits: torch.Tensor,  # (B, 1, H/P, W/P)
    mask: torch.Tensor,  # (B, H, W) or (B, 1, H, W) in {0, 1}
    tau: float = 0.8,
    lam: float = 0.1,
    rule: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (12): lambda * BCE(patch map, patch labels) + BCE(pixel map, mask).

    Both terms are binary cross-entropy with logits, averaged over positions and the
    batch. ``rule`` chooses the patch labels (:func:`patch_labels`). Returns the total
    and its two parts (detached) for logging.
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    mask = mask.to(mask_logits.dtype)
    patch_size = mask.shape[-1] // patch_logits.shape[-1]
    y_p = patch_labels(mask, patch_size, tau, rule).to(patch_logits.dtype)
    loss_patch = F.binary_cross_entropy_with_logits(patch_logits.float(), y_p.float())
    loss_pixel = F.binary_cross_entropy_with_logits(mask_logits.float(), mask.float())
    total = lam * loss_patch + loss_pixel
    return total, {"loss": total.detach(), "loss_patch": loss_patch.detach(), "loss_pixel": loss_pixel.detach()}


def loss_settings(train_cfg: Any, decoder: bool) -> dict[str, Any]:
    """The keyword arguments of :func:`restr_loss` for a run: ``tau``, ``lam``, ``rule``.

    ``lam`` is ``train.lam_no_decoder`` instead of ``train.lam`` when the model has no
    decoder and that field is set (the release: 0, no patch loss without the decoder).
    """
    lam = train_cfg.lam
    if not decoder and train_cfg.lam_no_decoder is not None:
        lam = train_cfg.lam_no_decoder
    return {"tau": train_cfg.tau, "lam": lam, "rule": train_cfg.patch_label}


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """M3Att's L_rec: the mean squared error between F_rec and F_proj (each (B, C)), averaged
    over channels and the batch (Sec. III-C)."""
    return F.mse_loss(reconstruction.float(), target.float())


def m3att_loss(
    mask_logits: torch.Tensor,  # (B, 1, H, W)
    reconstruction: tuple[torch.Tensor, torch.Tensor] | None,  # (F_rec, F_proj), each (B, C); None: LFR off
    mask: torch.Tensor,  # (B, H, W) or (B, 1, H, W) in {0, 1}
    rec_weight: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """M3Att's Eq. (5): w_mask * L_mask + w_rec * L_rec, with w_mask = 1.

    L_mask is binary cross-entropy with logits over the pixels at the input resolution
    (as ReSTR's pixel term); L_rec is :func:`reconstruction_loss` (0 when LFR is off).
    Returns the total and its parts (detached) as ``loss``, ``loss_rec``, ``loss_pixel``.
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    loss_pixel = F.binary_cross_entropy_with_logits(mask_logits.float(), mask.float())
    if reconstruction is None:
        loss_rec = loss_pixel.new_zeros(())
    else:
        loss_rec = reconstruction_loss(*reconstruction)
    total = loss_pixel + rec_weight * loss_rec
    return total, {"loss": total.detach(), "loss_rec": loss_rec.detach(), "loss_pixel": loss_pixel.detach()}
