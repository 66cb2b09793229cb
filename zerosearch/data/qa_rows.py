"""QA rows in the ZeroSearch / Search-R1 parquet schema (the builder behind
``scripts/data_process/qa_search.py``, the evaluation's jsonl reader and the miniature).

Input: jsonl files with one ``{"id", "question", "golden_answers", "data_source"}`` object per line
(the format of ``data/qa/*.jsonl``).

Output rows, one per question:

    id, question, golden_answers, data_source,
    prompt        [{"role": "user", "content": make_prefix(question)}]
    ability       "fact-reasoning"
    reward_model  {"style": "rule", "ground_truth": {"target": golden_answers}}
    extra_info    {"split": "train" | "test", "index": i}
    uid           "{data_source}-{split}-{index}"

``question`` is stripped and ends with "?". ``index`` counts the rows of one (data_source, split)
from 0, so ``uid`` is unique; the builder checks that, and refuses a question id that appears twice
in a split or in both splits (train/test leakage).
"""


from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zerosearch.data.jsonl import iter_jsonl
from zerosearch.prompts import make_prefix, preprocess_question

ABILITY = "fact-reasoning"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_QA_DIR = REPO_ROOT / "data" / "qa"
DEFAULT_TRAIN_SOURCES = ("nq", "hotpotqa")
DEFAULT_TEST_SOURCES = ("triviaqa", "popqa", "2wikimultihopqa", "musique", "bamboogle")
DEFAULT_TRAIN_SPLIT_RATIO = 0.5

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("golden_answers", pa.list_(pa.string())),
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        (
            "reward_model",
            pa.struct([("style", pa.string()), ("ground_truth", pa.struct([("target", pa.list_(pa.string()))]))]),
        ),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64())])),
        ("uid", pa.string()),
    ]
)


def read_qa_jsonl(path: str | Path) -> list[dict]:
    """Read and check one QA jsonl file; each record also gets ``_origin`` = "path:line"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA file {path} does not exist")
    records = []
    for where, rec in iter_jsonl(path):
        for key in ("id", "question", "data_source"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise ValueError(f"{where}: '{key}' must be a non-empty string, got {rec.get(key)!r}")
        golds = rec.get("golden_answers")
        if not isinstance(golds, list) or not golds or not all(isinstance(g, str) and g.strip() for g in golds):
            raise ValueError(f"{where}: 'golden_answers' must be a non-empty list of non-empty strings, got {golds!r}")
        rec["_origin"] = where
        records.append(rec)
    if not records:
        raise ValueError(f"QA file {path} has no rows")
    return records


def make_row(record: dict, split: str, index: int) -> dict:
    """One parquet row (Search-R1 schema + ``uid``) from a checked QA record."""
    question = preprocess_question(record["question"])
    golds = list(record["golden_answers"])
    source = record["data_source"]
    return {
        "id": record["id"],
        "question": question,
        "golden_answers": golds,
        "data_source": source,
        "prompt": [{"role": "user", "content": make_prefix(question)}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": {"target": golds}},
        "extra_info": {"split": split, "index": index},
        "uid": f"{source}-{split}-{index}",
    }


def split_train_file(records: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train part, held-out part) of one train file; ``round(ratio * n)`` rows chosen with a
    generator seeded by ``seed`` only, each part kept in file order."""
    n_train = int(round(ratio * len(records)))
    chosen = set(np.random.default_rng(seed).permutation(len(records))[:n_train].tolist())
    train = [r for i, r in enumerate(records) if i in chosen]
    held = [r for i, r in enumerate(records) if i not in chosen]
    return train, held


def build_splits(train_files: Sequence[str | Path], test_files: Sequence[str | Path],
                 train_split_ratio: float = DEFAULT_TRAIN_SPLIT_RATIO, seed: int = 0) -> dict[str, list[dict]]:
    """Rows of the train and test parquet files (see the module docstring)."""
    if not 0.0 < train_split_ratio <= 1.0:
        raise ValueError(f"--train-split-ratio must be in (0, 1], got {train_split_ratio}")
    if not train_files:
        raise ValueError("no --train files given")
    named = [str(Path(p).resolve()) for p in list(train_files) + list(test_files)]
    repeated = [p for p, c in Counter(named).items() if c > 1]
    if repeated:
        raise ValueError(f"file(s) given more than once (or as both --train and --test): {repeated}")
    chosen: dict[str, list[dict]] = {"train": [], "test": []}
    for path in train_files:
        train, held = split_train_file(read_qa_jsonl(path), train_split_ratio, seed)
        chosen["train"].extend(train)
        chosen["test"].extend(held)
    for path in test_files:
        chosen["test"].extend(read_qa_jsonl(path))

    seen_ids: dict[str, tuple[str, str]] = {}
    uids: dict[str, str] = {}
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for split, records in chosen.items():
        counters: Counter = Counter()
        for rec in records:
            if rec["id"] in seen_ids:
                other_split, other = seen_ids[rec["id"]]
                kind = "both splits (train/test leakage)" if other_split != split else f"the {split} split twice"
                raise ValueError(f"question id {rec['id']!r} is in {kind}: {other} and {rec['_origin']}")
            seen_ids[rec["id"]] = (split, rec["_origin"])
            source = rec["data_source"]
            row = make_row(rec, split, counters[source])
            counters[source] += 1
            if row["uid"] in uids:
                raise ValueError(f"uid {row['uid']!r} collides: {uids[row['uid']]} and {rec['_origin']}")
            uids[row["uid"]] = rec["_origin"]
            out[split].append(row)
    return out


def write_parquet(rows: list[dict], path: str | Path) -> Path:
    """Write rows with the fixed Arrow schema (``SCHEMA``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


