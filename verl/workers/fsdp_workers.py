"""The training workers the trainer drives through Ray worker groups.

``ActorRolloutRefWorker(config, role)`` holds, in one process per rank, any of:
- the actor (role contains "actor"): the trainable policy, its AdamW and lr schedule;
- the rollout engine (role contains "rollout"): ``hf`` generates with the policy itself
  (under FSDP with a plain copy refreshed by the weight sync, because a sharded module would
  need every rank to run the same number of decoding steps); ``vllm`` runs its own engine that
  receives the actor's weights, streamed from the shards, at every weight sync;
- the reference policy (role contains "ref"): a frozen copy loaded from the same folder.
``CriticWorker(config)`` holds the value model.

Both take the whole trainer config and are device-agnostic: ``trainer.device`` cuda uses nccl
(with gloo for CPU tensors), cpu uses gloo; each worker creates its process group in ``init_model``. Strategy
(``actor.strategy`` / ``critic.strategy``): ``fsdp`` = FSDP2 (on cpu+gloo too), ``ddp``, or
``none`` (one process); see ``verl/utils/fsdp_utils.py``. Under ``fsdp`` with several ranks only
rank 0 reads a model's weights from disk (the others build it on the meta device and receive their
shards from rank 0), so a node holds one full host copy of each model, not one per rank.

Checkpoint folder (``save_checkpoint(path)``; the trainer makes it atomic and keeps the last N):
  path/model_optim/            DCP files, one ``__<rank>_0.distcp`` per rank + ``.metadata``
                               (model shards or replicas, and the optimizer state)
  path/extra_state_rank<r>.pt  lr scheduler state and RNG states (torch, cuda, numpy, python)
Every rank must see the same ``path`` (a shared file system on several nodes).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig

from verl.protocol import DataProto
from verl.single_controller.base import Dispatch, Worker, register
from verl.utils.device_memory import PhasePeaks
from verl.utils.distributed import all_reduce_mean, backend_for_device, device_of, init_distributed
from verl.utils.fsdp_utils import (check_strategy, fill_from_rank0, full_state_dict, is_fsdp, load_model_optimizer,
                                   loads_on_rank0_only, save_model_optimizer, unwrap_model, wrap_model)
from verl.utils.model import (check_attn_implementation, load_causal_lm, load_tokenizer, load_value_model,
                              torch_dtype)
from verl.utils.optim import build_lr_scheduler, build_optimizer
from verl.workers.actor.dp_actor import DataParallelPPOActor
from verl.workers.critic.dp_critic import DataParallelPPOCritic
from verl.workers.rollout import SamplingConfig, build_rollout
from verl.workers.rollout.weight_sync import named_weights

logger = logging.getLogger(__name__)

ROLES = ("actor_rollout_ref", "actor_rollout", "ref")
MODEL_OPTIM_DIR = "model_optim"


# ---------------------------------------------------------------------- shared helpers
def _extra_state_file(path: str, rank: int) -> str:
    return os.path.join(path, f"extra_state_rank{rank}.pt")


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _save_training_state(path: str, rank: int, world_size: int, module: torch.nn.Module,
                         optimizer: torch.optim.Optimizer, scheduler) -> None:
    os.makedirs(path, exist_ok=True)
    save_model_optimizer(os.path.join(path, MODEL_OPTIM_DIR), module, optimizer)
    extra = {"world_size": world_size, "lr_scheduler": scheduler.state_dict(), "rng": _rng_state()}
    torch.save(extra, _extra_state_file(path, rank))
    if dist.is_initialized():
        dist.barrier()


def _load_training_state(path: str, rank: int, world_size: int, module: torch.nn.Module,
                         optimizer: torch.optim.Optimizer, scheduler) -> None:
    model_dir = os.path.join(path, MODEL_OPTIM_DIR)
    if not os.path.isfile(os.path.join(model_dir, ".metadata")):
        raise FileNotFoundError(f"load_checkpoint: {model_dir} has no DCP checkpoint (.metadata missing)")
    extra_file = _extra_state_file(path, rank)
    if not os.path.isfile(extra_file):
        raise FileNotFoundError(f"load_checkpoint: {extra_file} is missing (was the checkpoint written by "
                                f"{world_size} ranks?)")
    load_model_optimizer(model_dir, module, optimizer)
    # our own file: it holds numpy / python RNG states, which weights_only loading rejects
    extra = torch.load(extra_file, map_location="cpu", weights_only=False)
    if int(extra["world_size"]) != world_size:
        raise ValueError(f"load_checkpoint: {path} was written by {extra['world_size']} ranks, this group has "
                         f"{world_size} (RNG and scheduler states are per rank)")
    scheduler.load_state_dict(extra["lr_scheduler"])
    _set_rng_state(extra["rng"])


def cpu_threads_per_worker(trainer_cfg: DictConfig) -> int:
    """Torch threads of one CPU worker: ``trainer.cpu_threads_per_worker``, or the node's cores
    shared among its worker processes. Ray sets OMP_NUM_THREADS to an actor's CPU reservation
    (1), which would leave a CPU run on one thread however many cores the node has."""
    wanted = trainer_cfg.get("cpu_threads_per_worker")
    if wanted is not None:
        if int(wanted) < 1:
            raise ValueError(f"trainer.cpu_threads_per_worker must be >= 1 or null, got {wanted}")
        return int(wanted)
    return max(1, (os.cpu_count() or 1) // max(1, int(trainer_cfg.n_gpus_per_node)))


def _fsdp_offload(fsdp_cfg: DictConfig) -> bool:
    return bool(fsdp_cfg.get("param_offload", False)) or bool(fsdp_cfg.get("optimizer_offload", False))


class _DistributedWorker(Worker):
    """Process-group set-up shared by the workers."""

    def __init__(self, config: DictConfig) -> None:
        super().__init__()
        self.config = config
        self.device_name = str(config.trainer.device)
        backend_for_device(self.device_name)  # validates trainer.device
        self._memory = PhasePeaks(self.device_name)  # peak GPU memory per phase (cuda only)
        if self.device_name == "cpu":
            torch.set_num_threads(cpu_threads_per_worker(config.trainer))

    def _trained(self, what: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        """The (module, optimizer, lr scheduler) a checkpoint holds; an error naming ``what`` if there is none."""
        raise NotImplementedError(f"{what}: {type(self).__name__} trains no model")

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str) -> None:
        """Write the trained model, its optimizer, lr scheduler and RNG states into ``path``."""
        _save_training_state(path, self.rank, self.world_size, *self._trained("save_checkpoint"))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        """Restore what ``save_checkpoint`` wrote."""
        _load_training_state(path, self.rank, self.world_size, *self._trained("load_checkpoint"))

    def _init_distributed(self) -> None:
        info = self.dist_info
        init_distributed(self.device_name, info.rank, info.world_size, info.master_addr, info.master_port,
                         local_rank=info.local_rank)
        self.device = device_of(self.device_name)

    def _seed(self, per_rank: bool) -> None:
        """Seed torch, numpy and python: the same on every rank while modules are built (so fresh
        heads such as the critic's start identical), then ``seed + rank`` so that ranks sample and
        shuffle independently."""
        seed = int(self.config.trainer.seed) + (self.rank if per_rank else 0)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def _load_dtype(self, strategy: str, model_cfg: DictConfig) -> tuple[torch.dtype, Optional[torch.dtype]]:
        """(dtype the weights are loaded in, FSDP mixed-precision compute dtype or None)."""
        dtype = torch_dtype(model_cfg.dtype)
        if strategy == "fsdp" and self.device_name == "cuda" and dtype != torch.float32:
            return torch.float32, dtype  # fp32 master weights, low-precision compute
        return dtype, None

    def _load_and_wrap(self, load, strategy: str, fsdp_cfg: DictConfig, *, prepare=None, trainable: bool = True,
                       mixed_precision_dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
        """Load a model (``load(meta=...)``), ``prepare`` it (e.g. gradient checkpointing) and wrap it.

        Under FSDP over several ranks only rank 0 reads the weights: the others build the model on
        the meta device, and after sharding every rank receives its shards from rank 0
        (``fill_from_rank0``), so the host holds one full copy instead of one per rank. Otherwise
        every rank loads the weights itself.
        """
        from_rank0 = loads_on_rank0_only(strategy, self.world_size)
        module = load(meta=from_rank0 and self.rank != 0)
        full_state = module.state_dict() if from_rank0 and self.rank == 0 else None
        if prepare is not None:
            prepare(module)
        cpu_offload = _fsdp_offload(fsdp_cfg)
        module = wrap_model(module, strategy, self.device_name, world_size=self.world_size, trainable=trainable,
                            mixed_precision_dtype=mixed_precision_dtype,
                            reshard_after_forward=bool(fsdp_cfg.reshard_after_forward), cpu_offload=cpu_offload)
        if from_rank0:
            fill_from_rank0(module, full_state, self.device_name, cpu_offload=cpu_offload)
            del full_state
        return module


# ---------------------------------------------------------------------- actor / rollout / ref
class ActorRolloutRefWorker(_DistributedWorker):
    """Actor, rollout engine and reference policy of one rank (see the module docstring).

    Args:
        config: the whole trainer config (reads ``actor_rollout_ref``, ``trainer.device``,
            ``trainer.seed``).
        role: "actor_rollout_ref", "actor_rollout" or "ref".
    """

    def __init__(self, config: DictConfig, role: str) -> None:
        super().__init__(config)
        if role not in ROLES:
            raise ValueError(f"ActorRolloutRefWorker: role must be one of {ROLES}, got {role!r}")
        self.role = role
        self.cfg = config.actor_rollout_ref
        self._is_actor = role.startswith("actor")
        self._is_rollout = "rollout" in role
        self._is_ref = "ref" in role
        self.actor: Optional[DataParallelPPOActor] = None
        self.ref_policy: Optional[DataParallelPPOActor] = None
        self.rollout = None
        self._gen_module: Optional[torch.nn.Module] = None

    # .................................................................. building
    def _build_policy(self, trainable: bool) -> torch.nn.Module:
        model_cfg = self.cfg.model
        strategy = check_strategy(self.cfg.actor.strategy, self.world_size)
        fsdp_cfg = self.cfg.actor.fsdp_config if trainable else self.cfg.ref.fsdp_config
        compute_dtype = torch_dtype(model_cfg.dtype)
        # the frozen reference needs no float32 master copy: it is loaded in its compute dtype
        load_dtype, mp_dtype = self._load_dtype(strategy, model_cfg) if trainable else (compute_dtype, None)
        attn = check_attn_implementation(model_cfg.attn_implementation, self.device_name, compute_dtype)

        def load(meta: bool) -> torch.nn.Module:
            return load_causal_lm(model_cfg.path, load_dtype, attn, bool(model_cfg.trust_remote_code), meta=meta)

        def prepare(module: torch.nn.Module) -> None:
            if trainable and model_cfg.enable_gradient_checkpointing:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if not trainable:
                module.requires_grad_(False)
                module.eval()

        if not trainable:
            # a frozen module needs no gradient sync: shard it under fsdp, else keep a plain copy
            strategy = "fsdp" if strategy == "fsdp" else "ddp"
        return self._load_and_wrap(load, strategy, fsdp_cfg, prepare=prepare, trainable=trainable,
                                   mixed_precision_dtype=mp_dtype)

    def _build_rollout(self) -> None:
        rollout_cfg = self.cfg.rollout
        model_cfg = self.cfg.model
        name = rollout_cfg.name
        if name == "hf":
            if is_fsdp(self.actor_module):
                self._gen_module = load_causal_lm(model_cfg.path, torch_dtype(model_cfg.dtype),
                                                  model_cfg.attn_implementation,
                                                  bool(model_cfg.trust_remote_code)).to(self.device)
                self._gen_module.requires_grad_(False)
                self._gen_module.eval()
                self.rollout = build_rollout("hf", tokenizer=self.tokenizer, config=rollout_cfg,
                                             module=lambda: self._gen_module)
            else:
                self.rollout = build_rollout("hf", tokenizer=self.tokenizer, config=rollout_cfg,
                                             module=lambda: unwrap_model(self.actor_module))
        else:
            self.rollout = build_rollout(name, tokenizer=self.tokenizer, config=rollout_cfg, model_path=model_cfg.path,
                                         tokenizer_path=model_cfg.tokenizer_path or model_cfg.path,
                                         seed=int(self.config.trainer.seed) + self.rank, device=self.device_name)
        logger.info("rank %d: %s rollout ready", self.rank, name)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        """Join the process group and load the modules of this role."""
        self._init_distributed()
        self._seed(per_rank=False)
        model_cfg = self.cfg.model
        self.tokenizer = load_tokenizer(model_cfg.tokenizer_path or model_cfg.path, bool(model_cfg.trust_remote_code))
        use_rmpad = bool(model_cfg.use_remove_padding)
        if self._is_actor:
            self.actor_module = self._build_policy(trainable=True)
            optim_cfg = self.cfg.actor.optim
            optimizer = build_optimizer(self.actor_module.parameters(), optim_cfg, "actor_rollout_ref.actor.optim")
            scheduler = build_lr_scheduler(optimizer, optim_cfg, "actor_rollout_ref.actor.optim")
            self.actor = DataParallelPPOActor(self.cfg.actor, self.actor_module, optimizer, scheduler,
                                              dp_size=self.world_size, use_remove_padding=use_rmpad,
                                              device=self.device)
        if self._is_ref:
            self.ref_module = self._build_policy(trainable=False)
            self.ref_policy = DataParallelPPOActor(self.cfg.actor, self.ref_module, dp_size=self.world_size,
                                                   use_remove_padding=use_rmpad, device=self.device)
        if self._is_rollout:
            self._build_rollout()
        self._seed(per_rank=True)

    # .................................................................. rollout memory and weights
    def _require_rollout(self, what: str):
        if self.rollout is None:
            raise RuntimeError(f"{what}: role {self.role!r} has no rollout engine")
        return self.rollout

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def sleep_rollout(self) -> dict[str, float]:
        """Release the rollout engine's memory after a rollout (KV cache; weights at sleep_level 2).

        Returns the engine's ``memory/sleep_freed_gib`` where it slept (cuda), else ``{}``.
        """
        return self._require_rollout("sleep_rollout").sleep()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def wake_rollout_weights(self) -> None:
        """Give the engine's weights their memory back, before ``sync_rollout_weights``."""
        self._require_rollout("wake_rollout_weights").wake_weights()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def sync_rollout_weights(self) -> dict[str, float]:
        """Stream the actor's current weights into the rollout engine (collective under FSDP).

        Returns this rank's ``weight_sync/*`` metrics (tensors, bytes moved, peak bytes held).
        """
        rollout = self._require_rollout("sync_rollout_weights")
        if self.actor is None:
            raise RuntimeError(f"sync_rollout_weights: role {self.role!r} has no actor")
        with self._memory.phase("weight sync"):
            return rollout.sync_weights(named_weights(unwrap_model(self.actor_module))).metrics()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def wake_rollout_kv_cache(self) -> None:
        """Allocate the engine's KV cache again, after ``sync_rollout_weights``: ready to generate."""
        self._require_rollout("wake_rollout_kv_cache").wake_kv_cache()

    # .................................................................. rollout
    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def generate(self, data: DataProto) -> DataProto:
        """Continue each ``prompt_token_ids`` row with ``meta_info["sampling"]`` (SamplingConfig fields).

        A per-call seed is offset by ``rank * rows`` so that ranks never share a seed (an engine
        that seeds row i with ``seed + i`` then sees the global row index, whatever the number
        of ranks).
        """
        if self.rollout is None:
            raise RuntimeError(f"generate: role {self.role!r} has no rollout engine")
        if "sampling" not in data.meta_info:
            raise KeyError("generate: meta_info['sampling'] (a dict of SamplingConfig fields) is required")
        if "prompt_token_ids" not in data.non_tensor_batch:
            raise KeyError("generate: the non-tensor column 'prompt_token_ids' is required")
        fields = {f.name for f in dataclasses.fields(SamplingConfig)}
        unknown = set(data.meta_info["sampling"]) - fields
        if unknown:
            raise ValueError(f"generate: meta_info['sampling'] has unknown keys {sorted(unknown)}; "
                             f"valid: {sorted(fields)}")
        sampling = SamplingConfig(**data.meta_info["sampling"])
        if sampling.seed is not None:
            sampling = dataclasses.replace(sampling, seed=int(sampling.seed) + self.rank * len(data))
        prompts = [[int(t) for t in p] for p in data.non_tensor_batch["prompt_token_ids"]]
        with self._memory.phase("rollout"):
            outputs = self.rollout.generate(prompts, sampling) if prompts else []
        return DataProto.from_dict(non_tensors={
            "output_token_ids": [list(o.token_ids) for o in outputs],
            "output_log_probs": [list(o.log_probs) for o in outputs],
            "finish_reason": [str(o.finish_reason) for o in outputs],
        })

    # .................................................................. log-probs
    def _log_prob_meta(self, data: DataProto, micro_batch_size: int, max_token_len: int) -> DataProto:
        meta = {
            "temperature": float(self.cfg.rollout.temperature),
            "micro_batch_size": int(micro_batch_size),
            "use_dynamic_bsz": bool(self.cfg.actor.use_dynamic_bsz),
            "max_token_len": int(max_token_len),
        }
        meta.update(data.meta_info)
        return DataProto(batch=data.batch, non_tensor_batch=data.non_tensor_batch, meta_info=meta)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        """``old_log_probs`` (B, R) and ``entropys`` (B, R) of ``responses`` under the actor.

        Logits are divided by meta_info ``temperature`` (default: ``rollout.temperature``).
        """
        actor = self._require_actor("compute_log_prob")
        data = self._log_prob_meta(data, self.cfg.rollout.log_prob_micro_batch_size_per_gpu,
                                   self.cfg.rollout.log_prob_max_token_len_per_gpu)
        with self._memory.phase("log-prob"):
            log_probs, entropy = actor.compute_log_prob(data, calculate_entropy=True)
        return DataProto.from_dict({"old_log_probs": log_probs.cpu(), "entropys": entropy.cpu()})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        """``ref_log_prob`` (B, R) of ``responses`` under the frozen reference policy."""
        if self.ref_policy is None:
            raise RuntimeError(f"compute_ref_log_prob: role {self.role!r} has no reference policy")
        data = self._log_prob_meta(data, self.cfg.ref.log_prob_micro_batch_size_per_gpu,
                                   self.cfg.ref.log_prob_max_token_len_per_gpu)
        with self._memory.phase("log-prob"):
            log_probs, _ = self.ref_policy.compute_log_prob(data, calculate_entropy=False)
        return DataProto.from_dict({"ref_log_prob": log_probs.cpu()})

    # .................................................................. update
    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_actor(self, data: DataProto) -> DataProto:
        """One training step of the actor (the rollout engine gets the new weights from
        ``sync_rollout_weights``, which the trainer calls before the next rollout).

        Returns an empty DataProto whose ``meta_info["metrics"]`` holds the metrics averaged
        over optimizer steps and ranks.
        """
        actor = self._require_actor("update_actor")
        meta = {"temperature": float(self.cfg.rollout.temperature), **data.meta_info}
        data = DataProto(batch=data.batch, non_tensor_batch=data.non_tensor_batch, meta_info=meta)
        with self._memory.phase("update"):
            metrics = all_reduce_mean(actor.update_policy(data), self.device)
        return DataProto.from_dict(meta_info={"metrics": metrics})

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def memory_metrics(self) -> dict[str, float]:
        """Peak GPU memory per phase since the last call (``verl.utils.device_memory``; empty off cuda)."""
        return self._memory.pop_metrics()

    # .................................................................. checkpoints
    def _require_actor(self, what: str) -> DataParallelPPOActor:
        if self.actor is None:
            raise RuntimeError(f"{what}: role {self.role!r} has no actor")
        return self.actor

    def _trained(self, what: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        """The actor's (module, optimizer, lr scheduler); the rollout engine gets loaded weights at the next sync."""
        actor = self._require_actor(what)
        return self.actor_module, actor.optimizer, actor.scheduler

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def export_hf(self, path: str, dtype: Optional[str] = None) -> None:
        """Rank 0 writes the actor as a Hugging Face folder (``save_pretrained`` + tokenizer), its
        floating-point weights cast to ``dtype`` (e.g. "bfloat16"; None = as trained).

        The folder loads with ``AutoModelForCausalLM.from_pretrained`` and with vLLM.
        """
        self._require_actor("export_hf")
        state = full_state_dict(self.actor_module, rank0_only=True)  # collective under FSDP
        if self.rank == 0:
            export_causal_lm(unwrap_model(self.actor_module), state, self.tokenizer, path,
                             None if dtype is None else torch_dtype(dtype))
        if dist.is_initialized():
            dist.barrier()


def export_causal_lm(template: torch.nn.Module, state: dict[str, torch.Tensor], tokenizer, path: str,
                     dtype: Optional[torch.dtype] = None) -> None:
    """Save ``state`` (full, HF-named) as a model of ``template``'s class and config, plus the tokenizer;
    floating-point tensors cast to ``dtype`` when given."""
    config = copy.deepcopy(template.config)  # never mutate the training module's config
    if hasattr(config, "use_cache"):
        config.use_cache = True
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        config.dtype = dtype
    with torch.device("meta"):  # no second full copy in memory: the tensors of ``state`` are assigned
        model = type(template)(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {k for k in missing if getattr(template.config, "tie_word_embeddings", False)}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"export_hf: state dict does not match {type(template).__name__}: missing "
                           f"{sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    if tied:
        model.tie_weights()
    model.generation_config = copy.deepcopy(template.generation_config)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


# ---------------------------------------------------------------------- critic
class CriticWorker(_DistributedWorker):
    """The value model of one rank. ``config`` is the whole trainer config (reads ``critic``)."""

    def __init__(self, config: DictConfig) -> None:
        super().__init__(config)
        self.cfg = config.critic
        self.critic: Optional[DataParallelPPOCritic] = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        """Join the process group; load the value model, its optimizer and lr schedule."""
        self._init_distributed()
        self._seed(per_rank=False)
        model_cfg = self.cfg.model
        strategy = check_strategy(self.cfg.strategy, self.world_size)
        load_dtype, mp_dtype = self._load_dtype(strategy, model_cfg)
        attn = check_attn_implementation(model_cfg.attn_implementation, self.device_name, torch_dtype(model_cfg.dtype))

        def load(meta: bool) -> torch.nn.Module:
            return load_value_model(model_cfg.path, load_dtype, attn, bool(model_cfg.trust_remote_code), meta=meta)

        def prepare(module: torch.nn.Module) -> None:
            if model_cfg.enable_gradient_checkpointing:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        self.critic_module = self._load_and_wrap(load, strategy, self.cfg.fsdp_config, prepare=prepare,
                                                 mixed_precision_dtype=mp_dtype)
        optimizer = build_optimizer(self.critic_module.parameters(), self.cfg.optim, "critic.optim")
        scheduler = build_lr_scheduler(optimizer, self.cfg.optim, "critic.optim")
        self.critic = DataParallelPPOCritic(self.cfg, self.critic_module, optimizer, scheduler,
                                            dp_size=self.world_size, use_remove_padding=bool(model_cfg.use_remove_padding),
                                            device=self.device)
        self._seed(per_rank=True)

    def _require_critic(self, what: str) -> DataParallelPPOCritic:
        if self.critic is None:
            raise RuntimeError(f"{what}: call init_model first")
        return self.critic

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        """``values`` (B, R): the value of the state before each response token (0 on padding)."""
        critic = self._require_critic("compute_values")
        meta = {
            "micro_batch_size": int(self.cfg.ppo_micro_batch_size_per_gpu),
            "use_dynamic_bsz": bool(self.cfg.use_dynamic_bsz),
            "max_token_len": int(self.cfg.ppo_max_token_len_per_gpu),
            **data.meta_info,
        }
        values = critic.compute_values(DataProto(batch=data.batch, non_tensor_batch=data.non_tensor_batch,
                                                 meta_info=meta))
        return DataProto.from_dict({"values": values.cpu()})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_critic(self, data: DataProto) -> DataProto:
        """One training step of the critic (needs ``values, returns, response_mask``); metrics in meta_info."""
        critic = self._require_critic("update_critic")
        metrics = all_reduce_mean(critic.update_critic(data), self.device)
        return DataProto.from_dict(meta_info={"metrics": metrics})

    def _trained(self, what: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        """The value model, its optimizer and lr scheduler."""
        critic = self._require_critic(what)
        return self.critic_module, critic.optimizer, critic.scheduler
