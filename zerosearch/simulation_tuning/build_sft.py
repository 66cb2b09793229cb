"""Stage 3: turn labelled documents into a balanced SFT set in the ``simulate_sft`` format.

For each labelled record and each kind (useful, noisy) that has at least ``min_docs`` documents
of that kind, one candidate row:

    prompt    the chat messages zerosearch.prompts.simulation_messages(p, system_prompt), where p
              is simulate_sft_prompt(query, question, first gold answer, noisy=kind == "noisy",
              topk=n), the released simulators' prompt asking for the number of documents the
              response really holds (n = min(topk, documents of the kind)), and system_prompt is
              retriever.simulation.system_prompt: the messages the search client sends the
              simulator at serving time, so the tuned model is served what it was tuned on
    response  "Doc 1: ...\\nDoc 2: ..." with those documents, in the backend's rank order

The SFT trainer applies the tuned model's chat template to the messages. Identical (prompt,
response) pairs are kept once. Balancing: the larger kind is down-sampled to the size of the
smaller one (seeded), then the rows are shuffled (seeded). With ``val_fraction``
> 0, a seeded share of the *questions* (not rows, so no question leaks across) goes to
``val.parquet``. Columns: prompt, response, kind, query, question, question_id.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zerosearch.prompts import simulate_sft_prompt, simulation_messages
from zerosearch.simulation_tuning.label import NOISY, USEFUL
from zerosearch.simulation_tuning.records import read_jsonl
from zerosearch.tools.documents import format_documents

logger = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("response", pa.string()),
    ("kind", pa.string()),
    ("query", pa.string()),
    ("question", pa.string()),
    ("question_id", pa.string()),
])


def candidate_rows(records: list[dict], system_prompt: str | None, topk: int = 5, min_docs: int = 1) -> list[dict]:
    """All (prompt, response) rows the labelled ``records`` give (see the module docstring);
    ``system_prompt`` is ``retriever.simulation.system_prompt``."""
    if topk < 1 or min_docs < 1 or min_docs > topk:
        raise ValueError(f"need 1 <= min_docs <= topk, got min_docs={min_docs}, topk={topk}")
    rows, seen = [], set()
    for i, r in enumerate(records):
        docs, labels = r.get("documents"), r.get("labels")
        if not isinstance(docs, list) or not isinstance(labels, list) or len(docs) != len(labels):
            raise ValueError(f"labelled record {i + 1} (id {r.get('id')!r}): 'documents' and 'labels' must be lists "
                             "of the same length; expected the output of label")
        for kind in (USEFUL, NOISY):
            chosen = [d for d, lab in zip(docs, labels) if lab == kind][:topk]
            if len(chosen) < min_docs:
                continue
            prompt = simulate_sft_prompt(r["query"], r["question"], r["golden_answers"][0], kind == NOISY, len(chosen))
            response = format_documents(chosen)
            if (prompt, response) in seen:
                continue
            seen.add((prompt, response))
            rows.append({"prompt": simulation_messages(prompt, system_prompt), "response": response, "kind": kind, "query": r["query"],
                         "question": r["question"], "question_id": str(r.get("question_id", r["question"]))})
    return rows


def balance(rows: list[dict], seed: int = 0) -> list[dict]:
    """As many useful as noisy rows (the larger kind down-sampled), shuffled; seeded."""
    rng = random.Random(seed)
    by_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in (USEFUL, NOISY)}
    n = min(len(v) for v in by_kind.values())
    if n == 0:
        raise ValueError(f"cannot balance: {len(by_kind[USEFUL])} useful and {len(by_kind[NOISY])} noisy rows; "
                         "collect more queries (or check the judge)")
    out = rng.sample(by_kind[USEFUL], n) + rng.sample(by_kind[NOISY], n)
    rng.shuffle(out)
    return out


def build(labelled_path: str | Path, out_dir: str | Path, *, system_prompt: str | None, topk: int = 5,
          min_docs: int = 1, val_fraction: float = 0.0, seed: int = 0) -> dict[str, Path]:
    """Write ``out_dir/train.parquet`` (and ``val.parquet`` when ``val_fraction`` > 0);
    ``system_prompt`` is ``retriever.simulation.system_prompt``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rows = candidate_rows(read_jsonl(labelled_path), system_prompt, topk, min_docs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    questions = sorted({r["question_id"] for r in rows})
    random.Random(seed + 1).shuffle(questions)
    held = set(questions[:int(round(len(questions) * val_fraction))])
    splits = {"train": [r for r in rows if r["question_id"] not in held]}
    if held:
        splits["val"] = [r for r in rows if r["question_id"] in held]
    paths = {}
    for split, split_rows in splits.items():
        balanced = balance(split_rows, seed)
        paths[split] = out / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(balanced, schema=SCHEMA), paths[split])
        logger.info("%s: %d rows (%d useful + %d noisy) from %d candidates", paths[split], len(balanced),
                    len(balanced) // 2, len(balanced) // 2, len(split_rows))
    return paths
