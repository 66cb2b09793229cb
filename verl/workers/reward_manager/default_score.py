"""A trivial scoring function, the engine's default: 1.0 when the response contains the target."""

from __future__ import annotations

from typing import Any


def contains_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> float:
    """Score 1.0 if any ground-truth string occurs in ``solution_str`` (case-insensitive), else 0.0."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("answer", ""))
    if isinstance(ground_truth, str):
        targets = [ground_truth]
    else:
        targets = [str(t) for t in ground_truth]
    text = solution_str.lower()
    return float(any(t.lower() in text for t in targets if t))
