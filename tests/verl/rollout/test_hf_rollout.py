"""HFRollout against plain forward passes of the same model (float64 re-scoring)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from rollout_reference import BOOST_STEP, PROMPT_TEXTS, STOP_TAG, boost_token, first_stop_index, greedy_reference
from rollout_reference import multi_token_stop, rescore

from verl.workers.rollout.base import SamplingConfig
from verl.workers.rollout.hf_rollout import HFRollout


def _end_ids(model, tokenizer) -> set[int]:
    return {tokenizer.eos_token_id, *model.generation_config.eos_token_id}


@pytest.fixture()
def prompts(tokenizer):
    return [tokenizer.encode(t) for t in PROMPT_TEXTS]


def test_greedy_matches_reference_and_is_deterministic(hf_model, tokenizer, prompts):
    """Left-padded batched greedy == per-prompt greedy by full forward passes; also micro-batched."""
    sampling = SamplingConfig(max_new_tokens=10, do_sample=False)
    end_ids = _end_ids(hf_model, tokenizer)
    first = HFRollout(hf_model, tokenizer, {}).generate(prompts, sampling)
    second = HFRollout(hf_model, tokenizer, {}).generate(prompts, sampling)
    micro = HFRollout(hf_model, tokenizer, {"generate_micro_batch_size": 1}).generate(prompts, sampling)
    assert len(set(map(len, prompts))) == len(prompts), "prompts of different lengths exercise left padding"
    for prompt, out, again, single in zip(prompts, first, second, micro):
        expected = greedy_reference(hf_model, prompt, 10, end_ids)
        assert out.token_ids == expected
        assert out.finish_reason == ("eos" if expected[-1] in end_ids else "length")
        assert again == out and single.token_ids == out.token_ids
        # greedy log-probs are those of the policy at temperature 1
        assert out.log_probs == pytest.approx(rescore(hf_model, prompt, expected), abs=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_match_rescoring(hf_model, tokenizer, prompts, temperature):
    outs = HFRollout(hf_model, tokenizer, {}).generate(
        prompts, SamplingConfig(max_new_tokens=12, temperature=temperature, seed=123)
    )
    for prompt, out in zip(prompts, outs):
        assert len(out.token_ids) == len(out.log_probs) > 0
        assert out.log_probs == pytest.approx(rescore(hf_model, prompt, out.token_ids, temperature), abs=1e-5)


def test_top_k_log_probs_are_the_truncated_distribution(hf_model, tokenizer, prompts):
    outs = HFRollout(hf_model, tokenizer, {}).generate(prompts, SamplingConfig(max_new_tokens=12, top_k=3, seed=7))
    for prompt, out in zip(prompts, outs):
        expected = rescore(hf_model, prompt, out.token_ids, 1.0, top_k=3)
        assert all(lp > float("-inf") for lp in expected), "every sampled token is in the top 3"
        assert out.log_probs == pytest.approx(expected, abs=1e-5)
        assert all(a >= b - 1e-6 for a, b in zip(out.log_probs, rescore(hf_model, prompt, out.token_ids)))


def test_seeded_sampling_reproduces_and_leaves_global_rng(hf_model, tokenizer, prompts):
    rollout = HFRollout(hf_model, tokenizer, {})
    rng_before = torch.get_rng_state()
    a = rollout.generate(prompts, SamplingConfig(max_new_tokens=12, seed=5))
    b = rollout.generate(prompts, SamplingConfig(max_new_tokens=12, seed=5))
    c = rollout.generate(prompts, SamplingConfig(max_new_tokens=12, seed=6))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert a == b
    assert [o.token_ids for o in a] != [o.token_ids for o in c]


def test_single_token_stop_string_is_kept(hf_model, tokenizer):
    prompt = tokenizer.encode(PROMPT_TEXTS[0])
    stop_id = tokenizer.convert_tokens_to_ids(STOP_TAG)
    assert tokenizer.encode(STOP_TAG) == [stop_id]
    run = greedy_reference(hf_model, prompt, 12)
    k = first_stop_index(tokenizer, run, STOP_TAG)
    assert k is not None and k <= BOOST_STEP + 1 and run[k - 1] == stop_id, "fixture: </search> is emitted early"
    out = HFRollout(hf_model, tokenizer, {}).generate([prompt], SamplingConfig(max_new_tokens=12, do_sample=False, stop=[STOP_TAG]))[0]
    assert out.token_ids == run[:k]
    assert out.finish_reason == "stop"
    assert tokenizer.decode(out.token_ids).endswith(STOP_TAG)
    assert len(out.log_probs) == k


def test_multi_token_stop_string_is_kept(hf_model, tokenizer):
    prompt = tokenizer.encode(PROMPT_TEXTS[1])
    run = greedy_reference(hf_model, prompt, 16)
    stop, k = multi_token_stop(tokenizer, run)
    out = HFRollout(hf_model, tokenizer, {}).generate([prompt], SamplingConfig(max_new_tokens=16, do_sample=False, stop=[stop]))[0]
    assert out.token_ids == run[:k]
    assert stop in tokenizer.decode(out.token_ids) and stop not in tokenizer.decode(out.token_ids[:-1])
    assert out.finish_reason == "stop"


def test_stop_token_id_and_length(hf_model, tokenizer):
    prompt = tokenizer.encode(PROMPT_TEXTS[1])
    run = greedy_reference(hf_model, prompt, 12)
    assert not set(run) & _end_ids(hf_model, tokenizer), "fixture: no EOS in this greedy run"
    stop_id = run[6]
    rollout = HFRollout(hf_model, tokenizer, {})
    out = rollout.generate([prompt], SamplingConfig(max_new_tokens=12, do_sample=False, stop_token_ids=[stop_id]))[0]
    assert out.token_ids == run[: run.index(stop_id) + 1] and out.finish_reason == "stop"
    out = rollout.generate([prompt], SamplingConfig(max_new_tokens=5, do_sample=False))[0]
    assert out.token_ids == run[:5] and out.finish_reason == "length"


def test_eos_ends_generation(hf_model, tokenizer):
    prompt = tokenizer.encode(PROMPT_TEXTS[1])
    run = greedy_reference(hf_model, prompt, 6)
    boost_token(hf_model, tokenizer.eos_token_id, run[4])
    expected = greedy_reference(hf_model, prompt, 12, _end_ids(hf_model, tokenizer))
    assert expected[-1] == tokenizer.eos_token_id and len(expected) <= 5
    out = HFRollout(hf_model, tokenizer, {}).generate([prompt], SamplingConfig(max_new_tokens=12, do_sample=False))[0]
    assert out.token_ids == expected and out.finish_reason == "eos"


def test_model_generation_config_does_not_change_sampling(hf_model, tokenizer, prompts):
    """An instruct checkpoint's repetition penalty / top-k must not leak into the rollout."""
    reference = [greedy_reference(hf_model, p, 10, _end_ids(hf_model, tokenizer)) for p in prompts]
    hf_model.generation_config.repetition_penalty = 5.0
    hf_model.generation_config.top_k = 2
    outs = HFRollout(hf_model, tokenizer, {}).generate(prompts, SamplingConfig(max_new_tokens=10, do_sample=False))
    assert [o.token_ids for o in outs] == reference
    assert hf_model.generation_config.repetition_penalty == 5.0, "the model's own config is restored"


def test_module_getter_training_mode_and_errors(hf_model, tokenizer, prompts):
    hf_model.train()
    outs = HFRollout(lambda: hf_model, tokenizer, {}).generate(prompts[:1], SamplingConfig(max_new_tokens=4, do_sample=False))
    assert len(outs[0].token_ids) == 4
    assert hf_model.training, "generate restores the module's training mode"
    with pytest.raises(TypeError, match="generate"):
        HFRollout(torch.nn.Linear(2, 2), tokenizer, {}).generate(prompts[:1], SamplingConfig(max_new_tokens=2))
    rollout = HFRollout(hf_model, tokenizer, {})
    with pytest.raises(ValueError, match="temperature"):
        rollout.generate(prompts[:1], SamplingConfig(temperature=0.0))
    with pytest.raises(ValueError, match="empty"):
        rollout.generate([[]], SamplingConfig())
    with pytest.raises(ValueError, match="generate_micro_batch_size"):
        HFRollout(hf_model, tokenizer, {"generate_micro_batch_size": 0})
    with pytest.raises(ValueError, match="pad_token_id"):
        HFRollout(hf_model, SimpleNamespace(pad_token_id=None, eos_token_id=tokenizer.eos_token_id), {})


def test_sync_weights_copies_into_a_separate_module(hf_model, tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    actor = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        actor.lm_head.weight.mul_(2.0)
    rollout = HFRollout(hf_model, tokenizer, {})
    rollout.sync_weights(actor.state_dict().items())
    assert torch.equal(hf_model.lm_head.weight, actor.lm_head.weight)
    assert hf_model.lm_head.weight.data_ptr() != actor.lm_head.weight.data_ptr()
    rollout.sync_weights(hf_model.state_dict().items())  # its own tensors: nothing to do
    with pytest.raises(KeyError, match="no_such"):
        rollout.sync_weights([("no_such.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="shape"):
        rollout.sync_weights([("lm_head.weight", torch.zeros(1))])
