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

Rules (:data:`RULES`, printed on the status page and on the protocol page,
``book/protocol.md``). The margins are numbers fixed from the paper's own tables before
any model of the converged zoo was trained (:data:`MARGINAL`, :data:`BIASED_SHARE`,
:data:`CONVERGED_MARGIN`); the protocol page says where each comes from.

* ``greater``: "A > B" is reproduced when the interval of A - B lies above 0, not
  reproduced when it lies below 0, and inconclusive when it contains 0;
* ``fairly``: "A fairly increases on B" needs the interval of A - B above +MARGINAL;
* ``marginal``: "A and B differ marginally" needs the interval inside [-MARGINAL, +MARGINAL]
  (wholly outside: not reproduced);
* ``marginal loss``: "A loses only marginally against B" needs the interval of A - B
  above -MARGINAL (wholly below: not reproduced);
* ``share``: "overwhelmingly on the visual tokens" needs the interval of the share above
  :data:`BIASED_SHARE` %;
* ``learned``: a claim is read only when each of its models beats the language-blind
  floor, the mask of every object in the image (the interval of the difference of
  cumulative IoU lies above 0);
* ``converged``: a claim is read only when every run of each of its models has stopped
  learning: the straight line fitted to its validation cumulative IoU over the last fifth
  of its schedule rises by less than :data:`CONVERGED_MARGIN` points (at least
  :data:`MIN_CURVE_POINTS` validations there); otherwise the claim is inconclusive
  (still learning), with the numbers;
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
# "marginal" and "fairly", in IoU points, from the paper's Table 4: every difference the
# paper calls marginal is at most 0.41 points (6 layers over 4: +0.03; weight sharing:
# -0.41 and -0.25; the decoder at 2 layers: +0.31), every one it calls an increase or an
# improvement at least 1.67 (the decoder at 4 layers; 4 layers over 2: +4.69). One point
# lies between the two groups.
MARGINAL = 1.0
# Table 3(a): every layer of the paper's VME gives the visual tokens at least 82.4 % of
# the seed's attention; "biased to the visual features" is read as above 80 %.
BIASED_SHARE = 80.0
# The converged rule: the fitted rise over the last fifth of a schedule must stay below
# one IoU point (the paper's "marginal"), from at least three validations there.
CONVERGED_MARGIN = 1.0
LAST_FRACTION = 0.2
MIN_CURVE_POINTS = 3

RULES = {
    "greater": "A > B is reproduced when the 95 % interval of A - B lies above 0, not reproduced when it lies "
               "below 0, and inconclusive when it contains 0.",
    "fairly": f"\"A fairly increases on B\" is reproduced when the 95 % interval of A - B lies above +{MARGINAL:g} "
              f"IoU point, not reproduced when it lies below +{MARGINAL:g}, inconclusive otherwise.",
    "marginal": f"\"A and B differ marginally\" is reproduced when the 95 % interval of A - B lies inside "
                f"[-{MARGINAL:g}, +{MARGINAL:g}] IoU point, not reproduced when it lies wholly outside, inconclusive "
                "otherwise.",
    "marginal loss": f"\"A loses only marginally against B\" is reproduced when the 95 % interval of A - B lies "
                     f"above -{MARGINAL:g} IoU point, not reproduced when it lies below -{MARGINAL:g}, inconclusive "
                     "otherwise.",
    "share": f"\"Biased to the visual tokens\" is reproduced when the 95 % interval of the seed's attention share "
             f"on the visual tokens lies above {BIASED_SHARE:g} %, not reproduced when it lies below, inconclusive "
             "otherwise.",
    "learned": "A claim is read only when each of its models has learned: its cumulative IoU beats the "
               "language-blind floor, the mask of every object in the image (the 95 % interval of the "
               "difference lies above 0). Otherwise the claim is inconclusive.",
    "converged": f"A claim is read only when every run of each of its models has stopped learning: the straight "
                 f"line fitted to its validation cumulative IoU over the last fifth of its schedule rises by less "
                 f"than {CONVERGED_MARGIN:g} IoU point (from at least {MIN_CURVE_POINTS} validations there). "
                 "Otherwise the claim is inconclusive (still learning), with the numbers.",
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

def above(est: Estimate, threshold: float) -> str:
    """Reproduced when the interval lies above ``threshold``, not reproduced when it lies
    below it, inconclusive when it contains it (or is not finite)."""
    if not (math.isfinite(est.lo) and math.isfinite(est.hi)):
        return INCONCLUSIVE
    if est.lo > threshold:
        return REPRODUCED
    if est.hi < threshold:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def greater(diff: Estimate) -> str:
    """The ``greater`` rule on the interval of A - B."""
    return above(diff, 0.0)


def within(diff: Estimate, margin: float) -> str:
    """The ``marginal`` rule: the interval of A - B inside [-margin, margin]."""
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


@dataclass(frozen=True)
class Convergence:
    """The ``converged`` rule on one run's validation curve: the rise (IoU points) of the
    least-squares line through the validations in the last ``fraction`` of its schedule,
    over that stretch; ``points`` validations were there."""

    rise: float
    points: int
    iterations: int
    margin: float = CONVERGED_MARGIN

    @property
    def passed(self) -> bool:
        return self.points >= MIN_CURVE_POINTS and math.isfinite(self.rise) and self.rise < self.margin

    def fmt(self) -> str:
        if self.points < MIN_CURVE_POINTS:
            return f"{self.points} validation(s) in the last fifth, fewer than {MIN_CURVE_POINTS}"
        return f"{self.rise:+.1f}"


def convergence(steps: Sequence[float], ious: Sequence[float], iterations: int, fraction: float = LAST_FRACTION,
                margin: float = CONVERGED_MARGIN) -> Convergence:
    """:class:`Convergence` of a run trained for ``iterations`` steps whose validations
    at ``steps`` scored ``ious`` (cumulative IoU in %)."""
    steps = np.asarray(steps, dtype=np.float64)
    ious = np.asarray(ious, dtype=np.float64)
    start = (1.0 - fraction) * iterations
    keep = (steps >= start) & (steps <= iterations) & np.isfinite(ious)
    x, y = steps[keep], ious[keep]
    if len(x) < MIN_CURVE_POINTS or np.ptp(x) == 0:
        return Convergence(float("nan"), int(len(x)), int(iterations), margin)
    slope = np.polyfit(x, y, 1)[0]  # IoU points per step
    return Convergence(float(slope * fraction * iterations), int(len(x)), int(iterations), margin)


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
class ArmCheck:
    """What the ``learned`` and ``converged`` rules see of one model of a claim: its
    budget, its seeds, its cumulative IoU minus the language-blind floor's, and each
    seed's :class:`Convergence`."""

    name: str
    iterations: int
    per_step: int  # expressions per optimiser step (the batch)
    seeds: tuple[int, ...]
    over_floor: Estimate | None = None
    curves: tuple[Convergence, ...] = ()

    @property
    def learned(self) -> bool:
        return self.over_floor is not None and greater(self.over_floor) == REPRODUCED

    @property
    def converged(self) -> bool:
        return bool(self.curves) and all(c.passed for c in self.curves)

    def budget(self) -> str:
        """``1,500 steps x 64 = 96,000 expressions, 3 seeds``."""
        n = len(self.seeds)
        return (f"{self.iterations:,} steps x {self.per_step} = {self.iterations * self.per_step:,} expressions, "
                f"{n} seed{'s' if n != 1 else ''}")


@dataclass(frozen=True)
class Verdict:
    key: str  # claim1 ... (the paper's claims), reading1 ... (the book's own readings)
    statement: str
    quote: str  # the paper's sentence, or the book's reading in its own words
    source: str  # where the paper says it (section, table or figure)
    paper: str  # the paper's numbers, in words
    ours: str  # ours with their intervals, in words
    label: str  # reproduced | not reproduced | inconclusive
    why: str  # how the rules reached the label
    parts: tuple[Part, ...] = ()
    arms: tuple[ArmCheck, ...] = ()
    measured: str = ""  # the label the parts give, before the learned/converged/testable rules
    tag: str = ""  # why an inconclusive verdict is one: "still learning", "did not learn", "not testable here"

    @property
    def reading(self) -> bool:
        """True for a reading of the book's own (not a sentence of the paper)."""
        return self.key.startswith("reading")

    @property
    def text(self) -> str:
        """The verdict as the pages print it: ``inconclusive (still learning)``."""
        return f"{self.label} ({self.tag})" if self.tag else self.label

    def budgets(self) -> str:
        """Every model's budget and seeds: ``CME: 1,500 steps x 64 = 96,000 expressions, 3 seeds; ...``."""
        return "; ".join(f"{a.name}: {a.budget()}" for a in self.arms)

    def row(self) -> dict[str, str]:
        return {"claim": self.statement, "the paper says": f"{self.quote} ({self.source})", "paper": self.paper,
                "models (budget, seeds)": self.budgets(), "ours (95 % interval)": self.ours, "verdict": self.text,
                "why": self.why}


def _reasons(parts: Sequence[Part]) -> list[str]:
    return [f"{p.what}" + (f" {p.ours.fmt(2, signed=True)}" if p.ours is not None else "") + f": {p.label}"
            + (f" ({p.note})" if p.note else "") for p in parts]


def _gates(arms: Sequence[ArmCheck], untestable: str | None, measured: str) -> list[tuple[str, str]]:
    """The rules that stop a claim from being read, in order: (tag, reason)."""
    gates = []
    if untestable:
        gates.append(("not testable here", f"not testable here as the paper meant it: {untestable}"))
    dead = [a.name for a in arms if a.over_floor is not None and not a.learned]
    if dead:
        gates.append(("did not learn", f"{_names(dead)} did not learn (not above the language-blind floor, the "
                                       "mask of every object), so the comparison is not read"))
    learning = [a for a in arms if a.curves and not a.converged]
    if learning:
        said = "; ".join(f"{a.name} rose {', '.join(c.fmt() for c in a.curves)} over the last fifth of its "
                         f"{a.iterations:,} steps" for a in learning)
        gates.append(("still learning", f"still learning ({said}; the converged rule needs less than "
                                        f"{learning[0].curves[0].margin:g} in every run), so the comparison is "
                                        "not read as a finding"))
    if gates:
        gates[-1] = (gates[-1][0], gates[-1][1] + f"; the parts alone read '{measured}'")
    return gates


@dataclass(frozen=True)
class Statement:
    """A claim as the pages state it: short, the paper's sentence (or the book's reading in
    its own words) and where the paper says it."""

    text: str
    quote: str = ""
    source: str = ""


def judge(key: str, statement: Statement | str, paper: str, ours: str, parts: Sequence[Part],
          arms: Sequence[ArmCheck] = (), untestable: str | None = None) -> Verdict:
    """The verdict on a claim from its parts (the ``all`` rule), then the gates: the
    ``testable`` rule (``untestable``: why our data cannot test it as the paper meant),
    ``learned`` and ``converged`` (from each model's :class:`ArmCheck`)."""
    st = statement if isinstance(statement, Statement) else Statement(statement)
    measured = all_of([p.label for p in parts])
    reasons = _reasons(parts)
    gates = _gates(arms, untestable, measured)
    label, tag = measured, ""
    if gates:
        label, tag = INCONCLUSIVE, gates[0][0]
        reasons = [g[1] for g in gates] + reasons
    return Verdict(key, st.text, st.quote, st.source, paper, ours, label, "; ".join(reasons), tuple(parts),
                   tuple(arms), measured, tag)


def _names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


RULE_NAMES = {"greater": "greater", "fairly": f"above +{MARGINAL:g}", "marginal": f"within ±{MARGINAL:g}",
              "marginal loss": f"above -{MARGINAL:g}", "share": f"above {BIASED_SHARE:g} %"}


def part(what: str, diff: Stat | Estimate, paper: float | None, rule: str = "greater", margin: float | None = None,
         level: float = LEVEL) -> Part:
    """A part of a claim judged by ``rule`` (a key of :data:`RULE_NAMES`) on ``diff``;
    ``margin`` replaces the rule's number (:data:`MARGINAL` or :data:`BIASED_SHARE`)."""
    est = diff.estimate(level) if isinstance(diff, Stat) else diff
    m = (BIASED_SHARE if rule == "share" else MARGINAL) if margin is None else margin
    if rule == "greater":
        return Part(what, est, paper, rule, greater(est))
    if rule in ("fairly", "share"):
        return Part(what, est, paper, f"above {'+' if rule == 'fairly' else ''}{m:g}{' %' if rule == 'share' else ''}",
                    above(est, m))
    if rule == "marginal":
        return Part(what, est, paper, f"within ±{m:g}", within(est, m))
    if rule == "marginal loss":
        return Part(what, est, paper, f"above -{m:g}", above(est, -m))
    raise ValueError(f"unknown rule {rule!r}: one of {', '.join(RULE_NAMES)}")


def missing_part(what: str, paper: float | None, note: str) -> Part:
    """A part this build cannot measure (a model it does not train, too few hits)."""
    return Part(what, None, paper, "-", INCONCLUSIVE, note)


def table(verdicts: Sequence[Verdict]):
    """The verdicts as a pandas DataFrame, one row per claim."""
    import pandas as pd

    return pd.DataFrame([v.row() for v in verdicts])
