"""Uncertainty of the miniature's scores: intervals for an EM rate and for the paired difference of
two policies scored on the same questions."""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (95 % by default).

    Stays inside [0, 1] and is sensible at 0 or n successes, unlike the plain normal interval."""
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """(mean of a_i - b_i, half-width of its 95 % normal interval) for scores of two policies on the
    same questions, in the same order. The half-width is z * sd(d) / sqrt(n) with the sample
    standard deviation (n - 1); 0 when n < 2."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_difference needs at least one pair")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = math.fsum(d) / n
    if n < 2:
        return mean, 0.0
    var = math.fsum((x - mean) ** 2 for x in d) / (n - 1)
    return mean, z * math.sqrt(var / n)
