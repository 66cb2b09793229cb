"""The noise curriculum against the spec's table (section 4.3) and hand-worked values."""

from __future__ import annotations

import math

import pytest

from zerosearch.curriculum import NoiseCurriculum, noisy_probability

# Spec section 4.3, p_s=0, p_e=0.5, m=203, values as printed (rounded).
SPEC_TABLE = [
    (1, "0.0011"), (25, "0.031"), (51, "0.069"), (76, "0.113"), (102, "0.168"),
    (127, "0.230"), (152, "0.304"), (178, "0.395"), (202, "0.496"), (203, "0.5"), (500, "0.5"),
]


@pytest.mark.parametrize("step, printed", SPEC_TABLE)
def test_spec_table(step, printed):
    # Within one unit of the last printed digit: the table prints 0.4955 (step 202) as 0.496.
    decimals = len(printed.split(".")[1])
    assert noisy_probability(step, 203, 0.0, 0.5) == pytest.approx(float(printed), abs=10**-decimals)


def test_step_202_by_hand():
    # 4**(202/203) = 4 * exp(-ln 4 / 203) = 3.9727765...; (3.9727765 - 1) / 3 * 0.5 = 0.4954628...
    assert noisy_probability(202, 203, 0.0, 0.5) == pytest.approx(0.4954628, abs=1e-6)


def test_hand_values():
    # base 4, half-way: (4**0.5 - 1) / 3 = 1/3 of the way from start to end.
    assert noisy_probability(5, 10, 0.2, 0.8) == pytest.approx(0.2 + 0.6 / 3, abs=1e-12)
    # base 9, half-way: (3 - 1) / 8 = 1/4.
    assert noisy_probability(50, 100, 0.0, 1.0, base=9.0) == pytest.approx(0.25, abs=1e-12)
    # base 1 is the linear limit.
    assert noisy_probability(3, 10, 0.0, 1.0, base=1.0) == pytest.approx(0.3, abs=1e-12)
    # step 0 gives start; a decreasing schedule works too.
    assert noisy_probability(0, 10, 0.25, 0.5) == 0.25
    assert noisy_probability(5, 10, 0.5, 0.2) == pytest.approx(0.5 - 0.3 / 3, abs=1e-12)
    # base 4 at step 1 of 203, written out.
    assert noisy_probability(1, 203, 0.0, 0.5) == pytest.approx((math.exp(math.log(4) / 203) - 1) / 3 * 0.5, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(step=1, total_steps=0, start=0.0, end=0.5), "total_steps"),
        (dict(step=1, total_steps=10, start=-0.1, end=0.5), "start"),
        (dict(step=1, total_steps=10, start=0.0, end=1.5), "end"),
        (dict(step=1, total_steps=10, start=0.0, end=0.5, base=0.0), "base"),
        (dict(step=-1, total_steps=10, start=0.0, end=0.5), "step"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        noisy_probability(**kwargs)


def test_draw_frequency():
    cur = NoiseCurriculum(start=0.3, end=0.3, base=4.0, total_steps=10, seed=0)
    draws = cur.draw(20000)
    assert len(draws) == 20000 and all(isinstance(d, bool) for d in draws)
    # sd of the mean is sqrt(0.21 / 20000) ~ 0.0032; allow ~5 sd.
    assert abs(sum(draws) / 20000 - 0.3) < 0.016
    assert not any(NoiseCurriculum(0.0, 0.0, 4.0, 10, seed=1).draw(1000))
    assert all(NoiseCurriculum(1.0, 1.0, 4.0, 10, seed=1).draw(1000))


def test_step_moves_the_probability():
    cur = NoiseCurriculum(start=0.0, end=0.5, base=4.0, total_steps=203, seed=0)
    cur.set_step(202)
    assert cur.p_noisy() == pytest.approx(0.4954628, abs=1e-6)
    cur.set_step(400)
    assert cur.p_noisy() == 0.5


def test_state_round_trip_continues_the_same_draws():
    cur = NoiseCurriculum(start=0.1, end=0.6, base=4.0, total_steps=50, seed=123, step=7)
    cur.draw(13)
    state = cur.state_dict()
    cur.set_step(9)
    expected = cur.draw(200)

    resumed = NoiseCurriculum(start=0.1, end=0.6, base=4.0, total_steps=50, seed=999)
    resumed.load_state_dict(state)
    assert resumed.step == 7
    resumed.set_step(9)
    assert resumed.draw(200) == expected

    again = NoiseCurriculum(start=0.1, end=0.6, base=4.0, total_steps=50, seed=123, step=7)
    again.draw(13)
    again.set_step(9)
    assert again.draw(200) == expected  # same seed, same history -> same draws


def test_from_config_uses_trainer_total_when_null():
    cfg = {"start_threshold": 0.0, "end_threshold": 0.5, "base": 4.0, "total_steps": None, "seed": 5}
    cur = NoiseCurriculum.from_config(cfg, total_training_steps=203)
    assert cur.total_steps == 203 and cur.seed == 5
    with pytest.raises(ValueError, match="base"):
        NoiseCurriculum.from_config({k: v for k, v in cfg.items() if k != "base"}, 203)
