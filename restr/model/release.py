"""Weights of the authors' release (github.com/SouthFlame/restr) in this package's layout.

A checkpoint saved by the release's ``train_restr.py`` (``model.state_dict()`` of its
``ReSTR``) loads into the ``release`` preset's model after :func:`from_release_state_dict`:

    from restr.config import get_preset
    from restr.model import build_model
    from restr.model.release import from_release_state_dict

    cfg = get_preset("release", model={"vit_weights": None}).model   # weights come from the file
    model = build_model(cfg)
    model.load_state_dict(from_release_state_dict(torch.load("Gref_400000.pth")))

Only names and shapes change: the release's 1 x 1 decoder convolutions ``(out, in, 1,
1)`` become linear weights ``(out, in)``; its ``proj_patch`` / ``proj_cls`` are already
right-multiplied D x D matrices, as ``head.patch_proj`` / ``head.class_proj`` are. The
ViT's classification head and the GloVe table's copy are dropped. The model must be
built with the release's vocabulary size (12,112 words for its G-Ref vocabulary).
"""
from __future__ import annotations

import re

import torch

# release prefix -> ours (applied in order; the first match wins)
_RENAMES: list[tuple[str, str]] = [
    (r"^encoder_v\.head(_dist)?\..*$", ""),  # ImageNet classifier: not used
    (r"^encoder_v\.", "vision.vit."),
    (r"^encoder_l\.embedding\.weight$", "language.embed.weight"),
    (r"^encoder_l\.blocks\.", "language.blocks."),
    (r"^encoder_l\.proj_lang\.", "language.out_proj.0."),
    (r"^encoder_l\.lang_norm\.", "language.out_proj.1."),
    (r"^fusion_module\.proj_v\.", "vis_proj."),
    (r"^fusion_module\.proj_l\.", "lang_proj."),
    (r"^fusion_module\.seed_emb$", "fusion.seed"),
    (r"^fusion_module\.proj_patch$", "head.patch_proj"),
    (r"^fusion_module\.proj_cls$", "head.class_proj"),
    (r"^fusion_module\.blocks_vl\.", "fusion.vl_blocks."),
    (r"^fusion_module\.blocks_ls\.", "fusion.ls_blocks."),
    (r"^fusion_module\.norm\.", "fusion.norm."),
]
_DECODER = re.compile(r"^fusion_module\.decoder\.(\d+)\.(?:up\.1\.)?weight$")


def from_release_state_dict(state: dict[str, torch.Tensor], decoder_blocks: int = 4) -> dict[str, torch.Tensor]:
    """The release's ``ReSTR.state_dict()`` renamed (and decoder weights reshaped) for ours.

    ``decoder_blocks`` is K = log2(P) (4 for P = 16): the release's ``decoder`` list holds
    K up-blocks and then the final 1 x 1 convolution. Raises ``KeyError`` naming any key
    it does not know, so a different release model is never half-loaded.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        m = _DECODER.match(key)
        if m:
            i = int(m.group(1))
            name = f"decoder.blocks.{i}.weight" if i < decoder_blocks else "decoder.out.weight"
            out[name] = value.reshape(value.shape[0], value.shape[1])  # (out, in, 1, 1) -> (out, in)
            continue
        for pattern, repl in _RENAMES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key) if repl else ""
                if new:
                    out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"keys the release converter does not know: {', '.join(sorted(unknown)[:12])}")
    return out
