"""Referring-segmentation metrics: cumulative IoU, mean IoU, Prec@X, IoU by length bucket.

The protocol follows the authors' release (its evaluation code, ``eval/evaluate.py``):

- a prediction is scored at the ORIGINAL image resolution (the letterbox is undone
  first, see :func:`restr.data.transforms.unletterbox`);
- a pixel is positive where its logit is >= 0, i.e. its probability is >= 0.5;
- cumulative IoU = (sum of intersections) / (sum of unions) over all expressions;
- mean IoU = the mean of the per-expression IoUs;
- Prec@X = the fraction of expressions whose IoU is >= X, for X in 0.5 ... 0.9.

Edge case, defined here: when both the prediction and the ground truth are empty
(union 0) the expression's IoU is 1.0 (the prediction agrees perfectly with an empty
target). It counts as such in mean IoU and Prec@X; cumulative IoU is unaffected since
it adds 0 to both sums. An empty prediction for a non-empty target has IoU 0. (Real
refer-format data has no empty targets; the reader rejects them.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

PREC_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
EMPTY_UNION_IOU = 1.0

PROTOCOL = {
    "resolution": "original (letterbox undone: padding cropped, bilinear resize of the logits "
                  "to the original image size, align_corners=False)",
    "threshold": "pixel positive where logit >= 0 (probability >= 0.5)",
    "cumulative_iou": "sum over expressions of intersections / sum over expressions of unions",
    "mean_iou": "mean over expressions of per-expression IoU",
    "precision": "Prec@X = fraction of expressions with IoU >= X, X in 0.5, 0.6, 0.7, 0.8, 0.9",
    "empty_union": "an expression whose prediction and target are both empty has IoU 1.0 "
                   "(cumulative IoU unaffected: it adds 0 to both sums)",
    "unit": "every sentence of every ref of the split is one expression",
    "length_buckets": "expression length in words after tokenisation, before truncation; "
                      "Table 2's buckets for the dataset",
}


def intersection_union(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(I, U)`` of two same-shape binary masks (bool or {0, 1})."""
    p = torch.as_tensor(pred).bool()
    t = torch.as_tensor(target).bool()
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    inter = int((p & t).sum().item())
    union = int((p | t).sum().item())
    return inter, union


def iou_of(inter: int | float, union: int | float) -> float:
    """IoU of one expression; both masks empty (union 0) -> :data:`EMPTY_UNION_IOU`."""
    if union < 0 or inter < 0 or inter > union:
        raise ValueError(f"invalid counts: intersection {inter}, union {union}")
    return float(inter) / float(union) if union > 0 else EMPTY_UNION_IOU


@dataclass
class _Sums:
    n: int = 0
    inter: float = 0.0
    union: float = 0.0
    iou_sum: float = 0.0
    hits: list[int] = field(default_factory=lambda: [0] * len(PREC_THRESHOLDS))

    def add(self, inter: float, union: float, iou: float) -> None:
        self.n += 1
        self.inter += inter
        self.union += union
        self.iou_sum += iou
        for k, x in enumerate(PREC_THRESHOLDS):
            if iou >= x:
                self.hits[k] += 1

    def vector(self) -> list[float]:
        return [self.n, self.inter, self.union, self.iou_sum, *self.hits]

    @classmethod
    def from_vector(cls, v: Sequence[float]) -> "_Sums":
        v = [float(x) for x in v]
        return cls(int(round(v[0])), v[1], v[2], v[3], [int(round(x)) for x in v[4:]])

    def summary(self) -> dict:
        out = {
            "n": self.n,
            "cum_iou": self.inter / self.union if self.union > 0 else float("nan"),
            "mean_iou": self.iou_sum / self.n if self.n else float("nan"),
        }
        for x, h in zip(PREC_THRESHOLDS, self.hits):
            out[f"prec@{x}"] = h / self.n if self.n else float("nan")
        return out


class SegmentationMeter:
    """Accumulates per-expression (I, U) and summarises them.

    ``buckets`` is the ordered list of length-bucket labels (``restr.data.bucket_labels``);
    pass ``bucket=`` to :meth:`add` to also accumulate per bucket. The state is a flat
    float vector (:meth:`state_vector`), so distributed ranks can all-reduce it (sum).
    """

    def __init__(self, buckets: Sequence[str] = ()):
        self.buckets = list(buckets)
        self.total = _Sums()
        self.per_bucket = {b: _Sums() for b in self.buckets}

    def add(self, inter: int | float, union: int | float, bucket: str | None = None) -> float:
        iou = iou_of(inter, union)
        self.total.add(inter, union, iou)
        if bucket is not None:
            if bucket not in self.per_bucket:
                raise KeyError(f"unknown length bucket {bucket!r}; known: {', '.join(self.buckets)}")
            self.per_bucket[bucket].add(inter, union, iou)
        return iou

    def add_masks(self, pred, target, bucket: str | None = None) -> tuple[int, int, float]:
        inter, union = intersection_union(pred, target)
        return inter, union, self.add(inter, union, bucket)

    # -- reduction across processes -----------------------------------------------------
    def state_vector(self) -> torch.Tensor:
        rows = [self.total.vector()] + [self.per_bucket[b].vector() for b in self.buckets]
        return torch.tensor([x for r in rows for x in r], dtype=torch.float64)

    def load_state_vector(self, v: torch.Tensor) -> None:
        width = 4 + len(PREC_THRESHOLDS)
        v = v.reshape(-1).tolist()
        self.total = _Sums.from_vector(v[:width])
        for i, b in enumerate(self.buckets):
            self.per_bucket[b] = _Sums.from_vector(v[width * (i + 1): width * (i + 2)])

    def all_reduce(self) -> None:
        """Sum the state over the default process group (no-op when not distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        v = self.state_vector()
        if dist.get_backend() == "nccl":
            v = v.cuda()
        dist.all_reduce(v)
        self.load_state_vector(v.cpu())

    # -- summary --------------------------------------------------------------------------
    def summary(self) -> dict:
        """``n, cum_iou, mean_iou, prec@0.5 ... prec@0.9`` and ``buckets`` (label -> the same)."""
        out = self.total.summary()
        if self.buckets:
            out["buckets"] = {b: self.per_bucket[b].summary() for b in self.buckets}
        return out
