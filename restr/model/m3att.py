"""M3Att assembled (Liu et al., "Multi-Modal Mutual Attention and Iterative Interaction
for Referring Image Segmentation"), on the book's vision and language encoders.

Fig. 2 of that paper, with ReSTR's encoders in place of its CNN and BiLSTM, so that a
comparison with ReSTR isolates the fusion and the decoding:

    ViT patch tokens -> linear+BN+ReLU to C -> transformer encoder (N_enc) -> F_enc (B, HW, C)
    words -> GloVe + transformer encoder -> linear+BN+ReLU to C -> F_t (B, N_t, C)
    M3Dec (N_dec layers with IMI between them, :mod:`restr.model.mutual`) -> F_dec (B, N_t, C)
    mask decoder (Fig. 6) on F_enc and F_dec -> mask logits (B, 1, H, W)
    LFR (Eq. (4)), while training: F_rec and F_proj, whose distance is the loss of Eq. (5)

Every choice the paper leaves open (widths, kernel sizes, upsampling, the sentence
feature) is listed, with its reason, in the M3Att table of :mod:`restr.book.fidelity`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import Block, SelfAttention
from .language import LanguageEncoder, sinusoidal_positions
from .mutual import LinearBNReLU, M3Dec, MutualMaps
from .vision import VisionEncoder


class M3AttOutput(NamedTuple):
    mask_logits: torch.Tensor  # (B, 1, H, W): pixel-level prediction before the sigmoid
    # (B, 1, H/P, W/P): the mask logits averaged over each patch. M3Att makes no patch-level
    # prediction; this is for the displays that show ReSTR's patch map, and is never trained.
    patch_logits: torch.Tensor
    seed_attention: None = None  # ReSTR's class seed: M3Att has none
    # (F_rec, F_proj), each (B, C): Eq. (4) and its reconstruction, computed in training
    # mode with LFR on (the paper: LFR is "computationally free during inference"); else None
    reconstruction: tuple[torch.Tensor, torch.Tensor] | None = None
    mutual_attention: list[MutualMaps] | None = None  # per M3Dec layer, with return_attention=True


def words_first(x: torch.Tensor, word_mask: torch.Tensor, slots: int) -> torch.Tensor:
    """x (B, L, ...) -> (B, slots, ...): the real words' rows first, in their order, then
    zeros (padded rows must already be 0), so that row j is the j-th word whatever the padding."""
    order = torch.argsort((~word_mask).to(torch.int8), dim=1, stable=True)  # (B, L): real words first
    index = order.view(*order.shape, *([1] * (x.ndim - 2))).expand_as(x)
    x = x.gather(1, index)
    pad = slots - x.shape[1]
    return F.pad(x, (0, 0) * (x.ndim - 2) + (0, pad)) if pad > 0 else x[:, :slots]


class VisionTransformerEncoder(nn.Module):
    """The transformer encoder over the projected vision features (N_enc post-norm layers,
    as the transformer of the paper's [5]): F_vis (B, HW, C) -> F_enc (B, HW, C)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.m3att_width
        hidden = int(dim * cfg.fusion_mlp_ratio)
        self.blocks = nn.ModuleList(Block(dim, cfg.m3att_heads, hidden, "post", eps=cfg.norm_eps)
                                    for _ in range(cfg.m3att_enc_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x, _ = block(x)
        return x


class MaskDecoder(nn.Module):
    """The mask decoder of Fig. 6 on the encoder output F_enc and M3Dec's output F_dec.

    F_dec goes through a self-attention module (residual and LayerNorm); its N_t vectors
    then serve as the kernels of a 1 x 1 convolution over F_enc, giving one map per word
    (padded words' maps are 0, real words first: map j is word j); four stacked 3 x 3
    convolutions (widths 2C, C, C/2 and then 1, the first three with batch norm and ReLU)
    with a bilinear x2 upsampling between each two, then bilinear to the input size if
    the patch is larger than 8.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim, width = cfg.m3att_width, 2 * cfg.m3att_width  # the paper: C = 256, the decoder's 512
        self.slots = cfg.max_words
        self.self_attn = SelfAttention(dim, cfg.m3att_heads)
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        chans = [cfg.max_words, width, width // 2, width // 4]
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
            for a, b in zip(chans[:-1], chans[1:]))
        self.out = nn.Conv2d(chans[-1], 1, 3, padding=1)
        self.upsamplings = min(3, cfg.decoder_blocks)  # x2 after each of the first convolutions

    def forward(self, f_dec: torch.Tensor, enc: torch.Tensor, word_mask: torch.Tensor, grid: tuple[int, int],
                size: tuple[int, int]) -> torch.Tensor:
        """f_dec (B, N_t, C), enc (B, HW, C) -> mask logits (B, 1, H, W)."""
        B = f_dec.shape[0]
        kernels = self.norm(f_dec + self.self_attn(f_dec, word_mask)[0])  # (B, N_t, C)
        maps = kernels @ enc.transpose(1, 2)  # (B, N_t, HW): a 1 x 1 convolution with F_dec's vectors as kernels
        maps = words_first(maps * word_mask[..., None].to(maps.dtype), word_mask, self.slots)  # (B, slots, HW)
        # (B, slots, h, w), channels-last: the CPU's convolutions run about 25 % faster on it
        x = maps.reshape(B, self.slots, *grid).contiguous(memory_format=torch.channels_last)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < self.upsamplings:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.out(x)  # (B, 1, h', w')
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class LanguageReconstruction(nn.Module):
    """Language Feature Reconstruction (Fig. 5, Eq. (4)).

    Target: F_proj = 1/(N_t + 1) sum ReLU([(F_t + e) (+) F_t'] W_proj), the sum over the
    N_t real words and the sentence feature, e the sinusoidal ("cosine") word positions
    counted from the first word, W_proj a bias-free C x C matrix. Reconstruction: three
    stacked linear layers (each with batch norm and ReLU, the paper's rule) on the last
    M3Dec output, averaged over the real words: F_rec. Both are (B, C); the loss is their
    mean squared error (:func:`restr.model.losses.m3att_loss`).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.m3att_width
        self.proj = nn.Linear(dim, dim, bias=False)  # W_proj
        self.layers = nn.ModuleList(LinearBNReLU(dim, dim) for _ in range(3))
        self.register_buffer("positions", sinusoidal_positions(cfg.max_words, dim), persistent=False)

    def target(self, f_t: torch.Tensor, sentence: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """F_proj (B, C) of Eq. (4) from F_t (B, N_t, C) and F_t' (B, C)."""
        m = word_mask[..., None].to(f_t.dtype)  # (B, N_t, 1)
        index = (word_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # each word's position from the first
        words = F.relu(self.proj(f_t + self.positions[index].to(f_t.dtype)))  # (B, N_t, C)
        total = (words * m).sum(1) + F.relu(self.proj(sentence))  # (B, C)
        return total / (m.sum(1) + 1)

    def reconstruct(self, f_dec: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """F_rec (B, C): the three layers on F_dec (B, N_t, C), averaged over the real words."""
        x = f_dec
        for layer in self.layers:
            x = layer(x, word_mask)  # padded rows 0
        return x.sum(1) / word_mask.sum(1, keepdim=True).to(x.dtype)

    def forward(self, f_t, sentence, f_dec, word_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reconstruct(f_dec, word_mask), self.target(f_t, sentence, word_mask)


class M3Att(nn.Module):
    """The whole M3Att model. ``model(images, words)`` or ``model(images, words, image_index)``,
    with the inputs of :class:`restr.model.ReSTR` (front-padded word ids, 0 = padding).

    The input must be the configured size (``model.image_size``): M3Att's projection of
    F_mul's HW channels back to C is built for one number of vision tokens.
    """

    def __init__(self, cfg: ModelConfig, word_vectors: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg.validate()
        dim = cfg.m3att_width
        self.vision = VisionEncoder(cfg)
        self.language = LanguageEncoder(cfg, word_vectors)
        self.vis_proj = LinearBNReLU(self.vision.dim, dim)
        self.lang_proj = LinearBNReLU(self.language.out_dim, dim)
        self.encoder = VisionTransformerEncoder(cfg)
        self.m3dec = M3Dec(cfg)
        self.mask_decoder = MaskDecoder(cfg)
        self.lfr = LanguageReconstruction(cfg) if cfg.m3att_lfr else None

    def cost_groups(self) -> dict[str, list[str]]:
        """Rows of ``python -m restr cost``: module paths per row (every parameter in one)."""
        groups = {"vision": ["vision"], "language": ["language"], "projection": ["vis_proj", "lang_proj"],
                  "encoder": ["encoder"], "fusion": ["m3dec"], "decoder": ["mask_decoder"]}
        if self.lfr is not None:
            groups["lfr"] = ["lfr"]
        return groups

    def _check(self, images: torch.Tensor, words: torch.Tensor, image_index: torch.Tensor | None) -> None:
        B, (_, _, H, W) = words.shape[0], images.shape
        if (H, W) != self.cfg.image_hw:
            raise ValueError(f"image size {H}x{W}: this M3Att model takes {self.cfg.image_hw[0]}x"
                             f"{self.cfg.image_hw[1]} only (its F_mul projection is built for "
                             f"{self.cfg.num_patches} vision tokens); letterbox to model.image_size")
        if image_index is None and images.shape[0] != B:
            raise ValueError(f"{images.shape[0]} images but {B} expressions")
        if image_index is not None and image_index.shape != (B,):
            raise ValueError(f"image_index must have shape ({B},), one image per expression; "
                             f"got {tuple(image_index.shape)}")
        if words.device.type == "cpu" and not torch.compiler.is_compiling():  # free on a CPU only
            if bool((words == 0).all(dim=1).any()):
                raise ValueError("an expression with no words (all padding) was given; every expression needs a word")

    def forward(self, images: torch.Tensor, words: torch.Tensor, image_index: torch.Tensor | None = None,
                *, return_attention: bool = False) -> M3AttOutput:
        self._check(images, words, image_index)
        H, W = images.shape[-2:]
        feats = self.vision(images)  # (B or U, HW, D_v)
        if image_index is not None:
            feats = feats[image_index]  # (B, HW, D_v)
        enc = self.encoder(self.vis_proj(feats))  # F_enc (B, HW, C)
        lang, word_mask = self.language(words)  # (B, N_t, C_l), (B, N_t)
        f_t = self.lang_proj(lang, word_mask)  # (B, N_t, C), padded rows 0
        f_dec, maps = self.m3dec(f_t, enc, word_mask, return_attention)  # (B, N_t, C)
        mask_logits = self.mask_decoder(f_dec, enc, word_mask, self.cfg.grid, (H, W))  # (B, 1, H, W)
        patch = self.cfg.patch_size
        patch_logits = F.avg_pool2d(mask_logits, kernel_size=patch, stride=patch)  # (B, 1, H/P, W/P)
        reconstruction = None
        if self.lfr is not None and self.training:
            # F_t': the mean of the real words' features (a transformer has no final state)
            sentence = f_t.sum(1) / word_mask.sum(1, keepdim=True).to(f_t.dtype)  # (B, C)
            reconstruction = self.lfr(f_t, sentence, f_dec, word_mask)
        return M3AttOutput(mask_logits, patch_logits, None, reconstruction, maps)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split for the optimiser: the ViT and everything else (as ReSTR's)."""
        vit = [p for p in self.vision.parameters() if p.requires_grad]
        ids = {id(p) for p in vit}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return {"vision": vit, "rest": rest}
