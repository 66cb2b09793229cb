"""The demo's process helpers and config/result handling, without running any stage."""

import json
import sys

import pytest

from zerosearch.demo import DEFAULT_CONFIG, _score_from_records, load_demo_config, results_table
from zerosearch.miniature.pipeline import StageError, StageRunner, last_log_line, wait_healthy


def test_config_loads_and_rejects_unknown_keys():
    cfg = load_demo_config(DEFAULT_CONFIG, ["rl.steps=3", "eval.limit=8"])
    assert cfg.rl.steps == 3 and cfg.eval.limit == 8
    with pytest.raises(ValueError, match="rl.stepz"):
        load_demo_config(DEFAULT_CONFIG, ["rl.stepz=3"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_demo_config(DEFAULT_CONFIG, ["rl.steps"])
    with pytest.raises(FileNotFoundError):
        load_demo_config("/nonexistent/demo.yaml")


def test_scores_are_micro_averages_over_records(tmp_path):
    recs = [  # 3 one-hop + 1 two-hop: micro average, not the mean of the two sources
        {"data_source": "a", "em": 1.0, "sub_em": 1.0, "f1": 1.0, "num_searches": 1},
        {"data_source": "a", "em": 0.0, "sub_em": 1.0, "f1": 0.5, "num_searches": 2},
        {"data_source": "a", "em": 0.0, "sub_em": 0.0, "f1": 0.0, "num_searches": 0},
        {"data_source": "b", "em": 1.0, "sub_em": 1.0, "f1": 1.0, "num_searches": 1},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    score = _score_from_records(path)
    assert score == {"em": 0.5, "sub_em": 0.75, "f1": 0.625, "n": 4, "searches_per_question": 1.0}
    table = results_table({"warm_start": score, "wall_seconds": 1.0})
    assert "| warm_start | 0.500 | 0.750 | 0.625 | 4 | 1.00 |" in table


def test_stage_failure_names_the_log_and_timeout_stops_the_child(tmp_path):
    runner = StageRunner(tmp_path, heartbeat_s=0.2, echo=lambda line: None)
    assert runner.run("ok", [sys.executable, "-c", "print('hello')"], timeout_s=60) >= 0
    assert last_log_line(tmp_path / "ok.log") == "hello"
    with pytest.raises(StageError, match="exit code 3") as err:
        runner.run("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], timeout_s=60)
    assert err.value.log_path == tmp_path / "bad.log"
    with pytest.raises(StageError, match="timed out"):
        runner.run("slow", [sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1)


def test_wait_healthy_gives_up_after_its_timeout():
    with pytest.raises(StageError, match="did not answer"):
        wait_healthy("http://127.0.0.1:9/health", timeout_s=1.5)
