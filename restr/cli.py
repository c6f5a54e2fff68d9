"""One command line for everything: ``python -m restr <command> ...``.

Each command lives in its own module of :mod:`restr.commands` with a ``main(argv)``
function; the module is imported only when its command runs, so ``python -m restr cost``
never imports the data or training code. The options that several commands share (a
preset and its model overrides) are :mod:`restr.commands.options`.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "cost": ("restr.commands.cost", "parameters and MACs per module, measured under a FLOP counter"),
    "data": ("restr.commands.data", "generate the embedded data set (synth) or check a data set (stats)"),
    "train": ("restr.commands.train", "train a model (single process, or under torchrun for DDP)"),
    "evaluate": ("restr.commands.evaluate", "evaluate a run on a split with the paper's metrics"),
    "predict": ("restr.commands.predict", "segment one image for one expression"),
    "pretrain": ("restr.commands.pretrain", "pretrain a small ViT: dense category maps of the training images, or "
                 "image classification of generated pictures (--set model.vit_pretrain=classify)"),
    "zoo": ("restr.commands.zoo", "the trained models shipped with the book: list, train what is missing"),
    "runs": ("restr.commands.runs", "park an unfinished run in the repository so it outlives a working block; "
             "unpark it"),
    "recipe": ("restr.commands.recipe", "the sweep that found the tiny model's training recipe"),
    "bench": ("restr.commands.bench", "time training or inference steps on synthetic tensors"),
    "book": ("restr.commands.book", "run every notebook with papermill and build the site"),
    "models": ("restr.commands.models", "the book's trained models: names, overrides, seeds (what the notebooks use)"),
    "fidelity": ("restr.commands.fidelity",
                 "the paper / release / ours table: write the book page, measure the effects"),
}
ALIASES = {"profile": "cost"}  # the command's name before 0.2


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
