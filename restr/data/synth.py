"""synthref: the embedded referring-segmentation data set, written in the refer format.

Every image holds 3-6 coloured shapes on a textured background; every shape is the
target of one ref with several expressions, and every expression refers to exactly one
shape of its image. Expressions are built as small *programs* (attributes, an ordinal
such as "leftmost", relations to a landmark, a region of the picture), checked by
:func:`referents` to pick out exactly the target (with safety margins, so nothing is
borderline), then rendered to words. All words are in GloVe 6B's vocabulary.

Splits are by image: ``train`` and ``val`` mix both scene kinds; ``testA`` holds only
*sparse* scenes (3-4 shapes, no overlap) and ``testB`` only *crowded* ones (5-6 shapes,
partial occlusion), as RefCOCO's testA/testB group images by the kind of target.

Masks are the visible pixels of each shape, stored as the refer files store them:
unoccluded squares, triangles, diamonds and stars as polygons (a list of flat coordinate
lists, as in RefCOCO), crosses as two overlapping rectangles (the reader must take their
union), circles, rings and occluded shapes as a list of one compressed RLE dict (as in
ReferIt). The refer toolkit's ``REFER.getMask`` reads every one of them.
``scenes.json`` records every shape's attributes and every expression's program.

**Versions.** Version 1 (the default for now: the model zoo was trained on it) draws
every shape's attributes independently, so nearly every target is the only shape of
its kind, and spreads each shape's expressions over the length buckets
(:mod:`.synth_v1`). Version 2 (``version=2``, ``--version 2``) puts look-alike
distractors in the scenes and writes each expression as long as its scene needs, by
incremental referring-expression generation plus redundant words at stated rates
(:mod:`.synth_v2`). Both share the canvases, the masks, the pixels and the meaning of
an expression (:mod:`.synth_scenes`, :mod:`.synth_language`). A version 2 folder says
so: ``"version": 2`` in ``instances.json``'s ``info`` and in ``scenes.json`` (a
version 1 folder has no such key: its bytes are the former generator's, and
:func:`version_of` reads it as 1); so the data fingerprint differs too.

:func:`generate` runs four stages, one function each:

1. :func:`render`: every image's scene, pixels (its JPEG, written by the worker that
   draws it), masks and expressions (:mod:`.synth_scenes`, :mod:`.synth_language`);
2. :func:`to_refer`: the refs, the COCO-style instances and the scene records;
3. :func:`write`: ``instances.json``, ``refs(unc).p`` and ``scenes.json``, atomically;
4. :func:`summarise`: counts per split and the expression lengths.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_write_bytes
from .errors import DataError
from .refer import bucket_labels, bucket_of
from .synth_language import COLOURS, LENGTH_DATASET, SHAPES, SIZES, WORDS, Shape, referents, render_program
from .synth_scenes import VERSIONS, ImageJob, render_image
from .vocab import tokenize

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "WORDS",
    "DEFAULT_NUM_IMAGES",
    "DEFAULT_VERSION",
    "Pictures",
    "VERSIONS",
    "Shape",
    "generate",
    "referents",
    "render_program",
    "load_scenes",
    "scene_shapes",
    "version_of",
]

DEFAULT_NUM_IMAGES = 4000
DEFAULT_VERSION = 1            # the zoo's data; version 2 is chosen explicitly until the zoo is retrained
SPLIT_FRACTIONS = (("train", 0.80), ("val", 0.08), ("testA", 0.06), ("testB", 0.06))
SPLIT_KIND = {"testA": "sparse", "testB": "crowded"}  # the other splits mix both kinds evenly
SCALES = (0.5, 10.0)           # the canvas scales accepted
PARALLEL_FROM = 64             # images from which the default is one worker per core ...
MAX_WORKERS = 8                # ... up to this many
CHUNK = 16                     # images per task sent to a worker
_KIND_STREAM = 2**31 - 1       # the seed-sequence entry of the scene-kind draws (images use 0, 1, ...)


@dataclass(frozen=True)
class Layout:
    """Where synthref's files go under the data root ``root`` (in the summary's order)."""

    root: Path
    dir: Path
    refs_file: Path
    instances_file: Path
    scenes_file: Path
    image_dir: Path

    @classmethod
    def under(cls, root: str | os.PathLike) -> Layout:
        d = Path(root) / "synthref"
        return cls(Path(root), d, d / "refs(unc).p", d / "instances.json", d / "scenes.json", d / "images")

    def paths(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass
class ReferSet:
    """The three files' contents: ``instances.json``, ``refs(unc).p`` and ``scenes.json``."""

    instances: dict[str, Any]
    refs: list[dict]
    scenes: dict[str, Any]


# ----------------------------------------------------------------------------------------
# the plan: which split and which kind of scene each image gets

def split_plan(num_images: int) -> list[str]:
    """The split of every image, in order (train first, then val, testA, testB)."""
    if num_images < len(SPLIT_FRACTIONS):
        raise ValueError(f"num_images must be >= {len(SPLIT_FRACTIONS)} (one per split), got {num_images}")
    counts = [max(1, int(round(num_images * f))) for _, f in SPLIT_FRACTIONS]
    counts[0] = num_images - sum(counts[1:])
    return [name for (name, _), c in zip(SPLIT_FRACTIONS, counts) for _ in range(c)]


def scene_kinds(splits: list[str], seed: int) -> list[str]:
    """The scene kind of every image, "sparse" or "crowded": testA's and testB's are fixed, the
    others' a fair coin."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_STREAM]))
    kinds = []
    for split in splits:
        coin = "sparse" if rng.random() < 0.5 else "crowded"  # drawn for every image, used for train/val
        kinds.append(SPLIT_KIND.get(split, coin))
    return kinds


# ----------------------------------------------------------------------------------------
# the four stages

def render(jobs: list[ImageJob], workers: int | None = None, progress: bool = True) -> list[dict]:
    """Stage 1: render every image (:func:`render_image`), in job order, on ``workers`` processes."""
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if len(jobs) >= PARALLEL_FROM else 1
    with _pool(workers) as pool:
        records = pool.imap(render_image, jobs, chunksize=CHUNK) if pool else map(render_image, jobs)
        if progress:
            from tqdm import tqdm

            records = tqdm(records, total=len(jobs), desc="synthref images", unit="img", file=sys.stderr)
        return list(records)


def _pool(workers: int):
    """A process pool (forked where possible) for ``workers`` > 1, else a context giving None.
    The workers take SIGTERM's default back: a forked worker inherits its parent's handlers,
    and one that only records the signal (a training command's request to stop) would leave
    the pool's terminate() waiting forever for a worker that never exits."""
    if workers <= 1:
        return nullcontext()
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    return ctx.Pool(workers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL))


def to_refer(records: list[dict], splits: list[str], seed: int, version: int = 1) -> ReferSet:
    """Stage 2: the rendered images as refer files. Annotation, ref and sentence ids count
    from 1 in image order; each shape is one annotation and one ref. Version 2 records its
    number in ``instances.json``'s info and ``scenes.json``, and each expression's redundant
    parts beside its program (version 1's files stay as they always were)."""
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    images, annotations, refs, scenes = [], [], [], []
    next_sent_id = 1
    for rec, split in zip(records, splits):
        images.append({"id": rec["image_id"], "file_name": rec["file_name"], "height": rec["height"],
                       "width": rec["width"]})
        scene = {"image_id": rec["image_id"], "split": split, "kind": rec["kind"], "width": rec["width"],
                 "height": rec["height"], "objects": []}
        for obj in rec["objects"]:
            ann_id = ref_id = len(annotations) + 1
            annotations.append({
                "id": ann_id, "image_id": rec["image_id"], "category_id": cat_id[obj["shape"]],
                "segmentation": obj["segmentation"], "area": obj["area"], "bbox": obj["bbox"], "iscrowd": 0,
            })
            sentences = _sentences(obj["expressions"], next_sent_id)
            next_sent_id += len(sentences)
            stem, ext = os.path.splitext(rec["file_name"])
            refs.append({
                "ref_id": ref_id, "ann_id": ann_id, "image_id": rec["image_id"],
                "category_id": cat_id[obj["shape"]], "split": split, "file_name": f"{stem}_{ann_id}{ext}",
                "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences,
            })
            scene["objects"].append({
                "ann_id": ann_id, "ref_id": ref_id, **{k: obj[k] for k in _SCENE_KEYS},
                "programs": [e["program"] for e in obj["expressions"]],
                **({"redundant": [e["redundant"] for e in obj["expressions"]]} if version != 1 else {}),
            })
        scenes.append(scene)
    categories = [{"id": i, "name": s, "supercategory": "shape"} for s, i in cat_id.items()]
    info = {"description": "synthref: generated by restr.data.synth", "seed": seed}
    if version == 1:
        return ReferSet({"info": info, "images": images, "annotations": annotations, "categories": categories},
                        refs, {"seed": seed, "images": scenes})
    info = {**info, "description": f"synthref version {version}: generated by restr.data.synth", "version": version}
    return ReferSet({"info": info, "images": images, "annotations": annotations, "categories": categories},
                    refs, {"seed": seed, "version": version, "images": scenes})


_SCENE_KEYS = ("shape", "colour", "size", "cx", "cy", "r", "occluded")


def _sentences(expressions: list[dict], first_id: int) -> list[dict]:
    """The refer toolkit's sentence records of one ref's expressions (from their raw form)."""
    out = []
    for sent_id, e in enumerate(expressions, start=first_id):
        tokens = tokenize(e["raw"])
        out.append({"sent_id": sent_id, "sent": " ".join(tokens), "raw": e["raw"], "tokens": tokens})
    return out


def write(refer: ReferSet, layout: Layout) -> None:
    """Stage 3: the three files, each written atomically (the images are already on disk).
    The refs file comes last: its presence marks a complete data set (:func:`generate`
    deletes it first, so a generation killed half-way never looks complete)."""
    atomic_write_bytes(layout.instances_file, _compact_json(refer.instances))
    atomic_write_bytes(layout.scenes_file, _compact_json(refer.scenes))
    # through JSON first: pickle's memo depends on object identity (which differs when
    # records come from worker processes); JSON-decoded objects make the bytes canonical
    atomic_write_bytes(layout.refs_file, pickle.dumps(json.loads(json.dumps(refer.refs)), protocol=4))


def _compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def summarise(refs: list[dict], splits: list[str]) -> dict[str, Any]:
    """Stage 4: images, refs and sentences per split; expression lengths in words (after
    tokenisation) as a histogram and as fractions of the paper's Table 2 buckets."""
    lengths: Counter = Counter()
    per_split: dict[str, Counter] = {}
    for r in refs:
        c = per_split.setdefault(r["split"], Counter())
        c["refs"] += 1
        c["sentences"] += len(r["sentences"])
        lengths.update(len(s["tokens"]) for s in r["sentences"])
    images = Counter(splits)
    for split, c in per_split.items():
        c["images"] = images[split]
    total = sum(lengths.values())
    in_bucket = Counter(bucket_of(n, LENGTH_DATASET) for n in lengths.elements())
    return {
        "images": len(splits),
        "refs": len(refs),
        "sentences": total,
        "splits": {k: dict(v) for k, v in per_split.items()},
        "length_histogram": {int(k): int(v) for k, v in sorted(lengths.items())},
        "bucket_fractions": {label: in_bucket[label] / total for label in bucket_labels(LENGTH_DATASET)},
    }


# ----------------------------------------------------------------------------------------
# the whole run

@dataclass(frozen=True)
class Pictures:
    """How :func:`generate` writes the pictures: ``scale`` enlarges every canvas (scale 5 gives
    480-640 pixel sides, about the size of COCO's images, for timing the data pipeline at the
    paper's resolution); ``jpeg_quality`` from 1 to 100."""

    scale: float = 1.0
    jpeg_quality: int = 92


def generate(
    out: str | os.PathLike,
    seed: int = 0,
    num_images: int = DEFAULT_NUM_IMAGES,
    expressions_per_object: int = 3,
    version: int = DEFAULT_VERSION,
    pictures: Pictures = Pictures(),
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write synthref under ``<out>/synthref/`` and return a summary dict.

    ``out`` is the data ROOT: ``ReferDataset(out, "synthref", "unc", split)`` reads it.
    Files: ``refs(unc).p``, ``instances.json``, ``scenes.json`` and ``images/*.jpg``.
    The bytes depend only on the arguments other than ``workers`` and ``progress``.
    ``version``: the data set version (1: the zoo's data; 2: look-alike distractors and
    expressions as long as the scene needs; see the module's docstring).
    ``pictures``: their canvas scale and JPEG quality (:class:`Pictures`).
    """
    scale, jpeg_quality = pictures.scale, pictures.jpeg_quality
    problem = argument_problem(num_images=num_images, expressions_per_object=expressions_per_object,
                               jpeg_quality=jpeg_quality, workers=workers, scale=scale, version=version)
    if problem:
        name, value, why = problem
        raise DataError(f"{name} {value!r}: {why}")
    t0 = time.perf_counter()
    layout = Layout.under(out)
    layout.image_dir.mkdir(parents=True, exist_ok=True)
    layout.refs_file.unlink(missing_ok=True)  # written again last: until then the data set is incomplete
    for old in [*layout.image_dir.glob("synthref_*.jpg"), *layout.image_dir.glob(".*.tmp"),
                *layout.refs_file.parent.glob(".*.tmp")]:  # the last ones: writes a kill interrupted
        old.unlink(missing_ok=True)
    splits = split_plan(int(num_images))
    jobs = [ImageJob(seed, i, i + 1, kind, str(layout.image_dir), int(expressions_per_object), int(jpeg_quality),
                     float(scale), int(version)) for i, kind in enumerate(scene_kinds(splits, seed))]

    records = render(jobs, workers, progress)
    refer = to_refer(records, splits, seed, int(version))
    write(refer, layout)
    summary = summarise(refer.refs, splits)
    return {**layout.paths(), "seed": seed, "version": int(version), **summary,
            "seconds": round(time.perf_counter() - t0, 2)}


def argument_problem(**args: Any) -> tuple[str, Any, str] | None:
    """The first of :func:`generate`'s arguments that cannot be used, as (name, value, why)."""
    rules = {
        "num_images": (lambda v: v >= len(SPLIT_FRACTIONS), f"must be >= {len(SPLIT_FRACTIONS)} (one image per split)"),
        "expressions_per_object": (lambda v: v >= 1, "must be >= 1"),
        "jpeg_quality": (lambda v: 1 <= v <= 100, "must be from 1 to 100"),
        "workers": (lambda v: v is None or v >= 0, "must be >= 0 (0 or 1: no worker processes)"),
        "scale": (lambda v: SCALES[0] <= v <= SCALES[1],
                  f"choose a value from {SCALES[0]:g} to {SCALES[1]:g} (1 gives images of 96-128 pixels a side)"),
        "version": (lambda v: v in VERSIONS, f"choose one of {', '.join(map(str, VERSIONS))}"),
    }
    for name, value in args.items():
        ok, why = rules[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return name, value, "must be a number"
        if not ok(value):
            return name, value, why
    return None


def load_scenes(root: str | os.PathLike) -> dict:
    """The ``scenes.json`` written beside synthref's refs (attributes and programs)."""
    return json.loads(Layout.under(root).scenes_file.read_text())


KINDS = ("attributes", "region", "relation", "ordinal")  # easiest to hardest, as the model finds them


def expression_kind(program: dict) -> str:
    """What an embedded-data expression needs beyond the target's own attributes: an
    ``ordinal`` ("the leftmost ...", comparing every candidate), a ``relation`` to a
    landmark, a ``region`` of the image, or only its ``attributes``. An expression with
    several is counted under the first of ordinal, relation, region."""
    if program.get("ordinal"):
        return "ordinal"
    if program.get("relations"):
        return "relation"
    if program.get("region"):
        return "region"
    return "attributes"


def expression_kinds(root: str | os.PathLike, refs: list[dict]) -> dict[int, str] | None:
    """Sentence id -> :func:`expression_kind` for the sentences of ``refs`` (refer-format
    refs of the synthref data under ``root``), from the generator's programs in
    ``scenes.json``; None when the folder has no scenes file or its objects no programs."""
    try:
        scenes = load_scenes(root)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    programs = {int(o["ref_id"]): o["programs"] for scene in scenes.get("images", ())
                for o in scene["objects"] if "programs" in o}
    if not programs:
        return None
    return {int(sent["sent_id"]): expression_kind(program) for ref in refs if int(ref["ref_id"]) in programs
            for sent, program in zip(ref["sentences"], programs[int(ref["ref_id"])])}


def version_of(root: str | os.PathLike) -> int:
    """The version of the synthref folder under the data root ``root`` (1 if its files name none)."""
    return int(load_scenes(root).get("version", 1))


def scene_shapes(scene: dict) -> list[Shape]:
    """The :class:`Shape` list of one ``scenes.json`` image, in annotation order."""
    return [Shape(o["shape"], o["colour"], o["size"], o["cx"], o["cy"], o["r"]) for o in scene["objects"]]
