"""The package's own code, shown on a chapter's page: the code a chapter teaches is read
from the package when the notebook runs, so the page cannot drift from what runs.

``show_source(MutualAttention.parts)`` displays the function's source as a highlighted
block, headed by a link to its file and line range in the repository. The link is relative
to the notebooks' folder (``../restr/model/mutual.py#L40``), so it opens the file in
JupyterLab, on a repository host, and on the site, which carries a copy of the package's
sources (:mod:`restr.book.site`).
"""
from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

from ..utils.files import REPO


def source_of(obj: Any) -> tuple[str, str, int, int]:
    """``(code, path relative to the repository, first line, last line)`` of a function,
    method or class of the package."""
    target = inspect.unwrap(obj)
    lines, first = inspect.getsourcelines(target)
    path = Path(inspect.getsourcefile(target)).resolve()
    try:
        rel = path.relative_to(REPO).as_posix()
    except ValueError:  # not in this checkout (an installed copy): the module's own name
        rel = f"{target.__module__.replace('.', '/')}.py"
    return textwrap.dedent("".join(lines)), rel, first, first + len(lines) - 1


def source_link(rel: str, first: int, last: int) -> str:
    """A link from a notebook's page to lines ``first``-``last`` of the repository's file ``rel``."""
    return f"[`{rel}`, lines {first}-{last}](../{rel}#L{first}-L{last})"


def source_markdown(obj: Any) -> str:
    """The Markdown a chapter shows for ``obj``: where it lives (a link), then its code."""
    code, rel, first, last = source_of(obj)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "code"))
    return f"`{name}`, from {source_link(rel, first, last)}:\n\n```python\n{code.rstrip()}\n```\n"


def show_source(obj: Any) -> None:
    """Display :func:`source_markdown` in a notebook."""
    from IPython.display import Markdown, display

    display(Markdown(source_markdown(obj)))
