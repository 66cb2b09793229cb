"""DataParallelPPOCritic on a tiny Qwen2 value model in one process."""

import copy

import pytest
import torch
from omegaconf import OmegaConf

from verl.utils.model import load_value_model
from verl.workers.critic.dp_critic import DataParallelPPOCritic

P, R = 6, 5


def critic_cfg(**over):
    cfg = {"ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 2, "use_dynamic_bsz": False,
           "ppo_max_token_len_per_gpu": 64, "ppo_epochs": 1, "shuffle": False, "cliprange_value": 0.5,
           "loss_agg_mode": "token-mean", "grad_clip": 1.0}
    cfg.update(over)
    return OmegaConf.create(cfg)


@pytest.fixture(scope="module")
def value_model(tiny_model_dir):
    torch.manual_seed(0)
    return load_value_model(tiny_model_dir, torch.float32)


def _batch(make_batch, model):
    batch = make_batch(model.config.vocab_size, prompt_lens=[6, 3, 4, 2], resp_lens=[5, 2, 4, 3], P=P, R=R, seed=3)
    batch.meta_info.update({"micro_batch_size": 3, "use_dynamic_bsz": False})
    return batch


@pytest.mark.parametrize("remove_padding", [False, True])
def test_values_are_read_one_position_before_each_response_token(value_model, make_batch, remove_padding):
    batch = _batch(make_batch, value_model)
    critic = DataParallelPPOCritic(critic_cfg(), value_model, optimizer=None, use_remove_padding=remove_padding)
    values = critic.compute_values(batch)
    assert values.shape == (4, R)
    for b in range(4):
        mask = batch.batch["attention_mask"][b].bool()
        ids = batch.batch["input_ids"][b][mask]
        n_prompt, n_resp = int(mask[:P].sum()), int(mask[P:].sum())
        with torch.no_grad():
            v = value_model(input_ids=ids[None]).logits[0, :, 0]
        torch.testing.assert_close(values[b, :n_resp], v[n_prompt - 1:n_prompt - 1 + n_resp], rtol=1e-5, atol=1e-5)
        assert torch.all(values[b, n_resp:] == 0)


def test_value_loss_decreases_on_a_fixed_target(value_model, make_batch):
    module = copy.deepcopy(value_model)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.0)
    critic = DataParallelPPOCritic(critic_cfg(cliprange_value=100.0), module, opt)
    batch = _batch(make_batch, module)
    batch.batch["returns"] = torch.linspace(-1.0, 1.0, 4 * R).reshape(4, R)
    losses = []
    for _ in range(10):
        batch.batch["values"] = critic.compute_values(copy.deepcopy(batch))
        metrics = critic.update_critic(copy.deepcopy(batch))
        losses.append(metrics["critic/vf_loss"])
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/grad_norm", "critic/lr"):
        assert key in metrics
    assert losses[-1] < 0.5 * losses[0], losses
