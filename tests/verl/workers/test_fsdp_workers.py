"""ActorRolloutRefWorker and CriticWorker in this process (world size 1, gloo), on the real config."""

import copy
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.protocol import DataProto
from verl.workers.fsdp_workers import ActorRolloutRefWorker, CriticWorker

from worker_test_utils import P, R, TEXTS, generate, make_config, ppo_batch, prompts_of


@pytest.mark.parametrize("strategy,option", [("none", "actor_rollout_ref.model.use_remove_padding=true"),
                                             ("fsdp", "actor_rollout_ref.model.enable_gradient_checkpointing=true")])
def test_generate_logprob_ref_and_update(tiny_model_dir, strategy, option):
    cfg = make_config(tiny_model_dir, f"actor_rollout_ref.actor.strategy={strategy}",
                      "actor_rollout_ref.actor.use_kl_loss=true", option)
    worker = ActorRolloutRefWorker(cfg, "actor_rollout_ref")
    worker.init_model()
    prompts = prompts_of(tiny_model_dir, TEXTS)
    out = generate(worker, prompts, seed=0)
    assert set(out.non_tensor_batch) == {"output_token_ids", "output_log_probs", "finish_reason"}
    responses = [list(r) for r in out.non_tensor_batch["output_token_ids"]]
    assert all(1 <= len(r) <= R for r in responses)
    assert all(f in ("eos", "stop", "length") for f in out.non_tensor_batch["finish_reason"])

    batch = ppo_batch(prompts, responses, worker.tokenizer.pad_token_id)
    lp = worker.compute_log_prob(copy.deepcopy(batch))
    assert lp.batch["old_log_probs"].shape == (4, R) and lp.batch["entropys"].shape == (4, R)
    # the rollout's log-probs are the actor's (temperature 1, no top-k/top-p cut)
    for b, rollout_lp in enumerate(out.non_tensor_batch["output_log_probs"]):
        n = len(rollout_lp)
        torch.testing.assert_close(lp.batch["old_log_probs"][b, :n], torch.tensor(rollout_lp), atol=1e-4, rtol=0)
    ref = worker.compute_ref_log_prob(copy.deepcopy(batch))
    torch.testing.assert_close(ref.batch["ref_log_prob"], lp.batch["old_log_probs"], atol=1e-5, rtol=0)

    batch.batch["old_log_probs"] = lp.batch["old_log_probs"]
    batch.batch["ref_log_prob"] = ref.batch["ref_log_prob"]
    batch.batch["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None].expand(4, R).clone()
    result = worker.update_actor(copy.deepcopy(batch))
    metrics = result.meta_info["metrics"]
    for key in ("actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/kl_loss", "actor/entropy_loss",
                "actor/grad_norm", "actor/lr"):
        assert key in metrics and np.isfinite(metrics[key]), key
    new_lp = worker.compute_log_prob(copy.deepcopy(batch)).batch["old_log_probs"]
    assert not torch.allclose(new_lp, lp.batch["old_log_probs"])
    ref_after = worker.compute_ref_log_prob(copy.deepcopy(batch)).batch["ref_log_prob"]
    torch.testing.assert_close(ref_after, ref.batch["ref_log_prob"], atol=0, rtol=0)

    # after the weight sync the rollout engine generates from the updated weights: greedy log-probs
    # match the actor now (hf engine: the sleep/wake calls are no-ops, the sync streams the weights)
    worker.sleep_rollout()
    worker.wake_rollout_weights()
    sync = worker.sync_rollout_weights()
    worker.wake_rollout_kv_cache()
    shares_module = strategy == "none"  # the hf engine generates with the actor module itself
    params = list(worker.actor_module.parameters())
    assert sync["weight_sync/bytes"] == (0 if shares_module else sum(4 * p.numel() for p in params))
    greedy = generate(worker, prompts, do_sample=False)
    g_resp = [list(r) for r in greedy.non_tensor_batch["output_token_ids"]]
    g_lp = worker.compute_log_prob(ppo_batch(prompts, g_resp, worker.tokenizer.pad_token_id)).batch["old_log_probs"]
    for b, rollout_lp in enumerate(greedy.non_tensor_batch["output_log_probs"]):
        torch.testing.assert_close(g_lp[b, :len(rollout_lp)], torch.tensor(rollout_lp), atol=1e-4, rtol=0)


def _train_batch(worker, prompts, seed):
    g = torch.Generator().manual_seed(seed)
    responses = [torch.randint(3, 200, (R - (i % 3),), generator=g).tolist() for i in range(len(prompts))]
    batch = ppo_batch(prompts, responses, worker.tokenizer.pad_token_id)
    batch.batch["old_log_probs"] = worker.compute_log_prob(copy.deepcopy(batch)).batch["old_log_probs"]
    batch.batch["advantages"] = torch.randn(len(prompts), R, generator=g)
    return batch


def _actor_params(worker):
    from verl.utils.fsdp_utils import full_state_dict

    return {k: v.clone() for k, v in full_state_dict(worker.actor_module).items()}


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_checkpoint_resume_continues_the_same_run(tiny_model_dir, tmp_path, strategy):
    overrides = [f"actor_rollout_ref.actor.strategy={strategy}", "actor_rollout_ref.actor.shuffle=true",
                 "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.optim.lr_warmup_steps=3"]
    prompts = prompts_of(tiny_model_dir, TEXTS)
    run = ActorRolloutRefWorker(make_config(tiny_model_dir, *overrides), "actor_rollout")
    run.init_model()
    run.update_actor(_train_batch(run, prompts, seed=1))
    run.save_checkpoint(str(tmp_path / "ckpt"))
    batch2 = _train_batch(run, prompts, seed=2)
    expected_metrics = run.update_actor(copy.deepcopy(batch2)).meta_info["metrics"]
    expected = _actor_params(run)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["extra_state_rank0.pt", "model_optim"]
    assert "__0_0.distcp" in os.listdir(tmp_path / "ckpt" / "model_optim")

    resumed = ActorRolloutRefWorker(make_config(tiny_model_dir, *overrides), "actor_rollout")
    resumed.init_model()
    torch.manual_seed(12345)  # the checkpoint must restore the RNG used by shuffle
    resumed.load_checkpoint(str(tmp_path / "ckpt"))
    assert len(resumed.actor.optimizer.state) > 0
    got_metrics = resumed.update_actor(copy.deepcopy(batch2)).meta_info["metrics"]
    got = _actor_params(resumed)
    assert got_metrics["actor/lr"] == pytest.approx(expected_metrics["actor/lr"]) and got_metrics["actor/lr"] > 0
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], atol=1e-6, rtol=0)
    # a fresh optimizer (no resume) would take a visibly different step
    fresh = ActorRolloutRefWorker(make_config(tiny_model_dir, *overrides), "actor_rollout")
    fresh.init_model()
    fresh.update_actor(copy.deepcopy(batch2))
    other = _actor_params(fresh)
    assert any((other[k] - expected[k]).abs().max() > 1e-5 for k in expected)


def test_export_hf_loads_in_transformers(tiny_model_dir, tmp_path):
    cfg = make_config(tiny_model_dir, "actor_rollout_ref.actor.strategy=fsdp")
    worker = ActorRolloutRefWorker(cfg, "actor_rollout")
    worker.init_model()
    prompts = prompts_of(tiny_model_dir, TEXTS)
    worker.update_actor(_train_batch(worker, prompts, seed=4))
    worker.export_hf(str(tmp_path / "hf"))
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32)
    AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        want = worker.actor_module(input_ids=ids).logits
        got = exported(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(original(input_ids=ids).logits, got)
    # In a compute dtype: every floating tensor is the trained weight rounded to bfloat16.
    worker.export_hf(str(tmp_path / "hf_bf16"), "bfloat16")
    cast = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf_bf16"))
    assert cast.dtype == torch.bfloat16
    full = exported.state_dict()
    for name, tensor in cast.state_dict().items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, full[name].to(torch.bfloat16)), name
    AutoTokenizer.from_pretrained(str(tmp_path / "hf_bf16"))


def test_critic_worker_values_update_and_checkpoint(tiny_model_dir, tmp_path):
    cfg = make_config(tiny_model_dir, "actor_rollout_ref.actor.strategy=fsdp")
    critic = CriticWorker(cfg)
    critic.init_model()
    prompts = prompts_of(tiny_model_dir, TEXTS)
    g = torch.Generator().manual_seed(0)
    batch = ppo_batch(prompts, [torch.randint(3, 200, (R - i,), generator=g).tolist() for i in range(4)], 0)
    values = critic.compute_values(copy.deepcopy(batch)).batch["values"]
    assert values.shape == (4, R)
    assert torch.all(values[batch.batch["attention_mask"][:, P:] == 0] == 0)
    batch.batch["values"] = values
    batch.batch["returns"] = torch.ones(4, R)
    metrics = critic.update_critic(copy.deepcopy(batch)).meta_info["metrics"]
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/grad_norm", "critic/lr"):
        assert key in metrics
    critic.save_checkpoint(str(tmp_path / "critic"))
    before = critic.compute_values(copy.deepcopy(batch)).batch["values"]
    critic.update_critic(copy.deepcopy(batch))
    critic.load_checkpoint(str(tmp_path / "critic"))
    torch.testing.assert_close(critic.compute_values(copy.deepcopy(batch)).batch["values"], before, atol=0, rtol=0)


def test_bad_role_and_missing_sampling_are_errors(tiny_model_dir):
    cfg = make_config(tiny_model_dir, "actor_rollout_ref.actor.strategy=none")
    with pytest.raises(ValueError, match="role"):
        ActorRolloutRefWorker(cfg, "critic")
    worker = ActorRolloutRefWorker(cfg, "ref")
    worker.init_model()
    with pytest.raises(RuntimeError, match="no rollout"):
        worker.generate(DataProto.from_dict(non_tensors={"prompt_token_ids": [[1, 2]]}, meta_info={"sampling": {}}))
    with pytest.raises(RuntimeError, match="no actor"):
        worker.update_actor(DataProto.from_dict({"x": torch.zeros(1)}))


def test_log_prob_passes_use_their_own_token_budgets(tiny_model_dir):
    cfg = make_config(tiny_model_dir, "actor_rollout_ref.actor.strategy=none", "actor_rollout_ref.actor.use_dynamic_bsz=true",
                      "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=100",
                      "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=13",
                      "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=11")
    worker = ActorRolloutRefWorker(cfg, "actor_rollout_ref")
    worker.init_model()
    seen = []
    for policy in (worker.actor, worker.ref_policy):
        compute = policy.compute_log_prob

        def spy(data, calculate_entropy=False, compute=compute):
            seen.append((data.meta_info["use_dynamic_bsz"], data.meta_info["max_token_len"]))
            return compute(data, calculate_entropy=calculate_entropy)

        policy.compute_log_prob = spy
    batch = ppo_batch(prompts_of(tiny_model_dir, TEXTS), [[5, 6, 7]] * 4, worker.tokenizer.pad_token_id)
    worker.compute_log_prob(copy.deepcopy(batch))
    worker.compute_ref_log_prob(copy.deepcopy(batch))
    assert seen == [(True, 13), (True, 11)]
