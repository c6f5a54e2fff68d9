"""synthref: the embedded referring-segmentation data set, written in the refer format.

Every image holds 3-6 coloured shapes on a textured background; every shape is the
target of one ref with several expressions, and every expression refers to exactly one
shape of its image. Expressions are built as small *programs* (attributes, an ordinal
such as "leftmost", relations to a landmark, a region of the picture), checked by
:func:`referents` to pick out exactly the target (with safety margins, so nothing is
borderline), then rendered to words. All words are in GloVe 6B's vocabulary.

Splits are by image: ``train`` and ``val`` mix both scene kinds; ``testA`` holds only
*sparse* scenes (3-4 shapes, no overlap) and ``testB`` only *crowded* ones (5-6 shapes,
partial occlusion), as RefCOCO's testA/testB group images by the kind of target.

Masks are the visible pixels of each shape. In instances.json, unoccluded squares,
triangles, diamonds and stars are polygons, crosses are two overlapping rectangles
(the reader must take their union), circles and rings are RLE (uncompressed or
compressed, alternating), and occluded shapes are compressed RLE.
``scenes.json`` records every shape's attributes and every expression's program.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..utils import atomic_write_bytes
from .errors import DataError
from .vocab import tokenize

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "WORDS",
    "DEFAULT_NUM_IMAGES",
    "generate",
    "referents",
    "render_program",
]

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (35, 170, 55),
    "blue": (35, 75, 230),
    "yellow": (240, 220, 35),
    "purple": (140, 50, 190),
    "orange": (250, 135, 20),
    "white": (245, 245, 245),
}
SIZES = ("small", "big")
SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
NOUNS = ("one", "shape", "object", "thing")
ATTRS = ("size", "colour", "shape")
RELATIONS = ("left", "right", "above", "below")
REL_WORDS = {
    "left": (("left", "of"), ("to", "the", "left", "of"), ("on", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of"), ("on", "the", "right", "of")),
    "above": (("above",), ("over",)),
    "below": (("below",), ("under",), ("beneath",)),
}
# (axis, direction): direction -1 picks the smallest coordinate (left / top), +1 the largest
ORDINALS = (("x", -1), ("x", 1), ("y", -1), ("y", 1))
ORD_PRE2 = {("x", -1): ("left",), ("x", 1): ("right",), ("y", -1): ("top", "upper"), ("y", 1): ("bottom", "lower")}
ORD_SUPER = {("x", -1): ("leftmost",), ("x", 1): ("rightmost",), ("y", -1): ("topmost", "highest"),
             ("y", 1): ("lowest",)}
ORD_POST = {("x", -1): (("on", "the", "far", "left"),), ("x", 1): (("on", "the", "far", "right"),),
            ("y", -1): (("at", "the", "very", "top"),), ("y", 1): (("at", "the", "very", "bottom"),)}
PICTURE = ("picture", "image")

WORDS = frozenset(
    {"the", "of", "to", "on", "at", "in", "and", "that", "is", "which", "near", "far", "very",
     "side", "corner", "part", "left", "right", "top", "bottom", "upper", "lower", "above", "over",
     "below", "under", "beneath", "leftmost", "rightmost", "topmost", "highest", "lowest",
     *PICTURE, *NOUNS, *SHAPES, *COLOURS, *(w for ws in SIZE_WORDS.values() for w in ws)}
)

DEFAULT_NUM_IMAGES = 4000
SPLIT_FRACTIONS = (("train", 0.80), ("val", 0.08), ("testA", 0.06), ("testB", 0.06))
BUCKETS = ((1, 2), (3, 3), (4, 5), (6, 20))  # the UNC buckets of Table 2
BUCKET_WEIGHTS = (0.30, 0.18, 0.24, 0.28)
MAX_WORDS = 20


@dataclass
class Shape:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float

    def attr(self, name: str) -> str:
        return getattr(self, name)


# ----------------------------------------------------------------------------------------
# semantics: which shapes does a program pick out?

def _margin(width: int, height: int) -> float:
    return 0.08 * min(width, height)


def _matches(o: Shape, attrs: dict[str, str]) -> bool:
    for k, v in attrs.items():  # a plain loop: this is the generator's innermost call
        if getattr(o, k) != v:
            return False
    return True


def _relation(o: Shape, landmark: Shape, rel: str, margin: float) -> bool | None:
    """True (clearly), False (clearly not) or None (too close to call).

    Clearly: the centres differ along the axis by at least the margin and at least half
    the two shapes' radii; clearly not: the shape is level with or beyond the landmark.
    """
    margin = max(margin, 0.5 * (o.r + landmark.r))  # centres at least half a shape apart
    d = {"left": landmark.cx - o.cx, "right": o.cx - landmark.cx,
         "above": landmark.cy - o.cy, "below": o.cy - landmark.cy}[rel]
    if d >= margin:
        return True
    if d <= 0:
        return False
    return None


def _region(o: Shape, region: tuple[str | None, str | None], width: int, height: int) -> bool | None:
    values = []
    h, v = region
    if h is not None:
        x = o.cx / width if h == "left" else 1 - o.cx / width
        values.append(True if x <= 0.40 else False if x >= 0.5 else None)
    if v is not None:
        y = o.cy / height if v == "top" else 1 - o.cy / height
        values.append(True if y <= 0.40 else False if y >= 0.5 else None)
    if False in values:
        return False
    if None in values:
        return None
    return True


def _keep(cands: list[int], test) -> list[int] | None:
    """The candidates for which ``test`` is True; None if it is undecided (None) for any."""
    keep = []
    for i in cands:
        v = test(i)
        if v is None:
            return None
        if v:
            keep.append(i)
    return keep


def referents(program: dict, shapes: list[Shape], width: int, height: int) -> list[int] | None:
    """Indices of the shapes ``program`` picks out, or None if any comparison is too close.

    Attributes filter the shapes; each relation keeps the shapes clearly on that side of
    its landmark (which its attributes must identify uniquely); a region keeps the shapes
    clearly in that part of the picture; an ordinal then keeps the extreme shape along
    its axis, which must beat the runner-up by a margin.
    """
    margin = _margin(width, height)
    cands = [i for i, o in enumerate(shapes) if _matches(o, program.get("attrs", {}))]
    for rel, lm_attrs in program.get("relations", []):
        lms = [i for i, o in enumerate(shapes) if _matches(o, lm_attrs)]
        if len(lms) != 1:
            return None
        cands = _keep([i for i in cands if i != lms[0]],
                      lambda i: _relation(shapes[i], shapes[lms[0]], rel, margin))
        if cands is None:
            return None
    region = program.get("region")
    if region:
        cands = _keep(cands, lambda i: _region(shapes[i], tuple(region), width, height))
        if cands is None:
            return None
    ordinal = program.get("ordinal")
    if ordinal:
        axis, direction = ordinal
        if len(cands) < 2:
            return None  # "the leftmost circle" needs something to compare with
        key = sorted(cands, key=lambda i: -direction * (shapes[i].cx if axis == "x" else shapes[i].cy))
        a, b = (shapes[key[0]], shapes[key[1]])
        gap = abs((a.cx - b.cx) if axis == "x" else (a.cy - b.cy))
        if gap < margin:
            return None
        cands = [key[0]]
    return cands


# ----------------------------------------------------------------------------------------
# rendering a program to words

def _np(attrs: dict[str, str], rng: np.random.Generator, bare_ok: bool) -> list[str]:
    words: list[str] = []
    if "size" in attrs:
        words.append(_pick(rng, SIZE_WORDS[attrs["size"]]))
    if "colour" in attrs:
        words.append(attrs["colour"])
    if "shape" in attrs:
        words.append(attrs["shape"])
    elif not (bare_ok and list(attrs) == ["colour"] and rng.random() < 0.5):
        words.append(_pick(rng, NOUNS))
    return words


def _rel_words(rel: str, lm_attrs: dict[str, str], rng: np.random.Generator) -> list[str]:
    options = REL_WORDS[rel]
    return [*options[int(rng.integers(len(options)))], "the", *_np(lm_attrs, rng, bare_ok=False)]


def _region_words(region: tuple[str | None, str | None], rng: np.random.Generator) -> list[str]:
    h, v = region
    pic = _pick(rng, PICTURE)
    if h and v:
        tail = ["of", "the", pic] if rng.random() < 0.5 else []
        return ["in", "the", v, h, "corner", *tail]
    if h:
        forms = [["on", "the", h, "side", "of", "the", pic], ["on", "the", h, "side"], ["in", "the", h, "part", "of", "the", pic]]
    else:
        forms = [["near", "the", v, "of", "the", pic], ["at", "the", v], ["in", "the", v, "part", "of", "the", pic]]
    return forms[int(rng.integers(len(forms)))]


def render_program(program: dict, group_size: int, rng: np.random.Generator) -> list[str]:
    """Words for ``program``. ``group_size``: how many shapes share its attributes."""
    attrs = program.get("attrs", {})
    ordinal = tuple(program["ordinal"]) if program.get("ordinal") else None
    extras = bool(program.get("relations") or program.get("region"))
    det = rng.random() < (0.85 if (ordinal or extras or not attrs) else 0.5)
    pre: list[str] = []
    post: list[str] = []
    if ordinal:
        style = rng.random()
        if group_size == 2 and style < 0.4:
            pre = [_pick(rng, ORD_PRE2[ordinal])]
        elif style < 0.75:
            pre = [_pick(rng, ORD_SUPER[ordinal])]
            det = True
        else:
            post = list(ORD_POST[ordinal][0])
    noun = _np(attrs, rng, bare_ok=not (ordinal or extras or det))
    words = (["the"] if det else []) + pre + noun + post
    pieces = [_rel_words(rel, lm, rng) for rel, lm in program.get("relations", [])]
    if program.get("region"):
        pieces.append(_region_words(tuple(program["region"]), rng))
    for k, piece in enumerate(pieces):
        if k == 0 and len(pieces) > 1 and rng.random() < 0.5:
            words += [_pick(rng, ("that", "which")), "is"]
        elif k > 0:
            words.append("and")
        words += piece
    return words


# ----------------------------------------------------------------------------------------
# scenes

def _subsets(include_empty: bool) -> list[tuple[str, ...]]:
    out = [()] if include_empty else []
    for k in (1, 2, 3):
        out += list(combinations(ATTRS, k))
    return out


_ALL_SUBSETS = _subsets(True)
_NONEMPTY = _subsets(False)


def _attrs_of(o: Shape, names: tuple[str, ...]) -> dict[str, str]:
    return {n: o.attr(n) for n in names}


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) <= r * r


def _polygons(o: Shape) -> list[list[float]]:
    cx, cy, r = o.cx, o.cy, o.r

    def flat(points):
        return [round(float(v), 2) for p in points for v in p]

    if o.shape == "square":
        a = 0.8 * r
        return [flat([(cx - a, cy - a), (cx + a, cy - a), (cx + a, cy + a), (cx - a, cy + a)])]
    if o.shape == "diamond":
        return [flat([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)])]
    if o.shape == "triangle":
        return [flat([(cx, cy - r), (cx + 0.92 * r, cy + 0.6 * r), (cx - 0.92 * r, cy + 0.6 * r)])]
    if o.shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.5 * r
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))
        return [flat(pts)]
    if o.shape == "cross":  # two rectangles that overlap in the middle
        t = 0.36 * r
        return [flat([(cx - r, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx - r, cy + t)]),
                flat([(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy + r), (cx - t, cy + r)])]
    raise ValueError(o.shape)


def _full_mask(o: Shape, h: int, w: int) -> tuple[np.ndarray, list[list[float]] | None]:
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


def _uncompressed_rle(m: np.ndarray) -> list[int]:
    flat = np.asarray(m, dtype=np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return [int(v) for v in runs]


def _place(rng: np.random.Generator, kind: str, w: int, h: int) -> list[Shape] | None:
    n = int(rng.integers(3, 5)) if kind == "sparse" else int(rng.integers(5, 7))
    m = min(w, h)
    shapes: list[Shape] = []
    for _ in range(n):
        size = _pick(rng, SIZES)
        r = m * (rng.uniform(0.12, 0.14) if size == "small" else rng.uniform(0.19, 0.23))
        for _try in range(60):
            cx = rng.uniform(r + 1, w - r - 1)
            cy = rng.uniform(r + 1, h - r - 1)
            ok = True
            for o in shapes:
                d = np.hypot(o.cx - cx, o.cy - cy)
                need = (o.r + r + 2) if kind == "sparse" else 0.62 * (o.r + r)
                if d < need:
                    ok = False
                    break
            if ok:
                break
        else:
            return None
        shapes.append(Shape(_pick(rng, SHAPES), _pick(rng, list(COLOURS)), size, cx, cy, r))
    return shapes


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
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


def _pick(rng: np.random.Generator, seq) -> Any:
    """A uniformly random element of ``seq`` (faster than ``rng.choice`` for short tuples)."""
    seq = tuple(seq)
    return seq[int(rng.integers(len(seq)))]


def _bucket(n: int) -> int | None:
    for i, (lo, hi) in enumerate(BUCKETS):
        if lo <= n <= hi:
            return i
    return None


class _Scene:
    """Per-image tables shared by the expression search of every shape."""

    def __init__(self, shapes: list[Shape], width: int, height: int, rng: np.random.Generator):
        self.shapes, self.w, self.h = shapes, width, height
        self.margin = _margin(width, height)
        n = len(shapes)
        self.unique = {
            (j, names): sum(_matches(o, _attrs_of(shapes[j], names)) for o in shapes) == 1
            for j in range(n) for names in _NONEMPTY
        }
        # a minimal identifying description of each shape, to use it as a landmark
        self.landmark: dict[int, dict[str, str]] = {}
        for j in range(n):
            minimal = [q for q in _NONEMPTY if self.unique[(j, q)]
                       and not any(self.unique[(j, r)] for r in _NONEMPTY if set(r) < set(q))]
            if minimal:
                self.landmark[j] = _attrs_of(shapes[j], _pick(rng, minimal))

    def group(self, attrs: dict[str, str]) -> int:
        return sum(_matches(o, attrs) for o in self.shapes)


def _expressions(t: int, scene: _Scene, rng: np.random.Generator, per_object: int) -> list[dict]:
    """Pick ``per_object`` distinct expressions for shape ``t``, spread over the buckets.

    Every candidate program is checked with :func:`referents` to pick out exactly ``t``.
    A target bucket is drawn for each expression (``BUCKET_WEIGHTS``); candidates are
    rendered lazily until one lands in it (or the nearest bucket that has one).
    """
    shapes, w, h, margin = scene.shapes, scene.w, scene.h, scene.margin
    o = shapes[t]

    def ok(program: dict) -> bool:
        return referents(program, shapes, w, h) == [t]

    bases: list[dict] = [{"attrs": _attrs_of(o, q)} for q in _NONEMPTY if scene.unique[(t, q)]]
    for names in _ALL_SUBSETS:
        if names and scene.unique[(t, names)]:
            continue
        for ordinal in ORDINALS:
            p = {"attrs": _attrs_of(o, names), "ordinal": list(ordinal)}
            if ok(p):
                bases.append(p)
    related = [(j, rel) for j in scene.landmark for rel in RELATIONS
               if j != t and _relation(o, shapes[j], rel, margin) is True]
    for names in ((), ("shape",), ("colour",), ("size",), ("size", "shape"), ("colour", "shape")):
        for j, rel in related:
            p = {"attrs": _attrs_of(o, names), "relations": [[rel, scene.landmark[j]]]}
            if ok(p):
                bases.append(p)
    if not bases:
        return []
    regions = [[hr, vr] for hr in (None, "left", "right") for vr in (None, "top", "bottom")
               if (hr or vr) and _region(o, (hr, vr), w, h) is True]

    def extend() -> dict | None:
        """A base plus a true region or one more true relation (a longer expression)."""
        p = json.loads(json.dumps(bases[int(rng.integers(len(bases)))]))
        for _ in range(int(rng.integers(1, 3))):
            if regions and not p.get("region") and (rng.random() < 0.5 or not related):
                p["region"] = _pick(rng, regions)
            elif related:
                j, rel = related[int(rng.integers(len(related)))]
                if any(scene.landmark[j] == x[1] for x in p.get("relations", [])):
                    continue
                p.setdefault("relations", []).append([rel, scene.landmark[j]])
        return p if len(p) > 1 and ok(p) else None

    order = [bases[int(k)] for k in rng.permutation(len(bases))]
    rendered: dict[int, list[tuple[str, dict]]] = {b: [] for b in range(len(BUCKETS))}
    seen: set[str] = set()
    chosen: list[dict] = []

    def render(p: dict) -> None:
        words = render_program(p, scene.group(p.get("attrs", {})), rng)
        text = " ".join(words)
        b = _bucket(len(words))
        if b is not None and text not in seen:
            rendered[b].append((text, p))

    cursor = 0
    for _ in range(per_object):
        weights = np.array(BUCKET_WEIGHTS)
        target = int(rng.choice(len(BUCKETS), p=weights / weights.sum()))
        tries = 0
        while not rendered[target] and tries < 12:
            tries += 1
            if target == len(BUCKETS) - 1 and rng.random() < 0.8:
                p = extend()
                if p is not None:
                    render(p)
            elif cursor < 2 * len(order):
                render(order[cursor % len(order)])
                cursor += 1
            else:
                p = extend()
                if p is not None:
                    render(p)
        if not rendered[target]:  # fall back to the nearest bucket with something rendered
            avail = [b for b in rendered if rendered[b]]
            if not avail:
                while cursor < 2 * len(order) and not any(rendered.values()):
                    render(order[cursor % len(order)])
                    cursor += 1
                avail = [b for b in rendered if rendered[b]]
                if not avail:
                    break
            target = min(avail, key=lambda b: (abs(b - target), b))
        text, p = rendered[target].pop(int(rng.integers(len(rendered[target]))))
        seen.add(text)
        for b in rendered:  # drop other renderings of the same text
            rendered[b] = [x for x in rendered[b] if x[0] != text]
        chosen.append({"text": text, "program": p})
    return chosen


def _raw(text: str, rng: np.random.Generator) -> str:
    """The 'raw' form of an expression: sometimes capitalised, sometimes with a full stop."""
    raw = text[0].upper() + text[1:] if rng.random() < 0.4 else text
    return raw + "." if rng.random() < 0.3 else raw


def _make_image(args: tuple) -> dict:
    """Worker: build, draw and save image ``index``; return its shapes and expressions."""
    seed, index, image_id, kind, image_dir, per_object, quality, scale = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    for _attempt in range(200):
        w, h = int(rng.integers(96, 129)), int(rng.integers(96, 129))
        if scale != 1.0:  # a larger canvas, same kind of scene (scale 1 draws nothing extra)
            w, h = int(round(w * scale)), int(round(h * scale))
        shapes = _place(rng, kind, w, h)
        if shapes is None:
            continue
        full, polys = zip(*(_full_mask(s, h, w) for s in shapes))
        visible = []
        above = np.zeros((h, w), bool)
        for m in reversed(full):  # later shapes are drawn on top
            visible.append(m & ~above)
            above |= m
        visible = visible[::-1]
        if any(v.sum() < 0.6 * f.sum() or v.sum() < 20 for v, f in zip(visible, full)):
            continue
        scene = _Scene(shapes, w, h, rng)
        exprs = [_expressions(i, scene, rng, per_object) for i in range(len(shapes))]
        if any(len(e) < min(2, per_object) for e in exprs):
            continue
        break
    else:  # pragma: no cover - the sampler always finds a scene well before this
        raise RuntimeError(f"synthref: could not build image {index} (seed {seed})")

    img = _background(rng, h, w)
    for s, m in zip(shapes, full):
        colour = np.array(COLOURS[s.colour], np.float32) + rng.normal(0, 6, size=3)
        img[m] = colour + rng.normal(0, 4, size=(int(m.sum()), 3))
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    stem = f"synthref_{image_id:012d}"
    Image.fromarray(img).save(Path(image_dir) / f"{stem}.jpg", quality=quality, subsampling=0)

    from pycocotools import mask as mask_utils

    objects = []
    for k, (s, f, v, p) in enumerate(zip(shapes, full, visible, polys)):
        occluded = bool((f & ~v).any())
        if not occluded and p is not None:
            seg: Any = p
        elif s.shape in ("circle", "ring") and not occluded and (image_id + k) % 2 == 0:
            seg = {"size": [h, w], "counts": _uncompressed_rle(v)}
        else:
            rle = mask_utils.encode(np.asfortranarray(v.astype(np.uint8)))
            seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        ys, xs = np.nonzero(v)
        objects.append({
            "shape": s.shape, "colour": s.colour, "size": s.size,
            "cx": round(s.cx, 3), "cy": round(s.cy, 3), "r": round(s.r, 3),
            "occluded": occluded, "segmentation": seg, "area": int(v.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            "expressions": [{"text": e["text"], "raw": _raw(e["text"], rng), "program": e["program"]}
                            for e in exprs[k]],
        })
    return {"index": index, "image_id": image_id, "kind": kind, "width": w, "height": h,
            "file_name": f"{stem}.jpg", "objects": objects}


# ----------------------------------------------------------------------------------------
# writing the data set

def _split_plan(num_images: int) -> list[str]:
    if num_images < len(SPLIT_FRACTIONS):
        raise ValueError(f"num_images must be >= {len(SPLIT_FRACTIONS)} (one per split), got {num_images}")
    counts = [max(1, int(round(num_images * f))) for _, f in SPLIT_FRACTIONS]
    counts[0] = num_images - sum(counts[1:])
    return [name for (name, _), c in zip(SPLIT_FRACTIONS, counts) for _ in range(c)]


def generate(
    out: str | os.PathLike,
    seed: int = 0,
    num_images: int = DEFAULT_NUM_IMAGES,
    expressions_per_object: int = 3,
    jpeg_quality: int = 92,
    workers: int | None = None,
    progress: bool = True,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Write synthref under ``<out>/synthref/`` and return a summary dict.

    ``out`` is the data ROOT: ``ReferDataset(out, "synthref", "unc", split)`` reads it.
    Files: ``refs(unc).p``, ``instances.json``, ``scenes.json`` and ``images/*.jpg``.
    The bytes depend only on the arguments other than ``workers`` and ``progress``.
    ``scale`` enlarges every canvas (scale 5 gives 480-640 pixel sides, about the size
    of COCO's images, for timing the data pipeline at the paper's resolution).
    """
    if not 0.5 <= float(scale) <= 10.0:
        raise DataError(f"scale {scale}: choose a value from 0.5 to 10 (1 gives images of 96-128 pixels a side)")
    t0 = time.perf_counter()
    root = Path(out)
    ddir = root / "synthref"
    image_dir = ddir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for old in image_dir.glob("synthref_*.jpg"):
        old.unlink()
    plan = _split_plan(int(num_images))
    kind_rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1]))
    kinds = []
    for split in plan:
        k = "sparse" if kind_rng.random() < 0.5 else "crowded"
        kinds.append({"testA": "sparse", "testB": "crowded"}.get(split, k))
    jobs = [(seed, i, i + 1, kinds[i], str(image_dir), int(expressions_per_object), int(jpeg_quality), float(scale))
            for i in range(len(plan))]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(jobs) >= 64 else 1
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synthref images", unit="img", file=sys.stderr)
    results: list[dict] = []
    if workers > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            for res in pool.imap(_make_image, jobs, chunksize=16):
                results.append(res)
                if bar:
                    bar.update(1)
    else:
        for job in jobs:
            results.append(_make_image(job))
            if bar:
                bar.update(1)
    if bar:
        bar.close()

    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    images, annotations, refs, scenes = [], [], [], []
    ann_id, ref_id, sent_id = 0, 0, 0
    for res, split in zip(results, plan):
        h, w = res["height"], res["width"]
        images.append({"id": res["image_id"], "file_name": res["file_name"], "height": h, "width": w})
        scene = {"image_id": res["image_id"], "split": split, "kind": res["kind"], "width": w,
                 "height": h, "objects": []}
        for obj in res["objects"]:
            ann_id += 1
            ref_id += 1
            annotations.append({
                "id": ann_id, "image_id": res["image_id"], "category_id": cat_id[obj["shape"]],
                "segmentation": obj["segmentation"], "area": obj["area"], "bbox": obj["bbox"],
                "iscrowd": 0,
            })
            sentences = []
            for e in obj["expressions"]:
                sent_id += 1
                tokens = tokenize(e["raw"])
                sentences.append({"sent_id": sent_id, "sent": " ".join(tokens), "raw": e["raw"], "tokens": tokens})
            stem, ext = os.path.splitext(res["file_name"])
            refs.append({
                "ref_id": ref_id, "ann_id": ann_id, "image_id": res["image_id"],
                "category_id": cat_id[obj["shape"]], "split": split,
                "file_name": f"{stem}_{ann_id}{ext}",
                "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences,
            })
            scene["objects"].append({
                "ann_id": ann_id, "ref_id": ref_id, "shape": obj["shape"], "colour": obj["colour"],
                "size": obj["size"], "cx": obj["cx"], "cy": obj["cy"], "r": obj["r"],
                "occluded": obj["occluded"],
                "programs": [e["program"] for e in obj["expressions"]],
            })
        scenes.append(scene)

    instances = {"info": {"description": "synthref: generated by restr.data.synth", "seed": seed},
                 "images": images, "annotations": annotations, "categories": categories}
    atomic_write_bytes(ddir / "instances.json", json.dumps(instances, separators=(",", ":")).encode())
    # through JSON first: pickle's memo depends on object identity (which differs when
    # results come from worker processes); JSON-decoded objects make the bytes canonical
    atomic_write_bytes(ddir / "refs(unc).p", pickle.dumps(json.loads(json.dumps(refs)), protocol=4))
    atomic_write_bytes(ddir / "scenes.json", json.dumps({"seed": seed, "images": scenes}, separators=(",", ":")).encode())

    lengths = Counter()
    per_split: dict[str, Counter] = {}
    for r in refs:
        c = per_split.setdefault(r["split"], Counter())
        c["refs"] += 1
        c["sentences"] += len(r["sentences"])
        for s in r["sentences"]:
            lengths[len(s["tokens"])] += 1
    for split in per_split:
        per_split[split]["images"] = sum(1 for s in plan if s == split)
    total_sent = sum(lengths.values())
    buckets = {}
    for lo, hi in BUCKETS:
        label = str(lo) if lo == hi else f"{lo}-{hi}"
        buckets[label] = sum(c for n, c in lengths.items() if lo <= n <= hi) / total_sent
    return {
        "root": str(root),
        "dir": str(ddir),
        "refs_file": str(ddir / "refs(unc).p"),
        "instances_file": str(ddir / "instances.json"),
        "scenes_file": str(ddir / "scenes.json"),
        "image_dir": str(image_dir),
        "seed": seed,
        "images": len(images),
        "refs": len(refs),
        "sentences": total_sent,
        "splits": {k: dict(v) for k, v in per_split.items()},
        "length_histogram": {int(k): int(v) for k, v in sorted(lengths.items())},
        "bucket_fractions": buckets,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def load_scenes(root: str | os.PathLike) -> dict:
    """The ``scenes.json`` written beside synthref's refs (attributes and programs)."""
    return json.loads((Path(root) / "synthref" / "scenes.json").read_text())


def scene_shapes(scene: dict) -> list[Shape]:
    """The :class:`Shape` list of one ``scenes.json`` image, in annotation order."""
    return [Shape(o["shape"], o["colour"], o["size"], o["cx"], o["cy"], o["r"]) for o in scene["objects"]]
