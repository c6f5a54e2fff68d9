"""ReSTR assembled: vision and language encoders, fusion encoder, decoder.

``model.fusion = "concat-conv"`` swaps the fusion encoder and Eq. (9)'s adaptive
classifier for the convolutional baseline (:mod:`.convfusion`); everything else is shared.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import CONV_FUSION, ModelConfig
from .convfusion import ConcatConvFusion, ConvPatchHead
from .decoder import CoarseToFineDecoder, PatchHead
from .fusion import FusionEncoder, SeedAttention
from .init import release_init_
from .language import LanguageEncoder
from .m3att import M3Att
from .vision import VisionEncoder


class ReSTROutput(NamedTuple):
    mask_logits: torch.Tensor  # (B, 1, H, W): pixel-level prediction before the sigmoid
    patch_logits: torch.Tensor  # (B, 1, H/P, W/P): patch-level prediction before the sigmoid
    seed_attention: list[SeedAttention] | None = None


class ReSTR(nn.Module):
    """The whole model. ``model(images, words)`` or ``model(images, words, image_index)``.

    images: (B, 3, H, W) normalised, H and W multiples of the patch size.
    words:  (B, L) word ids, L <= max_words, 0 = padding (at the front).
    image_index: optional (B,) long tensor. When given, ``images`` holds U distinct
        images (U, 3, H, W) and expression b refers to ``images[image_index[b]]``: each
        image goes through the ViT once, however many expressions it has.
    """

    def __init__(self, cfg: ModelConfig, word_vectors: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg.validate()
        self.vision = VisionEncoder(cfg)
        self.language = LanguageEncoder(cfg, word_vectors)
        # Fusion input (Sec. 3.2): each modality L2-normalised along channels, then its own
        # linear projection to D. Kept outside FusionEncoder so that Table 3(b)'s counts
        # (transformer layers only) can be read off the fusion module directly.
        self.vis_proj = nn.Linear(self.vision.dim, cfg.dim)
        self.lang_proj = nn.Linear(self.language.out_dim, cfg.dim)
        if cfg.init == "release":
            release_init_(self.vis_proj)
            release_init_(self.lang_proj)
        if cfg.proj_init_std is not None:
            for proj in (self.vis_proj, self.lang_proj):
                nn.init.normal_(proj.weight, std=cfg.proj_init_std)  # unit-norm input -> std-sized output
                nn.init.zeros_(proj.bias)
        conv = cfg.fusion == CONV_FUSION  # the convolutional baseline: its own fusion and patch logit
        self.fusion = ConcatConvFusion(cfg) if conv else FusionEncoder(cfg)
        self.head = ConvPatchHead(cfg) if conv else PatchHead(cfg)
        self.decoder = CoarseToFineDecoder(cfg) if cfg.decoder else None

    def forward(self, images: torch.Tensor, words: torch.Tensor, image_index: torch.Tensor | None = None,
                *, return_attention: bool = False) -> ReSTROutput:
        B, (_, _, H, W) = words.shape[0], images.shape
        P = self.cfg.patch_size
        if H % P or W % P:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {P}; letterbox it first")
        if image_index is None and images.shape[0] != B:
            raise ValueError(f"{images.shape[0]} images but {B} expressions")
        if image_index is not None and image_index.shape != (B,):
            raise ValueError(f"image_index must have shape ({B},), one image per expression; "
                             f"got {tuple(image_index.shape)}")
        if words.device.type == "cpu" and not torch.compiler.is_compiling():
            # checked on CPU only, where reading a value costs nothing: on a GPU it would stall
            # every step (the data layer rejects empty expressions before they get here)
            self._refuse_empty(words)
        gh, gw = H // P, W // P

        feats = self.vision(images)  # (B or U, N_v, D_v)
        if image_index is not None:
            feats = feats[image_index]  # (B, N_v, D_v): each expression gets its image's features
        z_v = self.vis_proj(F.normalize(feats, dim=-1))  # (B, N_v, D)
        lang, mask = self.language(words)  # (B, N_l, C), (B, N_l)
        z_l = self.lang_proj(F.normalize(lang, dim=-1))  # (B, N_l, D)
        word_mask = mask if self.cfg.mask_padding else None
        if not self.cfg.mask_padding:
            z_l = z_l * mask[..., None].to(z_l.dtype)  # release: projected padding positions zeroed

        if isinstance(self.fusion, ConcatConvFusion):  # averages the real words; convolves on the grid
            zv_fused, e_s, attn = self.fusion(z_v, z_l, mask, (gh, gw), return_attention)
        else:
            zv_fused, e_s, attn = self.fusion(z_v, z_l, word_mask, return_attention)
        patch_logits, masked = self.head(zv_fused, e_s)  # (B, N_v), (B, N_v, D)
        patch_map = patch_logits.view(B, 1, gh, gw)

        if self.decoder is None:
            mask_logits = F.interpolate(patch_map, size=(H, W), mode="bilinear",
                                        align_corners=self.cfg.upsample_align_corners)
        else:
            x = torch.cat([z_v, masked], dim=-1)  # (B, N_v, 2D): projected visual features + masked features
            x = x.transpose(1, 2).reshape(B, -1, gh, gw)  # (B, 2D, gh, gw)
            mask_logits = self.decoder(x)
        return ReSTROutput(mask_logits, patch_map, attn)

    @staticmethod
    def _refuse_empty(words: torch.Tensor) -> None:
        if bool((words == 0).all(dim=1).any()):
            raise ValueError("an expression with no words (all padding) was given; every expression needs a word")

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split for the optimiser: the ViT (0.1 x lr) and everything else."""
        vit = [p for p in self.vision.parameters() if p.requires_grad]
        ids = {id(p) for p in vit}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return {"vision": vit, "rest": rest}


def build_model(cfg: ModelConfig, word_vectors: np.ndarray | torch.Tensor | None = None) -> nn.Module:
    """The model ``cfg`` describes: ReSTR, or M3Att with ``model.family = "m3att"``."""
    if cfg.family == "m3att":
        return M3Att(cfg, word_vectors)
    return ReSTR(cfg, word_vectors)
