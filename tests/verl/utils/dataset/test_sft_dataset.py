"""SFT dataset: prompt/response -> right-padded ids with a loss mask on the response tokens."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verl.utils.dataset.sft_dataset import SFTDataset
from tests.verl import tiny_models

PAD, EOS = 0, 2  # "<|endoftext|>", "<|im_end|>" in the tiny tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    corpus = ["who wrote the play hamlet? william shakespeare wrote it.", "the capital of france is paris."] * 20
    return tiny_models.tokenizer(corpus, vocab_size=320)


def _cfg(**over):
    cfg = {"prompt_key": "prompt", "response_key": "response", "max_length": 128, "truncation": "error",
           "apply_chat_template": True}
    cfg.update(over)
    return cfg


def _write(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_loss_mask_covers_exactly_the_response(tokenizer, tmp_path):
    path = _write(tmp_path / "d.parquet", [{"prompt": "who wrote hamlet?", "response": "shakespeare"}])
    item = SFTDataset(path, tokenizer, _cfg(max_length=64))[0]
    prompt = _ids(tokenizer, "<|im_start|>user\nwho wrote hamlet?<|im_end|>\n<|im_start|>assistant\n")
    response = _ids(tokenizer, "shakespeare") + [EOS]
    n_p, n = len(prompt), len(prompt) + len(response)
    assert item["input_ids"].tolist() == prompt + response + [PAD] * (64 - n)
    assert item["attention_mask"].tolist() == [1] * n + [0] * (64 - n)
    assert item["position_ids"].tolist() == list(range(n)) + [0] * (64 - n)
    assert item["loss_mask"].tolist() == [0] * n_p + [1] * (n - n_p) + [0] * (64 - n)
    masked = item["input_ids"][item["loss_mask"].bool()].tolist()
    assert tokenizer.decode(masked) == "shakespeare<|im_end|>"


def test_chat_list_prompt_equals_string_prompt(tokenizer, tmp_path):
    a = _write(tmp_path / "a.parquet", [{"prompt": "paris?", "response": "yes"}])
    b = _write(tmp_path / "b.parquet", [{"prompt": [{"role": "user", "content": "paris?"}], "response": "yes"}])
    x, y = SFTDataset(a, tokenizer, _cfg())[0], SFTDataset(b, tokenizer, _cfg())[0]
    assert all(x[k].tolist() == y[k].tolist() for k in x)


def test_custom_columns_and_raw_prompt(tokenizer, tmp_path):
    path = _write(tmp_path / "d.parquet", [{"q": "the capital", "a": " paris"}])
    item = SFTDataset(path, tokenizer, _cfg(prompt_key="q", response_key="a", apply_chat_template=False,
                                            max_length=32))[0]
    prompt, response = _ids(tokenizer, "the capital"), _ids(tokenizer, " paris") + [EOS]
    assert item["input_ids"][:len(prompt) + len(response)].tolist() == prompt + response
    assert int(item["loss_mask"].sum()) == len(response)


def test_truncation_policies(tokenizer, tmp_path):
    long_prompt = "who wrote the play hamlet? " * 6
    path = _write(tmp_path / "d.parquet", [{"prompt": "paris", "response": "yes"},
                                           {"prompt": long_prompt, "response": "william shakespeare"}])
    prompt = _ids(tokenizer, long_prompt)
    response = _ids(tokenizer, "william shakespeare") + [EOS]
    limit = len(response) + 5
    assert len(prompt) > 5
    cfg = _cfg(apply_chat_template=False, max_length=limit)
    with pytest.raises(ValueError, match=r"d\.parquet rows 1 \(1 rows in all\)"):
        SFTDataset(path, tokenizer, cfg)
    with pytest.warns(UserWarning, match="cut on the left"):
        left = SFTDataset(path, tokenizer, {**cfg, "truncation": "left"})[1]
    assert left["input_ids"].tolist() == prompt[-5:] + response
    assert left["loss_mask"].tolist() == [0] * 5 + [1] * len(response)
    with pytest.raises(ValueError, match="right leaves no response token"):
        SFTDataset(path, tokenizer, {**cfg, "truncation": "right"})
    cfg_right = _cfg(apply_chat_template=False, max_length=len(prompt) + 2, truncation="right")
    with pytest.warns(UserWarning, match="cut on the right"):
        right = SFTDataset(path, tokenizer, cfg_right)[1]
    assert right["input_ids"].tolist() == prompt + response[:2]
    assert right["loss_mask"].tolist() == [0] * len(prompt) + [1, 1]
    with pytest.raises(ValueError, match="left cannot keep the whole response"):
        SFTDataset(path, tokenizer, _cfg(apply_chat_template=False, max_length=len(response) - 1, truncation="left"))


def test_input_errors(tokenizer, tmp_path):
    path = _write(tmp_path / "d.parquet", [{"prompt": "p", "answer": "r"}])
    with pytest.raises(KeyError, match="'response'"):
        SFTDataset(path, tokenizer, _cfg())
    path = _write(tmp_path / "e.parquet", [{"prompt": "p", "response": ""}])
    with pytest.raises(ValueError, match=r"e\.parquet row 0 column 'response': the response is empty"):
        SFTDataset(path, tokenizer, _cfg())
    path = _write(tmp_path / "f.parquet", [{"prompt": 5, "response": "r"}])
    with pytest.raises(TypeError, match=r"f\.parquet row 0 column 'prompt'"):
        SFTDataset(path, tokenizer, _cfg())


def _learnt_and_excluded(item, n_prompt):
    """(token ids with loss, response token ids without loss) of one dataset item whose prompt
    has ``n_prompt`` tokens."""
    n = int(item["attention_mask"].sum())
    ids, mask = item["input_ids"][:n], item["loss_mask"][:n].bool()
    assert not mask[:n_prompt].any()
    return ids[mask].tolist(), ids[n_prompt:][~mask[n_prompt:]].tolist()


def test_loss_exclude_spans_take_the_loss_off_exactly_those_tokens(tokenizer, tmp_path):
    """A span over "paris" in "the capital is paris. yes" leaves " paris" (the token with its
    leading space overlaps the span) without loss, and the rest of the response and eos with it."""
    response = "the capital is paris. yes"
    start = response.index("paris")
    rows = [{"prompt": "the capital of france?", "response": response, "skip": [[start, start + len("paris")]]},
            {"prompt": "the capital of france?", "response": response, "skip": []}]
    path = _write(tmp_path / "d.parquet", rows)
    masked, plain = SFTDataset(path, tokenizer, _cfg(loss_exclude_key="skip"))
    n_p = len(_ids(tokenizer, "<|im_start|>user\nthe capital of france?<|im_end|>\n<|im_start|>assistant\n"))
    learnt, excluded = _learnt_and_excluded(masked, n_p)
    assert tokenizer.decode(excluded) == " paris"
    assert tokenizer.decode(learnt) == "the capital is. yes<|im_end|>"
    assert masked["input_ids"].tolist() == plain["input_ids"].tolist()
    learnt, excluded = _learnt_and_excluded(plain, n_p)
    assert excluded == [] and tokenizer.decode(learnt) == response + "<|im_end|>"
    # without the key the column is ignored: every response token is learnt
    unkeyed = SFTDataset(path, tokenizer, _cfg())[0]
    assert unkeyed["loss_mask"].tolist() == plain["loss_mask"].tolist()


def test_loss_exclude_spans_survive_right_truncation(tokenizer, tmp_path):
    response = "paris wrote hamlet"
    path = _write(tmp_path / "d.parquet", [{"prompt": "who?", "response": response, "skip": [[0, 5]]}])
    prompt = _ids(tokenizer, "who?")
    keep = len(_ids(tokenizer, "paris wrote"))
    with pytest.warns(UserWarning, match="cut"):
        item = SFTDataset(path, tokenizer, _cfg(apply_chat_template=False, max_length=len(prompt) + keep,
                                                truncation="right", loss_exclude_key="skip"))[0]
    learnt, excluded = _learnt_and_excluded(item, len(prompt))
    assert tokenizer.decode(excluded) == "paris" and tokenizer.decode(learnt) == " wrote"


@pytest.mark.parametrize("value, message", [
    (None, "missing"), ([[3, 2]], "not a valid span"), ([[0, 99]], "not a valid span"), ([[0]], "not a valid span"),
])
def test_loss_exclude_spans_are_checked(tokenizer, tmp_path, value, message):
    path = _write(tmp_path / "d.parquet", [{"prompt": "who?", "response": "paris", "skip": value}])
    with pytest.raises(ValueError, match=rf"d.parquet row 0 column 'skip': .*{message}"):
        SFTDataset(path, tokenizer, _cfg(loss_exclude_key="skip"))
    with pytest.raises(KeyError, match="no column 'nope' .*data.loss_exclude_key"):
        SFTDataset(path, tokenizer, _cfg(loss_exclude_key="nope"))
