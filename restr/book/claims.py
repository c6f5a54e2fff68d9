"""The paper's learned claims in its own words, and the book's own readings, each judged
from per-expression scores by the rules of :mod:`restr.book.verdict`.

A claim compares *arms* (:class:`Arm`: one trained model, its scores per training seed on
the same validation expressions, its validation curves and its budget). Every claim
function takes its arms and the language-blind floor for those expressions (the mask of
every object in the image, :func:`restr.book.analysis.all_objects_scores`: the ``learned``
rule) and returns a :class:`ClaimResult`: the verdict (after the ``learned``,
``converged`` and ``testable`` gates), a table of our estimates beside the paper's
numbers, and named numbers for the chapter's prose (glued into the page, never typed).

The claims, as :data:`CLAIMS` states them (``claim*``: a sentence of the paper;
``reading*``: a reading of the book's own, marked as such wherever it is shown):

==========  ===================================================  ========================
key         what                                                  function
==========  ===================================================  ========================
claim1      Table 3(a): VME's seed attends overwhelmingly to      :func:`seed_attention`
            the visual tokens (the paper: from the token count)
claim2      Table 3(b): CME > VME > IME; CME-dagger still beats   :func:`fusion_ranking`
            VME and IME
claim3      Table 4: 2 -> 4 layers fairly, 4 -> 6 marginally      :func:`fusion_depth`
claim4      Table 4: the decoder adds more at 4 layers than at 2  :func:`decoder_gain`
claim5      Table 4: weight sharing costs only marginally         :func:`weight_sharing`
claim6      Table 2: IoU falls with length, less for ReSTR than   :func:`length_trend`
            for a convolutional fusion
claim7      Fig. 4: the decoder refines the patch-level map,      :func:`patch_to_pixel`
            judged against the patch grid's ceiling
reading1    VME's seed attends to the image beyond uniform        :func:`beyond_uniform`
reading2    CME-dagger within one point of CME                    :func:`dagger_equivalence`
reading3    the decoder's gain is largest at Prec@0.9             :func:`decoder_precision`
m3att1-3    M3Att's paper: mutual over generic attention; IMI;    :func:`m3att_claims`
            LFR (chapter 7)
==========  ===================================================  ========================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.refer import bucket_labels
from ..runs.folder import read_run_config
from . import paper
from .analysis import (attention_layers, expression_scores, learning_curve, score_columns, scores_summary,
                       uniform_visual_share)
from .glue import glue, glue_values
from .verdict import (INCONCLUSIVE, MARGINAL, MIN_HITS, ArmCheck, Estimate, Resampler, Stat, Statement, Verdict,
                      convergence, cum_iou, judge, mean_of, missing_part, part, relative_gain)

CLAIMS: dict[str, Statement] = {
    "claim1": Statement(
        "VME's seed attends overwhelmingly to the visual tokens",
        "The results demonstrate that the attentions for the class seed embedding are biased to the visual "
        "features. We hypothesize that the bias of attentions results from the imbalance of the length of features "
        "between the visual and linguistic features",
        "Sec. 4.3, Table 3(a)"),
    "claim2": Statement(
        "CME > VME > IME, and CME† still beats VME and IME (without the decoder)",
        "These results demonstrate the superiority of CME over the other variants of the fusion encoder in "
        "performance and efficiency. [...] The result shows CME† is still better performance with lower parameters "
        "and computational cost than the other variants.",
        "Sec. 4.3, Table 3(b)"),
    "claim3": Statement(
        "Two to four fusion layers fairly increase IoU; four to six only marginally (without the decoder)",
        "the performance is fairly increased until using 4 transformer layers and marginally increased using 6 "
        "transformer layers.",
        "Sec. 4.4, Table 4"),
    "claim4": Statement(
        "The decoder improves IoU with four fusion layers, more than with two, where its effect is marginal",
        "the decoder improves IoU by 1.67%p when used along with the 4 transformer layers in the fusion encoder. "
        "However, when with the fusion encoder with 2 transformer layers, the improvement made by the segmentation "
        "decoder is only 0.31%p.",
        "Sec. 4.4, Table 4"),
    "claim5": Statement(
        "Weight sharing degrades IoU only marginally",
        "The results show that the performance degradation incurred by weight sharing is marginal.",
        "Sec. 4.4, Table 4"),
    "claim6": Statement(
        "IoU falls as expressions get longer, and less for ReSTR than for a convolutional fusion",
        "the performance of ACM [...] drops 13.71%p from 1-5 to 11-20 length group on the Gref val set, while that "
        "of ReSTR drops by 6.81%p. It demonstrates that our method is better to capture the long-range "
        "interactions between the two modalities compared to previous methods.",
        "Sec. 4.2, Table 2"),
    "claim7": Statement(
        "The decoder refines the patch-level prediction into a finer pixel-level one",
        "the patch-level predictions are transformed to fine pixel-level predictions by the segmentation decoder "
        "in a coarse-to-fine manner.",
        "Sec. 4.4, Fig. 4"),
    "m3att1": Statement(
        "M3Att's mutual attention beats generic attention (LAV only), by more than a point",
        "It can be seen that our module greatly enhances the performance, showing that multi-modal features are "
        "essential for understanding the vision and language inputs.",
        "M3Att, Sec. IV-B, Table I"),
    "m3att2": Statement(
        "IMI helps, and its learned transformation beats feeding every layer the same language feature",
        "In Model #1, we validate the effectiveness of the IMI. It brings a performance gain of 1.14% in terms of IoU "
        "[...] This method only gives a very slight performance improvement of 0.36% IoU over baseline, showing "
        "that by constructing the transformation pathway for language information, the IMI successfully extracts "
        "appropriate information for different feature processing stages.",
        "M3Att, Sec. IV-B, Table II"),
    "m3att3": Statement(
        "Language Feature Reconstruction helps",
        "Finally, we add the Language Feature Reconstruction (LFR) module. Compared with Model #1, it brings an "
        "improvement on the IoU by 1.18%.",
        "M3Att, Sec. IV-B, Table II"),
    "reading1": Statement(
        "VME's seed attends to the image more than uniform attention would (the book's reading)",
        "The book's reading of Table 3(a): beyond the token count, the seed's visual share exceeds the share "
        "uniform attention over the same tokens would give.",
        "the book, on Table 3(a)"),
    "reading2": Statement(
        f"CME† within {MARGINAL:g} IoU point of CME (the book's reading)",
        "The book's reading of Table 3(b): sharing the fusion encoder's weights costs CME no more than a marginal "
        "difference (52.79 against 52.81 in the paper).",
        "the book, on Table 3(b)"),
    "reading3": Statement(
        "The decoder's relative gain is largest at Prec@0.9 (the book's reading)",
        "The book's reading of Table 4: the decoder's gain, relative to the precision without it, grows with the "
        "IoU threshold (Prec@0.9 5.23 -> 7.90 at 2 layers, 8.18 -> 12.23 at 4).",
        "the book, on Table 4"),
}
PAPER_NV, PAPER_NL = 900, 20  # Table 3(a): 480 x 480 input, P = 16, 20 word positions


@dataclass
class Arm:
    """One model of a comparison: its scores per training seed (the same expressions for
    every arm of a claim), its validation curves (:func:`restr.book.analysis.learning_curve`),
    its schedule and batch, and its seeds."""

    name: str
    scores: list[pd.DataFrame]
    curves: list[pd.DataFrame]
    iterations: int
    per_step: int
    seeds: tuple[int, ...]


def load_arm(name: str, run_dirs: Sequence[str | Path], seeds: Sequence[int], split: str,
             max_expressions: int | None, level: str = "pixel") -> Arm:
    """The :class:`Arm` of trained runs (one per seed), scored on ``split``."""
    cfgs = [read_run_config(r) for r in run_dirs]
    if len({(c.train.iterations, c.train.batch_size) for c in cfgs}) != 1:
        raise ValueError(f"the runs of {name} were trained with different budgets")
    return Arm(name, [expression_scores(r, split, max_expressions, level) for r in run_dirs],
               [learning_curve(r) for r in run_dirs], cfgs[0].train.iterations, cfgs[0].train.batch_size,
               tuple(seeds))


@dataclass
class ClaimResult:
    verdict: Verdict
    table: pd.DataFrame  # our estimates beside the paper's
    numbers: dict[str, Any] = field(default_factory=dict)  # for the chapter's prose


# ----------------------------------------------------------------------------------------
# helpers

def _resampler(frames: Sequence[pd.DataFrame], samples: int, seed: int) -> Resampler:
    """One resampler for frames that score the same expressions in the same order."""
    first = frames[0]
    for f in frames[1:]:
        if len(f) != len(first) or ("sent_id" in f and not np.array_equal(f["sent_id"].to_numpy(),
                                                                          first["sent_id"].to_numpy())):
            raise ValueError("the scores do not cover the same expressions in the same order")
    return Resampler(len(first), samples, seed)


def _arms_resampler(arms: Sequence[Arm], floor: pd.DataFrame, samples: int, seed: int) -> Resampler:
    return _resampler([*(f for a in arms for f in a.scores), floor], samples, seed)


def _stat(rs: Resampler, frames: Sequence[pd.DataFrame], metric, groups: Sequence[str] = ()) -> Stat:
    return rs.stat([score_columns(f, groups) for f in frames], metric)


def checks(rs: Resampler, arms: Sequence[Arm], floor: pd.DataFrame) -> list[ArmCheck]:
    """What the ``learned`` and ``converged`` rules see of each arm."""
    base = _stat(rs, [floor], cum_iou())
    out = []
    for a in arms:
        over = (_stat(rs, a.scores, cum_iou()) - base).estimate()
        curves = tuple(convergence(c["step"], c["IoU"], a.iterations) for c in a.curves)
        out.append(ArmCheck(a.name, a.iterations, a.per_step, a.seeds, over, curves))
    return out


def _judge(key: str, paper_text: str, ours: str, parts, arm_checks, untestable: str | None = None) -> Verdict:
    return judge(key, CLAIMS[key], paper_text, ours, parts, arm_checks, untestable)


def _seeds(frames: Sequence) -> str:
    return f"{len(frames)} seed{'s' if len(frames) != 1 else ''}"


def _row(name: str, est: Estimate, paper_value: float | None, arm: Arm, **extra: Any) -> dict[str, Any]:
    return {"model": name, "seeds": len(arm.scores), "steps": arm.iterations, "ours": est.point, "95% low": est.lo,
            "95% high": est.hi, "paper": paper_value, **extra}


def _budget_numbers(arms: Sequence[Arm]) -> dict[str, Any]:
    """The budget of a claim's arms for the prose (they share one in the book)."""
    steps = sorted({a.iterations for a in arms})
    return {"steps": steps[0] if len(steps) == 1 else float("nan"), "per_step": arms[0].per_step,
            "expressions_trained": arms[0].iterations * arms[0].per_step,
            "seeds": min(len(a.scores) for a in arms)}


def parts_table(verdict: Verdict) -> pd.DataFrame:
    """The verdict's parts: what is compared, ours with its interval, the paper's, the rule, the outcome."""
    return pd.DataFrame([{"part": p.what, "ours": p.ours.point if p.ours else np.nan,
                          "95% low": p.ours.lo if p.ours else np.nan, "95% high": p.ours.hi if p.ours else np.nan,
                          "paper": p.paper, "rule": p.rule, "outcome": p.label, "note": p.note}
                         for p in verdict.parts])


def arms_table(verdict: Verdict) -> pd.DataFrame:
    """The verdict's models as the gates see them: budget, seeds, IoU over the floor, and
    each seed's rise over the last fifth of its schedule."""
    return pd.DataFrame([{"model": a.name, "steps": a.iterations, "expressions per step": a.per_step,
                          "seeds": len(a.seeds), "IoU over the floor": a.over_floor,
                          "learned": a.learned, "rise over the last fifth": ", ".join(c.fmt() for c in a.curves),
                          "converged": a.converged} for a in verdict.arms])


# ----------------------------------------------------------------------------------------
# claim 1 and reading 1: Table 3(a)

def paper_attention() -> dict[str, float]:
    """What the paper's Table 3(a) says once set against uniform attention."""
    deep = paper.TABLE3A[1:]
    a_v = float(np.mean([r["a_v"] for r in deep]))
    a_l = float(np.mean([r["a_l"] for r in deep]))
    uniform = 100 * uniform_visual_share(PAPER_NV, PAPER_NL)
    out = {"a_v_all": float(np.mean([r["a_v"] for r in paper.TABLE3A])), "a_v_min": min(r["a_v"] for r in
                                                                                       paper.TABLE3A),
           "a_v_deep": a_v, "a_l_deep": a_l, "uniform_a_v": uniform, "excess": a_v - uniform,
           "uniform_a_l": 100 * PAPER_NL / (PAPER_NV + PAPER_NL + 1),
           # how much more one visual token gets than one word
           "token_ratio": (a_v / PAPER_NV) / (a_l / PAPER_NL),
           "a_v_first": paper.TABLE3A[0]["a_v"], "excess_first": paper.TABLE3A[0]["a_v"] - uniform,
           "nv": PAPER_NV, "nl": PAPER_NL, "tokens": PAPER_NV + PAPER_NL + 1}
    out["a_l_over_uniform"] = out["a_l_deep"] / out["uniform_a_l"]  # the words' share, as a fraction of uniform
    return out


def attention_columns(records: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-expression columns of :func:`restr.book.analysis.seed_attention_records` for the
    resampler: each layer's ``a_v``, ``a_l`` and ``a_v - uniform``; their means over all
    layers (``*_all``) and over the layers after the first (``*_deep``); the attended
    word count."""
    layers = attention_layers(records)
    deep = layers[1:] or layers
    u = records["uniform_a_v"].to_numpy(np.float64)
    cols = {"uniform_a_v": u, "attended_words": records["attended_words"].to_numpy(np.float64)}
    for k in layers:
        cols[f"a_v@{k}"] = records[f"a_v@{k}"].to_numpy(np.float64)
        cols[f"a_l@{k}"] = records[f"a_l@{k}"].to_numpy(np.float64)
        cols[f"excess@{k}"] = cols[f"a_v@{k}"] - u
    for what in ("a_v", "a_l", "excess"):
        cols[f"{what}_deep"] = np.mean([cols[f"{what}@{k}"] for k in deep], axis=0)
        cols[f"{what}_all"] = np.mean([cols[f"{what}@{k}"] for k in layers], axis=0)
    return cols


@dataclass
class _Attention:
    """Claim 1's and reading 1's shared estimates."""

    rs: Resampler
    layers: list[str]
    span: str  # the layers after the first, "f_2-f_4"
    mean: Any  # column name -> Stat of its mean over expressions
    ratio: Stat  # attention per visual token / per attended word, layers after the first
    table: pd.DataFrame


def _attention(records: Sequence[pd.DataFrame], num_visual: int, samples: int, seed: int) -> _Attention:
    layers = attention_layers(records[0])
    deep = layers[1:] or layers
    rs = Resampler(len(records[0]), samples, seed)
    cols = [attention_columns(r) for r in records]

    def mean(col: str) -> Stat:
        return rs.stat(cols, lambda s, n: np.asarray(s[col]) / n)

    ratio = rs.stat(cols, lambda s, n: (np.asarray(s["a_v_deep"]) / (n * num_visual))
                    / np.maximum(np.asarray(s["a_l_deep"]) / np.asarray(s["attended_words"]), 1e-12))
    p = paper_attention()
    rows = []
    for i, k in enumerate(layers):
        ref = paper.TABLE3A[i] if i < len(paper.TABLE3A) else None
        rows.append({"layer": k, "a_v (ours)": mean(f"a_v@{k}").estimate(), "uniform (ours)": mean("uniform_a_v").point,
                     "a_v - uniform (ours)": mean(f"excess@{k}").estimate(), "a_l (ours)": mean(f"a_l@{k}").point,
                     "a_v (paper)": ref["a_v"] if ref else np.nan, "a_l (paper)": ref["a_l"] if ref else np.nan,
                     "a_v - uniform (paper)": ref["a_v"] - p["uniform_a_v"] if ref else np.nan})
    span = f"f_{deep[0][2:]}-f_{deep[-1][2:]}" if len(deep) > 1 else deep[0]
    return _Attention(rs, layers, span, mean, ratio, pd.DataFrame(rows))


def _vme_checks(vme: Arm, floor: pd.DataFrame, samples: int, seed: int) -> list[ArmCheck]:
    return checks(_arms_resampler([vme], floor, samples, seed), [vme], floor)


def seed_attention(records: Sequence[pd.DataFrame], num_visual: int, vme: Arm, floor: pd.DataFrame,
                   samples: int = 1000, seed: int = 0) -> ClaimResult:
    """Claim 1. ``records``: per seed, :func:`restr.book.analysis.seed_attention_records` of the
    VME model (training expressions, the same ones for every seed); ``vme``: its arm (its
    validation scores and curves, for the gates). The share on the visual tokens, averaged
    over every layer, must lie above :data:`restr.book.verdict.BIASED_SHARE`; the per-token
    ratio and the uniform share (the token count) are shown beside it."""
    at = _attention(records, num_visual, samples, seed)
    share, r, u = at.mean("a_v_all").estimate(), at.ratio.estimate(), at.mean("uniform_a_v").point
    p = paper_attention()
    parts = [part("share of the seed's attention on the visual tokens, mean over the layers (%)", share,
                  p["a_v_all"], rule="share")]
    ours = (f"a_v {share.fmt(1)} % over the {len(at.layers)} layers (uniform over our tokens: {u:.1f} %); one visual "
            f"token gets {r.fmt(2)} x a word's attention ({_seeds(records)}, {at.rs.n} training expressions)")
    listed = ", ".join(f"{x['a_v']:.1f}" for x in paper.TABLE3A)
    paper_text = (f"a_v {listed} % in f_1-f_4 (mean "
                  f"{p['a_v_all']:.1f} %; uniform over 900 patches and 20 words: {p['uniform_a_v']:.1f} %); one patch "
                  f"gets {p['token_ratio']:.2f} x a word's attention")
    verdict = _judge("claim1", paper_text, ours, parts, _vme_checks(vme, floor, samples, seed))
    numbers = {"share": share.point, "share_lo": share.lo, "share_hi": share.hi, "uniform": u,
               "token_ratio": r.point, "token_ratio_lo": r.lo, "token_ratio_hi": r.hi, "expressions": at.rs.n,
               "num_visual": num_visual, **_budget_numbers([vme]), **{f"paper_{k}": v for k, v in p.items()}}
    return ClaimResult(verdict, at.table, numbers)


def beyond_uniform(records: Sequence[pd.DataFrame], num_visual: int, vme: Arm, floor: pd.DataFrame,
                   samples: int = 1000, seed: int = 0) -> ClaimResult:
    """Reading 1: the VME seed's visual share minus the uniform share, averaged over the
    layers after the first (where the paper's own numbers exceed uniform), above 0."""
    at = _attention(records, num_visual, samples, seed)
    e = at.mean("excess_deep").estimate()
    p = paper_attention()
    parts = [part(f"a_v - uniform share, mean over {at.span} (points)", e, p["excess"])]
    ours = (f"a_v - uniform {e.fmt(2, signed=True)} points over {at.span} (uniform "
            f"{at.mean('uniform_a_v').point:.1f} %; {_seeds(records)}, {at.rs.n} training expressions)")
    listed = ", ".join(f"{x['a_v']:.1f}" for x in paper.TABLE3A[1:])
    paper_text = (f"a_v {listed} % in f_2-f_4 against a uniform "
                  f"{p['uniform_a_v']:.1f} %: {p['excess']:+.2f} points")
    verdict = _judge("reading1", paper_text, ours, parts, _vme_checks(vme, floor, samples, seed))
    numbers = {"excess": e.point, "excess_lo": e.lo, "excess_hi": e.hi, "uniform": at.mean("uniform_a_v").point,
               "a_v_deep": at.mean("a_v_deep").point, "a_l_deep": at.mean("a_l_deep").point,
               "expressions": at.rs.n, **_budget_numbers([vme])}
    return ClaimResult(verdict, at.table, numbers)


# ----------------------------------------------------------------------------------------
# claim 2 and reading 2: Table 3(b)

VARIANTS = ("CME", "VME", "IME", "CME†")
_KEYS = {"CME": "cme", "VME": "vme", "IME": "ime", "CME†": "cme_dagger"}


def _variants(arms: Mapping[str, Arm], floor: pd.DataFrame, samples: int, seed: int):
    rs = _arms_resampler([arms[k] for k in VARIANTS], floor, samples, seed)
    iou = {k: _stat(rs, arms[k].scores, cum_iou()) for k in VARIANTS}
    ref = {k: paper.TABLE3B[k]["IoU"] for k in VARIANTS}
    est = {k: v.estimate() for k, v in iou.items()}
    table = pd.DataFrame([_row(k, est[k], ref[k], arms[k]) for k in VARIANTS])
    return rs, iou, ref, est, table


def fusion_ranking(arms: Mapping[str, Arm], floor: pd.DataFrame, samples: int = 1000, seed: int = 0) -> ClaimResult:
    """Claim 2. ``arms``: the four variants of Table 3(b) (keys VME, IME, CME, CME†),
    without the decoder, scored on the same validation expressions."""
    rs, iou, ref, est, table = _variants(arms, floor, samples, seed)
    pairs = (("CME", "VME"), ("CME", "IME"), ("VME", "IME"), ("CME†", "VME"), ("CME†", "IME"))
    parts = [part(f"{a} - {b} (IoU points)", iou[a] - iou[b], ref[a] - ref[b]) for a, b in pairs]
    ours = "; ".join(f"{k} {est[k]}" for k in VARIANTS) + f" ({_seeds(arms['CME'].scores)}, {rs.n} expressions)"
    paper_text = "; ".join(f"{k} {ref[k]:.2f}" for k in VARIANTS)
    verdict = _judge("claim2", paper_text, ours, parts, checks(rs, [arms[k] for k in VARIANTS], floor))
    numbers = {f"iou_{_KEYS[k]}": est[k].point for k in VARIANTS}
    numbers.update({f"{_KEYS[a]}_minus_{_KEYS[b]}": p.ours.point for (a, b), p in zip(pairs, parts)})
    numbers.update({"expressions": rs.n, **_budget_numbers(list(arms.values()))})
    return ClaimResult(verdict, table, numbers)


def dagger_equivalence(arms: Mapping[str, Arm], floor: pd.DataFrame, samples: int = 1000, seed: int = 0
                       ) -> ClaimResult:
    """Reading 2: CME-dagger within :data:`restr.book.verdict.MARGINAL` IoU point of CME."""
    rs, iou, ref, est, table = _variants(arms, floor, samples, seed)
    parts = [part(f"CME† - CME (IoU points, within ±{MARGINAL:g})", iou["CME†"] - iou["CME"],
                  ref["CME†"] - ref["CME"], rule="marginal")]
    ours = f"CME {est['CME']}, CME† {est['CME†']}: {parts[0].ours.fmt(2, signed=True)} points"
    paper_text = f"CME {ref['CME']:.2f}, CME† {ref['CME†']:.2f}: {ref['CME†'] - ref['CME']:+.2f} points"
    verdict = _judge("reading2", paper_text, ours, parts, checks(rs, [arms["CME"], arms["CME†"]], floor))
    return ClaimResult(verdict, table.iloc[[0, 3]].reset_index(drop=True),
                       {"dagger_minus_cme": parts[0].ours.point, **_budget_numbers([arms["CME"], arms["CME†"]])})


# ----------------------------------------------------------------------------------------
# claims 3, 4, 5 and reading 3: Table 4

def _table4(layers: int, shared: bool, decoder: bool) -> dict[str, Any]:
    return next(r for r in paper.TABLE4 if (r["layers"], r["shared"], r["decoder"]) == (layers, shared, decoder))


def _iou_table(rs: Resampler, arms: Mapping[Any, Arm], refs: Mapping[Any, float]):
    iou = {k: _stat(rs, a.scores, cum_iou()) for k, a in arms.items()}
    est = {k: v.estimate() for k, v in iou.items()}
    table = pd.DataFrame([_row(a.name, est[k], refs.get(k), a) for k, a in arms.items()])
    return iou, est, table


def fusion_depth(arms: Mapping[int, Arm | None], floor: pd.DataFrame, samples: int = 1000,
                 seed: int = 0) -> ClaimResult:
    """Claim 3. ``arms``: the CME without the decoder and without sharing at 2, 4 and 6
    fusion layers (6 may be None: a profile that does not train it). 4 - 2 must lie above
    +MARGINAL ("fairly"), 6 - 4 inside +-MARGINAL ("marginally")."""
    have = {k: arms[k] for k in (2, 4, 6) if arms.get(k) is not None}
    rs = _arms_resampler(list(have.values()), floor, samples, seed)
    ref = {k: _table4(k, False, False)["IoU"] for k in (2, 4, 6)}
    iou, est, table = _iou_table(rs, have, ref)
    parts = [part("4 layers - 2 layers (IoU points)", iou[4] - iou[2], ref[4] - ref[2], rule="fairly")]
    if 6 in iou:
        parts.append(part("6 layers - 4 layers (IoU points)", iou[6] - iou[4], ref[6] - ref[4], rule="marginal"))
    else:
        parts.append(missing_part("6 layers - 4 layers (IoU points)", ref[6] - ref[4],
                                  "this profile does not train 6 fusion layers"))
    ours = "; ".join(f"{k} layers {est[k]}" for k in have) + f" ({_seeds(have[4].scores)}, {rs.n} expressions)"
    paper_text = "; ".join(f"{k} layers {ref[k]:.2f}" for k in (2, 4, 6))
    verdict = _judge("claim3", paper_text, ours, parts, checks(rs, list(have.values()), floor))
    numbers = {f"iou_{k}": est[k].point for k in have}
    numbers.update({"four_minus_two": parts[0].ours.point, "expressions": rs.n, "paper_four_minus_two": ref[4] - ref[2],
                    "paper_six_minus_four": ref[6] - ref[4], **_budget_numbers(list(have.values()))})
    if 6 in iou:
        numbers["six_minus_four"] = parts[1].ours.point
    return ClaimResult(verdict, table, numbers)


def decoder_gain(arms: Mapping[tuple[int, bool], Arm], floor: pd.DataFrame, samples: int = 1000,
                 seed: int = 0) -> ClaimResult:
    """Claim 4. ``arms``: keys ``(layers, decoder)`` for 2 and 4 fusion layers with and
    without the decoder. The gain at 4 layers above 0; the gain at 4 minus the gain at 2
    above 0 (the interaction); the gain at 2 inside +-MARGINAL ("marginal")."""
    keys = [(2, False), (2, True), (4, False), (4, True)]
    rs = _arms_resampler([arms[k] for k in keys], floor, samples, seed)
    ref = {k: _table4(k[0], False, k[1])["IoU"] for k in keys}
    iou, est, table = _iou_table(rs, {k: arms[k] for k in keys}, ref)
    gain = {n: iou[(n, True)] - iou[(n, False)] for n in (2, 4)}
    paper_gain = {n: ref[(n, True)] - ref[(n, False)] for n in (2, 4)}
    parts = [part("decoder gain at 4 layers (IoU points)", gain[4], paper_gain[4]),
             part("gain at 4 layers - gain at 2 layers (IoU points)", gain[4] - gain[2], paper_gain[4] - paper_gain[2]),
             part("decoder gain at 2 layers (IoU points)", gain[2], paper_gain[2], rule="marginal")]
    g = {n: v.estimate() for n, v in gain.items()}
    ours = (f"gain {g[4].fmt(2, signed=True)} at 4 layers, {g[2].fmt(2, signed=True)} at 2 "
            f"({_seeds(arms[(4, True)].scores)}, {rs.n} expressions)")
    paper_text = f"gain {paper_gain[4]:+.2f} at 4 layers, {paper_gain[2]:+.2f} at 2"
    verdict = _judge("claim4", paper_text, ours, parts, checks(rs, [arms[k] for k in keys], floor))
    numbers = {"gain4": g[4].point, "gain4_lo": g[4].lo, "gain4_hi": g[4].hi, "gain2": g[2].point,
               "gain2_lo": g[2].lo, "gain2_hi": g[2].hi, "interaction": parts[1].ours.point,
               "iou_on": est[(4, True)].point, "iou_off": est[(4, False)].point, "paper_gain4": paper_gain[4],
               "paper_gain2": paper_gain[2], "expressions": rs.n, **_budget_numbers([arms[k] for k in keys])}
    return ClaimResult(verdict, table, numbers)


def weight_sharing(pairs: Mapping[str, tuple[Arm, Arm | None]], floor: pd.DataFrame, samples: int = 1000,
                   seed: int = 0) -> ClaimResult:
    """Claim 5. ``pairs``: Table 4's rows with and without sharing, as ``{label: (shared,
    unshared)}`` (``"4 layers, decoder"``, ``"6 layers"``; a missing shared model is None).
    Each ``shared - unshared`` must lie above -MARGINAL ("marginal" degradation)."""
    present = {k: v for k, v in pairs.items() if v[0] is not None}
    arms = [a for k in present for a in present[k]]
    rs = _arms_resampler(arms, floor, samples, seed)
    paper_rows = {"4 layers, decoder": (4, True), "6 layers": (6, False)}
    parts, rows = [], []
    for label, (shared, unshared) in pairs.items():
        layers, dec = paper_rows[label]
        ref = _table4(layers, True, dec)["IoU"] - _table4(layers, False, dec)["IoU"]
        if shared is None:
            parts.append(missing_part(f"shared - unshared, {label} (IoU points)", ref, "not trained in this profile"))
            continue
        s, u = _stat(rs, shared.scores, cum_iou()), _stat(rs, unshared.scores, cum_iou())
        parts.append(part(f"shared - unshared, {label} (IoU points)", s - u, ref, rule="marginal loss"))
        rows += [_row(shared.name, s.estimate(), _table4(layers, True, dec)["IoU"], shared),
                 _row(unshared.name, u.estimate(), _table4(layers, False, dec)["IoU"], unshared)]
    ours = "; ".join(f"{label} {p.ours.fmt(2, signed=True)}" for label, p in zip(pairs, parts)
                     if p.ours is not None) + f" points with sharing ({rs.n} expressions)"
    paper_text = "4 layers with the decoder 54.07 against 54.48 (-0.41); 6 layers 52.59 against 52.84 (-0.25)"
    verdict = _judge("claim5", paper_text, ours, parts, checks(rs, arms, floor))
    numbers = {f"loss_{i}": p.ours.point for i, p in enumerate(parts) if p.ours is not None}
    numbers.update({"expressions": rs.n, **_budget_numbers(arms)})
    return ClaimResult(verdict, pd.DataFrame(rows), numbers)


def _precision_rows(rs: Resampler, on: Arm, off: Arm, p_on: dict, p_off: dict):
    rows, prec = [], {}
    for x in ("0.5", "0.6", "0.7", "0.8", "0.9"):
        s_on, s_off = _stat(rs, on.scores, mean_of(f"hit@{x}")), _stat(rs, off.scores, mean_of(f"hit@{x}"))
        prec[x] = (s_on, s_off)
        rows.append({"metric": f"Prec@{x}", "with decoder": s_on.point, "without": s_off.point,
                     "gain": (s_on - s_off).estimate(), "relative gain": relative_gain(s_on, s_off).estimate(),
                     "paper with": p_on[f"prec@{x}"], "paper without": p_off[f"prec@{x}"]})
    return rows, prec


def _relative(on: float, off: float) -> float:
    """:func:`restr.book.verdict.relative_gain` of two plain numbers."""
    return (on - off) / (on + off) if on + off > 0 else 0.0


def decoder_precision(on: Arm, off: Arm, floor: pd.DataFrame, samples: int = 1000, seed: int = 0,
                      layers: int = 4) -> ClaimResult:
    """Reading 3: the decoder's relative gain at Prec@0.9 minus at Prec@0.5 above 0, for
    the CME with ``layers`` fusion layers with (``on``) and without (``off``) the decoder."""
    rs = _arms_resampler([on, off], floor, samples, seed)
    p_on, p_off = _table4(layers, False, True), _table4(layers, False, False)
    rows, prec = _precision_rows(rs, on, off, p_on, p_off)
    table = pd.DataFrame(rows)
    table["paper relative gain"] = [_relative(a, b) for a, b in zip(table["paper with"], table["paper without"])]
    paper_rel = table["paper relative gain"].to_numpy()
    hits = float(sum(np.mean([(f["iou"] >= 0.9).sum() for f in arm.scores]) for arm in (on, off)))
    what = "relative gain at Prec@0.9 - at Prec@0.5"
    if hits < MIN_HITS:
        parts = [missing_part(what, paper_rel[4] - paper_rel[0],
                              f"{hits:.0f} expressions reach IoU 0.9 over the two models, fewer than {MIN_HITS}")]
    else:
        parts = [part(what, relative_gain(*prec["0.9"]) - relative_gain(*prec["0.5"]), paper_rel[4] - paper_rel[0])]
    rel9, rel5 = relative_gain(*prec["0.9"]).estimate(), relative_gain(*prec["0.5"]).estimate()
    ours = (f"relative gain at Prec@0.9 {rel9.fmt(2, signed=True)}, at Prec@0.5 {rel5.fmt(2, signed=True)} "
            f"({_seeds(on.scores)}, {rs.n} expressions)")
    paper_text = (f"Prec@0.9 {p_off['prec@0.9']:.2f} -> {p_on['prec@0.9']:.2f} (relative gain {paper_rel[4]:+.2f}, "
                  f"at Prec@0.5 {paper_rel[0]:+.2f})")
    verdict = _judge("reading3", paper_text, ours, parts, checks(rs, [on, off], floor))
    numbers = {"prec9_on": prec["0.9"][0].point, "prec9_off": prec["0.9"][1].point, "hits9": hits,
               "rel9": rel9.point, "rel5": rel5.point, **_budget_numbers([on, off])}
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# claim 6: Table 2

SYNTHREF_LENGTH = ("in version 1 of the embedded data, long expressions are short ones with relations to uniquely "
                   "described landmarks and regions added, so they carry more identifying information, while "
                   "RefCOCO's long expressions describe harder targets")
NO_BASELINE = "the convolutional baseline is not trained in this build"


def _drop(rs: Resampler, frames: Sequence[pd.DataFrame], first: str, last: str) -> Stat:
    return _stat(rs, frames, lambda s, n: cum_iou(first)(s, n) - cum_iou(last)(s, n), [first, last])


def length_trend(main: Arm, floor: pd.DataFrame, dataset: str, baseline: Arm | None = None, samples: int = 1000,
                 seed: int = 0, untestable: str | None = None) -> ClaimResult:
    """Claim 6. ``main``: the main model on the validation expressions; ``baseline``: the
    convolutional fusion on the same expressions (None until it is trained); ``dataset``
    names the length buckets (Table 2's). ``untestable``: why the data cannot test the
    claim as the paper meant it."""

    labels = bucket_labels(dataset)
    ref_name = dataset if dataset in paper.TABLE2_RESTR else "refcoco"
    ref = paper.TABLE2_RESTR[ref_name]
    arms = [main] + ([baseline] if baseline is not None else [])
    rs = _arms_resampler(arms, floor, samples, seed)
    rows = []
    for label in labels:
        row = {"bucket": label, "expressions": int((main.scores[0]["bucket"] == label).sum()),
               "IoU (ours)": _stat(rs, main.scores, cum_iou(label), [label]).estimate()}
        if baseline is not None:
            row["IoU (convolutional baseline)"] = _stat(rs, baseline.scores, cum_iou(label), [label]).estimate()
        row[f"IoU (paper, {ref_name})"] = ref.get(label, np.nan)
        rows.append(row)
    first, last = labels[0], labels[-1]
    drop = _drop(rs, main.scores, first, last)
    parts = [part(f"IoU of {first} words - of {last} words (points)", drop, ref[first] - ref[last])]
    what = "the baseline's drop - ReSTR's drop (points)"
    acm = 13.71 - 6.81  # Sec. 4.2: ACM's drop minus ReSTR's, G-Ref val
    if baseline is None:
        parts.append(missing_part(what, acm, NO_BASELINE))
    else:
        parts.append(part(what, _drop(rs, baseline.scores, first, last) - drop, acm))
    sizes = ", ".join(f"{r['bucket']}: {r['expressions']}" for r in rows)
    ours = (f"{first} words {rows[0]['IoU (ours)']}, {last} words {rows[-1]['IoU (ours)']}: drop "
            f"{drop.estimate().fmt(1, signed=True)} points (expressions per bucket {sizes}; {_seeds(main.scores)})")
    paper_text = (f"{ref_name} val: {' / '.join(f'{ref[k]:.2f}' for k in labels)} for {' / '.join(labels)} words, "
                  f"drop {ref[first] - ref[last]:+.2f}; G-Ref: ReSTR drops 6.81, ACM 13.71")
    verdict = _judge("claim6", paper_text, ours, parts, checks(rs, arms, floor), untestable)
    d = drop.estimate()
    overall = _stat(rs, main.scores, cum_iou()).estimate()
    numbers = {"drop": d.point, "drop_lo": d.lo, "drop_hi": d.hi, "paper_drop": ref[first] - ref[last],
               "iou": overall.point, "iou_lo": overall.lo, "iou_hi": overall.hi, "expressions": rs.n,
               **{f"iou_{i}": r["IoU (ours)"].point for i, r in enumerate(rows)},
               **{f"size_{i}": r["expressions"] for i, r in enumerate(rows)}, **_budget_numbers([main])}
    return ClaimResult(verdict, pd.DataFrame(rows), numbers)


# ----------------------------------------------------------------------------------------
# claim 7: Fig. 4

def patch_to_pixel(main: Arm, patch: Sequence[pd.DataFrame], ceiling: pd.DataFrame, floor: pd.DataFrame,
                   samples: int = 1000, seed: int = 0) -> ClaimResult:
    """Claim 7. ``main``: the main model's arm (its final masks); ``patch``: per seed, the
    scores of its own patch-level map upsampled (:func:`restr.book.analysis.expression_scores`
    with ``level="patch"``); ``ceiling``: the scores of a perfect patch-level map
    (:func:`restr.book.analysis.patch_ceiling_scores`), all on the same expressions. The pixel
    mask must beat the ceiling: detail below the patch grid, which no patch-level map
    holds, comes from the decoder."""
    rs = _resampler([*main.scores, *patch, ceiling, floor], samples, seed)
    cols = []
    for px, pt in zip(main.scores, patch, strict=True):
        c = score_columns(px)
        c["intersection|patch"] = pt["intersection"].to_numpy(np.float64)
        c["union|patch"] = pt["union"].to_numpy(np.float64)
        c["intersection|ceiling"] = ceiling["intersection"].to_numpy(np.float64)
        c["union|ceiling"] = ceiling["union"].to_numpy(np.float64)
        cols.append(c)
    pix = rs.stat(cols, cum_iou()).estimate()
    pat = rs.stat(cols, cum_iou("patch")).estimate()
    top = rs.stat(cols, cum_iou("ceiling")).estimate()
    over_patch = rs.stat(cols, lambda s, n: cum_iou()(s, n) - cum_iou("patch")(s, n)).estimate()
    over_ceiling = rs.stat(cols, lambda s, n: cum_iou()(s, n) - cum_iou("ceiling")(s, n))
    parts = [part("pixel-level IoU - the patch grid's ceiling (points)", over_ceiling, None)]
    table = pd.DataFrame([{"prediction": "patch-level (Fig. 4 b), upsampled", "IoU": pat},
                          {"prediction": "a perfect patch-level map (the patch grid's ceiling)", "IoU": top},
                          {"prediction": "pixel-level (Fig. 4 c), the decoder's", "IoU": pix}])
    ours = (f"patch-level {pat}, ceiling of any patch-level map {top}, pixel-level {pix}: "
            f"{parts[0].ours.fmt(1, signed=True)} points over the ceiling ({_seeds(main.scores)})")
    paper_text = "shown, not measured (Fig. 4)"
    verdict = _judge("claim7", paper_text, ours, parts, checks(rs, [main], floor))
    g = parts[0].ours
    numbers = {"pixel": pix.point, "patch": pat.point, "ceiling": top.point, "over_patch": over_patch.point,
               "over_patch_lo": over_patch.lo, "over_patch_hi": over_patch.hi, "gain": g.point, "gain_lo": g.lo,
               "gain_hi": g.hi, "expressions": rs.n, **_budget_numbers([main])}
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# M3Att's claims (chapter 7): one component changed at a time from the full model

M3ATT_ARMS = ("M3Att", "generic (LAV)", "no IMI", "IMI*", "no LFR")


def _m3att_paper() -> dict[str, float]:
    t = paper.M3ATT_TABLE2
    iou = {k: v[0] for k, v in t.items()}
    return {"over_generic": iou["baseline (M3Att)"] - iou["baseline (generic LAV)"],
            "imi": iou["+ IMI"] - iou["baseline (M3Att)"], "imi_same": iou["+ IMI*"] - iou["baseline (M3Att)"],
            "imi_over_same": iou["+ IMI"] - iou["+ IMI*"], "lfr": iou["ours (+ IMI + LFR)"] - iou["+ IMI"]}


def m3att_claims(arms: Mapping[str, Arm], floor: pd.DataFrame, samples: int = 1000, seed: int = 0
                 ) -> list[ClaimResult]:
    """M3Att's claims 1-3 from its arms (keys of :data:`M3ATT_ARMS`): the full model against
    generic attention (above +MARGINAL: "greatly"), without IMI and with IMI* (both below
    the full model), and without LFR (below it). The paper's Table II adds the components
    one by one; the book removes one at a time from the full model (the protocol says so)."""
    rs = _arms_resampler([arms[k] for k in M3ATT_ARMS], floor, samples, seed)
    iou = {k: _stat(rs, arms[k].scores, cum_iou()) for k in M3ATT_ARMS}
    est = {k: v.estimate() for k, v in iou.items()}
    p = _m3att_paper()
    table = pd.DataFrame([_row(k, est[k], None, arms[k]) for k in M3ATT_ARMS])
    full = iou["M3Att"]
    specs = {
        "m3att1": ([part("M3Att - generic attention (IoU points)", full - iou["generic (LAV)"], p["over_generic"],
                         rule="fairly")], ["M3Att", "generic (LAV)"],
                   f"M3Att over generic attention {p['over_generic']:+.2f} (Table II, #1 - #0)"),
        "m3att2": ([part("M3Att - without IMI (IoU points)", full - iou["no IMI"], p["imi"]),
                    part("M3Att - with IMI* (IoU points)", full - iou["IMI*"], p["imi_over_same"])],
                   ["M3Att", "no IMI", "IMI*"],
                   f"IMI {p['imi']:+.2f}, IMI* {p['imi_same']:+.2f} over #1 (Table II)"),
        "m3att3": ([part("M3Att - without LFR (IoU points)", full - iou["no LFR"], p["lfr"])], ["M3Att", "no LFR"],
                   f"LFR {p['lfr']:+.2f} (Table II, #4 - #2)"),
    }
    results = []
    for key, (parts, names, paper_text) in specs.items():
        ours = "; ".join(f"{n} {est[n]}" for n in names) + f" ({_seeds(arms['M3Att'].scores)}, {rs.n} expressions)"
        verdict = _judge(key, paper_text, ours, parts, checks(rs, [arms[n] for n in names], floor))
        numbers = {f"iou_{i}": est[n].point for i, n in enumerate(names)}
        numbers.update({f"diff_{i}": pt.ours.point for i, pt in enumerate(parts)})
        numbers.update({"expressions": rs.n, **_budget_numbers([arms[n] for n in names])})
        results.append(ClaimResult(verdict, table, numbers))
    return results


def m3att_untrained(reason: str) -> list[ClaimResult]:
    """M3Att's claims in a build that does not train its arms: each reads inconclusive,
    with ``reason``, beside the paper's numbers."""
    p = _m3att_paper()
    papers = {"m3att1": f"M3Att over generic attention {p['over_generic']:+.2f} (Table II, #1 - #0)",
              "m3att2": f"IMI {p['imi']:+.2f}, IMI* {p['imi_same']:+.2f} over #1 (Table II)",
              "m3att3": f"LFR {p['lfr']:+.2f} (Table II, #4 - #2)"}
    out = []
    for key, paper_text in papers.items():
        st = CLAIMS[key]
        verdict = Verdict(key, st.text, st.quote, st.source, paper_text, "not measured in this build", INCONCLUSIVE,
                          f"not trained here: {reason}", (), (), INCONCLUSIVE, "not trained here")
        out.append(ClaimResult(verdict, pd.DataFrame(), {}))
    return out


# ----------------------------------------------------------------------------------------
# into the pages

def glue_result(result: ClaimResult) -> None:
    """Glue a claim's verdict for its chapter and the status page: ``<key>_statement``,
    ``_quote``, ``_source``, ``_paper``, ``_ours``, ``_verdict`` (with its tag),
    ``_budget``, ``_why`` (text) and ``<key>_<number>``."""

    v = result.verdict
    for name in ("statement", "quote", "source", "paper", "ours", "why"):
        glue(f"{v.key}_{name}", getattr(v, name))
    glue(f"{v.key}_verdict", v.text)
    glue(f"{v.key}_budget", v.budgets() or "not trained in this build")
    glue_values(v.key, result.numbers)


def group_table(scores: Sequence[pd.DataFrame], column: str, labels: Sequence[Any], samples: int = 1000,
                seed: int = 0) -> pd.DataFrame:
    """Cumulative IoU (%) with its interval per value of ``column`` of the scores frames
    (the same expressions per seed), and how many expressions each value holds."""
    rs = _resampler(list(scores), samples, seed)
    keyed = [f.assign(**{column: f[column].astype(str)}) for f in scores]
    rows = []
    for label in labels:
        est = rs.stat([score_columns(f, [str(label)], column) for f in keyed], cum_iou(str(label))).estimate()
        rows.append({column: label, "expressions": int((keyed[0][column] == str(label)).sum()), "IoU": est})
    return pd.DataFrame(rows)


def splits_table(scores_by_split: Mapping[str, Sequence[pd.DataFrame]], samples: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """One model on several splits (``{"val": [seed frames], "testA": [...]}``): cumulative
    IoU (%) with its 95 % interval (expressions and seeds resampled, each split on its
    own), mean IoU, Prec@0.5 and Prec@0.9 (seed means), expressions and seeds. Reported,
    not judged: the protocol judges on val only."""
    rows = []
    for split, frames in scores_by_split.items():
        rs = _resampler(list(frames), samples, seed)
        summary = scores_summary(frames)
        rows.append({"split": split, "expressions": len(frames[0]), "seeds": len(frames),
                     "IoU": _stat(rs, frames, cum_iou()).estimate(), "mean IoU": summary["mean IoU"],
                     "prec@0.5": summary["prec@0.5"], "prec@0.9": summary["prec@0.9"]})
    return pd.DataFrame(rows)
