"""The model zoo: the book's trained models, shipped in the repository (``data/zoo/``).

A laptop cannot train the book's twenty models inside the main job, so the book ships
them, the way tutorial books ship trained checkpoints: a notebook asks for a config;
:func:`restr.zoo.cache.get_run` finds a finished run in ``runs/``, else a zoo model
whose identity matches (and whose file hash checks out), else trains. Nothing is ever
retrained silently in place of a zoo file that is corrupt or does not match: that is an
error naming the file.

``data/zoo/`` holds, per model, ``<name>.safetensors`` (weights only, fp16) and
``<name>.metrics.jsonl.gz`` (the training run's log, its learning curve, gzipped: a
converged run's log is some 600 kB of JSON, a sixth of that compressed; models added
before the logs were compressed keep a plain ``.metrics.jsonl``), and one
``manifest.json`` with an entry per model: name, file and its sha256, the full config
and its identity, the data's fingerprint, seed, git commit, command, wall time, CPU,
the vocabulary, and the metrics of a fixed validation slice computed with the fp16
weights (and with the fp32 ones, to show the rounding costs less than 0.1 IoU points).
``scores/<name>/`` holds the per-expression scores the book computed from a model's
weights (``python -m restr zoo scores`` after a book run, or when the model joined the
zoo; each ``.csv.gz`` beside its stamp: the weights' digest, the arithmetic and the
metric protocol), copied (unzipped) into every run rebuilt from the model, so a fresh
clone's book does not evaluate again what the zoo already holds.

A model may ship its log and scores without its weights (``"file": null`` in its entry,
``"weights_sha256"`` the digest its scores are stamped with): the converged campaign's
seeds after the first, whose weights would not fit in the zoo's 200 MB
(:attr:`restr.config.BookProfile.every_seed_weights` says which models keep every seed's).
A run rebuilt from such a model holds ``checkpoints/no-weights.json`` in place of its
checkpoint: the book reads its learning curve and its scores, and anything that needs
its weights is told the command that retrains it.

Identity: a hash of everything in the config that shapes the weights (the data's
location, loader workers, threads and log interval left out) plus the data's
fingerprint (the sha256 of its refs and instances files), so that the same model is
found wherever the repository is cloned, and a regenerated data set is not mistaken for
the one a model was trained on.
A lookup hashes each entry's stored config as this code reads it, so a config field
added after a model was trained (with a default that computes what the code computed
before) does not orphan it; the zoo test's exact re-evaluation of every model guards
that promise. The identity cannot see a change of what an existing option *means*
(``model.head = "release"`` changed its Eq. (10) when the release's form was corrected):
a model trained before such a change no longer loads into its config, which
:func:`materialize` reports by name, and it must be retrained
(``python -m restr zoo train --profile quick --only MODEL --seeds N --retrain``, the
command the error prints).

Names: the quick profile's models (the ones shipped) are ``<model>-s<seed>``; another
profile's carry it in front (``smoke-main-s0``), so that training one profile's models
never replaces another's. ``zoo train`` never replaces an entry of another config under
the same name unless asked (``--retrain``).

``python -m restr zoo list`` prints the manifest; ``python -m restr zoo train`` trains
what the book needs and is missing (``--only MODEL``, ``--seeds N``, ``--retrain``);
``python -m restr zoo scores`` ships the last book run's scores of the zoo's models.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Config, ConfigError
from ..data.fingerprint import data_fingerprint, short
from ..data.vocab import Vocabulary
from ..eval.evaluate import evaluate_run
from ..model import build_model
from ..runs.folder import (CKPT_DIR, CONFIG_FILE, NO_WEIGHTS_FILE, LoopState, load_checkpoint, read_run_config,
                           save_checkpoint, state_digest, write_run_config)
from ..utils.devices import resolve_amp
from ..utils.files import REPO, atomic_write_bytes, atomic_write_text, exclusive_lock, file_sha256, read_jsonl

ZOO_DIR = REPO / "data" / "zoo"  # $RESTR_ZOO names another folder (tests)
MANIFEST = "manifest.json"
# config fields that do not shape the weights: left out of a model's identity
NOT_IDENTITY = ("data.root", "data.image_root", "data.num_workers", "train.log_every", "train.threads")
ZOO_PROFILE = "quick"  # the book profile whose models the repository ships: their names carry no profile
EVAL_SLICE = {"split": "val", "max_expressions": 1000}  # the manifest's metrics: reproduced by the zoo test


def zoo_folder(zoo_dir: str | os.PathLike | None = None) -> Path:
    """``zoo_dir``, else ``$RESTR_ZOO``, else the repository's ``data/zoo``."""
    return Path(zoo_dir or os.environ.get("RESTR_ZOO") or ZOO_DIR)


class ZooError(RuntimeError):
    """A zoo file that is missing, corrupt, or does not match its manifest entry."""


# ----------------------------------------------------------------------------------------
# identity

def zoo_identity(cfg: Config, fingerprint: str) -> str:
    """The model's identity: its weight-shaping config and its data (see the module doc)."""
    flat = {f"{s}.{k}": v for s in ("model", "data", "train") for k, v in cfg.to_dict()[s].items()}
    kept = {k: v for k, v in flat.items() if k not in NOT_IDENTITY and k != "model.vocab_size"}
    payload = json.dumps({"config": kept, "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------
# the manifest

def read_manifest(zoo_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    path = zoo_folder(zoo_dir) / MANIFEST
    if not path.is_file():
        return []
    try:
        models = json.loads(path.read_text())["models"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ZooError(f"{path} is not a zoo manifest ({exc})") from None
    return list(models)


def write_manifest(models: list[dict[str, Any]], zoo_dir: str | os.PathLike | None = None) -> None:
    models = sorted(models, key=lambda m: m["name"])
    atomic_write_text(zoo_folder(zoo_dir) / MANIFEST, json.dumps({"models": models}, indent=1) + "\n")


def find(cfg: Config, zoo_dir: str | os.PathLike | None = None,
         fingerprint: str | None = None) -> dict[str, Any] | None:
    """The manifest entry of the model ``cfg`` asks for, or None (``fingerprint``: the
    data's short fingerprint, :func:`restr.data.fingerprint.short`, if already known)."""
    models = read_manifest(zoo_dir)
    if not models:
        return None
    key = zoo_identity(cfg, fingerprint or short(data_fingerprint(cfg.data)))
    return next((m for m in models if current_identity(m) == key), None)


def current_identity(entry: dict[str, Any]) -> str:
    """The entry's identity under this code: its stored config read back (a field added
    since it was trained takes its default) and hashed with its data's fingerprint. The
    manifest's own ``identity`` is the one at training time. That a new field's default
    keeps the old computation is what the zoo test checks: every model reproduces its
    manifest numbers."""

    try:
        cfg = Config.from_dict(entry["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ZooError(f"zoo model {entry.get('name')!r}: its config does not load under this code ({exc})") from None
    return zoo_identity(cfg, entry["data_fingerprint"])


def entry_name(model: str, seed: int, profile: str) -> str:
    """The zoo name of a book model's seed: ``main-s0`` for the quick profile's, ``smoke-main-s0``
    for the smoke profile's (see the module doc)."""
    return f"{model}-s{seed}" if profile == ZOO_PROFILE else f"{profile}-{model}-s{seed}"


def retrain_command(entry: dict[str, Any]) -> str:
    """The command that trains the entry again and puts it back in the zoo."""

    profile, model = entry_model(entry)
    return f"python -m restr zoo train --profile {profile} --only {model} --seeds {entry['seed']} --retrain"


def entry_model(entry: dict[str, Any]) -> tuple[str, str]:
    """(book profile, book model name) of a zoo entry: ``("converged", "main")`` for
    ``converged-main-s1``."""
    profile = entry.get("profile")
    if profile is None:  # entries from before "profile" was recorded: their command names it
        found = re.search(r"--profile (\S+)", str(entry.get("command", "")))
        profile = found.group(1) if found else ZOO_PROFILE
    model = entry["name"].removesuffix(f"-s{int(entry['seed'])}")
    if profile != ZOO_PROFILE:
        model = model.removeprefix(f"{profile}-")
    return profile, model


def checked_file(entry: dict[str, Any], zoo_dir: str | os.PathLike | None = None) -> Path:
    """The entry's weights file, after checking it is there and its sha256 matches."""
    if entry.get("file") is None:
        raise ZooError(f"zoo model {entry['name']!r} ships its log and scores but not its weights; retrain it with "
                       f"`{retrain_command(entry)}`")
    path = zoo_folder(zoo_dir) / entry["file"]
    if not path.is_file():
        raise ZooError(f"zoo model {entry['name']!r}: {path} is missing (the manifest lists it); restore it with "
                       f"git, or retrain it with `{retrain_command(entry)}`")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise ZooError(f"zoo model {entry['name']!r}: {path} is corrupt or was replaced (sha256 {digest[:12]}..., "
                       f"the manifest says {entry['sha256'][:12]}...); restore it with git, or retrain it with "
                       f"`{retrain_command(entry)}`")
    return path


def load_weights(entry: dict[str, Any], zoo_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The entry's weights as fp32 tensors (the file holds fp16 floats)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = checked_file(entry, zoo_dir)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"zoo model {entry['name']!r}: cannot read {path}: {exc}") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# ----------------------------------------------------------------------------------------
# zoo model <-> run directory

SCORES_DIR = "scores"  # data/zoo/scores/<name>/: the book's per-expression scores of a model
SCORE_SUFFIXES = (".csv.gz", ".json")  # data/zoo/scores/<name>/: each stamp plain, its scores gzipped
LOG_SUFFIX = ".metrics.jsonl.gz"  # <name>.metrics.jsonl.gz: the run's log
SIZE_LIMIT_MB = 200  # the zoo's budget in the repository (issue 22): data/zoo/ as a whole


def materialize(entry: dict[str, Any], run_dir: str | os.PathLike, cfg: Config,
                zoo_dir: str | os.PathLike | None = None) -> Path:
    """Write a finished run directory for the zoo model (config, vocabulary, weights as
    ``checkpoints/last.pt``, its training log, its shipped scores), so that everything that
    reads runs reads it. A model that ships no weights gets ``checkpoints/no-weights.json``
    in place of its checkpoint. ``cfg`` is the requesting config (its data location is this
    machine's)."""

    vocab = Vocabulary(entry["vocab"])
    resolved = cfg.override({"model.vocab_size": len(vocab)})
    state = None if entry.get("file") is None else load_weights(entry, zoo_dir)
    log = read_log_bytes(zoo_folder(zoo_dir) / entry["metrics_file"])  # a bad log is refused before any file is made
    if state is not None:
        try:
            build_model(resolved.override({"model.vit_weights": None}).model).load_state_dict(state)
        except RuntimeError as exc:
            raise ZooError(f"zoo model {entry['name']!r} does not fit its config: "
                           f"{str(exc).splitlines()[0]}") from None
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).exists():
        raise ZooError(f"{run_dir} already holds a run; not overwriting it with zoo model {entry['name']!r}")
    # each file atomically; config.json, without which there is no run, comes last
    (run_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    vocab.save(run_dir / "vocab.json")
    step = resolved.train.iterations
    if state is not None:
        save_checkpoint(run_dir / CKPT_DIR / "last.pt", {"format": 1, "step": step, "epoch": None,
                                                         "finished": True, "model": state, "zoo": entry["name"]})
    else:
        marker = {"zoo": entry["name"], "weights_sha256": entry["weights_sha256"], "retrain": retrain_command(entry)}
        atomic_write_text(run_dir / CKPT_DIR / NO_WEIGHTS_FILE, json.dumps(marker) + "\n")
    atomic_write_bytes(run_dir / "metrics.jsonl", log)
    loop = LoopState(step=step)
    atomic_write_text(run_dir / CKPT_DIR / "last.json", json.dumps(loop.summary(step, finished=True)) + "\n")
    install_scores(entry, run_dir, zoo_dir)
    write_run_config(run_dir, resolved, cfg.run_key(), fingerprint=data_fingerprint(cfg.data))
    return run_dir


def read_log_bytes(path: Path) -> bytes:
    """A zoo model's training log as plain JSON lines: ``.gz`` files are decompressed; a
    missing log reads as empty (the model still loads, without its learning curve)."""
    if not path.is_file():
        return b""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise ZooError(f"zoo log {path} is not a readable gzip file ({exc}); restore it with git checkout") from None


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """The run's log, gzipped with no timestamp in the header, so the same rows give the
    same bytes (and git stores one blob)."""
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    atomic_write_bytes(path, gzip.compress(text, compresslevel=9, mtime=0))


def install_scores(entry: dict[str, Any], run_dir: str | os.PathLike, zoo_dir: str | os.PathLike | None = None) -> int:
    """Copy the per-expression scores the book computed from this zoo model's weights
    (``data/zoo/scores/<name>/``, written by ``python -m restr zoo scores``, each ``.csv``
    gzipped) into the run's ``scores/``, so that a fresh clone's book evaluates nothing it
    has already evaluated. They carry their stamp (weights digest, arithmetic, protocol) and
    are read only while it matches (:func:`restr.book.analysis.expression_scores`);
    otherwise the book scores again. Returns the number of files copied."""

    source = zoo_folder(zoo_dir) / SCORES_DIR / entry["name"]
    files = sorted(f for f in source.glob("*") if f.name.endswith(SCORE_SUFFIXES) and f.is_file()) \
        if source.is_dir() else []
    for f in files:
        data = f.read_bytes()
        if f.suffix == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise ZooError(f"zoo scores {f} are not a readable gzip file ({exc}); restore them with git "
                               f"checkout") from None
        atomic_write_bytes(Path(run_dir) / "scores" / f.name.removesuffix(".gz"), data, durable=False)
    return len(files)


def ship_score_files(stamp: Path, target: Path) -> None:
    """Ship one score file of a run into ``target``: its stamp (``.json``) as it is, its
    scores (the ``.csv`` beside it) gzipped, with no timestamp, so the same scores give the
    same bytes."""
    atomic_write_bytes(target / stamp.name, stamp.read_bytes(), durable=False)
    scores = stamp.with_suffix(".csv")
    atomic_write_bytes(target / f"{scores.name}.gz", gzip.compress(scores.read_bytes(), compresslevel=9, mtime=0),
                       durable=False)


def evaluate_slice(run_dir: str | os.PathLike) -> dict[str, float]:
    """The manifest's metrics of a run: the fixed validation slice, on the CPU."""

    r = evaluate_run(run_dir, EVAL_SLICE["split"], max_expressions=EVAL_SLICE["max_expressions"], device="cpu",
                     num_workers=0)
    keys = ("cum_iou", "mean_iou", "prec@0.5", "prec@0.6", "prec@0.7", "prec@0.8", "prec@0.9")
    return {k: r[k] for k in keys} | {"expressions": r["expressions"]}


def eval_arithmetic(cfg: Config) -> str:
    """The arithmetic a CPU evaluation of ``cfg`` computes in on this machine: ``bfloat16``
    (bf16 autocast on a CPU with native bf16) or ``float32`` (everything else). The
    manifest records it; a slice evaluated in other arithmetic agrees only to rounding."""

    dtype = resolve_amp(cfg.train.amp, torch.device("cpu"))
    return "bfloat16" if dtype == torch.bfloat16 else "float32"


def entry_arithmetic(entry: dict[str, Any]) -> str:
    """The arithmetic an entry's metrics were computed in: recorded since this field exists;
    before it, every zoo model was trained and evaluated on a CPU with native bf16 (AVX512-
    BF16), so its bf16 configs were evaluated in bfloat16."""
    if "eval_arithmetic" in entry:
        return entry["eval_arithmetic"]
    return "bfloat16" if entry["config"]["train"].get("amp") == "bf16" else "float32"


@dataclass(frozen=True)
class Shipping:
    """What of a model the zoo ships beside its log and manifest entry: its fp16 weights
    (``weights``), and the per-expression scores ``score(run)`` writes into a run's
    ``scores/`` (None: none at training time; ``python -m restr zoo scores`` ships a book
    run's later)."""

    weights: bool = True
    score: Callable[[Path], None] | None = None


def add_to_zoo(run_dir: str | os.PathLike, name: str, command: str, wall_s: float,
               zoo_dir: str | os.PathLike | None = None, profile: str | None = None,
               cpu_s: float | None = None, shipping: Shipping = Shipping()) -> dict[str, Any]:
    """Export a finished run into the zoo as ``name`` (fp16 weights, its log, a manifest
    entry; ``profile``: the book profile it was trained for); evaluates the slice with the
    fp32 and the fp16 weights. ``shipping.score(run)``, given, writes the per-expression
    scores the book reads into the fp16 model's run; they ship in ``scores/<name>/``.
    Without ``shipping.weights`` the fp16 weights are dropped once evaluated and scored:
    the entry keeps their digest (``weights_sha256``), its ``file`` is None."""
    from safetensors.torch import save


    run_dir, zoo_dir = Path(run_dir), zoo_folder(zoo_dir)
    cfg = read_run_config(run_dir)
    fp32 = evaluate_slice(run_dir)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    zoo_dir.mkdir(parents=True, exist_ok=True)
    weights = zoo_dir / f"{name}.safetensors"
    atomic_write_bytes(weights, save(half))
    write_log(zoo_dir / f"{name}{LOG_SUFFIX}", list(read_jsonl(run_dir / "metrics.jsonl")))
    (zoo_dir / f"{name}.metrics.jsonl").unlink(missing_ok=True)  # the plain log of a model this one replaces
    fingerprint = short(data_fingerprint(cfg.data))
    entry = {
        "name": name, "file": weights.name, "sha256": file_sha256(weights), "metrics_file": f"{name}{LOG_SUFFIX}",
        "identity": zoo_identity(cfg, fingerprint), "data_fingerprint": fingerprint, "config": cfg.to_dict(),
        "seed": cfg.train.seed, "profile": profile, "commit": _git_commit(), "command": command,
        "wall_s": round(wall_s, 1), "cpu_s": None if cpu_s is None else round(cpu_s, 1),
        "cpu": cpu_name(), "torch": torch.__version__, "trained": time.strftime("%Y-%m-%d"), "dtype": "float16",
        "vocab": Vocabulary.load(run_dir / "vocab.json").words, "eval": dict(EVAL_SLICE), "fp32_metrics": fp32,
        "eval_arithmetic": eval_arithmetic(cfg),
    }
    with _temporary_run(entry, cfg, zoo_dir) as fp16_run:
        entry["metrics"] = evaluate_slice(fp16_run)
        entry["weights_sha256"] = state_digest(load_checkpoint(fp16_run / CKPT_DIR / "last.pt")["model"])
        if shipping.score is not None:
            shipping.score(fp16_run)
            # the scores of these weights only: a model it replaces brought its own into the run
            ship_scores(fp16_run, zoo_dir / SCORES_DIR / name, entry["weights_sha256"])
    if not shipping.weights:
        weights.unlink()
        entry.update(file=None, sha256=None)
    with manifest_lock(zoo_dir):  # another `zoo train` job may add its model at the same moment
        models = [m for m in read_manifest(zoo_dir) if m["name"] != name] + [entry]
        write_manifest(models, zoo_dir)
    return entry


def ship_scores(run_dir: Path, target: Path, digest: str | None = None) -> int:
    """Ship a run's score files (each ``scores/*.json`` stamp with its ``.csv``; with
    ``digest``, only those stamped with those weights) into ``target``, which they replace
    (:func:`ship_score_files`). Returns the number of files."""
    stamps = [f for f in sorted((run_dir / "scores").glob("*.json")) if f.with_suffix(".csv").is_file()
              and (digest is None or json.loads(f.read_text()).get("weights_sha256") == digest)]
    shutil.rmtree(target, ignore_errors=True)
    for stamp in stamps:
        ship_score_files(stamp, target)
    return 2 * len(stamps)


def manifest_lock(zoo_dir: str | os.PathLike | None = None):
    """An exclusive lock on the zoo's manifest (a ``manifest.lock`` file beside it), held while
    one process reads, changes and writes it."""
    return exclusive_lock(zoo_folder(zoo_dir) / "manifest.lock")


class _temporary_run:
    """A context manager: the zoo entry materialised in a temporary folder."""

    def __init__(self, entry: dict, cfg: Config, zoo_dir: Path):
        self.tmp = tempfile.TemporaryDirectory(prefix="restr-zoo-")
        self.entry, self.cfg, self.zoo_dir = entry, cfg, zoo_dir

    def __enter__(self) -> Path:
        return materialize(self.entry, Path(self.tmp.name) / "run", self.cfg, self.zoo_dir)

    def __exit__(self, *exc) -> None:
        self.tmp.cleanup()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    """This machine's CPU as the manifest records it: "<model name> (<n> cores)"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


# ----------------------------------------------------------------------------------------
# command line

def format_manifest(models: list[dict[str, Any]]) -> str:
    rows = [f"{'name':<22}{'cIoU %':>8}{'mIoU %':>8}{'P@0.9 %':>9}{'steps':>7}{'wall':>8}  seed  "
            f"{'identity':<18}file"]
    for m in models:
        met, t = m["metrics"], m["config"]["train"]
        rows.append(f"{m['name']:<22}{100 * met['cum_iou']:8.2f}{100 * met['mean_iou']:8.2f}"
                    f"{100 * met['prec@0.9']:9.2f}{t['iterations']:7d}{m['wall_s'] / 60:7.1f}m  {m['seed']:>4}  "
                    f"{m['identity']}  {m['file'] or '(log and scores)'}")
    rows.append(f"{len(models)} models; metrics: {EVAL_SLICE['max_expressions']} "
                f"{EVAL_SLICE['split']} expressions spread over the split, fp16 weights, CPU")
    rows.append(format_space(zoo_space()))
    return "\n".join(rows)


def zoo_space(zoo_dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Bytes the zoo folder takes, by what takes them: ``weights`` (.safetensors), ``logs``
    (training logs), ``scores`` (the shipped per-expression scores), ``other`` (the
    manifest and anything else), and ``total``."""
    folder = zoo_folder(zoo_dir)
    space = {"weights": 0, "logs": 0, "scores": 0, "other": 0}
    for f in folder.rglob("*") if folder.is_dir() else ():
        if not f.is_file():
            continue
        kind = ("scores" if SCORES_DIR in f.relative_to(folder).parts[:1] else "weights" if f.suffix == ".safetensors"
                else "logs" if ".metrics.jsonl" in f.name else "other")
        space[kind] += f.stat().st_size
    space["total"] = sum(space.values())
    return space


def format_space(space: dict[str, int]) -> str:
    """One line: the zoo's size against its limit, and what takes the space."""
    parts = ", ".join(f"{k} {space[k] / 1e6:.1f}" for k in ("weights", "logs", "scores", "other"))
    over = space["total"] > SIZE_LIMIT_MB * 1e6
    return (f"data/zoo: {space['total'] / 1e6:.1f} MB of its {SIZE_LIMIT_MB} MB limit ({parts} MB)"
            + ("  OVER THE LIMIT" if over else ""))
