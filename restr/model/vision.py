"""Vision encoder: a timm ViT returning patch tokens (class token dropped).

Weights come from one of three places (``ModelConfig.vit_weights``; the trainer also
takes ``"pretrain"``, which it resolves to a local file, see :mod:`restr.pretrain`):

* ``None``: random initialisation (timm's ViT init);
* ``"timm"``: timm's hub, ``pretrained=True`` for ``ModelConfig.vit_name`` (needs internet);
* a local path: ``.safetensors``, ``.pth``/``.pt``/``.bin`` (a state dict, possibly
  wrapped in ``{"model": ...}`` or ``{"state_dict": ...}``) or ``.npz`` (the original
  JAX checkpoints). Position embeddings are resized to the configured grid.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from .attention import cpu_bf16


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, or does not fit the model."""


class VisionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.patch_size = cfg.patch_size
        kwargs = dict(
            img_size=cfg.image_hw,
            patch_size=cfg.patch_size,
            embed_dim=cfg.vit_dim,
            depth=cfg.vit_depth,
            num_heads=cfg.vit_heads,
            mlp_ratio=cfg.vit_mlp_ratio,
            qkv_bias=True,
            num_classes=0,
            global_pool="",
            class_token=True,
            dynamic_img_size=True,  # inputs of other sizes (multiples of P) resample pos_embed
            drop_path_rate=cfg.drop_path,
        )
        if cfg.vit_weights == "timm":
            import timm

            self.vit = timm.create_model(cfg.vit_name, pretrained=True, **{
                k: kwargs[k] for k in ("img_size", "num_classes", "global_pool", "dynamic_img_size", "drop_path_rate")
            })
            if self.vit.embed_dim != cfg.vit_dim or len(self.vit.blocks) != cfg.vit_depth:
                raise WeightsError(
                    f"timm model {cfg.vit_name!r} has width {self.vit.embed_dim} and depth {len(self.vit.blocks)}, "
                    f"but the config asks for vit_dim={cfg.vit_dim}, vit_depth={cfg.vit_depth}"
                )
        else:
            self.vit = VisionTransformer(**kwargs)
            # "pretrain" is the trainer's to resolve (restr.train.vit_weights_for); a model built
            # from such a config elsewhere (cost, bench, tests) gets the architecture only
            if cfg.vit_weights and cfg.vit_weights != "pretrain":
                load_vit_weights(self.vit, cfg.vit_weights)

    @property
    def dim(self) -> int:
        return self.vit.embed_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> patch tokens (B, H/P * W/P, D_v), row-major over the grid."""
        fused = not cpu_bf16(images)  # timm's explicit attention is the fast one on a CPU in bf16
        for block in self.vit.blocks:
            block.attn.fused_attn = fused
        tokens = self.vit.forward_features(images)  # (B, prefix + N_v, D_v), final LN applied
        return tokens[:, self.vit.num_prefix_tokens :]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported with the file name
        raise WeightsError(f"cannot read ViT weights file {path}: {type(exc).__name__}: {exc}") from exc
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"ViT weights file {path} does not hold a state dict of tensors")
    return obj


def load_vit_weights(vit: nn.Module, path_like: str) -> None:
    """Load a local checkpoint into a timm ViT, resizing position embeddings to its grid.

    Raises :class:`WeightsError` naming the file and the keys that are missing,
    unexpected or of the wrong shape.
    """
    from timm.layers import resample_abs_pos_embed

    path = Path(path_like).expanduser()
    if not path.is_file():
        raise WeightsError(f"ViT weights file not found: {path}")
    if path.suffix.lower() == ".npz":
        from timm.models.vision_transformer import _load_weights

        try:
            _load_weights(vit, str(path))
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"cannot load JAX ViT checkpoint {path}: {type(exc).__name__}: {exc}") from exc
        return

    state = _read_state_dict(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.", "pre_logits."))}
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        grid = vit.patch_embed.grid_size
        prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=list(grid), num_prefix_tokens=prefix
        )
    own = vit.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith(("head.", "fc_norm.")))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in state
        if k in own and state[k].shape != own[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}")
        if wrong:
            parts.append(f"shape mismatches: {'; '.join(wrong[:12])}{' ...' if len(wrong) > 12 else ''}")
        raise WeightsError(f"ViT weights file {path} does not fit the model: " + " | ".join(parts))
    vit.load_state_dict(state, strict=False)
