"""Intervals of the miniature's table, against hand-worked numbers."""

import math

import pytest

from zerosearch.miniature.stats import paired_difference, wilson_interval


def test_wilson_interval_hand_worked():
    # p = 0.5, n = 100, z = 1.96: centre 0.5, half = 1.96 * sqrt(0.0025 + 0.000096) / 1.038416 = 0.096170
    lo, hi = wilson_interval(50, 100, z=1.96)
    assert lo == pytest.approx(0.5 - 0.0961696, abs=1e-6) and hi == pytest.approx(0.5 + 0.0961696, abs=1e-6)
    # 0 of 10: lower bound 0, upper bound z^2 / (n + z^2) = 3.8416 / 13.8416 = 0.277540
    lo, hi = wilson_interval(0, 10, z=1.96)
    assert lo == 0.0 and hi == pytest.approx(0.277540, abs=1e-6)
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_paired_difference_hand_worked():
    # d = [1, 0, 1, -1]: mean 0.25, sample variance ((0.75)^2 + 0.25^2 + 0.75^2 + 1.25^2) / 3 = 2.75 / 3
    mean, half = paired_difference([1, 1, 1, 0], [0, 1, 0, 1], z=2.0)
    assert mean == pytest.approx(0.25)
    assert half == pytest.approx(2.0 * math.sqrt((2.75 / 3) / 4))
    assert paired_difference([1.0], [0.0]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 0], [1])
