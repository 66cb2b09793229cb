"""The rollout interface every generation engine implements (HF ``generate``, vLLM).

Token in, token out: engines take prompt token ids and return the *sampled* token ids with
their log-probs, so the trainer can train on exactly what was sampled.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable

import torch

from verl.workers.rollout.weight_sync import SyncStats

logger = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """How to sample one generation call.

    Attributes:
        max_new_tokens: cap on generated tokens for each prompt in this call.
        temperature: softmax temperature; ignored when ``do_sample`` is False.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: top-k cut (-1 = off).
        do_sample: False means greedy decoding.
        stop: stop strings; the stop string is *kept* in the output.
        stop_token_ids: extra token ids that end generation (EOS is always one).
        seed: per-call seed for reproducible sampling (None = engine RNG state).
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    do_sample: bool = True
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None


def check_sampling(sampling: SamplingConfig) -> None:
    """Raise ValueError naming the field when ``sampling`` cannot be honoured by an engine."""
    if sampling.max_new_tokens < 1:
        raise ValueError(f"SamplingConfig.max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if sampling.do_sample and not sampling.temperature > 0:
        raise ValueError(
            f"SamplingConfig.temperature must be > 0 when do_sample=True, got {sampling.temperature}; "
            "use do_sample=False for greedy decoding"
        )
    if not 0.0 < sampling.top_p <= 1.0:
        raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.top_k == 0 or sampling.top_k < -1:
        raise ValueError(f"SamplingConfig.top_k must be -1 (off) or >= 1, got {sampling.top_k}")


def check_generate_args(prompts: list[list[int]], sampling: SamplingConfig, where: str) -> None:
    """``check_sampling``, and a ValueError naming ``where`` and the row when a prompt is empty."""
    check_sampling(sampling)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"{where}: prompt {i} is empty")


@dataclass
class GenerationOutput:
    """One generated continuation.

    Attributes:
        token_ids: the sampled ids, in order, including the EOS or the token that completed a
            stop string (never re-tokenized text).
        log_probs: log-prob of each sampled id under the distribution it was drawn from (same
            length): ``log_softmax`` of the logits divided by the temperature, after the top-k /
            top-p cuts; greedy decoding reports temperature-1 log-probs.
        finish_reason: ``"stop"`` (stop string or stop token), ``"eos"`` or ``"length"``.
    """

    token_ids: list[int]
    log_probs: list[float]
    finish_reason: str


class BaseRollout(ABC):
    """A generation engine. Implementations live in ``hf_rollout.py`` and ``vllm_rollout.py``.

    Between two rollouts the caller releases the engine's memory and brings it back in a fixed
    order: ``sleep()`` after the last turn of a rollout; before the next one ``wake_weights()``,
    ``sync_weights(actor tensors)``, ``wake_kv_cache()``. Engines that cannot sleep keep the
    default no-ops, which say so once in the log.
    """

    _said: frozenset[str] = frozenset()

    @abstractmethod
    def generate(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        """Generate one continuation for each prompt (a list of token ids without padding)."""

    @abstractmethod
    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        """Load the actor's current weights (HF names; full tensors or FSDP shards) into the engine."""

    def sleep(self) -> dict[str, float]:
        """Release the engine's memory after a rollout (no-op here); returns metrics of what it freed."""
        self.say_once(f"{type(self).__name__}: this engine cannot sleep; sleep/wake do nothing")
        return {}

    def wake_weights(self) -> None:
        """Give the weights their memory back, before ``sync_weights`` (no-op here)."""
        self.say_once(f"{type(self).__name__}: this engine cannot sleep; sleep/wake do nothing")

    def wake_kv_cache(self) -> None:
        """Allocate the generation cache again, after ``sync_weights`` (no-op here)."""
        self.say_once(f"{type(self).__name__}: this engine cannot sleep; sleep/wake do nothing")

    def say_once(self, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` (at ``level``) the first time this engine says it."""
        if message not in self._said:
            self._said = self._said | {message}
            logger.log(level, message)
