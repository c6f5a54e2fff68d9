"""The one exception family the data package raises for bad input."""
from __future__ import annotations


class DataError(ValueError):
    """A data file, reference, image, mask or value that cannot be used.

    The message always names the offending file, ref, annotation or value, so that an
    error raised inside a DataLoader worker is still clear in the main process.
    """


class EmptyExpressionError(DataError):
    """A referring expression with no words after tokenisation."""
