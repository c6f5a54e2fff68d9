"""A training split's images and masks decoded once, before the loader's workers start.

A training item decodes its image (a JPEG) and each of its masks (a polygon or an RLE)
from the files every time: on the embedded data set that is about 60 % of a loader
worker's time, and a worker shares its core with the training when two trainings run
side by side on two cores. The loader's workers are made anew each epoch, so a cache
filled inside a worker would be thrown away after one epoch; this one is filled by the
training process before any worker exists, and forked workers read it without copying.

What is kept is exactly what would be decoded (the same bytes), read-only, so a
training's batches and results do not change (tested). Nothing is kept when the split
would need more than the budget: ``RESTR_PRELOAD_MB`` (default :data:`DEFAULT_BUDGET_MB`;
0 turns preloading off), estimated from the sizes in ``instances.json`` before anything
is decoded. Under a ``spawn`` or ``forkserver`` start method the workers receive the
data set pickled, without its cache (:meth:`ReferDataset.__getstate__`), and decode as
before.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass, field

import numpy as np

BUDGET_ENV = "RESTR_PRELOAD_MB"
DEFAULT_BUDGET_MB = 1024.0  # the embedded data set's training split needs about 300 MB


def budget_mb() -> float:
    """The preloading budget in MB: ``RESTR_PRELOAD_MB`` or :data:`DEFAULT_BUDGET_MB`."""
    raw = os.environ.get(BUDGET_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_BUDGET_MB
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}={raw!r} is not a number of MB (0 turns preloading off)") from None
    if not value >= 0:
        raise ValueError(f"{BUDGET_ENV}={raw!r} must be a number of MB >= 0 (0 turns preloading off)")
    return value


@dataclass
class Decoded:
    """Decoded images by image id and masks by annotation id, all read-only."""

    images: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.images.values()) + sum(m.nbytes for m in self.masks.values())


def estimated_bytes(data, image_ids, ann_ids) -> int:
    """Bytes the decoded images (H x W x 3) and masks (H x W) would take, from the sizes
    ``instances.json`` gives (an image without a size counts as nothing)."""
    def area(image_id) -> int:
        img = data.images.get(int(image_id)) or {}
        return int(img.get("height", 0)) * int(img.get("width", 0))
    total = sum(3 * area(i) for i in image_ids)
    return total + sum(area((data.anns.get(int(a)) or {}).get("image_id", -1)) for a in ann_ids)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def decode_split(dataset, budget: float) -> tuple[Decoded | None, str]:
    """``(decoded, what was done)`` for a :class:`ReferDataset`: every image and every mask
    its refs use, or ``(None, why not)`` when they would take more than ``budget`` MB. A
    file that fails to decode raises its :class:`DataError` here, before training starts
    (the caller prints what was done; nothing is printed before, so such an error is the
    first line a user sees)."""
    image_ids = dataset.image_ids()
    ann_ids = sorted({int(r["ann_id"]) for r in dataset.refs})
    need = estimated_bytes(dataset.data, image_ids, ann_ids) / 1e6
    where = f"{dataset.dataset} {dataset.split}"
    if budget <= 0:
        return None, f"{where}: not preloaded ({BUDGET_ENV}=0)"
    if need > budget:
        return None, (f"{where}: not preloaded: its {len(image_ids)} images and {len(ann_ids)} masks need about "
                      f"{need:,.0f} MB, over the {budget:,.0f} MB budget ({BUDGET_ENV})")
    start = time.perf_counter()
    decoded = Decoded()
    for image_id in image_ids:
        decoded.images[int(image_id)] = _frozen(dataset.data.load_image(image_id))
    for ann_id in ann_ids:
        decoded.masks[ann_id] = _frozen(dataset.data.load_mask(ann_id))
    return decoded, (f"{where}: {len(image_ids)} images and {len(ann_ids)} masks preloaded "
                     f"({decoded.nbytes / 1e6:,.0f} MB in {time.perf_counter() - start:.1f} s)")


def workers_share_it(workers: int) -> bool:
    """True when the loader's workers would read a cache filled now: no workers (the
    training process loads), or workers forked from it (the default on Linux). Asks without
    fixing the start method (the platform's default is the first of all methods)."""
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    return workers == 0 or method == "fork"
