"""Run directories, checkpoints and the checkpointer of a training run.

A run directory (written by ``python -m restr train``, rank 0 only) holds::

    config.json          the full resolved Config (``Config.to_dict()``; model.vocab_size
                         is the data's vocabulary size) plus "vocab_file", "config_hash" and
                         "vocab_sha256" (the hash of vocab.json's words in order, checked
                         whenever the run is read: the same words in another order are
                         another vocabulary)
    vocab.json           the training split's vocabulary (restr.data.vocab.Vocabulary)
    metrics.jsonl        one JSON object per line: training logs, validations, events
    checkpoints/last.pt  the latest checkpoint, checkpoints/last.json its summary
    checkpoints/best.pt  the best validation's checkpoint (and best.json)

    .lock                while a process trains the run: its pid (restr.runs.lock)

Every file is written atomically (:func:`restr.utils.atomic_write_bytes`), so a killed
process never leaves a half-written checkpoint behind; the temporary files of writes that
a kill interrupted are removed when the run next starts. A checkpoint is a plain dict
(``torch.save``)::

    {"format": 1, "step", "epoch", "step_in_epoch", "finished", "best_val",
     "model", "optimizer", "scheduler", "scaler"   (state_dicts),
     "rng": [one {"python", "numpy", "torch", "cuda"} per rank],
     "log_window": the partial sums of the next log row, "world_size", "config"}

:class:`Checkpointer` is the trainer's view of its run directory (in the shape of
detectron2's checkpointer): :meth:`~Checkpointer.open` checks it against the command,
:meth:`~Checkpointer.start` writes a new run's files, :meth:`~Checkpointer.restore`
puts a checkpoint back into the model, optimiser and loop, :meth:`~Checkpointer.save`
writes one, :meth:`~Checkpointer.load_best` reloads the best weights.

Everything that reads a run reports a missing folder, a missing checkpoint or a
corrupt/truncated file as a :class:`RunError` naming the file.

Resuming (:meth:`Checkpointer.open`) starts from ``last.pt``, or from ``best.pt`` when
asked (``resume="best"``); when ``last.pt`` is missing or corrupt and ``best.pt`` is
intact, the error offers it. A run that died after its first ``best.pt`` and before its
first ``last.pt`` (no ``last.json`` either) resumes from ``best.pt``: it is the newest
state the run saved. A finished run resumes to nothing at all. A run is trained
longer only when asked (``extend``): the lr schedule is then that of the new length.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, ConfigError
from ..optim import load_optimizer_state, lr_at, warmup_steps
from .lock import RunLock
from ..utils.files import (DiskFullError, append_jsonl, atomic_write_bytes, atomic_write_text, human_size, read_jsonl,
                           write_jsonl)

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "checkpoints"


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


class TrainingError(RuntimeError):
    """Training cannot go on: a diverged loss, or a run directory that does not fit the
    command (a run where a new one should start, nothing where one should resume)."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic write (tmp file + fsync + rename)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _checkpoint_globals() -> list:
    """The only Python globals a restr checkpoint names: NumPy's random state (a uint32
    array inside ``rng[i]["numpy"]``) is pickled through these (array, dtype, the uint32
    dtype's class, and NumPy's array rebuilder). Everything else is tensors, dicts, lists,
    tuples, strings and numbers, which ``weights_only`` admits."""
    from numpy._core import multiarray

    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), multiarray._reconstruct,
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]  # written under NumPy 1.x


def _refused_global(exc: BaseException) -> str | None:
    """The global a ``weights_only`` load refused (``"os.system"``), from its message."""
    import re

    if "Weights only load failed" not in str(exc):
        return None
    found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
    return next(g for g in found.groups() if g) if found else None


def _load_error_detail(exc: BaseException) -> str:
    """The line of a ``torch.load`` error that says what is wrong (not its advice boilerplate)."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        for line in text.splitlines():
            if "WeightsUnpickler error:" in line and line.split("WeightsUnpickler error:", 1)[1].strip():
                return line.split("WeightsUnpickler error:", 1)[1].strip()
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        useful = [line for line in lines if not line.startswith(("Please file", "Check the documentation", "(1)",
                                                                 "(2)", "WeightsUnpickler error:"))]
        return useful[0] if useful else "not a plain checkpoint"
    return text.splitlines()[0] if text else type(exc).__name__


def _torch_load(path: Path, map_location) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only (and the
    NumPy globals of :func:`_checkpoint_globals`); a file naming any other global is refused,
    so no code in a checkpoint ever runs."""
    with torch.serialization.safe_globals(_checkpoint_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; clear errors for bad files.

    Only plain data is read (``weights_only``); a checkpoint that names a Python global a
    restr checkpoint never holds is a :class:`RunError` naming the file and the global."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        state = _torch_load(path, map_location)
    except Exception as exc:  # noqa: BLE001 - torch.load raises anything its unpickler meets
        refused = _refused_global(exc)
        if refused is not None:
            raise RunError(f"{path}: refused to load: it names the Python global {refused}, which a restr checkpoint "
                           f"never holds (a foreign or crafted file; nothing in it was run)") from None
        first = _load_error_detail(exc)
        with open(path, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"  # torch.save's format: a zip archive
        if not zipped:
            raise RunError(f"{path} is not a restr checkpoint (torch.load cannot read it: {first})") from None
        raise RunError(
            f"checkpoint {path} is corrupt or truncated ({path.stat().st_size} bytes) and cannot be loaded: "
            f"{first}. Delete it, or resume from another checkpoint."
        ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise RunError(f"{path} is not a restr checkpoint (expected a dict with 'model' and 'step')")
    return state


# ----------------------------------------------------------------------------------------
# run directories

def checkpoint_path(run_dir: str | os.PathLike, which: str = "last") -> Path:
    """``which``: "last", "best", or a file path."""
    if which in ("last", "best"):
        return Path(run_dir) / CKPT_DIR / f"{which}.pt"
    return Path(which)


def write_run_config(run_dir: str | os.PathLike, cfg: Config, requested_hash: str | None = None,
                     fingerprint: dict | None = None) -> None:
    from ..data.vocab import Vocabulary

    d = cfg.to_dict()
    d["vocab_file"] = VOCAB_FILE
    d["config_hash"] = requested_hash or cfg.hash()
    if (Path(run_dir) / VOCAB_FILE).is_file():  # written before config.json, by every writer of runs
        d["vocab_sha256"] = Vocabulary.load(Path(run_dir) / VOCAB_FILE).sha256()
    if fingerprint is not None:
        d["data_fingerprint"] = fingerprint  # restr.data.fingerprint: what the run was trained on
    atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(d, indent=2) + "\n")


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a config.json that :func:`write_run_config` wrote."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("vocab_file") == VOCAB_FILE and "config_hash" in d


def check_run_vocab(run_dir: str | os.PathLike, vocab) -> None:
    """A :class:`RunError` naming both files if ``vocab`` (the run's vocab.json) is not the
    vocabulary its config.json records (by the hash of its words in order; runs from before
    the hash was recorded are checked by count only, in :func:`load_run`)."""
    run_dir = Path(run_dir)
    try:
        recorded = json.loads((run_dir / CONFIG_FILE).read_text()).get("vocab_sha256")
    except (OSError, ValueError, AttributeError):
        return  # read_run_config reports an unreadable config.json
    if recorded is not None and recorded != vocab.sha256():
        raise RunError(f"{run_dir / VOCAB_FILE} is not the vocabulary the run was trained with: its words (in order) "
                       f"hash to {vocab.sha256()[:12]}..., {run_dir / CONFIG_FILE} records {str(recorded)[:12]}... "
                       f"(words changed, added, removed or reordered); restore the run's own {VOCAB_FILE}")


def read_run_fingerprint(run_dir: str | os.PathLike) -> dict | None:
    """The data fingerprint recorded in a run's config.json (None for runs from before)."""
    try:
        fp = json.loads((Path(run_dir) / CONFIG_FILE).read_text()).get("data_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return fp if isinstance(fp, dict) else None


def read_run_config(run_dir: str | os.PathLike) -> Config:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory does not exist: {run_dir}")
    if not run_dir.is_dir():
        raise RunError(f"not a directory: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory: {path} is missing")
    try:
        d = json.loads(path.read_text())
        return Config.from_dict(d)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from None


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    vocab: Any  # restr.data.vocab.Vocabulary
    model: torch.nn.Module
    step: int
    checkpoint: Path


def load_run(run_dir: str | os.PathLike, which: str = "last", device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run from its directory alone (config, vocabulary, checkpoint).

    The model is in eval mode on ``device``. Raises :class:`RunError` for a missing run
    directory, a missing or corrupt checkpoint, or a vocabulary that does not match.
    """
    from ..data.vocab import Vocabulary
    from ..data.errors import DataError
    from ..model import build_model

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    ckpt = checkpoint_path(run_dir, which)
    if ckpt.is_dir():
        raise RunError(f"{ckpt} is a folder, not a checkpoint file")
    if not ckpt.is_file():
        others = sorted(p.name for p in (run_dir / CKPT_DIR).glob("*.pt")) if (run_dir / CKPT_DIR).is_dir() else []
        hint = f" (found: {', '.join(others)})" if others else " (the run has not saved a checkpoint yet)"
        raise RunError(f"no checkpoint at {ckpt}{hint}")
    try:
        vocab = Vocabulary.load(run_dir / VOCAB_FILE)
    except DataError as exc:
        raise RunError(str(exc)) from None
    if len(vocab) != cfg.model.vocab_size:
        raise RunError(f"{run_dir / VOCAB_FILE} has {len(vocab)} words but config.json says "
                       f"model.vocab_size = {cfg.model.vocab_size}")
    check_run_vocab(run_dir, vocab)
    state = load_checkpoint(ckpt, map_location="cpu")
    model_cfg = cfg.override({"model.vit_weights": None}).model  # the checkpoint holds the weights
    model = build_model(model_cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise RunError(f"{ckpt} does not match the model in {run_dir / CONFIG_FILE}: "
                       f"{str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, vocab, model, int(state["step"]), ckpt)


# ----------------------------------------------------------------------------------------
# the trainer's side: metrics log, loop position, random state, checkpointer

def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl (a line cut short by a kill is skipped)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


class MetricsLog:
    """A run's ``metrics.jsonl``. Only the main process writes (``enabled``)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, row: dict) -> None:
        if self.enabled:
            append_jsonl(self.path, row)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (work that a resumed run redoes) and "finished"
        events (a resumed run is not finished until it says so again)."""
        if self.enabled and self.path.is_file():
            write_jsonl(self.path, [r for r in read_jsonl(self.path)
                                    if int(r.get("step", 0)) <= step and r.get("event") != "finished"])


@dataclass
class LoopState:
    """Where a training run is: optimiser steps done, epoch, steps into the epoch, and the
    best validation cumulative IoU so far."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val: float = -math.inf
    train_s: float = 0.0  # seconds of training so far, validation left out

    def advance(self) -> None:
        self.step += 1
        self.step_in_epoch += 1

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def summary(self, iterations: int, finished: bool) -> dict:
        """The checkpoint's JSON sidecar (read by :func:`restr.experiments.run_status`)."""
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "finished": finished,
                "iterations": iterations, "best_val": self.best_val if math.isfinite(self.best_val) else None}


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def planned_iterations(state: dict) -> int | None:
    """The ``train.iterations`` a checkpoint's config planned (None for a checkpoint without one)."""
    try:
        return int(state["config"]["train"]["iterations"])
    except (KeyError, TypeError, ValueError):
        return None


# Fields that may change between a run and its resumption: they do not affect the weights.
RESUME_MUTABLE = ("data.num_workers", "train.log_every")


def config_mismatch(stored: Config, requested: Config) -> list[str]:
    return [line for line in stored.diff(requested) if line.split(":", 1)[0] not in RESUME_MUTABLE]


def note(message: str) -> None:
    """A one-line notice on stderr (what a run does that the user did not spell out)."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


class Checkpointer:
    """The run directory of one training run, as the trainer sees it.

    Only the main process (``main=True``) writes (and holds the folder's lock); every
    process reads. The training objects (model, optimiser, schedule, scaler, log window)
    are those of a :class:`restr.step.TrainStep`.
    """

    def __init__(self, run_dir: str | os.PathLike, main: bool = True):
        self.run_dir, self.main = Path(run_dir), main
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE, enabled=main)
        self.lock = RunLock(self.run_dir)
        self.existed = self.run_dir.exists()  # before the lock file (which creates the folder)
        self.fingerprint: dict | None = None  # of the data this command trains on
        self.source: Path | None = None  # the checkpoint a resume starts from
        self.extended_from: int | None = None  # the run's length before --extend
        self.kept: tuple[Path, int] | None = None  # the last good checkpoint on disk and its step
        self.kept_plan: int | None = None  # the iterations that checkpoint's config planned

    def path(self, which: str) -> Path:
        return checkpoint_path(self.run_dir, which)

    # -- the folder: lock and leftovers -------------------------------------------------
    def clean_temporaries(self) -> None:
        """Remove the temporary files of writes that a kill interrupted (call with the lock held)."""
        folders = [f for f in (self.run_dir, self.run_dir / CKPT_DIR) if f.is_dir()]
        found = [p for f in folders for p in f.iterdir() if p.name.endswith(".tmp") and p.is_file()]
        if not found:
            return
        size = sum(p.stat().st_size for p in found)
        for p in found:
            p.unlink(missing_ok=True)
        note(f"{self.run_dir}: removed {len(found)} temporary files ({human_size(size)}) left by killed writes")

    # -- a run's checkpoints ------------------------------------------------------------
    def open(self, cfg: Config, resume: bool | str = False, extend: bool = False,
             fingerprint: dict | None = None, force: bool = False) -> tuple[Any, dict | None]:
        """Check the run directory against the command: ``(vocabulary, checkpoint)`` of the
        run being resumed (``resume``: True or "last", or "best"), or ``(None, None)`` for a
        new run. ``extend``: the command may ask for more iterations than the run had.
        ``fingerprint``: the data's (:mod:`restr.data.fingerprint`), checked against the run's.
        A new run refuses a folder holding files that are not a run's, unless ``force``."""
        from ..data.vocab import Vocabulary

        out = self.run_dir
        self.fingerprint = fingerprint
        if not resume and not force:
            self._refuse_foreign_files()
        if not (out / CONFIG_FILE).is_file():
            if resume:
                why = f"has no {CONFIG_FILE}" if self.existed else "does not exist"
                raise TrainingError(f"nothing to resume: {out} {why}")
            return None, None
        if not resume:
            if any(self.path(w).is_file() for w in ("last", "best")):
                raise TrainingError(f"{out} already holds a run; pass --resume to continue it, or choose another "
                                    f"--out")
            note(f"{out} holds a run that never saved a checkpoint: starting it afresh")
            return None, None
        vocab = Vocabulary.load(out / VOCAB_FILE)
        check_run_vocab(out, vocab)
        requested = cfg.override({"model.vocab_size": len(vocab)})
        self._check_same(read_run_config(out), requested, f"the run's {out / CONFIG_FILE}", extend)
        self._check_data(cfg)
        state = self._resume_state("best" if resume == "best" else "last")
        if state is not None and isinstance(state.get("config"), dict):
            self._check_same(Config.from_dict(state["config"]), requested, f"its checkpoint {self.source}", extend)
            old = int(state["config"]["train"]["iterations"])
            if old != cfg.train.iterations:
                if cfg.train.iterations <= max(old, int(state["step"])):
                    raise TrainingError(f"--extend lengthens a run: {out} was planned for {old} iterations and is "
                                        f"at step {state['step']}; ask for more than that")
                self.extended_from = old
        return vocab, state

    def foreign_files(self) -> list[str]:
        """The names in the run folder that are not a run's own files (the user's): anything
        but config.json, vocab.json, metrics.jsonl, checkpoints/, the lock and temporaries,
        and a config.json or vocab.json that a run did not write."""
        from ..data.errors import DataError
        from ..data.vocab import Vocabulary
        from .lock import LOCK_NAME

        if not self.run_dir.is_dir():
            return []
        own = {CONFIG_FILE, VOCAB_FILE, METRICS_FILE, CKPT_DIR, LOCK_NAME, "scores"}  # scores/: restr.analysis
        names = [p.name for p in self.run_dir.iterdir() if p.name not in own and not p.name.endswith(".tmp")]
        config = self.run_dir / CONFIG_FILE
        if config.exists() and not _is_run_config(config):
            names.append(CONFIG_FILE)
        if (self.run_dir / VOCAB_FILE).exists():
            try:
                Vocabulary.load(self.run_dir / VOCAB_FILE)
            except DataError:
                names.append(VOCAB_FILE)
        return sorted(names)

    def _refuse_foreign_files(self) -> None:
        foreign = self.foreign_files()
        if foreign:
            shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
            raise TrainingError(f"{self.run_dir} is not a run folder: it holds {shown}, which a run does not write "
                                f"(a new run writes {CONFIG_FILE}, {VOCAB_FILE}, {METRICS_FILE} and {CKPT_DIR}/ "
                                f"there, over files of those names); choose a new --out, or pass --force to train "
                                f"there anyway")

    def _check_same(self, stored: Config, requested: Config, where: str, extend: bool) -> None:
        diff = config_mismatch(stored, requested)
        longer = [line for line in diff if line.startswith("train.iterations:")]
        if extend:
            diff = [line for line in diff if line not in longer]
        if diff:
            hint = ("\n(train.iterations differs: to train the run for longer, pass --extend; the lr schedule then "
                    "becomes that of the new length)") if longer and not extend else ""
            raise ConfigError(f"cannot resume {self.run_dir}: the config differs from {where} in {len(diff)} "
                              f"field(s) (run's value != this command's):\n  " + "\n  ".join(diff) + hint)

    def _check_data(self, cfg: Config) -> None:
        from ..data.fingerprint import changes

        stored = read_run_fingerprint(self.run_dir)
        if self.fingerprint is None or stored is None:  # runs from before fingerprints: nothing to compare
            return
        changed = changes(stored, self.fingerprint, cfg.data)
        if changed:
            raise TrainingError(f"cannot resume {self.run_dir}: its data changed since the run started "
                                f"({cfg.data.root}: {', '.join(changed)}); train a new run on the new data "
                                f"(another --out)")

    def _offer_best(self) -> str:
        """A sentence offering best.pt, if it is there and loads ("" otherwise)."""
        best = self.path("best")
        if not best.is_file():
            return ""
        try:
            step = int(load_checkpoint(best)["step"])
        except RunError:
            return ""
        return (f" {best} (step {step}) is intact: pass --resume-from best to resume from it (the steps after "
                f"{step} are redone)")

    def _resume_state(self, which: str) -> dict | None:
        last, best = self.path("last"), self.path("best")
        if which == "best":
            if not best.is_file():
                raise TrainingError(f"cannot resume {self.run_dir} from its best checkpoint: {best} does not exist")
            self.source = best
            return load_checkpoint(best)
        if last.is_file():
            try:
                state = load_checkpoint(last)
            except RunError as exc:
                raise RunError(f"{exc}{self._offer_best()}") from None
            self.source = last
            return state
        if best.is_file() and not last.with_suffix(".json").is_file():
            # last.pt was never written (its summary neither): a validation saved best.pt before the
            # run's first last.pt and the process died in between, so best.pt is the newest state
            try:
                state = load_checkpoint(best)
            except RunError:
                return None  # nothing intact to resume: the run starts from step 0, as with no best.pt
            note(f"{self.run_dir} never saved {CKPT_DIR}/last.pt (the process died after its first best.pt): "
                 f"best.pt is its newest checkpoint")
            self.source = best
            return state
        offer = self._offer_best()
        if offer:  # last.pt was there once: resuming from an older best.pt redoes steps, so ask first
            raise TrainingError(f"{self.run_dir} has no {CKPT_DIR}/last.pt;{offer}; or train into another --out to "
                                f"start over")
        return None  # no checkpoint at all: the run starts from step 0

    def extension_note(self, cfg: Config, state: dict) -> str:
        """What ``--extend`` does to the schedule, in numbers."""
        old_t = Config.from_dict(state["config"]).train
        new_t, step = cfg.train, int(state["step"])
        return (f"extending {self.run_dir} from {self.extended_from} to {new_t.iterations} iterations: the lr schedule "
                f"becomes that of a {new_t.iterations}-iteration run (warm-up {warmup_steps(new_t)} steps, "
                f"polynomial decay to end_lr {new_t.end_lr:g} at step {new_t.iterations - 1}); step {step - 1} ran at "
                f"lr {lr_at(step - 1, old_t):.3g}, step {step} runs at {lr_at(step, new_t):.3g}")

    def start(self, cfg: Config, vocab, config_hash: str, state: dict | None) -> None:
        """A run with no checkpoint yet gets its files (vocabulary, an empty metrics log,
        then config.json, which marks a run); a resumed one loses the log rows after its
        checkpoint; an extended one gets its new length in config.json and an event row."""
        if not self.main:
            return
        if state is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            vocab.save(self.run_dir / VOCAB_FILE)
            write_jsonl(self.metrics.path, [])
            write_run_config(self.run_dir, cfg, config_hash, self.fingerprint)
            return
        step = int(state["step"])
        self.metrics.truncate_after(step)
        if self.extended_from is not None:
            write_run_config(self.run_dir, cfg, config_hash, read_run_fingerprint(self.run_dir) or self.fingerprint)
            row = {"step": step, "event": "extended", "from": self.extended_from, "to": cfg.train.iterations}
            if row not in read_metrics(self.run_dir):
                self.metrics.write(row)

    def disk_full_error(self, exc: DiskFullError, step: int | None) -> TrainingError:
        """The message of a write that found the disk full: the run, the step, what is kept, the space."""
        at = f" at step {step}" if step is not None else " while starting"
        if self.kept is not None:
            kept = f"the last good checkpoint {self.kept[0]} (step {self.kept[1]}) is kept"
        else:
            kept = "no checkpoint had been saved yet"
        what = "the checkpoint" if exc.path.suffix == ".pt" else exc.path.name
        free = f", {human_size(exc.free)} free on {exc.path.parent}" if exc.free is not None else ""
        then = self._after_disk_full(step is None)
        return TrainingError(f"disk full: run {self.run_dir} could not write {exc.path.name}{at}; {kept}: {what} "
                             f"needs {human_size(exc.needed)}{free}. Free some space, then {then}.")

    def _after_disk_full(self, starting: bool) -> str:
        """The command that goes on after a full disk, for the run's state on disk."""
        if starting:  # nothing of this command reached the disk, or only files it writes again
            return "run the same command again"
        command = f"`python -m restr train --out {self.run_dir} --resume"
        if self.extended_from is not None and self.kept_plan == self.extended_from:
            # config.json says the longer run, the kept checkpoint the shorter one: --resume alone is refused
            return (f"resume with {command} --extend` (its config.json is already the extended run's, its kept "
                    f"checkpoint the {self.extended_from}-iteration run's)")
        return f"resume with {command}`"

    def restore(self, state: dict | None, step, rank: int = 0) -> LoopState:
        """Load ``state`` (a checkpoint, or None for a new run) into the TrainStep ``step``
        and this rank's random generators; return the loop's position."""
        if state is None:
            return LoopState()
        step.core.load_state_dict(state["model"])
        load_optimizer_state(step.optimizer, state["optimizer"])
        step.scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        loop = LoopState(int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"]),
                         float(state.get("best_val", -math.inf)), float(state.get("train_s", 0.0)))
        step.set_step(loop.step)
        self.kept = (self.source or self.path("last"), loop.step)
        self.kept_plan = planned_iterations(state)
        if "log_window" in state:
            step.load_window(state["log_window"])
        rngs = state["rng"]
        if isinstance(rngs, list) and rank < len(rngs):
            set_rng_state(rngs[rank])
        return loop

    def save(self, which: str, loop: LoopState, step, rngs: list, cfg: Config, finished: bool = False) -> Path:
        """Write checkpoint ``which`` ("last" or "best") and its JSON summary (main process
        only; ``rngs``: every rank's :func:`rng_state`, gathered by the caller)."""
        path = self.path(which)
        if not self.main:
            return path
        save_checkpoint(path, {
            "format": CHECKPOINT_FORMAT, "step": loop.step, "epoch": loop.epoch, "step_in_epoch": loop.step_in_epoch,
            "finished": finished, "best_val": loop.best_val, "train_s": loop.train_s,
            "model": step.core.state_dict(), "optimizer": step.optimizer.state_dict(),
            "scheduler": step.scheduler.state_dict(), "scaler": step.scaler.state_dict(), "rng": rngs,
            "log_window": step.window_state(),  # partial sums of the next log row: the same after a resume
            "world_size": len(rngs), "config": cfg.to_dict(),
        })
        atomic_write_text(path.with_suffix(".json"), json.dumps(loop.summary(cfg.train.iterations, finished)) + "\n")
        if which == "last":
            self.kept, self.kept_plan = (path, loop.step), cfg.train.iterations
        return path

    def load_best(self, model: torch.nn.Module) -> int:
        """Load the best validation's weights into ``model``; return their step."""
        state = load_checkpoint(self.path("best"))
        getattr(model, "module", model).load_state_dict(state["model"])
        return int(state["step"])
