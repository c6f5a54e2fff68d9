"""Plotting helpers for the notebooks.

Statistical figures (grouped bars with intervals, curves over seeds, histograms,
heatmaps) are drawn with seaborn; images and masks with matplotlib. Every function
draws into the axes (or figure) it is given and leaves the style of the rest alone.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _image(x) -> np.ndarray:
    """A displayable HxWx3 uint8/float image from a tensor (normalised, CHW) or an array."""
    import torch

    if isinstance(x, torch.Tensor):
        from ..data.transforms import denormalize

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


def similarity_blocks(sim: np.ndarray) -> np.ndarray:
    """(gh, gw, gh, gw) -> (gh * gh, gw * gw): block (y, x) is position (y, x)'s similarity
    to every position, blocks laid out as the positions are on the grid."""
    gh, gw = sim.shape[:2]
    return np.asarray(sim).transpose(0, 2, 1, 3).reshape(gh * gh, gw * gw)


def position_similarity_grid(fig, sim: np.ndarray, title: str | None = None) -> None:
    """sim (gh, gw, gh, gw): for each position, its cosine similarity to all others, one
    small square per position (a seaborn heatmap of :func:`similarity_blocks`)."""
    import seaborn as sns

    gh, gw = sim.shape[:2]
    ax = fig.subplots()
    sns.heatmap(similarity_blocks(sim), vmin=-1, vmax=1, cmap="viridis", square=True, xticklabels=False,
                yticklabels=False, cbar_kws={"label": "cosine similarity", "shrink": 0.7}, ax=ax)
    ax.hlines(np.arange(1, gh) * gh, 0, gw * gw, colors="white", linewidth=1.5)
    ax.vlines(np.arange(1, gw) * gw, 0, gh * gh, colors="white", linewidth=1.5)
    if title:
        ax.set_title(title)


def heatmap(ax, matrix: np.ndarray, xlabel: str = "", ylabel: str = "", title: str | None = None, cmap="RdBu_r",
            colorbar: bool = True, **kw) -> None:
    """A matrix as a seaborn heatmap (``kw`` goes to ``seaborn.heatmap``, e.g. ``vmin``)."""
    import seaborn as sns

    m = np.asarray(matrix)
    ticks = {"xticklabels": max(m.shape[1] // 8, 1), "yticklabels": max(m.shape[0] // 8, 1)}
    sns.heatmap(m, cmap=cmap, cbar=colorbar, ax=ax, **{**ticks, **kw})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


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


def map_over_image(ax, image, values: np.ndarray, title: str | None = None, cmap="magma", vmin=None, vmax=None,
                   extent: tuple[float, float, float, float] | None = None) -> None:
    """A patch-level map (gh, gw) as a seaborn heatmap over the image, one cell per patch.

    ``extent`` (left, right, bottom, top) is where the image lies on the patch grid, in
    patches; the default, the whole grid, fits an image the model saw (letterboxed).
    For an original image use :func:`letterbox_extent`.
    """
    import seaborn as sns

    img = _image(image)
    values = np.asarray(values)
    gh, gw = values.shape
    ax.imshow(img, extent=extent or (0, gw, gh, 0))
    sns.heatmap(values, alpha=0.6, cmap=cmap, vmin=vmin, vmax=vmax, cbar=False, xticklabels=False,
                yticklabels=False, ax=ax)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)


def letterbox_extent(meta, patch_size: int) -> tuple[float, float, float, float]:
    """Where an original image lies on the model's patch grid, for :func:`map_over_image`
    (``meta``: the :class:`restr.data.transforms.LetterboxMeta` it was letterboxed with)."""
    p = float(patch_size)
    return (meta.pad_left / p, (meta.pad_left + meta.new_w) / p, (meta.pad_top + meta.new_h) / p, meta.pad_top / p)


def _bar_centres(ax, labels: Sequence[str], series: Sequence[str]) -> dict[tuple[str, int], float]:
    """(series, category index) -> the x centre of the bar seaborn drew for it."""
    out = {}
    for name, container in zip(series, ax.containers):
        for bar in container:
            centre = bar.get_x() + bar.get_width() / 2
            k = int(round(centre))
            if 0 <= k < len(labels):
                out[(name, k)] = centre
    return out


def bars(ax, labels: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str = "",
         title: str | None = None, errors: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> None:
    """Grouped bars: one group per label, one bar per series, with optional (lo, hi)
    intervals (e.g. bootstrap confidence intervals) drawn on a series' bars."""
    import pandas as pd
    import seaborn as sns

    labels = [str(x) for x in labels]
    long = pd.DataFrame([{"label": label, "series": name, "value": float(v)}
                         for name, values in series.items() for label, v in zip(labels, values)])
    sns.barplot(long, x="label", y="value", hue="series", order=labels, hue_order=list(series), errorbar=None,
                ax=ax)
    centres = _bar_centres(ax, labels, list(series))
    for name, lo_hi in (errors or {}).items():
        for k, ((lo, hi), v) in enumerate(zip(lo_hi, series[name])):
            if (name, k) in centres and np.isfinite([lo, hi, v]).all():
                ax.errorbar(centres[(name, k)], v, yerr=[[v - lo], [hi - v]], fmt="none", ecolor="black",
                            capsize=3, linewidth=1)
    ax.set_xlabel("")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, title=None)


def curve_over_seeds(ax, runs, x: str, y: str, label: str, seed: str = "seed", scale: float = 1.0) -> None:
    """A learning curve, the mean over seeds with the band from the lowest to the highest
    seed at each x (no band with a single seed). ``runs``: a DataFrame with columns
    ``x``, ``y`` and ``seed``, one row per (seed, x)."""
    import seaborn as sns

    data = runs.assign(**{y: runs[y] * scale})
    seeds = data[seed].nunique()
    sns.lineplot(data, x=x, y=y, errorbar=("pi", 100) if seeds > 1 else None, marker="o",
                 label=f"{label} ({seeds} seed{'s' if seeds != 1 else ''})", ax=ax)


def arm_curves(ax, arms: Sequence, last_fraction: float = 0.2) -> None:
    """The validation curves (cumulative IoU %) of a claim's arms (:class:`restr.book.claims.Arm`),
    seeds as a band, overlaid; the shaded stretch is the last fifth of the schedule, which
    the ``converged`` rule reads."""
    import pandas as pd

    for a in arms:
        runs = pd.concat([c.assign(seed=s) for c, s in zip(a.curves, a.seeds)], ignore_index=True)
        curve_over_seeds(ax, runs, x="step", y="IoU", label=a.name)
    end = max(a.iterations for a in arms)
    ax.axvspan((1 - last_fraction) * end, end, color="gray", alpha=0.15, label="the last fifth (converged rule)")
    ax.set_xlabel("training step")
    ax.set_ylabel("val cumulative IoU %")
    ax.legend(fontsize=8)


def line_series(ax, table, x: str, series: Mapping[str, str], ylabel: str = "") -> None:
    """Several columns of ``table`` against ``x`` as one line each (legend: the keys of
    ``series``, which map a label to a column)."""
    import seaborn as sns

    long = table.melt(id_vars=[x], value_vars=list(series.values()), var_name="series", value_name="value")
    long["series"] = long["series"].map({col: label for label, col in series.items()})
    sns.lineplot(long, x=x, y="value", hue="series", style="series", markers=True, dashes=True, sort=False, ax=ax)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, title=None)


def histograms(ax, groups: Mapping[str, Sequence[int]], xlabel: str = "", discrete: bool = True) -> None:
    """One density histogram per group (each normalised on its own), overlaid."""
    import pandas as pd
    import seaborn as sns

    long = pd.DataFrame([{"value": v, "group": f"{name} ({len(values)})"}
                         for name, values in groups.items() for v in values])
    sns.histplot(long, x="value", hue="group", stat="density", common_norm=False, discrete=discrete,
                 element="step", ax=ax)
    ax.get_legend().set_title(None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share")
