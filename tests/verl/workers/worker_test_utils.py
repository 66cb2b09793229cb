"""Config and batch builders shared by the worker tests."""

import os

import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

import verl
from verl.protocol import DataProto
from verl.utils.torch_functional import compute_position_id_with_mask, pad_2d_list_to_length

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
P, R = 12, 6


def make_config(model_dir, *overrides):
    from hydra import compose, initialize_config_dir

    base = [
        f"actor_rollout_ref.model.path={model_dir}", "data.train_files=unused.parquet", "trainer.device=cpu",
        "trainer.seed=3", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.actor.optim.weight_decay=0.0", "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=3",
        "critic.ppo_micro_batch_size_per_gpu=2", "critic.optim.lr=1e-3",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="ppo_trainer", overrides=base + list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def prompts_of(model_dir, texts):
    tok = AutoTokenizer.from_pretrained(model_dir)
    return [tok(t)["input_ids"][:P] for t in texts]


def ppo_batch(prompts, responses, pad_id):
    """Left-padded prompts (P) + right-padded responses (R), as the agent loop builds them."""
    prompt_ids = pad_2d_list_to_length(prompts, pad_id, P, left_pad=True)
    resp_ids = pad_2d_list_to_length([r[:R] for r in responses], pad_id, R)
    prompt_mask = pad_2d_list_to_length([[1] * len(p) for p in prompts], 0, P, left_pad=True)
    resp_mask = pad_2d_list_to_length([[1] * len(r[:R]) for r in responses], 0, R)
    attention_mask = torch.cat([prompt_mask, resp_mask], 1)
    return DataProto.from_dict({
        "input_ids": torch.cat([prompt_ids, resp_ids], 1), "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask), "responses": resp_ids,
        "response_mask": resp_mask,
    })


def generate(worker, prompts, **sampling):
    data = DataProto.from_dict(non_tensors={"prompt_token_ids": [list(p) for p in prompts]},
                               meta_info={"sampling": {"max_new_tokens": R, **sampling}})
    return worker.generate(data)


TEXTS = ["who wrote hamlet?", "capital of france", "<search> moon landing </search>", "how tall is everest"]
