"""BM25 recall@5 of gold (supporting) paragraphs on the shared multi-hop questions.

recall@5 = (supporting paragraphs found in the top 5 for the question text) / (all supporting
paragraphs), pooled over the questions of a dataset. Measured with bm25s 0.3 on
data/corpus/wiki_paragraphs.jsonl: hotpotqa 0.8025, 2wikimultihopqa 0.6650, musique 0.4449,
all 0.6686. The floors sit a little under these.
"""

import json
from pathlib import Path

import pytest

from zerosearch.retrieval.bm25 import BM25Retriever

DATA = Path(__file__).resolve().parents[3] / "data"
FLOORS = {"hotpotqa": 0.78, "2wikimultihopqa": 0.64, "musique": 0.42}
OVERALL_FLOOR = 0.65


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def retriever():
    return BM25Retriever.from_corpus(DATA / "corpus" / "wiki_paragraphs.jsonl")


def test_recall_at_5_on_multihop_questions(retriever):
    gold = {row["id"]: set(row["supporting_ids"]) for row in read_jsonl(DATA / "corpus" / "qrels.jsonl")}
    found_all = total_all = 0
    measured = {}
    for name in FLOORS:
        rows = read_jsonl(DATA / "qa" / f"{name}.jsonl")
        hits = retriever.search([row["question"] for row in rows], 5)
        found = total = 0
        for row, row_hits in zip(rows, hits):
            supporting = gold[row["id"]]
            assert len(supporting) >= 2
            top5 = {doc.id for doc, _ in row_hits}
            assert len(row_hits) <= 5
            found += len(supporting & top5)
            total += len(supporting)
        measured[name] = found / total
        found_all += found
        total_all += total
    overall = found_all / total_all
    print("BM25 recall@5:", {k: round(v, 4) for k, v in measured.items()}, "all:", round(overall, 4))
    for name, floor in FLOORS.items():
        assert measured[name] >= floor, (name, measured[name])
    assert overall >= OVERALL_FLOOR
