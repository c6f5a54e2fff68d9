"""Analyses the notebooks run: small, tested functions, so that cells hold only calls."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import get_preset
from ..data.refer import ReferData, collate
from ..data.synth import KINDS, expression_kind, load_scenes, scene_shapes
from ..data.synth_language import referents
from ..eval.evaluate import (Inference, SegmentationEvaluator, evaluate_swap_control, score_batch, split_dataset,
                             spread_indices)
from ..eval.metrics import PREC_THRESHOLDS, PROTOCOL, SegmentationMeter
from ..perf.cost import measure
from ..runs.folder import (RunError, checkpoint_path, load_checkpoint, load_run, no_weights, read_metrics,
                           read_run_config, state_digest)
from ..utils.devices import resolve_amp
from ..utils.files import atomic_write_text, remove_dead_temporaries
from ..zoo.manifest import cpu_name
from .verdict import CONVERGED_MARGIN, convergence


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C * P * P): non-overlapping patches, row-major over the grid.

    Each patch is flattened channel first, then rows, then columns: the order in which
    a (D, C, P, P) convolution kernel is laid out, so ``patches @ kernel.reshape(D, -1).T``
    is the strided convolution.
    """
    B, C, H, W = images.shape
    P = patch_size
    if H % P or W % P:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {P}")
    x = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, gh, P, gw, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)


def linear_patch_embedding(vit: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ViT's patch embedding written as what the paper says it is: a linear map of
    flattened patches. (B, C, H, W) -> (B, N, D)."""
    proj = vit.patch_embed.proj  # timm stores it as a Conv2d with kernel = stride = P
    weight = proj.weight.reshape(proj.weight.shape[0], -1)  # (D, C*P*P)
    return patchify(images, proj.kernel_size[0]) @ weight.T + proj.bias


def conv_patch_embedding(vit: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What timm runs: the strided convolution, flattened to (B, N, D)."""
    out = vit.patch_embed.proj(images)  # (B, D, gh, gw)
    return out.flatten(2).transpose(1, 2)


def position_similarity(pos_embed: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of every patch position's embedding with every other one.

    pos_embed: (N, D) (prefix tokens removed). Returns (gh, gw, gh, gw).
    """
    gh, gw = grid
    e = F.normalize(pos_embed.detach().float(), dim=-1)
    return (e @ e.T).reshape(gh, gw, gh, gw).numpy()


def resize_position_embedding(vit: torch.nn.Module, new_grid: tuple[int, int]) -> torch.Tensor:
    """The ViT's patch position embeddings resampled to another grid, (gh * gw, D)."""
    from timm.layers import resample_abs_pos_embed

    prefix = vit.num_prefix_tokens
    pe = vit.pos_embed.detach()
    out = resample_abs_pos_embed(pe, new_size=list(new_grid), num_prefix_tokens=prefix)
    return out[0, prefix:]


def cost_by_patch_size(
    patch_sizes: Iterable[int] = (32, 16, 8), image_size: int = 480, preset: str = "paper", **model: Any
) -> list[dict[str, Any]]:
    """Tokens, parameters and MACs of the model as the patch size changes (measured)."""

    rows = []
    for p in patch_sizes:
        cfg = get_preset(preset, model={"patch_size": p, "image_size": image_size, **model}).model
        r = measure(cfg, device="meta")
        rows.append({
            "patch_size": p,
            "N_v": cfg.num_patches,
            "N_l": cfg.max_words,
            "vision_GMACs": r["macs"]["vision"] / 1e9,
            "fusion_GMACs": r["macs"]["fusion"] / 1e9,
            "decoder_GMACs": r["macs"]["decoder"] / 1e9,
            "total_GMACs": r["macs"]["total"] / 1e9,
            "params_M": r["params"]["total"] / 1e6,
        })
    return rows


def uniform_visual_share(num_visual, num_words):
    """The share of attention on visual tokens if the seed attended uniformly to all
    N_v + N_l + 1 tokens: N_v / (N_v + N_l + 1). Works element-wise on tensors of word counts."""
    return num_visual / (num_visual + num_words + 1)


@torch.no_grad()
def seed_attention_shares(model: torch.nn.Module, batches: Iterable[dict], max_expressions: int | None = None
                          ) -> list[dict[str, float]]:
    """Table 3(a): per fusion layer where the seed takes part, the mean over expressions of
    the seed's attention summed over visual tokens (a_v), over words (a_l), and on
    itself; plus the uniform share for the expressions' actual word counts."""
    model.eval()
    sums: dict[int, np.ndarray] = {}
    uniform = 0.0
    n = 0
    for batch in batches:
        out = model(batch["image"], batch["words"], return_attention=True)
        lengths = (batch["words"] != 0).sum(1).float()
        for a in out.seed_attention:
            row = torch.stack([a.visual.sum(1), a.language.sum(1), a.seed], dim=1).double().sum(0).numpy()
            sums[a.layer] = sums.get(a.layer, 0) + row
        nv = out.seed_attention[0].num_visual
        uniform += float(uniform_visual_share(nv, lengths).sum())
        n += batch["words"].shape[0]
        if max_expressions is not None and n >= max_expressions:
            break
    return [
        {"layer": f"f_{layer}", "a_v": 100 * s[0] / n, "a_l": 100 * s[1] / n, "seed": 100 * s[2] / n,
         "uniform_a_v": 100 * uniform / n}
        for layer, s in sorted(sums.items())
    ]


def bootstrap_ci(intersections: np.ndarray, unions: np.ndarray, samples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Cumulative IoU (sum I / sum U) and a percentile bootstrap interval over expressions."""
    i = np.asarray(intersections, dtype=np.float64)
    u = np.asarray(unions, dtype=np.float64)
    if len(i) == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(i), size=(samples, len(i)))
    su = u[idx].sum(1)
    stats = np.where(su > 0, i[idx].sum(1) / np.maximum(su, 1e-12), 1.0)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    point = i.sum() / u.sum() if u.sum() > 0 else 1.0
    return float(point), float(lo), float(hi)


# ----------------------------------------------------------------------------------------
# per-expression numbers for the verdicts (restr.book.verdict, restr.book.claims)

@torch.no_grad()
def seed_attention_records(model: torch.nn.Module, batches: Iterable[dict], max_expressions: int | None = None):
    """Table 3(a) per expression: a pandas DataFrame with one row per expression, its
    word count, the words the seed can attend to (``attended_words``), the uniform visual
    share ``uniform_a_v`` (%) of its attended tokens, and
    per fusion layer ``k`` where the seed takes part the seed's attention (%) summed over
    visual tokens (``a_v@f_k``), over words (``a_l@f_k``) and on itself (``seed@f_k``).

    The uniform share counts the tokens the seed can attend to: the real words when the
    model masks padding (``model.mask_padding``), all ``max_words`` positions otherwise (the
    release's form, and the paper's 900 / (900 + 20 + 1) = 97.7 %)."""
    model.eval()
    masked = bool(getattr(getattr(model, "cfg", None), "mask_padding", True))
    frames = []
    n = 0
    for batch in batches:
        words = batch["words"]
        out = model(batch["image"], words, return_attention=True)
        lengths = (words != 0).sum(1)
        attended = lengths.double() if masked else torch.full_like(lengths, words.shape[1]).double()
        nv = out.seed_attention[0].num_visual
        cols = {"words": lengths.numpy(), "attended_words": attended.numpy(),
                "uniform_a_v": 100 * uniform_visual_share(nv, attended).numpy()}
        for a in out.seed_attention:
            cols[f"a_v@f_{a.layer}"] = 100 * a.visual.sum(1).double().numpy()
            cols[f"a_l@f_{a.layer}"] = 100 * a.language.sum(1).double().numpy()
            cols[f"seed@f_{a.layer}"] = 100 * a.seed.double().numpy()
        frames.append(pd.DataFrame(cols))
        n += len(words)
        if max_expressions is not None and n >= max_expressions:
            break
    df = pd.concat(frames, ignore_index=True)
    return df.iloc[:max_expressions] if max_expressions is not None else df


def attention_layers(records) -> list[str]:
    """The fusion layers (``f_1`` ...) of :func:`seed_attention_records`' columns, in order."""
    return sorted((c.split("@", 1)[1] for c in records.columns if c.startswith("a_v@")), key=lambda s: int(s[2:]))


class _PatchLevel(torch.nn.Module):
    """A model whose pixel-level output is replaced by its patch map, bilinearly upsampled
    to the input size: the prediction of Fig. 4(b), scored as a mask."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, words, image_index=None):
        out = self.model(images, words, image_index)
        upsampled = F.interpolate(out.patch_logits.float(), size=out.mask_logits.shape[-2:], mode="bilinear",
                                  align_corners=False)
        return out._replace(mask_logits=upsampled)


SCORES_FORMAT = 2  # of the cached scores; bump it when scoring changes what it computes


def expression_scores(run_dir, split: str = "val", max_expressions: int | None = None, level: str = "pixel",
                      batch_size: int = 64, cache: bool = True):
    """Every scored expression of ``split`` (``max_expressions`` of them spread evenly over
    it, as :func:`restr.eval.evaluate.evaluate_run` picks them) for a trained run, as a pandas
    DataFrame: ids, sentence, length, bucket, intersection, union, iou. ``level``:
    ``pixel`` (the model's prediction) or ``patch`` (its patch-level map upsampled, the
    prediction without the decoder's refinement), both scored at the original resolution.

    With ``cache``, the scores are kept in ``<run>/scores/`` beside a stamp of what they
    depend on (the final weights' digest, the arithmetic this CPU evaluates in, the metric
    protocol, :data:`SCORES_FORMAT`), and read back while the stamp matches: chapters that
    score the same model share one evaluation, and a rebuild of the book evaluates nothing
    twice. A zoo model brings the scores the book computed from its weights
    (``data/zoo/scores/``, :func:`restr.zoo.manifest.materialize`); they are read only under
    the same stamp, so another arithmetic (bf16 or fp32) or a changed protocol scores again;
    which CPU computed them is written beside the stamp (:func:`scoring_cpu`).

    A zoo model that ships its scores but not its weights (:func:`restr.zoo.manifest.add_to_zoo`)
    cannot be scored again: its scores are read whatever arithmetic they were computed in
    (a notice says so when it is not this CPU's); any other mismatch is an error that names
    the command retraining it."""

    if level not in ("pixel", "patch"):
        raise ValueError(f"level must be pixel or patch, not {level!r}")
    path, stamp = _scores_cache(run_dir, split, max_expressions, level)
    if cache:
        remove_dead_temporaries(path.parent)  # a book run killed while writing scores left its temporary files
    shipped = no_weights(run_dir)
    if shipped is not None:
        return _shipped_scores(shipped, run_dir, path, stamp)
    if cache and path.is_file() and path.with_suffix(".json").is_file():
        try:
            stored = json.loads(path.with_suffix(".json").read_text())
            if {k: v for k, v in stored.items() if k != "computed_on"} == stamp:
                return pd.read_csv(path, dtype={"bucket": str, "sentence": str}, keep_default_na=False)
        except (ValueError, OSError, AttributeError):
            pass  # unreadable: score again
    run = load_run(run_dir, "last", "cpu")
    dataset = split_dataset(run, split)
    model = run.model if level == "pixel" else _PatchLevel(run.model)
    inference = Inference(model, resolve_amp(run.cfg.train.amp, torch.device("cpu")), batch_size, 0)
    evaluator = SegmentationEvaluator(dataset.dataset, keep_records=True)
    indices = spread_indices(len(dataset), max_expressions) if max_expressions else None
    inference.run(dataset, evaluator, indices)
    scores = pd.DataFrame(evaluator.records)
    if cache:
        atomic_write_text(path, scores.to_csv(index=False))
        atomic_write_text(path.with_suffix(".json"), json.dumps({**stamp, "computed_on": scoring_cpu()}) + "\n")
    return scores


BF16_KERNELS = ("amx_bf16", "avx512_bf16")  # the CPU flags that decide how a bf16 matmul sums


def scoring_cpu() -> str:
    """The CPU that computed a score file, as far as its sums depend on it: the manifest's CPU
    name and its bf16 matmul instructions. Written beside the stamp (``computed_on``), not part
    of it: another CPU's bf16 kernels sum in another order, so its scores differ by rounding
    (a few hundredths of an IoU point at most), and the book reads them rather than scoring
    every model again; only a test that wants digit-for-digit equality reads it."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    kernels = [f for f in BF16_KERNELS if f in flags]
    return f"{cpu_name()}; {', '.join(kernels) or 'no bf16 matmul instructions'}"


def _shipped_scores(shipped: dict, run_dir, path: Path, stamp: dict):
    """The scores a zoo model without weights ships (``shipped``: its
    :func:`~restr.runs.folder.no_weights` record; see :func:`expression_scores`)."""

    retrain = f"retrain it with `{shipped.get('retrain')}`"
    try:
        stored = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        raise RunError(f"{run_dir} is zoo model {shipped.get('zoo')!r}, which ships no weights and no readable "
                       f"{path.name} (its stamp {path.with_suffix('.json').name} is missing or corrupt): it cannot "
                       f"be scored here; {retrain}") from None
    differs = sorted(k for k in stamp if k != "arithmetic" and stored.get(k) != stamp[k])
    if differs:
        raise RunError(f"{path}: zoo model {shipped.get('zoo')!r} ships scores that differ from what this code asks "
                       f"for in {', '.join(differs)}, and no weights to score again; {retrain}")
    if stored.get("arithmetic") != stamp["arithmetic"]:
        print(f"notice: {shipped.get('zoo')}: its shipped scores were computed in {stored.get('arithmetic')}, "
              f"this CPU evaluates in {stamp['arithmetic']} (the two agree to rounding); the model ships no "
              f"weights to score again", file=sys.stderr)
    try:
        return pd.read_csv(path, dtype={"bucket": str, "sentence": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} (the shipped scores of zoo model {shipped.get('zoo')!r}) is unreadable ({exc}); "
                       f"restore it with git checkout, or {retrain}") from None


def _scores_cache(run_dir, split: str, max_expressions: int | None, level: str) -> tuple[Path, dict]:
    """Where :func:`expression_scores` caches a run's scores, and the stamp they must carry."""

    amp = resolve_amp(read_run_config(run_dir).train.amp, torch.device("cpu"))
    stamp = {"format": SCORES_FORMAT, "weights_sha256": weights_digest(run_dir), "split": split, "level": level,
             "max_expressions": max_expressions, "arithmetic": "bfloat16" if amp == torch.bfloat16 else "float32",
             "protocol": protocol_digest()}
    return Path(run_dir) / "scores" / f"{split}-{level}-{max_expressions or 'all'}.csv", stamp


def protocol_digest() -> str:
    """A short digest of the evaluation protocol (:data:`PROTOCOL`) that cached scores carry."""

    return hashlib.sha256(json.dumps(PROTOCOL, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(run_dir) -> str:
    """The digest (:func:`~restr.runs.folder.state_digest`) of a run's final weights (a run
    rebuilt from a zoo model that ships no weights records it)."""

    shipped = no_weights(run_dir)
    if shipped is not None:
        return shipped["weights_sha256"]
    return state_digest(load_checkpoint(checkpoint_path(run_dir, "last"))["model"])


def whole_image_scores(scores, data_root, dataset: str, split_by: str, image_root=None):
    """The scores of predicting the whole image for the expressions of ``scores`` (a frame
    of :func:`expression_scores`): intersection = the target's pixels, union = the image's.
    The floor a model must beat to count as having learned (:mod:`restr.book.verdict`)."""

    data = ReferData(data_root, dataset, split_by, image_root)
    area = {a: int(data.load_mask(a).sum()) for a in sorted(set(int(x) for x in scores["ann_id"]))}
    out = scores[["index", "ref_id", "sent_id", "ann_id", "image_id", "length", "bucket"]].copy()
    out["intersection"] = [area[int(a)] for a in scores["ann_id"]]
    out["union"] = [int(data.images[int(i)]["height"]) * int(data.images[int(i)]["width"]) for i in scores["image_id"]]
    out["iou"] = out["intersection"] / out["union"]
    return out


def all_objects_scores(scores, data_root, dataset: str, split_by: str, image_root=None):
    """The scores of the language-blind floor for the expressions of ``scores`` (a frame of
    :func:`expression_scores`): predicting the union of every annotated object of the
    image, whatever the expression says. The target is one of them, so the intersection
    is the target's pixels and the union that of all objects. A model that reads nothing
    of the expression but knows what an object is scores this; the ``learned`` rule of
    :mod:`restr.book.verdict` asks every model to beat it."""

    data = ReferData(data_root, dataset, split_by, image_root)
    objects_of: dict[int, list[int]] = {}
    for ann_id, ann in data.anns.items():
        objects_of.setdefault(int(ann["image_id"]), []).append(int(ann_id))
    images = sorted(set(int(i) for i in scores["image_id"]))
    union_area, masks = {}, {}
    for image_id in images:
        every = None
        for ann_id in objects_of.get(image_id, []):
            masks[ann_id] = data.load_mask(ann_id)
            every = masks[ann_id] if every is None else (every | masks[ann_id])
        union_area[image_id] = int(every.sum()) if every is not None else 0
    out = scores[["index", "ref_id", "sent_id", "ann_id", "image_id", "length", "bucket"]].copy()
    out["intersection"] = [int(masks[int(a)].sum()) for a in scores["ann_id"]]
    out["union"] = [union_area[int(i)] for i in scores["image_id"]]
    out["iou"] = out["intersection"] / out["union"]
    return out


def patch_ceiling_scores(run_dir, split: str = "val", max_expressions: int | None = None, batch_size: int = 64):
    """The scores of a perfect patch-level map for the expressions :func:`expression_scores`
    scores (the same ones, in the same order): the ground truth averaged over each P x P
    patch of the run's input, upsampled bilinearly, thresholded at 0.5 and mapped back to
    the original resolution, as every prediction is. No patch-level map scores higher on
    average: it is the ceiling of the patch grid, which only the decoder's sub-patch detail
    can pass."""

    run = load_run(run_dir, "last", "cpu")
    dataset = split_dataset(run, split)
    p = run.cfg.model.patch_size
    indices = spread_indices(len(dataset), max_expressions) if max_expressions else list(range(len(dataset)))
    rows = []
    for start in range(0, len(indices), batch_size):
        batch = collate([dataset[i] for i in indices[start:start + batch_size]])
        gt = batch["mask"][:, None].float()  # (B, 1, H, W) at the model's input
        patch = F.interpolate(F.avg_pool2d(gt, p), size=gt.shape[-2:], mode="bilinear", align_corners=False)
        for i, (inter, union, _) in enumerate(score_batch(batch, (patch[:, 0] - 0.5) * 10)):
            rows.append({"index": start + i, "sent_id": int(batch["sent_id"][i]), "intersection": int(inter),
                         "union": int(union), "iou": inter / union if union else 1.0})
    return pd.DataFrame(rows)


def score_columns(scores, groups: Iterable[str] = (), group_column: str = "bucket") -> dict[str, np.ndarray]:
    """Per-expression columns of a scores frame for :class:`restr.book.verdict.Resampler`:
    ``intersection``, ``union``, ``iou``, ``hit@X`` (IoU >= X for Prec@X) and, for each
    label of ``groups``, ``intersection|label`` and ``union|label`` (zero outside it)."""

    inter = scores["intersection"].to_numpy(np.float64)
    union = scores["union"].to_numpy(np.float64)
    iou = scores["iou"].to_numpy(np.float64)
    cols = {"intersection": inter, "union": union, "iou": iou}
    for x in PREC_THRESHOLDS:
        cols[f"hit@{x}"] = (iou >= x).astype(np.float64)
    for label in groups:
        inside = (scores[group_column] == label).to_numpy()
        cols[f"intersection|{label}"] = np.where(inside, inter, 0.0)
        cols[f"union|{label}"] = np.where(inside, union, 0.0)
    return cols


def neighbour_similarity(pos_embed: torch.Tensor, grid: tuple[int, int]) -> tuple[float, float]:
    """Mean cosine similarity of horizontally adjacent positions, and of all pairs."""
    s = position_similarity(pos_embed, grid)
    gh, gw = grid
    adjacent = float(np.mean([s[y, x, y, x + 1] for y in range(gh) for x in range(gw - 1)]))
    return adjacent, float(s.mean())


def scores_summary(frames) -> dict[str, float]:
    """The paper's metrics (%) of a model from its scores frames, averaged over seeds:
    Prec@X, cumulative IoU (``IoU``) and mean IoU."""

    rows = [{**{f"prec@{x}": 100 * float((f["iou"] >= x).mean()) for x in PREC_THRESHOLDS},
             "IoU": 100 * float(f["intersection"].sum() / f["union"].sum()), "mean IoU": 100 * float(f["iou"].mean())}
            for f in frames]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def synthref_programs(data_root, sent_ids: Iterable[int], split_by: str = "unc"):
    """What the embedded data's expressions say, from the programs the generator wrote
    (``scenes.json``): per sentence id, how many clauses beyond attributes it holds (an
    ordinal, each relation to a landmark, a region) and whether its attributes alone
    would pick out its target (``attributes_suffice``: the clauses are then redundant)."""

    wanted = {int(s) for s in sent_ids}
    refs = {int(r["ref_id"]): r for r in ReferData(data_root, "synthref", split_by).refs}
    rows = []
    for scene in load_scenes(Path(data_root))["images"]:
        shapes = scene_shapes(scene)
        for t, obj in enumerate(scene["objects"]):
            ref = refs.get(int(obj["ref_id"]))
            if ref is None:
                continue
            for sent, program in zip(ref["sentences"], obj["programs"]):
                if int(sent["sent_id"]) not in wanted:
                    continue
                alone = referents({"attrs": program.get("attrs", {})}, shapes, scene["width"], scene["height"])
                rows.append({"sent_id": int(sent["sent_id"]),
                             "clauses": int(bool(program.get("ordinal"))) + len(program.get("relations", []))
                             + int(bool(program.get("region"))),
                             "attributes_suffice": alone == [t], "kind": expression_kind(program)})
    return pd.DataFrame(rows, columns=["sent_id", "clauses", "attributes_suffice", "kind"])


def resolution_bounds(dataset, patch_size: int, max_expressions: int | None = 1000) -> dict[str, float]:
    """Cumulative IoU (%) of two oracles at the model's input size, scored as every model
    is (mapped back to the original resolution): the ground truth letterboxed to the
    input (what a perfect pixel-level prediction at this size gives) and the ground truth
    averaged over each P x P patch, upsampled bilinearly and thresholded at 0.5 (what a
    perfect patch-level map gives, without a decoder's sub-patch detail)."""

    meters = {"pixel": SegmentationMeter(), "patch": SegmentationMeter()}
    indices = spread_indices(len(dataset), max_expressions)
    for start in range(0, len(indices), 64):
        batch = collate([dataset[i] for i in indices[start:start + 64]])
        gt = batch["mask"][:, None].float()
        patch = F.avg_pool2d(gt, patch_size)
        patch = F.interpolate(patch, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        for name, pred in (("pixel", gt), ("patch", patch)):
            for inter, union, _ in score_batch(batch, (pred[:, 0] - 0.5) * 10):
                meters[name].add(inter, union)
    return {name: 100 * m.summary()["cum_iou"] for name, m in meters.items()}


def learning_curve(run_dir):
    """A run's validations as a pandas frame: step, expressions seen, minutes of training
    (validation left out), cumulative and mean IoU (%)."""

    return curve_frame(read_metrics(run_dir))


def curve_frame(log_rows: Iterable[dict]) -> pd.DataFrame:
    """The validation rows of a training log (``metrics.jsonl``'s, a run folder's or a zoo
    model's shipped log) as :func:`learning_curve`'s frame."""
    rows = [r for r in log_rows if r.get("split") and "cum_iou" in r]
    return pd.DataFrame([{"step": r["step"], "expressions": r.get("expressions_seen"),
                          "minutes": (r.get("elapsed_s") or float("nan")) / 60, "IoU": 100 * r["cum_iou"],
                          "mean IoU": 100 * r["mean_iou"],
                          # the embedded data's validations by what the expression needs (version 2 logs)
                          **{f"IoU {kind}": 100 * part["cum_iou"] for kind, part in (r.get("kinds") or {}).items()}}
                         for r in rows])


def kind_curves(curve: Iterable[dict]) -> pd.DataFrame:
    """The cIoU (%) of each kind of expression (:data:`KINDS`) at each validation that logged
    it, long form (step, kind, IoU). ``curve``: a sweep row's curve (kind -> cIoU) or a
    run's validation rows (kind -> {n, cum_iou})."""
    rows = [{"step": r["step"], "kind": kind, "IoU": 100 * (v["cum_iou"] if isinstance(v, dict) else v)}
            for r in curve for kind, v in (r.get("kinds") or {}).items()]
    return pd.DataFrame(rows, columns=["step", "kind", "IoU"])


BUDGET_FRACTIONS = (1 / 6, 1 / 2, 1.0)  # where the budget trajectory reads each comparison


def curve_at(arm, fraction: float, column: str = "IoU") -> tuple[int, float]:
    """An arm's validation cIoU (%) at ``fraction`` of its schedule, read from its training
    logs: the last validation at or before that step, in every seed, averaged over the
    seeds (``column``: another of :func:`curve_frame`'s, e.g. ``"IoU ordinal"``). Returns
    (step, IoU); raises ValueError naming the arm if a seed has no validation there."""

    target = fraction * arm.iterations
    points = []
    for curve, seed in zip(arm.curves, arm.seeds):
        before = curve[curve["step"] <= target + 1e-9]
        if before.empty:
            raise ValueError(f"{arm.name} (seed {seed}) has no validation at or before step {target:.0f}")
        points.append(before.iloc[-1])
    steps = {int(p["step"]) for p in points}
    return min(steps), float(np.mean([p[column] for p in points]))


def budget_trajectory(comparisons: dict[str, tuple[Any, Any]], fractions=BUDGET_FRACTIONS) -> pd.DataFrame:
    """Each comparison (``{"CME - VME": (cme_arm, vme_arm)}``, :class:`restr.book.claims.Arm`)
    read from the training logs at fractions of the budget: the difference of the two arms'
    validation cIoU (seed means, IoU points) at each fraction, and whether its sign there
    is the sign at the end. A comparison whose sign flips with training is a ranking the
    budget decides. These are the logs' validations (a fixed slice of val), not the
    verdicts' full scores, and carry no interval."""

    rows = []
    for name, (a, b) in comparisons.items():
        if a is None or b is None:
            continue
        row: dict[str, Any] = {"comparison": name}
        diffs, steps = [], []
        for f in fractions:
            (step_a, iou_a), (step_b, iou_b) = curve_at(a, f), curve_at(b, f)
            diffs.append(iou_a - iou_b)
            steps.append(str(step_a) if step_a == step_b else f"{step_a}|{step_b}")
            row[f"at {_fraction_label(f)}"] = iou_a - iou_b
        row["steps read"] = " / ".join(steps)
        end = np.sign(diffs[-1])
        earlier = " / ".join(_fraction_label(f) for f in fractions[:-1])
        row[f"sign as at the end (at {earlier})"] = " / ".join("yes" if np.sign(d) == end else "no" for d in diffs[:-1])
        row["ranking changes"] = any(np.sign(d) != end for d in diffs[:-1])
        rows.append(row)
    return pd.DataFrame(rows)


def kinds_trajectory(arms: dict[str, Any], fractions=BUDGET_FRACTIONS) -> pd.DataFrame:
    """Each arm (``{name: Arm}``) along the budget by what the expression needs: its
    validation cIoU (%, seed means, the logs' slice) on the expressions of each kind of
    :data:`restr.data.synth.KINDS` at each fraction, one column per kind holding
    "at 1/6 / at 1/2 / at the end". It shows when an arm learns the place words (region,
    relation, ordinal) that most rankings along the budget turn on. Arms whose logs hold
    no kinds (version 1 data, older logs) are left out."""
    rows = []
    for name, a in arms.items():
        if a is None or not all(f"IoU {k}" in c.columns for c in a.curves for k in KINDS):
            continue
        row: dict[str, Any] = {"arm": name}
        for kind in KINDS:
            row[kind] = " / ".join(f"{curve_at(a, f, f'IoU {kind}')[1]:.0f}" for f in fractions)
        rows.append(row)
    return pd.DataFrame(rows, columns=["arm", *KINDS])


def _fraction_label(f: float) -> str:
    return {1.0: "the end"}.get(f) or f"1/{round(1 / f)}"


def starts_table(runs: dict[str, Any], levels=(30, 50, 70)) -> pd.DataFrame:
    """The main arm trained from each backbone start (``{name: run folder}``): how its ViT
    starts, its last validation (cIoU %) and training minutes, and the minutes and
    expressions it took to first reach each of ``levels`` (% cIoU; "not reached")."""
    return starts_from_curves({name: (vit_start(read_run_config(run).model), learning_curve(run), str(run))
                               for name, run in runs.items()}, levels)


def starts_from_curves(curves: dict[str, tuple[str, pd.DataFrame, str]], levels=(30, 50, 70)) -> pd.DataFrame:
    """:func:`starts_table` from ``{name: (start in words, learning curve, where it was read)}``
    (a run folder or a zoo model's shipped log)."""
    rows = []
    for name, (start, curve, where) in curves.items():
        if curve.empty:
            raise ValueError(f"{where} ({name}) has no validation in its log: no learning curve to read")
        last = curve.iloc[-1]
        row = {"model": name, "start": start, "steps": int(last["step"]),
               "last val cIoU %": float(last["IoU"]), "training minutes": float(last["minutes"])}
        for level in levels:
            hit = time_to(curve, level)
            row[f"to {level} %"] = (f"{hit['minutes']:.0f} min ({hit['expressions'] / 1000:.0f}k expr.)" if hit
                                    else "not reached")
        rows.append(row)
    return pd.DataFrame(rows)


def time_to(curve, level: float) -> dict[str, float] | None:
    """The first validation of a :func:`learning_curve` at or above ``level`` % cIoU: its
    expressions seen and minutes of training; None if the run never got there."""
    hit = curve[curve["IoU"] >= level]
    if hit.empty:
        return None
    first = hit.iloc[0]
    return {"expressions": float(first["expressions"]), "minutes": float(first["minutes"]), "step": int(first["step"])}


def swap_control(run_dir, split: str = "val", max_expressions: int | None = None) -> dict[str, float]:
    """The swap control of :mod:`restr.eval.evaluate` (each expression replaced by one of another
    object in the same image): cumulative IoU (%) with the swapped expressions and with the
    original ones on the same expressions, and how many there were."""

    run = load_run(run_dir, "last", "cpu")
    inference = Inference(run.model, resolve_amp(run.cfg.train.amp, torch.device("cpu")), 64, 0)
    result, _ = evaluate_swap_control(inference, split_dataset(run, split), max_expressions)
    return {"swapped": 100 * result["swapped"]["cum_iou"], "original": 100 * result["original_on_same_expressions"][
        "cum_iou"], "expressions": result["expressions"], "skipped": result["skipped_single_ref_images"]}


def vit_start(model_cfg) -> str:
    """How a config's ViT starts, in words (for the book's prose)."""
    weights = model_cfg.vit_weights
    if weights is None:
        return "trained from scratch"
    if weights == "pretrain" and getattr(model_cfg, "vit_pretrain", "dense") == "classify":
        return "pretrained to classify generated pictures the data set never uses (restr.engine.pretrain)"
    if weights == "pretrain":
        return "pretrained on the training images' category maps (restr.engine.pretrain)"
    if weights == "timm":
        return f"started from timm's {model_cfg.vit_name}"
    return f"started from {Path(weights).name}"


def training_seconds(log) -> float:
    """About how long a run trained, from its ``metrics.jsonl`` (a pandas frame): the
    seconds of training (the last validation row's ``elapsed_s``, which counts them) plus
    the validations' own time; for logs from before validation rows counted them, the
    timed windows of the training rows (``elapsed_s`` restarts after each validation)."""
    if "elapsed_s" not in log:
        return float("nan")
    val = log["val_seconds"].dropna().sum() if "val_seconds" in log else 0.0
    if "expressions_seen" in log and log["expressions_seen"].notna().any():
        last_val = log[log["expressions_seen"].notna()].iloc[-1]
        tail = log.loc[log.index > last_val.name, "elapsed_s"].dropna()  # training after it, if any
        return float(last_val["elapsed_s"] + (tail.iloc[-1] if len(tail) else 0.0) + val)
    e = log["elapsed_s"].dropna().to_numpy(np.float64)
    ends = [e[i] for i in range(len(e)) if i + 1 == len(e) or e[i + 1] < e[i]]
    val = log["val_seconds"].dropna().sum() if "val_seconds" in log else 0.0
    return float(sum(ends) + val)


# ----------------------------------------------------------------------------------------
# the chapters' tables: each a named function, so a cell holds a call and the table shows


def table3b_cost(variants: dict[str, dict[str, Any]], paper_rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Table 3(b) measured: each fusion variant (``{name: model overrides}``) at paper scale on
    the meta device, its fusion encoder's parameters (M) and MACs (G) beside the paper's, and
    how far below the paper's MACs ours are (%)."""
    rows = []
    for name, overrides in variants.items():
        r = measure(get_preset("paper", model=overrides).model, device="meta")
        rows.append({"encoder": name, "params (ours) M": r["params"]["fusion"] / 1e6,
                     "params (paper) M": paper_rows[name]["params_M"], "MACs (ours) G": r["macs"]["fusion"] / 1e9,
                     "MACs (paper) G": paper_rows[name]["GMACs"]})
    table = pd.DataFrame(rows)
    table["MACs below the paper's %"] = 100 * (1 - table["MACs (ours) G"] / table["MACs (paper) G"])
    return table


def arms_summary(arms: dict[tuple, Any], key_names: tuple[str, ...]) -> pd.DataFrame:
    """One row per arm (``{key: Arm}``, a key a tuple named by ``key_names``): the key's
    fields, its seeds and steps, and the paper's metrics averaged over seeds
    (:func:`scores_summary`)."""
    return pd.DataFrame([{**dict(zip(key_names, key)), "seeds": len(a.scores), "steps": a.iterations,
                          **scores_summary(a.scores)} for key, a in arms.items()])


def bucket_counts(lengths: dict[str, np.ndarray], bucket_of, labels: list[str]) -> pd.DataFrame:
    """Expressions per length bucket (rows, in ``labels``' order) of each split (columns);
    ``bucket_of(n)`` names the bucket of an ``n``-word expression."""
    return pd.DataFrame({split: pd.Series([bucket_of(n) for n in ns]).value_counts().reindex(labels)
                         for split, ns in lengths.items()})


def programs_by_bucket(tagged: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per length bucket: how many expressions, their mean number of clauses beyond
    attributes, and the share whose attributes alone pick out the target (``tagged``:
    scores merged with :func:`synthref_programs`)."""
    return tagged.groupby("bucket").agg(expressions=("sent_id", "size"), clauses=("clauses", "mean"),
                                        attributes_suffice=("attributes_suffice", "mean")).reindex(labels)


def scores_by_kind(scores: pd.DataFrame, kinds: pd.DataFrame) -> pd.DataFrame:
    """A run's scores by what the expression needs (:data:`KINDS`, easiest first):
    expressions, summed intersection and union, cumulative IoU (``cIoU %``) and mean IoU
    (``mean IoU %``)."""
    by_kind = scores.merge(kinds, on="sent_id")
    table = (by_kind.groupby("kind").agg(expressions=("iou", "size"), intersection=("intersection", "sum"),
                                         union=("union", "sum"), mean_iou=("iou", "mean"))
             .reindex([k for k in KINDS if k in set(by_kind["kind"])]))
    table["cIoU %"] = 100 * table["intersection"] / table["union"]
    table["mean IoU %"] = 100 * table["mean_iou"]
    return table


def levels_reached(reached: dict[float, dict[str, float] | None]) -> pd.DataFrame:
    """When a run first reached each cIoU level (``{level: time_to(...)}``), as a table."""
    return pd.DataFrame([{"level": f"{level} %", "reached after": (
        f"{hit['minutes']:.1f} min, {hit['expressions']:.0f} expressions" if hit else "not reached")}
        for level, hit in reached.items()])


def sweep_table(sweep: dict[str, Any]) -> pd.DataFrame:
    """The recipe sweep (``data/zoo/sweep.json``, :mod:`restr.book.recipe`): one row per
    change, its final validation cIoU (%), training minutes and expressions seen."""
    return pd.DataFrame([{"row": r["name"], "change": r["what"], "val cIoU %": 100 * r["final"]["cum_iou"],
                          "training minutes": r["final"]["seconds"] / 60, "expressions": r["final"]["expressions"]}
                         for r in sweep["rows"]])


def converged_sweep_table(files: Iterable[str | Path]) -> pd.DataFrame:
    """The converged recipe's rows (``data/zoo/sweep-converged-<N>.json``, ``python -m restr
    recipe sweep --sweep converged --expressions N``): one row per trained row and budget,
    with its steps, the arithmetic its steps computed in (float32, or bfloat16 on a CPU with
    native bf16: minutes compare only within one), final validation cIoU (%), minutes, and
    the ``converged`` rule read from
    its own curve (the rise of the least-squares line through the validations of the last
    fifth of its schedule, :func:`restr.book.verdict.convergence`)."""
    rows = []
    for f in files:
        sweep = json.loads(Path(f).read_text())
        for r in sweep["rows"]:
            curve = pd.DataFrame(r["curve"])
            steps = r["config"]["train"]["iterations"]
            rule = convergence(curve["step"], 100 * curve["cum_iou"], steps)
            rows.append({"row": r["name"], "budget (expressions)": sweep["expressions"], "steps": steps,
                         "arithmetic": r.get("arithmetic", "unrecorded"),
                         "val cIoU %": 100 * r["final"]["cum_iou"], "training minutes": r["final"]["seconds"] / 60,
                         "last-fifth rise (points)": rule.rise, "converged": rule.passed})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).sort_values(["row", "steps", "arithmetic"], ignore_index=True)
    gains = [doubling_gain(table, r) for _, r in table.iterrows()]
    table["gain at 2x steps (points)"] = gains
    table["doubling test"] = ["fails (still learning)" if not c else "untested (no run at 2x)" if np.isnan(g) else
                              "passes" if g < CONVERGED_MARGIN else "fails (2x scores higher)"
                              for g, c in zip(gains, table["converged"])]
    return table


def precision_curves(files: Iterable[str | Path], row: str = "final start") -> pd.DataFrame:
    """What rises along the main arm's longest finished rung of the doubling test: at each
    validation, the cIoU and the share of expressions whose IoU passes 0.5 (the object
    found), 0.7 and 0.9 (its outline nearly exact), in %, long form (step, measure, value),
    with the rung's steps in ``attrs["steps"]``. Empty when no rung's curve logs them."""
    best = None
    for f in files:
        sweep = json.loads(Path(f).read_text())
        for r in sweep["rows"]:
            if r["name"] == row and r["curve"] and r["curve"][-1].get("precision"):
                steps = r["config"]["train"]["iterations"]
                if best is None or steps > best[0]:
                    best = (steps, r["curve"])
    if best is None:
        return pd.DataFrame(columns=["step", "measure", "value"])
    rows = []
    for p in best[1]:
        rows.append({"step": p["step"], "measure": "cIoU", "value": 100 * p["cum_iou"]})
        rows += [{"step": p["step"], "measure": f"IoU > {t}", "value": 100 * v}
                 for t, v in (p.get("precision") or {}).items()]
    frame = pd.DataFrame(rows)
    frame.attrs["steps"] = best[0]
    return frame


def doubling_gain(table: pd.DataFrame, row) -> float:
    """How much the same sweep row trained for twice the steps scores above ``row`` (val
    cIoU points), from the run in the same arithmetic if there is one; NaN without such a
    run. The protocol's budget T is the smallest at which the main arm passes the
    ``converged`` rule and this gain is under one point."""
    twice = table[(table.row == row["row"]) & (table.steps == 2 * row["steps"])]
    if twice.empty:
        return float("nan")
    same = twice[twice.arithmetic == row["arithmetic"]]
    return float((same if len(same) else twice).iloc[0]["val cIoU %"] - row["val cIoU %"])


def cost_by_module(preset: str, models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Parameters (M) and MACs (G) per module of each model (``{name: model overrides}``) at
    ``preset``'s size, counted on the meta device; the word embeddings left out."""
    rows = []
    for name, overrides in models.items():
        r = measure(get_preset(preset, model=overrides).model, device="meta")
        rows += [{"model": name, "module": module, "params M": params / 1e6, "MACs G": r["macs"].get(module, 0.0) / 1e9}
                 for module, params in r["params"].items() if module != "word_embeddings"]
    return pd.DataFrame(rows)
