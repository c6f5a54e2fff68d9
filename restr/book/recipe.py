"""How the tiny model's training recipe was found: a sweep, each step one change.

``python -m restr recipe sweep [--only NAME ...] [--expressions N] [--out FILE]``

Each row of :data:`SWEEP` adds one change to the recipe so far (the rows above it that
were kept), starting from the
``tiny`` preset as it was before this work (16 expressions per step, each with its own
image, fp32, a ViT trained from scratch). Every row trains on the same number of
expressions (``--expressions``, 96,000 by default) on the default embedded data set, so
what a row buys is read against the row above: its validation cumulative IoU on a fixed
slice of 1,000 expressions, and its training time on this machine. The runs go through
the run cache (``runs/``), so a sweep that is stopped resumes where it was.

The result (``data/zoo/sweep.json`` by default) holds, per row, the change, the full
config, the learning curve (validation cIoU against expressions seen and seconds of
training) and the final metrics; the book's chapter on training reads it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import FORMER_START, Config, ConfigError, get_preset
from ..data.synth import version_of
from ..runs.folder import read_metrics
from ..zoo.cache import get_run


@dataclass(frozen=True)
class Change:
    name: str
    what: str  # the change, as the book's table says it
    overrides: dict[str, Any] = field(default_factory=dict)
    kept: bool = True  # False: tried and measured, not part of the recipe (later rows go without it)


# The tiny preset's training settings before this work (the starting row).
BEFORE = {"train.batch_size": 16, "train.expressions_per_image": 1, "train.amp": "off", "train.lr": 1e-3,
          "model.vit_weights": None, "train.warmup": 0.05, **dict(FORMER_START)}  # the start of its day

SWEEP: list[Change] = [
    Change("before", "the tiny preset before this work: 16 expressions a step, each with its own image, fp32, "
                     "a ViT from scratch, lr 1e-3", BEFORE),
    Change("speed", "64 expressions a step in groups of 4 per image (one ViT pass per image), bf16 on the CPU; "
                    "same lr", {"train.batch_size": 64, "train.expressions_per_image": 4, "train.amp": "bf16"}),
    Change("pretrained ViT", "the ViT pretrained on the training images' category maps (restr.engine.pretrain, 40 "
                             "epochs)", {"model.vit_weights": "pretrain"}),
    Change("lr 2e-3", "twice the learning rate (not kept)", {"train.lr": 2e-3}, kept=False),
]


# The converged recipe (issue 22): from the tiny recipe on the final data (version 2 of the
# embedded set) and the final start (image-level classification), what makes the main arm
# reach its plateau in fewer CPU minutes. Every row on the same number of expressions; each
# change is first tried alone against the first row (kept=False), and a row that combines
# the changes that paid comes last.
CONVERGED_START = {"model.vit_pretrain": "classify", "model.vit_pos_init": "sincos"}
CONVERGED: list[Change] = [
    Change("final start", "the tiny recipe on version 2 of the embedded data, the ViT from the classification "
                          "start, its position embeddings started at a 2-D sine-cosine table", CONVERGED_START),
    Change("random positions", "the classification start with timm's random position embeddings (the final start "
                               "until the main arm's late jump was traced to them; book/protocol.md)",
           {"model.vit_pos_init": "random"}, kept=False),
    Change("8 per image", "8 expressions per image in a step of 64 (8 images a step instead of 16: half the ViT "
                          "passes)", {"train.expressions_per_image": 8}, kept=False),
    Change("8 per image, random positions", "8 expressions per image, from the former start (random position "
                                            "embeddings)", {"model.vit_pos_init": "random",
                                                           "train.expressions_per_image": 8}, kept=False),
    Change("lr 2e-3 heads", "twice the learning rate for everything but the ViT (the ViT kept at 1e-3)",
           {"train.lr": 2e-3, "train.vit_lr_scale": 0.5}, kept=False),
    Change("lr 2e-3", "twice the learning rate for every part, the ViT too (2e-3)", {"train.lr": 2e-3}, kept=False),
    Change("warm-up 2 %", "warm-up over 2 % of the steps instead of 5 %", {"train.warmup": 0.02}, kept=False),
    Change("lambda 0.5", "the patch loss at half the weight (lambda 0.5 instead of 1)", {"train.lam": 0.5}, kept=False),
    Change("drop path 0.1", "stochastic depth 0.1 (the release's rate)", {"model.drop_path": 0.1}, kept=False),
    Change("no augmentation", "no crop, flip or photometric jitter", {"data.augment": False}, kept=False),
    Change("batch 32", "32 expressions a step (twice the steps for the same expressions)",
           {"train.batch_size": 32}, kept=False),
    Change("seed 1", "the final start trained with seed 1 (another data order, another draw of the parts trained "
                     "from scratch; the ViT's start is the same)", {"train.seed": 1}, kept=False),
    Change("lr held longer", "the polynomial decay's power 0.3 instead of 0.9: the rate stays near its peak for "
                             "longer and falls in the last steps", {"train.power": 0.3}, kept=False),
    Change("lr 2e-3 held longer", "the two changes that paid at their budgets together: twice the learning rate "
                                  "for every part and the decay's power 0.3", {"train.lr": 2e-3, "train.power": 0.3},
           kept=False),
    Change("lr 4e-3 held longer", "four times the learning rate for every part, the decay's power 0.3",
           {"train.lr": 4e-3, "train.power": 0.3}, kept=False),
]
SWEEPS = {"recipe": SWEEP, "converged": CONVERGED}
SWEEP_DATA = {"recipe": ("data/synthref", 1), "converged": ("data/synthref-v2", 2)}  # default root, data version


def sweep_configs(data_root: str, expressions: int, val_every: int = 8, sweep: str = "recipe"
                  ) -> list[tuple[Change, Config]]:
    """Each row's config: the tiny preset with the changes of every kept row up to it,
    trained on ``expressions`` expressions, validated ``val_every`` times on 1,000
    expressions."""
    kept: dict[str, Any] = {}
    out = []
    for change in SWEEPS[sweep]:
        overrides = {**kept, **change.overrides}
        if change.kept:
            kept = overrides
        batch = int(overrides.get("train.batch_size", 64))
        steps = max(1, expressions // batch)
        cfg = get_preset("tiny").override({
            **overrides, "data.root": data_root, "train.iterations": steps,
            "train.val_every": max(1, steps // val_every), "train.ckpt_every": max(1, steps // val_every),
            "train.val_max_expressions": 1000})
        out.append((change, cfg))
    return out


PRECISION_LEVELS = ("0.5", "0.7", "0.9")


def curve(run_dir: Path) -> list[dict[str, float]]:
    """The validation rows of a run: step, expressions seen, seconds of training, cIoU, the
    share of expressions above IoU 0.5, 0.7 and 0.9 (``precision``), and the cIoU of each
    kind of expression when the log has it (runs since it was logged)."""

    rows = [r for r in read_metrics(run_dir) if r.get("split") == "val"]
    return [{"step": r["step"], "expressions": r.get("expressions_seen"), "seconds": r.get("elapsed_s"),
             "cum_iou": r["cum_iou"], "mean_iou": r["mean_iou"],
             "precision": {t: r[f"prec@{t}"] for t in PRECISION_LEVELS if f"prec@{t}" in r},
             **({"kinds": {k: m["cum_iou"] for k, m in r["kinds"].items()}} if "kinds" in r else {})}
            for r in rows]


def arithmetic(run_dir: Path) -> str:
    """What a run's steps computed in, from its log rows: "bfloat16", "float32", "mixed"
    (resumed on another machine), or "unrecorded" (logs from before the rows carried it)."""

    seen = {r["arithmetic"] for r in read_metrics(run_dir) if "arithmetic" in r}
    return seen.pop() if len(seen) == 1 else ("mixed" if seen else "unrecorded")


def run_sweep(data_root: str, expressions: int, runs_dir: str, only: list[str] | None = None,
              sweep: str = "recipe", val_every: int = 8) -> list[dict]:
    rows = []
    for change, cfg in sweep_configs(data_root, expressions, val_every, sweep):
        if only and change.name not in only:
            continue
        print(f"recipe sweep: {change.name} ({cfg.train.iterations} steps)", file=sys.stderr)
        t0 = time.perf_counter()
        run = Path(get_run(cfg, runs_dir))
        points = curve(run)
        rows.append({"name": change.name, "what": change.what, "overrides": change.overrides,
                     "config": cfg.to_dict(), "run": run.name, "curve": points, "arithmetic": arithmetic(run),
                     "final": points[-1] if points else None, "wall_s_this_call": time.perf_counter() - t0})
    return rows


def format_sweep(rows: list[dict]) -> str:
    lines = [f"{'row':<16}{'val cIoU %':>11}{'train min':>10}  change"]
    for r in rows:
        f = r["final"] or {}
        secs = f.get("seconds")
        lines.append(f"{r['name']:<16}{100 * f.get('cum_iou', float('nan')):11.1f}"
                     f"{(secs / 60 if secs else float('nan')):10.1f}  {r['what']}")
    return "\n".join(lines)


def merge_rows(old: dict | None, new_rows: list[dict], sweep: str, expressions: int) -> list[dict]:
    """The rows of a sweep file after this call: ``new_rows`` replace the rows of the same
    name and arithmetic in ``old`` (the file's content, if it holds the same sweep at the
    same budget), the others are kept (a row trained in float32 on one machine and in
    bfloat16 on another are two rows); in the sweep's order."""

    def key(r: dict) -> tuple[str, str]:
        return r["name"], r.get("arithmetic", "unrecorded")

    same = old is not None and old.get("sweep") == sweep and old.get("expressions") == expressions
    rows = {key(r): r for r in (old["rows"] if same else [])} | {key(r): r for r in new_rows}
    order = [c.name for c in SWEEPS[sweep]]
    return sorted(rows.values(), key=lambda r: (order.index(r["name"]) if r["name"] in order else len(order),
                                                key(r)[1]))


def _check_sweep_args(args, data: str) -> None:
    """Refuse unknown rows and data of the wrong generator version, by name."""
    names = [c.name for c in SWEEPS[args.sweep]]
    unknown = set(args.only or ()) - set(names)
    if unknown:
        raise ConfigError(f"unknown sweep rows {sorted(unknown)}; the rows of --sweep {args.sweep} are: "
                          f"{', '.join(names)}")

    want = SWEEP_DATA[args.sweep][1]
    if not (Path(data) / "synthref" / "scenes.json").is_file():
        raise ConfigError(f"--sweep {args.sweep} runs on version {want} of the embedded data, which {data} does not "
                          f"hold; write it with: python -m restr data synth --out {data} --version {want}")
    if version_of(data) != want:
        raise ConfigError(f"--sweep {args.sweep} runs on version {want} of the embedded data; {data} holds version "
                          f"{version_of(data)} (python -m restr data synth --out {data} --version {want})")
