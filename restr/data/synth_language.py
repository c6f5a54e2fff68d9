"""synthref's language: what an expression program means, and how it is put into words.

A *program* is a small dict: ``attrs`` (size, colour and/or shape the target has),
an ``ordinal`` (``[axis, direction]``: "leftmost", "lowest", ...), ``relations``
(``[[relation, landmark attrs], ...]``: "left of the red square") and a ``region``
(``[horizontal, vertical]``: "in the top left corner"). :func:`referents` says which
shapes of a scene a program picks out; :func:`render_program` turns it into words;
:func:`pick_expressions` searches, for one shape, programs that pick out that shape
alone and spreads their renderings over the paper's length buckets.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from .refer import LENGTH_BUCKETS, bucket_labels, bucket_of

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "WORDS",
    "MAX_WORDS",
    "Shape",
    "referents",
    "render_program",
    "pick_expressions",
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
BUCKET_WEIGHTS = (0.30, 0.18, 0.24, 0.28)  # how often each bucket is drawn as an expression's target
MAX_WORDS = LENGTH_BUCKETS[LENGTH_DATASET][-1][1]  # longer renderings are not used (the paper's 20)

# -- the search for one shape's expressions ------------------------------------------------
MAX_RENDER_TRIES = 12        # renderings tried for a target bucket before taking the nearest
RENDERINGS_PER_BASE = 2      # each base program is rendered at most twice (two random wordings)
P_EXTEND_FOR_LONGEST = 0.8   # for the longest bucket, extend a base rather than render one
MAX_EXTRA_CLAUSES = 2        # an extension adds 1 or 2 regions / relations


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


# ----------------------------------------------------------------------------------------
# the expressions of one shape

def _subsets(include_empty: bool) -> list[tuple[str, ...]]:
    out = [()] if include_empty else []
    for k in (1, 2, 3):
        out += list(combinations(ATTRS, k))
    return out


_ATTR_SETS = _subsets(False)                 # every non-empty set of attribute names
_ATTR_SETS_OR_NONE = _subsets(True)          # the same and the empty set, first
# attribute sets a target keeps beside a relation ("the red one left of the square")
_RELATION_TARGET_ATTRS = ((), ("shape",), ("colour",), ("size",), ("size", "shape"), ("colour", "shape"))
_BUCKET_P = np.array(BUCKET_WEIGHTS) / np.array(BUCKET_WEIGHTS).sum()


def _attrs_of(o: Shape, names: tuple[str, ...]) -> dict[str, str]:
    return {n: o.attr(n) for n in names}


def _bucket_index(num_words: int) -> int | None:
    """The index of the length bucket of ``num_words`` words; None if too long to use."""
    if num_words > MAX_WORDS:
        return None
    return BUCKET_LABELS.index(bucket_of(num_words, LENGTH_DATASET))


class SceneIndex:
    """Per-image tables shared by the expression search of every shape."""

    def __init__(self, shapes: list[Shape], width: int, height: int, rng: np.random.Generator):
        self.shapes, self.w, self.h = shapes, width, height
        self.margin = clear_margin(width, height)
        n = len(shapes)
        self.unique = {
            (j, names): sum(_matches(o, _attrs_of(shapes[j], names)) for o in shapes) == 1
            for j in range(n) for names in _ATTR_SETS
        }
        # a minimal identifying description of each shape, to use it as a landmark
        self.landmark: dict[int, dict[str, str]] = {}
        for j in range(n):
            minimal = [q for q in _ATTR_SETS if self.unique[(j, q)]
                       and not any(self.unique[(j, r)] for r in _ATTR_SETS if set(r) < set(q))]
            if minimal:
                self.landmark[j] = _attrs_of(shapes[j], _pick(rng, minimal))

    def group(self, attrs: dict[str, str]) -> int:
        return sum(_matches(o, attrs) for o in self.shapes)

    def picks_out(self, program: dict, t: int) -> bool:
        return referents(program, self.shapes, self.w, self.h) == [t]


class _Search:
    """The expression search of one target shape ``t`` (see :func:`pick_expressions`)."""

    def __init__(self, t: int, scene: SceneIndex, rng: np.random.Generator):
        self.t, self.scene, self.rng = t, scene, rng
        o = scene.shapes[t]
        self.related = [(j, rel) for j in scene.landmark for rel in RELATIONS
                        if j != t and _relation(o, scene.shapes[j], rel, scene.margin) is True]
        self.regions = [[hr, vr] for hr in (None, "left", "right") for vr in (None, "top", "bottom")
                        if (hr or vr) and _region(o, (hr, vr), scene.w, scene.h) is True]
        self.bases = self._bases()
        self.order: list[dict] = []  # the bases in a random order, set by run()
        self.cursor = 0              # bases rendered so far, in that order (each one twice at most)
        self.rendered: dict[int, list[tuple[str, dict]]] = {b: [] for b in range(len(BUCKET_LABELS))}
        self.chosen_texts: set[str] = set()

    def _bases(self) -> list[dict]:
        """Programs that pick out the target alone: its unique attributes, an ordinal, a relation."""
        t, scene = self.t, self.scene
        o = scene.shapes[t]
        bases: list[dict] = [{"attrs": _attrs_of(o, q)} for q in _ATTR_SETS if scene.unique[(t, q)]]
        for names in _ATTR_SETS_OR_NONE:
            if names and scene.unique[(t, names)]:
                continue
            for ordinal in ORDINALS:
                p = {"attrs": _attrs_of(o, names), "ordinal": list(ordinal)}
                if scene.picks_out(p, t):
                    bases.append(p)
        for names in _RELATION_TARGET_ATTRS:
            for j, rel in self.related:
                p = {"attrs": _attrs_of(o, names), "relations": [[rel, scene.landmark[j]]]}
                if scene.picks_out(p, t):
                    bases.append(p)
        return bases

    def _extended(self) -> dict | None:
        """A base plus a true region or one more true relation (a longer expression)."""
        rng, related, landmark = self.rng, self.related, self.scene.landmark
        p = copy.deepcopy(self.bases[int(rng.integers(len(self.bases)))])
        for _ in range(int(rng.integers(1, MAX_EXTRA_CLAUSES + 1))):
            if self.regions and not p.get("region") and (_coin(rng) or not related):
                p["region"] = _pick(rng, self.regions)
            elif related:
                j, rel = related[int(rng.integers(len(related)))]
                if any(landmark[j] == x[1] for x in p.get("relations", [])):
                    continue
                p.setdefault("relations", []).append([rel, landmark[j]])
        return p if len(p) > 1 and self.scene.picks_out(p, self.t) else None

    def _render(self, p: dict | None) -> None:
        """Word ``p`` and file the text under its length bucket (unless already chosen)."""
        if p is None:
            return
        words = render_program(p, self.scene.group(p.get("attrs", {})), self.rng)
        text = " ".join(words)
        b = _bucket_index(len(words))
        if b is not None and text not in self.chosen_texts:
            self.rendered[b].append((text, p))

    def _fill(self, target: int) -> None:
        """Render candidates until bucket ``target`` has one or the tries run out."""
        longest = len(BUCKET_LABELS) - 1
        for _ in range(MAX_RENDER_TRIES):
            if self.rendered[target]:
                return
            want_longer = target == longest and self.rng.random() < P_EXTEND_FOR_LONGEST
            if not want_longer and self.cursor < RENDERINGS_PER_BASE * len(self.order):
                self._render_next_base()
            else:
                self._render(self._extended())

    def _render_next_base(self) -> None:
        self._render(self.order[self.cursor % len(self.order)])
        self.cursor += 1

    def _nearest_filled(self, target: int) -> int | None:
        """``target`` if it has a rendering, else the nearest bucket that has one (None: none)."""
        if self.rendered[target]:
            return target
        while self.cursor < RENDERINGS_PER_BASE * len(self.order) and not any(self.rendered.values()):
            self._render_next_base()  # nothing rendered at all yet: the remaining bases, in order
        avail = [b for b in self.rendered if self.rendered[b]]
        if not avail:
            return None
        return min(avail, key=lambda b: (abs(b - target), b))

    def _take(self, bucket: int) -> dict:
        """Choose a random rendering of ``bucket``; drop other renderings of the same text."""
        text, p = self.rendered[bucket].pop(int(self.rng.integers(len(self.rendered[bucket]))))
        self.chosen_texts.add(text)
        for b in self.rendered:
            self.rendered[b] = [x for x in self.rendered[b] if x[0] != text]
        return {"text": text, "program": p}

    def run(self, per_object: int) -> list[dict]:
        if not self.bases:
            return []
        rng = self.rng
        self.order = [self.bases[int(k)] for k in rng.permutation(len(self.bases))]
        chosen: list[dict] = []
        for _ in range(per_object):
            target = int(rng.choice(len(BUCKET_LABELS), p=_BUCKET_P))
            self._fill(target)
            bucket = self._nearest_filled(target)
            if bucket is None:
                break
            chosen.append(self._take(bucket))
        return chosen


def pick_expressions(t: int, scene: SceneIndex, rng: np.random.Generator, per_object: int) -> list[dict]:
    """Pick ``per_object`` distinct expressions ``{"text", "program"}`` for shape ``t``.

    Every candidate program is checked with :func:`referents` to pick out exactly ``t``.
    A target length bucket is drawn for each expression (``BUCKET_WEIGHTS``); candidates
    are rendered lazily until one lands in it (or the nearest bucket that has one).
    """
    return _Search(t, scene, rng).run(per_object)
