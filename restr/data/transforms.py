"""Letterbox to the model's input size, its exact inverse, normalisation, augmentation.

Letterbox: the image is resized keeping its aspect ratio so that it fits the output
size (the longer side, relative to the output, fills it), then padded to the output
size. The resized image is CENTRED (padding split evenly, the odd pixel going to the
bottom / right). :func:`unletterbox` undoes this exactly: it crops the padding and
resizes back bilinearly to the original resolution, which is where predictions are
scored (as in the authors' release, whose evaluation maps each prediction back to the
original image).
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DataError

__all__ = [
    "MEAN",
    "STD",
    "LetterboxMeta",
    "letterbox",
    "letterbox_mask",
    "unletterbox",
    "normalize",
    "denormalize",
    "LEFT_RIGHT_WORDS",
    "mentions_left_right",
    "augment",
]

# timm's ViT-B/16 (ImageNet-21k) convention: x -> (x / 255 - 0.5) / 0.5, i.e. [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

_INTERP = {
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
    "bicubic": Image.BICUBIC,
    "area": Image.BOX,
    "lanczos": Image.LANCZOS,
}


@dataclass(frozen=True)
class LetterboxMeta:
    """Where the resized image sits in the letterboxed output.

    ``orig_h x orig_w`` was resized by ``scale`` to ``new_h x new_w`` and placed at
    (``pad_top``, ``pad_left``) in an ``out_h x out_w`` canvas.
    """

    orig_h: int
    orig_w: int
    scale: float
    pad_top: int
    pad_left: int
    new_h: int
    new_w: int
    out_h: int
    out_w: int

    def to_tensor(self) -> torch.Tensor:
        """float64 tensor of shape (9,) in field order (the default collate stacks it to (B, 9))."""
        return torch.tensor(astuple(self), dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor | Iterable[float]) -> "LetterboxMeta":
        values = torch.as_tensor(t, dtype=torch.float64).reshape(-1).tolist()
        if len(values) != 9:
            raise DataError(f"letterbox meta needs 9 values, got {len(values)}: {values}")
        names = [f.name for f in fields(cls)]
        kw = {n: (v if n == "scale" else int(round(v))) for n, v in zip(names, values)}
        return cls(**kw)

    @classmethod
    def batch_from_tensor(cls, t: torch.Tensor) -> list["LetterboxMeta"]:
        """A list of metas from a collated (B, 9) tensor."""
        return [cls.from_tensor(row) for row in torch.as_tensor(t).reshape(-1, 9)]


def compute_meta(orig_hw: tuple[int, int], size: int | tuple[int, int]) -> LetterboxMeta:
    """The letterbox geometry for an ``orig_hw`` image and an output ``size``."""
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h0, w0 = int(orig_hw[0]), int(orig_hw[1])
    if h0 <= 0 or w0 <= 0 or out_h <= 0 or out_w <= 0:
        raise DataError(f"cannot letterbox an image of size {h0}x{w0} to {out_h}x{out_w}")
    scale = min(out_h / h0, out_w / w0)
    new_h = min(out_h, max(1, int(round(h0 * scale))))
    new_w = min(out_w, max(1, int(round(w0 * scale))))
    pad_top = (out_h - new_h) // 2
    pad_left = (out_w - new_w) // 2
    return LetterboxMeta(h0, w0, float(scale), pad_top, pad_left, new_h, new_w, out_h, out_w)


def _resize(array: np.ndarray, hw: tuple[int, int], interpolation: str) -> np.ndarray:
    if array.shape[:2] == tuple(hw):
        return array.copy()
    if interpolation not in _INTERP:
        raise DataError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(_INTERP)}")
    pil = Image.fromarray(array)
    return np.asarray(pil.resize((hw[1], hw[0]), _INTERP[interpolation]))


def letterbox(
    image: np.ndarray,
    size: int | tuple[int, int],
    interpolation: str = "bilinear",
    fill: int = 0,
) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize ``image`` (H x W [x C] uint8) keeping its aspect ratio, centre it, pad with ``fill``."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise DataError(f"letterbox expects an H x W or H x W x C array, got shape {image.shape}")
    meta = compute_meta(image.shape[:2], size)
    resized = _resize(image, (meta.new_h, meta.new_w), interpolation)
    out = np.full((meta.out_h, meta.out_w) + image.shape[2:], fill, dtype=image.dtype)
    out[meta.pad_top:meta.pad_top + meta.new_h, meta.pad_left:meta.pad_left + meta.new_w] = resized
    return out, meta


def letterbox_mask(mask: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, LetterboxMeta]:
    """The mask variant: nearest-neighbour resize, padded with 0 (uint8 in, uint8 out)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    return letterbox(mask, size, interpolation="nearest", fill=0)


def unletterbox(pred: torch.Tensor, meta: LetterboxMeta | torch.Tensor) -> torch.Tensor:
    """Map a prediction on the letterboxed canvas back to the original image.

    ``pred`` has shape (..., h, w): logits or probabilities (any dtype; integer and
    bool inputs are cast to float). If (h, w) is not the canvas size (a model that
    predicts at a lower resolution), it is first resized bilinearly to the canvas.
    The padding is cropped and the rest resized bilinearly (align_corners=False) to
    (orig_h, orig_w); at scale 1 no resampling happens, so the round trip is exact.
    Returns a float tensor of shape (..., orig_h, orig_w).
    """
    if not isinstance(meta, LetterboxMeta):
        meta = LetterboxMeta.from_tensor(meta)
    pred = torch.as_tensor(pred)
    if pred.ndim < 2:
        raise DataError(f"unletterbox expects (..., H, W), got shape {tuple(pred.shape)}")
    if not torch.is_floating_point(pred):
        pred = pred.float()
    lead = pred.shape[:-2]
    x = pred.reshape(-1, 1, *pred.shape[-2:])
    if tuple(x.shape[-2:]) != (meta.out_h, meta.out_w):
        x = F.interpolate(x, size=(meta.out_h, meta.out_w), mode="bilinear", align_corners=False)
    x = x[..., meta.pad_top:meta.pad_top + meta.new_h, meta.pad_left:meta.pad_left + meta.new_w]
    if (meta.new_h, meta.new_w) != (meta.orig_h, meta.orig_w):
        x = F.interpolate(x, size=(meta.orig_h, meta.orig_w), mode="bilinear", align_corners=False)
    return x.reshape(*lead, meta.orig_h, meta.orig_w)


def normalize(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """H x W x 3 uint8 -> float32 tensor (3, H, W) with ``(x/255 - MEAN) / STD``."""
    x = torch.as_tensor(np.ascontiguousarray(image))
    if x.ndim != 3 or x.shape[-1] != 3:
        raise DataError(f"normalize expects an H x W x 3 image, got shape {tuple(x.shape)}")
    return _standardise(x.permute(2, 0, 1).float())


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) on any device -> float32, the same arithmetic as :func:`normalize`."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"normalize_batch expects uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    return _standardise(images.float())


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float32 pixel values in [0, 255], modified in place -> normalised."""
    mean, std = _mean_std(x.device)
    return (x.div_(255.0) - mean) / std


_MEAN_STD: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD as (3, 1, 1) tensors on ``device``, made once per device: copying them
    from the host at every step would make the host wait for the GPU."""
    if device not in _MEAN_STD:
        _MEAN_STD[device] = (torch.tensor(MEAN, device=device).view(3, 1, 1),
                             torch.tensor(STD, device=device).view(3, 1, 1))
    return _MEAN_STD[device]


def denormalize(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalize`: (3, H, W) -> H x W x 3 uint8, or (B, 3, H, W) -> (B, H, W, 3)."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise DataError(f"denormalize expects (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
    mean, std = _mean_std(x.device)
    y = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return y.movedim(-3, -1).numpy()


# ----------------------------------------------------------------------------------------
# train-time augmentation

LEFT_RIGHT_WORDS = frozenset(
    {"left", "right", "leftmost", "rightmost", "lefthand", "righthand", "east", "west",
     "eastern", "western"}
)


def mentions_left_right(tokens: Iterable[str]) -> bool:
    """True when any token (or a hyphen/underscore part of one) names a horizontal side."""
    for t in tokens:
        t = t.lower()
        if t in LEFT_RIGHT_WORDS or any(p in LEFT_RIGHT_WORDS for p in t.replace("_", "-").split("-")):
            return True
    return False


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    tokens: Iterable[str],
    rng: np.random.Generator,
    *,
    flip: bool = True,
    max_crop: float = 0.08,
    jitter: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Meaning-preserving augmentation at the original resolution (before letterbox).

    - crop: up to ``max_crop`` of each side is cut, never into the target's box, so the
      target stays whole and relative positions are unchanged (small scale jitter once
      letterboxed);
    - horizontal flip with probability 0.5 only if the expression names no left/right
      word (:data:`LEFT_RIGHT_WORDS`); the sentence is never rewritten;
    - photometric jitter of brightness, contrast and saturation by up to ``jitter``;
      hue is never changed, since expressions name colours.
    """
    image, masks = augment_group(image, [mask], [tokens], rng, flip=flip, max_crop=max_crop, jitter=jitter)
    return image, masks[0]


def augment_group(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    token_lists: Sequence[Iterable[str]],
    rng: np.random.Generator,
    *,
    flip: bool = True,
    max_crop: float = 0.08,
    jitter: float = 0.15,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`augment` for several expressions of one image, with one transform for all:
    the crop spares the box around every target, the flip needs every expression to be
    free of left/right words. With one mask it is exactly :func:`augment` (same draws)."""
    image = np.asarray(image)
    masks = [np.asarray(m) for m in masks]
    h, w = masks[0].shape
    union = masks[0].astype(bool) if len(masks) == 1 else np.logical_or.reduce([m.astype(bool) for m in masks])
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if len(rows):
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    top = int(rng.integers(0, max(0, min(int(max_crop * h), y0)) + 1))
    bottom = h - int(rng.integers(0, max(0, min(int(max_crop * h), h - y1)) + 1))
    left = int(rng.integers(0, max(0, min(int(max_crop * w), x0)) + 1))
    right = w - int(rng.integers(0, max(0, min(int(max_crop * w), w - x1)) + 1))
    image = image[top:bottom, left:right]
    masks = [m[top:bottom, left:right] for m in masks]
    if flip and not any(mentions_left_right(t) for t in token_lists) and rng.random() < 0.5:
        image = image[:, ::-1]
        masks = [m[:, ::-1] for m in masks]
    b = 1.0 + rng.uniform(-jitter, jitter)
    c = 1.0 + rng.uniform(-jitter, jitter)
    s = 1.0 + rng.uniform(-jitter, jitter)
    return photometric(image, b, c, s), [np.ascontiguousarray(m) for m in masks]


def photometric(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Saturation, contrast, then brightness factors on an H x W x 3 uint8 image, in float32.

    ``grey = mean over channels``, ``x = grey + (x - grey) * saturation``,
    ``x = (x - mean(x)) * contrast + mean(x)``, ``x = x * brightness``, then rounded and
    clipped to uint8. Written in place on one float32 buffer: bit for bit the result of
    the plain expressions (tested), at half the time, since it runs on every training
    item at the original resolution.
    """
    img = np.asarray(image).astype(np.float32)
    grey = img[..., 0] + img[..., 1]
    grey += img[..., 2]
    grey /= np.float32(3)
    grey = grey[..., None]
    img -= grey
    img *= saturation
    img += grey
    m = img.mean()
    img -= m
    img *= contrast
    img += m
    img *= brightness
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)
