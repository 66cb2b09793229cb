"""Evaluation outputs: per-example records, per-data-source results and the markdown table.

Files written under the output folder by ``write_outputs``:

    records.jsonl   one JSON object per evaluated trajectory (see ``RECORD_KEYS``)
    results.json    {data_source: {"em", "sub_em", "f1", "n"}, ..., "mean_over_sources": {...},
                    "mean_over_rows": {...}}
    results.md      the same numbers as a markdown table, in percent

Scores are fractions in [0, 1] in the json files. The summary is the trainer's validation summary
(``verl/trainer/ppo/scoring.py``): ``mean_over_sources`` is the unweighted mean over the data
sources (the "Avg." column of the paper's tables), ``mean_over_rows`` weighs every trajectory the
same; the ``n`` of both is the total number of trajectories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from verl.trainer.ppo import scoring
from verl.trainer.ppo.scoring import AVERAGES, plain_json

SCORE_KEYS = ("em", "sub_em", "f1")
RECORD_KEYS = (
    "id", "uid", "data_source", "prompt", "trajectory", "em", "sub_em", "f1", "question", "num_searches",
    "search_queries", "num_turns", "answer", "golden_answers",
)
TABLE_COLUMNS = (("EM", "em"), ("SubEM", "sub_em"), ("F1", "f1"))


def summarize(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Mean EM / SubEM / F1 and the count per data source (first-seen order) plus both averages."""
    return scoring.summarize(records, SCORE_KEYS)


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Rows = data sources then the averages; columns EM, SubEM, F1 (percent, 2 decimals) and N."""
    head = "| data source | " + " | ".join(f"{name} (%)" for name, _ in TABLE_COLUMNS) + " | N |"
    rule = "|---|" + "---:|" * (len(TABLE_COLUMNS) + 1)
    lines = [head, rule]
    names = [s for s in results if s not in AVERAGES] + [a for a in AVERAGES if a in results]
    for source in names:
        row = results[source]
        cells = [f"{100.0 * row[key]:.2f}" for _, key in TABLE_COLUMNS]
        label = f"**{source}**" if source in AVERAGES else source
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {int(row['n'])} |")
    return "\n".join(lines) + "\n"


def write_records(path: str | os.PathLike, records: Sequence[dict]) -> Path:
    """One JSON object per line (UTF-8, keys in ``RECORD_KEYS`` order first)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps({k: plain_json(v) for k, v in rec.items()}, ensure_ascii=False) + "\n")
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
