"""Patch labels (Eq. (11)) and the training loss (Eq. (12))."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_labels(mask: torch.Tensor, patch_size: int, tau: float = 0.8) -> torch.Tensor:
    """Eq. (11): a patch is positive when the mean of the ground truth over it exceeds tau.

    mask: (B, H, W) or (B, 1, H, W) in {0, 1}; returns (B, 1, H/P, W/P) float in {0, 1}.
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    H, W = mask.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(f"mask size {H}x{W} is not a multiple of the patch size {patch_size}")
    share = F.avg_pool2d(mask.float(), kernel_size=patch_size, stride=patch_size)
    return (share > tau).to(mask.dtype if mask.is_floating_point() else torch.float32)


def restr_loss(
    mask_logits: torch.Tensor,  # (B, 1, H, W)
    patch_logits: torch.Tensor,  # (B, 1, H/P, W/P)
    mask: torch.Tensor,  # (B, H, W) or (B, 1, H, W) in {0, 1}
    tau: float = 0.8,
    lam: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (12): lambda * BCE(patch map, patch labels) + BCE(pixel map, mask).

    Both terms are binary cross-entropy with logits, averaged over positions and the
    batch. Returns the total and its two parts (detached) for logging.
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    mask = mask.to(mask_logits.dtype)
    patch_size = mask.shape[-1] // patch_logits.shape[-1]
    y_p = patch_labels(mask, patch_size, tau).to(patch_logits.dtype)
    loss_patch = F.binary_cross_entropy_with_logits(patch_logits.float(), y_p.float())
    loss_pixel = F.binary_cross_entropy_with_logits(mask_logits.float(), mask.float())
    total = lam * loss_patch + loss_pixel
    return total, {"loss": total.detach(), "loss_patch": loss_patch.detach(), "loss_pixel": loss_pixel.detach()}
