"""Reader for the refer format (RefCOCO, RefCOCO+, RefCOCOg, ReferIt, and our synthref).

On disk::

    <root>/<dataset>/refs(<split_by>).p   pickled list of refs: ref_id, ann_id, image_id,
                                          category_id, split, file_name, sent_ids,
                                          sentences [{sent_id, sent, raw, tokens}]
    <root>/<dataset>/instances.json       COCO style: images, annotations, categories
    <image_root>/<image file_name>        the images (see data/README.md for defaults)

A ref's ``file_name`` carries its annotation id as a suffix
(``COCO_train2014_000000123456_789.jpg``); the image file drops it. An annotation's
``segmentation`` is a list of polygons (RefCOCO, RefCOCO+, RefCOCOg), a list of RLE
dicts (ReferIt) or, in COCO's crowd form, a bare RLE dict (:func:`mask_form`). Masks are
decoded with pycocotools; the parts of one object are merged as a union (the refer
toolkit sums them, which gives 2 where parts overlap).

:class:`ReferDataset` yields one item per (ref, sentence). The pickle and the JSON are
read once; images are decoded on demand and not kept in memory, unless a training split
is preloaded (:meth:`ReferDataset.preload`, :mod:`restr.data.preload`).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from .errors import DataError, EmptyExpressionError, UnsafeFileError
from .images import read_image
from .preload import budget_mb, decode_split
from .transforms import augment as _augment
from .transforms import LetterboxMeta, letterbox, letterbox_mask, normalize
from .vocab import Vocabulary, tokenize

__all__ = [
    "DATASETS",
    "SPLIT_ALIASES",
    "LENGTH_BUCKETS",
    "bucket_of",
    "bucket_labels",
    "default_image_root",
    "image_file_of_ref",
    "read_image",
    "load_refs",
    "decode_segmentation",
    "mask_form",
    "ReferData",
    "ReferDataset",
    "ItemOptions",
    "collate",
]

# dataset -> split_by -> splits, as in the refer toolkit's files (lichengunc/refer).
DATASETS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
    "refclef": {"unc": ("train", "val", "testA", "testB", "testC"), "berkeley": ("train", "val", "test")},
    "synthref": {"unc": ("train", "val", "testA", "testB")},
}
# Unions usable as a split name wherever all their parts exist (ReferIt's "trainval").
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {"trainval": ("train", "val")}

_UNC = [(1, 2), (3, 3), (4, 5), (6, 20)]
# Table 2 of the paper: word-count buckets per dataset (G-Ref, UNC, UNC+, ReferIt).
LENGTH_BUCKETS: dict[str, list[tuple[int, int]]] = {
    "refcocog": [(1, 5), (6, 7), (8, 10), (11, 20)],
    "refcoco": list(_UNC),
    "refcoco+": list(_UNC),
    "refclef": [(1, 1), (2, 2), (3, 4), (5, 20)],
    "synthref": list(_UNC),
}


def _label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bucket_labels(dataset: str) -> list[str]:
    """The bucket labels of ``dataset`` in order, e.g. ``["1-2", "3", "4-5", "6-20"]``."""
    if dataset not in LENGTH_BUCKETS:
        raise DataError(f"no length buckets for dataset {dataset!r}; known: {', '.join(LENGTH_BUCKETS)}")
    return [_label(lo, hi) for lo, hi in LENGTH_BUCKETS[dataset]]


def bucket_of(length: int, dataset: str) -> str:
    """The Table 2 bucket label of an expression of ``length`` words (> 20 -> last bucket)."""
    if dataset not in LENGTH_BUCKETS:
        raise DataError(f"no length buckets for dataset {dataset!r}; known: {', '.join(LENGTH_BUCKETS)}")
    length = int(length)
    if length < 1:
        raise DataError(f"expression length must be >= 1, got {length}")
    buckets = LENGTH_BUCKETS[dataset]
    for lo, hi in buckets:
        if lo <= length <= hi:
            return _label(lo, hi)
    return _label(*buckets[-1])


def check_names(dataset: str, split_by: str, split: str | None = None) -> tuple[str, ...]:
    """Validate the names; return the split(s) that ``split`` stands for."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if split_by not in DATASETS[dataset]:
        raise DataError(
            f"unknown split_by {split_by!r} for {dataset}; choose one of: {', '.join(DATASETS[dataset])}"
        )
    if split is None:
        return DATASETS[dataset][split_by]
    known = DATASETS[dataset][split_by]
    if split in known:
        return (split,)
    if split in SPLIT_ALIASES and all(s in known for s in SPLIT_ALIASES[split]):
        return SPLIT_ALIASES[split]
    aliases = [a for a, parts in SPLIT_ALIASES.items() if all(s in known for s in parts)]
    raise DataError(
        f"unknown split {split!r} for {dataset} ({split_by}); choose one of: {', '.join([*known, *aliases])}"
    )


def default_image_root(root: str | os.PathLike, dataset: str) -> Path:
    """The refer toolkit's layout: COCO sets under ``<root>/images/mscoco/images/train2014``,
    ReferIt under ``<root>/images/saiapr_tc-12``, synthref under ``<root>/synthref/images``.

    If that folder does not exist, a few common alternatives are tried
    (``<root>/train2014``, ``<root>/images/train2014``, ``<root>/<dataset>/images``).
    """
    root = Path(root)
    if dataset == "synthref":
        candidates = [root / "synthref" / "images"]
    elif dataset == "refclef":
        candidates = [root / "images" / "saiapr_tc-12", root / "saiapr_tc-12", root / dataset / "images"]
    else:
        candidates = [root / "images" / "mscoco" / "images" / "train2014", root / "train2014",
                      root / "images" / "train2014", root / dataset / "images"]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


_SUFFIX = re.compile(r"_\d+(\.[A-Za-z0-9]+)$")


def image_file_of_ref(file_name: str) -> str:
    """``COCO_train2014_000000123456_789.jpg`` -> ``COCO_train2014_000000123456.jpg``."""
    return _SUFFIX.sub(r"\1", file_name)


# ----------------------------------------------------------------------------------------
# masks (images are read by .images.read_image: the one loading path, EXIF orientation applied)

def _rle_string_total(counts: bytes) -> int:
    """Sum of the run lengths of a compressed COCO RLE string (its own decoder, for checks)."""
    runs: list[int] = []
    i, n = 0, len(counts)
    while i < n:
        x, shift, more = 0, 0, True
        while more:
            if i >= n:
                raise ValueError("RLE string ends inside a number")
            c = counts[i] - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid RLE character {chr(counts[i])!r}")
            x |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            i += 1
            shift += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * shift)
        if len(runs) > 2:  # runs after the third are stored as differences (pycocotools)
            x += runs[-2]
        if x < 0:
            raise ValueError("negative run length")
        runs.append(x)
    return sum(runs)


# the stored forms of a mask (``segmentation`` in instances.json)
POLYGONS = "polygons"   # a list of flat [x1, y1, x2, y2, ...] lists: RefCOCO, RefCOCO+, RefCOCOg
RLE_LIST = "RLE list"   # a list of RLE dicts: ReferIt (refclef)
RLE_DICT = "RLE dict"   # a bare RLE dict: COCO's crowd form, not used by the refer files
UNCOMPRESSED = " (uncompressed)"  # suffix: some part has a list of run lengths, not a string


def mask_form(seg: Any) -> str | None:
    """The stored form of a segmentation: ``"polygons"``, ``"RLE list"`` or ``"RLE dict"``,
    with ``" (uncompressed)"`` if any RLE part has a list of counts; None if none of them."""
    if isinstance(seg, dict):
        parts, form = [seg], RLE_DICT
    elif isinstance(seg, list) and seg and all(isinstance(p, (list, tuple)) for p in seg):
        return POLYGONS
    elif isinstance(seg, list) and seg and all(isinstance(p, dict) for p in seg):
        parts, form = seg, RLE_LIST
    else:
        return None
    return form + UNCOMPRESSED if any(isinstance(p.get("counts"), list) for p in parts) else form


def _found(seg: Any) -> str:
    """A short description of what a segmentation holds, for error messages."""
    if not isinstance(seg, list):
        return f"{type(seg).__name__} {str(seg)[:40]}"
    if not seg:
        return "an empty list"
    kinds = sorted({type(p).__name__ for p in seg})
    return f"a list of {' and '.join(kinds)} ({str(seg)[:40]})"


def _polygons_rle(parts: list, h: int, w: int, where: str) -> dict:
    """The union of polygons (flat coordinate lists) as one RLE; parts under 3 points are skipped."""
    from pycocotools import mask as mask_utils

    polys = []
    for part in parts:
        if not all(isinstance(v, (int, float)) for v in part):
            raise DataError(f"{where}: a polygon must be a flat list of numbers, got {str(part)[:60]}")
        if len(part) % 2:
            raise DataError(f"{where}: polygon with an odd number of coordinates ({len(part)})")
        if len(part) >= 6:
            polys.append([float(v) for v in part])
    if not polys:
        raise DataError(f"{where}: no polygon with at least 3 points")
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))


def _checked_rle(seg: dict, h: int, w: int, where: str) -> dict:
    """One RLE dict (uncompressed ``counts`` list or compressed string), checked against the image."""
    from pycocotools import mask as mask_utils

    size, counts = seg.get("size"), seg.get("counts")
    if size is None or counts is None:
        raise DataError(f"{where}: an RLE needs 'size' and 'counts'")
    if [int(v) for v in size] != [h, w]:
        raise DataError(f"{where}: RLE size {list(size)} does not match the image's {[h, w]}")
    if isinstance(counts, list):
        if any((not isinstance(c, int)) or c < 0 for c in counts) or sum(counts) != h * w:
            raise DataError(f"{where}: uncompressed RLE counts must be non-negative and sum to {h * w}")
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if not isinstance(counts, (str, bytes)):
        raise DataError(f"{where}: RLE counts must be a list or a string, got {type(counts).__name__}")
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    try:
        total = _rle_string_total(raw)
    except ValueError as exc:
        raise DataError(f"{where}: corrupt compressed RLE: {exc}") from None
    if total != h * w:
        raise DataError(f"{where}: compressed RLE covers {total} pixels, the image has {h * w}")
    return {"size": [h, w], "counts": raw}


def decode_segmentation(seg: Any, height: int, width: int, where: str = "segmentation") -> np.ndarray:
    """A segmentation in any form of :func:`mask_form` -> H x W uint8 {0, 1}.

    The parts of one object (several polygons, several RLEs) are merged as a union, so
    pixels where parts overlap are 1 (the refer toolkit sums the parts, giving 2 there).
    Polygon parts with fewer than 3 points have no area and are ignored; anything else
    malformed raises :class:`DataError` naming ``where`` and what was found.
    """
    from pycocotools import mask as mask_utils

    h, w = int(height), int(width)
    form = mask_form(seg)
    if form is None:
        raise DataError(f"{where}: a segmentation must be a list of polygons, a list of RLE dicts or an RLE "
                        f"dict; found {_found(seg)}")
    if form == POLYGONS:
        rles = [_polygons_rle(seg, h, w, where)]
    elif form.startswith(RLE_LIST):
        rles = [_checked_rle(part, h, w, f"{where}, RLE part {i}") for i, part in enumerate(seg)]
    else:
        rles = [_checked_rle(seg, h, w, where)]
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_utils.decode(mask_utils.merge(rles) if len(rles) > 1 else rles[0])
    return (m > 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# the files of one dataset/split_by

# the only globals a refs file may name: the set types (a Python 2 pickle writes a set as a
# call of __builtin__.set); everything else in a refs file is a list, dict, tuple, string,
# number, bool or None, which pickle writes without naming any global
_REFS_GLOBALS = {(module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset")}


class _RefsUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: it refuses every global but the set types,
    so a crafted refs file cannot make it import or call anything (no code runs)."""

    def __init__(self, raw: bytes, path: str | os.PathLike, **kwargs: Any):
        super().__init__(io.BytesIO(raw), **kwargs)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REFS_GLOBALS:
            return set if name == "set" else frozenset
        raise UnsafeFileError(f"{self.path}: refused to unpickle the Python global {module}.{name}: a refs file holds "
                        f"only lists, dicts, strings and numbers, so this one is not a refer refs file (it may have "
                        f"been crafted to run code; nothing in it was run)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.path}: refused a pickle persistent id: a refs file holds only plain data")


def _unpickle_refs(raw: bytes, path: str | os.PathLike) -> Any:
    try:
        return _RefsUnpickler(raw, path).load()
    except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII bytes
        return _RefsUnpickler(raw, path, encoding="latin1").load()


def load_refs(path: str | os.PathLike) -> list[dict]:
    """The list of ref dicts pickled in a ``refs(<split_by>).p`` file (Python 2 pickles too).

    Read by a restricted unpickler (:class:`_RefsUnpickler`): plain data only, never code."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()  # one read: unpickling from a file object reads it in thousands of small pieces
        refs = _unpickle_refs(raw, path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DataError(f"{path}: expected a pickled list of ref dicts")
    return refs


_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class ReferData:
    """``refs(<split_by>).p`` and ``instances.json`` of one dataset, loaded once."""

    def __init__(self, root: str | os.PathLike, dataset: str, split_by: str,
                 image_root: str | os.PathLike | None = None):
        check_names(dataset, split_by)
        self.root = Path(root)
        self.dataset = dataset
        self.split_by = split_by
        self.dir = self.root / dataset
        self.refs_path = self.dir / f"refs({split_by}).p"
        self.instances_path = self.dir / "instances.json"
        self.image_root = Path(image_root) if image_root is not None else default_image_root(root, dataset)
        errors = []
        missing = [str(p) for p in (self.refs_path, self.instances_path) if not p.is_file()]
        if missing:
            raise DataError(f"missing {' and '.join(missing)} (expected layout: see data/README.md)")
        self.refs: list[dict] = []
        self.images: dict[int, dict] = {}
        self.anns: dict[int, dict] = {}
        self.cats: dict[int, dict] = {}
        try:
            self.refs = self._load_refs()
        except UnsafeFileError:
            raise
        except DataError as exc:
            errors.append(str(exc))
        try:
            self.images, self.anns, self.cats = self._load_instances()
        except DataError as exc:
            errors.append(str(exc))
        if errors:
            raise DataError("\n".join(errors))

    def _load_refs(self) -> list[dict]:
        return load_refs(self.refs_path)

    def _load_instances(self) -> tuple[dict[int, dict], dict[int, dict], dict[int, dict]]:
        try:
            with open(self.instances_path, encoding="utf-8") as fh:
                inst = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {self.instances_path}: {exc}") from None
        if not isinstance(inst, dict) or not all(k in inst for k in ("images", "annotations")):
            raise DataError(f"{self.instances_path}: expected a JSON object with 'images' and 'annotations'")
        try:
            images = {int(i["id"]): i for i in inst["images"]}
            anns = {int(a["id"]): a for a in inst["annotations"]}
            cats = {int(c["id"]): c for c in inst.get("categories", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{self.instances_path}: an image, annotation or category lacks a valid 'id' "
                            f"({exc})") from None
        return images, anns, cats

    # -- helpers --------------------------------------------------------------------------
    def image_path(self, image_id: int) -> Path:
        img = self.images.get(int(image_id))
        if img is None:
            raise DataError(f"image id {image_id} is not in {self.instances_path}")
        name = img.get("file_name")
        if not name:
            raise DataError(f"image id {image_id} has no file_name in {self.instances_path}")
        problem = self.image_name_problem(name)
        if problem:
            raise DataError(f"image id {image_id} in {self.instances_path}: {problem}")
        return self.image_root / name

    def image_name_problem(self, name: Any) -> str | None:
        """Why an image's ``file_name`` is refused (None if it is not): it must be a relative
        path that stays inside the image folder (no absolute path, no ``..``), so that a data
        set's files open nothing outside ``image_root``."""
        if not isinstance(name, str):
            return f"file_name {name!r} is not a string"
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or "\0" in name:
            return f"file_name {name!r} leaves the image folder {self.image_root} (refused)"
        return None

    def load_image(self, image_id: int) -> np.ndarray:
        img = self.images.get(int(image_id))
        if img is None:
            raise DataError(f"image id {image_id} is not in {self.instances_path}")
        hw = (int(img["height"]), int(img["width"])) if "height" in img and "width" in img else None
        return read_image(self.image_path(image_id), hw)

    def load_mask(self, ann_id: int) -> np.ndarray:
        ann = self.anns.get(int(ann_id))
        if ann is None:
            raise DataError(f"annotation {ann_id} is not in {self.instances_path}")
        img = self.images.get(int(ann.get("image_id", -1)))
        if img is None:
            raise DataError(f"annotation {ann_id}: its image {ann.get('image_id')} is not in {self.instances_path}")
        where = f"annotation {ann_id} (image {img['id']}, {self.instances_path.name})"
        if "segmentation" not in ann:
            raise DataError(f"{where}: no segmentation")
        m = decode_segmentation(ann["segmentation"], img["height"], img["width"], where)
        if not m.any():
            raise DataError(f"{where}: empty mask")
        return m

    @staticmethod
    def sentence_text(sent: dict) -> str:
        text = sent.get("sent")
        if text is None:
            text = sent.get("raw")
        return text if isinstance(text, str) else ""

    # -- validation ---------------------------------------------------------------------
    def _image_file_problems(self, rid: Any, img: dict) -> list[tuple[str, str]]:
        name = img.get("file_name")
        problem = self.image_name_problem(name) if name else None
        if problem:
            return [("image", f"ref {rid}: image {img.get('id')} in {self.instances_path.name}: {problem}")]
        path = self.image_root / str(name or "")
        if not name or not path.is_file():
            return [("image", f"ref {rid}: image file not found: {path}")]
        return []

    def structural_problems(self, refs: Iterable[dict], check_files: bool = True) -> list[tuple[str, str]]:
        """``(kind, message)`` for every problem found without decoding images or masks."""
        problems: list[tuple[str, str]] = []
        known_splits = set(DATASETS[self.dataset][self.split_by])
        seen_images: set[int] = set()
        for r in refs:
            rid = r.get("ref_id", "?")
            lacking = [k for k in _REF_KEYS if k not in r]
            if lacking:
                problems.append(("ref", f"ref {rid}: lacks {', '.join(lacking)} ({self.refs_path.name})"))
                continue
            if r["split"] not in known_splits:
                problems.append(("ref", f"ref {rid}: unknown split {r['split']!r} ({self.refs_path.name})"))
            ann = self.anns.get(int(r["ann_id"]))
            if ann is None:
                problems.append(("ann", f"ref {rid}: annotation {r['ann_id']} is not in {self.instances_path}"))
            elif int(ann.get("image_id", -1)) != int(r["image_id"]):
                problems.append(("ann", f"ref {rid}: annotation {r['ann_id']} belongs to image "
                                        f"{ann.get('image_id')}, the ref says {r['image_id']}"))
            img = self.images.get(int(r["image_id"]))
            if img is None:
                problems.append(("image", f"ref {rid}: image {r['image_id']} is not in {self.instances_path}"))
            elif check_files and int(r["image_id"]) not in seen_images:
                seen_images.add(int(r["image_id"]))
                problems.extend(self._image_file_problems(rid, img))
            sents = r["sentences"]
            if not isinstance(sents, list) or not sents:
                problems.append(("sentence", f"ref {rid}: has no sentences"))
                continue
            for s in sents:
                text = self.sentence_text(s) if isinstance(s, dict) else ""
                if not tokenize(text):
                    sid = s.get("sent_id", "?") if isinstance(s, dict) else "?"
                    problems.append(("empty", f"ref {rid}, sentence {sid}: empty expression {text!r}"))
        return problems


def stats_command(data: ReferData) -> str:
    """The command that checks every file of ``data`` and lists its problems."""
    default = data.image_root == default_image_root(data.root, data.dataset)
    return (f"python -m restr data stats --root {data.root} --dataset {data.dataset} --split-by {data.split_by}"
            + ("" if default else f" --image-root {data.image_root}"))


def _raise_problems(problems: list[tuple[str, str]], context: str, data: ReferData) -> None:
    if not problems:
        return
    shown = [m for _, m in problems[:20]]
    more = ""
    if len(problems) > 20:
        more = f"\n  ... and {len(problems) - 20} more (run `{stats_command(data)}` to list all)"
    text = f"{context}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more
    if all(k == "empty" for k, _ in problems):
        raise EmptyExpressionError(text)
    raise DataError(text)


# ----------------------------------------------------------------------------------------
# the dataset

@dataclass(frozen=True)
class ItemOptions:
    """How :class:`ReferDataset` makes an item; each field may also be passed to it by name."""

    image_size: int | Sequence[int] = 480  # letterbox to a square of this side, or to (H, W)
    max_words: int = 20                     # word ids per expression (front-padded, truncated)
    augment: bool = False                   # the training augmentation (see transforms.augment)
    return_original: bool = False           # add ``orig_mask`` at the original resolution
    uint8: bool = False                     # uint8 image and mask, normalised later on the device

    @classmethod
    def merged(cls, options: ItemOptions | None, overrides: dict[str, Any]) -> ItemOptions:
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"ReferDataset got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        opts = replace(options or cls(), **overrides)
        opts.image_hw()  # checks the size
        if int(opts.max_words) < 1:
            raise DataError(f"max_words must be >= 1, got {opts.max_words}")
        return opts

    def image_hw(self) -> tuple[int, int]:
        size = self.image_size
        hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
        if len(hw) != 2 or min(hw) < 1:
            raise DataError(f"image_size must be an int or (H, W), got {size!r}")
        return hw


class ReferDataset(torch.utils.data.Dataset):
    """(ref, sentence) pairs of one dataset / split_by / split.

    Each item is a dict:

    - ``image``: float32 (3, H, W), letterboxed and normalised (:func:`normalize`);
    - ``mask``: float32 (H, W) in {0, 1}, letterboxed (nearest);
    - ``words``: int64 (max_words,), front-padded ids; ``length``: words kept (<= max_words);
      ``num_words``: words before truncation;
    - ``sentence`` (str), ``ref_id``, ``sent_id``, ``ann_id``, ``image_id`` (int);
    - ``meta``: float64 (9,), the :class:`LetterboxMeta` as a tensor;
    - with ``return_original=True``, ``orig_mask``: uint8 (h0, w0), the mask at the
      resolution ``meta`` maps back to (the original image's, unless ``augment`` cropped).

    ``vocab=None`` builds the vocabulary from this split's sentences; pass the training
    split's vocabulary (or a path to its JSON) to the other splits.

    How items are made (``image_size=480``, ``max_words=20``, ``augment``,
    ``return_original``, ``uint8``) is an :class:`ItemOptions`: pass one as ``options``,
    or its fields by name (``image_size=64``), which override ``options``.

    ``uint8=True`` (what the trainer uses) leaves the last, cheapest step to the GPU: the
    ``image`` is the letterboxed uint8 (3, H, W) and the ``mask`` uint8, a quarter of the
    bytes to move between processes and to the device; :func:`normalize_batch` then gives
    exactly the float image :func:`normalize` would have.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str,
        split_by: str,
        split: str,
        image_root: str | os.PathLike | None = None,
        vocab: Vocabulary | str | os.PathLike | None = None,
        options: ItemOptions | None = None,
        **item_options: Any,
    ):
        splits = check_names(dataset, split_by, split)
        self.data = ReferData(root, dataset, split_by, image_root)
        self.dataset, self.split_by, self.split = dataset, split_by, split
        self.options = opts = ItemOptions.merged(options, item_options)
        self.image_size, self.max_words = opts.image_hw(), int(opts.max_words)
        self.augment, self.return_original = bool(opts.augment), bool(opts.return_original)
        self.uint8 = bool(opts.uint8)
        self.refs = [r for r in self.data.refs if r.get("split") in splits]
        if not self.refs:
            raise DataError(f"no refs with split {split!r} in {self.data.refs_path}")
        _raise_problems(self.data.structural_problems(self.refs),
                        f"{self.data.refs_path} split {split!r}", self.data)
        self._items = [(ri, si) for ri, r in enumerate(self.refs) for si in range(len(r["sentences"]))]
        if vocab is None:
            vocab = Vocabulary.from_sentences(self.sentences())
        elif not isinstance(vocab, Vocabulary):
            vocab = Vocabulary.load(vocab)
        self.vocab = vocab
        self._last_image: tuple[int, tuple[int, ...], tuple[torch.Tensor, LetterboxMeta]] | None = None  # _fixed_pair
        self._last_mask: tuple[int, tuple[np.ndarray, torch.Tensor]] | None = None
        self._decoded = None  # restr.data.preload.Decoded, after preload()

    def preload(self, budget: float | None = None) -> str:
        """Decode every image and mask of this split once and keep them, read-only, for
        :meth:`load_image` and :meth:`load_mask` (the same arrays as decoding each time),
        unless they would take more than ``budget`` MB (default: ``RESTR_PRELOAD_MB`` or
        1024). Returns a line saying what was done."""
        self._decoded, message = decode_split(self, budget_mb() if budget is None else budget)
        return message

    def __getstate__(self) -> dict:
        """Pickled (for a spawned loader worker) without the preloaded arrays."""
        return {**self.__dict__, "_decoded": None}

    # -- access -------------------------------------------------------------------------
    @property
    def image_root(self) -> Path:
        return self.data.image_root

    def __len__(self) -> int:
        return len(self._items)

    def item_ref(self, index: int) -> tuple[dict, dict]:
        """``(ref, sentence dict)`` of item ``index``."""
        ri, si = self._items[index]
        ref = self.refs[ri]
        return ref, ref["sentences"][si]

    def sentences(self) -> list[str]:
        return [self.data.sentence_text(self.refs[ri]["sentences"][si]) for ri, si in self._items]

    def lengths(self) -> list[int]:
        """Word counts after tokenisation, before truncation, in item order."""
        return [len(tokenize(s)) for s in self.sentences()]

    def image_ids(self) -> list[int]:
        return sorted({int(r["image_id"]) for r in self.refs})

    def image_path(self, image_id: int) -> Path:
        return self.data.image_path(image_id)

    def load_image(self, image_id: int) -> np.ndarray:
        """Original-resolution H x W x 3 uint8 RGB (read-only when preloaded)."""
        if self._decoded is not None and int(image_id) in self._decoded.images:
            return self._decoded.images[int(image_id)]
        return self.data.load_image(image_id)

    def load_mask(self, ann_id: int) -> np.ndarray:
        """Original-resolution H x W uint8 {0, 1} (read-only when preloaded)."""
        if self._decoded is not None and int(ann_id) in self._decoded.masks:
            return self._decoded.masks[int(ann_id)]
        return self.data.load_mask(ann_id)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        ref, sent = self.item_ref(index)
        text = self.data.sentence_text(sent)
        if self.augment:
            image, mask = self._pair(ref)
            seed = int(torch.randint(0, 2**62, (1,)).item())  # follows torch's (per-worker) seed
            image, mask = _augment(image, mask, tokenize(text), np.random.default_rng(seed))
            image_t, meta = self._boxed_image(image)
            mask_t = self._boxed_mask(mask)
        else:
            (image_t, meta), (mask, mask_t) = self._fixed_pair(ref)
        ids, length = self.vocab.encode(text, self.max_words)
        item = {
            "image": image_t,
            "mask": mask_t,
            "words": torch.from_numpy(ids),
            "length": length,
            "num_words": len(tokenize(text)),
            "sentence": text,
            "ref_id": int(ref["ref_id"]),
            "sent_id": int(sent.get("sent_id", -1)),
            "ann_id": int(ref["ann_id"]),
            "image_id": int(ref["image_id"]),
            "meta": meta.to_tensor(),
        }
        if self.return_original:
            item["orig_mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))
        return item

    # -- making an item's tensors -------------------------------------------------------
    def _pair(self, ref: dict) -> tuple[np.ndarray, np.ndarray]:
        """The original image and the ref's mask, checked to be of one size."""
        image = self.load_image(ref["image_id"])
        return image, self._checked_mask(ref, image.shape[:2])

    def _checked_mask(self, ref: dict, image_hw: tuple[int, ...]) -> np.ndarray:
        """The ref's original mask; an error names the ref when it fails to load or is not
        of its image's size ``image_hw``."""
        try:
            mask = self.load_mask(ref["ann_id"])
        except DataError as exc:
            raise DataError(f"ref {ref['ref_id']}: {exc}") from None
        if mask.shape != tuple(image_hw):
            raise DataError(f"ref {ref['ref_id']}: mask {mask.shape} and image {tuple(image_hw)} differ in size")
        return mask

    def _boxed_image(self, image: np.ndarray) -> tuple[torch.Tensor, LetterboxMeta]:
        boxed, meta = letterbox(image, self.image_size)
        return (torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))) if self.uint8
                else normalize(boxed)), meta

    def _boxed_mask(self, mask: np.ndarray) -> torch.Tensor:
        boxed, _ = letterbox_mask(mask, self.image_size)
        return torch.from_numpy(boxed.astype(np.uint8 if self.uint8 else np.float32))

    def _fixed_pair(self, ref: dict) -> tuple[tuple[torch.Tensor, LetterboxMeta], tuple[np.ndarray, torch.Tensor]]:
        """Without augmentation, ``((image tensor, meta), (original mask, mask tensor))``.

        The last image and the last mask made are kept: an image's expressions are
        consecutive items (a ref's sentences, then the image's next ref), so an in-order
        pass such as evaluation decodes and letterboxes each image once instead of about
        13 times. The tensors are shared between items; nothing downstream writes to them
        (``collate`` stacks copies)."""
        image_id, ann_id = int(ref["image_id"]), int(ref["ann_id"])
        if self._last_image is None or self._last_image[0] != image_id:
            image = self.load_image(image_id)
            self._last_image = (image_id, image.shape[:2], self._boxed_image(image))
            self._last_mask = None
        if self._last_mask is None or self._last_mask[0] != ann_id:
            mask = self._checked_mask(ref, self._last_image[1])
            self._last_mask = (ann_id, (mask, self._boxed_mask(mask)))
        return self._last_image[2], self._last_mask[1]

    def __repr__(self) -> str:
        return (f"ReferDataset({self.dataset}, {self.split_by}, {self.split}: {len(self.refs)} refs, "
                f"{len(self)} sentences, image_size={self.image_size})")


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-shape tensors, turn ints/floats into tensors, keep the rest as lists."""
    if not batch:
        raise DataError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        first = values[0]
        if isinstance(first, torch.Tensor) and all(v.shape == first.shape for v in values):
            out[key] = torch.stack(values)
        elif isinstance(first, bool) or isinstance(first, str):
            out[key] = list(values)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(first, float):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = list(values)
    return out
