"""Transformer blocks shared by the language and fusion encoders.

Attention runs through :func:`restr.model.attention.attention`: PyTorch's
``F.scaled_dot_product_attention`` (fused kernels on GPU), or explicit matrix products
on a CPU in bf16, where they are faster. When the caller asks for one query's attention weights (the class seed's, for
Table 3(a)), that single row is computed again from the same q and k: O(N) extra work
instead of materialising the N x N matrix.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import attention


class SelfAttention(nn.Module):
    """Multi-head self-attention, Eq. (3)-(5)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,  # (B, N, C)
        key_mask: torch.Tensor | None = None,  # (B, N) bool, True = a real token
        query_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, h, N, hd)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
        out = attention(q, k, v, mask)  # (B, h, N, hd)
        out = self.proj(out.transpose(1, 2).reshape(B, N, C))
        weights = None
        if query_index is not None:
            qi = q[:, :, query_index : query_index + 1]  # (B, h, 1, hd)
            logits = (qi @ k.transpose(-2, -1)).float() / math.sqrt(self.head_dim)  # (B, h, 1, N)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(dim=-1).mean(dim=1)[:, 0]  # (B, N), averaged over heads
        return out, weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path_ramp(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates ramping linearly from 0 to ``rate`` over ``n`` blocks
    (timm's rule, and the release's for its ViT and each fusion sub-encoder)."""
    return [x.item() for x in torch.linspace(0, rate, n, device="cpu")]


class Block(nn.Module):
    """One transformer layer.

    ``style="pre"``: Eq. (1)-(2), ``z' = MSA(LN(z)) + z``, ``z = MLP(LN(z')) + z'``
    (also the ViT's and the fusion encoder's form). ``style="post"``: the release's
    language blocks, ``z' = LN(z + MSA(z))``, ``z = LN(z' + MLP(z'))``.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, style: str = "pre", drop_path: float = 0.0,
                 eps: float = 1e-6):
        super().__init__()
        if style not in ("pre", "post"):
            raise ValueError(f"block style {style!r}: choose 'pre' or 'post'")
        self.style = style
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path = drop_path

    def _residual(self, y: torch.Tensor) -> torch.Tensor:
        # stochastic depth: drop the whole branch per sample while training
        if not self.training or self.drop_path == 0.0:
            return y
        keep = 1.0 - self.drop_path
        shape = (y.shape[0],) + (1,) * (y.ndim - 1)
        return y * y.new_empty(shape).bernoulli_(keep).div_(keep)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.style == "pre":
            a, w = self.attn(self.norm1(x), key_mask, query_index)
            x = x + self._residual(a)
            x = x + self._residual(self.mlp(self.norm2(x)))
        else:
            a, w = self.attn(x, key_mask, query_index)
            x = self.norm1(x + self._residual(a))
            x = self.norm2(x + self._residual(self.mlp(x)))
        return x, w
