"""The agent-loop seam: how a batch of prompts becomes trajectories.

The engine never knows what a tool is. A plug-in names its loop in the config
(``actor_rollout_ref.rollout.agent_loop``, a dotted path) and the trainer calls ``run`` once per
step with a ``generate`` callable that fans out to the rollout workers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Callable

from verl.protocol import DataProto
from verl.workers.rollout.base import GenerationOutput, SamplingConfig

GenerateFn = Callable[[list[list[int]], SamplingConfig], list[GenerationOutput]]


class TimedGenerate:
    """A ``GenerateFn`` that adds the wall time of each call to ``seconds``.

    Agent loops wrap the ``generate`` they are given in one per ``run`` and report
    ``seconds`` as ``meta_info["timing"]["gen"]``: generation time measured where it happens.
    """

    def __init__(self, generate: GenerateFn) -> None:
        self._generate = generate
        self.seconds = 0.0

    def __call__(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        start = time.perf_counter()
        try:
            return self._generate(prompts, sampling)
        finally:
            self.seconds += time.perf_counter() - start


class AgentLoopBase(ABC):
    """Turns prompts into trajectories.

    ``run`` receives a batch with (at least) the tensors ``input_ids`` (B, P), ``attention_mask``
    (B, P), left-padded, the non-tensor ``uid`` and whatever the dataset carries (``question``,
    ``golden_answers``, ``data_source``...), and returns a DataProto with, per row:

    - ``prompts`` (B, P): the prompt ids, left-padded;
    - ``responses`` (B, R): everything after the prompt (generated tokens and observations),
      right-padded with ``pad_token_id``;
    - ``input_ids`` (B, P+R), ``attention_mask`` (B, P+R), ``position_ids`` (B, P+R);
    - ``response_mask`` (B, R): 1 on tokens the policy sampled, 0 on observations and padding.
      Only these tokens carry loss;
    - ``rollout_log_probs`` (B, R): the sampling log-probs (0 where ``response_mask`` is 0);
    - all non-tensor columns of the input, unchanged;
    - ``meta_info["metrics"]``: a dict of floats to log (means over rows); names the trainer
      writes itself (``response_length/*``, ``critic/*``, ``timing_s/*``) are not repeated here;
    - ``meta_info["timing"]``: seconds spent inside ``run`` by phase, at least ``gen`` (in
      ``generate``; ``TimedGenerate`` counts it); the trainer logs them as ``timing_s/<phase>``.
    """

    def __init__(self, config: Any, tokenizer: Any, **kwargs: Any) -> None:
        self.config = config
        self.tokenizer = tokenizer

    @abstractmethod
    def run(self, batch: DataProto, generate: GenerateFn, *, step: int, validate: bool = False) -> DataProto:
        """Roll out every row of ``batch``; ``step`` is the global training step (1-based)."""

    def state_dict(self) -> dict:
        """State to save in checkpoints (e.g. a curriculum step); restored by ``load_state_dict``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def close(self) -> None:
        """Release clients and servers the loop opened."""
