"""synthref version 2: look-alike distractors, and expressions as long as the scene needs.

**Scenes.** As in version 1, 3-4 shapes apart (sparse) or 5-6 overlapping a little
(crowded), on the same canvases. But a shape is often drawn *like* one already in the
scene: with ``P_TWIN`` it copies every attribute of an earlier shape (a twin: only
location, a relation or an ordinal tells the two apart), else with ``P_SAME_SHAPE`` it
copies an earlier shape's kind and draws its colour and size afresh (a distractor of
the target's category, as RefCOCO's images hold several objects of the target's
category); else its three attributes are drawn afresh, as in version 1.

**Descriptions.** Each expression is written the way referring-expression generation
works, by the incremental algorithm (Dale and Reiter 1995): the target's attributes
are tried one by one in a preference order (drawn per expression, so one shape's
expressions differ), and an attribute is kept if it rules out at least one distractor
still in play; it stops when none is left. Only if distractors remain after every
attribute (the target has a twin) are location words added: an ordinal ("the leftmost
circle"), a region of the picture ("on the left side") or a relation to a landmark that
its own attributes identify ("left of the blue square"), one clause if one suffices,
else two. Then, as human annotators do, words the description does not need are added
at stated rates: one more attribute with ``P_REDUNDANT_ATTRIBUTE``, one more true
region or relation with ``P_REDUNDANT_LOCATION``. Every expression is checked by
:func:`.synth_language.referents` (the same meaning and safety margins as version 1) to
pick out exactly its target, before and after the redundant words are added.

So length follows need: a target alone of its kind gets one to four words (more only
through a redundant clause), a twin gets an ordinal, a region or a relation. A scene in
which some shape cannot be singled out at all is drawn again (:mod:`.synth_scenes`).
The rules below were fixed before any model was trained on this version, and are not
tuned on a model's accuracy.
"""
from __future__ import annotations

import numpy as np

from .synth_language import (ATTRS, COLOURS, MAX_WORDS, ORDINALS, RELATIONS, SHAPES, SIZES, Shape, _matches, _pick,
                             _region, _relation, attributes_single_out, clear_margin, referents, render_program)
from .synth_layout import PLACEMENT_TRIES, RADIUS, SHAPES_PER_SCENE, min_distance

__all__ = ["place_shapes", "scene_expressions", "describe", "P_TWIN", "P_SAME_SHAPE",
           "P_REDUNDANT_ATTRIBUTE", "P_REDUNDANT_LOCATION"]

# -- the scene: how often a shape is drawn like one already there ----------------------
P_TWIN = 0.30                # copies every attribute of an earlier shape (uniformly chosen): a twin
P_SAME_SHAPE = 0.35          # else copies an earlier shape's kind; colour and size drawn afresh

# -- the description: location words, only when attributes do not suffice --------------
LOCATION_KINDS = ("ordinal", "region", "relation")
LOCATION_WEIGHTS = (0.45, 0.25, 0.30)  # preference among the kinds, drawn per expression
MAX_LOCATION_CLAUSES = 2     # a twin no single clause singles out gets two (else the scene is drawn again)
REGIONS = tuple((h, v) for h in (None, "left", "right") for v in (None, "top", "bottom") if h or v)

# -- words the description does not need, as human annotators add them ------------------
P_REDUNDANT_ATTRIBUTE = 0.30  # one attribute the incremental algorithm left out (uniformly chosen)
P_REDUNDANT_LOCATION = 0.15  # one true region or relation beyond what singles the target out

# -- each shape's expressions ------------------------------------------------------------
DESCRIPTIONS_PER_EXPRESSION = 4  # descriptions drawn per expression wanted; distinct texts kept


# ----------------------------------------------------------------------------------------
# the scene's shapes

def _attributes(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    """``n`` (shape, colour, size) triples, later ones often like earlier ones."""
    out: list[tuple[str, str, str]] = []
    for k in range(n):
        u = rng.random()
        if k and u < P_TWIN:
            out.append(out[int(rng.integers(k))])
        elif k and u < P_TWIN + P_SAME_SHAPE:
            out.append((out[int(rng.integers(k))][0], _pick(rng, COLOURS), _pick(rng, SIZES)))
        else:
            out.append((_pick(rng, SHAPES), _pick(rng, COLOURS), _pick(rng, SIZES)))
    return out


def place_shapes(rng: np.random.Generator, kind: str, w: int, h: int) -> list[Shape] | None:
    """The scene's shapes (:func:`_attributes`) at random places, apart in a sparse scene and
    overlapping a little in a crowded one; None if one cannot be placed."""
    lo, hi = SHAPES_PER_SCENE[kind]
    m = min(w, h)
    shapes: list[Shape] = []
    for shape, colour, size in _attributes(rng, int(rng.integers(lo, hi + 1))):
        r = m * rng.uniform(*RADIUS[size])
        for _try in range(PLACEMENT_TRIES):
            cx = rng.uniform(r + 1, w - r - 1)
            cy = rng.uniform(r + 1, h - r - 1)
            if all(np.hypot(o.cx - cx, o.cy - cy) >= min_distance(kind, o.r, r) for o in shapes):
                break
        else:
            return None
        shapes.append(Shape(shape, colour, size, cx, cy, r))
    return shapes


# ----------------------------------------------------------------------------------------
# one description

class _Scene:
    """One scene and the description of its shapes; ``order`` is the attribute preference."""

    def __init__(self, shapes: list[Shape], width: int, height: int, order: tuple[str, ...]):
        self.shapes, self.w, self.h, self.order = shapes, width, height, order
        self.margin = clear_margin(width, height)

    def picks_out(self, program: dict, t: int) -> bool:
        return referents(program, self.shapes, self.w, self.h) == [t]

    def incremental(self, t: int) -> tuple[dict[str, str], list[int]]:
        """The incremental algorithm on attributes: the attributes kept, and the distractors
        they leave (the target's twins; none if the attributes single it out)."""
        o = self.shapes[t]
        left = [j for j in range(len(self.shapes)) if j != t]
        kept: list[str] = []
        for name in self.order:
            if not left:
                break
            if any(self.shapes[j].attr(name) != o.attr(name) for j in left):
                kept.append(name)
                left = [j for j in left if self.shapes[j].attr(name) == o.attr(name)]
        return {a: o.attr(a) for a in ATTRS if a in kept}, left

    def landmarks(self, t: int) -> dict[int, dict[str, str]]:
        """The shapes other than ``t`` that their attributes single out, with those attributes."""
        return {j: self.incremental(j)[0] for j in range(len(self.shapes))
                if j != t and attributes_single_out(j, self.shapes)}

    def clauses(self, t: int, kind: str) -> list[dict]:
        """Every clause of ``kind`` that is clearly true of shape ``t`` (as program parts)."""
        o = self.shapes[t]
        if kind == "ordinal":
            return [{"ordinal": list(od)} for od in ORDINALS]  # true of the target only in context
        if kind == "region":
            return [{"region": list(r)} for r in REGIONS if _region(o, r, self.w, self.h) is True]
        return [{"relations": [[rel, lm]]} for j, lm in self.landmarks(t).items() for rel in RELATIONS
                if _relation(o, self.shapes[j], rel, self.margin) is True]


def _with(program: dict, clause: dict) -> dict | None:
    """``program`` with ``clause`` added; None if it already has a clause of that kind (two
    relations are allowed if their landmarks differ)."""
    out = {k: (list(v) if k == "relations" else v) for k, v in program.items()}
    if "relations" in clause:
        if any(r[1] == clause["relations"][0][1] for r in out.get("relations", [])):
            return None
        out["relations"] = out.get("relations", []) + clause["relations"]
        return out
    key = next(iter(clause))
    if key in out:
        return None
    out[key] = clause[key]
    return out


def _kind_order(rng: np.random.Generator) -> list[str]:
    """The location kinds in a preference order drawn by ``LOCATION_WEIGHTS``: the first with
    probability proportional to its weight, the next among the rest likewise (the keys
    u ** (1 / weight) of Efraimidis and Spirakis, sorted from the largest)."""
    keys = rng.random(len(LOCATION_KINDS)) ** (1.0 / np.array(LOCATION_WEIGHTS))
    return [LOCATION_KINDS[int(k)] for k in np.argsort(-keys)]


def _locate(scene: _Scene, t: int, program: dict, rng: np.random.Generator) -> dict | None:
    """``program`` with the fewest location clauses (up to ``MAX_LOCATION_CLAUSES``) that make it
    pick out ``t`` alone, the kinds tried in a drawn preference order; None if none does."""
    kinds = _kind_order(rng)
    clauses: dict[str, list[dict]] = {}
    for kind in kinds:  # one clause
        clauses[kind] = scene.clauses(t, kind)
        found = [p for c in clauses[kind] if (p := _with(program, c)) and scene.picks_out(p, t)]
        if found:
            return found[int(rng.integers(len(found)))]
    if MAX_LOCATION_CLAUSES < 2:
        return None
    singles = [c for k in kinds for c in clauses[k]]
    pairs = []
    for a in range(len(singles)):  # two clauses
        first = _with(program, singles[a])
        for b in range(a + 1, len(singles)):
            p = _with(first, singles[b]) if first else None
            if p and scene.picks_out(p, t):
                pairs.append(p)
    return pairs[int(rng.integers(len(pairs)))] if pairs else None


def _redundant_words(scene: _Scene, t: int, program: dict, rng: np.random.Generator) -> tuple[dict, list[str]]:
    """``program`` with the words it does not need that an annotator might add (each at its
    stated rate, each kept only if the program still picks out ``t`` alone), and their kinds."""
    o, added = scene.shapes[t], []
    missing = [a for a in ATTRS if a not in program["attrs"]]
    if rng.random() < P_REDUNDANT_ATTRIBUTE and missing:
        name = _pick(rng, missing)
        attrs = {a: o.attr(a) for a in ATTRS if a in program["attrs"] or a == name}
        candidate = {**program, "attrs": attrs}
        if scene.picks_out(candidate, t):
            program, added = candidate, [name]
    if rng.random() < P_REDUNDANT_LOCATION:
        options = [(kind, p) for kind in ("region", "relation") for c in scene.clauses(t, kind)
                   if (p := _with(program, c)) and scene.picks_out(p, t)]
        if options:
            kind, program = options[int(rng.integers(len(options)))]
            added.append(kind)
    return program, added


def describe(t: int, shapes: list[Shape], width: int, height: int, rng: np.random.Generator) -> dict | None:
    """One description of shape ``t``: ``{"program", "redundant"}`` (the program and the kinds of
    the parts it holds beyond need), or None if no program of the rules singles it out."""
    scene = _Scene(shapes, width, height, tuple(ATTRS[int(k)] for k in rng.permutation(len(ATTRS))))
    attrs, left = scene.incremental(t)
    program: dict | None = {"attrs": attrs}
    if left:
        program = _locate(scene, t, program, rng)
        if program is None:
            return None
    program, redundant = _redundant_words(scene, t, program, rng)
    if not scene.picks_out(program, t):  # pragma: no cover - every step above checked it
        raise AssertionError(f"synthref v2: {program} does not pick out shape {t}")
    return {"program": program, "redundant": redundant}


# ----------------------------------------------------------------------------------------
# each shape's expressions

def _group_size(program: dict, shapes: list[Shape]) -> int:
    return sum(_matches(o, program.get("attrs", {})) for o in shapes)


def shape_expressions(t: int, shapes: list[Shape], width: int, height: int, rng: np.random.Generator,
                      per_object: int) -> list[dict]:
    """Up to ``per_object`` expressions ``{"text", "program", "redundant"}`` of shape ``t`` with
    distinct texts, from ``DESCRIPTIONS_PER_EXPRESSION`` descriptions per expression wanted."""
    chosen: list[dict] = []
    texts: set[str] = set()
    for _ in range(DESCRIPTIONS_PER_EXPRESSION * per_object):
        if len(chosen) == per_object:
            break
        d = describe(t, shapes, width, height, rng)
        if d is None:
            return chosen  # nothing singles it out: no other draw will either
        words = render_program(d["program"], _group_size(d["program"], shapes), rng)
        text = " ".join(words)
        if len(words) <= MAX_WORDS and text not in texts:
            texts.add(text)
            chosen.append({"text": text, **d})
    return chosen


def scene_expressions(shapes: list[Shape], width: int, height: int, rng: np.random.Generator,
                      per_object: int) -> list[list[dict]]:
    """Every shape's expressions (:func:`shape_expressions`)."""
    return [shape_expressions(t, shapes, width, height, rng, per_object) for t in range(len(shapes))]
