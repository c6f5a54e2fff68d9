"""Scaled dot-product attention, with the kernel chosen for the device and precision.

On a GPU, and on a CPU in fp32, attention runs through ``F.scaled_dot_product_attention``
(fused flash / memory-efficient kernels). On a CPU in bf16 it runs as two explicit
matrix products and a softmax instead: PyTorch's fused CPU kernel is slow in bf16 at
this model's sizes, while a bf16 matrix product uses the CPU's bf16 dot-product
instructions (``python -m restr bench --attention`` prints both, side by side).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cpu_bf16(x: torch.Tensor) -> bool:
    """True when ``x`` lives on the CPU and the computation around it runs in bf16 (the
    tensor is bf16, or bf16 autocast is on)."""
    if x.device.type != "cpu":
        return False
    if x.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d), masked) v for (B, h, N, d) tensors; ``key_mask`` is a
    boolean mask broadcastable to (B, h, N, N), True where a key may be attended to."""
    if not cpu_bf16(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    logits = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, h, N, N)
    if key_mask is not None:
        logits = logits.masked_fill_(~key_mask, float("-inf"))  # logits is ours: in place
    return logits.softmax(dim=-1).to(v.dtype) @ v
