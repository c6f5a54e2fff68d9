"""What a run was trained on, beyond the paths in its config: a fingerprint of the data.

A config names its data by path (``data.root``); regenerating the data in place (another
seed, another size) or replacing a download keeps the path and changes the contents. The
fingerprint holds the SHA-256 of the refs file and of ``instances.json`` (every expression,
split and mask) and of the training vocabulary (the words the model's embedding rows
stand for, as this code tokenises them). The run cache (:mod:`restr.zoo.cache`) keys
runs by config AND fingerprint, and the trainer records it in ``config.json`` and refuses
to resume a run whose data changed.

The image files are not hashed (tens of thousands of files at COCO scale); the
annotations record every image's size, and the reader checks each image against it.

Hashes are cached per process by (path, size, modification time), so the many
``get_run`` calls of a notebook read each file once.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..utils.files import file_sha256
from .errors import DataError
from .refer import ReferData, check_names, load_refs
from .vocab import Vocabulary

FIELDS = ("refs", "instances", "vocabulary")
_VOCAB_CACHE: dict[tuple[str, str, str], str] = {}


def cached_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a data file (:func:`restr.utils.files.file_sha256`, cached while its size
    and mtime stay the same); a :class:`DataError` naming a file that cannot be read."""
    try:
        return file_sha256(path, cached=True)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def vocabulary_sha256(refs_path: Path, refs_hash: str, dataset: str, split_by: str, split: str) -> str:
    """SHA-256 of the vocabulary the trainer builds from ``split`` (its words in order)."""
    key = (refs_hash, f"{dataset}/{split_by}", split)
    if key not in _VOCAB_CACHE:
        splits = check_names(dataset, split_by, split)
        refs = load_refs(refs_path)
        texts = [ReferData.sentence_text(s) for r in refs if r.get("split") in splits
                 for s in r.get("sentences") or [] if isinstance(s, dict)]
        words = Vocabulary.from_sentences(texts).words
        _VOCAB_CACHE[key] = hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()
    return _VOCAB_CACHE[key]


def data_fingerprint(data: Any) -> dict[str, str]:
    """``{"refs", "instances", "vocabulary"}`` SHA-256 digests of the data a
    :class:`restr.config.DataConfig` names. Raises :class:`DataError` if a file is missing."""
    folder = Path(data.root) / data.dataset
    refs, instances = folder / f"refs({data.split_by}).p", folder / "instances.json"
    missing = [str(p) for p in (refs, instances) if not p.is_file()]
    if missing:
        raise DataError(f"missing {' and '.join(missing)} (expected layout: see data/README.md)")
    refs_hash = cached_sha256(refs)
    return {"refs": refs_hash, "instances": cached_sha256(instances),
            "vocabulary": vocabulary_sha256(refs, refs_hash, data.dataset, data.split_by, data.train_split)}


def short(fingerprint: dict[str, str]) -> str:
    """Eight hex digits standing for the whole fingerprint (a run folder's suffix)."""
    joined = "\n".join(f"{k}={fingerprint[k]}" for k in FIELDS)
    return hashlib.sha256(joined.encode()).hexdigest()[:8]


def changes(old: dict[str, str] | None, new: dict[str, str], data: Any) -> list[str]:
    """What differs between two fingerprints, as phrases naming the files."""
    if not old:
        return ["the run records no data fingerprint (it was trained before runs recorded one)"]
    names = {"refs": f"refs({data.split_by}).p", "instances": "instances.json",
             "vocabulary": f"the {data.train_split} vocabulary"}
    return [f"{names[k]} ({old.get(k, '?')[:8]} -> {new[k][:8]})" for k in FIELDS if old.get(k) != new[k]]
