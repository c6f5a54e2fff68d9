"""Vision encoder: a timm ViT returning patch tokens (class token dropped).

Weights come from one of three places (``ModelConfig.vit_weights``; the trainer also
takes ``"pretrain"``, which it resolves to a local file, see :mod:`restr.engine.pretrain`):

* ``None``: random initialisation (timm's ViT init, or the release's with ``init=release``);
* ``"timm"``: timm's hub (``ModelConfig.vit_name``, by default
  ``vit_base_patch16_384.augreg_in21k_ft_in1k``, the release's ViT); needs the internet
  once, then the local Hugging Face cache;
* a local path: ``.safetensors``, ``.pth``/``.pt``/``.bin`` (a state dict, possibly
  wrapped in ``{"model": ...}`` or ``{"state_dict": ...}``) or ``.npz`` (the original
  JAX checkpoints).

Either way the position embeddings are resized from the checkpoint's grid to the
configured one (24 x 24 at 384 px to 30 x 30 at 480 px) with ``vit_pos_resize``:
antialiased bicubic (timm 1.x, ours) or plain bicubic (timm 0.6, the release's pin).
The two differ even when upsampling: PyTorch's antialiased bicubic uses the cubic
coefficient a = -0.5, the plain one a = -0.75.

Every LayerNorm uses ``norm_eps`` (timm's ViT default 1e-6; the release's ViT 1e-5).

A ViT built without weights starts its position embeddings as ``vit_pos_init`` says:
timm's random init, or :func:`sincos_2d`, a table in which patches near each other on the
grid have similar embeddings. Both are learned from there. Why the second exists: the tiny
ViT's classification start (restr.engine.pretrain) is too short, and its object-centred
crops too indifferent to where a thing is, to teach the embeddings the grid: after it their
similarity does not fall with distance on the grid (correlation -0.08), where an ImageNet
ViT's does (Dosovitskiy et al., Fig. 7). The segmentation model then has to learn the grid
while fine-tuning, and words that name a place ("leftmost", "in the top left corner") wait
for it: see book/protocol.md for what that did to the main arm's learning curve.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .attention import cpu_bf16
from .init import release_init_


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, or does not fit the model."""


class VisionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from timm.layers import LayerNorm
        from timm.models.vision_transformer import VisionTransformer

        self.patch_size = cfg.patch_size
        self.vit = VisionTransformer(
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
            drop_path_rate=cfg.drop_path,  # ramped 0 -> drop_path over the blocks
            norm_layer=partial(LayerNorm, eps=cfg.norm_eps),
        )
        if cfg.init == "release":
            release_vit_init_(self.vit)
        if cfg.vit_pos_init == "sincos":  # weights loaded below replace it
            with torch.no_grad():
                grid = tuple(self.vit.patch_embed.grid_size)
                self.vit.pos_embed.zero_()  # the class token's position: zeros
                self.vit.pos_embed[0, self.vit.num_prefix_tokens:] = sincos_2d(grid, self.vit.embed_dim)
        if cfg.vit_weights == "timm":
            load_vit_state(self.vit, hub_state_dict(cfg.vit_name), f"timm's {cfg.vit_name}", cfg.vit_pos_resize)
        elif cfg.vit_weights and cfg.vit_weights != "pretrain":
            # "pretrain" is the trainer's to resolve (restr.engine.trainer.vit_weights_for); a model built
            # from such a config elsewhere (cost, bench, tests) gets the architecture only
            load_vit_weights(self.vit, cfg.vit_weights, cfg.vit_pos_resize)

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


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """The 2-D sine-cosine position table of a ``grid = (rows, cols)`` of patches, row-major:
    (rows * cols, dim). A quarter of the channels each holds sin and cos of the column index,
    then of the row index, at frequencies 1 / 10000^(k / (dim/4)), k = 0 ... dim/4 - 1
    (MoCo v3's and MAE's layout). Computed in float64, returned in float32."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine table needs a width divisible by 4, not {dim}")
    quarter = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                                torch.arange(grid[1], dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (cols.flatten(), rows.flatten()):  # x first, then y
        angle = coord[:, None] * freq[None, :]  # (N, dim/4)
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()  # (N, dim)


def position_structure(pos_embed: torch.Tensor, grid: tuple[int, int]) -> float:
    """How much a ViT's position embeddings know the grid: the correlation, over every pair
    of patches, between their embeddings' cosine similarity (each centred on the grid's mean)
    and minus their distance on the grid. Near 1 for a smooth table like :func:`sincos_2d`
    or an ImageNet ViT's; near 0 for random ones. ``pos_embed``: (1, prefix + rows * cols, D)
    or (rows * cols, D)."""
    n = grid[0] * grid[1]
    table = pos_embed.detach().double().reshape(-1, pos_embed.shape[-1])[-n:]
    table = F.normalize(table - table.mean(0), dim=-1)
    similarity = table @ table.T
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    where = torch.stack([rows.flatten(), cols.flatten()], 1).double()
    distance = torch.cdist(where, where)
    pairs = ~torch.eye(n, dtype=torch.bool)
    return float(torch.corrcoef(torch.stack([similarity[pairs], -distance[pairs]]))[0, 1])


def release_vit_init_(vit: nn.Module) -> None:
    """The release's ViT init (used only when no weights are loaded over it)."""
    release_init_(vit)
    nn.init.xavier_uniform_(vit.patch_embed.proj.weight)
    if vit.patch_embed.proj.bias is not None:
        nn.init.zeros_(vit.patch_embed.proj.bias)
    nn.init.trunc_normal_(vit.pos_embed, std=0.02, a=-2.0, b=2.0)
    nn.init.trunc_normal_(vit.cls_token, std=0.02, a=-2.0, b=2.0)


def hub_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights of timm's ``name`` at their own resolution (no resizing yet)."""
    import timm

    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - network, cache and name errors are all reported the same way
        raise WeightsError(
            f"cannot get timm's pretrained {name!r}: {type(exc).__name__}: {exc}. Without internet, download the "
            f"weights file once and pass it with --set model.vit_weights=/path/to/model.safetensors "
            f"(restr.engine.assets.check_assets names the file)") from exc
    return model.state_dict()


def resize_pos_embed(posemb: torch.Tensor, grid: tuple[int, int], prefix: int, mode: str) -> torch.Tensor:
    """(1, prefix + n*n, D) position embeddings of a square grid -> (1, prefix + gh*gw, D).

    ``bicubic_antialias``: timm 1.x's ``resample_abs_pos_embed`` (antialiased bicubic).
    ``bicubic``: plain bicubic with align_corners=False, as timm 0.6's
    ``resize_pos_embed`` (the authors' release) does it.
    """
    if mode == "bicubic_antialias":
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(posemb, new_size=list(grid), num_prefix_tokens=prefix)
    if mode != "bicubic":
        raise ValueError(f"position-embedding resize {mode!r}: choose bicubic_antialias or bicubic")
    head, body = posemb[:, :prefix], posemb[0, prefix:]
    n = int(round(body.shape[0] ** 0.5))
    if n * n != body.shape[0]:
        raise WeightsError(f"position embeddings of {body.shape[0]} patches are not a square grid")
    body = body.reshape(1, n, n, -1).permute(0, 3, 1, 2)  # (1, D, n, n)
    body = F.interpolate(body, size=tuple(grid), mode="bicubic", align_corners=False)
    body = body.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
    return torch.cat([head, body], dim=1)


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


def _npz_state_dict(vit: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A JAX .npz checkpoint read as a state dict at ITS OWN grid (resized later)."""
    import copy

    import numpy as np
    from timm.models.vision_transformer import _load_weights

    try:
        with np.load(str(path)) as w:
            key = next(k for k in w.files if k.endswith("posembed_input/pos_embedding"))
            tokens = w[key].shape[1]
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot read JAX ViT checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    native = copy.deepcopy(vit)
    native.pos_embed = nn.Parameter(torch.zeros(1, tokens, vit.embed_dim))  # no resizing inside timm
    try:
        _load_weights(native, str(path))
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot load JAX ViT checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    return native.state_dict()


def load_vit_weights(vit: nn.Module, path_like: str, pos_resize: str = "bicubic_antialias") -> None:
    """Load a local checkpoint into a timm ViT, resizing position embeddings to its grid.

    Raises :class:`WeightsError` naming the file and the keys that are missing,
    unexpected or of the wrong shape.
    """
    path = Path(path_like).expanduser()
    if not path.is_file():
        raise WeightsError(f"ViT weights file not found: {path}")
    state = _npz_state_dict(vit, path) if path.suffix.lower() == ".npz" else _read_state_dict(path)
    load_vit_state(vit, state, f"ViT weights file {path}", pos_resize)


def load_vit_state(vit: nn.Module, state: dict[str, torch.Tensor], source: str,
                   pos_resize: str = "bicubic_antialias") -> None:
    """Load a state dict into a timm ViT (``source`` names it in errors), resizing positions."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.", "pre_logits."))}
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], tuple(vit.patch_embed.grid_size), prefix, pos_resize)
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
        raise WeightsError(f"{source} does not fit the model: " + " | ".join(parts))
    vit.load_state_dict(state, strict=False)
