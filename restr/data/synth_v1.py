"""synthref version 1's own rules: how a scene's shapes are drawn and how each shape's
expressions are searched. The model zoo (``data/zoo/``) was trained on this version, and
it stays the default until the zoo is retrained on version 2 (:mod:`.synth_v2`).

Nothing else depends on this module but the version switch of
:func:`.synth_scenes.scene_rules`. Deleting version 1: this file; that switch's
``version == 1`` branch; the version-1 branch of :func:`.synth.to_refer` (files without
a version key); ``DEFAULT_VERSION`` in :mod:`.synth` and ``SynthData.version``'s default
in :mod:`restr.config` set to 2 (or the choice dropped); and the ``VERSION_1_DIGEST``
test in ``tests/data/test_data_synth.py``.

The code is the former generator's, moved here unchanged: the same seed gives the same
bytes (``tests/data/test_data_synth.py`` checks a small set against a hash taken before the move).

A scene's shapes draw their size, place, shape and colour independently (so most are
the only one of their kind). Each shape's expressions are searched among *base*
programs that pick it out alone (its unique attributes, an ordinal, a relation) and
their extensions by extra true clauses, spread over the paper's length buckets.
"""
from __future__ import annotations

import copy
from itertools import combinations

import numpy as np

from .refer import bucket_of
from .synth_language import (ATTRS, BUCKET_LABELS, COLOURS, LENGTH_DATASET, MAX_WORDS, ORDINALS, RELATIONS, SHAPES,
                             SIZES, Shape, _coin, _matches, _pick, _region, _relation, clear_margin, referents,
                             render_program)
from .synth_layout import PLACEMENT_TRIES, RADIUS, SHAPES_PER_SCENE, min_distance

__all__ = ["place_shapes", "scene_expressions", "pick_expressions"]

# ----------------------------------------------------------------------------------------
# the scene's shapes

def place_shapes(rng: np.random.Generator, kind: str, w: int, h: int) -> list[Shape] | None:
    """Shapes at random places (apart in a sparse scene, overlapping a little in a crowded one)."""
    lo, hi = SHAPES_PER_SCENE[kind]
    n = int(rng.integers(lo, hi + 1))
    m = min(w, h)
    shapes: list[Shape] = []
    for _ in range(n):
        size = _pick(rng, SIZES)
        r = m * rng.uniform(*RADIUS[size])
        for _try in range(PLACEMENT_TRIES):
            cx = rng.uniform(r + 1, w - r - 1)
            cy = rng.uniform(r + 1, h - r - 1)
            if all(np.hypot(o.cx - cx, o.cy - cy) >= min_distance(kind, o.r, r) for o in shapes):
                break
        else:
            return None
        shapes.append(Shape(_pick(rng, SHAPES), _pick(rng, list(COLOURS)), size, cx, cy, r))
    return shapes


BUCKET_WEIGHTS = (0.30, 0.18, 0.24, 0.28)  # how often each bucket is drawn as an expression's target

# -- the search for one shape's expressions ------------------------------------------------
MAX_RENDER_TRIES = 12        # renderings tried for a target bucket before taking the nearest
RENDERINGS_PER_BASE = 2      # each base program is rendered at most twice (two random wordings)
P_EXTEND_FOR_LONGEST = 0.8   # for the longest bucket, extend a base rather than render one
MAX_EXTRA_CLAUSES = 2        # an extension adds 1 or 2 regions / relations


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


def scene_expressions(shapes: list[Shape], width: int, height: int, rng: np.random.Generator,
                      per_object: int) -> list[list[dict]]:
    """Every shape's expressions ``[{"text", "program"}]`` (:func:`pick_expressions`)."""
    index = SceneIndex(shapes, width, height, rng)
    return [pick_expressions(i, index, rng, per_object) for i in range(len(shapes))]
