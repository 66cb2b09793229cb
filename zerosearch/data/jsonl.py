"""Reading JSON-lines files with errors that name the file and line."""

from __future__ import annotations

import json
import os
from typing import Iterator


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", object)`` for each non-blank line of a jsonl file.

    A line that is not UTF-8, not JSON, or not a JSON object raises ``error`` naming file and line.
    A missing file raises FileNotFoundError.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{name} does not exist or is not a file")
    with open(name, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            where = f"{name}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj
