"""Parse the action a policy turn ends with: ``<search>query</search>`` or ``<answer>text</answer>``.

Rule: the action is decided by the **first closing tag** in the text (``</search>`` or
``</answer>``) that has an opening tag of the same kind before it. This is exactly where a
generation that stops at those closing tags ends, so the parser and the token stream agree. The
content runs from the nearest such opening tag to that closing tag, which handles repeated or
nested openings (``<search>a<search>b</search>`` gives ``b``). A closing tag with no opening tag
before it is ignored, as is an opening tag that is never closed.

The scan uses ``str.find``/``str.rfind`` a constant number of times per tag kind, so parsing is
linear in the text length whatever the input (no backtracking regex).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

SEARCH = "search"
ANSWER = "answer"
INVALID = "invalid"

ACTION_KINDS = (SEARCH, ANSWER)


@dataclass(frozen=True)
class Action:
    """One parsed action.

    Attributes:
        kind: ``"search"``, ``"answer"`` or ``"invalid"``.
        content: the stripped text between the tags (a search query is also capped); ``""``
            when invalid.
        end: index in the parsed text just after the closing tag (0 when invalid); everything
            after it is not part of the action.
    """

    kind: str
    content: str = ""
    end: int = 0


def closing_tag(kind: str) -> str:
    """``"search"`` -> ``"</search>"``."""
    return f"</{kind}>"


def opening_tag(kind: str) -> str:
    """``"search"`` -> ``"<search>"``."""
    return f"<{kind}>"


def _first_closed(text: str, kind: str) -> tuple[int, int] | None:
    """(content start, closing-tag start) of the first properly closed ``kind`` action, or None."""
    open_tag, close_tag = opening_tag(kind), closing_tag(kind)
    first_open = text.find(open_tag)
    if first_open < 0:
        return None
    close_at = text.find(close_tag, first_open + len(open_tag))
    if close_at < 0:
        return None
    start = text.rfind(open_tag, first_open, close_at) + len(open_tag)
    return start, close_at


def parse_action(
    text: str,
    kinds: Sequence[str] = ACTION_KINDS,
    max_query_chars: int | None = None,
) -> Action:
    """Parse the first closed action of ``text``.

    Args:
        text: decoded text of one generation turn.
        kinds: the action kinds to look for.
        max_query_chars: cap on the length of a search query after stripping (None = no cap).

    Returns:
        The :class:`Action`. A search whose stripped query is empty is invalid.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_action: text must be a str, got {type(text).__name__}")
    unknown = [k for k in kinds if k not in ACTION_KINDS]
    if unknown or not kinds:
        raise ValueError(f"parse_action: kinds must be a non-empty subset of {ACTION_KINDS}, got {list(kinds)}")
    if max_query_chars is not None and max_query_chars < 1:
        raise ValueError(f"parse_action: max_query_chars must be >= 1 or None, got {max_query_chars}")

    best: tuple[int, int, str] | None = None  # (closing-tag start, content start, kind)
    for kind in kinds:
        found = _first_closed(text, kind)
        if found is not None and (best is None or found[1] < best[0]):
            best = (found[1], found[0], kind)
    if best is None:
        return Action(INVALID)

    close_at, start, kind = best
    content = text[start:close_at].strip()
    end = close_at + len(closing_tag(kind))
    if kind == SEARCH:
        if max_query_chars is not None:
            content = content[:max_query_chars].strip()
        if not content:
            return Action(INVALID)
    return Action(kind, content, end)
