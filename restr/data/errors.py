"""The one exception family the data package raises for bad input."""
from __future__ import annotations

_WORKER_PREFIX = "Caught "
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"


class DataError(ValueError):
    """A data file, reference, image, mask or value that cannot be used.

    The message always names the offending file, ref, annotation or value, so that an
    error raised inside a DataLoader worker is still clear in the main process. PyTorch
    re-raises a worker's exception in the main process as ``type(exc)(text)``, where
    ``text`` is the whole worker traceback; a DataError made that way keeps only the
    original message (the traceback is kept in ``worker_traceback``).
    """

    def __init__(self, *args):
        self.worker_traceback = None
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(_WORKER_PREFIX) \
                and _WORKER_TRACEBACK in args[0]:
            original = _original_message(args[0], type(self))
            if original is not None:
                self.worker_traceback = args[0]
                args = (original,)
        super().__init__(*args)


class UnsafeFileError(DataError):
    """A file that asks to run code when read (a pickle naming a Python global a data file
    never holds): refused, never a mere problem of a data set to list among others."""


def _original_message(text: str, kind: type) -> str | None:
    """The message of the exception at the end of a formatted worker traceback."""
    names = {f"{k.__module__}.{k.__qualname__}" for k in kind.__mro__} | {k.__qualname__ for k in kind.__mro__}
    lines = text.rstrip("\n").split("\n")
    for i in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[i].partition(": ")
        if sep and head in names and not lines[i].startswith(" "):
            return "\n".join([rest, *lines[i + 1:]]).strip()
    return None


class EmptyExpressionError(DataError):
    """A referring expression with no words after tokenisation."""
