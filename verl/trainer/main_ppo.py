"""Hydra entry point of the PPO-family trainer.

    python -m verl.trainer.main_ppo data.train_files=... actor_rollout_ref.model.path=... [KEY=VALUE ...]
    python -m verl.trainer.main_ppo --config-path /abs/configs --config-name zerosearch_trainer ...

Flow: config -> Ray -> worker groups -> RayPPOTrainer.fit().
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from verl.workers.reward_manager import NaiveRewardManager, import_by_path

# Environment variables forwarded to every Ray worker (also on other nodes of a cluster).
_FORWARD_ENV_PREFIXES = ("VLLM_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "WANDB_", "NCCL_", "CUDA_", "OMP_",
                         "PYTORCH_", "TORCH_", "RAY_")


def load_config(overrides: list[str] | None = None, config_dir: str | None = None,
                config_name: str = "ppo_trainer") -> DictConfig:
    """Compose a config outside of ``@hydra.main`` (tests, notebooks). Unknown keys raise."""
    from hydra import compose, initialize_config_dir

    config_dir = os.path.abspath(config_dir or os.path.join(os.path.dirname(__file__), "config"))
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys Hydra overrides set: ``["+a.b=1", "~c", "d=x"]`` -> ``["a.b", "c", "d"]``."""
    return [o.split("=", 1)[0].lstrip("+~").strip() for o in overrides]


def check_model_path(path: str, key: str) -> None:
    """Fail early, naming the key, when a model path is not a Hugging Face model folder."""
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"{key}={path!r} is not a folder (expected a Hugging Face model folder)")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{key}={path!r} has no config.json: not a Hugging Face model folder")


def _runtime_env() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV_PREFIXES)}
    return {"env_vars": env}


def init_ray(config: DictConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if config.trainer.ray_address:
        ray.init(address=config.trainer.ray_address, runtime_env=_runtime_env())
    else:
        ray.init(num_cpus=config.trainer.ray_num_cpus, include_dashboard=False, runtime_env=_runtime_env(),
                 log_to_driver=True)


def build_trainer(config: DictConfig):
    """Build datasets, worker groups, reward manager and agent loop; return a RayPPOTrainer."""
    import ray
    from transformers import AutoTokenizer

    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.trainer.ppo.compute import required_roles
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl.utils.dataset.sampler import StatefulBatchIterator
    from verl.workers.fsdp_workers import ActorRolloutRefWorker, CriticWorker
    from verl.workers.rollout import check_tensor_parallel

    check_model_path(config.actor_rollout_ref.model.path, "actor_rollout_ref.model.path")
    roles = required_roles(config)  # an unknown estimator fails here, before anything is loaded
    check_tensor_parallel(config.actor_rollout_ref.rollout)  # and a tensor-parallel rollout
    tok_path = config.actor_rollout_ref.model.tokenizer_path or config.actor_rollout_ref.model.path
    tokenizer = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=config.actor_rollout_ref.model.trust_remote_code)

    train_dataset = RLHFDataset(config.data.train_files, tokenizer, config.data, max_samples=config.data.train_max_samples)
    val_dataset = (RLHFDataset(config.data.val_files, tokenizer, config.data, max_samples=config.data.val_max_samples)
                   if config.data.val_files else None)
    if val_dataset is None and (config.trainer.test_freq > 0 or config.trainer.val_before_train or config.trainer.val_only):
        raise ValueError("validation is requested (trainer.test_freq/val_before_train/val_only) but data.val_files is empty")
    bs = int(config.data.train_batch_size)
    if len(train_dataset) < bs:
        raise ValueError(f"data.train_batch_size={bs} is larger than the training set ({len(train_dataset)} rows)")
    steps_per_epoch = len(train_dataset) // bs
    total_steps = config.trainer.total_training_steps or steps_per_epoch * int(config.trainer.total_epochs)
    with open_dict(config):
        config.trainer.total_training_steps = int(total_steps)
        config.actor_rollout_ref.actor.optim.total_training_steps = int(total_steps)
        config.critic.optim.total_training_steps = int(total_steps)
    train_iterator = StatefulBatchIterator(len(train_dataset), bs, shuffle=bool(config.data.shuffle),
                                           seed=int(config.trainer.seed), drop_last=True)

    init_ray(config)
    device = config.trainer.device
    use_critic = roles.critic
    nodes = [int(config.trainer.n_gpus_per_node)] * int(config.trainer.nnodes)
    pool = RayResourcePool(process_on_nodes=nodes, use_gpu=device == "cuda",
                           max_colocate_count=2 if use_critic else 1, name_prefix="zs")
    role = "actor_rollout_ref" if roles.reference else "actor_rollout"
    actor_cls = RayClassWithInitArgs(ray.remote(ActorRolloutRefWorker), config=config, role=role)
    actor_wg = RayWorkerGroup(pool, actor_cls, device=device)
    actor_wg.init_model()
    critic_wg = None
    if use_critic:
        critic_cls = RayClassWithInitArgs(ray.remote(CriticWorker), config=config)
        critic_wg = RayWorkerGroup(pool, critic_cls, device=device)
        critic_wg.init_model()

    reward_manager = NaiveRewardManager(tokenizer, config.reward.fn, OmegaConf.to_container(config.reward.fn_kwargs, resolve=True),
                                        policy_tokens_only=config.reward.policy_tokens_only,
                                        num_examine=config.reward.num_examine)
    agent_loop = import_by_path(config.actor_rollout_ref.rollout.agent_loop)(config, tokenizer)
    trainer = RayPPOTrainer(config, tokenizer, actor_wg, critic_wg, train_dataset, val_dataset, collate_fn,
                            train_iterator, reward_manager, agent_loop, total_training_steps=int(total_steps))
    trainer.resource_pools = [pool]
    return trainer


def run_ppo(config: DictConfig) -> dict[str, float]:
    """Train with ``config``; returns the metrics of the last step."""
    import random

    import numpy as np
    import torch

    OmegaConf.resolve(config)
    seed = int(config.trainer.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    trainer = build_trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.shutdown()


@hydra.main(config_path="config", config_name="ppo_trainer", version_base="1.3")
def main(config: DictConfig) -> None:
    run_ppo(config)


if __name__ == "__main__":
    main()
