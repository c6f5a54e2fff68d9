"""Verdicts on the paper's claims: estimates with 95 % intervals, and the rules that read them.

Estimates. Every model of a comparison is scored on the same expressions, one table of
per-expression numbers per training seed (intersection and union of its mask, its IoU,
...). A bootstrap replicate draws as many expressions as there are, with replacement,
the same draw for every model (so a difference between two models is paired), and for
each model as many of its seeds as it has, with replacement; the model's value in the
replicate is the mean over the drawn seeds of its metric on the drawn expressions. The
95 % interval is the 2.5th to 97.5th percentile of the replicates; the point estimate is
the mean over seeds of the metric on every expression. With one seed this is the plain
bootstrap over expressions; with a few seeds the seed-to-seed spread enters it, though a
handful of seeds shows less of that spread than there is (the chapters say how many).

Rules (:data:`RULES`, printed on the status page):

* ``greater``: "A > B" is reproduced when the interval of A - B lies above 0, not
  reproduced when it lies below 0, and inconclusive when it contains 0;
* ``within``: "A within m of B" is reproduced when the interval of A - B lies inside
  [-m, m], not reproduced when it lies wholly outside, inconclusive otherwise;
* ``learned``: models are compared only once each of them has learned, i.e. beats
  predicting the whole image (the interval of the difference of cumulative IoU lies
  above 0); if one has not, the claim is inconclusive whatever its parts say;
* ``hits``: a precision comparison at threshold X needs at least :data:`MIN_HITS`
  expressions with IoU >= X over the two models; with fewer it is inconclusive;
* ``all``: a claim of several parts is reproduced when every part is, not reproduced
  when any part is not, and inconclusive otherwise;
* ``testable``: a claim that our data cannot test as the paper meant it is
  inconclusive whatever the numbers say; the numbers are still shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
LABELS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
LEVEL = 0.95
MIN_HITS = 10

RULES = {
    "greater": "A > B is reproduced when the 95 % interval of A - B lies above 0, not reproduced when it lies "
               "below 0, and inconclusive when it contains 0.",
    "within": "A within m of B is reproduced when the 95 % interval of A - B lies inside [-m, m], not "
              "reproduced when it lies wholly outside, and inconclusive otherwise.",
    "learned": "Models are compared only once each has learned: its cumulative IoU beats predicting the whole "
               "image (the 95 % interval of the difference lies above 0). Otherwise the claim is inconclusive.",
    "hits": f"A precision comparison at IoU threshold X needs at least {MIN_HITS} expressions reaching X over the "
            "two models; with fewer it is inconclusive.",
    "all": "A claim of several parts is reproduced when every part is, not reproduced when any part is not, and "
           "inconclusive otherwise.",
    "testable": "A claim that our data cannot test as the paper meant it is inconclusive whatever the numbers "
                "say; the numbers are still shown.",
}

Columns = Mapping[str, np.ndarray]  # per-expression values of one seed, by name
Metric = Callable[[Mapping[str, np.ndarray], float], np.ndarray]  # (column sums, n) -> value(s)


# ----------------------------------------------------------------------------------------
# estimates

@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95 % interval."""

    point: float
    lo: float
    hi: float

    def fmt(self, digits: int = 1, signed: bool = False) -> str:
        """``12.3 [10.1, 14.0]`` (``+1.2 [-0.3, +2.5]`` when ``signed``)."""
        f = f"{{:{'+' if signed else ''}.{digits}f}}"
        return f"{f.format(self.point)} [{f.format(self.lo)}, {f.format(self.hi)}]"

    def __str__(self) -> str:
        return self.fmt()


@dataclass(frozen=True)
class Stat:
    """A statistic: its point estimate and its bootstrap replicates. Stats of one
    :class:`Resampler` combine arithmetically, replicate by replicate."""

    point: float
    reps: np.ndarray = field(repr=False)

    def _combine(self, other: "Stat | float", op) -> "Stat":
        if isinstance(other, Stat):
            if other.reps.shape != self.reps.shape:
                raise ValueError("stats from different resamplers cannot be combined")
            return Stat(float(op(self.point, other.point)), op(self.reps, other.reps))
        return Stat(float(op(self.point, other)), op(self.reps, other))

    def __add__(self, other):
        return self._combine(other, np.add)

    def __sub__(self, other):
        return self._combine(other, np.subtract)

    def __mul__(self, other):
        return self._combine(other, np.multiply)

    def __neg__(self):
        return Stat(-self.point, -self.reps)

    def estimate(self, level: float = LEVEL) -> Estimate:
        """The point estimate and the percentile interval of the replicates."""
        reps = self.reps[np.isfinite(self.reps)]
        if not math.isfinite(self.point) or len(reps) == 0:
            return Estimate(self.point, float("nan"), float("nan"))
        lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
        return Estimate(float(self.point), float(lo), float(hi))


def relative_gain(on: Stat, off: Stat) -> Stat:
    """(on - off) / (on + off), replicate by replicate: the gain as a share of the two
    values together, between -1 and 1, and 0 when both are 0."""
    def rel(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        total = a + b
        return np.where(total > 0, (a - b) / np.where(total > 0, total, 1.0), 0.0)

    return Stat(float(rel(on.point, off.point)), rel(on.reps, off.reps))


class Resampler:
    """Bootstrap replicates shared by every model scored on the same ``n`` expressions
    (see the module doc): one draw of expressions for all models, seeds drawn per model."""

    def __init__(self, n: int, samples: int = 1000, seed: int = 0):
        if n < 1:
            raise ValueError("no expressions to resample")
        self.n, self.samples = int(n), int(samples)
        self.rng = np.random.default_rng(seed)
        # how often each expression is drawn in each replicate: (samples, n)
        draws = self.rng.integers(0, self.n, size=(self.samples, self.n))
        flat = (draws + self.n * np.arange(self.samples)[:, None]).ravel()
        self.weights = np.bincount(flat, minlength=self.samples * self.n).reshape(self.samples, self.n).astype(
            np.float64)

    def stat(self, per_seed: Sequence[Columns], metric: Metric) -> Stat:
        """The statistic ``metric`` of one model scored with each of its seeds (one
        :data:`Columns` per seed, every column ``n`` long)."""
        if not per_seed:
            raise ValueError("a model needs at least one seed's scores")
        points, reps = [], []
        for cols in per_seed:
            arrays = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
            bad = [k for k, v in arrays.items() if v.shape != (self.n,)]
            if bad:
                raise ValueError(f"columns {bad} do not hold one value per expression ({self.n})")
            points.append(float(metric({k: v.sum() for k, v in arrays.items()}, self.n)))
            reps.append(np.asarray(metric({k: self.weights @ v for k, v in arrays.items()}, self.n), dtype=np.float64))
        reps_by_seed = np.stack(reps)  # (seeds, samples)
        s = len(per_seed)
        pick = self.rng.integers(0, s, size=(self.samples, s))  # the seeds of each replicate
        mixed = reps_by_seed[pick, np.arange(self.samples)[:, None]].mean(axis=1)
        return Stat(float(np.mean(points)), mixed)


# metrics over column sums: every value in percent

def _ratio(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def cum_iou(group: str | None = None) -> Metric:
    """Cumulative IoU in % (sum of intersections / sum of unions), of the expressions of
    ``group`` only when given (the columns ``intersection|group`` and ``union|group``)."""
    tail = f"|{group}" if group is not None else ""
    return lambda s, n: 100 * _ratio(s[f"intersection{tail}"], s[f"union{tail}"])


def mean_of(column: str) -> Metric:
    """The mean of a per-expression column over the expressions, x 100 (a share in %)."""
    return lambda s, n: 100 * np.asarray(s[column], dtype=np.float64) / n


# ----------------------------------------------------------------------------------------
# rules

def greater(diff: Estimate) -> str:
    """The ``greater`` rule on the interval of A - B."""
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return INCONCLUSIVE
    if diff.lo > 0:
        return REPRODUCED
    if diff.hi < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def within(diff: Estimate, margin: float) -> str:
    """The ``within`` rule on the interval of A - B with margin ``margin``."""
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return INCONCLUSIVE
    if -margin <= diff.lo and diff.hi <= margin:
        return REPRODUCED
    if diff.lo > margin or diff.hi < -margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def all_of(labels: Sequence[str]) -> str:
    """The ``all`` rule."""
    if not labels:
        return INCONCLUSIVE
    if any(label == NOT_REPRODUCED for label in labels):
        return NOT_REPRODUCED
    if all(label == REPRODUCED for label in labels):
        return REPRODUCED
    return INCONCLUSIVE


# ----------------------------------------------------------------------------------------
# verdicts

@dataclass(frozen=True)
class Part:
    """One tested part of a claim: what is compared, our estimate, the paper's value,
    the rule and its outcome (``note``: why the rule could not be applied, if so)."""

    what: str
    ours: Estimate | None
    paper: float | None
    rule: str
    label: str
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    claim: int
    statement: str
    paper: str  # the paper's numbers, in words
    ours: str  # ours with their intervals, in words
    label: str  # reproduced | not reproduced | inconclusive
    why: str  # how the rules reached the label
    parts: tuple[Part, ...] = ()
    measured: str = ""  # the label the parts give, before the learned/testable rules

    def row(self) -> dict[str, str]:
        return {"claim": f"{self.claim}. {self.statement}", "paper": self.paper, "ours (95 % interval)": self.ours,
                "verdict": self.label, "why": self.why}


def judge(claim: int, statement: str, paper: str, ours: str, parts: Sequence[Part],
          learned: Mapping[str, Estimate] | None = None, untestable: str | None = None) -> Verdict:
    """The verdict on a claim from its parts (the ``all`` rule), the ``learned`` check
    (each model's cumulative IoU minus the whole-image baseline's) and, when our data
    cannot test the claim as the paper meant it, the reason (``untestable``)."""
    measured = all_of([p.label for p in parts])
    reasons = [f"{p.what}" + (f" {p.ours.fmt(2, signed=True)}" if p.ours is not None else "") + f": {p.label}"
               + (f" ({p.note})" if p.note else "") for p in parts]
    label = measured
    dead = [name for name, est in (learned or {}).items() if greater(est) != REPRODUCED]
    if dead:
        label = INCONCLUSIVE
        reasons.insert(0, f"{_names(dead)} did not learn (not above the whole-image baseline), so the comparison "
                          "is not read")
    if untestable:
        label = INCONCLUSIVE
        reasons.insert(0, f"not testable here as the paper meant it: {untestable}; the parts alone read "
                          f"'{measured}'")
    return Verdict(claim, statement, paper, ours, label, "; ".join(reasons), tuple(parts), measured)


def _names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def part(what: str, diff: Stat | Estimate, paper: float | None, rule: str = "greater", margin: float = 0.0,
         level: float = LEVEL) -> Part:
    """A part of a claim judged by ``rule`` (``greater`` or ``within``) on ``diff``."""
    est = diff.estimate(level) if isinstance(diff, Stat) else diff
    if rule == "greater":
        return Part(what, est, paper, rule, greater(est))
    if rule == "within":
        return Part(what, est, paper, f"within {margin:g}", within(est, margin))
    raise ValueError(f"unknown rule {rule!r}: greater or within")


def missing_part(what: str, paper: float | None, note: str) -> Part:
    """A part this build cannot measure (a model it does not train, too few hits)."""
    return Part(what, None, paper, "-", INCONCLUSIVE, note)


def table(verdicts: Sequence[Verdict]):
    """The verdicts as a pandas DataFrame, one row per claim."""
    import pandas as pd

    return pd.DataFrame([v.row() for v in verdicts])
