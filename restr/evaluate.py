"""Evaluate a run on a split with the paper's metrics (the release's protocol).

``python -m restr evaluate --run RUN_DIR --split val [--json] [--csv FILE]
[--save-images DIR] [--swap-control] [--max-expressions N] [--checkpoint last|best|PATH]``

Every sentence of every ref of the split is one expression. Predictions (mask logits on
the letterboxed canvas) are mapped back to the original image size, thresholded at
logit >= 0 (probability >= 0.5) and scored with :mod:`restr.metrics`: cumulative IoU,
mean IoU, Prec@{0.5..0.9} and both IoUs per Table 2 length bucket. The protocol is
written into the result.

Swap control (``--swap-control``): each expression is replaced by an expression of a
DIFFERENT object (another ref with another annotation) of the SAME image, while the
target mask stays the original one. A model that reads the expression must score far
lower; one that ignores it (segments "the salient object") scores about the same.
The replacement is deterministic: the refs of an image are ordered by ref_id and each
ref takes the next one (cyclically) with a different annotation; sentence ``k`` of a
ref takes sentence ``k mod n`` of the other ref. Expressions of images with a single
ref have no replacement and are skipped (their number is reported).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .metrics import PREC_THRESHOLDS, PROTOCOL, SegmentationMeter

DEFAULT_BATCH = 64


# ----------------------------------------------------------------------------------------
# data wrappers

class Subset(Dataset):
    """Items ``indices`` of ``base`` (keeps ``base``'s attributes reachable)."""

    def __init__(self, base: Dataset, indices: Sequence[int]):
        self.base = base
        self.indices = list(int(i) for i in indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.base[self.indices[i]]


class SwapDataset(Dataset):
    """The swap control over a :class:`restr.data.refer.ReferDataset` (see the module doc)."""

    def __init__(self, base):
        self.base = base
        by_image: dict[int, list[dict]] = defaultdict(list)
        for r in base.refs:
            by_image[int(r["image_id"])].append(r)
        for refs in by_image.values():
            refs.sort(key=lambda r: int(r["ref_id"]))
        self.items: list[tuple[int, str, int]] = []  # (base index, swapped sentence, its ref_id)
        self.skipped = 0
        for i in range(len(base)):
            ref, sent = base.item_ref(i)
            refs = by_image[int(ref["image_id"])]
            pos = next(k for k, r in enumerate(refs) if r is ref)
            other = None
            for step in range(1, len(refs)):
                cand = refs[(pos + step) % len(refs)]
                if int(cand["ann_id"]) != int(ref["ann_id"]):
                    other = cand
                    break
            if other is None:
                self.skipped += 1
                continue
            k = ref["sentences"].index(sent)
            other_sent = other["sentences"][k % len(other["sentences"])]
            self.items.append((i, base.data.sentence_text(other_sent), int(other["ref_id"])))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from .data.vocab import tokenize

        index, text, other_ref = self.items[i]
        item = self.base[index]
        ids, length = self.base.vocab.encode(text, self.base.max_words)
        item["original_sentence"] = item["sentence"]
        item["sentence"] = text
        item["words"] = torch.from_numpy(ids)
        item["length"] = length
        item["num_words"] = len(tokenize(text))
        item["swap_ref_id"] = other_ref
        return item


def spread_indices(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    if k <= 0:
        return []
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


# ----------------------------------------------------------------------------------------
# the loop

class _SharedImageVision(torch.nn.Module):
    """Runs the vision encoder once per distinct image of a batch.

    An image carries ~10 expressions in refer data and evaluation keeps the items of an
    image together, so a batch holds few distinct images. ``keys`` (one id per row) is
    set before each forward; rows with the same key must hold the same image (true
    without augmentation). The ViT is per-sample, so this changes no result beyond
    floating-point rounding.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.keys: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.keys is None or len(self.keys) != len(images):
            return self.inner(images)
        uniq, inverse = torch.unique(self.keys, return_inverse=True)
        if len(uniq) == len(images):
            return self.inner(images)
        first = torch.full((len(uniq),), len(images), dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(len(images)), reduce="amin")
        feats = self.inner(images[first.to(images.device)])
        return feats[inverse.to(images.device)]


def _amp_context(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=amp_dtype)


@torch.no_grad()
def iterate_predictions(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    dtype: torch.dtype = torch.float32,
    share_images: bool = True,
) -> Iterator[tuple[dict, torch.Tensor]]:
    """Yield ``(batch, mask_logits)`` with mask_logits float32 (B, H, W) on the CPU.

    The dataset must return ``orig_mask`` (``return_original=True``) to be scored.
    ``share_images``: encode each distinct image of a batch once (see
    :class:`_SharedImageVision`); only for data without augmentation.
    """
    from .data.refer import collate

    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    was_training = model.training
    model.eval()
    shared = None
    if share_images and isinstance(getattr(model, "vision", None), torch.nn.Module):
        shared = _SharedImageVision(model.vision)
        model.vision = shared
    try:
        for batch in loader:
            images = batch["image"].to(device, dtype=dtype, non_blocking=True)
            words = batch["words"].to(device, non_blocking=True)
            if shared is not None:
                shared.keys = torch.as_tensor(batch["image_id"]) if "image_id" in batch else None
            with _amp_context(device, amp_dtype):
                out = model(images, words)
            yield batch, out.mask_logits[:, 0].float().cpu()
    finally:
        if shared is not None:
            model.vision = shared.inner
        model.train(was_training)


def score_batch(batch: dict, mask_logits: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """``(I, U, prediction)`` per item: logits unletterboxed to the original size, >= 0."""
    from .data.transforms import LetterboxMeta, unletterbox
    from .metrics import intersection_union

    metas = LetterboxMeta.batch_from_tensor(batch["meta"])
    targets = batch["orig_mask"]
    out = []
    for i, meta in enumerate(metas):
        pred = unletterbox(mask_logits[i], meta) >= 0
        inter, union = intersection_union(pred, targets[i])
        out.append((inter, union, pred))
    return out


def evaluate_dataset(
    model: torch.nn.Module,
    dataset,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    num_workers: int = 0,
    indices: Sequence[int] | None = None,
    amp_dtype: torch.dtype | None = None,
    dtype: torch.dtype = torch.float32,
    reduce: bool = False,
    records: list | None = None,
    on_prediction=None,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` (a ReferDataset with ``return_original=True``, or a
    :class:`SwapDataset` over one). ``indices`` restricts to those items. ``reduce=True``
    sums the metric state over the distributed group (each rank passes its own share).

    ``records`` (a list) receives one dict per expression; ``on_prediction(item_index,
    batch, i, prediction)`` is called for each one (for saving images).
    Returns :meth:`SegmentationMeter.summary` plus ``seconds`` and ``expressions_per_s``.
    """
    base = dataset.base if isinstance(dataset, SwapDataset) else dataset
    from .data.refer import bucket_labels, bucket_of

    labels = bucket_labels(base.dataset)
    meter = SegmentationMeter(labels)
    data = Subset(dataset, indices) if indices is not None else dataset
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(data), desc=desc, unit="expr", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    seen = 0
    for batch, logits in iterate_predictions(model, data, device, batch_size, num_workers, amp_dtype, dtype):
        for i, (inter, union, pred) in enumerate(score_batch(batch, logits)):
            length = int(batch["num_words"][i])
            bucket = bucket_of(length, base.dataset)
            iou = meter.add(inter, union, bucket)
            if records is not None:
                rec = {
                    "index": seen,
                    "ref_id": int(batch["ref_id"][i]),
                    "sent_id": int(batch["sent_id"][i]),
                    "ann_id": int(batch["ann_id"][i]),
                    "image_id": int(batch["image_id"][i]),
                    "sentence": batch["sentence"][i],
                    "length": length,
                    "bucket": bucket,
                    "intersection": inter,
                    "union": union,
                    "iou": iou,
                }
                if "original_sentence" in batch:
                    rec["original_sentence"] = batch["original_sentence"][i]
                    rec["swap_ref_id"] = int(batch["swap_ref_id"][i])
                records.append(rec)
            if on_prediction is not None:
                on_prediction(seen, batch, i, pred)
            seen += 1
        if bar:
            bar.update(len(logits))
    if bar:
        bar.close()
    if reduce:
        meter.all_reduce()
    seconds = time.perf_counter() - t0
    result = meter.summary()
    result["seconds"] = seconds
    result["expressions_per_s"] = seen / seconds if seconds > 0 else float("nan")
    return result


# ----------------------------------------------------------------------------------------
# image saving

def _save_prediction_images(out_dir: Path, dataset, tag: str = ""):
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    base = dataset.base if isinstance(dataset, SwapDataset) else dataset

    def save(index: int, batch: dict, i: int, pred: torch.Tensor) -> None:
        name = f"{tag}ref{int(batch['ref_id'][i])}_sent{int(batch['sent_id'][i])}"
        p = pred.numpy().astype(bool)
        Image.fromarray((p * 255).astype(np.uint8)).save(out_dir / f"{name}_mask.png")
        image = base.load_image(int(batch["image_id"][i])).astype(np.float32)
        gt = batch["orig_mask"][i].numpy().astype(bool)
        overlay = image.copy()
        # prediction in red, ground truth outlined in green
        overlay[p] = 0.5 * overlay[p] + 0.5 * np.array([255, 0, 0], np.float32)
        edge = gt & ~(np.roll(gt, 1, 0) & np.roll(gt, -1, 0) & np.roll(gt, 1, 1) & np.roll(gt, -1, 1))
        overlay[edge] = (0, 255, 0)
        Image.fromarray(overlay.clip(0, 255).astype(np.uint8)).save(out_dir / f"{name}_overlay.png")

    return save


# ----------------------------------------------------------------------------------------
# whole runs

def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "val",
    checkpoint: str = "last",
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    num_workers: int | None = None,
    max_expressions: int | None = None,
    swap_control: bool = False,
    csv_path: str | os.PathLike | None = None,
    save_images: str | os.PathLike | None = None,
    data_root: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained run (rebuilt from its directory) on ``split``; returns the result dict."""
    from .checkpoint import load_run
    from .data.refer import ReferDataset

    t_start = time.perf_counter()
    dev = torch.device(device)
    run = load_run(run_dir, checkpoint, dev)
    cfg = run.cfg
    dcfg = cfg.data
    dataset = ReferDataset(data_root or dcfg.root, dcfg.dataset, dcfg.split_by, split, image_root=dcfg.image_root,
                           vocab=run.vocab, image_size=cfg.model.image_hw, max_words=cfg.model.max_words,
                           augment=False, return_original=True)
    if num_workers is None:  # leave a core to the model: on 2 CPU cores one loader worker is fastest
        num_workers = min(dcfg.num_workers, max(1, (os.cpu_count() or 1) - 1))
    workers = num_workers
    amp_dtype = torch.bfloat16 if dev.type == "cuda" and cfg.train.amp in ("auto", "bf16") and \
        torch.cuda.is_bf16_supported() else (torch.float16 if dev.type == "cuda" and cfg.train.amp == "fp16" else None)
    indices = spread_indices(len(dataset), max_expressions) if max_expressions else None
    records: list | None = [] if csv_path else None
    saver = _save_prediction_images(Path(save_images), dataset) if save_images else None
    main = evaluate_dataset(run.model, dataset, dev, batch_size, workers, indices, amp_dtype,
                            records=records, on_prediction=saver, progress=progress, desc=f"evaluate {split}")
    result: dict[str, Any] = {
        "run": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "dataset": dcfg.dataset,
        "split_by": dcfg.split_by,
        "split": split,
        "expressions_total": len(dataset),
        "expressions": main["n"],
        **{k: v for k, v in main.items() if k != "n"},
        "protocol": dict(PROTOCOL, device=str(dev), batch_size=batch_size,
                         subset=f"{main['n']} expressions spread evenly over the split" if indices is not None
                         else "all"),
    }
    if swap_control:
        swap = SwapDataset(dataset)
        swap_indices = spread_indices(len(swap), max_expressions) if max_expressions else None
        swap_records: list | None = [] if csv_path else None
        swap_saver = _save_prediction_images(Path(save_images), swap, tag="swap_") if save_images else None
        ctrl = evaluate_dataset(run.model, swap, dev, batch_size, workers, swap_indices, amp_dtype,
                                records=swap_records, on_prediction=swap_saver, progress=progress,
                                desc=f"swap control {split}")
        # the same expressions (those that have a swap), scored with their own sentences
        kept = [i for i, _, _ in swap.items]
        if swap_indices is not None:
            kept = [kept[i] for i in swap_indices]
        same = evaluate_dataset(run.model, dataset, dev, batch_size, workers, kept, amp_dtype)
        result["swap_control"] = {
            "description": "each expression replaced by an expression of a different object in the same image; "
                           "target mask unchanged",
            "expressions": ctrl["n"],
            "skipped_single_ref_images": swap.skipped,
            "swapped": {k: v for k, v in ctrl.items() if k not in ("n", "buckets")},
            "original_on_same_expressions": {k: v for k, v in same.items() if k not in ("n", "buckets")},
        }
        if records is not None and swap_records is not None:
            for r in swap_records:
                r["control"] = "swap"
            records.extend(swap_records)
    if csv_path:
        _write_csv(Path(csv_path), records or [])
    result["wall_s"] = time.perf_counter() - t_start
    return result


def _write_csv(path: Path, records: list[dict]) -> None:
    from .checkpoint import atomic_write_text
    import io

    cols = ["control", "index", "ref_id", "sent_id", "ann_id", "image_id", "sentence", "original_sentence",
            "swap_ref_id", "length", "bucket", "intersection", "union", "iou"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({"control": r.get("control", "none"), **r})
    atomic_write_text(path, buf.getvalue())


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"{r['dataset']} ({r['split_by']}) {r['split']}: {r['expressions']} expressions, "
        f"checkpoint {r['checkpoint']} (step {r['step']})",
        f"  cumulative IoU {100 * r['cum_iou']:.2f}   mean IoU {100 * r['mean_iou']:.2f}",
        "  " + "  ".join(f"P@{x} {100 * r[f'prec@{x}']:.2f}" for x in PREC_THRESHOLDS),
        "  by length (words): " + "  ".join(
            f"{b}: cIoU {100 * v['cum_iou']:.2f} / mIoU {100 * v['mean_iou']:.2f} (n={v['n']})"
            for b, v in r["buckets"].items()),
        f"  {r['expressions_per_s']:.1f} expressions/s ({r['seconds']:.1f} s)",
    ]
    if "swap_control" in r:
        s = r["swap_control"]
        lines.append(
            f"  swap control ({s['expressions']} expressions, {s['skipped_single_ref_images']} skipped: single-ref "
            f"images): cIoU {100 * s['swapped']['cum_iou']:.2f} swapped vs "
            f"{100 * s['original_on_same_expressions']['cum_iou']:.2f} original; mIoU "
            f"{100 * s['swapped']['mean_iou']:.2f} vs {100 * s['original_on_same_expressions']['mean_iou']:.2f}")
    lines.append("  protocol: original resolution, probability >= 0.5, cumulative IoU = sum I / sum U")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m restr train`")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--checkpoint", default="last", help="last | best | a checkpoint path (default: last)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--output", help="also write the result JSON to this file")
    parser.add_argument("--csv", help="write per-expression results to this CSV file")
    parser.add_argument("--save-images", metavar="DIR", help="save each prediction (mask and overlay PNG) here")
    parser.add_argument("--swap-control", action="store_true",
                        help="also score with each expression swapped for another object's in the same image")
    parser.add_argument("--max-expressions", type=int, help="score only N expressions spread over the split")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: the run's data.num_workers, at most CPU cores - 1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--data", help="data root, if it moved since training")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .checkpoint import RunError
    from .data.errors import DataError

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        result = evaluate_run(args.run, args.split, args.checkpoint, device, args.batch_size, args.workers,
                              args.max_expressions, args.swap_control, args.csv, args.save_images, args.data,
                              progress=not args.no_progress and not args.json)
    except (RunError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.output:
        from .checkpoint import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    print(text if args.json else format_result(result))
    return 0
