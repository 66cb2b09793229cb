"""Rollout engines behind one interface (``base.BaseRollout``) and the factory that picks one."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch

from verl.workers.rollout.base import BaseRollout, GenerationOutput, SamplingConfig, check_sampling

ROLLOUT_NAMES = ("hf", "vllm")

__all__ = ["BaseRollout", "GenerationOutput", "SamplingConfig", "ROLLOUT_NAMES", "build_rollout", "check_sampling",
           "check_tensor_parallel"]


TP_KEY = "actor_rollout_ref.rollout.tensor_model_parallel_size"


def check_tensor_parallel(config: Mapping[str, Any] | Any) -> None:
    """Refuse a tensor-parallel rollout: each worker owns one GPU and runs its own engine beside
    the trainer, so an engine cannot span several GPUs (it would fail or hang at start-up)."""
    tp = config.get("tensor_model_parallel_size", 1) if config is not None else 1
    if isinstance(tp, bool) or not isinstance(tp, int) or tp != 1:
        raise ValueError(f"{TP_KEY}={tp!r} is not supported: every rollout worker owns one GPU and runs its own "
                         "engine (data-parallel rollout across workers); set it to 1")


def build_rollout(
    name: str,
    *,
    tokenizer: Any,
    config: Mapping[str, Any] | Any,
    module: torch.nn.Module | Callable[[], torch.nn.Module] | None = None,
    model_path: str | os.PathLike | None = None,
    **engine_kwargs: Any,
) -> BaseRollout:
    """Build the engine named by ``actor_rollout_ref.rollout.name``.

    Args:
        name: ``"hf"`` (generates with ``module``) or ``"vllm"`` (loads ``model_path``).
        tokenizer: the policy tokenizer.
        config: the rollout config section.
        module: the HF model, or a callable returning it (``"hf"`` only).
        model_path: HF folder of the policy (``"vllm"`` only).
        engine_kwargs: extra keyword arguments of the engine (``VLLMRollout``: ``tokenizer_path``,
            ``seed``, ``device``).
    """
    check_tensor_parallel(config)
    if name == "hf":
        if module is None:
            raise ValueError("build_rollout('hf'): pass module= (the HF model or a callable returning it)")
        if engine_kwargs:
            raise TypeError(f"build_rollout('hf'): unexpected arguments {sorted(engine_kwargs)}")
        from verl.workers.rollout.hf_rollout import HFRollout

        return HFRollout(module, tokenizer, config)
    if name == "vllm":
        if model_path is None:
            raise ValueError("build_rollout('vllm'): pass model_path= (the HF folder vLLM loads)")
        from verl.workers.rollout.vllm_rollout import VLLMRollout

        return VLLMRollout(model_path, tokenizer, config, **engine_kwargs)
    raise ValueError(f"actor_rollout_ref.rollout.name must be one of {ROLLOUT_NAMES}, got {name!r}")
