"""SingleTurnAgentLoop and the output assembly, on a fake generate fn with hand-built expectations."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.agent_loop.single_turn import SingleTurnAgentLoop
from verl.agent_loop.utils import assemble_rollout, prompts_from_batch
from verl.protocol import DataProto
from verl.workers.rollout.base import GenerationOutput

PAD = 0
TOKENIZER = SimpleNamespace(pad_token_id=PAD, eos_token_id=2)


def _config(**rollout):
    base = {
        "max_new_tokens": 3,
        "temperature": 0.9,
        "top_p": 0.8,
        "top_k": 20,
        "val_kwargs": {"do_sample": False, "temperature": 0.0, "top_p": 1.0, "n": 1},
    }
    base.update(rollout)
    return OmegaConf.create({"actor_rollout_ref": {"rollout": base}})


def _batch(**non_tensors):
    return DataProto.from_dict(
        tensors={
            "input_ids": torch.tensor([[PAD, 5, 6, 7], [8, 9, 10, 11]]),
            "attention_mask": torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]),
        },
        non_tensors={"uid": ["a", "b"], "question": ["q0", "q1"], **non_tensors},
        meta_info={"epoch": 1},
    )


class FakeGenerate:
    def __init__(self, outputs):
        self.outputs = outputs
        self.calls = []

    def __call__(self, prompts, sampling):
        self.calls.append((prompts, sampling))
        time.sleep(0.02)  # the loop's timing["gen"] must count this
        return self.outputs


OUTPUTS = [
    GenerationOutput([21, 22], [-0.5, -0.25], "eos"),
    GenerationOutput([31, 32, 33], [-1.0, -2.0, -3.0], "length"),
]


def test_single_turn_layout_is_exactly_the_hand_built_one():
    generate = FakeGenerate(OUTPUTS)
    out = SingleTurnAgentLoop(_config(), TOKENIZER).run(_batch(), generate, step=1)

    prompts, sampling = generate.calls[0]
    assert prompts == [[5, 6, 7], [8, 9, 10, 11]]
    assert (sampling.do_sample, sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_new_tokens) == (
        True, 0.9, 0.8, 20, 3)

    b = out.batch
    assert b["prompts"].tolist() == [[0, 5, 6, 7], [8, 9, 10, 11]]
    assert b["responses"].tolist() == [[21, 22, 0], [31, 32, 33]]
    assert b["input_ids"].tolist() == [[0, 5, 6, 7, 21, 22, 0], [8, 9, 10, 11, 31, 32, 33]]
    assert b["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]
    assert b["position_ids"].tolist() == [[0, 0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 5, 6]]
    assert b["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert b["rollout_log_probs"].dtype == torch.float32
    assert b["rollout_log_probs"].tolist() == [[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0]]
    assert list(out.non_tensor_batch["uid"]) == ["a", "b"]
    assert list(out.non_tensor_batch["question"]) == ["q0", "q1"]
    assert out.meta_info["epoch"] == 1
    m = out.meta_info["metrics"]
    assert not any(k.startswith("response_length") for k in m)  # the trainer's compute_data_metrics writes those
    assert set(out.meta_info["timing"]) == {"gen"} and out.meta_info["timing"]["gen"] >= 0.02
    assert (m["rollout/finish_reason/eos"], m["rollout/finish_reason/stop"], m["rollout/finish_reason/length"]) == (
        0.5, 0.0, 0.5)


def test_validation_is_greedy_and_raw_prompt_ids_take_precedence():
    raw = np.empty(2, dtype=object)
    raw[0], raw[1] = [40, 41, 42, 43, 44], [50]
    generate = FakeGenerate([GenerationOutput([1], [-0.1], "stop"), GenerationOutput([], [], "eos")])
    out = SingleTurnAgentLoop(_config(), TOKENIZER).run(_batch(raw_prompt_ids=raw), generate, step=3, validate=True)
    prompts, sampling = generate.calls[0]
    assert prompts == [[40, 41, 42, 43, 44], [50]]
    assert sampling.do_sample is False
    # P = longest raw prompt (5), whatever the input width (4); R = max_new_tokens
    assert out.batch["prompts"].tolist() == [[40, 41, 42, 43, 44], [0, 0, 0, 0, 50]]
    assert out.batch["responses"].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert out.batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0]]
    assert out.batch["response_mask"].tolist() == [[1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    "outputs, match",
    [
        (OUTPUTS[:1], "1 outputs for 2 prompts"),
        ([OUTPUTS[0], GenerationOutput([1, 2, 3, 4], [0.0] * 4, "length")], "more than max_new_tokens"),
        ([OUTPUTS[0], GenerationOutput([1, 2], [0.0], "eos")], "log-probs"),
        ([OUTPUTS[0], GenerationOutput([1], [0.0], "done")], "finish_reason"),
    ],
)
def test_bad_generate_output_is_rejected(outputs, match):
    with pytest.raises(ValueError, match=match):
        SingleTurnAgentLoop(_config(), TOKENIZER).run(_batch(), FakeGenerate(outputs), step=1)


def test_bad_sampling_config_is_rejected():
    loop = SingleTurnAgentLoop(_config(val_kwargs={"do_sample": True, "temperature": 0.0, "top_p": 1.0}), TOKENIZER)
    with pytest.raises(ValueError, match="temperature"):
        loop.run(_batch(), FakeGenerate(OUTPUTS), step=1, validate=True)


def test_assemble_rollout_with_observations_and_fixed_widths():
    t = assemble_rollout(
        prompt_ids=[[3, 4]],
        response_ids=[[10, 11, 90, 91, 12]],
        response_mask=[[1, 1, 0, 0, 1]],
        response_log_probs=[[-1.0, -2.0, 7.0, 7.0, -3.0]],
        pad_token_id=PAD,
        prompt_length=3,
        response_length=6,
    )
    assert t["prompts"].tolist() == [[0, 3, 4]]
    assert t["responses"].tolist() == [[10, 11, 90, 91, 12, 0]]
    assert t["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 0]]
    assert t["position_ids"].tolist() == [[0, 0, 1, 2, 3, 4, 5, 6, 6]]
    assert t["response_mask"].tolist() == [[1, 1, 0, 0, 1, 0]]
    assert t["rollout_log_probs"].tolist() == [[-1.0, -2.0, 0.0, 0.0, -3.0, 0.0]]
    with pytest.raises(ValueError, match="max_length"):
        assemble_rollout([[1, 2, 3, 4]], [[5]], [[1]], [[0.0]], PAD, prompt_length=3)
    with pytest.raises(ValueError, match="0/1"):
        assemble_rollout([[1]], [[5]], [[2]], [[0.0]], PAD)
    with pytest.raises(ValueError, match="row 0"):
        assemble_rollout([[1]], [[5, 6]], [[1]], [[0.0, 0.0]], PAD)


def test_prompts_from_batch_needs_prompts():
    with pytest.raises(KeyError, match="raw_prompt_ids"):
        prompts_from_batch(DataProto.from_dict(non_tensors={"uid": ["a"]}))


def test_prompt_width_is_the_longest_prompt_not_the_dataset_padding():
    """The dataset left-pads to data.max_prompt_length; the rollout keeps only the batch's longest
    prompt (3 here), so later forward passes do not pay for the dataset's padding."""
    batch = DataProto.from_dict(
        tensors={
            "input_ids": torch.tensor([[PAD, PAD, PAD, 5, 6, 7], [PAD, PAD, PAD, PAD, 8, 9]]),
            "attention_mask": torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]]),
        },
        non_tensors={"uid": ["a", "b"]},
    )
    out = SingleTurnAgentLoop(_config(), TOKENIZER).run(batch, FakeGenerate(OUTPUTS), step=1)
    assert out.batch["prompts"].tolist() == [[5, 6, 7], [0, 8, 9]]
    assert out.batch["input_ids"].tolist() == [[5, 6, 7, 21, 22, 0], [0, 8, 9, 31, 32, 33]]
    assert out.batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 1, 2, 3, 4]]
