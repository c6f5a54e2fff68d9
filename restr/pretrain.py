"""Pretrain a small ViT on a data set's own images: the CPU-scale stand-in for the paper's
ImageNet-21k start.

``python -m restr pretrain --preset tiny --data data/synthref --out data/pretrained/tiny-vit.safetensors``

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

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import ConfigError, ModelConfig


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    amp: str = "bf16"
    seed: int = 0
    workers: int = 0  # the items are in memory: loading in the training process is enough
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
        from .data.transforms import augment_group, letterbox, letterbox_mask

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


def data_fingerprint(data) -> str:
    """sha256 (first 12 hex digits) of the instances file the labels come from."""
    h = hashlib.sha256()
    with open(data.instances_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _loaders(data, train_ids: list[int], model_cfg: ModelConfig, p: PretrainConfig) -> tuple[DataLoader, Dataset]:
    hw = model_cfg.image_hw
    train = CategoryMaps(data, train_ids[p.val_images:], hw, augment=True)
    held = CategoryMaps(data, train_ids[:p.val_images], hw, augment=False)
    loader = DataLoader(train, batch_size=p.batch_size, shuffle=True, drop_last=True, num_workers=p.workers,
                        generator=torch.Generator().manual_seed(p.seed), persistent_workers=p.workers > 0)
    return loader, held


@torch.no_grad()
def pixel_accuracy(vision: nn.Module, head: nn.Module, dataset: Dataset, amp: torch.dtype | None) -> dict[str, float]:
    """Pixel accuracy over all pixels and over object pixels only, on ``dataset``."""
    from .data.transforms import normalize_batch

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

    from .data.transforms import normalize_batch
    from .model.vision import VisionEncoder
    from .optim import lr_factor
    from .utils import resolve_amp

    from .utils import cpu_threads

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(p.workers))
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
    bar.close()
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("pretraining diverged (non-finite loss); lower --lr")
    summary = {"steps": step, "seconds": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-20:])),
               "held_out_images": len(held), **pixel_accuracy(vision, head, held, amp)}
    return vision.vit.state_dict(), summary


def pretrained_path(model_cfg: ModelConfig, p: PretrainConfig, fingerprint: str, folder: str | Path) -> Path:
    """Where the weights of this (ViT config, pretraining config, data) live: a name that
    changes with any of them."""
    vit = {k: getattr(model_cfg, k) for k in ("image_size", "patch_size", "vit_dim", "vit_depth", "vit_heads",
                                               "vit_mlp_ratio", "drop_path")}
    key = json.dumps({"vit": vit, "pretrain": asdict(p), "data": fingerprint}, sort_keys=True, default=list)
    return Path(folder) / f"vit-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def ensure_pretrained(model_cfg: ModelConfig, root: str, dataset: str, split_by: str,
                      p: PretrainConfig | None = None, folder: str | Path = "data/pretrained") -> Path:
    """The pretrained ViT for this config and data: read from ``folder`` when it is there,
    pretrained now (a few minutes on a CPU) when it is not."""
    from safetensors.torch import save

    from .data.refer import ReferData

    p = (p or PretrainConfig()).validate()
    data = ReferData(root, dataset, split_by)
    path = pretrained_path(model_cfg, p, data_fingerprint(data), folder)
    if _cached(path):
        return path
    train_ids = sorted({int(r["image_id"]) for r in data.refs if r.get("split") == "train"})
    if len(train_ids) <= p.val_images + p.batch_size:
        raise ConfigError(f"pretraining needs more than {p.val_images + p.batch_size} training images; "
                          f"{root}/{dataset} has {len(train_ids)}")
    state, summary = pretrain_vit(model_cfg, data, train_ids, p)
    _write_cache(path, save({k: v.contiguous() for k, v in state.items()}), {
        "data": {"root": str(root), "dataset": dataset, "split_by": split_by,
                 "instances_sha256": data_fingerprint(data)},
        "pretrain": asdict(p), "vit": {"image_size": list(model_cfg.image_hw), "patch_size": model_cfg.patch_size,
                                       "dim": model_cfg.vit_dim, "depth": model_cfg.vit_depth},
        **summary})
    return path


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
    from .utils import atomic_write_bytes, atomic_write_text

    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    atomic_write_bytes(path, weights)


def main(argv: list[str] | None = None) -> int:
    from .cli import add_model_overrides, config_from_args

    parser = argparse.ArgumentParser(prog="python -m restr pretrain", description=__doc__.split("\n\n")[0])
    add_model_overrides(parser)
    parser.add_argument("--data", default="data/synthref", help="data root (default: data/synthref)")
    parser.add_argument("--dataset", default="synthref")
    parser.add_argument("--split-by", default="unc")
    parser.add_argument("--folder", default="data/pretrained", help="where pretrained ViTs are kept")
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--lr", type=float, default=PretrainConfig.lr)
    args = parser.parse_args(argv)
    from .data.errors import DataError

    try:
        cfg = config_from_args(args)
        p = PretrainConfig(epochs=args.epochs, lr=args.lr)
        path = ensure_pretrained(cfg.model, args.data, args.dataset, args.split_by, p, args.folder)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = json.loads(path.with_suffix(".json").read_text())
    print(f"{path}: {info['steps']} steps in {info['seconds']:.0f} s; held-out pixel accuracy "
          f"{100 * info['pixel_accuracy']:.1f} % (object pixels {100 * info['object_pixel_accuracy']:.1f} %)")
    print(f"use it with --set model.vit_weights={path}")
    return 0
