"""One command line for everything: ``python -m restr <command> ...``.

Each command lives in its own module with a ``main(argv)`` function; the module is
imported only when its command runs, so ``python -m restr cost`` never imports the
data or training code. The options that several commands share (a preset and its
model overrides) are defined here once.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from .config import FUSION_VARIANTS, ConfigError, get_preset

COMMANDS = {
    "cost": ("restr.perf.cost", "parameters and MACs per module, measured under a FLOP counter"),
    "data": ("restr.data.cli", "generate the embedded data set (synth) or check a data set (stats)"),
    "train": ("restr.engine.trainer", "train a model (single process, or under torchrun for DDP)"),
    "evaluate": ("restr.eval.evaluate", "evaluate a run on a split with the paper's metrics"),
    "predict": ("restr.eval.predict", "segment one image for one expression"),
    "pretrain": ("restr.engine.pretrain", "pretrain a small ViT: dense category maps of the training images, or "
                 "image classification of generated pictures (--set model.vit_pretrain=classify)"),
    "zoo": ("restr.zoo.manifest", "the trained models shipped with the book: list, train what is missing"),
    "recipe": ("restr.recipe", "the sweep that found the tiny model's training recipe"),
    "bench": ("restr.perf.bench", "time training or inference steps on synthetic tensors"),
    "book": ("restr.book", "run every notebook with papermill and build the site"),
    "models": ("restr.book_models", "the book's trained models: names, overrides, seeds (what the notebooks use)"),
    "fidelity": ("restr.fidelity", "the paper / release / ours table: write the book page, measure the effects"),
}
ALIASES = {"profile": "cost"}  # the command's name before 0.2


# ----------------------------------------------------------------------------------------
# options shared by the commands

def add_model_overrides(parser: argparse.ArgumentParser) -> None:
    """Options shared by commands that build a model from a preset."""
    parser.add_argument("--preset", default="paper", help="paper | release | tiny | smoke (default: paper)")
    parser.add_argument("--fusion", choices=list(FUSION_VARIANTS), help="fusion variant (concat-conv: the baseline)")
    parser.add_argument("--fusion-layers", type=int, help="number of fusion layers (2, 4, 6 in Table 4)")
    parser.add_argument("--shared", action="store_true", default=None, help="weight sharing (CME-dagger)")
    parser.add_argument("--no-decoder", dest="decoder", action="store_false", default=None,
                        help="switch the decoder off")
    parser.add_argument("--image-size", type=int, nargs="+", metavar="PX", help="side, or height width")
    parser.add_argument("--lang-mlp", type=int, help="language MLP width (text: 3072, release: 1200)")
    parser.add_argument("--head", choices=["paper", "release"], help="Eq. (9)-(10) form")
    parser.add_argument("--family", choices=["restr", "m3att"],
                        help="model family: ReSTR (default) or M3Att on the same encoders (model.family)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other override, e.g. --set model.lang_block=post (repeatable)")


def config_from_args(args: argparse.Namespace):
    return get_preset(args.preset).override(overrides_from_args(args))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The model options and ``--set`` items of ``args`` as ``{"section.field": value}``."""
    overrides: dict[str, Any] = {}
    if args.fusion is not None:
        overrides["model.fusion"] = args.fusion
    if args.fusion_layers is not None:
        overrides["model.fusion_layers"] = args.fusion_layers
    if args.shared is not None:
        overrides["model.shared"] = args.shared
    if args.decoder is not None:
        overrides["model.decoder"] = args.decoder
    if args.image_size is not None:
        if len(args.image_size) not in (1, 2):
            raise ConfigError("--image-size takes one side or height and width")
        overrides["model.image_size"] = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    if args.lang_mlp is not None:
        overrides["model.lang_mlp"] = args.lang_mlp
    if args.head is not None:
        overrides["model.head"] = args.head
    if getattr(args, "family", None) is not None:
        overrides["model.family"] = args.family
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write it as section.field=value")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value
    return overrides


# ----------------------------------------------------------------------------------------
# dispatch

def _usage() -> str:
    lines = ["usage: python -m restr <command> [options]", "", "commands:"]
    width = max(len(c) for c in COMMANDS)
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append("")
    lines.append("'python -m restr <command> --help' describes a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)
