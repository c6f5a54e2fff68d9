"""restr.book.source: a chapter shows the package's own code, read from the file that runs."""
from __future__ import annotations

from pathlib import Path

from restr.book.source import REPO, source_markdown, source_of
from restr.book.verdict import convergence
from restr.model.mutual import MutualAttention


def test_the_shown_code_is_the_files_lines():
    code, rel, first, last = source_of(MutualAttention.parts)
    assert rel == "restr/model/mutual.py"
    lines = (REPO / rel).read_text().splitlines()[first - 1:last]
    assert [line.strip() for line in code.splitlines()] == [line.strip() for line in lines]
    assert code.startswith("def parts(self") and "softmax" in code  # dedented, the method itself
    md = source_markdown(convergence)
    _, _, c_first, c_last = source_of(convergence)
    link = f"(../restr/book/verdict.py#L{c_first}-L{c_last})"
    assert md.startswith(f"`convergence`, from [`restr/book/verdict.py`, lines {c_first}-{c_last}]{link}:")
    assert (REPO / "notebooks" / link[1:].split("#")[0]).resolve().is_file()  # from the notebooks' folder
    assert "```python\ndef convergence(" in md and md.rstrip().endswith("```")


def test_a_class_is_shown_whole():
    code, rel, first, last = source_of(MutualAttention)
    assert code.startswith("class MutualAttention(") and last - first + 1 == len(code.splitlines())
    assert Path(REPO / rel).is_file()
