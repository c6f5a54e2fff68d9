"""The cost of a model: parameters and MACs per module, measured under a FLOP counter.

``python -m restr cost --preset paper [--fusion vme] [--shared] [--image-size 320]
[--lang-mlp 1200] [--json]``

MACs are ``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2 for one image and one
expression: matrix products (linear layers, attention, the patch embedding) are
counted; norms, softmax, activations and the bilinear upsampling are not (the usual
convention of MAC counters). Attention is forced onto PyTorch's math path while
counting, so its two matrix products are seen whatever kernel the device would pick.

Rows: ``vision`` (the ViT), ``language`` (the language encoder without its
word-embedding table), ``projection`` (the fusion input projections of Sec. 3.2),
``fusion`` (the fusion encoder's transformer layers, the seed and its final norm: what
Table 3(b) counts; for the ``concat-conv`` baseline its convolution layers),
``decoder`` (Eq. (9)-(10), or the baseline's 1 x 1 patch logit, and the coarse-to-fine decoder),
``total`` (their sum). ``word_embeddings`` is reported separately and not included in
the total: Table 5's count appears to leave the vocabulary-sized table out (its total is
matched without it).

``--family m3att`` counts M3Att (:mod:`restr.model.m3att`) on the same encoders, with its
own rows (the model's ``cost_groups``): ``projection`` (its input projections to C),
``encoder`` (the transformer encoder over the vision features), ``fusion`` (M3Dec with
its IMI blocks), ``decoder`` (the mask decoder of its Fig. 6) and ``lfr`` (Language
Feature Reconstruction: parameters only, it does not run at inference).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..config import CONV_FUSION, ModelConfig
from ..model import build_model

MODULES = ("vision", "language", "projection", "fusion", "decoder")


def _module_groups(model: nn.Module) -> dict[str, list[str]]:
    """Row name -> attribute paths of the modules it covers (a model may name its own)."""
    if hasattr(model, "cost_groups"):
        return model.cost_groups()
    groups = {
        "vision": ["vision"],
        "language": ["language"],
        "projection": ["vis_proj", "lang_proj"],
        "fusion": ["fusion"],
        "decoder": ["head"] + (["decoder"] if getattr(model, "decoder", None) is not None else []),
    }
    return groups


def count_parameters(model: nn.Module) -> dict[str, int]:
    groups = _module_groups(model)
    counts: dict[str, int] = {}
    embed = model.language.embed.weight
    for row, paths in groups.items():
        total = 0
        for path in paths:
            for p in model.get_submodule(path).parameters():
                if p is not embed:
                    total += p.numel()
        counts[row] = total
    counts["total"] = sum(counts[m] for m in groups)
    counts["word_embeddings"] = embed.numel()
    everything = sum(p.numel() for p in model.parameters())
    assert everything == counts["total"] + counts["word_embeddings"], "a parameter is in no profile row"
    return counts


def count_macs(model: nn.Module, image_hw: tuple[int, int], device: str = "cpu", batch: int = 1,
               as_drawn: bool = True) -> dict[str, float]:
    """MACs per row for ``batch`` images (default one), measured under FlopCounterMode.

    ``as_drawn``: count the decoder as the paper draws its blocks (upsample, then the
    linear layer), the form its MACs were reported for; False counts the equivalent
    order the model runs (the linear layer first, on a quarter of the pixels)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg: ModelConfig = model.cfg
    h, w = image_hw
    images = torch.randn(batch, 3, h, w, device=device)
    words = torch.randint(2, cfg.vocab_size, (batch, cfg.max_words), device=device)
    was_training = model.training
    model.eval()
    decoder = getattr(model, "decoder", None)
    if decoder is not None and as_drawn:
        decoder.linear_first = False  # count the decoder as the paper draws it (the same function)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(images, words)
    finally:
        model.train(was_training)
        if decoder is not None:
            decoder.linear_first = True
    flops = counter.get_flop_counts()
    root = type(model).__name__

    def macs_of(path: str) -> float:
        return sum(flops.get(f"{root}.{path}", {}).values()) / 2.0

    macs = {row: sum(macs_of(p) for p in paths) for row, paths in _module_groups(model).items()}
    macs["total"] = sum(flops.get("Global", {}).values()) / 2.0
    counted = sum(macs[m] for m in _module_groups(model))
    if abs(counted - macs["total"]) > 1e-6 * max(1.0, macs["total"]):
        macs["other"] = macs["total"] - counted  # work outside the named modules (none expected)
    return macs


def measure(cfg: ModelConfig, device: str = "cpu") -> dict[str, Any]:
    """Build the model for ``cfg`` (random weights) and measure it.

    ``device="meta"`` runs the same forward on shape-only tensors: identical counts,
    no memory and no arithmetic, which is what the tests use at paper scale.
    """

    cfg = ModelConfig(**{**cfg.__dict__, "vit_weights": None})  # never download to count
    with torch.device(device):
        model = build_model(cfg)
    return {
        "params": count_parameters(model),
        "macs": count_macs(model, cfg.image_hw, device=device),
        "rows": list(_module_groups(model)),
        "config": {
            "image_size": list(cfg.image_hw),
            "patch_size": cfg.patch_size,
            "fusion": cfg.fusion,
            "fusion_layers": cfg.fusion_layers,
            "shared": cfg.shared,
            "decoder": cfg.decoder,
            "head": cfg.head,
            "lang_mlp": cfg.lang_mlp,
            "lang_block": cfg.lang_block,
            "lang_out_proj": cfg.lang_out_proj,
            "vocab_size": cfg.vocab_size,
            "num_patches": cfg.num_patches,
            "max_words": cfg.max_words,
            "family": cfg.family,
            **({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name.startswith("m3att_")}
               if cfg.family == "m3att" else {}),
            **({"m3att_width": cfg.m3att_width} if cfg.family == "m3att" else {}),
        },
    }


def _title(c: dict[str, Any]) -> str:
    h, w = c["image_size"]
    sizes = f"{h}x{w} input, P={c['patch_size']} (N_v={c['num_patches']}, N_l={c['max_words']})"
    if c.get("family") == "m3att":
        return (f"M3Att ({c['m3att_attention']} attention, IMI {c['m3att_imi']}, LFR "
                f"{'on' if c['m3att_lfr'] else 'off'}), N_enc={c['m3att_enc_layers']}, N_dec={c['m3att_layers']}, "
                f"C={c['m3att_width']}, {c['m3att_heads']} heads, {sizes}, language MLP {c['lang_mlp']}")
    if c["fusion"] == CONV_FUSION:  # the baseline: ReSTR's encoders and decoder around a convolutional fusion
        title = f"concat-conv baseline, {c['fusion_layers']} convolution layers"
    else:
        title = f"ReSTR {c['fusion'].upper()}{' (shared)' if c['shared'] else ''}, {c['fusion_layers']} fusion layers"
    return (f"{title}, {sizes}, decoder {'on' if c['decoder'] else 'off'}, head {c['head']}, "
            f"language MLP {c['lang_mlp']}")


def format_table(result: dict[str, Any]) -> str:
    p, m = result["params"], result["macs"]
    lines = [_title(result["config"]), f"{'module':<16}{'params':>14}{'MACs':>14}"]
    rows = list(result.get("rows", MODULES)) + (["other"] if "other" in m else []) + ["total"]
    for row in rows:
        params = f"{p[row] / 1e6:.2f}M" if row in p else ""
        lines.append(f"{row:<16}{params:>14}{m.get(row, 0.0) / 1e9:>13.2f}G")
    lines.append(f"{'word_embeddings':<16}{p['word_embeddings'] / 1e6:>13.2f}M{'(not in total)':>16}")
    return "\n".join(lines)
