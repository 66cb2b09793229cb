"""How documents are written into an observation: one ``Doc i: ...`` line per document.

Retrieved passages: ``Doc i: (Title: t) text``. Web results: ``Doc i: title{sep}snippet``. Simulated
documents already come as ``Doc i: ...`` lines. Whitespace inside a document collapses to single
spaces so that each document stays on one line.
"""

from __future__ import annotations

from typing import Sequence

from zerosearch.tools.base import NO_INFORMATION


def one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space."""
    return " ".join(text.split())


def format_passage(title: str, text: str) -> str:
    """``(Title: t) text``, or just the text when there is no title."""
    title, text = one_line(title), one_line(text)
    return f"(Title: {title}) {text}" if title else text


def format_documents(documents: Sequence[str]) -> str:
    """``"Doc 1: a\\nDoc 2: b"``; ``NO_INFORMATION`` when there is none."""
    lines = [f"Doc {i}: {one_line(doc)}" for i, doc in enumerate(documents, start=1)]
    return "\n".join(lines) if lines else NO_INFORMATION
