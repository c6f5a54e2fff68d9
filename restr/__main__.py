"""``python -m restr <command>``: see :mod:`restr.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
