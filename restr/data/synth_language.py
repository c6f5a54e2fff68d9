"""synthref's language: what an expression program means, and how it is put into words.

A *program* is a small dict: ``attrs`` (size, colour and/or shape the target has),
an ``ordinal`` (``[axis, direction]``: "leftmost", "lowest", ...), ``relations``
(``[[relation, landmark attrs], ...]``: "left of the red square") and a ``region``
(``[horizontal, vertical]``: "in the top left corner"). :func:`referents` says which
shapes of a scene a program picks out; :func:`render_program` turns it into words.
Both versions of the data set share them; each version chooses its programs its own
way (:mod:`.synth_v1`: a search spread over the length buckets; :mod:`.synth_v2`:
incremental referring-expression generation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .refer import LENGTH_BUCKETS, bucket_labels

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "WORDS",
    "MAX_WORDS",
    "Shape",
    "referents",
    "attributes_single_out",
    "render_program",
    "raw_form",
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

# -- when is a comparison clear? (nothing in synthref is borderline) ---------------------
CLEAR_MARGIN = 0.08          # coordinates must differ by 8% of the picture's shorter side ...
CLEAR_RADII = 0.5            # ... and, for a relation, by half the two shapes' radii summed
REGION_IN = 0.40             # "on the left side": centre within the left 40% of the width
REGION_OUT = 0.5             # clearly not on the left: centre in the right half

# -- wording: probabilities of one uniform draw each --------------------------------------
P_THE = 0.5                  # "the" before a phrase of attributes only ("the red circle" / "red circle")
P_THE_QUALIFIED = 0.85       # "the" when an ordinal, relation or region follows, or there are no attributes
ORDINAL_PAIR_STYLE = 0.4     # draw below this, in a group of two: "the left circle"
ORDINAL_SUPER_STYLE = 0.75   # else below this: "the leftmost circle"; else "the circle on the far left"
P_CAPITALISED = 0.4          # the raw form starts with a capital ...
P_FULL_STOP = 0.3            # ... and ends with a full stop

# -- lengths: the paper's Table 2 buckets for UNC, read from the reader -------------------
LENGTH_DATASET = "synthref"
BUCKET_LABELS = bucket_labels(LENGTH_DATASET)
MAX_WORDS = LENGTH_BUCKETS[LENGTH_DATASET][-1][1]  # longer renderings are not used (the paper's 20)


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


def _pick(rng: np.random.Generator, seq) -> Any:
    """A uniformly random element of ``seq`` (faster than ``rng.choice`` for short tuples)."""
    seq = tuple(seq)
    return seq[int(rng.integers(len(seq)))]


def _coin(rng: np.random.Generator) -> bool:
    """A fair coin."""
    return rng.random() < 0.5


# ----------------------------------------------------------------------------------------
# semantics: which shapes does a program pick out?

def clear_margin(width: int, height: int) -> float:
    return CLEAR_MARGIN * min(width, height)


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
    margin = max(margin, CLEAR_RADII * (o.r + landmark.r))
    d = {"left": landmark.cx - o.cx, "right": o.cx - landmark.cx,
         "above": landmark.cy - o.cy, "below": o.cy - landmark.cy}[rel]
    if d >= margin:
        return True
    if d <= 0:
        return False
    return None


def _in_part(fraction: float) -> bool | None:
    """Is a centre ``fraction`` of the way in from a side clearly in that part of the picture?"""
    return True if fraction <= REGION_IN else False if fraction >= REGION_OUT else None


def _region(o: Shape, region: tuple[str | None, str | None], width: int, height: int) -> bool | None:
    values = []
    h, v = region
    if h is not None:
        values.append(_in_part(o.cx / width if h == "left" else 1 - o.cx / width))
    if v is not None:
        values.append(_in_part(o.cy / height if v == "top" else 1 - o.cy / height))
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


def _extreme(cands: list[int], shapes: list[Shape], ordinal, margin: float) -> list[int] | None:
    """``[the extreme candidate]`` along the ordinal's axis, or None if the runner-up is too close."""
    axis, direction = ordinal
    if len(cands) < 2:
        return None  # "the leftmost circle" needs something to compare with
    key = sorted(cands, key=lambda i: -direction * (shapes[i].cx if axis == "x" else shapes[i].cy))
    a, b = (shapes[key[0]], shapes[key[1]])
    gap = abs((a.cx - b.cx) if axis == "x" else (a.cy - b.cy))
    if gap < margin:
        return None
    return [key[0]]


def attributes_single_out(t: int, shapes: list[Shape]) -> bool:
    """Is shape ``t`` the only one of its scene with its shape, colour and size? If not (it
    has a twin), no attributes single it out: a location, a relation or an ordinal must."""
    o = shapes[t]
    return not any(j != t and s.shape == o.shape and s.colour == o.colour and s.size == o.size
                   for j, s in enumerate(shapes))


def referents(program: dict, shapes: list[Shape], width: int, height: int) -> list[int] | None:
    """Indices of the shapes ``program`` picks out, or None if any comparison is too close.

    Attributes filter the shapes; each relation keeps the shapes clearly on that side of
    its landmark (which its attributes must identify uniquely); a region keeps the shapes
    clearly in that part of the picture; an ordinal then keeps the extreme shape along
    its axis, which must beat the runner-up by a margin.
    """
    margin = clear_margin(width, height)
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
        cands = _extreme(cands, shapes, ordinal, margin)
    return cands


# ----------------------------------------------------------------------------------------
# rendering a program to words

def _noun_phrase(attrs: dict[str, str], rng: np.random.Generator, bare_ok: bool) -> list[str]:
    """``[size] [colour] shape-or-noun``; a lone colour may stand bare ("the red") if ``bare_ok``."""
    words: list[str] = []
    if "size" in attrs:
        words.append(_pick(rng, SIZE_WORDS[attrs["size"]]))
    if "colour" in attrs:
        words.append(attrs["colour"])
    if "shape" in attrs:
        words.append(attrs["shape"])
    elif not (bare_ok and list(attrs) == ["colour"] and _coin(rng)):
        words.append(_pick(rng, NOUNS))
    return words


def _rel_words(rel: str, lm_attrs: dict[str, str], rng: np.random.Generator) -> list[str]:
    options = REL_WORDS[rel]
    return [*options[int(rng.integers(len(options)))], "the", *_noun_phrase(lm_attrs, rng, bare_ok=False)]


def _region_words(region: tuple[str | None, str | None], rng: np.random.Generator) -> list[str]:
    h, v = region
    pic = _pick(rng, PICTURE)
    if h and v:
        tail = ["of", "the", pic] if _coin(rng) else []
        return ["in", "the", v, h, "corner", *tail]
    if h:
        forms = [["on", "the", h, "side", "of", "the", pic], ["on", "the", h, "side"],
                 ["in", "the", h, "part", "of", "the", pic]]
    else:
        forms = [["near", "the", v, "of", "the", pic], ["at", "the", v], ["in", "the", v, "part", "of", "the", pic]]
    return forms[int(rng.integers(len(forms)))]


def render_program(program: dict, group_size: int, rng: np.random.Generator) -> list[str]:
    """Words for ``program``. ``group_size``: how many shapes share its attributes."""
    attrs = program.get("attrs", {})
    ordinal = tuple(program["ordinal"]) if program.get("ordinal") else None
    extras = bool(program.get("relations") or program.get("region"))
    det = rng.random() < (P_THE_QUALIFIED if (ordinal or extras or not attrs) else P_THE)
    pre: list[str] = []
    post: list[str] = []
    if ordinal:
        style = rng.random()
        if group_size == 2 and style < ORDINAL_PAIR_STYLE:
            pre = [_pick(rng, ORD_PRE2[ordinal])]
        elif style < ORDINAL_SUPER_STYLE:
            pre = [_pick(rng, ORD_SUPER[ordinal])]
            det = True
        else:
            post = list(ORD_POST[ordinal][0])
    noun = _noun_phrase(attrs, rng, bare_ok=not (ordinal or extras or det))
    words = (["the"] if det else []) + pre + noun + post
    pieces = [_rel_words(rel, lm, rng) for rel, lm in program.get("relations", [])]
    if program.get("region"):
        pieces.append(_region_words(tuple(program["region"]), rng))
    for k, piece in enumerate(pieces):
        if k == 0 and len(pieces) > 1 and _coin(rng):
            words += [_pick(rng, ("that", "which")), "is"]
        elif k > 0:
            words.append("and")
        words += piece
    return words


def raw_form(text: str, rng: np.random.Generator) -> str:
    """The 'raw' form of an expression: sometimes capitalised, sometimes with a full stop."""
    raw = text[0].upper() + text[1:] if rng.random() < P_CAPITALISED else text
    return raw + "." if rng.random() < P_FULL_STOP else raw
