"""Plotting helpers for the notebooks (matplotlib)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _image(x) -> np.ndarray:
    """A displayable HxWx3 uint8/float image from a tensor (normalised, CHW) or an array."""
    import torch

    if isinstance(x, torch.Tensor):
        from .data.transforms import denormalize

        return denormalize(x)
    return np.asarray(x)


def show_patch_grid(ax, image, patch_size: int, title: str | None = None) -> None:
    """The image with the P x P patch grid drawn over it, patches numbered row-major."""
    img = _image(image)
    h, w = img.shape[:2]
    ax.imshow(img)
    for y in range(0, h + 1, patch_size):
        ax.axhline(y - 0.5, color="white", lw=0.8)
    for x in range(0, w + 1, patch_size):
        ax.axvline(x - 0.5, color="white", lw=0.8)
    if (h // patch_size) * (w // patch_size) <= 64:
        k = 0
        for gy in range(h // patch_size):
            for gx in range(w // patch_size):
                ax.text(gx * patch_size + 1, gy * patch_size + 3, str(k), color="yellow", fontsize=6, va="top")
                k += 1
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def show_flattened_patches(ax, patches: np.ndarray, count: int = 8, title: str | None = None) -> None:
    """The first ``count`` flattened patch vectors, one per row."""
    ax.imshow(np.asarray(patches[:count]), aspect="auto", cmap="gray")
    ax.set_ylabel("patch")
    ax.set_xlabel("C * P * P values")
    if title:
        ax.set_title(title)


def position_similarity_grid(fig, sim: np.ndarray, title: str | None = None) -> None:
    """sim (gh, gw, gh, gw): for each position, its cosine similarity to all others."""
    gh, gw = sim.shape[:2]
    axes = fig.subplots(gh, gw, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
    axes = np.atleast_2d(axes)
    for y in range(gh):
        for x in range(gw):
            ax = axes[y, x]
            ax.imshow(sim[y, x], vmin=-1, vmax=1, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)


def heatmap(ax, matrix: np.ndarray, xlabel: str = "", ylabel: str = "", title: str | None = None, cmap="RdBu_r",
            colorbar: bool = True, **kw) -> None:
    im = ax.imshow(np.asarray(matrix), aspect="auto", cmap=cmap, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def overlay(ax, image, mask, color=(1.0, 0.9, 0.0), alpha: float = 0.55, title: str | None = None) -> None:
    """The image with a binary mask shown: everything outside it dimmed, its outline drawn.

    (A colour tint alone disappears on coloured objects; dimming plus an outline does not.)
    """
    img = _image(image).astype(np.float32)
    if img.max() > 1.5:
        img = img / 255.0
    m = np.asarray(mask).astype(bool)
    out = img.copy()
    out[~m] *= 1.0 - alpha
    ax.imshow(out.clip(0, 1))
    if m.any() and not m.all():
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def map_over_image(ax, image, values: np.ndarray, title: str | None = None, alpha: float = 0.6, cmap="magma",
                   vmin=None, vmax=None) -> None:
    """A patch-level map (gh, gw) stretched over the image (nearest, so patches stay visible)."""
    img = _image(image)
    h, w = img.shape[:2]
    ax.imshow(img)
    ax.imshow(np.asarray(values), extent=(-0.5, w - 0.5, h - 0.5, -0.5), alpha=alpha, cmap=cmap,
              interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def bars(ax, labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str = "", title: str | None = None,
         errors: dict[str, Sequence[tuple[float, float]]] | None = None) -> None:
    """Grouped bars: one group per label, one bar per series (with optional (lo, hi) errors)."""
    n = len(series)
    x = np.arange(len(labels))
    width = 0.8 / max(n, 1)
    for k, (name, values) in enumerate(series.items()):
        vals = np.asarray(values, dtype=float)
        yerr = None
        if errors and name in errors:
            lo_hi = np.asarray(errors[name], dtype=float)
            yerr = np.stack([vals - lo_hi[:, 0], lo_hi[:, 1] - vals])
        ax.bar(x + (k - (n - 1) / 2) * width, vals, width, label=name, yerr=yerr, capsize=3)
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
