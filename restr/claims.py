"""The paper's six learned claims, each judged from per-expression scores (restr.verdict).

Every function takes the scores of the models a claim compares, one pandas frame per
training seed (:func:`restr.analysis.expression_scores`; all scored on the same
expressions), and the whole-image baseline for those expressions
(:func:`restr.analysis.whole_image_scores`, the ``learned`` rule's floor), and returns a
:class:`ClaimResult`: the verdict, a table of our estimates beside the paper's numbers,
and named numbers for the chapter's prose (glued into the page, never typed).

=====  =====================================================  ===========================
claim  statement                                              function
=====  =====================================================  ===========================
1      VME's seed attends to the image more than uniform      :func:`seed_attention`
2      CME > VME > IME, CME-dagger within 0.5 IoU of CME      :func:`fusion_ranking`
3      the decoder helps, most at Prec@0.9                    :func:`decoder_gain`
4      four fusion layers beat two; six add little            :func:`fusion_depth`
5      IoU falls as expressions get longer                    :func:`length_trend`
6      the decoder refines the patch-level prediction         :func:`patch_to_pixel`
=====  =====================================================  ===========================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import paper
from .analysis import attention_layers, score_columns, uniform_visual_share
from .verdict import (MIN_HITS, Estimate, Resampler, Stat, Verdict, cum_iou, judge, mean_of, missing_part,
                      part, relative_gain)

STATEMENTS = {
    1: "VME's seed attends to the image more than uniform attention would (Table 3(a))",
    2: "CME > VME > IME, and CME† within 0.5 IoU of CME (Table 3(b), without the decoder)",
    3: "The decoder helps, most at Prec@0.9 (Table 4, 4 fusion layers)",
    4: "Four fusion layers beat two; six add little (Table 4, without the decoder)",
    5: "IoU falls as expressions get longer (Table 2)",
    6: "The decoder turns the patch-level prediction into a better pixel-level one (Fig. 4)",
}
EQUIVALENCE_MARGIN = 0.5  # claim 2: CME-dagger "within 0.5 IoU" of CME
PAPER_NV, PAPER_NL = 900, 20  # Table 3(a): 480 x 480 input, P = 16, 20 word positions

Frames = Sequence[pd.DataFrame]  # one scores frame per training seed


@dataclass
class ClaimResult:
    verdict: Verdict
    table: pd.DataFrame  # our estimates beside the paper's
    numbers: dict[str, float] = field(default_factory=dict)  # for the chapter's prose


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


def _stat(rs: Resampler, frames: Frames, metric, groups: Sequence[str] = ()) -> Stat:
    return rs.stat([score_columns(f, groups) for f in frames], metric)


def learned(rs: Resampler, scores: Mapping[str, Frames], baseline: pd.DataFrame) -> dict[str, Estimate]:
    """Each model's cumulative IoU minus the whole-image baseline's (the ``learned`` rule)."""
    base = _stat(rs, [baseline], cum_iou())
    return {name: (_stat(rs, frames, cum_iou()) - base).estimate() for name, frames in scores.items()}


def _seeds(frames: Frames) -> str:
    return f"{len(frames)} seed{'s' if len(frames) != 1 else ''}"


def _row(name: str, est: Estimate, paper_value: float | None, seeds: int, **extra: Any) -> dict[str, Any]:
    return {"model": name, "seeds": seeds, "ours": est.point, "95% low": est.lo, "95% high": est.hi,
            "paper": paper_value, **extra}


def parts_table(verdict: Verdict) -> pd.DataFrame:
    """The verdict's parts: what is compared, ours with its interval, the paper's, the rule, the outcome."""
    return pd.DataFrame([{"part": p.what, "ours": p.ours.point if p.ours else np.nan,
                          "95% low": p.ours.lo if p.ours else np.nan, "95% high": p.ours.hi if p.ours else np.nan,
                          "paper": p.paper, "rule": p.rule, "outcome": p.label, "note": p.note}
                         for p in verdict.parts])


# ----------------------------------------------------------------------------------------
# claim 1: Table 3(a)

def paper_attention() -> dict[str, float]:
    """What the paper's Table 3(a) says once set against uniform attention."""
    deep = paper.TABLE3A[1:]
    a_v = float(np.mean([r["a_v"] for r in deep]))
    a_l = float(np.mean([r["a_l"] for r in deep]))
    uniform = 100 * uniform_visual_share(PAPER_NV, PAPER_NL)
    out = {"a_v_deep": a_v, "a_l_deep": a_l, "uniform_a_v": uniform, "excess": a_v - uniform,
           "uniform_a_l": 100 * PAPER_NL / (PAPER_NV + PAPER_NL + 1),
           # how much more one visual token gets than one word
           "token_ratio": (a_v / PAPER_NV) / (a_l / PAPER_NL),
           "a_v_first": paper.TABLE3A[0]["a_v"], "excess_first": paper.TABLE3A[0]["a_v"] - uniform,
           "nv": PAPER_NV, "nl": PAPER_NL, "tokens": PAPER_NV + PAPER_NL + 1}
    out["a_l_over_uniform"] = out["a_l_deep"] / out["uniform_a_l"]  # the words' share, as a fraction of uniform
    return out


def attention_columns(records: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-expression columns of :func:`restr.analysis.seed_attention_records` for the
    resampler: each layer's ``a_v``, ``a_l`` and ``a_v - uniform``; their means over the
    layers after the first (``*_deep``); the attended word count."""
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
    return cols


def seed_attention(records: Frames, num_visual: int, vme_scores: Frames, baseline: pd.DataFrame,
                   samples: int = 1000, seed: int = 0) -> ClaimResult:
    """Claim 1. ``records``: per seed, :func:`restr.analysis.seed_attention_records` of the
    VME model (training expressions, the same ones for every seed); ``vme_scores`` and
    ``baseline``: its validation scores and the whole-image baseline (``learned``)."""
    layers = attention_layers(records[0])
    deep = layers[1:] or layers
    rs = Resampler(len(records[0]), samples, seed)
    cols = [attention_columns(r) for r in records]

    def mean(col: str) -> Stat:
        return rs.stat(cols, lambda s, n: np.asarray(s[col]) / n)

    excess = mean("excess_deep")
    # attention per visual token over attention per attended word (sums over expressions)
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
    table = pd.DataFrame(rows)
    e, r = excess.estimate(), ratio.estimate()
    span = f"f_{deep[0][2:]}-f_{deep[-1][2:]}" if len(deep) > 1 else deep[0]
    parts = [part(f"a_v - uniform share, mean over {span} (points)", e, p["excess"])]
    rs_val = _resampler([*vme_scores, baseline], samples, seed)
    ours = (f"a_v - uniform {e.fmt(2, signed=True)} points over {span} (uniform {mean('uniform_a_v').point:.1f} %); "
            f"a visual token gets {r.fmt(2)} x a word's attention ({_seeds(records)}, {rs.n} expressions)")
    deep_paper = ", ".join(f"{x['a_v']:.1f}" for x in paper.TABLE3A[1:])
    paper_text = (f"a_v {deep_paper} % in f_2-f_4 against a uniform "
                  f"{p['uniform_a_v']:.1f} %: {p['excess']:+.2f} points; a visual token gets {p['token_ratio']:.2f} x "
                  f"a word's attention")
    verdict = judge(1, STATEMENTS[1], paper_text, ours, parts, learned(rs_val, {"the VME model": vme_scores}, baseline))
    numbers = {"excess": e.point, "excess_lo": e.lo, "excess_hi": e.hi, "uniform": mean("uniform_a_v").point,
               "a_v_deep": mean("a_v_deep").point, "a_l_deep": mean("a_l_deep").point, "token_ratio": r.point,
               "token_ratio_lo": r.lo, "token_ratio_hi": r.hi, "seeds": len(records), "expressions": rs.n,
               "num_visual": num_visual, **{f"paper_{k}": v for k, v in p.items()}}
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# claim 2: Table 3(b)

VARIANTS = ("CME", "VME", "IME", "CME†")


def fusion_ranking(scores: Mapping[str, Frames], baseline: pd.DataFrame, samples: int = 1000, seed: int = 0,
                   margin: float = EQUIVALENCE_MARGIN) -> ClaimResult:
    """Claim 2. ``scores``: the four variants of Table 3(b) (keys VME, IME, CME, CME†),
    without the decoder, on the same validation expressions."""
    rs = _resampler([*(f for k in VARIANTS for f in scores[k]), baseline], samples, seed)
    iou = {k: _stat(rs, scores[k], cum_iou()) for k in VARIANTS}
    ref = {k: paper.TABLE3B[k]["IoU"] for k in VARIANTS}
    parts = [
        part("CME - VME (IoU points)", iou["CME"] - iou["VME"], ref["CME"] - ref["VME"]),
        part("VME - IME (IoU points)", iou["VME"] - iou["IME"], ref["VME"] - ref["IME"]),
        part(f"CME† - CME (IoU points, within ±{margin:g})", iou["CME†"] - iou["CME"], ref["CME†"] - ref["CME"],
             rule="within", margin=margin),
    ]
    est = {k: v.estimate() for k, v in iou.items()}
    table = pd.DataFrame([_row(k, est[k], ref[k], len(scores[k])) for k in VARIANTS])
    ours = "; ".join(f"{k} {est[k]}" for k in VARIANTS) + f" ({_seeds(scores['CME'])}, {rs.n} expressions)"
    paper_text = "; ".join(f"{k} {ref[k]:.2f}" for k in VARIANTS)
    verdict = judge(2, STATEMENTS[2], paper_text, ours, parts, learned(rs, {k: scores[k] for k in VARIANTS}, baseline))
    keys = {"CME": "cme", "VME": "vme", "IME": "ime", "CME†": "cme_dagger"}
    numbers = {f"iou_{keys[k]}": est[k].point for k in VARIANTS}
    numbers.update({"cme_minus_vme": parts[0].ours.point, "vme_minus_ime": parts[1].ours.point,
                    "dagger_minus_cme": parts[2].ours.point, "expressions": rs.n, "seeds": len(scores["CME"])})
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# claim 3: Table 4, the decoder

def _relative(on: float, off: float) -> float:
    """:func:`restr.verdict.relative_gain` of two plain numbers."""
    return (on - off) / (on + off) if on + off > 0 else 0.0


def _table4(layers: int, shared: bool, decoder: bool) -> dict[str, Any]:
    return next(r for r in paper.TABLE4 if (r["layers"], r["shared"], r["decoder"]) == (layers, shared, decoder))


def decoder_gain(on: Frames, off: Frames, baseline: pd.DataFrame, samples: int = 1000, seed: int = 0,
                 layers: int = 4) -> ClaimResult:
    """Claim 3. ``on`` / ``off``: the CME with ``layers`` fusion layers with and without the
    decoder, on the same validation expressions."""
    rs = _resampler([*on, *off, baseline], samples, seed)
    p_on, p_off = _table4(layers, False, True), _table4(layers, False, False)
    rows, prec = [], {}
    for x in ("0.5", "0.6", "0.7", "0.8", "0.9"):
        s_on, s_off = _stat(rs, on, mean_of(f"hit@{x}")), _stat(rs, off, mean_of(f"hit@{x}"))
        prec[x] = (s_on, s_off)
        rows.append({"metric": f"Prec@{x}", "with decoder": s_on.point, "without": s_off.point,
                     "gain": (s_on - s_off).estimate(), "relative gain": relative_gain(s_on, s_off).estimate(),
                     "paper with": p_on[f"prec@{x}"], "paper without": p_off[f"prec@{x}"]})
    iou_on, iou_off = _stat(rs, on, cum_iou()), _stat(rs, off, cum_iou())
    rows.append({"metric": "IoU", "with decoder": iou_on.point, "without": iou_off.point,
                 "gain": (iou_on - iou_off).estimate(), "relative gain": relative_gain(iou_on, iou_off).estimate(),
                 "paper with": p_on["IoU"], "paper without": p_off["IoU"]})
    table = pd.DataFrame(rows)
    table["paper relative gain"] = [_relative(a, b) for a, b in zip(table["paper with"], table["paper without"])]
    paper_rel = table["paper relative gain"].to_numpy()
    gain = iou_on - iou_off
    parts = [part("IoU with - without the decoder (points)", gain, p_on["IoU"] - p_off["IoU"])]
    hits = float(sum(np.mean([(f["iou"] >= 0.9).sum() for f in frames]) for frames in (on, off)))
    what = "relative gain at Prec@0.9 - at Prec@0.5"
    if hits < MIN_HITS:
        parts.append(missing_part(what, paper_rel[4] - paper_rel[0],
                                  f"{hits:.0f} expressions reach IoU 0.9 over the two models, fewer than {MIN_HITS}"))
    else:
        parts.append(part(what, relative_gain(*prec["0.9"]) - relative_gain(*prec["0.5"]),
                          paper_rel[4] - paper_rel[0]))
    rel9 = relative_gain(*prec["0.9"]).estimate()
    ours = (f"IoU {gain.estimate().fmt(2, signed=True)} points; relative gain at Prec@0.9 {rel9.fmt(2, signed=True)}, "
            f"at Prec@0.5 {relative_gain(*prec['0.5']).estimate().fmt(2, signed=True)} ({_seeds(on)}, {rs.n} "
            "expressions)")
    paper_text = (f"IoU {p_on['IoU'] - p_off['IoU']:+.2f} points; Prec@0.9 {p_off['prec@0.9']:.2f} -> "
                  f"{p_on['prec@0.9']:.2f} (relative gain {paper_rel[4]:+.2f}, at Prec@0.5 {paper_rel[0]:+.2f})")
    verdict = judge(3, STATEMENTS[3], paper_text, ours, parts,
                    learned(rs, {"the model with the decoder": on, "the one without": off}, baseline))
    g = gain.estimate()
    numbers = {"gain": g.point, "gain_lo": g.lo, "gain_hi": g.hi, "iou_on": iou_on.point, "iou_off": iou_off.point,
               "prec9_on": prec["0.9"][0].point, "prec9_off": prec["0.9"][1].point, "hits9": hits,
               "paper_gain": p_on["IoU"] - p_off["IoU"], "expressions": rs.n, "seeds": len(on)}
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# claim 4: Table 4, depth

def fusion_depth(scores: Mapping[int, Frames | None], baseline: pd.DataFrame, samples: int = 1000,
                 seed: int = 0) -> ClaimResult:
    """Claim 4. ``scores``: the CME without the decoder and without sharing at 2, 4 and 6
    fusion layers (6 may be None: a profile that does not train it)."""
    have = [k for k in (2, 4, 6) if scores.get(k) is not None]
    rs = _resampler([*(f for k in have for f in scores[k]), baseline], samples, seed)
    iou = {k: _stat(rs, scores[k], cum_iou()) for k in have}
    ref = {k: _table4(k, False, False)["IoU"] for k in (2, 4, 6)}
    parts = [part("4 layers - 2 layers (IoU points)", iou[4] - iou[2], ref[4] - ref[2])]
    what = "(4 - 2 layers) - (6 - 4 layers): the gain shrinks"
    paper_shrink = (ref[4] - ref[2]) - (ref[6] - ref[4])
    if 6 in iou:
        parts.append(part(what, (iou[4] - iou[2]) - (iou[6] - iou[4]), paper_shrink))
    else:
        parts.append(missing_part(what, paper_shrink, "this profile does not train 6 fusion layers"))
    est = {k: iou[k].estimate() for k in have}
    table = pd.DataFrame([_row(f"{k} layers", est[k], ref[k], len(scores[k])) for k in have])
    ours = "; ".join(f"{k} layers {est[k]}" for k in have) + f" ({_seeds(scores[4])}, {rs.n} expressions)"
    paper_text = "; ".join(f"{k} layers {ref[k]:.2f}" for k in (2, 4, 6))
    models = {f"the {k}-layer model": scores[k] for k in have}
    verdict = judge(4, STATEMENTS[4], paper_text, ours, parts, learned(rs, models, baseline))
    numbers = {f"iou_{k}": est[k].point for k in have}
    numbers.update({"four_minus_two": parts[0].ours.point, "expressions": rs.n, "paper_four_minus_two": ref[4] - ref[2],
                    "paper_six_minus_four": ref[6] - ref[4]})
    if 6 in iou:
        numbers["six_minus_four"] = (iou[6] - iou[4]).point
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# claim 5: Table 2

SYNTHREF_LENGTH = ("our long expressions are short ones with relations to uniquely described landmarks and regions "
                   "added, so they carry more identifying information, while RefCOCO's long expressions describe "
                   "harder targets")


def length_trend(scores: Frames, baseline: pd.DataFrame, dataset: str, samples: int = 1000, seed: int = 0,
                 untestable: str | None = None) -> ClaimResult:
    """Claim 5. ``scores``: the main model per seed on the same expressions; ``dataset``
    names the length buckets (Table 2's). ``untestable``: why the data cannot test the
    claim as the paper meant it (by default, for synthref, :data:`SYNTHREF_LENGTH`)."""
    from .data.refer import bucket_labels

    labels = bucket_labels(dataset)
    if untestable is None and dataset == "synthref":
        untestable = SYNTHREF_LENGTH
    ref_name = dataset if dataset in paper.TABLE2_RESTR else "refcoco"
    ref = paper.TABLE2_RESTR[ref_name]
    rs = _resampler([*scores, baseline], samples, seed)
    rows = []
    for label in labels:
        est = _stat(rs, scores, cum_iou(label), [label]).estimate()
        rows.append({"bucket": label, "expressions": int((scores[0]["bucket"] == label).sum()), "IoU (ours)": est,
                     f"IoU (paper, {ref_name})": ref.get(label, np.nan)})
    table = pd.DataFrame(rows)
    first, last = labels[0], labels[-1]
    drop = _stat(rs, scores, lambda s, n: cum_iou(first)(s, n) - cum_iou(last)(s, n), [first, last])
    parts = [part(f"IoU of {first} words - of {last} words (points)", drop, ref[first] - ref[last])]
    sizes = ", ".join(f"{r['bucket']}: {r['expressions']}" for r in rows)
    ours = (f"{first} words {rows[0]['IoU (ours)']}, {last} words {rows[-1]['IoU (ours)']}: drop "
            f"{drop.estimate().fmt(1, signed=True)} points (expressions per bucket {sizes}; {_seeds(scores)})")
    paper_text = (f"{ref_name} val: {' / '.join(f'{ref[k]:.2f}' for k in labels)} for {' / '.join(labels)} words: "
                  f"drop {ref[first] - ref[last]:+.2f} points")
    verdict = judge(5, STATEMENTS[5], paper_text, ours, parts, learned(rs, {"the main model": scores}, baseline),
                    untestable)
    d = drop.estimate()
    overall = _stat(rs, scores, cum_iou()).estimate()
    numbers = {"drop": d.point, "drop_lo": d.lo, "drop_hi": d.hi, "paper_drop": ref[first] - ref[last],
               "iou": overall.point, "iou_lo": overall.lo, "iou_hi": overall.hi, "seeds": len(scores),
               "expressions": rs.n,
               **{f"iou_{i}": r["IoU (ours)"].point for i, r in enumerate(rows)},
               **{f"size_{i}": r["expressions"] for i, r in enumerate(rows)}}
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# claim 6: Fig. 4

def patch_to_pixel(pixel: Frames, patch: Frames, baseline: pd.DataFrame, decoder: ClaimResult | None = None,
                   samples: int = 1000, seed: int = 0) -> ClaimResult:
    """Claim 6. ``pixel`` / ``patch``: the main model's scores per seed, of its final mask
    and of its own patch-level map upsampled (:func:`restr.analysis.expression_scores`
    with ``level="patch"``), on the same expressions. ``decoder``: claim 3's result, whose
    IoU gain (decoder on against off, trained apart) is shown beside."""
    rs = _resampler([*pixel, *patch, baseline], samples, seed)
    cols = []
    for px, pt in zip(pixel, patch, strict=True):
        c = score_columns(px)
        c["intersection|patch"] = pt["intersection"].to_numpy(np.float64)
        c["union|patch"] = pt["union"].to_numpy(np.float64)
        cols.append(c)
    pix = rs.stat(cols, cum_iou()).estimate()
    pat = rs.stat(cols, cum_iou("patch")).estimate()
    gain = rs.stat(cols, lambda s, n: cum_iou()(s, n) - cum_iou("patch")(s, n)).estimate()
    paper_gain = _table4(4, False, True)["IoU"] - _table4(4, False, False)["IoU"]
    parts = [part("pixel-level IoU - patch-level IoU of the main model (points)", gain, None)]
    table = pd.DataFrame([{"prediction": "patch-level (Fig. 4 b), upsampled", "IoU": pat},
                          {"prediction": "pixel-level (Fig. 4 c), the decoder's", "IoU": pix}])
    ours = f"patch-level {pat}, pixel-level {pix}: {gain.fmt(1, signed=True)} points ({_seeds(pixel)})"
    if decoder is not None:
        ours += f"; decoder on - off, trained apart: {decoder.verdict.parts[0].ours.fmt(1, signed=True)}"
    paper_text = f"shown, not measured (Fig. 4); the decoder adds {paper_gain:.2f} IoU points at 4 layers (Table 4)"
    verdict = judge(6, STATEMENTS[6], paper_text, ours, parts, learned(rs, {"the main model": pixel}, baseline))
    numbers = {"pixel": pix.point, "patch": pat.point, "gain": gain.point, "gain_lo": gain.lo, "gain_hi": gain.hi,
               "paper_decoder_gain": paper_gain, "seeds": len(pixel), "expressions": rs.n}
    return ClaimResult(verdict, table, numbers)


# ----------------------------------------------------------------------------------------
# into the pages

def glue_result(result: ClaimResult) -> None:
    """Glue a claim's verdict for its chapter and the status page: ``claim<n>_statement``,
    ``_paper``, ``_ours``, ``_verdict``, ``_why`` (text) and ``claim<n>_<number>``."""
    from .glue import glue, glue_values

    v = result.verdict
    for name in ("statement", "paper", "ours", "why"):
        glue(f"claim{v.claim}_{name}", getattr(v, name))
    glue(f"claim{v.claim}_verdict", v.label)
    glue_values(f"claim{v.claim}", result.numbers)


def group_table(scores: Frames, column: str, labels: Sequence[Any], samples: int = 1000, seed: int = 0
                ) -> pd.DataFrame:
    """Cumulative IoU (%) with its interval per value of ``column`` of the scores frames
    (the same expressions per seed), and how many expressions each value holds."""
    rs = _resampler(list(scores), samples, seed)
    keyed = [f.assign(**{column: f[column].astype(str)}) for f in scores]
    rows = []
    for label in labels:
        est = rs.stat([score_columns(f, [str(label)], column) for f in keyed], cum_iou(str(label))).estimate()
        rows.append({column: label, "expressions": int((keyed[0][column] == str(label)).sum()), "IoU": est})
    return pd.DataFrame(rows)
