"""The trainer's step wakes the rollout engine (weights -> sync -> KV cache) before the rollout and
puts it to sleep after it, outside update_actor, with each phase timed: a recording fake worker
group through two real ``train_step`` calls."""

from __future__ import annotations

import os

import numpy as np
import torch
from omegaconf import OmegaConf

import verl
from verl.protocol import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, object_array
from verl.workers.rollout.base import SamplingConfig

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
PROMPTS, N, P, R = 2, 2, 3, 2


def _config(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="ppo_trainer", overrides=[
            "actor_rollout_ref.model.path=unused", "data.train_files=unused.parquet", "trainer.device=cpu",
            f"actor_rollout_ref.rollout.n={N}", "algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=false",
            "actor_rollout_ref.actor.use_kl_loss=false", f"trainer.default_local_dir={tmp_path}",
        ])
    OmegaConf.resolve(cfg)
    return cfg


class RecordingWorkerGroup:
    """The actor/rollout worker group's methods, each recording its name in ``calls``."""

    world_size = 1

    def __init__(self) -> None:
        self.calls: list[str] = []

    def wake_rollout_weights(self):
        self.calls.append("wake weights")
        return [None]

    def sync_rollout_weights(self):
        self.calls.append("load_weights")
        return [{"weight_sync/bytes": 96.0, "weight_sync/tensors": 3.0}]

    def wake_rollout_kv_cache(self):
        self.calls.append("wake kv_cache")
        return [None]

    def sleep_rollout(self):
        self.calls.append("sleep")
        return [None]

    def generate(self, data: DataProto) -> DataProto:
        self.calls.append("generate")
        rows = len(data)
        return DataProto.from_dict(non_tensors={
            "output_token_ids": object_array([[5] * R] * rows), "output_log_probs": object_array([[-1.0] * R] * rows),
            "finish_reason": object_array(["length"] * rows)})

    def compute_log_prob(self, data: DataProto) -> DataProto:
        self.calls.append("compute_log_prob")
        return DataProto.from_dict({"old_log_probs": torch.zeros(len(data), R), "entropys": torch.ones(len(data), R)})

    def update_actor(self, data: DataProto) -> DataProto:
        self.calls.append("update_actor")
        return DataProto.from_dict(meta_info={"metrics": {"actor/pg_loss": 0.0}})


class OneTurnLoop:
    """Generates once through the trainer and returns a PPO batch of the outputs."""

    def run(self, batch: DataProto, generate, step: int, validate: bool) -> DataProto:
        outputs = generate([[1, 2, 3]] * len(batch), SamplingConfig(max_new_tokens=R))
        responses = torch.tensor([o.token_ids for o in outputs])
        prompts = torch.tensor([[1, 2, 3]] * len(batch))
        mask = torch.ones(len(batch), P + R, dtype=torch.long)
        batch.batch.update({"input_ids": torch.cat([prompts, responses], 1), "attention_mask": mask,
                            "position_ids": torch.arange(P + R).expand(len(batch), -1).clone(),
                            "responses": responses, "response_mask": torch.ones(len(batch), R, dtype=torch.long)})
        return batch


def _reward(batch: DataProto):
    scores = torch.zeros(len(batch), R)
    scores[::2, -1] = 1.0
    return scores, {"score": scores.sum(-1).tolist()}


def test_two_steps_wake_sync_and_sleep_the_engine_around_each_rollout(tmp_path):
    wg = RecordingWorkerGroup()
    trainer = RayPPOTrainer(_config(tmp_path), None, wg, None, None, None, None, None, _reward, OneTurnLoop(), 2)
    for step in (1, 2):
        trainer.global_step = step
        prompts = DataProto.from_dict({"dummy": torch.zeros(PROMPTS, 1)},
                                      non_tensors={"uid": np.array(["a", "b"], dtype=object)})
        metrics = trainer.train_step(prompts)
        for phase in ("wake_weights", "weight_sync", "wake_kv_cache", "sleep_rollout", "update_actor"):
            assert metrics[f"timing_s/{phase}"] >= 0.0, phase
        assert metrics["weight_sync/bytes"] == 96.0
    one_step = ["wake weights", "load_weights", "wake kv_cache", "generate", "sleep", "compute_log_prob",
                "update_actor"]
    assert wg.calls == one_step + one_step


class SleepingRanksWorkerGroup(RecordingWorkerGroup):
    """Two ranks whose engines slept on cuda and said how much device memory each freed."""

    def sleep_rollout(self):
        self.calls.append("sleep")
        return [{"memory/sleep_freed_gib": 40.0}, {"memory/sleep_freed_gib": 42.0}]


def test_the_memory_freed_by_sleep_is_logged_as_the_mean_over_ranks_and_absent_where_none_slept(tmp_path):
    prompts = DataProto.from_dict({"dummy": torch.zeros(PROMPTS, 1)},
                                  non_tensors={"uid": np.array(["a", "b"], dtype=object)})
    trainer = RayPPOTrainer(_config(tmp_path), None, SleepingRanksWorkerGroup(), None, None, None, None, None,
                            _reward, OneTurnLoop(), 1)
    trainer.global_step = 1
    assert trainer.train_step(prompts)["memory/sleep_freed_gib"] == 41.0
    trainer = RayPPOTrainer(_config(tmp_path), None, RecordingWorkerGroup(), None, None, None, None, None, _reward,
                            OneTurnLoop(), 1)
    trainer.global_step = 1
    assert "memory/sleep_freed_gib" not in trainer.train_step(prompts)  # CPU engines and hf cannot sleep
