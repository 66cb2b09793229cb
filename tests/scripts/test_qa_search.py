"""QA jsonl -> parquet: schema against real Search-R1 rows, splits, uids, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scripts.data_process import qa_search

DATA = Path(__file__).resolve().parents[2] / "data"
FORMAT_ROWS = [json.loads(line) for line in (DATA / "format" / "search_r1_nq_test_rows.jsonl").read_text().splitlines()]


def _read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _shape(value):
    """Type structure of a JSON-like value: dict keys and element types, recursively."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list"] + sorted({json.dumps(_shape(v), sort_keys=True) for v in value})
    return type(value).__name__


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _qa(i: int, source: str = "toy", **over) -> dict:
    row = {"id": f"{source}_{i}", "question": f"question {i}", "golden_answers": [f"a{i}"], "data_source": source}
    row.update(over)
    return row


@pytest.fixture(scope="module")
def nq_as_test(tmp_path_factory):
    out = tmp_path_factory.mktemp("qa")
    written = qa_search.main(["--train", str(DATA / "qa" / "hotpotqa.jsonl"), "--test", str(DATA / "qa" / "nq.jsonl"),
                              "--out", str(out)])
    return _read(written["test"])


def test_rows_match_search_r1_format(nq_as_test):
    by_id = {r["id"]: r for r in nq_as_test}
    for ref in FORMAT_ROWS:
        ours = by_id[ref["id"]]
        assert set(ours) == set(ref) | {"uid"}
        for key in ("question", "golden_answers", "data_source", "prompt", "ability", "reward_model"):
            assert ours[key] == ref[key], key
        assert _shape(ours["extra_info"]) == _shape(ref["extra_info"])
        assert ours["extra_info"]["split"] == "test"
        assert _shape({k: v for k, v in ours.items() if k != "uid"}) == _shape(ref)


def test_uid_and_index_per_source(tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", [_qa(i, "a") for i in range(3)])
    b = _write_jsonl(tmp_path / "b.jsonl", [_qa(i, "b") for i in range(2)])
    c = _write_jsonl(tmp_path / "c.jsonl", [_qa(i + 10, "a") for i in range(2)])
    splits = qa_search.build_splits([a, b], [c], train_split_ratio=1.0)
    assert [r["uid"] for r in splits["train"]] == ["a-train-0", "a-train-1", "a-train-2", "b-train-0", "b-train-1"]
    assert [r["uid"] for r in splits["test"]] == ["a-test-0", "a-test-1"]
    assert [r["extra_info"] for r in splits["test"]] == [{"split": "test", "index": 0}, {"split": "test", "index": 1}]
    assert splits["train"][0]["question"] == "question 0?"
    assert splits["train"][0]["reward_model"] == {"style": "rule", "ground_truth": {"target": ["a0"]}}


def test_default_split_covers_all_seven_sources_without_leakage(tmp_path):
    written = qa_search.main(["--out", str(tmp_path)])
    train, test = _read(written["train"]), _read(written["test"])
    # nq and hotpotqa have 200 rows each; half of each trains.
    assert {s: sum(r["data_source"] == s for r in train) for s in ("nq", "hotpotqa")} == {"nq": 100, "hotpotqa": 100}
    assert len(train) == 200
    expected_test = {"nq": 100, "hotpotqa": 100, "triviaqa": 200, "popqa": 200, "2wikimultihopqa": 82,
                     "musique": 100, "bamboogle": 63}
    assert {s: sum(r["data_source"] == s for r in test) for s in expected_test} == expected_test
    assert len(test) == sum(expected_test.values())
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    uids = [r["uid"] for r in train + test]
    assert len(set(uids)) == len(uids)
    assert test[-1]["data_source"] == "bamboogle"


def test_split_is_seeded(tmp_path):
    f = _write_jsonl(tmp_path / "a.jsonl", [_qa(i) for i in range(40)])
    ids = lambda seed: [r["id"] for r in qa_search.build_splits([f], [], 0.25, seed)["train"]]  # noqa: E731
    assert ids(0) == ids(0)
    assert len(ids(0)) == 10
    assert ids(0) != ids(1)


@pytest.mark.parametrize(
    "bad,match",
    [
        (_qa(1, golden_answers=[]), r"bad.jsonl:2: 'golden_answers'"),
        (_qa(1, golden_answers="x"), r"bad.jsonl:2: 'golden_answers'"),
        (_qa(1, question="  "), r"bad.jsonl:2: 'question'"),
        ({"id": "x", "question": "q"}, r"bad.jsonl:2: 'data_source'"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, bad, match):
    f = _write_jsonl(tmp_path / "bad.jsonl", [_qa(0), bad])
    with pytest.raises(ValueError, match=match):
        qa_search.read_qa_jsonl(f)


def test_invalid_utf8_and_json(tmp_path):
    f = tmp_path / "enc.jsonl"
    f.write_bytes(json.dumps(_qa(0)).encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(ValueError, match=r"enc.jsonl:2: not valid UTF-8"):
        qa_search.read_qa_jsonl(f)
    f.write_text("{oops\n")
    with pytest.raises(ValueError, match=r"enc.jsonl:1: not valid JSON"):
        qa_search.read_qa_jsonl(f)


def test_leakage_and_repeated_files_are_refused(tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", [_qa(i) for i in range(4)])
    b = _write_jsonl(tmp_path / "b.jsonl", [_qa(3), _qa(9)])
    with pytest.raises(ValueError, match="toy_3.*both splits"):
        qa_search.build_splits([a], [b], 1.0)
    with pytest.raises(ValueError, match="more than once"):
        qa_search.build_splits([a], [a], 1.0)
    dup = _write_jsonl(tmp_path / "dup.jsonl", [_qa(1), _qa(1)])
    with pytest.raises(ValueError, match="toy_1.*train split twice"):
        qa_search.build_splits([dup], [], 1.0)
    with pytest.raises(ValueError, match="train-split-ratio"):
        qa_search.build_splits([a], [], 0.0)
