"""Multi-Modal Mutual Attention and the Multi-Modal Mutual Decoder (Liu et al., M3Att).

The equations are the M3Att paper's (Sec. III-A, III-B), not ReSTR's:

* :class:`MutualAttention`: Eq. (1) ``A_mut = F_L^k (F_V^k)^T / sqrt(C)``, normalised
  along both axes: Eq. (2a) ``F_V^a = softmax(A_mut) F_V^v`` (LAV, one vision feature per
  word) and Eq. (2b) ``F_L^a = softmax(A_mut^T) F_L^v`` (VAL, one language feature per
  pixel); fused by the dynamic-kernel product ``F_mul = F_V^a (F_L^a)^T`` (N_t x HW) and
  projected back to C by a linear layer over the HW axis. ``shared`` uses one A_mut for
  both softmaxes, ``independent`` a second one from two extra key projections (Table I);
  ``generic`` is the baseline of Table I's last column: LAV only (word queries attend to
  vision), then a linear layer C -> C.
* :class:`M3DecLayer`: self-attention over the query, M3Att with the encoder's vision
  features, multi-head cross-attention from the query to the multimodal feature (Fig. 3(c)).
* :class:`IMIBlock`: Iterative Multi-Modal Interaction between two layers, Eq. (3).
* :class:`M3Dec`: N_dec layers, the language features as the first query.

Padding words are masked out of every attention and every statistic (batch norms
included), so padding never changes a prediction. Shapes: B expressions, N_t = L word
slots (real words and padding), HW vision tokens, C channels.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .attention import attention
from .blocks import Mlp, SelfAttention


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 if it is float64 (statistics and softmaxes under bf16 autocast)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class TokenBatchNorm(nn.Module):
    """Batch normalisation over the channels of token features (B, N, C).

    The statistics come from the real tokens only (``mask`` True; all tokens without a
    mask) and padded positions are set to 0: the same as ``nn.BatchNorm1d`` applied to
    the real tokens (tested), without indexing them out, which would make the host
    wait for the device. Same parameters, buffers and momentum as ``nn.BatchNorm1d``.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, C), mask (B, N) bool or None -> (B, N, C), at least float32."""
        x = at_least_fp32(x)
        m = None if mask is None else mask[..., None].to(x.dtype)  # (B, N, 1)
        if self.training:
            n = x.new_tensor(x.shape[0] * x.shape[1]) if m is None else m.sum()
            mean = (x if m is None else x * m).sum((0, 1)) / n  # (C,)
            sq = (x - mean).square()
            var = (sq if m is None else sq * m).sum((0, 1)) / n  # biased, for normalising
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return y if m is None else y * m


class LinearBNReLU(nn.Module):
    """A linear layer followed by batch norm and ReLU: the paper's rule, "all linear layers
    ... are followed by a Batch Normalization and ReLU function unless otherwise noticed"."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out, bias=False)  # the batch norm's bias replaces it
        self.norm = TokenBatchNorm(dim_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.norm(self.linear(x), mask))


class CrossAttention(nn.Module):
    """Multi-head attention from ``query`` (B, N_q, C) to ``memory`` (B, N_k, C)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, Nq, C = query.shape
        q = self.q(query).reshape(B, Nq, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N_q, hd)
        k, v = self.kv(memory).reshape(B, -1, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, h, N_k, hd)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N_k)
        out = attention(q, k, v, mask)  # (B, h, N_q, hd)
        return self.proj(out.transpose(1, 2).reshape(B, Nq, C))


class MutualMaps(NamedTuple):
    """One M3Dec layer's attention, for figures: LAV's weights (each word over the pixels)
    and VAL's (each pixel over the words; None for the generic baseline)."""

    layer: int  # 1-based M3Dec layer
    lav: torch.Tensor  # (B, N_t, HW), softmax over HW, Eq. (2a)
    val: torch.Tensor | None  # (B, HW, N_t), softmax over the words, Eq. (2b)


class MutualParts(NamedTuple):
    """The intermediate results of Eq. (1)-(2b) for one call (tested against a direct computation)."""

    a_mut: torch.Tensor  # (B, N_t, HW), Eq. (1)
    a_val: torch.Tensor | None  # (B, N_t, HW): the matrix VAL is normalised from (a_mut when shared)
    lav: torch.Tensor  # (B, N_t, C), F_V^a, Eq. (2a)
    val: torch.Tensor | None  # (B, HW, C), F_L^a, Eq. (2b)
    fused: torch.Tensor  # (B, N_t, HW) F_mul = F_V^a (F_L^a)^T; generic: (B, N_t, C) = F_V^a
    lav_weights: torch.Tensor  # (B, N_t, HW)
    val_weights: torch.Tensor | None  # (B, HW, N_t)


class MutualAttention(nn.Module):
    """Multi-Modal Mutual Attention (Fig. 3(b)), or the generic LAV-only attention.

    One head, scaled by 1/sqrt(C) as Eq. (1) writes it. The output projection maps the
    HW channels of F_mul back to C, so the module is built for one number of vision
    tokens (``num_pixels``), as the paper's is.
    """

    def __init__(self, dim: int, num_pixels: int, setting: str = "shared"):
        super().__init__()
        self.setting, self.scale = setting, 1.0 / math.sqrt(dim)
        self.lang_key = nn.Linear(dim, dim)  # F_L^k
        self.vis_key = nn.Linear(dim, dim)  # F_V^k
        self.vis_value = nn.Linear(dim, dim)  # F_V^v
        if setting == "generic":
            self.out = LinearBNReLU(dim, dim)
            return
        self.lang_value = nn.Linear(dim, dim)  # F_L^v
        if setting == "independent":  # "two extra linear project layers applied on two inputs"
            self.lang_key_val = nn.Linear(dim, dim)
            self.vis_key_val = nn.Linear(dim, dim)
        self.out = LinearBNReLU(num_pixels, dim)  # F_mul's HW channels -> C

    def parts(self, lang: torch.Tensor, vis: torch.Tensor, word_mask: torch.Tensor) -> MutualParts:
        """lang (B, N_t, C), vis (B, HW, C), word_mask (B, N_t) bool -> Eq. (1)-(2b) and F_mul."""
        a_mut = self.lang_key(lang) @ self.vis_key(vis).transpose(1, 2) * self.scale  # (B, N_t, HW), Eq. (1)
        lav_w = at_least_fp32(a_mut).softmax(dim=-1).to(vis.dtype)  # each word over the pixels
        lav = lav_w @ self.vis_value(vis)  # (B, N_t, C), Eq. (2a)
        if self.setting == "generic":
            return MutualParts(a_mut, None, lav, None, lav, lav_w, None)
        a_val = a_mut
        if self.setting == "independent":
            a_val = self.lang_key_val(lang) @ self.vis_key_val(vis).transpose(1, 2) * self.scale  # (B, N_t, HW)
        logits = at_least_fp32(a_val).transpose(1, 2).masked_fill(~word_mask[:, None, :], float("-inf"))
        val_w = logits.softmax(dim=-1).to(vis.dtype)  # (B, HW, N_t): each pixel over the real words
        val = val_w @ self.lang_value(lang)  # (B, HW, C), Eq. (2b)
        fused = lav @ val.transpose(1, 2)  # (B, N_t, HW): each word's LAV as a kernel applied to VAL
        return MutualParts(a_mut, a_val, lav, val, fused, lav_w, val_w)

    def forward(self, lang: torch.Tensor, vis: torch.Tensor, word_mask: torch.Tensor
                ) -> tuple[torch.Tensor, MutualParts]:
        """The module's output (B, N_t, C) (padded words 0) and its parts."""
        p = self.parts(lang, vis, word_mask)
        return self.out(p.fused, word_mask), p


class M3DecLayer(nn.Module):
    """One M3Dec layer (Fig. 3(c)).

    F_q = LN(query + MHSA(query)); M = M3Att(F_q, F_enc); out = LN(F_q + MHCA(F_q, M))
    (the multimodal feature as key and value); then an MLP sub-block, LN(out + MLP(out)).
    Residuals, post-norm LayerNorms and the MLP are those of a transformer decoder layer
    (the paper's [5]); the text names the three attention steps only (restr.book.fidelity).
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, num_pixels: int, setting: str, eps: float):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mutual = MutualAttention(dim, num_pixels, setting)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def forward(self, query: torch.Tensor, enc: torch.Tensor, word_mask: torch.Tensor
                ) -> tuple[torch.Tensor, MutualParts]:
        """query (B, N_t, C), enc (B, HW, C) -> F_dec (B, N_t, C) and the M3Att parts."""
        f_q = self.norm1(query + self.self_attn(query, word_mask)[0])  # (B, N_t, C)
        fused, parts = self.mutual(f_q, enc, word_mask)  # (B, N_t, C) multimodal feature
        x = self.norm2(f_q + self.cross_attn(f_q, fused, word_mask))
        return self.norm3(x + self.mlp(x)), parts


class IMIBlock(nn.Module):
    """Iterative Multi-Modal Interaction between M3Dec layers n and n + 1 (Fig. 4).

    ``learned``: F_l^n = the language transform of F_l^(n-1) (a linear layer, with batch
    norm and ReLU by the paper's rule); Eq. (3) A_l^n = softmax(ReLU[F_dec^n W_a^n] (F_l^n)^T)
    over the real words (no 1/sqrt(C): as written); F_i^n = A_l^n ReLU[F_l^n W'_l^n];
    F'_dec^n = BN(F_dec^n + w_ci^n F_i^n) with a learnable scalar w_ci^n (starting at 1).
    ``same`` (Table II's IMI*): F'_dec^n = BN(F_dec^n + w_ci^n F_t), every layer the same
    language feature.
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "learned":
            self.lang_transform = LinearBNReLU(dim, dim)  # F_l^(n-1) -> F_l^n
            self.attn_proj = nn.Linear(dim, dim)  # W_a^n
            self.value_proj = nn.Linear(dim, dim)  # W'_l^n
        self.weight = nn.Parameter(torch.ones(()))  # w_ci^n; the text gives no start value
        self.norm = TokenBatchNorm(dim)

    def forward(self, f_dec: torch.Tensor, lang: torch.Tensor, f_t: torch.Tensor, word_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """f_dec, lang (F_l^(n-1)), f_t (B, N_t, C) -> the next query F'_dec^n and F_l^n."""
        if self.mode == "same":
            return self.norm(f_dec + self.weight * f_t, word_mask), f_t
        lang = self.lang_transform(lang, word_mask)  # F_l^n (B, N_t, C)
        logits = F.relu(self.attn_proj(f_dec)) @ lang.transpose(1, 2)  # (B, N_t, N_t), Eq. (3)
        logits = at_least_fp32(logits).masked_fill(~word_mask[:, None, :], float("-inf"))
        a_l = logits.softmax(dim=-1).to(lang.dtype)  # A_l^n
        f_i = a_l @ F.relu(self.value_proj(lang))  # F_i^n (B, N_t, C)
        return self.norm(f_dec + self.weight * f_i, word_mask), lang


class M3Dec(nn.Module):
    """N_dec M3Dec layers; the language features F_t are the first query, each layer's
    output (after the IMI block, when there is one) the next one's."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim, n = cfg.m3att_width, cfg.m3att_layers
        hidden = int(dim * cfg.fusion_mlp_ratio)
        self.layers = nn.ModuleList(
            M3DecLayer(dim, cfg.m3att_heads, hidden, cfg.num_patches, cfg.m3att_attention, cfg.norm_eps)
            for _ in range(n))
        self.imi = None if cfg.m3att_imi == "off" else nn.ModuleList(IMIBlock(dim, cfg.m3att_imi) for _ in range(n - 1))

    def forward(self, f_t: torch.Tensor, enc: torch.Tensor, word_mask: torch.Tensor, return_attention: bool = False
                ) -> tuple[torch.Tensor, list[MutualMaps] | None]:
        """f_t (B, N_t, C), enc (B, HW, C) -> the last layer's F_dec (B, N_t, C) and, if asked,
        each layer's attention maps."""
        query, lang = f_t, f_t
        maps: list[MutualMaps] | None = [] if return_attention else None
        for n, layer in enumerate(self.layers):
            f_dec, parts = layer(query, enc, word_mask)
            if maps is not None:
                maps.append(MutualMaps(n + 1, parts.lav_weights, parts.val_weights))
            query = f_dec
            if self.imi is not None and n < len(self.imi):
                query, lang = self.imi[n](f_dec, lang, f_t, word_mask)
        return f_dec, maps
