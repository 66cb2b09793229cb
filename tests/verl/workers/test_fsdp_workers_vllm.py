"""The vllm rollout inside ActorRolloutRefWorker receives the actor's weights after every update."""

import copy

import pytest
import torch

from worker_test_utils import R, TEXTS, generate, make_config, ppo_batch, prompts_of

pytest.importorskip("vllm")

pytestmark = pytest.mark.slow


def test_vllm_rollout_follows_the_actor_after_update(tiny_model_dir):
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    cfg = make_config(tiny_model_dir, "actor_rollout_ref.actor.strategy=none", "actor_rollout_ref.rollout.name=vllm",
                      "actor_rollout_ref.rollout.max_model_len=128", "actor_rollout_ref.actor.optim.lr=2e-2")
    worker = ActorRolloutRefWorker(cfg, "actor_rollout")
    worker.init_model()
    prompts = prompts_of(tiny_model_dir, TEXTS)

    def greedy_matches_actor():
        out = generate(worker, prompts, do_sample=False)
        responses = [list(r) for r in out.non_tensor_batch["output_token_ids"]]
        actor_lp = worker.compute_log_prob(ppo_batch(prompts, responses, worker.tokenizer.pad_token_id))
        for b, rollout_lp in enumerate(out.non_tensor_batch["output_log_probs"]):
            torch.testing.assert_close(actor_lp.batch["old_log_probs"][b, :len(rollout_lp)],
                                       torch.tensor(rollout_lp, dtype=torch.float32), atol=1e-3, rtol=0)
        return responses, actor_lp.batch["old_log_probs"]

    responses, before = greedy_matches_actor()
    batch = ppo_batch(prompts, responses, worker.tokenizer.pad_token_id)
    batch.batch["old_log_probs"] = before
    batch.batch["advantages"] = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None].expand(4, R).clone()
    worker.update_actor(copy.deepcopy(batch))
    _, after = greedy_matches_actor()  # would fail if the engine kept the old weights
    assert not torch.allclose(after, before, atol=1e-3)
