"""Segment one image for one expression with a trained run.

Command line::

    python -m restr predict --run RUN_DIR --image PATH --text "the red circle" --out mask.png
                            [--overlay overlay.png] [--checkpoint last|best|PATH] [--json]

Python::

    from restr.eval.predict import Predictor
    p = Predictor.from_run("runs/tiny-0123abcd")
    r = p.predict("photo.jpg", "the red circle", return_attention=True)
    r["mask"]          # (h0, w0) bool, at the image's own resolution (probability >= 0.5)
    r["probability"]   # (h0, w0) float32, sigmoid of the unletterboxed mask logits
    r["patch_map"]     # (H/P, W/P) float32, the patch-level probability (letterboxed grid)
    r["seed_attention"]  # list of SeedAttention (batch of one), with return_attention=True
    r["mutual_attention"]  # M3Att models instead: list of MutualMaps (LAV and VAL per M3Dec layer)

The image is letterboxed exactly as in training and evaluation, and the prediction is
mapped back with the inverse transform.

Expressions: an empty one (no words after tokenisation) is an error
(:class:`restr.data.EmptyExpressionError`). Words the run's vocabulary lacks map to
``<unk>``; if EVERY word is unknown the model sees nothing but ``<unk>`` and its
prediction does not depend on the text, so a :class:`UnknownWordsWarning` names the
words (the prediction is still returned, with ``unknown_words`` listing them;
``strict=True`` turns this into an error). The model reads at most ``model.max_words``
words (20, as in the paper); a longer expression is cut, and a
:class:`TruncatedExpressionWarning` says so and names the words left out (also returned
as ``truncated_words``, empty when nothing was cut).
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from ..data.errors import DataError
from ..data.images import load_rgb
from ..data.transforms import letterbox, normalize, unletterbox
from ..data.vocab import tokenize
from ..runs.folder import load_run


class UnknownWordsWarning(UserWarning):
    """Every word of the expression is outside the run's vocabulary."""


class TruncatedExpressionWarning(UserWarning):
    """The expression has more words than the model reads (``model.max_words``)."""


def truncation_message(words: list[str], max_words: int) -> str:
    """What a cut expression loses, in one sentence ("" when it is not cut)."""
    if len(words) <= max_words:
        return ""
    return (f"the expression has {len(words)} words; the model reads only the first {max_words}: "
            f"{' '.join(words[max_words:])!r} is ignored")


class Predictor:
    """A trained model with its vocabulary and input size, ready to segment images."""

    def __init__(self, model: torch.nn.Module, vocab, cfg, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.vocab = vocab
        self.cfg = cfg
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, checkpoint: str = "last", device: str = "cpu") -> "Predictor":
        """Load a run directory (config.json, vocab.json, checkpoints/<checkpoint>.pt).

        Raises :class:`restr.runs.folder.RunError` naming the missing or corrupt file.
        """

        run = load_run(run_dir, checkpoint, device)
        p = cls(run.model, run.vocab, run.cfg, device)
        p.run_dir, p.step, p.checkpoint = run.run_dir, run.step, run.checkpoint
        return p

    # -- input -----------------------------------------------------------------------------
    @staticmethod
    def load_image(image: Any) -> np.ndarray:
        """A path, a PIL image or a NumPy array -> H x W x 3 uint8 RGB, upright (EXIF
        orientation applied). The accepted forms and how each is read are listed in
        :mod:`restr.data.images`; anything else raises a :class:`DataError` saying what was given."""

        return load_rgb(image)

    def encode(self, text: str, strict: bool = False) -> tuple[torch.Tensor, list[str], list[str]]:
        """(ids (1, max_words), unknown words, words cut off). Warns when every word is
        unknown, and when the expression is longer than ``model.max_words``."""

        ids, length = self.vocab.encode(text, self.cfg.model.max_words)  # EmptyExpressionError if empty
        all_tokens = tokenize(text)
        tokens, dropped = all_tokens[:length], all_tokens[length:]
        if dropped:
            warnings.warn(truncation_message(all_tokens, length), TruncatedExpressionWarning, stacklevel=3)
        unknown = [t for t in tokens if t not in self.vocab]
        if unknown and len(unknown) == len(tokens):
            msg = (f"every word of {text!r} is outside the run's vocabulary ({', '.join(unknown)}); the model sees "
                   f"only <unk> and its prediction does not depend on the text")
            if strict:
                raise DataError(msg)
            warnings.warn(msg, UnknownWordsWarning, stacklevel=3)
        return torch.from_numpy(ids)[None], unknown, dropped

    # -- prediction ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, image: Any, text: str, return_attention: bool = False, strict: bool = False) -> dict[str, Any]:
        rgb = self.load_image(image)
        boxed, meta = letterbox(rgb, self.cfg.model.image_hw)
        x = normalize(boxed)[None].to(self.device)
        words, unknown, dropped = self.encode(text, strict)
        out = self.model(x, words.to(self.device), return_attention=return_attention)
        logits = unletterbox(out.mask_logits[0, 0].float().cpu(), meta)
        result: dict[str, Any] = {
            "mask": (logits >= 0).numpy(),
            "probability": torch.sigmoid(logits).numpy().astype(np.float32),
            "patch_map": torch.sigmoid(out.patch_logits[0, 0].float()).cpu().numpy(),
            "unknown_words": unknown,
            "truncated_words": dropped,  # words after the first model.max_words, which the model never sees
            "letterbox": meta,
        }
        if return_attention:
            result["seed_attention"] = out.seed_attention  # None for M3Att, which has no class seed
            if getattr(out, "mutual_attention", None) is not None:  # M3Att (model.family = "m3att")
                result["mutual_attention"] = out.mutual_attention
        return result
