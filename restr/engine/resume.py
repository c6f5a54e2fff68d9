"""Where a training command starts: the resume decision, made once, as a :class:`ResumePlan`.

:func:`plan_resume` reads the run folder and checks it against the command: a new run
gets an empty plan (after refusing a folder that holds the user's files, unless
``force``); a resumed one gets its vocabulary and the checkpoint it continues from, after
its config, its checkpoint's config and its data were checked against the command's.

It starts from ``last.pt``, or from ``best.pt`` when asked (``resume="best"``); when
``last.pt`` is missing or corrupt and ``best.pt`` is intact, the error offers it. A run that
died after its first ``best.pt`` and before its first ``last.pt`` (no ``last.json``
either) resumes from ``best.pt``: it is the newest state the run saved. A finished run
resumes to nothing at all. A run is trained longer only when asked (``extend``): the lr
schedule is then that of the new length.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..data.errors import DataError
from ..data.fingerprint import changes
from ..data.vocab import Vocabulary
from ..runs.folder import (CKPT_DIR, CONFIG_FILE, METRICS_FILE, VOCAB_FILE, RunError, _is_run_config, check_run_vocab,
                           checkpoint_path, load_checkpoint, read_run_config, read_run_fingerprint)
from ..runs.lock import LOCK_NAME
from .optim import lr_at, warmup_steps

RESUME_CHOICES = (False, True, "last", "best")
# Fields that may change between a run and its resumption: they do not affect the weights.
RESUME_MUTABLE = ("data.num_workers", "train.log_every")


def note(message: str) -> None:
    """A one-line notice on stderr (what a run does that the user did not spell out)."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


class TrainingError(RuntimeError):
    """Training cannot go on: a diverged loss, or a run directory that does not fit the
    command (a run where a new one should start, nothing where one should resume)."""


class TrainingStopped(TrainingError):
    """Training was asked to stop (a SIGTERM: the end of a working block, a campaign's
    deadline) and stopped after the step under way, at a checkpoint it saved then: the
    same command resumes it from there. Commands exit with :attr:`exit_code`."""

    exit_code = 3


STOP_REQUESTS: list[int] = []  # the SIGTERMs this process received while they meant "stop at a checkpoint"


def request_stop(signum: int, frame) -> None:
    """A SIGTERM handler that asks the training loop to stop (see
    :func:`restr.engine.trainer.stop_requests`). A command that spawns trainings for a
    deadline installs it at start-up, so that a request arriving while the data and model
    are still being built is not lost."""
    STOP_REQUESTS.append(signum)


def stop_if_asked(during: str) -> None:
    """Raise :class:`TrainingStopped` if a stop was requested (:data:`STOP_REQUESTS`):
    for the work a run does before its first step (the ViT's pretraining), which keeps
    nothing half-done, so the same command starts it again."""
    if STOP_REQUESTS:
        raise TrainingStopped(f"stopped on request (SIGTERM) during {during}, before the run's first step; nothing "
                              f"of it was kept, and the same command starts it again")


@dataclass
class ResumePlan:
    """What a training command starts from: nothing (a new run), or a run's vocabulary and
    the checkpoint it continues from (``source``), and the run's length before ``--extend``."""

    run_dir: Path
    fingerprint: dict | None = None  # the data's (restr.data.fingerprint), as this command reads it
    vocab: Any = None  # restr.data.vocab.Vocabulary of the resumed run
    state: dict | None = None  # the checkpoint to continue from; None: step 0
    source: Path | None = None  # its file
    extended_from: int | None = None  # the run's train.iterations before --extend

    @property
    def step(self) -> int:
        return int(self.state["step"]) if self.state is not None else 0

    def finished(self, iterations: int) -> bool:
        """The run is done already: its checkpoint is the finished one of this length."""
        return self.state is not None and bool(self.state.get("finished")) and self.step == iterations

    def describe(self, iterations: int) -> str:
        """Where a resumed run continues from, in words."""
        where = (f"from {self.source} (step {self.step} of {iterations})" if self.state is not None
                 else "it saved no checkpoint yet: starting from step 0")
        return f"resuming {self.run_dir} {where}"

    def extension_note(self, cfg: Config) -> str:
        """What ``--extend`` does to the schedule, in numbers."""
        old_t = Config.from_dict(self.state["config"]).train
        new_t, step = cfg.train, self.step
        return (f"extending {self.run_dir} from {self.extended_from} to {new_t.iterations} iterations: the lr schedule "
                f"becomes that of a {new_t.iterations}-iteration run (warm-up {warmup_steps(new_t)} steps, "
                f"polynomial decay to end_lr {new_t.end_lr:g} at step {new_t.iterations - 1}); step {step - 1} ran at "
                f"lr {lr_at(step - 1, old_t):.3g}, step {step} runs at {lr_at(step, new_t):.3g}")


def check_request(cfg: Config, resume: bool | str, allow, world: int) -> tuple[bool, bool]:
    """Check a training command before it touches the disk; return ``(extend, force)``."""
    cfg.train.validate(world=world)  # every value checked before anything touches the disk
    if resume not in RESUME_CHOICES:
        raise ConfigError(f"resume = {resume!r}: choose False, True, 'last' or 'best'")
    unknown = set(allow) - {"extend", "force"}
    if unknown:
        raise ConfigError(f"allow = {sorted(unknown)}: choose among 'extend' and 'force'")
    extend = "extend" in allow
    if extend and not resume:
        raise ConfigError("--extend lengthens an existing run: use it with --resume")
    return extend, "force" in allow


def plan_resume(run_dir: str | Path, cfg: Config, resume: bool | str = False, extend: bool = False,
                fingerprint: dict | None = None, force: bool = False, existed: bool | None = None) -> ResumePlan:
    """Check the run folder against the command and return where training starts.

    ``resume``: False for a new run, True or "last", or "best". ``extend``: the command may
    ask for more iterations than the run had. ``fingerprint``: the data's, checked against
    the run's. A new run refuses a folder holding files that are not a run's, unless
    ``force``. ``existed``: whether the folder existed before this command (its lock file
    creates it); default: whether it exists now."""
    out = Path(run_dir)
    existed = out.exists() if existed is None else existed
    plan = ResumePlan(out, fingerprint)
    if not resume and not force:
        refuse_foreign_files(out)
    if not (out / CONFIG_FILE).is_file():
        if resume:
            why = f"has no {CONFIG_FILE}" if existed else "does not exist"
            raise TrainingError(f"nothing to resume: {out} {why}")
        return plan
    if not resume:
        if any(checkpoint_path(out, w).is_file() for w in ("last", "best")):
            raise TrainingError(f"{out} already holds a run; pass --resume to continue it, or choose another --run")
        note(f"{out} holds a run that never saved a checkpoint: starting it afresh")
        return plan
    plan.vocab = Vocabulary.load(out / VOCAB_FILE)
    check_run_vocab(out, plan.vocab)
    requested = cfg.override({"model.vocab_size": len(plan.vocab)})
    check_same(out, read_run_config(out), requested, f"the run's {out / CONFIG_FILE}", extend)
    check_data(out, cfg, fingerprint)
    plan.state, plan.source = resume_state(out, "best" if resume == "best" else "last")
    if plan.state is not None and isinstance(plan.state.get("config"), dict):
        check_same(out, Config.from_dict(plan.state["config"]), requested, f"its checkpoint {plan.source}", extend)
        old = int(plan.state["config"]["train"]["iterations"])
        if old != cfg.train.iterations:
            if cfg.train.iterations <= max(old, plan.step):
                raise TrainingError(f"--extend lengthens a run: {out} was planned for {old} iterations and is "
                                    f"at step {plan.step}; ask for more than that")
            plan.extended_from = old
    return plan


def foreign_files(run_dir: Path) -> list[str]:
    """The names in the run folder that are not a run's own files (the user's): anything
    but config.json, vocab.json, metrics.jsonl, checkpoints/, the lock and temporaries,
    and a config.json or vocab.json that a run did not write."""
    if not run_dir.is_dir():
        return []
    own = {CONFIG_FILE, VOCAB_FILE, METRICS_FILE, CKPT_DIR, LOCK_NAME, "scores"}  # scores/: restr.book.analysis
    names = [p.name for p in run_dir.iterdir() if p.name not in own and not p.name.endswith(".tmp")]
    config = run_dir / CONFIG_FILE
    if config.exists() and not _is_run_config(config):
        names.append(CONFIG_FILE)
    if (run_dir / VOCAB_FILE).exists():
        try:
            Vocabulary.load(run_dir / VOCAB_FILE)
        except DataError:
            names.append(VOCAB_FILE)
    return sorted(names)


def refuse_foreign_files(run_dir: Path) -> None:
    foreign = foreign_files(run_dir)
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise TrainingError(f"{run_dir} is not a run folder: it holds {shown}, which a run does not write "
                            f"(a new run writes {CONFIG_FILE}, {VOCAB_FILE}, {METRICS_FILE} and {CKPT_DIR}/ "
                            f"there, over files of those names); choose a new --run, or pass --force to train "
                            f"there anyway")


def config_mismatch(stored: Config, requested: Config) -> list[str]:
    return [line for line in stored.diff(requested) if line.split(":", 1)[0] not in RESUME_MUTABLE]


def check_same(run_dir: Path, stored: Config, requested: Config, where: str, extend: bool) -> None:
    diff = config_mismatch(stored, requested)
    longer = [line for line in diff if line.startswith("train.iterations:")]
    if extend:
        diff = [line for line in diff if line not in longer]
    if diff:
        hint = ("\n(train.iterations differs: to train the run for longer, pass --extend; the lr schedule then "
                "becomes that of the new length)") if longer and not extend else ""
        raise ConfigError(f"cannot resume {run_dir}: the config differs from {where} in {len(diff)} "
                          f"field(s) (run's value != this command's):\n  " + "\n  ".join(diff) + hint)


def check_data(run_dir: Path, cfg: Config, fingerprint: dict | None) -> None:
    stored = read_run_fingerprint(run_dir)
    if fingerprint is None or stored is None:  # runs from before fingerprints: nothing to compare
        return
    changed = changes(stored, fingerprint, cfg.data)
    if changed:
        raise TrainingError(f"cannot resume {run_dir}: its data changed since the run started "
                            f"({cfg.data.root}: {', '.join(changed)}); train a new run on the new data "
                            f"(another --run)")


def offer_best(run_dir: Path) -> str:
    """A sentence offering best.pt, if it is there and loads ("" otherwise)."""
    best = checkpoint_path(run_dir, "best")
    if not best.is_file():
        return ""
    try:
        step = int(load_checkpoint(best)["step"])
    except RunError:
        return ""
    return (f" {best} (step {step}) is intact: pass --resume-from best to resume from it (the steps after "
            f"{step} are redone)")


def resume_state(run_dir: Path, which: str) -> tuple[dict | None, Path | None]:
    """The checkpoint a resume of ``which`` ("last" or "best") starts from, and its file
    (``(None, None)``: no checkpoint, the run starts from step 0)."""
    last, best = checkpoint_path(run_dir, "last"), checkpoint_path(run_dir, "best")
    if which == "best":
        if not best.is_file():
            raise TrainingError(f"cannot resume {run_dir} from its best checkpoint: {best} does not exist")
        return load_checkpoint(best), best
    if last.is_file():
        try:
            return load_checkpoint(last), last
        except RunError as exc:
            raise RunError(f"{exc}{offer_best(run_dir)}") from None
    if best.is_file() and not last.with_suffix(".json").is_file():
        # last.pt was never written (its summary neither): a validation saved best.pt before the
        # run's first last.pt and the process died in between, so best.pt is the newest state
        try:
            state = load_checkpoint(best)
        except RunError:
            return None, None  # nothing intact to resume: the run starts from step 0, as with no best.pt
        note(f"{run_dir} never saved {CKPT_DIR}/last.pt (the process died after its first best.pt): "
             f"best.pt is its newest checkpoint")
        return state, best
    offer = offer_best(run_dir)
    if offer:  # last.pt was there once: resuming from an older best.pt redoes steps, so ask first
        raise TrainingError(f"{run_dir} has no {CKPT_DIR}/last.pt;{offer}; or train into another --run to "
                            f"start over")
    return None, None  # no checkpoint at all: the run starts from step 0
