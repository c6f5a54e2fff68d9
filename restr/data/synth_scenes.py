"""synthref's pictures: shapes' masks, drawing, and rendering one image.

:func:`render_image` is the render stage's unit of work (one process per core): it
samples a scene until every shape is visible enough and has its expressions, draws it,
writes the JPEG, and returns the image's record (shapes, segmentations, expressions).
Which shapes a scene holds and what their expressions say are the data set version's
rules (:func:`scene_rules`: :mod:`.synth_v1` or :mod:`.synth_v2`); the canvas, the
placement limits, the masks and the pixels are the same in both.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils.files import atomic_write_bytes
from . import synth_v1, synth_v2
from .synth_language import COLOURS, Shape, raw_form

__all__ = ["ImageJob", "render_image", "scene_rules", "VERSIONS"]

VERSIONS = (1, 2)                         # the data set versions (see synth.py)
RULES = {1: synth_v1, 2: synth_v2}        # each version's scene rules

CANVAS_SIDES = (96, 128)                  # width and height drawn from this range (at scale 1)
SCENE_ATTEMPTS = 200
MIN_VISIBLE_FRACTION = 0.6                # an occluded shape keeps at least 60% of its pixels ...
MIN_VISIBLE_PIXELS = 20                   # ... and at least 20 of them
SHAPE_COLOUR_JITTER = 6.0                 # std of a shape's colour around its palette entry
PIXEL_NOISE = 4.0                         # std of the per-pixel noise on a shape


@dataclass(frozen=True)
class ImageJob:
    """Everything :func:`render_image` needs; image ``index`` is drawn from ``(seed, index)``."""

    seed: int
    index: int
    image_id: int
    kind: str                 # "sparse" or "crowded"
    image_dir: str
    per_object: int           # expressions per shape
    quality: int              # JPEG quality
    scale: float
    version: int = 1          # the data set version whose rules draw the scene (VERSIONS)


# ----------------------------------------------------------------------------------------
# shapes and their masks

def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) <= r * r


def _flat(points) -> list[float]:
    return [round(float(v), 2) for p in points for v in p]


def _polygons(o: Shape) -> list[list[float]]:
    cx, cy, r = o.cx, o.cy, o.r
    if o.shape == "square":
        a = 0.8 * r
        return [_flat([(cx - a, cy - a), (cx + a, cy - a), (cx + a, cy + a), (cx - a, cy + a)])]
    if o.shape == "diamond":
        return [_flat([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)])]
    if o.shape == "triangle":
        return [_flat([(cx, cy - r), (cx + 0.92 * r, cy + 0.6 * r), (cx - 0.92 * r, cy + 0.6 * r)])]
    if o.shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.5 * r
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))
        return [_flat(pts)]
    if o.shape == "cross":  # two rectangles that overlap in the middle
        t = 0.36 * r
        return [_flat([(cx - r, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx - r, cy + t)]),
                _flat([(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy + r), (cx - t, cy + r)])]
    raise ValueError(o.shape)


def _full_mask(o: Shape, h: int, w: int) -> tuple[np.ndarray, list[list[float]] | None]:
    """The shape's pixels before occlusion, and its polygons (None for circles and rings)."""
    if o.shape == "circle":
        return _disk(h, w, o.cx, o.cy, o.r), None
    if o.shape == "ring":
        return _disk(h, w, o.cx, o.cy, o.r) & ~_disk(h, w, o.cx, o.cy, 0.5 * o.r), None
    from pycocotools import mask as mask_utils

    polys = _polygons(o)
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)
    return m, polys


def _visible(full: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The pixels of each shape left visible by the shapes drawn after it (on top)."""
    visible = []
    above = np.zeros(full[0].shape, bool)
    for m in reversed(full):
        visible.append(m & ~above)
        above |= m
    return visible[::-1]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A grey-ish canvas with a smooth colour blotch, sometimes faint stripes, and noise."""
    base = rng.uniform(45, 115) + rng.uniform(-14, 14, size=3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    coarse = rng.normal(0.0, 1.0, size=(5, 5, 3)).astype(np.float32)
    for c in range(3):
        blob = Image.fromarray(coarse[:, :, c], mode="F").resize((w, h), Image.BICUBIC)
        img[:, :, c] += 14.0 * np.asarray(blob)
    if rng.random() < 0.5:  # faint stripes
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
        yy, xx = np.mgrid[0:h, 0:w]
        img += (7.0 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period))[:, :, None]
    img += rng.normal(0.0, 5.0, size=img.shape).astype(np.float32)
    return img


# ----------------------------------------------------------------------------------------
# one image

@dataclass
class _Scene:
    w: int
    h: int
    shapes: list[Shape]
    full: tuple[np.ndarray, ...]            # each shape's pixels before occlusion
    visible: list[np.ndarray]               # ... and after
    polys: tuple[list[list[float]] | None, ...]
    expressions: list[list[dict]]           # per shape: [{"text", "program"} (version 2: and "redundant")]


def scene_rules(version: int):
    """The module holding version ``version``'s rules: ``place_shapes(rng, kind, w, h)`` (the
    shapes of a scene, or None to draw again) and ``scene_expressions(shapes, w, h, rng,
    per_object)`` (every shape's expressions)."""
    if version not in RULES:
        raise ValueError(f"synthref version {version!r}: choose one of {VERSIONS}")
    return RULES[version]


def _sample_scene(job: ImageJob, rng: np.random.Generator) -> _Scene:
    """Draw scenes until every shape is visible enough and has at least two expressions."""
    rules = scene_rules(job.version)
    for _attempt in range(SCENE_ATTEMPTS):
        lo, hi = CANVAS_SIDES
        w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        if job.scale != 1.0:  # a larger canvas, same kind of scene (scale 1 draws nothing extra)
            w, h = int(round(w * job.scale)), int(round(h * job.scale))
        shapes = rules.place_shapes(rng, job.kind, w, h)
        if shapes is None:
            continue
        full, polys = zip(*(_full_mask(s, h, w) for s in shapes))
        visible = _visible(full)
        if any(v.sum() < MIN_VISIBLE_FRACTION * f.sum() or v.sum() < MIN_VISIBLE_PIXELS
               for v, f in zip(visible, full)):
            continue
        exprs = rules.scene_expressions(shapes, w, h, rng, job.per_object)
        if any(len(e) < min(2, job.per_object) for e in exprs):
            continue
        return _Scene(w, h, shapes, full, visible, polys, exprs)
    raise RuntimeError(f"synthref: could not build image {job.index} (seed {job.seed})")  # pragma: no cover


def _draw(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    img = _background(rng, scene.h, scene.w)
    for s, m in zip(scene.shapes, scene.full):
        colour = np.array(COLOURS[s.colour], np.float32) + rng.normal(0, SHAPE_COLOUR_JITTER, size=3)
        img[m] = colour + rng.normal(0, PIXEL_NOISE, size=(int(m.sum()), 3))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _segmentation(visible: np.ndarray, polys: list[list[float]] | None, occluded: bool) -> list:
    """As RefCOCO and ReferIt store masks: the polygons of an unoccluded polygon shape (a list of
    flat coordinate lists); else a list of one compressed RLE dict of the visible pixels."""
    if not occluded and polys is not None:
        return polys
    from pycocotools import mask as mask_utils

    h, w = visible.shape
    rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
    return [{"size": [h, w], "counts": rle["counts"].decode("ascii")}]


def _object_record(k: int, scene: _Scene, rng: np.random.Generator) -> dict:
    s, f, v = scene.shapes[k], scene.full[k], scene.visible[k]
    occluded = bool((f & ~v).any())
    ys, xs = np.nonzero(v)
    return {
        "shape": s.shape, "colour": s.colour, "size": s.size,
        "cx": round(s.cx, 3), "cy": round(s.cy, 3), "r": round(s.r, 3),
        "occluded": occluded,
        "segmentation": _segmentation(v, scene.polys[k], occluded),
        "area": int(v.sum()),
        "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
        # version 2's expressions also say which of their parts are redundant ("redundant")
        "expressions": [{"text": e["text"], "raw": raw_form(e["text"], rng), "program": e["program"],
                         **({"redundant": e["redundant"]} if "redundant" in e else {})}
                        for e in scene.expressions[k]],
    }


def render_image(job: ImageJob) -> dict:
    """Sample, draw and write image ``job.index``; return its record.

    The record: ``index``, ``image_id``, ``kind``, ``width``, ``height``, ``file_name``
    and ``objects`` (per shape: attributes, ``segmentation``, ``area``, ``bbox``,
    ``expressions`` with their ``text``, ``raw`` form and ``program``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.index]))
    scene = _sample_scene(job, rng)
    file_name = f"synthref_{job.image_id:012d}.jpg"
    # the pixels go to disk here, in the worker: only the records travel back. Not
    # fsync'ed one by one (that would add a third to the run); generate() writes the
    # index files, durably, only after every image is on disk
    atomic_write_bytes(Path(job.image_dir) / file_name, _jpeg(_draw(scene, rng), job.quality), durable=False)
    objects = [_object_record(k, scene, rng) for k in range(len(scene.shapes))]
    return {"index": job.index, "image_id": job.image_id, "kind": job.kind, "width": scene.w, "height": scene.h,
            "file_name": file_name, "objects": objects}
