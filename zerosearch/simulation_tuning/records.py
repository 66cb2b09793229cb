"""Reading questions and the pipeline's jsonl files, and appending to them resumably.

Every stage writes one JSON object per line and flushes after each batch. A stage that is
restarted reads what its output file already holds, skips those items, and appends the rest. A
last line cut short by a crash (no trailing newline, or not valid JSON) is removed first.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from zerosearch.data.jsonl import iter_jsonl

logger = logging.getLogger(__name__)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All objects of a jsonl file; an error names the file and line of a bad one."""
    return [obj for _, obj in iter_jsonl(path)]


def repair_tail(path: str | os.PathLike) -> int:
    """Drop a trailing partial line (no newline at the end, or not JSON); returns bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    else:
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        last = data[last_start:].strip()
        if last:
            try:
                json.loads(last)
            except json.JSONDecodeError:
                keep = last_start
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
        logger.warning("%s: removed a partial last line (%d bytes) left by an interrupted run", path,
                       len(data) - keep)
    return len(data) - keep


def done_keys(path: str | os.PathLike, key: str) -> set[str]:
    """``key`` of every object already in ``path`` (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return set()
    repair_tail(path)
    keys = set()
    for i, row in enumerate(read_jsonl(path)):
        if key not in row:
            raise ValueError(f"{path}: object {i + 1} has no '{key}'; is this the output of the same stage?")
        keys.add(str(row[key]))
    return keys


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Append ``rows`` (one line each) and flush them to disk; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    return n


def _check_question(row: dict, where: str) -> dict:
    question = row.get("question")
    golds = row.get("golden_answers")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: 'question' must be a non-empty string, got {question!r}")
    if hasattr(golds, "tolist"):
        golds = golds.tolist()
    if not isinstance(golds, list) or not golds or not all(isinstance(g, str) and g.strip() for g in golds):
        raise ValueError(f"{where}: 'golden_answers' must be a non-empty list of strings, got {golds!r}")
    key: Any = row.get("id") or row.get("uid") or question.strip()
    return {"id": str(key), "question": question.strip(), "golden_answers": list(golds)}


def load_questions(path: str | os.PathLike) -> list[dict]:
    """Questions as ``{"id", "question", "golden_answers"}`` from a QA jsonl file (``data/qa``
    format) or a ZeroSearch parquet file. ``id`` is the row's ``id``, else its ``uid``, else the
    question text; duplicates are an error."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        raw = pq.read_table(path).to_pylist()
        rows = [_check_question(r, f"{path} row {i}") for i, r in enumerate(raw)]
    elif path.suffix == ".jsonl":
        rows = [_check_question(r, f"{path} object {i + 1}") for i, r in enumerate(read_jsonl(path))]
    else:
        raise ValueError(f"questions file {path}: expected .jsonl or .parquet")
    seen: set[str] = set()
    for r in rows:
        if r["id"] in seen:
            raise ValueError(f"{path}: question id {r['id']!r} appears twice")
        seen.add(r["id"])
    if not rows:
        raise ValueError(f"questions file {path} has no rows")
    return rows
