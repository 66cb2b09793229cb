"""Fixtures for the rollout tests: a tiny untied Qwen2 (built offline) and one shared vLLM engine."""

from __future__ import annotations

import pytest
import torch
from rollout_reference import BOOST_STEP, CORPUS, LOGIT_SCALE, PROMPT_TEXTS, STOP_TAG, boost_token, greedy_reference


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 whose greedy run on PROMPT_TEXTS[0] emits </search> by step BOOST_STEP."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.verl.tiny_models import AGENT_TAGS
    from verl.utils.tiny_model import build_tiny_model

    out = build_tiny_model(tmp_path_factory.mktemp("rollout_model"), "tiny", list(CORPUS), torch_seed=0, vocab_size=512,
                           added_tokens=AGENT_TAGS)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(LOGIT_SCALE)
    run = greedy_reference(model, tokenizer.encode(PROMPT_TEXTS[0]), BOOST_STEP + 1)
    boost_token(model, tokenizer.convert_tokens_to_ids(STOP_TAG), run[BOOST_STEP])
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def hf_model(tiny_model_dir):
    """A fresh float32 copy of the test model (tests may modify it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def vllm_rollout(tiny_model_dir, tokenizer):
    """One in-process vLLM engine for every vLLM test (start-up costs 20-60 s on CPU)."""
    from verl.workers.rollout.vllm_rollout import VLLMRollout

    config = {
        "dtype": "float32",
        "max_model_len": 512,
        "enforce_eager": True,
        "gpu_memory_utilization": 0.3,
        "tensor_model_parallel_size": 1,
        "free_cache_engine": False,
        "sleep_level": 1,
        "weight_sync_bucket_mb": 1,
    }
    rollout = VLLMRollout(tiny_model_dir, tokenizer, config, seed=0)
    from verl.workers.rollout.base import SamplingConfig

    rollout.generate([tokenizer.encode("warm up")], SamplingConfig(max_new_tokens=2, do_sample=False))
    return rollout
