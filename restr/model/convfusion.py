"""The convolutional fusion baseline (``model.fusion = "concat-conv"``) for Table 2's comparison.

Before transformers, referring segmentation models fused the two modalities by the
*concatenation-convolution* operation the paper sets ReSTR against (Sec. 1; Hu et al.
2016 and its successors, ACM among them): the sentence's feature vector is tiled over
the visual feature map, concatenated with it channel by channel, and convolutions mix
the two. This module is that operation on ReSTR's own encoders and decoder, so that the
only difference from ReSTR is the fusion:

* **Input.** The same fusion inputs as ReSTR (Sec. 3.2): the projected, L2-normalised
  patch features z_v (B, N_v, D) and word features z_l (B, N_l, D).
* **Sentence feature.** The mean of z_l over the real words (padding left out, with
  ``mask_padding`` on or off). Our language encoder has no pooled output (no class
  token), and the authors' own concat-conv ablation also averages the projected words.
* **Spatial coordinates.** As the classic baselines do, 8 channels per grid cell: its
  left, top, right and bottom edges, its centre (x, y), each in [-1, 1], and 1/w and
  1/h of the grid. They let the convolutions read location words ("left", "top")
  without having to find the position in the ViT's features.
* **Fusion.** ``fusion_layers`` convolution layers on the (gh, gw) grid, each followed
  by a GroupNorm and a ReLU, alternating 3 x 3 (odd layers: the first sees [z_v; tiled
  sentence; coordinates], 2D + 8 channels) and 1 x 1 (even layers), D channels out. With
  4 layers (two 3 x 3, two 1 x 1) the MACs match CME's transformer layers at the paper
  scale (``python -m restr cost``: 15.44 G against 15.92 G at 480 x 480, with 17.17 M
  parameters against 28.35 M; at the tiny preset 31.0 M MACs against 45.1 M, 0.49 M
  parameters against 0.79 M). GroupNorm (32 groups, or fewer when D has fewer) rather than BatchNorm: it
  does not depend on the batch, whose make-up differs between training (several
  expressions of one image) and evaluation.
* **Patch logit and decoder input** (:class:`ConvPatchHead`). There is no adaptive
  classifier (no class seed, so no seed attention): the patch logit is a 1 x 1
  convolution (a D -> 1 linear layer with a bias) on the fused features F, and the
  masked features follow Eq. (10)'s form, F * sigmoid(logit). The decoder receives
  [z_v, masked] exactly as ReSTR's does, so Eq. (11)-(12) train it unchanged.

``model.head`` and ``model.fusion_out_norm`` have nothing to act on here;
``model.shared`` (weight sharing) is refused by the config.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from .init import release_init_, xavier_init_

COORD_CHANNELS = 8
MAX_GROUPS = 32


def spatial_coordinates(gh: int, gw: int, device=None, dtype=None) -> torch.Tensor:
    """The 8-channel coordinate map (8, gh, gw) of a grid: each cell's left, top, right and
    bottom edges and its centre x and y, in [-1, 1], then 1/gw and 1/gh."""
    x_edges = torch.linspace(-1.0, 1.0, gw + 1, device=device)  # (gw + 1,)
    y_edges = torch.linspace(-1.0, 1.0, gh + 1, device=device)  # (gh + 1,)
    x0, x1 = x_edges[:-1].expand(gh, gw), x_edges[1:].expand(gh, gw)  # (gh, gw) each
    y0, y1 = y_edges[:-1, None].expand(gh, gw), y_edges[1:, None].expand(gh, gw)
    ones = torch.ones(gh, gw, device=device)
    coords = torch.stack([x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, ones / gw, ones / gh])
    return coords.to(dtype) if dtype is not None else coords


def _conv_layer(cin: int, cout: int, kernel: int, groups: int) -> nn.Sequential:
    """Convolution (no bias: the GroupNorm's shift replaces it), GroupNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


class ConcatConvFusion(nn.Module):
    """Tile the sentence feature over the patch grid, concatenate it with the visual features
    and the coordinates, fuse with ``fusion_layers`` convolutions (see the module doc)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dim
        groups = math.gcd(MAX_GROUPS, d)
        widths = [2 * d + COORD_CHANNELS] + [d] * cfg.fusion_layers
        self.layers = nn.ModuleList(
            _conv_layer(widths[i], widths[i + 1], 3 if i % 2 == 0 else 1, groups) for i in range(cfg.fusion_layers))
        if cfg.init == "release":
            xavier_init_(self)  # the release's convolutions: xavier-uniform

    @staticmethod
    def sentence_feature(words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """words (B, N_l, D), word_mask (B, N_l) bool -> mean over the real words (B, D)."""
        weights = word_mask.to(words.dtype)[..., None]  # (B, N_l, 1)
        return (words * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, visual: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor,
                grid: tuple[int, int], return_attention: bool = False) -> tuple[torch.Tensor, None, None]:
        """visual (B, N_v, D), words (B, N_l, D), word_mask (B, N_l) bool (True: a real
        word), grid (gh, gw) with gh * gw = N_v -> fused features (B, N_v, D), and None for
        the classifier and the attention (this baseline has neither)."""
        if return_attention:
            raise ValueError("model.fusion = 'concat-conv' has no class seed, so no seed attention to return")
        B, Nv, D = visual.shape
        gh, gw = grid
        if gh * gw != Nv:
            raise ValueError(f"grid {gh}x{gw} does not hold the {Nv} visual tokens")
        v = visual.transpose(1, 2).reshape(B, D, gh, gw)  # (B, D, gh, gw)
        s = self.sentence_feature(words, word_mask)[..., None, None].expand(B, D, gh, gw)  # (B, D, gh, gw) tiled
        xy = spatial_coordinates(gh, gw, visual.device, visual.dtype).expand(B, -1, -1, -1)  # (B, 8, gh, gw)
        x = torch.cat([v, s.to(v.dtype), xy], dim=1)  # (B, 2D + 8, gh, gw)
        for layer in self.layers:
            x = layer(x)  # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2), None, None  # (B, N_v, D), row-major as z_v


class ConvPatchHead(nn.Module):
    """The baseline's patch classifier: logit = a 1 x 1 convolution of the fused features F
    (a D -> 1 linear layer with a bias, the same for every expression); masked features =
    F * sigmoid(logit), Eq. (10)'s form, for the decoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.logit = nn.Linear(cfg.dim, 1)  # a 1 x 1 convolution on a (B, N, D) token layout
        if cfg.init == "release":
            release_init_(self)

    def forward(self, fused: torch.Tensor, classifier: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """fused (B, N, D) -> patch logits (B, N), masked features (B, N, D)."""
        logits = self.logit(fused).squeeze(-1)  # (B, N)
        return logits, fused * torch.sigmoid(logits)[..., None]


__all__ = ["ConcatConvFusion", "ConvPatchHead", "spatial_coordinates"]
