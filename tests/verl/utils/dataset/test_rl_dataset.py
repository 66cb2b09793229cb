"""RL prompt dataset (parquet -> left-padded prompts -> DataProto) and the resumable batch iterator."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from scripts.data_process import qa_search
from verl.protocol import DataProto
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
from verl.utils.dataset.sampler import StatefulBatchIterator
from tests.verl import tiny_models

PAD = 0  # "<|endoftext|>" is the first special token of the tiny tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    corpus = ["who wrote the play hamlet? william shakespeare wrote it.", "the capital of france is paris."] * 20
    return tiny_models.tokenizer(corpus, vocab_size=320)


@pytest.fixture(scope="module")
def qa_parquet(tmp_path_factory):
    out = tmp_path_factory.mktemp("qa")
    written = qa_search.main(["--train", str(tiny_models.REPO / "data" / "qa" / "bamboogle.jsonl"), "--test",
                              "--train-split-ratio", "1", "--out", str(out)])
    return written["train"]


def _cfg(**over):
    cfg = {"prompt_key": "prompt", "max_prompt_length": 1024, "truncation": "error", "apply_chat_template": True}
    cfg.update(over)
    return cfg


def _row(i: int, content: str = "hello", source: str = "toy", **over) -> dict:
    row = {"data_source": source, "prompt": [{"role": "user", "content": content}],
           "golden_answers": [f"a{i}"], "extra_info": {"split": "train", "index": i}}
    row.update(over)
    return row


def _write(path, rows, schema=None):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------------------------------------- dataset
def test_row_is_chatml_prompt_left_padded(tokenizer, qa_parquet):
    ds = RLHFDataset(str(qa_parquet), tokenizer, _cfg())
    first = json.loads((tiny_models.REPO / "data" / "qa" / "bamboogle.jsonl").read_text().splitlines()[0])
    item = ds[0]
    content = item["prompt"][0]["content"]
    assert content.endswith("Question: " + first["question"].strip() + "\n")
    expected = _ids(tokenizer, "<|im_start|>user\n" + content + "<|im_end|>\n<|im_start|>assistant\n")
    n, p = len(expected), 1024
    assert item["raw_prompt_ids"] == expected
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (p,)
    assert item["input_ids"].tolist() == [PAD] * (p - n) + expected
    assert item["attention_mask"].tolist() == [0] * (p - n) + [1] * n
    assert item["position_ids"].tolist() == [0] * (p - n) + list(range(n))
    assert item["uid"] == "bamboogle-train-0"
    assert item["golden_answers"] == first["golden_answers"]
    assert item["extra_info"] == {"split": "train", "index": 0}
    assert item["reward_model"]["ground_truth"]["target"] == first["golden_answers"]
    assert len(ds) == 63


def test_raw_content_without_chat_template(tokenizer, tmp_path):
    path = _write(tmp_path / "d.parquet", [_row(0, "who wrote hamlet?"), _row(1, "paris")])
    ds = RLHFDataset(path, tokenizer, _cfg(apply_chat_template=False, max_prompt_length=16))
    assert ds[0]["raw_prompt_ids"] == _ids(tokenizer, "who wrote hamlet?")
    assert ds[1]["uid"] == "toy-train-1"


def test_collate_to_dataproto(tokenizer, qa_parquet):
    ds = RLHFDataset(qa_parquet, tokenizer, _cfg())
    batch = collate_fn([ds[i] for i in (3, 1, 2)])
    assert isinstance(batch, DataProto) and len(batch) == 3
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert batch.batch[key].shape == (3, 1024) and batch.batch[key].dtype == torch.long
    assert batch.non_tensor_batch["uid"].dtype == object
    assert list(batch.non_tensor_batch["uid"]) == ["bamboogle-train-3", "bamboogle-train-1", "bamboogle-train-2"]
    assert isinstance(batch.non_tensor_batch["golden_answers"][0], list)
    assert batch.non_tensor_batch["raw_prompt_ids"][1] == ds[1]["raw_prompt_ids"]
    assert torch.equal(batch.batch["input_ids"][0], ds[3]["input_ids"])


def test_several_files_and_max_samples(tokenizer, tmp_path):
    a = _write(tmp_path / "a.parquet", [_row(i, source="a") for i in range(3)])
    b = _write(tmp_path / "b.parquet", [_row(i, source="b") for i in range(3)])
    ds = RLHFDataset([a, b], tokenizer, _cfg())
    assert [ds[i]["uid"] for i in range(len(ds))] == ["a-train-0", "a-train-1", "a-train-2",
                                                       "b-train-0", "b-train-1", "b-train-2"]
    assert [ds[i]["uid"] for i in range(4)] == [RLHFDataset([a, b], tokenizer, _cfg(), max_samples=4)[i]["uid"]
                                                for i in range(4)]
    assert len(RLHFDataset([a, b], tokenizer, _cfg(), max_samples=4)) == 4


def test_folder_is_refused_with_its_parquet_files(tokenizer, tmp_path):
    _write(tmp_path / "train.parquet", [_row(0)])
    with pytest.raises(IsADirectoryError, match=r"train\.parquet"):
        RLHFDataset(str(tmp_path), tokenizer, _cfg())
    assert len(RLHFDataset(str(tmp_path / "train.parquet"), tokenizer, _cfg())) == 1


def test_missing_prompt_column(tokenizer, tmp_path):
    path = _write(tmp_path / "d.parquet", [{"question": "q", "data_source": "x"}])
    with pytest.raises(KeyError, match=r"d\.parquet.*'prompt'"):
        RLHFDataset(path, tokenizer, _cfg())


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"prompt": "plain string"}, r"d\.parquet row 0 column 'prompt'.*chat list"),
        ({"prompt": [{"role": "user"}]}, r"row 0 column 'prompt'.*'content'"),
        ({"prompt": [{"role": "user", "content": 3}]}, r"row 0 column 'prompt' message 0 content.*string"),
        ({"golden_answers": []}, r"row 0 column 'golden_answers'.*non-empty"),
        ({"reward_model": {"style": "rule", "ground_truth": {"target": []}}},
         r"row 0 column 'reward_model.ground_truth.target'.*non-empty"),
        ({"extra_info": None}, r"row 0.*uid cannot be derived"),
        ({"uid": ""}, r"row 0 column 'uid'"),
    ],
)
def test_bad_rows_are_named(tokenizer, tmp_path, bad, match):
    path = _write(tmp_path / "d.parquet", [_row(0, **bad)])
    with pytest.raises((ValueError, TypeError), match=match):
        RLHFDataset(path, tokenizer, _cfg())


def test_invalid_utf8_is_named(tokenizer, tmp_path):
    good = pa.Table.from_pylist([_row(0), _row(1)])
    data, offsets = b"ok\xff\xfe", np.array([0, 2, 4], dtype=np.int32)
    bad_text = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
    path = tmp_path / "d.parquet"
    pq.write_table(good.append_column("question", bad_text), path)
    with pytest.raises(ValueError, match=r"d\.parquet: column 'question'.*UTF-?8"):
        RLHFDataset(path, tokenizer, _cfg())


def test_duplicate_uids_are_refused(tokenizer, tmp_path):
    a = _write(tmp_path / "a.parquet", [_row(0), _row(1)])
    b = _write(tmp_path / "b.parquet", [_row(1)])
    with pytest.raises(ValueError, match=r"'toy-train-1' at .*a\.parquet rows 1; .*b\.parquet rows 0 \(2 rows in all\)"):
        RLHFDataset([a, b], tokenizer, _cfg())


def test_mismatched_columns_between_files(tokenizer, tmp_path):
    a = _write(tmp_path / "a.parquet", [_row(0)])
    b = _write(tmp_path / "b.parquet", [_row(1, question="q")])
    with pytest.raises(ValueError, match="same columns"):
        RLHFDataset([a, b], tokenizer, _cfg())


def test_overlong_prompts(tokenizer, tmp_path):
    long_text = "who wrote the play hamlet? " * 10
    path = _write(tmp_path / "d.parquet", [_row(0, "paris"), _row(1, long_text), _row(2, "x"), _row(3, long_text)])
    full = _ids(tokenizer, long_text)
    limit = 12
    assert len(full) > limit and len(_ids(tokenizer, "paris")) <= limit
    with pytest.raises(ValueError, match=r"d\.parquet rows 1, 3 \(2 rows in all\)"):
        RLHFDataset(path, tokenizer, _cfg(apply_chat_template=False, max_prompt_length=limit))
    with pytest.warns(UserWarning, match=r"2 prompts .* cut on the left: .*d\.parquet rows 1, 3"):
        left = RLHFDataset(path, tokenizer, _cfg(apply_chat_template=False, max_prompt_length=limit, truncation="left"))
    assert left[1]["raw_prompt_ids"] == full[-limit:]
    assert left[1]["attention_mask"].tolist() == [1] * limit
    with pytest.warns(UserWarning, match="cut on the right"):
        right = RLHFDataset(path, tokenizer, _cfg(apply_chat_template=False, max_prompt_length=limit,
                                                  truncation="right"))
    assert right[3]["input_ids"].tolist() == full[:limit]


def test_config_errors(tokenizer, tmp_path):
    path = _write(tmp_path / "d.parquet", [_row(0)])
    cfg = _cfg()
    del cfg["max_prompt_length"]
    with pytest.raises(KeyError, match="max_prompt_length"):
        RLHFDataset(path, tokenizer, cfg)
    with pytest.raises(ValueError, match="truncation"):
        RLHFDataset(path, tokenizer, _cfg(truncation="middle"))
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        RLHFDataset(tmp_path / "nope.parquet", tokenizer, _cfg())


def test_omegaconf_config(tokenizer, tmp_path):
    from omegaconf import OmegaConf

    path = _write(tmp_path / "d.parquet", [_row(0)])
    cfg = OmegaConf.load(tiny_models.REPO / "verl" / "trainer" / "config" / "data" / "default.yaml")
    ds = RLHFDataset([str(path)], tokenizer, cfg)
    assert ds[0]["input_ids"].shape == (cfg.max_prompt_length,)


# ---------------------------------------------------------------------------------------------- sampler
def test_sampler_in_order():
    it = StatefulBatchIterator(5, 2, shuffle=False, seed=0, drop_last=False)
    assert len(it) == 3
    assert [next(it) for _ in range(4)] == [[0, 1], [2, 3], [4], [0, 1]]
    it = StatefulBatchIterator(5, 2, shuffle=False, seed=0, drop_last=True)
    assert [next(it) for _ in range(3)] == [[0, 1], [2, 3], [0, 1]]


def test_sampler_shuffle_covers_every_row_each_epoch():
    it = StatefulBatchIterator(10, 3, shuffle=True, seed=7, drop_last=False)
    epochs = [[i for _ in range(len(it)) for i in next(it)] for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert epochs[0] != epochs[1]
    np.random.seed(0)
    torch.manual_seed(0)
    again = StatefulBatchIterator(10, 3, shuffle=True, seed=7, drop_last=False)
    assert [i for _ in range(len(again)) for i in next(again)] == epochs[0]
    other = StatefulBatchIterator(10, 3, shuffle=True, seed=8, drop_last=False)
    assert [i for _ in range(len(other)) for i in next(other)] != epochs[0]


@pytest.mark.parametrize("stop", [0, 2, 3, 5])
def test_sampler_resume_continues_the_same_batches(stop):
    reference = StatefulBatchIterator(10, 3, shuffle=True, seed=1, drop_last=True)
    expected = [next(reference) for _ in range(9)]  # 3 epochs of 3 batches
    run = StatefulBatchIterator(10, 3, shuffle=True, seed=1, drop_last=True)
    for _ in range(stop):
        next(run)
    state = json.loads(json.dumps(run.state_dict()))
    resumed = StatefulBatchIterator(10, 3, shuffle=True, seed=1, drop_last=True)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(9 - stop)] == expected[stop:]


def test_sampler_errors():
    with pytest.raises(ValueError, match="batch_size"):
        StatefulBatchIterator(3, 4, drop_last=True)
    with pytest.raises(ValueError, match="dataset_len"):
        StatefulBatchIterator(0, 1)
    state = StatefulBatchIterator(10, 3, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        StatefulBatchIterator(10, 3, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="dataset_len"):
        StatefulBatchIterator(11, 3, seed=1).load_state_dict(state)
