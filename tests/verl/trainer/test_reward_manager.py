import numpy as np
import pytest
import torch

from verl.protocol import DataProto
from verl.workers.reward_manager import NaiveRewardManager, last_token_index


class CharTokenizer:
    """ids are code points; decode joins them."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def _batch(texts, masks):
    R = max(len(t) for t in texts)
    ids = torch.zeros(len(texts), R, dtype=torch.long)
    mask = torch.zeros(len(texts), R, dtype=torch.long)
    for i, (t, m) in enumerate(zip(texts, masks)):
        ids[i, : len(t)] = torch.tensor([ord(c) for c in t])
        mask[i, : len(m)] = torch.tensor(m)
    gts = np.empty(len(texts), dtype=object)
    for i in range(len(texts)):
        gts[i] = {"ground_truth": {"target": ["ab"]}}
    return DataProto.from_dict(tensors={"responses": ids, "response_mask": mask, "attention_mask": torch.cat([torch.ones_like(mask), (ids != 0).long()], 1)},
                               non_tensors={"reward_model": gts, "data_source": np.array(["x"] * len(texts), dtype=object)})


def test_last_token_index():
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert last_token_index(m).tolist() == [1, -1, 2]


def test_score_on_last_policy_token_and_only_policy_text_scored():
    seen = []

    def fn(source, text, gt, info):
        seen.append(text)
        return {"score": 1.0 if "ab" in text else 0.0, "em": 0.5}

    # row 0: the policy wrote "ab" (mask 1) then a tool wrote "zz" (mask 0)
    # row 1: "ab" appears only in tool text -> must not be credited
    batch = _batch(["abzz", "xxab"], [[1, 1, 0, 0], [1, 1, 0, 0]])
    scores, extras = NaiveRewardManager(CharTokenizer(), fn)(batch)
    assert seen == ["ab", "xx"]
    assert scores.tolist() == [[0, 1.0, 0, 0], [0, 0, 0, 0]]
    assert extras["score"].tolist() == [1.0, 0.0]
    assert extras["em"].tolist() == [0.5, 0.5]


def test_decoding_tool_text_too_still_puts_the_score_on_the_last_policy_token():
    seen = []

    def fn(source, text, gt, info):
        seen.append(text)
        return 1.0

    # the row ends on tool text ("zz", mask 0), as a trajectory cut by the length cap does: the
    # score must sit on "b" (index 1), not on the last token, where no estimator would credit it
    batch = _batch(["abzz"], [[1, 1, 0, 0]])
    scores, _ = NaiveRewardManager(CharTokenizer(), fn, policy_tokens_only=False)(batch)
    assert seen == ["abzz"]
    assert scores.tolist() == [[0, 1.0, 0, 0]]


def test_dict_without_score_is_an_error():
    batch = _batch(["ab"], [[1, 1]])
    with pytest.raises(KeyError, match="score"):
        NaiveRewardManager(CharTokenizer(), lambda *a: {"f1": 1.0})(batch)


def test_bad_dotted_path():
    with pytest.raises(ImportError, match="no attribute"):
        NaiveRewardManager(CharTokenizer(), "verl.workers.reward_manager.naive.nope")
