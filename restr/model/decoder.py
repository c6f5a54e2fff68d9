"""Patch-level classification (Eq. (9)-(10)) and the coarse-to-fine decoder (Sec. 3.3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .init import xavier_init_


class PatchHead(nn.Module):
    """Adaptive classifier applied to every patch.

    ``paper``: logit = z'_v . e'_s / sqrt(D), masked features = z'_v * sigmoid(logit)
    (Eq. (9)-(10)).
    ``release``: the patch features and the classifier are first multiplied by learned
    D x D matrices, z = z'_v W_p and c = e'_s W_c (row vectors times the matrix, as the
    authors' code writes it, so ``patch_proj`` IS their ``proj_patch``); logit = z . c
    with no 1/sqrt(D); masked features = z * logit: the PROJECTED features times the
    raw logit, not its sigmoid. W_p and W_c start normal(0, D^-0.5).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.style = cfg.head
        self.scale = 1.0 / math.sqrt(cfg.dim)
        if self.style == "release":
            self.patch_proj = nn.Parameter(torch.randn(cfg.dim, cfg.dim) * self.scale)  # W_p
            self.class_proj = nn.Parameter(torch.randn(cfg.dim, cfg.dim) * self.scale)  # W_c

    def forward(self, z_v: torch.Tensor, e_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_v (B, N, D), e_s (B, D) -> patch logits (B, N), masked features (B, N, D)."""
        if self.style == "paper":
            logits = torch.einsum("bnd,bd->bn", z_v, e_s) * self.scale
            return logits, z_v * torch.sigmoid(logits)[..., None]
        z = z_v @ self.patch_proj  # (B, N, D)
        c = e_s @ self.class_proj  # (B, D)
        logits = torch.einsum("bnd,bd->bn", z, c)
        return logits, z * logits[..., None]


class CoarseToFineDecoder(nn.Module):
    """K = log2(P) blocks of [bilinear x2 upsample, bias-free linear halving channels,
    LeakyReLU], then a bias-free linear layer to one channel.

    Block i maps 2D / 2^i channels to D / 2^i at the upsampled resolution, so every
    block costs about the same MACs. No convolution anywhere: the linear layers act on
    each pixel's channels.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dim
        self.blocks = nn.ModuleList(
            nn.Linear(2 * d >> i, d >> i, bias=False) for i in range(cfg.decoder_blocks)
        )
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.out = nn.Linear(d >> (cfg.decoder_blocks - 1), 1, bias=False)
        self.linear_first = True  # False: upsample, then the linear layer, as Fig. 2 draws a block
        if cfg.init == "release":
            xavier_init_(self)  # the release's 1 x 1 convolutions: xavier-uniform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C=2D, h, w) -> pixel logits (B, 1, h * 2^K, w * 2^K).

        Each block computes act(linear(upsample(x))). The linear layers are bias-free and
        act on each pixel's channels, and bilinear upsampling mixes pixels channel by
        channel, so the two commute: linear(upsample(x)) == upsample(linear(x)). The
        linear layer therefore runs at the lower resolution, on a quarter of the pixels,
        and the upsampling moves half the channels: the same function (equal in float64
        up to rounding, tested), about 3x faster on a CPU. ``linear_first = False`` runs
        the order as drawn (:mod:`restr.perf.cost` counts that one, the paper's MACs).
        """
        x = x.contiguous(memory_format=torch.channels_last)
        for linear in self.blocks:
            # a channels-last (B, C, H, W) tensor is a contiguous (B, H, W, C) one
            if self.linear_first:
                x = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
                x = F.leaky_relu_(x, self.act.negative_slope)  # in place: no second full-size tensor
            else:  # as drawn: what restr.perf.cost counts, to compare with the paper's MACs
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
                x = self.act(linear(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return self.out(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
