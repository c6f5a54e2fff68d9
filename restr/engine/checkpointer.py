"""The trainer's side of a run folder: its checkpoints, random state and resumption.

:class:`Checkpointer` is the trainer's view of its run directory (in the shape of
detectron2's checkpointer): :meth:`~Checkpointer.open` checks it against the command,
:meth:`~Checkpointer.start` writes a new run's files, :meth:`~Checkpointer.restore`
puts a checkpoint back into the model, optimiser and loop, :meth:`~Checkpointer.save`
writes one, :meth:`~Checkpointer.load_best` reloads the best weights. The folder's
format is :mod:`restr.runs.folder`.

Resuming (:meth:`Checkpointer.open`) starts from ``last.pt``, or from ``best.pt`` when
asked (``resume="best"``); when ``last.pt`` is missing or corrupt and ``best.pt`` is
intact, the error offers it. A run that died after its first ``best.pt`` and before its
first ``last.pt`` (no ``last.json`` either) resumes from ``best.pt``: it is the newest
state the run saved. A finished run resumes to nothing at all. A run is trained
longer only when asked (``extend``): the lr schedule is then that of the new length.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, ConfigError
from ..data.errors import DataError
from ..data.fingerprint import changes
from ..data.vocab import Vocabulary
from ..runs.folder import (CHECKPOINT_FORMAT, CKPT_DIR, CONFIG_FILE, METRICS_FILE, VOCAB_FILE, LoopState, MetricsLog,
                           RunError, _is_run_config, check_run_vocab, checkpoint_path, load_checkpoint, read_metrics,
                           read_run_config, read_run_fingerprint, save_checkpoint, write_run_config)
from ..runs.lock import LOCK_NAME, RunLock
from ..utils.files import DiskFullError, atomic_write_text, human_size, write_jsonl
from .optim import load_optimizer_state, lr_at, warmup_steps


class TrainingError(RuntimeError):
    """Training cannot go on: a diverged loss, or a run directory that does not fit the
    command (a run where a new one should start, nothing where one should resume)."""


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
    are those of a :class:`restr.engine.step.TrainStep`.
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
                                    f"--run")
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
                                f"there, over files of those names); choose a new --run, or pass --force to train "
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
        stored = read_run_fingerprint(self.run_dir)
        if self.fingerprint is None or stored is None:  # runs from before fingerprints: nothing to compare
            return
        changed = changes(stored, self.fingerprint, cfg.data)
        if changed:
            raise TrainingError(f"cannot resume {self.run_dir}: its data changed since the run started "
                                f"({cfg.data.root}: {', '.join(changed)}); train a new run on the new data "
                                f"(another --run)")

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
            raise TrainingError(f"{self.run_dir} has no {CKPT_DIR}/last.pt;{offer}; or train into another --run to "
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
        command = f"`python -m restr train --run {self.run_dir} --resume"
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
