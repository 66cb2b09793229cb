"""Evaluation inputs: benchmark files -> RL datasets and the rows to evaluate (every row, in order).

Two kinds of files are accepted, in any mix:

- parquet in the ZeroSearch / Search-R1 schema (``docs/contracts.md``), read by
  ``verl.utils.dataset.rl_dataset.RLHFDataset`` exactly as the trainer reads its validation set;
- QA jsonl (``{"id", "question", "golden_answers", "data_source"}`` per line, the format of
  ``data/qa/*.jsonl``), turned into the same rows by ``zerosearch/data/qa_rows.py``
  (``read_qa_jsonl`` + ``make_row`` with split ``test``; ``extra_info.index`` counts the rows of
  each data source over all jsonl files, so uids stay unique).

``limit`` keeps the first N rows of each data source (file order). Nothing else is dropped: the
batches cover every selected row, the last one may be short.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Sequence

import pyarrow.parquet as pq

from verl.utils.dataset.rl_dataset import RLHFDataset, as_file_list

PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl",)


@dataclass
class EvalSet:
    """One dataset and the row indices of it to evaluate (ascending)."""

    dataset: RLHFDataset
    indices: list[int]

    def batches(self, batch_size: int) -> Iterator[list[int]]:
        """Consecutive index chunks of ``batch_size`` rows; the last chunk holds the remainder."""
        for start in range(0, len(self.indices), batch_size):
            yield self.indices[start:start + batch_size]


def qa_rows_module() -> ModuleType:
    """The QA row builder (``zerosearch/data/qa_rows.py``)."""
    from zerosearch.data import qa_rows

    return qa_rows


def split_by_kind(files: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """(parquet files, jsonl files); missing files, folders and other suffixes raise, naming the file."""
    paths = as_file_list(list(files), "evaluate --data")
    parquet, jsonl = [], []
    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            parquet.append(path)
        elif suffix in JSONL_SUFFIXES:
            jsonl.append(path)
        else:
            raise ValueError(
                f"evaluate --data: {path} is neither parquet ({', '.join(PARQUET_SUFFIXES)}) nor QA jsonl "
                f"({', '.join(JSONL_SUFFIXES)})"
            )
    return parquet, jsonl


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"evaluate: limit must be a positive integer or None, got {limit!r}")


def jsonl_rows(files: Sequence[str], limit: int | None = None) -> list[dict]:
    """Parquet rows (split ``test``) of the QA jsonl ``files``, the first ``limit`` per data source."""
    _check_limit(limit)
    qa = qa_rows_module()
    counters: Counter = Counter()
    seen: dict[str, str] = {}
    rows = []
    for path in files:
        for record in qa.read_qa_jsonl(path):
            if record["id"] in seen:
                raise ValueError(
                    f"question id {record['id']!r} appears twice: {seen[record['id']]} and {record['_origin']}"
                )
            seen[record["id"]] = record["_origin"]
            source = record["data_source"]
            if limit is not None and counters[source] >= limit:
                continue
            rows.append(qa.make_row(record, "test", counters[source]))
            counters[source] += 1
    return rows


def parquet_sources(files: Sequence[str]) -> list[str]:
    """The ``data_source`` of every row of ``files``, in the order RLHFDataset concatenates them."""
    sources: list[str] = []
    for path in files:
        schema = pq.read_schema(path)
        if "data_source" not in schema.names:
            raise KeyError(
                f"{path}: no 'data_source' column (needed to report scores per data set); columns are {schema.names}"
            )
        column = pq.read_table(path, columns=["data_source"]).column("data_source").to_pylist()
        bad = [i for i, s in enumerate(column) if not isinstance(s, str) or not s]
        if bad:
            raise ValueError(f"{path}: 'data_source' must be a non-empty string, rows {bad[:10]} are not")
        sources.extend(column)
    return sources


def first_per_source(sources: Sequence[str], limit: int | None) -> list[int]:
    """Indices of the first ``limit`` rows of each source (all rows when ``limit`` is None), ascending."""
    _check_limit(limit)
    counts: Counter = Counter()
    keep = []
    for i, source in enumerate(sources):
        if limit is None or counts[source] < limit:
            keep.append(i)
            counts[source] += 1
    return keep


def load_eval_sets(files: Sequence[str | os.PathLike], tokenizer: Any, data_config: Any,
                   limit: int | None = None) -> list[EvalSet]:
    """The datasets to evaluate: one for all jsonl files (if any), one for all parquet files (if any).

    ``data_config`` is the trainer's ``data`` block (``prompt_key``, ``max_prompt_length``,
    ``truncation``, ``apply_chat_template``).
    """
    parquet, jsonl = split_by_kind(files)
    sets: list[EvalSet] = []
    if jsonl:
        rows = jsonl_rows(jsonl, limit)
        qa = qa_rows_module()
        with tempfile.TemporaryDirectory(prefix="zs_eval_") as tmp:
            path = qa.write_parquet(rows, Path(tmp) / "qa_jsonl.parquet")
            try:
                dataset = RLHFDataset([str(path)], tokenizer, data_config)
            except ValueError as e:
                raise ValueError(f"{e}\n(the rows are those of {', '.join(jsonl)} in this order, after --limit)") from e
        sets.append(EvalSet(dataset, list(range(len(dataset)))))
    if parquet:
        dataset = RLHFDataset(parquet, tokenizer, data_config)
        sources = parquet_sources(parquet)
        if len(sources) != len(dataset):
            raise RuntimeError(f"evaluate: read {len(sources)} data sources for {len(dataset)} parquet rows")
        sets.append(EvalSet(dataset, first_per_source(sources, limit)))
    return sets
