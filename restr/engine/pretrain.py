"""Pretrain a small ViT: the CPU-scale stand-in for the paper's ImageNet-21k start.

``python -m restr pretrain --preset tiny --data data/synthref-v2`` (classify: the tiny preset's start)
``python -m restr pretrain --preset tiny --data data/synthref --set model.vit_pretrain=dense
--set model.vit_pos_init=random`` (the former start, the quick zoo's: dense, below)

Two tasks, chosen by ``model.vit_pretrain`` (the trainer makes the one a config with
``model.vit_weights = "pretrain"`` asks for, once, and caches it under the repository's
``data/pretrained/``, whatever the working folder, or ``$RESTR_PRETRAINED``: :func:`pretrained_folder`):

* ``"classify"`` (the start like the paper's, ImageNet classification: image-level labels
  on images the data set never uses): :func:`ensure_classify_pretrained`, at the end of
  this file;
* ``"dense"`` (the former start, which the quick zoo keeps; in-domain and mask-supervised):
  dense category prediction on the training split's own images, described next.

The paper fine-tunes a ViT-B/16 that has seen ImageNet-21k; the tiny preset's ViT has
seen nothing, and must learn what shapes look like from the referring loss alone. This
command gives it a start on the same footing, from the training split's images only:
**dense category prediction**. Every pixel of the letterboxed image is labelled with
the category of the annotated object covering it (COCO's ``category_id`` in
``instances.json``: the shape in the embedded data set, the object class in RefCOCO), or
background. Each patch token predicts the labels of its own P x P pixels through one
linear layer (a "pixel-shuffle" head), so the token must describe where, inside its
patch, each category lies: exactly the sub-patch detail the coarse-to-fine decoder
needs later. No expression, no target and no validation image is used.

The result is the ViT's state dict as ``.safetensors`` (timm's key names), loaded like
any pretrained ViT with ``--set model.vit_weights=PATH``, and a ``.json`` beside it with
the config, the data's fingerprint, the time and the held-out pixel accuracy.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import LATE_FIELDS, ConfigError, ModelConfig
from ..data import synth
from ..data.errors import DataError
from ..data.refer import ReferData
from ..data.synth import COLOURS, SHAPES, render
from ..data.synth_layout import SHAPES_PER_SCENE
from ..data.synth_scenes import ImageJob
from ..data.transforms import augment_group, letterbox, letterbox_mask, normalize_batch
from ..model.vision import VisionEncoder, position_structure
from ..utils.devices import cpu_threads, resolve_amp
from ..utils.files import REPO, atomic_write_bytes, atomic_write_text, exclusive_lock, file_sha256
from .optim import lr_factor
from .resume import stop_if_asked


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    amp: str = "bf16"
    seed: int = 0
    num_workers: int = 0  # the items are in memory: loading in the training process is enough
    val_images: int = 200  # held out of the training split to report pixel accuracy

    def validate(self) -> "PretrainConfig":
        for name in ("epochs", "batch_size", "val_images"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < (0 if name == "val_images" else 1):
                raise ConfigError(f"pretrain {name} = {getattr(self, name)!r}: must be a whole number >= 1")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.weight_decay >= 0):
            raise ConfigError(f"pretrain lr/warmup/weight_decay out of range: {self.lr}, {self.warmup}, "
                              f"{self.weight_decay}")
        return self


# ----------------------------------------------------------------------------------------
# data: images and their per-pixel category maps

class CategoryMaps(Dataset):
    """Item ``i``: the letterboxed uint8 image (3, H, W) of image ``image_ids[i]`` and its
    category map (H, W) int64: 0 for background, ``1 + k`` for the k-th category.

    The images and their maps are decoded once, up front, and kept in memory (about
    40 kB per image of the embedded data set): every epoch then costs only the
    augmentation and the letterbox."""

    def __init__(self, data, image_ids: list[int], image_size: tuple[int, int], augment: bool):
        self.image_size, self.augment = image_size, augment
        by_image: dict[int, list[dict]] = {}
        for ann in sorted(data.anns.values(), key=lambda a: int(a["id"])):
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.classes = {cid: k + 1 for k, cid in enumerate(sorted(data.cats))}
        self.images = [data.load_image(i) for i in image_ids]
        self.labels = [self._label_map(data, i, by_image.get(i, [])) for i in image_ids]

    def _label_map(self, data, image_id: int, anns: list[dict]) -> np.ndarray:
        """Categories painted in annotation order (later objects cover earlier ones)."""
        img = data.images[image_id]
        labels = np.zeros((int(img["height"]), int(img["width"])), np.uint8)
        for ann in anns:
            labels[data.load_mask(ann["id"]).astype(bool)] = self.classes.get(int(ann["category_id"]), 0)
        return labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, labels = self.images[i], self.labels[i]
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            image, (labels,) = augment_group(image, [labels], [[]], rng)  # no words: flips are free
        boxed, _ = letterbox(image, self.image_size)
        boxed_labels, _ = letterbox_mask(labels, self.image_size)
        return {"image": torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))),
                "labels": torch.from_numpy(boxed_labels.astype(np.int64))}


# ----------------------------------------------------------------------------------------
# the model: the ViT and a pixel-shuffle head

class DenseHead(nn.Module):
    """Patch tokens (B, N, D) -> per-pixel logits (B, C, H, W): each token's P*P*C outputs
    are its own pixels' class scores."""

    def __init__(self, dim: int, patch: int, classes: int, grid: tuple[int, int]):
        super().__init__()
        self.patch, self.classes, self.grid = patch, classes, grid
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, patch * patch * classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, (gh, gw), P, C = tokens.shape[0], self.grid, self.patch, self.classes
        x = self.proj(self.norm(tokens))  # (B, gh*gw, P*P*C)
        x = x.view(B, gh, gw, P, P, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, P, gw, P)
        return x.reshape(B, C, gh * P, gw * P)


def instances_key(instances_path: str | os.PathLike) -> str:
    """What the pretraining caches are keyed by for the data: the first 12 hex digits of
    the SHA-256 of its ``instances.json`` (the file the labels come from)."""
    return file_sha256(instances_path)[:12]


def _loaders(data, train_ids: list[int], model_cfg: ModelConfig, p: PretrainConfig) -> tuple[DataLoader, Dataset]:
    hw = model_cfg.image_hw
    train = CategoryMaps(data, train_ids[p.val_images:], hw, augment=True)
    held = CategoryMaps(data, train_ids[:p.val_images], hw, augment=False)
    loader = DataLoader(train, batch_size=p.batch_size, shuffle=True, drop_last=True, num_workers=p.num_workers,
                        generator=torch.Generator().manual_seed(p.seed), persistent_workers=p.num_workers > 0)
    return loader, held


@torch.no_grad()
def pixel_accuracy(vision: nn.Module, head: nn.Module, dataset: Dataset, amp: torch.dtype | None) -> dict[str, float]:
    """Pixel accuracy over all pixels and over object pixels only, on ``dataset``."""

    vision.eval()
    right = total = right_obj = total_obj = 0
    for batch in DataLoader(dataset, batch_size=64):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            pred = head(vision(normalize_batch(batch["image"]))).argmax(1)
        labels = batch["labels"]
        right += int((pred == labels).sum())
        total += labels.numel()
        obj = labels > 0
        right_obj += int((pred[obj] == labels[obj]).sum())
        total_obj += int(obj.sum())
    vision.train()
    return {"pixel_accuracy": right / max(total, 1), "object_pixel_accuracy": right_obj / max(total_obj, 1)}


def pretrain_vit(model_cfg: ModelConfig, data, train_ids: list[int], p: PretrainConfig,
                 progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the ViT of ``model_cfg`` (random start) on dense category prediction; return
    its state dict and a summary (losses, held-out accuracy, seconds)."""
    from tqdm import tqdm


    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(p.num_workers))
    torch.manual_seed(p.seed)
    vision = VisionEncoder(ModelConfig(**{**asdict(model_cfg), "vit_weights": None}))
    loader, held = _loaders(data, train_ids, model_cfg, p)
    head = DenseHead(vision.dim, model_cfg.patch_size, len(loader.dataset.classes) + 1, model_cfg.grid)
    params = list(vision.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    total = p.epochs * len(loader)
    amp = resolve_amp(p.amp, torch.device("cpu"))
    bar = tqdm(total=total, desc="pretrain ViT", unit="it", file=sys.stderr, disable=not progress)
    step, t0, losses = 0, time.perf_counter(), []
    for _ in range(p.epochs):
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = p.lr * lr_factor(step, total, round(p.warmup * total), power=1.0)
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                logits = head(vision(normalize_batch(batch["image"])))
            loss = F.cross_entropy(logits.float(), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())  # the host reads the loss: CPU only, no device to wait for
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            stop_if_asked("the ViT's pretraining")
    bar.close()
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("pretraining diverged (non-finite loss); lower --lr")
    summary = {"steps": step, "seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-20:])),
               "held_out_images": len(held), **pixel_accuracy(vision, head, held, amp)}
    return vision.vit.state_dict(), summary


def late_vit_fields(model_cfg: ModelConfig) -> dict[str, Any]:
    """The ViT's fields added after pretraining entries were keyed (``vit_pos_init``), for an
    entry's key: left out at the value every earlier entry was made with, so those keep their
    names (restr.config.LATE_FIELDS)."""
    return {k: getattr(model_cfg, k) for k, former in LATE_FIELDS["model"].items()
            if k.startswith("vit_") and getattr(model_cfg, k) != former}


def pretrained_folder(folder: str | Path | None = None) -> Path:
    """Where pretrained ViTs are cached: ``folder``, else ``$RESTR_PRETRAINED``, else the
    repository's ``data/pretrained``. Not the working folder's: the book runs its notebooks
    from ``notebooks/``, and a training started there must find the start that ``zoo train``
    made from the repository's root, not pretrain it again beside the notebooks."""
    return Path(folder or os.environ.get("RESTR_PRETRAINED") or REPO / "data" / "pretrained")


def pretrained_path(model_cfg: ModelConfig, p: PretrainConfig, fingerprint: str, folder: str | Path) -> Path:
    """Where the weights of this (ViT config, pretraining config, data) live: a name that
    changes with any of them."""
    vit = {k: getattr(model_cfg, k) for k in ("image_size", "patch_size", "vit_dim", "vit_depth", "vit_heads",
                                               "vit_mlp_ratio", "drop_path")} | late_vit_fields(model_cfg)
    fields = asdict(p)
    fields["workers"] = fields.pop("num_workers")  # the key keeps the name its entries were written under
    key = json.dumps({"vit": vit, "pretrain": fields, "data": fingerprint}, sort_keys=True, default=list)
    return Path(folder) / f"vit-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def ensure_pretrained(model_cfg: ModelConfig, root: str, dataset: str, split_by: str,
                      p: PretrainConfig | None = None, folder: str | Path | None = None) -> Path:
    """The pretrained ViT for this config and data: read from ``folder`` when it is there,
    pretrained now (a few minutes on a CPU) when it is not."""
    from safetensors.torch import save


    p = (p or PretrainConfig()).validate()
    data = ReferData(root, dataset, split_by)
    path = pretrained_path(model_cfg, p, instances_key(data.instances_path), pretrained_folder(folder))
    if _cached(path):
        return path
    train_ids = sorted({int(r["image_id"]) for r in data.refs if r.get("split") == "train"})
    if len(train_ids) <= p.val_images + p.batch_size:
        raise ConfigError(f"pretraining needs more than {p.val_images + p.batch_size} training images; "
                          f"{root}/{dataset} has {len(train_ids)}")
    state, summary = pretrain_vit(model_cfg, data, train_ids, p)
    _write_cache(path, save({k: v.contiguous() for k, v in state.items()}), {
        "data": {"root": str(root), "dataset": dataset, "split_by": split_by,
                 "instances_sha256": instances_key(data.instances_path)},
        "pretrain": asdict(p), "vit": {"image_size": list(model_cfg.image_hw), "patch_size": model_cfg.patch_size,
                                       "dim": model_cfg.vit_dim, "depth": model_cfg.vit_depth},
        **summary})
    return path


# ========================================================================================
# Image-level classification (model.vit_pretrain = "classify"): a start like the paper's
# ImageNet one, on images generated apart from the data set and never used again.
#
# The pictures: the data set's own generator (restr.data.synth) draws them from image
# streams (generator seed, 2^30 + i), which no split uses (a data set of N images uses
# (seed, 0 ... N - 1)), so no picture and no scene is one of the data set's (tested by
# pixel hash and by scene record). They are rendered into a temporary folder, read into
# memory, and gone when pretraining ends; nothing of the data set but its seed (scenes.json)
# and its fingerprint (the cache key) is read: no image, expression or mask of any split.
# The labels (multi-label, like ImageNet-21k's tags): which of the 7 shapes and which of
# the 7 colours the picture holds. A second head (ClassifyConfig.largest_head, off) can
# add the shape of the largest object, the one label that needs the objects' extents
# compared; measured at the tiny preset (3,000 pictures, 230 steps, 1,000 held out) it
# reached 26 % and cost the presence labels 7.4 mAP points (70.6 % against 78.1 %: colours
# 86.8 against 99.8, shapes 54.5 against 56.3), so the default leaves it out. The heads
# read the mean of the patch tokens.
# The cache: one folder per entry (vit.safetensors and vit.json, the record with the
# weights' sha256), written whole under a temporary name and renamed into place.

CLASSIFY_FIRST_INDEX = 2**30  # the generator's image streams (seed, index) from here on: no split's
JPEG_QUALITY = 92  # the generator's default: pretraining images are compressed like the data set's
WEIGHTS_FILE, INFO_FILE = "vit.safetensors", "vit.json"  # a classification entry is a folder holding both
CLASSIFY_TASKS = ("objects", "scenes")
CROP_FILL = (0.35, 0.70)  # the object's diameter as a share of a training crop's side (drawn uniformly)
CROP_SHIFT = 0.15  # the crop's centre moves by up to this share of its side from the object's
HELD_OUT_FILL = 0.5  # held-out crops: centred, the object's diameter half the side


@dataclass(frozen=True)
class ClassifyConfig:
    """Image-level classification pretraining: ``images`` pictures drawn by the data set's
    own generator from image streams no split uses (plus ``val_images`` held out), each
    labelled with the shapes and colours it holds (multi-label) and, with ``largest_head``,
    the shape of its largest object (visible pixels; off: see the note above)."""

    # 8,000 pictures x 15 epochs / 64 = 1,875 steps, about the dense start's 1,840 (40
    # epochs of the quick data set's 3,000 training images): the same compute, 2.7 times the images
    images: int = 8000
    val_images: int = 1000
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    amp: str = "bf16"
    seed: int = 0
    largest_head: bool = False
    # "objects": each picture gives one object a step, cropped around it at a random scale
    # (object-centric, one label, as ImageNet's photos are); "scenes": the whole picture,
    # multi-label (which shapes and colours it holds). Measured at the default budget on
    # version 2 data: scenes taught colours (held-out mAP 100 %) but not shapes (51.8 %,
    # chance is 50 %), so the default is objects.
    task: str = "objects"

    def validate(self) -> "ClassifyConfig":
        for name in ("images", "val_images", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"classification pretraining {name} = {v!r}: must be a whole number >= 1")
        if self.images < self.batch_size:
            raise ConfigError(f"classification pretraining: images = {self.images} < batch_size = {self.batch_size}")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.weight_decay >= 0):
            raise ConfigError(f"classification pretraining lr/warmup/weight_decay out of range: {self.lr}, "
                              f"{self.warmup}, {self.weight_decay}")
        if self.task not in CLASSIFY_TASKS:
            raise ConfigError(f"classification pretraining task = {self.task!r}: choose one of "
                              f"{', '.join(CLASSIFY_TASKS)}")
        if self.task == "objects" and self.largest_head:
            raise ConfigError("classification pretraining: largest_head applies to task = 'scenes' only")
        return self


def generator_seed(root: str | os.PathLike, dataset: str) -> int:
    """The seed the embedded data set at ``root/dataset`` was generated with (its ``scenes.json``),
    after checking that this code's generator draws the version that wrote it."""
    return generator_stream(root, dataset)[0]


def generator_stream(root: str | os.PathLike, dataset: str) -> tuple[int, int]:
    """The seed and the generator version of the embedded data set at ``root/dataset`` (its
    ``scenes.json``): the pretraining pictures are drawn by the same version's rules, from
    image streams the data set never uses."""

    path = Path(root) / dataset / "scenes.json"
    if not path.is_file():
        raise ConfigError(f"model.vit_pretrain = 'classify' draws its images with the embedded data set's "
                          f"generator, and {Path(root) / dataset} is not a generated data set (no {path.name}); "
                          f"use model.vit_pretrain=dense or model.vit_weights=<file>")
    try:
        scenes = json.loads(path.read_text())
        seed = scenes["seed"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a synthref scene record ({type(exc).__name__}: {exc})") from None
    # a generator version draws scenes by its own rules (scenes.json's "version"; 1 when absent)
    version = scenes.get("version", 1)
    if version not in synth.VERSIONS:
        raise DataError(f"{path}: the data set was written by generator version {version!r}, this code draws "
                        f"versions {', '.join(map(str, synth.VERSIONS))}; generate the data set again "
                        "(python -m restr data synth)")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"{path}: seed {seed!r} is not a whole number")
    return seed, int(version)


def render_pretraining_images(seed: int, count: int, first_index: int = CLASSIFY_FIRST_INDEX,
                              kinds: list[str] | None = None, per_object: int = 1,
                              workers: int | None = None, version: int = 1) -> tuple[list[np.ndarray], list[dict]]:
    """``count`` pictures drawn by the data set generator's renderer from the image streams
    ``(seed, first_index + i)`` (the data set's images use ``(seed, 0 ... N - 1)``); return
    their pixels (H, W, 3) uint8, decoded from the JPEG the renderer writes, and its records
    (shapes, colours, areas). The JPEGs live in a temporary folder removed before returning:
    the pictures are never written anywhere else.

    ``kinds``: each picture's scene kind (default: the generator's kinds in turn, half of
    each); ``per_object``: expressions drawn per shape (they are not used, but drawing
    them consumes the stream; the data set's default is 3). With ``first_index=0`` and the
    data set's kinds and ``per_object``, the pictures are the data set's own (the tests'
    control). The only function that calls the generator: a new generator version with the
    same :func:`restr.data.synth.render` and ``ImageJob`` serves here unchanged."""

    from PIL import Image


    turns = list(SHAPES_PER_SCENE)  # the generator's scene kinds
    kinds = kinds if kinds is not None else [turns[i % len(turns)] for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="restr-pretrain-") as folder:
        jobs = [ImageJob(seed, first_index + i, i + 1, kinds[i], folder, per_object, JPEG_QUALITY, 1.0, version)
                for i in range(count)]
        records = render(jobs, workers, progress=False)
        images = []
        for rec in records:
            with Image.open(Path(folder) / rec["file_name"]) as im:
                images.append(np.asarray(im.convert("RGB")))
    return images, records


def image_labels(record: dict) -> tuple[np.ndarray, int]:
    """A rendered image's targets: presence (len(SHAPES) + len(COLOURS),) float32 (1 for every
    shape, then every colour, the image holds) and the index of its largest object's shape
    (most visible pixels)."""

    colours = list(COLOURS)
    presence = np.zeros(len(SHAPES) + len(colours), np.float32)
    for obj in record["objects"]:
        presence[SHAPES.index(obj["shape"])] = 1.0
        presence[len(SHAPES) + colours.index(obj["colour"])] = 1.0
    largest = max(record["objects"], key=lambda o: o["area"])
    return presence, SHAPES.index(largest["shape"])


class ClassifyImages(Dataset):
    """The rendered pictures, letterboxed once to the model's input (uint8 (3, H, W)), with
    their presence targets and largest-object shape; ``augment``: a random horizontal flip
    (which changes no label)."""

    def __init__(self, images: list[np.ndarray], records: list[dict], image_size: tuple[int, int], augment: bool):
        self.augment = augment
        boxed = [letterbox(im, image_size)[0].transpose(2, 0, 1) for im in images]
        self.images = torch.from_numpy(np.ascontiguousarray(np.stack(boxed)))  # (N, 3, H, W) uint8
        labels = [image_labels(r) for r in records]
        self.presence = torch.from_numpy(np.stack([p for p, _ in labels]))  # (N, S + C)
        self.largest = torch.tensor([k for _, k in labels], dtype=torch.long)  # (N,)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.images[i]
        if self.augment and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return {"image": image, "presence": self.presence[i], "largest": self.largest[i]}


class ImageHead(nn.Module):
    """Mean of the patch tokens (B, N, D) -> (B, D), then presence logits (B, S + C) and, with
    ``shapes``, the largest object's shape logits (B, S). Mean pooling rather than the class
    token: the model drops the class token, and the mean sends the labels' gradient to
    every patch token, the features the fusion encoder reads."""

    def __init__(self, dim: int, labels: int, shapes: int | None):
        super().__init__()
        self.presence = nn.Linear(dim, labels)
        self.largest = nn.Linear(dim, shapes) if shapes else None

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pooled = tokens.mean(dim=1)  # (B, D)
        return self.presence(pooled), (self.largest(pooled) if self.largest is not None else None)


def classify_loss(presence_logits, largest_logits, batch) -> torch.Tensor:
    """Binary cross-entropy over the presence labels, plus the largest object's cross-entropy."""
    loss = F.binary_cross_entropy_with_logits(presence_logits.float(), batch["presence"])
    if largest_logits is not None:
        loss = loss + F.cross_entropy(largest_logits.float(), batch["largest"])
    return loss


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of one label: the mean, over its positives, of the precision at each one's rank
    (scores sorted high to low, ties in a stable order); NaN with no positive."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


@torch.no_grad()
def classification_metrics(vision: nn.Module, head: ImageHead, dataset: ClassifyImages,
                           amp: torch.dtype | None) -> dict[str, float]:
    """On ``dataset``: mAP over the presence labels (and over shapes and colours apart), the
    per-label accuracy at probability 0.5, the share of images with every label right, and
    the largest object's shape accuracy (with that head)."""

    vision.eval()
    scores, largest = [], []
    for batch in DataLoader(dataset, batch_size=128):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            presence, big = head(vision(normalize_batch(batch["image"])))
        scores.append(presence.float())
        largest.append(big.float().argmax(1) if big is not None else None)
    vision.train()
    s, target = torch.cat(scores).numpy(), dataset.presence.numpy()
    ap = np.array([average_precision(s[:, k], target[:, k]) for k in range(target.shape[1])])
    right = (s > 0) == (target > 0.5)
    out = {"mAP": float(np.nanmean(ap)), "shape_mAP": float(np.nanmean(ap[:len(SHAPES)])),
           "colour_mAP": float(np.nanmean(ap[len(SHAPES):])), "label_accuracy": float(right.mean()),
           "exact_match": float(right.all(1).mean())}
    if head.largest is not None:
        out["largest_accuracy"] = float((torch.cat(largest) == dataset.largest).float().mean())
    return out


class ObjectCrops(Dataset):
    """Object-centric crops of the rendered pictures (task ``objects``): item ``i`` is one
    object of picture ``i``, cropped around it and letterboxed to the model's input (uint8
    (3, H, W)), labelled with its shape and colour. With ``augment`` (training), the object,
    the crop's scale (its diameter fills :data:`CROP_FILL` of the side), its offset and a
    horizontal flip are drawn anew each time (torch's generator): each epoch sees a new
    crop of each picture. Held out: object ``i mod n``, centred, at :data:`HELD_OUT_FILL`."""

    def __init__(self, images: list[np.ndarray], records: list[dict], image_size: tuple[int, int], augment: bool):
        self.images, self.image_size, self.augment = images, image_size, augment
        colours = list(COLOURS)
        self.objects = [[(o["cx"], o["cy"], o["r"], SHAPES.index(o["shape"]), colours.index(o["colour"]))
                         for o in rec["objects"]] for rec in records]

    def __len__(self) -> int:
        return len(self.images)

    def _draw(self, i: int) -> tuple[tuple, float, float, float, bool]:
        objects = self.objects[i]
        if not self.augment:
            obj = objects[i % len(objects)]
            return obj, HELD_OUT_FILL, 0.0, 0.0, False
        u = torch.rand(5).tolist()
        obj = objects[min(int(u[0] * len(objects)), len(objects) - 1)]
        fill = CROP_FILL[0] + u[1] * (CROP_FILL[1] - CROP_FILL[0])
        return obj, fill, (2 * u[2] - 1) * CROP_SHIFT, (2 * u[3] - 1) * CROP_SHIFT, u[4] < 0.5

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        (cx, cy, r, shape, colour), fill, dx, dy, flip = self._draw(i)
        image = self.images[i]
        side = 2 * r / fill
        x0, y0 = cx - side / 2 + dx * side, cy - side / 2 + dy * side
        h, w = image.shape[:2]
        left, top = max(0, int(round(x0))), max(0, int(round(y0)))
        right, bottom = min(w, int(round(x0 + side))), min(h, int(round(y0 + side)))
        crop = letterbox(image[top:bottom, left:right], self.image_size)[0].transpose(2, 0, 1)  # (3, H, W)
        crop = torch.from_numpy(np.ascontiguousarray(crop[:, :, ::-1] if flip else crop))
        return {"image": crop, "shape": torch.tensor(shape), "colour": torch.tensor(colour)}


class CropHead(nn.Module):
    """Mean of the patch tokens (B, N, D) -> the object's shape logits (B, S) and colour
    logits (B, C)."""

    def __init__(self, dim: int, shapes: int, colours: int):
        super().__init__()
        self.shape, self.colour = nn.Linear(dim, shapes), nn.Linear(dim, colours)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = tokens.mean(dim=1)  # (B, D)
        return self.shape(pooled), self.colour(pooled)


def crop_loss(shape_logits, colour_logits, batch) -> torch.Tensor:
    """Cross-entropy of the object's shape plus that of its colour."""
    return F.cross_entropy(shape_logits.float(), batch["shape"]) + F.cross_entropy(colour_logits.float(),
                                                                                   batch["colour"])


@torch.no_grad()
def crop_metrics(vision: nn.Module, head: CropHead, dataset: ObjectCrops, amp: torch.dtype | None
                 ) -> dict[str, float]:
    """On held-out crops: the shape's and the colour's accuracy, and both right."""

    vision.eval()
    right = {"shape": [], "colour": []}
    for batch in DataLoader(dataset, batch_size=128):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            shape, colour = head(vision(normalize_batch(batch["image"])))
        right["shape"].append(shape.float().argmax(1) == batch["shape"])
        right["colour"].append(colour.float().argmax(1) == batch["colour"])
    vision.train()
    shape, colour = torch.cat(right["shape"]), torch.cat(right["colour"])
    return {"shape_accuracy": float(shape.float().mean()), "colour_accuracy": float(colour.float().mean()),
            "both_right": float((shape & colour).float().mean())}


def _task_parts(c: ClassifyConfig, vision_dim: int, images: list, records: list, hw: tuple[int, int]):
    """The task's training set, held-out set, head, loss and metrics."""

    if c.task == "objects":
        train_set = ObjectCrops(images[:c.images], records[:c.images], hw, augment=True)
        held = ObjectCrops(images[c.images:], records[c.images:], hw, augment=False)
        return train_set, held, CropHead(vision_dim, len(SHAPES), len(COLOURS)), crop_loss, crop_metrics
    train_set = ClassifyImages(images[:c.images], records[:c.images], hw, augment=True)
    held = ClassifyImages(images[c.images:], records[c.images:], hw, augment=False)
    head = ImageHead(vision_dim, train_set.presence.shape[1], len(SHAPES) if c.largest_head else None)
    return train_set, held, head, classify_loss, classification_metrics


def pretrain_classify(model_cfg: ModelConfig, seed: int, c: ClassifyConfig, progress: bool = True,
                      version: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Render the pictures of generator seed ``seed`` (:func:`render_pretraining_images`),
    train the ViT of ``model_cfg`` (random start) to classify them; return its state dict
    and a summary (seconds rendering and training, losses, held-out metrics)."""

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(0))
    t0 = time.perf_counter()
    images, records = render_pretraining_images(seed, c.images + c.val_images, version=version)
    render_s = time.perf_counter() - t0
    torch.manual_seed(c.seed)
    vision = VisionEncoder(ModelConfig(**{**asdict(model_cfg), "vit_weights": None}))
    train_set, held, head, loss_fn, metrics = _task_parts(c, vision.dim, images, records, model_cfg.image_hw)
    amp = resolve_amp(c.amp, torch.device("cpu"))
    losses, steps, train_s = _classify_loop(vision, head, train_set, c, amp, progress, loss_fn)
    grid = tuple(vision.vit.patch_embed.grid_size)
    summary = {"task": "classify", "classify_task": c.task, "generator_seed": seed, "generator_version": version,
               "position_init": model_cfg.vit_pos_init,
               "position_structure": position_structure(vision.vit.pos_embed, grid),
               "first_index": CLASSIFY_FIRST_INDEX,
               "images": c.images, "held_out_images": c.val_images, "steps": steps,
               "render_seconds": render_s, "train_seconds": train_s, "seconds": time.perf_counter() - t0,
               "final_loss": float(np.mean(losses[-20:])),
               "epoch_losses": [float(np.mean(e)) for e in np.array_split(losses, c.epochs)],
               **metrics(vision, head, held, amp)}
    if c.task == "scenes":
        summary["label_frequency"] = [float(v) for v in train_set.presence.mean(0)]
    return vision.vit.state_dict(), summary


def _classify_loop(vision: nn.Module, head: nn.Module, train_set: Dataset, c: ClassifyConfig,
                   amp: torch.dtype | None, progress: bool, loss_fn=None) -> tuple[list[float], int, float]:
    """AdamW with linear warm-up and decay over ``c.epochs``; return the losses, the steps
    and the seconds."""
    from tqdm import tqdm


    loader = DataLoader(train_set, batch_size=c.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(c.seed))
    opt = torch.optim.AdamW(list(vision.parameters()) + list(head.parameters()), lr=c.lr,
                            weight_decay=c.weight_decay)
    total = c.epochs * len(loader)
    bar = tqdm(total=total, desc="pretrain ViT (classify)", unit="it", file=sys.stderr, disable=not progress)
    step, t0, losses = 0, time.perf_counter(), []
    for _ in range(c.epochs):
        for batch in loader:
            for g in opt.param_groups:
                g["lr"] = c.lr * lr_factor(step, total, round(c.warmup * total), power=1.0)
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                loss = (loss_fn or classify_loss)(*head(vision(normalize_batch(batch["image"]))), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            stop_if_asked("the ViT's classification pretraining")
    bar.close()
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("classification pretraining diverged (non-finite loss); lower its lr")
    return losses, step, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------
# the classification cache: one folder per entry, renamed into place whole

def classify_entry(model_cfg: ModelConfig, c: ClassifyConfig, fingerprint: str, folder: str | Path) -> Path:
    """The folder of this (ViT config, classification config, data set) entry. The data
    set's fingerprint stands for its generator and seed, which decide the pictures."""
    vit = {k: getattr(model_cfg, k) for k in ("image_size", "patch_size", "vit_dim", "vit_depth", "vit_heads",
                                               "vit_mlp_ratio", "drop_path", "norm_eps")} | late_vit_fields(model_cfg)
    key = json.dumps({"task": "classify", "vit": vit, "classify": asdict(c), "data": fingerprint},
                     sort_keys=True, default=list)
    return Path(folder) / f"vit-classify-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def entry_problem(entry: Path) -> str | None:
    """Why the entry folder ``entry`` cannot be used (a file missing or unreadable, weights
    that are not the ones its record names), or None when it is complete."""
    weights, info = entry / WEIGHTS_FILE, entry / INFO_FILE
    for f in (weights, info):
        if not f.is_file():
            return f"{f.name} is missing"
    try:
        recorded = json.loads(info.read_text())["weights_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"{info.name} is unreadable ({type(exc).__name__})"
    if file_sha256(weights) != recorded:
        return f"{weights.name} does not match the sha256 in {info.name}"
    return None


def commit_entry(entry: Path, weights: bytes, info: dict[str, Any]) -> None:
    """Write the weights and their record into a temporary folder beside ``entry``, flush
    both to disk, and rename the folder to ``entry`` in one step: a process killed at any
    moment leaves no entry or a whole one (and at most a temporary folder, removed by
    :func:`remove_abandoned`). If another process committed the entry first, keep its."""

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        info = {**info, "weights_sha256": hashlib.sha256(weights).hexdigest()}
        for name, data in ((WEIGHTS_FILE, weights), (INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())):
            with open(tmp / name, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        try:
            os.rename(tmp, entry)  # atomic; refused when entry already exists (not empty)
        except OSError:
            if not entry.is_dir() or entry_problem(entry) is not None:
                raise
        _fsync_dir(entry.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_abandoned(entry: Path) -> list[str]:
    """Remove the temporary folders of ``entry`` left by processes that no longer run (killed
    while writing it); return a notice for each."""

    notices = []
    for tmp in entry.parent.glob(f".{entry.name}.*.tmp"):
        pid = tmp.name[len(entry.name) + 2:].split(".")[0]
        if pid.isdigit() and _running(int(pid)):
            continue  # another process is writing this entry now
        shutil.rmtree(tmp, ignore_errors=True)
        notices.append(f"removed {tmp}: an unfinished pretraining entry (its process was stopped while writing)")
    return notices


def ensure_classify_pretrained(model_cfg: ModelConfig, root: str, dataset: str, split_by: str,
                               c: ClassifyConfig | None = None, folder: str | Path | None = None,
                               progress: bool = True) -> Path:
    """The ViT pretrained by image classification for this config and data set: read from
    ``folder`` when a complete entry is there, made now when not (an incomplete entry is
    reported and made again; a process making it now is waited for). Returns the weights
    file."""

    c = (c or ClassifyConfig()).validate()
    instances = Path(root) / dataset / "instances.json"
    if not instances.is_file():
        raise DataError(f"no data set at {Path(root) / dataset}: {instances} is missing")
    # the data set's identity only: no image, expression or mask of it is read
    fingerprint = instances_key(instances)
    entry = classify_entry(model_cfg, c, fingerprint, pretrained_folder(folder))
    with entry_lock(entry):  # a campaign's two jobs need the same entry: one pretrains, the other waits for it
        return _classify_entry_made(entry, model_cfg, root, dataset, split_by, c, fingerprint, progress)


def entry_lock(entry: Path):
    """An exclusive lock on a cache entry (``<entry>.lock`` beside it) while it is checked
    and made, so that two processes asking for the same entry pretrain it once; the second
    says it waits, and stops waiting if asked to stop (:func:`stop_if_asked`)."""
    told = []

    def waiting() -> None:
        if not told:
            print(f"pretrain: another process is making {entry.name}; waiting for it", file=sys.stderr, flush=True)
            told.append(True)
        stop_if_asked("the wait for another process's ViT pretraining")

    return exclusive_lock(entry.with_name(entry.name + ".lock"), waiting)


def _classify_entry_made(entry: Path, model_cfg: ModelConfig, root: str, dataset: str, split_by: str,
                         c: ClassifyConfig, fingerprint: str, progress: bool) -> Path:
    """:func:`ensure_classify_pretrained`'s work, under the entry's lock."""
    from safetensors.torch import save

    for notice in remove_abandoned(entry):
        print(f"notice: {notice}", file=sys.stderr)
    if entry.exists():
        problem = entry_problem(entry)
        if problem is None:
            return entry / WEIGHTS_FILE
        print(f"notice: pretraining entry {entry} is incomplete ({problem}): removed, pretraining again",
              file=sys.stderr)
        shutil.rmtree(entry)
    seed, version = generator_stream(root, dataset)
    state, summary = pretrain_classify(model_cfg, seed, c, progress, version)
    info = {"data": {"root": str(root), "dataset": dataset, "split_by": split_by, "instances_sha256": fingerprint},
            "classify": asdict(c), "vit": {"image_size": list(model_cfg.image_hw), "patch_size": model_cfg.patch_size,
                                           "dim": model_cfg.vit_dim, "depth": model_cfg.vit_depth}, **summary}
    commit_entry(entry, save({k: v.contiguous() for k, v in state.items()}), info)
    return entry / WEIGHTS_FILE


def ensure_vit_start(model_cfg: ModelConfig, root: str, dataset: str, split_by: str,
                     folder: str | Path | None = None, progress: bool = True) -> Path:
    """The pretrained ViT file ``model.vit_weights = "pretrain"`` stands for, by
    ``model.vit_pretrain``: dense (:func:`ensure_pretrained`) or classify
    (:func:`ensure_classify_pretrained`)."""
    if model_cfg.vit_pretrain == "classify":
        return ensure_classify_pretrained(model_cfg, root, dataset, split_by, folder=folder, progress=progress)
    return ensure_pretrained(model_cfg, root, dataset, split_by, folder=folder)


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (its files' names) to disk, where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cached(path: Path) -> bool:
    """Whether the cache holds a complete entry at ``path``: its record (``.json``) and its
    weights. Half an entry (a pretraining killed between the two writes, or a file deleted
    by hand) is reported on stderr and does not count: the pretraining is done again."""
    record, weights = path.with_suffix(".json"), path
    if record.is_file() and weights.is_file():
        return True
    if record.is_file() or weights.is_file():
        have, lack = (record, weights) if record.is_file() else (weights, record)
        print(f"notice: the pretrained ViT cache holds {have} without {lack} (a pretraining was cut short, or a "
              f"file was removed): pretraining it again", file=sys.stderr, flush=True)
    return False


def _write_cache(path: Path, weights: bytes, record: dict) -> None:
    """Write a cache entry so that a kill at any moment leaves nothing or all of it: the
    record first, the weights last (each file atomically); :func:`_cached` counts an entry
    only when both are there, and the next pretraining overwrites a lone record."""

    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    atomic_write_bytes(path, weights)
