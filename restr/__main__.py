"""One command line for everything: ``python -m restr <command> ...``.

Each command lives in its own module with a ``main(argv)`` function; the module is
imported only when its command runs, so ``python -m restr profile`` never imports the
data or training code.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "profile": ("restr.profile", "parameters and MACs per module, measured under a FLOP counter"),
    "data": ("restr.data.cli", "generate the embedded data set (synth) or check a data set (stats)"),
    "train": ("restr.train", "train a model (single process, or under torchrun for DDP)"),
    "evaluate": ("restr.evaluate", "evaluate a run on a split with the paper's metrics"),
    "predict": ("restr.predict", "segment one image for one expression"),
    "bench": ("restr.bench", "time training or inference steps on synthetic tensors"),
    "book": ("restr.book", "run every notebook with papermill and build the site"),
}


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
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
