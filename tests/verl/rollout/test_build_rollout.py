"""build_rollout picks the engine by name and names what is missing."""

from __future__ import annotations

import pytest

from verl.workers.rollout import build_rollout
from verl.workers.rollout.hf_rollout import HFRollout


def test_build_hf_rollout(hf_model, tokenizer):
    rollout = build_rollout("hf", tokenizer=tokenizer, config={"generate_micro_batch_size": 2}, module=hf_model)
    assert isinstance(rollout, HFRollout) and rollout.micro_batch_size == 2


def test_build_rollout_errors(hf_model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="module="):
        build_rollout("hf", tokenizer=tokenizer, config={})
    with pytest.raises(TypeError, match="seed"):
        build_rollout("hf", tokenizer=tokenizer, config={}, module=hf_model, seed=1)
    with pytest.raises(ValueError, match="model_path="):
        build_rollout("vllm", tokenizer=tokenizer, config={})
    with pytest.raises(ValueError, match="sglang"):
        build_rollout("sglang", tokenizer=tokenizer, config={}, module=hf_model)
    # config keys are checked before vLLM is touched
    with pytest.raises(KeyError, match="max_model_len"):
        build_rollout("vllm", tokenizer=tokenizer, config={"dtype": "float32"}, model_path=tmp_path, device="cpu")


@pytest.mark.parametrize("name", ["vllm", "hf"])
@pytest.mark.parametrize("tp", [2, 4, 0, "2"])
def test_tensor_parallel_rollout_is_refused_at_start_up_by_key(hf_model, tokenizer, tmp_path, name, tp):
    config = {"dtype": "float32", "tensor_model_parallel_size": tp}
    # refused before vLLM is touched (tmp_path holds no model) or the hf engine is built
    where = {"model_path": tmp_path, "device": "cpu"} if name == "vllm" else {"module": hf_model}
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.rollout\.tensor_model_parallel_size"):
        build_rollout(name, tokenizer=tokenizer, config=config, **where)
