"""The single-controller PPO-family trainer.

One step reads top to bottom in ``fit``: rollout (wake the engine's weights -> weight sync ->
wake its KV cache -> agent loop -> engine sleeps) -> reward -> log-probs -> advantage -> update ->
checkpoint -> validate. Everything distributed happens inside the
worker groups; this driver only moves DataProto batches between them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from verl.agent_loop.base import AgentLoopBase
from verl.protocol import DataProto, pad_dataproto_to_divisor, unpad_dataproto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.compute import apply_kl_penalty, compute_advantage, load_estimator, required_roles
from verl.trainer.ppo.metric_utils import (compute_data_metrics, compute_throughput_metrics,
                                           compute_timing_metrics, marked_timer)
from verl.trainer.ppo.scoring import rollout_and_score, summarize, trajectory_records
from verl.utils.checkpoint import CheckpointManager, link_tree, load_trainer_state
from verl.utils.device_memory import max_over_ranks
from verl.utils.tracking import Tracking
from verl.workers.rollout.base import GenerationOutput, SamplingConfig


def object_array(items: list) -> np.ndarray:
    """A 1-D numpy object array holding ``items`` as they are (lists stay lists)."""
    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        arr[i] = x
    return arr


def _reduce(metrics: dict[str, Any]) -> dict[str, float]:
    """Mean of list-valued metrics (workers report one value per micro-batch or rank)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            vals = [float(x) for x in v]
            if vals:
                out[k] = float(np.mean(vals))
        else:
            out[k] = float(v)
    return out


def _worker_metrics(results: Any) -> dict[str, float]:
    """Metrics of a DP_COMPUTE_PROTO call: a DataProto whose meta_info carries 'metrics'."""
    if isinstance(results, DataProto):
        return _reduce(results.meta_info.get("metrics", {}))
    merged: dict[str, list] = {}
    for r in results:
        for k, v in (r.meta_info.get("metrics", {}) if isinstance(r, DataProto) else r).items():
            merged.setdefault(k, []).extend(v if isinstance(v, (list, tuple)) else [v])
    return _reduce(merged)


def per_row_call(method: Callable[[DataProto], DataProto], world_size: int, data: DataProto) -> DataProto:
    """Call a worker group's DP_COMPUTE_PROTO ``method`` that answers one row per row of ``data``.

    ``data`` is padded to a multiple of ``world_size`` (the group's rank count) for the call and
    the padding rows are dropped from the answer.
    """
    padded, pad = pad_dataproto_to_divisor(data, world_size)
    out = method(padded)
    if len(out) != len(padded):
        raise ValueError(f"{getattr(method, '__name__', method)}: answered {len(out)} rows for {len(padded)}")
    return unpad_dataproto(out, pad)


def update_call(method: Callable[[DataProto], Any], world_size: int, data: DataProto) -> dict[str, float]:
    """Call a worker group's update ``method`` (padded as in ``per_row_call``); returns its metrics."""
    padded, _ = pad_dataproto_to_divisor(data, world_size)
    return _worker_metrics(method(padded))


def add_metrics(metrics: dict[str, float], new: dict[str, float], source: str) -> None:
    """Add ``new`` to ``metrics``; a name already there is an error (each metric has one writer)."""
    clash = sorted(set(metrics) & set(new))
    if clash:
        raise ValueError(f"{source} writes metrics that another part of the step already wrote: {clash}")
    metrics.update(new)


# Non-tensor columns that validation records keep when the batch has them.
RECORD_COLUMNS = ("question", "golden_answers", "num_turns", "num_searches", "search_queries")


class RayPPOTrainer:
    """Drives PPO / GRPO / REINFORCE training over Ray worker groups.

    Args:
        config: the full trainer config (verl/trainer/config/ppo_trainer.yaml).
        tokenizer: the policy tokenizer.
        actor_rollout_wg: worker group of ``ActorRolloutRefWorker`` (actor, rollout and ref).
        critic_wg: worker group of ``CriticWorker`` or None when the estimator needs no critic.
        train_dataset / val_dataset: RL datasets; ``collate_fn`` turns rows into a DataProto.
        train_iterator: a resumable batch-index iterator (state_dict/load_state_dict).
        reward_manager: callable DataProto -> (token_level_scores, extras).
        agent_loop: the configured AgentLoopBase.
    """

    def __init__(self, config: DictConfig, tokenizer, actor_rollout_wg, critic_wg, train_dataset, val_dataset,
                 collate_fn, train_iterator, reward_manager, agent_loop: AgentLoopBase, total_training_steps: int) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.actor_rollout_wg = actor_rollout_wg
        self.critic_wg = critic_wg
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.collate_fn = collate_fn
        self.train_iterator = train_iterator
        self.reward_manager = reward_manager
        self.agent_loop = agent_loop
        self.total_training_steps = total_training_steps
        self.global_step = 0
        self.estimator = load_estimator(config.algorithm)
        roles = required_roles(config, self.estimator)
        self.use_critic, self.use_reference = roles.critic, roles.reference
        self.kl_ctrl = core_algos.get_kl_controller(config.algorithm.kl_ctrl)
        self.ckpt = CheckpointManager(config.trainer.default_local_dir, config.trainer.max_ckpt_to_keep)
        self.n_devices = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
        self.resource_pools: list = []

    def shutdown(self) -> None:
        """Stop the worker actors and release their resources (the Ray cluster stays up)."""
        for wg in (self.actor_rollout_wg, self.critic_wg):
            if wg is not None:
                wg.shutdown()
        for pool in self.resource_pools:
            pool.remove()

    # ------------------------------------------------------------------ rollout plumbing
    def generate(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        """Generate for a list of prompts on the rollout workers (the agent loop's ``generate``)."""
        data = DataProto.from_dict(non_tensors={"prompt_token_ids": object_array([list(p) for p in prompts])},
                                   meta_info={"sampling": asdict(sampling)})
        out = per_row_call(self.actor_rollout_wg.generate, self.actor_rollout_wg.world_size, data)
        nt = out.non_tensor_batch
        return [GenerationOutput(token_ids=list(nt["output_token_ids"][i]), log_probs=list(nt["output_log_probs"][i]),
                                 finish_reason=str(nt["finish_reason"][i])) for i in range(len(out))]

    def wake_rollout(self, timing: dict[str, float], metrics: dict[str, float]) -> None:
        """Before a rollout: the engine's weights wake, take the actor's current weights, then its
        KV cache wakes (in this order, so that both never hold memory beside a stale copy)."""
        with marked_timer("wake_weights", timing):
            self.actor_rollout_wg.wake_rollout_weights()
        with marked_timer("weight_sync", timing):
            add_metrics(metrics, _worker_metrics(self.actor_rollout_wg.sync_rollout_weights()), "weight sync")
        with marked_timer("wake_kv_cache", timing):
            self.actor_rollout_wg.wake_rollout_kv_cache()

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "train_iterator": self.train_iterator.state_dict(),
            "agent_loop": self.agent_loop.state_dict(),
            "kl_coef": float(self.kl_ctrl.value),
        }

    def save_checkpoint(self) -> str:
        """The full checkpoint of this step (rotated by ``trainer.max_ckpt_to_keep``) and, with
        ``trainer.save_exports``, first its weights-only export (never rotated), in the compute
        dtype, with the run's resolved config (``train_config.yaml``); with ``save_hf`` too, the
        checkpoint's ``actor/huggingface`` holds the export's files (hard links) instead of a second
        gather of the weights."""
        export = None
        if self.config.trainer.save_exports:
            dtype = str(self.config.actor_rollout_ref.model.dtype)
            # the run's config beside the weights: evaluation takes the task settings from it
            export = self.ckpt.save_export(self.global_step,
                                           lambda folder: self.actor_rollout_wg.export_hf(folder, dtype),
                                           config_yaml=OmegaConf.to_yaml(self.config, resolve=True))
            print(f"[checkpoint] exported step {self.global_step} weights ({dtype}) to {export}", flush=True)

        def write(folder: str) -> None:
            self.actor_rollout_wg.save_checkpoint(os.path.join(folder, "actor"))
            if self.config.trainer.save_hf:
                hf = os.path.join(folder, "actor", "huggingface")
                if export is not None:
                    link_tree(export, hf)
                else:
                    self.actor_rollout_wg.export_hf(hf)
            if self.use_critic:
                self.critic_wg.save_checkpoint(os.path.join(folder, "critic"))

        path = self.ckpt.save(self.global_step, self._trainer_state(), write)
        print(f"[checkpoint] saved step {self.global_step} to {path}", flush=True)
        return path

    def load_checkpoint(self) -> None:
        mode = self.config.trainer.resume_mode
        if mode == "disable":
            return
        if mode == "auto":
            path = self.ckpt.latest()
            if path is None:
                print("[checkpoint] no checkpoint found; training from scratch", flush=True)
                return
        elif mode == "path":
            path = self.config.trainer.resume_from_path
            if not path:
                raise ValueError("trainer.resume_mode=path needs trainer.resume_from_path")
        else:
            raise ValueError(f"trainer.resume_mode={mode!r}; valid: auto, disable, path")
        state = load_trainer_state(path)
        self.actor_rollout_wg.load_checkpoint(os.path.join(path, "actor"))
        if self.use_critic:
            self.critic_wg.load_checkpoint(os.path.join(path, "critic"))
        self.global_step = int(state["global_step"])
        self.train_iterator.load_state_dict(state["train_iterator"])
        self.agent_loop.load_state_dict(state.get("agent_loop", {}))
        if hasattr(self.kl_ctrl, "value"):
            self.kl_ctrl.value = float(state.get("kl_coef", self.kl_ctrl.value))
        print(f"[checkpoint] resumed from {path} at step {self.global_step}", flush=True)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """Roll out every validation row (no drop_last), greedy by default, and score it.

        Metrics: ``val/<score>/<data source>`` and ``val/<score>/mean_over_sources|mean_over_rows``
        (``verl/trainer/ppo/scoring.py``); records in ``trainer.validation_data_dir``.
        """
        cfg = self.config
        n_val = int(cfg.actor_rollout_ref.rollout.val_kwargs.n)
        bs = int(cfg.data.val_batch_size)
        records: list[dict[str, Any]] = []
        score_keys: list[str] = []
        indices = list(range(len(self.val_dataset)))
        self.wake_rollout({}, {})
        for start in tqdm(range(0, len(indices), bs), desc="validation", leave=False):
            batch = self.collate_fn([self.val_dataset[i] for i in indices[start:start + bs]])
            if n_val > 1:
                batch = batch.repeat(n_val, interleave=True)
            out, extras = rollout_and_score(self.agent_loop, self.generate, self.reward_manager, batch,
                                            self.global_step)
            score_keys = score_keys or list(extras)
            for rec in trajectory_records(out, extras, self.tokenizer, RECORD_COLUMNS):
                records.append({"step": self.global_step, **rec})
        self.actor_rollout_wg.sleep_rollout()
        metrics: dict[str, float] = {}
        if records and score_keys:
            for source, scores in summarize(records, score_keys).items():
                for key in score_keys:
                    metrics[f"val/{key}/{source}"] = float(scores[key])
        self._write_records(records)
        return metrics

    def _write_records(self, records: list[dict]) -> None:
        folder = self.config.trainer.validation_data_dir
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step_{self.global_step}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, default=str) + "\n")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        cfg = self.config
        tracker = Tracking(cfg.trainer.project_name, cfg.trainer.experiment_name, list(cfg.trainer.logger),
                           config=OmegaConf.to_container(cfg, resolve=True), log_dir=cfg.trainer.log_dir)
        self.load_checkpoint()
        last_metrics: dict[str, float] = {}
        try:
            if cfg.trainer.val_before_train or cfg.trainer.val_only:
                val = self.validate()
                tracker.log(val, step=self.global_step)
                last_metrics.update(val)
                if cfg.trainer.val_only:
                    return last_metrics
            progress = tqdm(total=self.total_training_steps, initial=self.global_step, desc="training steps")
            while self.global_step < self.total_training_steps:
                indices = next(self.train_iterator)
                batch = self.collate_fn([self.train_dataset[i] for i in indices])
                self.global_step += 1
                metrics = self.train_step(batch)
                metrics["training/global_step"] = self.global_step
                is_last = self.global_step >= self.total_training_steps
                if cfg.trainer.save_freq > 0 and (self.global_step % cfg.trainer.save_freq == 0 or is_last):
                    with marked_timer("save_checkpoint", timing := {}):
                        self.save_checkpoint()
                    metrics.update(compute_timing_metrics(timing))
                if cfg.trainer.test_freq > 0 and (self.global_step % cfg.trainer.test_freq == 0 or is_last):
                    metrics.update(self.validate())
                tracker.log(metrics, step=self.global_step)
                last_metrics = metrics
                progress.update(1)
            progress.close()
        finally:
            tracker.finish()
            self.agent_loop.close()
        return last_metrics

    def train_step(self, batch: DataProto) -> dict[str, float]:
        """One PPO-family step on a batch of prompts; returns its metrics."""
        cfg = self.config
        actor = self.actor_rollout_wg
        timing: dict[str, float] = {}
        metrics: dict[str, float] = {}
        with marked_timer("step", timing):
            # 1. rollout: repeat each prompt n times (interleaved, same uid); wake the engine (weights ->
            #    sync -> KV cache), run the agent loop, then release the engine's memory for training
            batch = batch.repeat(int(cfg.actor_rollout_ref.rollout.n), interleave=True)
            self.wake_rollout(timing, metrics)
            with marked_timer("rollout", timing):
                batch = self.agent_loop.run(batch, self.generate, step=self.global_step, validate=False)
            with marked_timer("sleep_rollout", timing):  # on cuda: memory/sleep_freed_gib, mean over ranks
                add_metrics(metrics, _worker_metrics([m or {} for m in actor.sleep_rollout()]), "sleep_rollout")
            add_metrics(timing, batch.meta_info.pop("timing", {}), "the agent loop's timing")
            add_metrics(metrics, batch.meta_info.pop("metrics", {}), "the agent loop")

            # 2. reward on the response, placed on the last policy token
            with marked_timer("reward", timing):
                scores, extras = self.reward_manager(batch)
                batch.batch["token_level_scores"] = scores
                add_metrics(metrics, {f"reward/{k}": float(np.mean(v)) for k, v in extras.items()}, "the reward")

            # 3. log-probs of the current policy, the reference, and values
            with marked_timer("old_log_prob", timing):
                old = per_row_call(actor.compute_log_prob, actor.world_size, batch)
                batch = batch.union(old.select(batch_keys=["old_log_probs"]))
                mask = batch.batch["response_mask"].bool()
                if "entropys" in old.batch:
                    metrics["actor/entropy"] = float(old.batch["entropys"][mask].mean()) if mask.any() else 0.0
                if "rollout_log_probs" in batch.batch and mask.any():
                    diff = (batch.batch["rollout_log_probs"] - batch.batch["old_log_probs"]).abs()[mask]
                    metrics["actor/rollout_old_logprob_abs_diff"] = float(diff.mean())
            if self.use_reference:
                with marked_timer("ref", timing):
                    batch = batch.union(per_row_call(actor.compute_ref_log_prob, actor.world_size, batch)
                                        .select(batch_keys=["ref_log_prob"]))
            if self.use_critic:
                with marked_timer("values", timing):
                    batch = batch.union(per_row_call(self.critic_wg.compute_values, self.critic_wg.world_size, batch)
                                        .select(batch_keys=["values"]))

            # 4. KL (in the reward for PPO; as a loss term inside the actor otherwise) and advantages
            with marked_timer("adv", timing):
                if cfg.algorithm.use_kl_in_reward:
                    add_metrics(metrics, apply_kl_penalty(batch, self.kl_ctrl, cfg.algorithm.kl_penalty),
                                "KL in reward")
                else:
                    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
                compute_advantage(batch, self.estimator, cfg.algorithm)

            # 5. updates (the rollout engine takes the new weights before the next rollout)
            if self.use_critic:
                with marked_timer("update_critic", timing):
                    add_metrics(metrics, update_call(self.critic_wg.update_critic, self.critic_wg.world_size, batch),
                                "update_critic")
            if self.global_step > int(cfg.trainer.critic_warmup):
                with marked_timer("update_actor", timing):
                    actor_metrics = update_call(actor.update_actor, actor.world_size, batch)
                add_metrics(metrics, actor_metrics, "update_actor")

        add_metrics(metrics, compute_data_metrics(batch, self.use_critic), "data metrics")
        add_metrics(metrics, compute_timing_metrics(timing), "timing")
        if cfg.trainer.device == "cuda":  # peak GPU memory per phase, largest over ranks
            add_metrics(metrics, max_over_ranks(actor.memory_metrics()), "memory")
        add_metrics(metrics, compute_throughput_metrics(batch, timing["step"], self.n_devices), "throughput")
        return metrics
