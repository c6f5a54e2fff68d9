"""Language encoder: GloVe word embeddings + sinusoidal positions + transformer layers."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from .blocks import Block
from .init import release_init_


def sinusoidal_positions(n: int, dim: int, precision: str = "float64") -> torch.Tensor:
    """The fixed 1D encoding of Vaswani et al.: (n, dim) float32, sin on even channels, cos on odd.

    ``precision="float64"`` computes the table in float64 and rounds it once;
    ``"float32"`` computes every step in float32, as the authors' release does (the two
    differ by a few float32 ulps, which matters only when comparing with the release
    to float64 rounding).
    """
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision {precision!r}: choose float64 or float32")
    dt = torch.float64 if precision == "float64" else torch.float32
    pos = torch.arange(n).to(dt)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=dt) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim, dtype=dt)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.float()


class LanguageEncoder(nn.Module):
    """Words (B, L) of ids, 0 = padding, padded at the front -> features (B, L, C).

    With ``mask_padding`` (default) padding is excluded from attention and positions
    count from the first real word, so the same words give the same features whatever
    the amount of padding. Without it (the release), positions are absolute and padding
    takes part in attention.
    """

    def __init__(self, cfg: ModelConfig, word_vectors: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        self.max_words = cfg.max_words
        self.mask_padding = cfg.mask_padding
        self.embed = nn.Embedding(cfg.vocab_size, cfg.word_dim, padding_idx=0)
        if word_vectors is not None:
            self.load_word_vectors(word_vectors)
        positions = sinusoidal_positions(cfg.max_words, cfg.word_dim, cfg.lang_pos_precision)
        self.register_buffer("positions", positions, persistent=False)
        self.blocks = nn.ModuleList(
            Block(cfg.word_dim, cfg.lang_heads, cfg.lang_mlp, style=cfg.lang_block, eps=cfg.norm_eps)
            for _ in range(cfg.lang_depth)
        )
        # Pre-norm stacks end with a LayerNorm ("LN is applied to the output of the
        # transformer encoder"); post-norm blocks already end with one.
        self.norm = nn.LayerNorm(cfg.word_dim, eps=cfg.norm_eps) if cfg.lang_block == "pre" else nn.Identity()
        if cfg.lang_out_proj:  # release: linear C_l -> D and a LayerNorm
            self.out_proj = nn.Sequential(nn.Linear(cfg.word_dim, cfg.dim), nn.LayerNorm(cfg.dim, eps=cfg.norm_eps))
            self.out_dim = cfg.dim
        else:
            self.out_proj = nn.Identity()
            self.out_dim = cfg.word_dim
        if cfg.init == "release":
            release_init_(self)  # the embedding is left alone (GloVe, or normal(0, 1))

    def load_word_vectors(self, vectors: np.ndarray | torch.Tensor) -> None:
        vectors = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        if tuple(vectors.shape) != tuple(self.embed.weight.shape):
            raise ValueError(
                f"word vectors have shape {tuple(vectors.shape)} but the model expects "
                f"(vocab_size, word_dim) = {tuple(self.embed.weight.shape)}; set model.vocab_size and "
                f"model.word_dim to the vocabulary's size and the GloVe dimension"
            )
        with torch.no_grad():
            self.embed.weight.copy_(vectors)
            self.embed.weight[0].zero_()

    def forward(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return features (B, L, out_dim) and the mask of real words (B, L)."""
        B, L = words.shape
        if L > self.max_words:
            raise ValueError(f"{L} word positions given, the model takes at most max_words={self.max_words}")
        mask = words != 0  # (B, L)
        x = self.embed(words)  # (B, L, C)
        if self.mask_padding:
            index = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # position of each word from the first one
        else:
            index = torch.arange(L, device=words.device).expand(B, L)
        x = x + self.positions[index]
        key_mask = mask if self.mask_padding else None
        for block in self.blocks:
            x, _ = block(x, key_mask)
        return self.out_proj(self.norm(x)), mask
