"""Numbers into the book's prose: myst-nb's ``glue`` with plain Python values.

A notebook glues what it computed; its Markdown and the book's pages paste it with
``{glue:text}`key:.1f``` (another page: ``{glue:text}`../notebooks/02_fusion_variants.ipynb::key```),
so a rebuild of the book cannot contradict its own prose. Values are glued without
being displayed in the notebook.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping


def plain(value: Any) -> Any:
    """A value whose text form myst-nb can read back: numpy numbers become Python ones
    (``np.float64(0.5)`` is not a number to ``{glue:text}``), bools and others become text."""
    if isinstance(value, (bool, str)) or value is None:
        return str(value) if not isinstance(value, str) else value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(float(value)) else float("nan")
    return str(value)


def glue(key: str, value: Any) -> None:
    """Glue one value under ``key`` (not displayed)."""
    from myst_nb import glue as nb_glue

    nb_glue(key, plain(value), display=False)


def glue_values(prefix: str, values: Mapping[str, Any]) -> None:
    """Glue each value as ``<prefix>_<name>``."""
    for name, value in values.items():
        glue(f"{prefix}_{name}", value)
