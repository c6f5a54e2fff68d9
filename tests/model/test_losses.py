"""Eq. (11) patch labels and Eq. (12) loss against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from restr.model.losses import patch_labels, restr_loss


def test_patch_labels_threshold_strictly_above_tau():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1  # patch (0,0): share 1.0
    mask[0, 0, 2] = 1  # patch (0,1): share 0.25
    mask[0, 2:, 2:] = torch.tensor([[1, 1], [1, 0]])  # patch (1,1): share 0.75
    labels = patch_labels(mask, patch_size=2, tau=0.75)
    assert labels.shape == (1, 1, 2, 2)
    assert labels[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]  # 0.75 is not > 0.75
    assert patch_labels(mask, 2, tau=0.7)[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patch_labels(torch.zeros(1, 5, 4), 2)


def bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_loss_equals_hand_computation():
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])  # (1, 2, 2), one patch of size 2 with share 0.75
    pixel = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    patch = torch.tensor([[[[0.3]]]])
    total, parts = restr_loss(pixel, patch, mask, tau=0.5, lam=0.1)
    pixel_hand = (bce(2.0, 1) + bce(-1.0, 1) + bce(0.5, 1) + bce(-3.0, 0)) / 4
    patch_hand = bce(0.3, 1)  # 0.75 > 0.5: positive patch
    assert parts["loss_pixel"].item() == pytest.approx(pixel_hand, rel=1e-6)
    assert parts["loss_patch"].item() == pytest.approx(patch_hand, rel=1e-6)
    assert total.item() == pytest.approx(0.1 * patch_hand + pixel_hand, rel=1e-6)
    # with tau = 0.8 the same patch is negative
    _, parts = restr_loss(pixel, patch, mask, tau=0.8, lam=0.1)
    assert parts["loss_patch"].item() == pytest.approx(bce(0.3, 0), rel=1e-6)
