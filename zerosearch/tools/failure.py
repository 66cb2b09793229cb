"""Failure policy: a training step fails loudly when too many of its searches failed."""

from __future__ import annotations

from typing import Mapping


class SearchFailureError(RuntimeError):
    """Raised when the share of failed searches in a step exceeds ``retriever.max_failure_rate``."""


def check_failure_rate(metrics: Mapping[str, float], max_rate: float, server_desc: str) -> None:
    """Raise ``SearchFailureError`` naming ``server_desc`` when ``metrics["failure_rate"] > max_rate``.

    Args:
        metrics: what ``SearchTool.pop_metrics()`` returned for the step (needs ``requests``,
            ``failures`` and ``failure_rate``).
        max_rate: the tolerated share of failed queries, in [0, 1].
        server_desc: the backend, e.g. ``tool.describe()``.
    """
    if not (isinstance(max_rate, (int, float)) and 0.0 <= max_rate <= 1.0):
        raise ValueError(f"max_failure_rate (retriever.max_failure_rate) must be in [0, 1], got {max_rate!r}")
    missing = [k for k in ("requests", "failures", "failure_rate") if k not in metrics]
    if missing:
        raise ValueError(f"check_failure_rate: metrics lack keys {missing}")
    if metrics["requests"] > 0 and metrics["failure_rate"] > max_rate:
        raise SearchFailureError(
            f"{int(metrics['failures'])} of {int(metrics['requests'])} search requests failed against "
            f"{server_desc} (failure rate {metrics['failure_rate']:.3f} > max_failure_rate {max_rate}); "
            "check that the server is up and reachable"
        )
