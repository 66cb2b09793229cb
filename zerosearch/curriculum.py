"""The noise curriculum: the probability that a simulated search returns noisy documents.

    p(step) = start + (base**(step / total) - 1) / (base - 1) * (end - start)   for step < total
    p(step) = end                                                             for step >= total

``step`` is the trainer's global step (the first training step is 1). Every search query of a step
is drawn independently: noisy with probability p(step), useful otherwise. ``base`` is configurable
(fixed at 4 in the paper); ``base == 1`` is the limit of the formula, a linear ramp. The step and the
random generator are part of the checkpoint, so a resumed run continues the same schedule and the
same draws.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


def _check_schedule(total_steps: int, start: float, end: float, base: float) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps <= 0:
        raise ValueError(f"curriculum: total_steps must be a positive int, got {total_steps!r}")
    for name, value in (("start", start), ("end", end)):
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ValueError(f"curriculum: {name} (retriever.{name}_threshold) must be in [0, 1], got {value!r}")
    if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 0):
        raise ValueError(f"curriculum: base (retriever.base) must be a finite number > 0, got {base!r}")


def noisy_probability(step: int, total_steps: int, start: float, end: float, base: float = 4.0) -> float:
    """P(noisy documents) at training step ``step`` (see the module docstring for the formula)."""
    _check_schedule(total_steps, start, end, base)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"curriculum: step must be an int >= 0, got {step!r}")
    if step >= total_steps:
        return float(end)
    fraction = step / total_steps
    growth = fraction if base == 1 else (base**fraction - 1.0) / (base - 1.0)
    return float(start + growth * (end - start))


class NoiseCurriculum:
    """The schedule plus a seeded generator for the per-query useful/noisy draws.

    Args:
        start: p at step 0 (``retriever.start_threshold``).
        end: p from ``total_steps`` on (``retriever.end_threshold``).
        base: exponent base of the schedule (``retriever.base``).
        total_steps: length of the ramp in training steps.
        seed: seed of the numpy generator used by ``draw``.
        step: the current training step.
    """

    def __init__(self, start: float, end: float, base: float, total_steps: int, seed: int, step: int = 0):
        _check_schedule(total_steps, start, end, base)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"curriculum: seed must be an int, got {seed!r}")
        self.start = float(start)
        self.end = float(end)
        self.base = float(base)
        self.total_steps = int(total_steps)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.step = 0
        self.set_step(step)

    @classmethod
    def from_config(cls, retriever_cfg: Mapping[str, Any], total_training_steps: int) -> "NoiseCurriculum":
        """Build from the ``retriever`` config block; ``total_steps: null`` uses the trainer's total."""
        missing = [k for k in ("start_threshold", "end_threshold", "base", "total_steps", "seed") if k not in retriever_cfg]
        if missing:
            raise ValueError(f"curriculum: retriever config is missing keys {missing}")
        total = retriever_cfg["total_steps"]
        if total is None:
            total = total_training_steps
        return cls(
            start=retriever_cfg["start_threshold"],
            end=retriever_cfg["end_threshold"],
            base=retriever_cfg["base"],
            total_steps=total,
            seed=retriever_cfg["seed"],
        )

    def set_step(self, step: int) -> None:
        """Move to training step ``step`` (an int >= 0)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"curriculum: step must be an int >= 0, got {step!r}")
        self.step = int(step)

    def p_noisy(self) -> float:
        """P(noisy) at the current step."""
        return noisy_probability(self.step, self.total_steps, self.start, self.end, self.base)

    def draw(self, n: int) -> list[bool]:
        """``n`` independent draws: True = noisy documents (probability ``p_noisy()``)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"curriculum: n must be an int >= 0, got {n!r}")
        return (self._rng.random(int(n)) < self.p_noisy()).tolist()

    def state_dict(self) -> dict[str, Any]:
        """The current step and the generator state (enough to continue the same draws)."""
        return {"step": self.step, "rng_state": self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        missing = [k for k in ("step", "rng_state") if k not in state]
        if missing:
            raise ValueError(f"curriculum: state dict is missing keys {missing}")
        self.set_step(state["step"])
        self._rng.bit_generator.state = state["rng_state"]

    def __repr__(self) -> str:
        return (
            f"NoiseCurriculum(start={self.start}, end={self.end}, base={self.base}, "
            f"total_steps={self.total_steps}, seed={self.seed}, step={self.step})"
        )
