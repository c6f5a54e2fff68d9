"""Multimodal fusion encoder: the three variants of Sec. 4.3 / Fig. 3.

* ``vme``: one encoder over [visual, linguistic, seed] (all tokens together);
* ``ime``: a visual-linguistic encoder over [visual, linguistic] and, beside it, a
  linguistic-seed encoder over [linguistic, seed] (the seed never sees the image);
* ``cme``: the paper's: the visual-linguistic encoder first, then the linguistic-seed
  encoder over [visual-attended linguistic features, seed] (Eq. (7)-(8)).

With ``shared`` (CME-dagger) each sub-encoder holds a single block applied n times.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config import ModelConfig
from .blocks import Block


class SeedAttention(NamedTuple):
    """The class seed's attention in one fusion layer, averaged over heads.

    ``weights`` is (B, N_v + N_l + 1) over [visual, linguistic, seed] positions; the
    positions the seed cannot attend to in this layer (visual tokens in IME/CME) are 0.
    """

    layer: int  # 1-based index of the fusion layer (f_1 ... f_n)
    weights: torch.Tensor
    num_visual: int
    num_words: int

    @property
    def visual(self) -> torch.Tensor:  # (B, N_v)
        return self.weights[:, : self.num_visual]

    @property
    def language(self) -> torch.Tensor:  # (B, N_l)
        return self.weights[:, self.num_visual : self.num_visual + self.num_words]

    @property
    def seed(self) -> torch.Tensor:  # (B,)
        return self.weights[:, -1]


class FusionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.variant = cfg.fusion
        self.layers = cfg.fusion_layers
        self.shared = cfg.shared
        hidden = int(cfg.dim * cfg.fusion_mlp_ratio)

        def stack(n: int) -> nn.ModuleList:
            count = 1 if cfg.shared else n
            return nn.ModuleList(Block(cfg.dim, cfg.fusion_heads, hidden, "pre", cfg.drop_path) for _ in range(count))

        if self.variant == "vme":
            self.blocks = stack(self.layers)
            self.steps = self.layers
        else:
            self.steps = self.layers // 2
            self.vl_blocks = stack(self.steps)  # visual-linguistic encoder, theta_vl
            self.ls_blocks = stack(self.steps)  # linguistic-seed encoder, theta_ls
        self.seed = nn.Parameter(torch.empty(1, 1, cfg.dim))
        nn.init.trunc_normal_(self.seed, std=0.02)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)  # "LN is applied to the output of the encoder"

    @staticmethod
    def _run(blocks: nn.ModuleList, steps: int, x, key_mask, query_index):
        """Apply ``steps`` layers (a shared stack repeats its single block)."""
        weights = []
        for i in range(steps):
            block = blocks[i if len(blocks) > 1 else 0]
            x, w = block(x, key_mask, query_index)
            weights.append(w)
        return x, weights

    def forward(
        self,
        visual: torch.Tensor,  # (B, N_v, D)
        words: torch.Tensor,  # (B, N_l, D)
        word_mask: torch.Tensor | None = None,  # (B, N_l) bool; None: no padding mask
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, list[SeedAttention] | None]:
        """Return patch-wise multimodal features z'_v (B, N_v, D), the adaptive
        classifier e'_s (B, D) and, if asked, the seed's attention per seed layer."""
        B, Nv, D = visual.shape
        Nl = words.shape[1]
        seed = self.seed.expand(B, -1, -1).to(visual.dtype)
        ones_v = visual.new_ones(B, Nv, dtype=torch.bool)
        ones_s = visual.new_ones(B, 1, dtype=torch.bool)
        attn: list[SeedAttention] | None = [] if return_attention else None

        if self.variant == "vme":
            x = torch.cat([visual, words, seed], dim=1)  # (B, N_v + N_l + 1, D)
            mask = None if word_mask is None else torch.cat([ones_v, word_mask, ones_s], dim=1)
            x, ws = self._run(self.blocks, self.steps, x, mask, Nv + Nl if return_attention else None)
            z_v, e_s = x[:, :Nv], x[:, -1]
            if attn is not None:
                attn.extend(SeedAttention(i + 1, w, Nv, Nl) for i, w in enumerate(ws))
        else:
            vl_mask = None if word_mask is None else torch.cat([ones_v, word_mask], dim=1)
            x, _ = self._run(self.vl_blocks, self.steps, torch.cat([visual, words], dim=1), vl_mask, None)
            z_v, z_l = x[:, :Nv], x[:, Nv:]
            ls_words = z_l if self.variant == "cme" else words  # IME: the seed sees the raw words only
            ls_mask = None if word_mask is None else torch.cat([word_mask, ones_s], dim=1)
            y, ws = self._run(self.ls_blocks, self.steps, torch.cat([ls_words, seed], dim=1), ls_mask,
                              Nl if return_attention else None)
            e_s = y[:, -1]
            if attn is not None:
                for i, w in enumerate(ws):  # (B, N_l + 1) -> (B, N_v + N_l + 1), zeros on visual tokens
                    full = torch.cat([w.new_zeros(B, Nv), w], dim=1)
                    attn.append(SeedAttention(self.steps + i + 1, full, Nv, Nl))
        return self.norm(z_v), self.norm(e_s), attn
