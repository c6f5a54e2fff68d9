"""Evaluate a run on a split with the paper's metrics (the release's protocol).

``python -m restr evaluate --run RUN_DIR --split val [--json] [--csv FILE]
[--save-images DIR] [--swap-control] [--max-expressions N] [--checkpoint last|best|PATH]``

Every sentence of every ref of the split is one expression. Predictions (mask logits on
the letterboxed canvas) are mapped back to the original image size, thresholded at
logit >= 0 (probability >= 0.5) and scored with :mod:`restr.eval.metrics`: cumulative IoU,
mean IoU, Prec@{0.5..0.9} and both IoUs per Table 2 length bucket. The protocol is
written into the result.

The pieces, in the shape of detectron2's ``inference_on_dataset(model, loader,
evaluator)``: :class:`SegmentationEvaluator` accumulates the metrics of a stream of
predictions (``process``/``summary``, no side effects on the model);
:func:`inference_on_dataset` runs a model over a loader and feeds it, encoding each
distinct image of a batch once (the model's ``image_index`` argument);
:func:`evaluate_run` rebuilds a trained run and scores a split; the swap control is
:func:`evaluate_swap_control`.

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

import csv
import io
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import ConfigError
from ..data.refer import ReferDataset, bucket_labels, bucket_of, collate
from ..data.transforms import LetterboxMeta, unletterbox
from ..data.vocab import tokenize
from ..runs.folder import load_run
from ..utils.devices import cpu_threads, resolve_amp
from ..utils.files import atomic_write_text
from ..utils.overlay import overlay_mask
from .metrics import PREC_THRESHOLDS, PROTOCOL, SegmentationMeter, intersection_union

DEFAULT_BATCH = 64
CSV_COLUMNS = ["control", "index", "ref_id", "sent_id", "ann_id", "image_id", "sentence", "original_sentence",
               "swap_ref_id", "length", "bucket", "intersection", "union", "iou"]


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
# the evaluator: metrics of a stream of predictions

def score_batch(batch: dict, mask_logits: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """``(I, U, prediction)`` per item: logits unletterboxed to the original size, >= 0."""

    metas = LetterboxMeta.batch_from_tensor(batch["meta"])
    rows_of: dict[LetterboxMeta, list[int]] = defaultdict(list)  # rows of one geometry resize together
    for i, meta in enumerate(metas):
        rows_of[meta].append(i)
    preds: list[torch.Tensor] = [torch.empty(0)] * len(metas)
    for meta, rows in rows_of.items():
        for i, pred in zip(rows, unletterbox(mask_logits[rows], meta) >= 0):
            preds[i] = pred
    targets = batch["orig_mask"]
    return [(*intersection_union(pred, target), pred) for pred, target in zip(preds, targets)]


def expression_record(batch: dict, i: int, index: int, scores: tuple[int, int, float], bucket: str) -> dict:
    """One row of the per-expression CSV for item ``i`` of ``batch``."""
    inter, union, iou = scores
    rec = {"index": index, "ref_id": int(batch["ref_id"][i]), "sent_id": int(batch["sent_id"][i]),
           "ann_id": int(batch["ann_id"][i]), "image_id": int(batch["image_id"][i]),
           "sentence": batch["sentence"][i], "length": int(batch["num_words"][i]), "bucket": bucket,
           "intersection": inter, "union": union, "iou": iou}
    if "original_sentence" in batch:  # the swap control
        rec["original_sentence"] = batch["original_sentence"][i]
        rec["swap_ref_id"] = int(batch["swap_ref_id"][i])
    return rec


class SegmentationEvaluator:
    """The paper's metrics over a stream of predictions: ``process(batch, mask_logits)``
    for each batch, then ``summary()``.

    ``dataset``: the data set's name (its Table 2 length buckets). ``distributed``: sum
    the metric state over the process group in :meth:`summary` (each rank processes its
    own share). ``keep_records``: keep one dict per expression in :attr:`records`.
    ``on_prediction(index, batch, i, prediction)`` is called for each expression (to
    save images). ``kinds``: ``(labels, {sent_id: label})``, a second grouping of the
    expressions (what each needs, :func:`restr.data.synth.expression_kinds`), summarised
    under ``"kinds"``; a sentence it does not name counts only in the totals.
    """

    def __init__(self, dataset: str, distributed: bool = False, keep_records: bool = False,
                 on_prediction: Callable | None = None, kinds: tuple[Sequence[str], dict[int, str]] | None = None):
        self.dataset, self.labels = dataset, bucket_labels(dataset)
        self.distributed, self.keep_records, self.on_prediction = distributed, keep_records, on_prediction
        self.kind_labels, self.kind_of = kinds if kinds is not None else ((), None)
        self.reset()

    def reset(self) -> None:
        self.meter = SegmentationMeter(self.labels)
        self.kind_meter = SegmentationMeter(self.kind_labels)
        self.records: list[dict] = []
        self.seen = 0

    def process(self, batch: dict, mask_logits: torch.Tensor) -> None:
        for i, (inter, union, pred) in enumerate(score_batch(batch, mask_logits)):
            bucket = bucket_of(int(batch["num_words"][i]), self.dataset)
            iou = self.meter.add(inter, union, bucket)
            if self.kind_of is not None:
                self.kind_meter.add(inter, union, self.kind_of.get(int(batch["sent_id"][i])))
            if self.keep_records:
                self.records.append(expression_record(batch, i, self.seen, (inter, union, iou), bucket))
            if self.on_prediction is not None:
                self.on_prediction(self.seen, batch, i, pred)
            self.seen += 1

    def summary(self) -> dict[str, Any]:
        """:meth:`restr.eval.metrics.SegmentationMeter.summary` of everything processed."""
        if self.distributed:
            self.meter.all_reduce()
            self.kind_meter.all_reduce()
        out = self.meter.summary()
        if self.kind_of is not None:
            out["kinds"] = self.kind_meter.summary()["buckets"]
        return out


# ----------------------------------------------------------------------------------------
# inference

def eval_loader(dataset: Dataset, batch_size: int = DEFAULT_BATCH, num_workers: int = 0,
                indices: Sequence[int] | None = None, pin_memory: bool = False) -> DataLoader:
    """A loader over ``dataset`` (or its items ``indices``) in order, keeping an image's
    expressions together so that a batch holds few distinct images."""

    data = Subset(dataset, indices) if indices is not None else dataset
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=False)


def distinct_images(batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images, image_index)``: each distinct image of the batch once and, per row, the
    position of its image (None when every row has its own image). Rows with the same
    ``image_id`` hold the same image when there is no augmentation."""
    images = batch["image"]
    if "image_id" not in batch:
        return images, None
    ids = torch.as_tensor(batch["image_id"])
    uniq, inverse = torch.unique(ids, return_inverse=True)
    if len(uniq) == len(ids):
        return images, None
    first = torch.full((len(uniq),), len(ids), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")  # each image's first row
    return images[first], inverse


@torch.no_grad()
def inference_on_dataset(model: torch.nn.Module, loader: DataLoader, evaluator: SegmentationEvaluator,
                         amp_dtype: torch.dtype | None = None, progress: str | None = None) -> dict[str, Any]:
    """Run ``model`` over ``loader`` and feed each batch's mask logits to ``evaluator``.

    The model runs in eval mode on its own device and dtype and is put back in the mode
    it was in. Returns ``evaluator.summary()`` plus ``seconds`` and ``expressions_per_s``.
    ``progress``: a description for a progress bar on stderr (None: no bar).
    """
    from tqdm import tqdm

    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    was_training = model.training
    model.eval()
    evaluator.reset()
    bar = tqdm(total=len(loader.dataset), desc=progress, unit="expr", file=sys.stderr, dynamic_ncols=True,
               disable=progress is None)
    t0 = time.perf_counter()
    try:
        for batch in loader:
            images, index = distinct_images(batch)
            images = images.to(device, dtype=dtype, non_blocking=True)
            words = batch["words"].to(device, non_blocking=True)
            index = index.to(device) if index is not None else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(images, words, index)
            evaluator.process(batch, out.mask_logits[:, 0].float().cpu())  # the host waits for the device here
            bar.update(len(words))
    finally:
        bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - t0
    result = evaluator.summary()
    result["seconds"] = seconds
    result["expressions_per_s"] = evaluator.seen / seconds if seconds > 0 else float("nan")
    return result


@dataclass
class Inference:
    """A model and how to run it over data sets: autocast and the loader's settings."""

    model: torch.nn.Module
    amp_dtype: torch.dtype | None = None
    batch_size: int = DEFAULT_BATCH
    num_workers: int = 0
    progress: bool = False

    def run(self, dataset: Dataset, evaluator: SegmentationEvaluator, indices: Sequence[int] | None = None,
            desc: str = "evaluate") -> dict[str, Any]:
        cuda = next(self.model.parameters()).device.type == "cuda"
        loader = eval_loader(dataset, self.batch_size, self.num_workers, indices, pin_memory=cuda)
        return inference_on_dataset(self.model, loader, evaluator, self.amp_dtype, desc if self.progress else None)


# ----------------------------------------------------------------------------------------
# outputs: prediction images and the per-expression CSV

class PredictionImages:
    """Saves each prediction as a mask PNG and an overlay PNG (prediction in red, the
    ground truth outlined in green); an ``on_prediction`` callback of the evaluator."""

    def __init__(self, out_dir: str | Path, dataset, tag: str = ""):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.base = dataset.base if isinstance(dataset, SwapDataset) else dataset
        self.tag = tag

    def __call__(self, index: int, batch: dict, i: int, pred: torch.Tensor) -> None:
        from PIL import Image

        name = f"{self.tag}ref{int(batch['ref_id'][i])}_sent{int(batch['sent_id'][i])}"
        mask = pred.numpy().astype(bool)
        Image.fromarray((mask * 255).astype(np.uint8)).save(self.out_dir / f"{name}_mask.png")
        image = self.base.load_image(int(batch["image_id"][i]))
        gt = batch["orig_mask"][i].numpy().astype(bool)
        Image.fromarray(overlay_mask(image, mask, outline=gt)).save(self.out_dir / f"{name}_overlay.png")


def write_csv(path: str | Path, records: list[dict]) -> None:
    """The per-expression records as CSV (``control`` is "none" or "swap")."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow({"control": r.get("control", "none"), **r})
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------------------
# the swap control

def evaluate_swap_control(inference: Inference, dataset, max_expressions: int | None = None, keep_records: bool = False,
                 save_images: str | Path | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Score ``dataset`` with each expression swapped for another object's of the same
    image (module docstring), and the same expressions with their own sentences.
    Returns the result block and the swapped expressions' records."""
    swap = SwapDataset(dataset)
    indices = spread_indices(len(swap), max_expressions) if max_expressions else None
    saver = PredictionImages(save_images, swap, tag="swap_") if save_images else None
    evaluator = SegmentationEvaluator(dataset.dataset, keep_records=keep_records, on_prediction=saver)
    swapped = inference.run(swap, evaluator, indices, desc="swap control")
    kept = [i for i, _, _ in swap.items]  # the same expressions, scored with their own sentences
    if indices is not None:
        kept = [kept[i] for i in indices]
    original = Inference(inference.model, inference.amp_dtype, inference.batch_size, inference.num_workers)
    same = original.run(dataset, SegmentationEvaluator(dataset.dataset), kept)
    result = {
        "description": "each expression replaced by an expression of a different object in the same image; "
                       "target mask unchanged",
        "expressions": swapped["n"],
        "skipped_single_ref_images": swap.skipped,
        "swapped": {k: v for k, v in swapped.items() if k not in ("n", "buckets")},
        "original_on_same_expressions": {k: v for k, v in same.items() if k not in ("n", "buckets")},
    }
    return result, [dict(r, control="swap") for r in evaluator.records]


# ----------------------------------------------------------------------------------------
# whole runs

@dataclass
class EvalOptions:
    """Where and how :func:`evaluate_run` evaluates (every field has a default)."""

    checkpoint: str = "last"  # last | best | a checkpoint path
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH
    # None: on a CPU 0 (the items of an in-order pass cost about 0.2 ms each, less than a
    # worker's inter-process copies: measured 5,151 items/s in-process against 1,420 with
    # one worker); on a GPU the run's data.num_workers, leaving a core to the host
    num_workers: int | None = None
    threads: int | None = None  # CPU intra-op threads; None: restr.utils.cpu_threads (half the cores)
    max_expressions: int | None = None  # None: every expression of the split
    data_root: str | None = None  # None: the run's data.root

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("max_expressions", 1), ("num_workers", 0), ("threads", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ConfigError(f"{name} = {value!r}: must be a whole number >= {low}")


def split_dataset(run, split: str, data_root: str | None = None):
    """The ReferDataset of ``split`` for a loaded run, with the run's vocabulary and size."""

    d = run.cfg.data
    return ReferDataset(data_root or d.root, d.dataset, d.split_by, split, image_root=d.image_root,
                        vocab=run.vocab, image_size=run.cfg.model.image_hw, max_words=run.cfg.model.max_words,
                        augment=False, return_original=True)


def evaluate_run(run_dir: str | Path, split: str = "val", *, swap_control: bool = False,
                 csv_path: str | Path | None = None, save_images: str | Path | None = None,
                 progress: bool = False, **options: Any) -> dict[str, Any]:
    """Evaluate a trained run (rebuilt from its directory) on ``split``; returns the result
    dict. ``options`` are the fields of :class:`EvalOptions`."""

    t_start = time.perf_counter()
    opts = EvalOptions(**options)
    device = torch.device(opts.device)
    run = load_run(run_dir, opts.checkpoint, device)
    dataset = split_dataset(run, split, opts.data_root)
    workers = opts.num_workers
    if workers is None:  # see EvalOptions.num_workers
        workers = 0 if device.type == "cpu" else min(run.cfg.data.num_workers, max(1, (os.cpu_count() or 1) - 1))
    if device.type == "cpu" and opts.threads is not None:
        torch.set_num_threads(opts.threads)
    elif device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(workers))  # see restr.utils.cpu_threads
    inference = Inference(run.model, resolve_amp(run.cfg.train.amp, device), opts.batch_size, workers, progress)
    indices = spread_indices(len(dataset), opts.max_expressions) if opts.max_expressions else None
    saver = PredictionImages(save_images, dataset) if save_images else None
    evaluator = SegmentationEvaluator(dataset.dataset, keep_records=csv_path is not None, on_prediction=saver)
    main = inference.run(dataset, evaluator, indices, desc=f"evaluate {split}")
    subset = f"{main['n']} expressions spread evenly over the split" if indices is not None else "all"
    result: dict[str, Any] = {
        "run": str(run.run_dir), "checkpoint": str(run.checkpoint), "step": run.step,
        "dataset": run.cfg.data.dataset, "split_by": run.cfg.data.split_by, "split": split,
        "expressions_total": len(dataset), "expressions": main["n"],
        **{k: v for k, v in main.items() if k != "n"},
        "protocol": dict(PROTOCOL, device=str(device), batch_size=opts.batch_size, subset=subset),
    }
    records = evaluator.records
    if swap_control:
        result["swap_control"], swapped = evaluate_swap_control(inference, dataset, opts.max_expressions,
                                                               csv_path is not None, save_images)
        records = records + swapped
    if csv_path:
        write_csv(csv_path, records)
    result["wall_s"] = time.perf_counter() - t_start
    return result


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
