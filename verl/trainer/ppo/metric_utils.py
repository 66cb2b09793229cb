"""Metrics of one training step computed from the batch and the phase timings."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

from verl.protocol import DataProto


@contextmanager
def marked_timer(name: str, timing: dict[str, float]) -> Iterator[None]:
    """Add the wall time of the block to ``timing[name]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timing[name] = timing.get(name, 0.0) + time.perf_counter() - start


def _stats(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.float()
    if x.numel() == 0:
        return {}
    return {f"{prefix}/mean": float(x.mean()), f"{prefix}/max": float(x.max()), f"{prefix}/min": float(x.min())}


def compute_data_metrics(batch: DataProto, use_critic: bool) -> dict[str, float]:
    """Score, reward, advantage, return, value and length statistics over the policy tokens."""
    mask = batch.batch["response_mask"].bool()
    metrics: dict[str, float] = {}
    metrics.update(_stats("critic/score", batch.batch["token_level_scores"].sum(-1)))
    metrics.update(_stats("critic/rewards", batch.batch["token_level_rewards"].sum(-1)))
    metrics.update(_stats("critic/advantages", batch.batch["advantages"][mask]))
    metrics.update(_stats("critic/returns", batch.batch["returns"][mask]))
    if use_critic and "values" in batch.batch:
        metrics.update(_stats("critic/values", batch.batch["values"][mask]))
    response_len = batch.batch["attention_mask"][:, -batch.batch["responses"].shape[1]:].sum(-1)
    prompt_len = batch.batch["attention_mask"][:, : -batch.batch["responses"].shape[1]].sum(-1)
    metrics.update(_stats("response_length", response_len))
    metrics.update(_stats("prompt_length", prompt_len))
    metrics.update(_stats("response_length/policy_tokens", mask.sum(-1)))
    return metrics


def compute_timing_metrics(timing: dict[str, float]) -> dict[str, float]:
    return {f"timing_s/{k}": v for k, v in timing.items()}


def compute_throughput_metrics(batch: DataProto, step_time: float, n_devices: int) -> dict[str, float]:
    """verl's definition: all tokens of the step (prompt + response) / step time / devices."""
    total_tokens = int(batch.batch["attention_mask"].sum())
    return {
        "perf/total_num_tokens": float(total_tokens),
        "perf/time_per_step": step_time,
        "perf/throughput": total_tokens / max(step_time, 1e-9) / max(n_devices, 1),
    }
