"""Mask overlays on RGB images (prediction files, the command line, the notebooks)."""
from __future__ import annotations

import numpy as np


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a boolean mask that touch a pixel outside it (4-neighbourhood)."""
    m = np.asarray(mask, dtype=bool)
    inner = np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    return m & ~inner


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, colour=(255, 0, 0), alpha: float = 0.5,
                 outline: np.ndarray | None = None, outline_colour=(0, 255, 0)) -> np.ndarray:
    """``rgb`` (H, W, 3) with ``mask`` blended in ``colour`` and, optionally, the boundary of
    a second mask (``outline``, e.g. the ground truth) drawn in ``outline_colour``."""
    out = np.asarray(rgb).astype(np.float32)  # a copy
    m = np.asarray(mask, dtype=bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.array(colour, np.float32)
    if outline is not None:
        out[mask_outline(outline)] = outline_colour
    return out.clip(0, 255).astype(np.uint8)
