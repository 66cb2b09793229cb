"""Evaluation outputs: per-example records, per-data-source results and the markdown table.

Files written under the output folder by ``write_outputs``:

    records.jsonl   one JSON object per evaluated trajectory (see ``RECORD_KEYS``)
    results.json    {data_source: {"em", "sub_em", "f1", "n"}, ..., "average": {...}}
    results.md      the same numbers as a markdown table, in percent

Scores are fractions in [0, 1] in the json files. ``average`` is the unweighted mean over the data
sources (the "Avg." column of the paper's tables); its ``n`` is the total number of trajectories.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

SCORE_KEYS = ("em", "sub_em", "f1")
AVERAGE = "average"
RECORD_KEYS = (
    "uid", "id", "data_source", "question", "prompt", "trajectory", "answer", "golden_answers",
    "em", "sub_em", "f1", "num_searches", "search_queries", "num_turns",
)
TABLE_COLUMNS = (("EM", "em"), ("SubEM", "sub_em"), ("F1", "f1"))


def summarize(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Mean EM / SubEM / F1 and the count per data source (first-seen order) plus ``average``."""
    per_source: dict[str, dict[str, list[float]]] = {}
    for k, rec in enumerate(records):
        for key in ("data_source",) + SCORE_KEYS:
            if key not in rec:
                raise KeyError(f"summarize: record {k} has no '{key}'")
        scores = per_source.setdefault(str(rec["data_source"]), {key: [] for key in SCORE_KEYS})
        for key in SCORE_KEYS:
            scores[key].append(float(rec[key]))
    if not per_source:
        raise ValueError("summarize: no records to summarize")
    if AVERAGE in per_source:
        raise ValueError(f"summarize: '{AVERAGE}' is reserved and cannot be a data source name")
    results: dict[str, dict[str, float]] = {}
    for source, scores in per_source.items():
        n = len(scores[SCORE_KEYS[0]])
        results[source] = {key: math.fsum(scores[key]) / n for key in SCORE_KEYS}
        results[source]["n"] = n
    sources = list(results)
    results[AVERAGE] = {key: math.fsum(results[s][key] for s in sources) / len(sources) for key in SCORE_KEYS}
    results[AVERAGE]["n"] = sum(results[s]["n"] for s in sources)
    return results


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Rows = data sources then ``average``; columns EM, SubEM, F1 (percent, 2 decimals) and N."""
    head = "| data source | " + " | ".join(f"{name} (%)" for name, _ in TABLE_COLUMNS) + " | N |"
    rule = "|---|" + "---:|" * (len(TABLE_COLUMNS) + 1)
    lines = [head, rule]
    names = [s for s in results if s != AVERAGE] + ([AVERAGE] if AVERAGE in results else [])
    for source in names:
        row = results[source]
        cells = [f"{100.0 * row[key]:.2f}" for _, key in TABLE_COLUMNS]
        label = f"**{source}**" if source == AVERAGE else source
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {int(row['n'])} |")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """numpy scalars / arrays (as found in DataProto non-tensors) -> plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def write_records(path: str | os.PathLike, records: Sequence[dict]) -> Path:
    """One JSON object per line (UTF-8, keys in ``RECORD_KEYS`` order first)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps({k: _plain(v) for k, v in rec.items()}, ensure_ascii=False) + "\n")
    return path


def write_outputs(out_dir: str | os.PathLike, records: Sequence[dict]) -> dict[str, Any]:
    """Write records.jsonl, results.json and results.md; returns the results and the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = summarize(records)
    table = markdown_table(results)
    paths = {
        "records": write_records(out / "records.jsonl", records),
        "results": out / "results.json",
        "table": out / "results.md",
    }
    paths["results"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    paths["table"].write_text(table, encoding="utf-8")
    return {"results": results, "table": table, "paths": paths}
