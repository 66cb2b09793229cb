"""The multi-seed summary of demo runs, against hand-computed means and standard deviations."""

import json

import pytest

from zerosearch.miniature.seeds import main, mean_sd


def _run(tmp_path, name, seed, warm, sim, wall):
    d = tmp_path / name
    d.mkdir()
    d.joinpath("results.json").write_text(json.dumps({
        "warm_start": {"em": warm, "n": 200}, "sim_trained": {"em": sim, "n": 200}, "wall_seconds": wall,
        "config": {"seed": seed},
        "comparisons": {"sim_trained - warm_start": {"em_diff": sim - warm, "ci95_half": 0.05, "n": 200}}}))
    return str(d)


def test_mean_and_sample_sd():
    assert mean_sd([0.2, 0.4]) == pytest.approx((0.3, 0.1414214), abs=1e-6)
    assert mean_sd([0.5]) == (0.5, 0.0)


def test_table_rows_mean_and_sd(tmp_path, capsys):
    runs = [_run(tmp_path, "s0", 0, 0.02, 0.30, 1200), _run(tmp_path, "s1", 1, 0.04, 0.40, 1320)]
    text = main(runs)
    assert "| s0 | 0 | 200 | 0.020 | 0.300 | 20.0 |" in text
    # mean of 0.30 and 0.40 is 0.35; sample sd sqrt(0.005) = 0.0707; walls 20 and 22 minutes
    assert "| mean | | | 0.030 | 0.350 | 21.0 |" in text
    assert "| sd | | | 0.014 | 0.071 | 1.4 |" in text
    assert "| s1 | +0.360 ± 0.050 |" in text
    with pytest.raises(FileNotFoundError, match="results.json"):
        main([str(tmp_path / "missing")])
