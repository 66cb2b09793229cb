"""verl/trainer/ppo/scoring.py and the trainer's validate() on it: hand-worked summaries, the
record schema, and validation through a fake worker group and agent loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.verl.trainer.ppo.test_step_rollout_order import R, RecordingWorkerGroup, _config
from verl.protocol import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.trainer.ppo.scoring import summarize, trajectory_records
from verl.workers.rollout.base import SamplingConfig


def test_summary_names_both_averages_worked_by_hand():
    # nq: em 1, 0, 1 (mean 2/3); popqa: em 0 (mean 0).
    # over sources: (2/3 + 0) / 2 = 1/3; over rows: 2 / 4 = 1/2
    records = [{"data_source": "nq", "em": 1.0}, {"data_source": "popqa", "em": 0.0},
               {"data_source": "nq", "em": 0.0}, {"data_source": "nq", "em": 1.0}]
    out = summarize(records, ["em"])
    assert list(out) == ["nq", "popqa", "mean_over_sources", "mean_over_rows"]
    assert out["nq"] == {"em": pytest.approx(2 / 3), "n": 3} and out["popqa"] == {"em": 0.0, "n": 1}
    assert out["mean_over_sources"] == {"em": pytest.approx(1 / 3), "n": 4}
    assert out["mean_over_rows"] == {"em": 0.5, "n": 4}


def test_summary_errors_name_the_problem():
    with pytest.raises(KeyError, match="record 1 has no 'em'"):
        summarize([{"data_source": "a", "em": 1.0}, {"data_source": "a"}], ["em"])
    with pytest.raises(ValueError, match="reserved"):
        summarize([{"data_source": "mean_over_rows", "em": 1.0}], ["em"])
    with pytest.raises(ValueError, match="no records"):
        summarize([], ["em"])
    by_kind = summarize([{"kind": "x", "em": 1.0}, {"kind": "y", "em": 0.0}], ["em"], group_key="kind")
    assert by_kind["x"]["em"] == 1.0 and by_kind["mean_over_rows"]["em"] == 0.5


class CharTokenizer:
    """decode(ids) -> the characters chr(96 + id) ('a' = 1); 0 is padding."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(96 + i) for i in ids)


def test_records_decode_prompt_and_response_without_padding():
    # row 0: prompt [0, 1, 2] left-padded, response [3, 0] right-padded -> "ab", "c"
    # row 1: prompt [4, 5, 6], response [7, 8] -> "def", "gh"
    out = DataProto.from_dict(
        {"prompts": torch.tensor([[0, 1, 2], [4, 5, 6]]), "responses": torch.tensor([[3, 0], [7, 8]]),
         "attention_mask": torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])},
        {"uid": ["u0", "u1"], "data_source": ["nq", "hotpotqa"], "num_searches": [np.int64(2), 0],
         "search_queries": [np.array(["q"], dtype=object), []]})
    recs = trajectory_records(out, {"em": np.array([1.0, 0.0])}, CharTokenizer(), ["num_searches", "search_queries",
                                                                                     "absent"])
    assert recs[0] == {"uid": "u0", "data_source": "nq", "prompt": "ab", "trajectory": "c", "em": 1.0,
                       "num_searches": 2, "search_queries": ["q"]}
    assert recs[1]["prompt"] == "def" and recs[1]["trajectory"] == "gh" and recs[1]["data_source"] == "hotpotqa"
    json.dumps(recs)  # plain JSON values only


class TwoSourceLoop:
    """One generation per row; the response is the generated ids (3 prompt ids, R response ids)."""

    def run(self, batch: DataProto, generate, step: int, validate: bool) -> DataProto:
        assert validate
        outputs = generate([[1, 2, 3]] * len(batch), SamplingConfig(max_new_tokens=R))
        responses = torch.tensor([o.token_ids for o in outputs])
        prompts = batch.batch["input_ids"]
        batch.batch.update({"prompts": prompts, "responses": responses,
                            "attention_mask": torch.ones(len(batch), prompts.shape[1] + R, dtype=torch.long)})
        return batch


def _val_reward(batch: DataProto):
    # em = 1 on rows whose prompt starts with id 1
    em = (batch.batch["prompts"][:, 0] == 1).double()
    return torch.zeros(len(batch), R), {"em": em.numpy()}


def test_validate_summarises_through_the_shared_path(tmp_path):
    # 5 rows: nq has prompts starting 1, 1, 2 (em 1, 1, 0); bamboogle 1, 2 (em 1, 0).
    # nq 2/3, bamboogle 1/2; over sources 7/12; over rows 3/5. Batches of 2 (val_batch_size).
    firsts, sources = [1, 1, 2, 1, 2], ["nq", "nq", "nq", "bamboogle", "bamboogle"]
    rows = [{"input_ids": torch.tensor([f, 5, 6]), "source": s} for f, s in zip(firsts, sources)]

    def collate(items):
        return DataProto.from_dict({"input_ids": torch.stack([r["input_ids"] for r in items])},
                                   {"data_source": [r["source"] for r in items],
                                    "uid": [f"q{id(r)}" for r in items]})

    cfg = _config(tmp_path)
    cfg.data.val_batch_size = 2
    cfg.trainer.validation_data_dir = str(tmp_path / "val")
    wg = RecordingWorkerGroup()
    trainer = RayPPOTrainer(cfg, CharTokenizer(), wg, None, None, rows, collate, None, _val_reward,
                            TwoSourceLoop(), 1)
    trainer.global_step = 3
    metrics = trainer.validate()
    assert metrics == pytest.approx({"val/em/nq": 2 / 3, "val/em/bamboogle": 1 / 2,
                                     "val/em/mean_over_sources": 7 / 12, "val/em/mean_over_rows": 3 / 5})
    assert wg.calls.count("generate") == 3 and wg.calls[-1] == "sleep"
    records = [json.loads(line) for line in (tmp_path / "val" / "step_3.jsonl").read_text().splitlines()]
    assert [r["em"] for r in records] == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert all(r["step"] == 3 for r in records) and records[0]["prompt"] == "aef"
