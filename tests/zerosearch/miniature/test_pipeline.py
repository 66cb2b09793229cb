"""The demo's process helpers and config/result handling, without running any stage."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from zerosearch.miniature.demo import (DEFAULT_CONFIG, _score_from_records, comparisons, load_demo_config, results_table,
                             resume_command)
from zerosearch.miniature.pipeline import Job, StageError, StageRunner, last_log_line, wait_healthy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


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
        {"id": "birthplace-A", "data_source": "a", "em": 1.0, "sub_em": 1.0, "f1": 1.0, "num_searches": 1},
        {"id": "birthplace-B", "data_source": "a", "em": 0.0, "sub_em": 1.0, "f1": 0.5, "num_searches": 2},
        {"id": "occupation-A", "data_source": "a", "em": 0.0, "sub_em": 0.0, "f1": 0.0, "num_searches": 0},
        {"id": "founder_birthplace-C", "data_source": "b", "em": 1.0, "sub_em": 1.0, "f1": 1.0, "num_searches": 1},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    score = _score_from_records(path)
    assert {k: score[k] for k in ("em", "sub_em", "f1", "n", "searches_per_question")} == \
        {"em": 0.5, "sub_em": 0.75, "f1": 0.625, "n": 4, "searches_per_question": 1.0}
    assert score["em_by_kind"] == {"birthplace": {"em": 0.5, "n": 2}, "founder_birthplace": {"em": 1.0, "n": 1},
                                   "occupation": {"em": 0.0, "n": 1}}
    # Wilson 95 % interval of 2 of 4: centre (0.5 + 1.9208/4) / (1 + 3.8415/4) = 0.5, half-width 0.3505
    assert score["em_ci95"] == pytest.approx([0.1500, 0.8500], abs=1e-4)
    table = results_table({"warm_start": score, "wall_seconds": 1.0})
    assert "| warm_start | 0.500 [0.15, 0.85] | 0.750 | 0.625 | 1.00 | 0.50 | 0.00 | - | - | 1.00 | 4 |" in table


def test_comparisons_pair_questions_by_id():
    a = {"per_id": {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q4": 1.0}}
    b = {"per_id": {"q4": 0.0, "q3": 0.0, "q2": 1.0, "q1": 0.0}}  # another order: paired by id
    comps = comparisons({"sim_trained": a, "rag": b})
    # d = [1, 0, 0, 1]: mean 0.5, sample sd sqrt(1/3), half-width 1.96 * sqrt(1/3) / 2 = 0.5658
    assert comps["sim_trained - rag"] == {"em_diff": 0.5, "ci95_half": pytest.approx(0.5658, abs=1e-4), "n": 4}
    assert set(comps) == {"sim_trained - rag"}  # only the pairs whose both rows exist
    with pytest.raises(ValueError, match="different questions"):
        comparisons({"sim_trained": a, "real_trained": {"per_id": {"q1": 1.0}}})


def test_resume_command_keeps_the_overrides():
    assert resume_command(str(DEFAULT_CONFIG), ["seed=1", "resume=false"]) == \
        "python -m zerosearch.miniature.demo seed=1 resume=true"
    assert resume_command("my.yaml", []) == "python -m zerosearch.miniature.demo --config my.yaml resume=true"


def test_stage_failure_names_the_log_and_timeout_stops_the_child(tmp_path):
    runner = StageRunner(tmp_path, heartbeat_s=0.2, echo=lambda line: None)
    assert runner.run("ok", [sys.executable, "-c", "print('hello')"], timeout_s=60) > 0  # seconds the stage took
    assert last_log_line(tmp_path / "ok.log") == "hello"
    with pytest.raises(StageError, match="exit code 3") as err:
        runner.run("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], timeout_s=60)
    assert err.value.log_path == tmp_path / "bad.log"
    with pytest.raises(StageError, match="timed out"):
        runner.run("slow", [sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1)


def test_wait_any_returns_stages_side_by_side_as_they_end(tmp_path):
    lines = []
    runner = StageRunner(tmp_path, heartbeat_s=0.2, echo=lines.append)
    slow = Job("slow", runner.start("slow", [sys.executable, "-c", "import time; time.sleep(2); print('slow done')"]), 60)
    fast = Job("fast", runner.start("fast", [sys.executable, "-c", "print('fast done')"]), 60,
               progress=lambda: "step 3/7")
    assert runner.wait_any([slow, fast]) is fast
    assert slow.proc.poll() is None and slow.elapsed is None  # still running, untouched
    assert runner.wait_any([slow]) is slow
    assert 1.5 < slow.elapsed < 30 and fast.elapsed < slow.elapsed
    assert last_log_line(tmp_path / "slow.log") == "slow done"
    assert any(line.startswith("  [slow ") and "slow" in line for line in lines)  # a heartbeat of the slow stage


def test_wait_any_stops_the_other_stages_when_one_fails(tmp_path):
    runner = StageRunner(tmp_path, heartbeat_s=0.2, echo=lambda line: None)
    other = Job("other", runner.start("other", [sys.executable, "-c", "import time; time.sleep(60)"]), 120)
    bad = Job("bad", runner.start("bad", [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(4)"]), 120)
    with pytest.raises(StageError, match="exit code 4") as err:
        runner.wait_any([other, bad])
    assert err.value.stage == "bad"
    assert other.proc.wait(timeout=30) is not None  # stopped, not left running
    late = Job("late", runner.start("late", [sys.executable, "-c", "import time; time.sleep(60)"]), 1)
    with pytest.raises(StageError, match="late.*timed out|timed out"):
        runner.wait_any([late])
    assert late.proc.wait(timeout=30) is not None


def _timed_job(runner, stage, out, sleep_s, exit_code=0):
    """A job that records when it started and ended (``out/<stage>.times``) and exits with ``exit_code``."""
    code = (f"import sys, time; from pathlib import Path; t0 = time.time(); time.sleep({sleep_s}); "
            f"Path({str(out / (stage + '.times'))!r}).write_text(f'{{t0}} {{time.time()}}'); sys.exit({exit_code})")
    return Job(stage, runner.start(stage, [sys.executable, "-c", code]), 120)


def _times(out, stage):
    return tuple(float(x) for x in (out / f"{stage}.times").read_text().split())


def test_run_queue_keeps_at_most_at_once_jobs_running_and_starts_then_first(tmp_path):
    """Three jobs two at a time: the third starts only after one of the first two has ended; a
    starter with nothing to do (None) is skipped; a job's ``then`` runs after it, before the queue
    goes on."""
    runner = StageRunner(tmp_path, heartbeat_s=0.2, echo=lambda line: None)
    started = []

    def starter(stage, sleep_s, then=None):
        def start():
            started.append(stage)
            job = _timed_job(runner, stage, tmp_path, sleep_s)
            job.then = then
            return job
        return start

    seconds = runner.run_queue([starter("a", 0.2, then=starter("a_then", 0.2)), lambda: None, starter("b", 2.5),
                                starter("c", 0.2)], at_once=2)
    assert started == ["a", "b", "a_then", "c"]
    assert set(seconds) == {"a", "b", "a_then", "c"} and all(v > 0 for v in seconds.values())
    a, b, a_then, c = (_times(tmp_path, s) for s in ("a", "b", "a_then", "c"))
    assert a_then[0] >= a[1]  # then: after its job
    assert c[0] >= a_then[1]  # at most two at once: c waited for a slot (b still ran)
    assert b[0] < a[1]  # a and b side by side
    with pytest.raises(ValueError, match="at_once"):
        runner.run_queue([], at_once=0)


def test_run_queue_stops_on_a_failure_and_starts_nothing_more(tmp_path):
    runner = StageRunner(tmp_path, heartbeat_s=0.2, echo=lambda line: None)
    jobs = {}

    def starter(stage, sleep_s, code=0):
        def start():
            jobs[stage] = _timed_job(runner, stage, tmp_path, sleep_s, code)
            return jobs[stage]
        return start

    with pytest.raises(StageError, match="exit code 5") as err:
        runner.run_queue([starter("long", 60), starter("bad", 0.3, 5), starter("never", 0.1)], at_once=2)
    assert err.value.stage == "bad"
    assert "never" not in jobs
    assert jobs["long"].proc.wait(timeout=30) is not None  # stopped, not left running


def test_sigterm_while_waiting_stops_the_running_stages(tmp_path):
    """A demo killed with SIGTERM (``kill``, ``timeout``) stops its stages as Ctrl-C does: each stage
    runs in its own session, so the signal does not reach it by itself."""
    script = tmp_path / "orchestrator.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from zerosearch.miniature.pipeline import Job, StageRunner, sigterm_as_interrupt\n"
        "out = Path(sys.argv[1])\n"
        "runner = StageRunner(out, heartbeat_s=0.2, echo=lambda line: None)\n"
        "proc = runner.start('stage', [sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "(out / 'child.pid').write_text(str(proc.pid))\n"
        "try:\n"
        "    with sigterm_as_interrupt():\n"
        "        runner.wait_any([Job('stage', proc, 300)])\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', proc.poll() is not None)\n"
        "    sys.exit(130)\n")
    orchestrator = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": REPO})
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    time.sleep(0.5)
    orchestrator.send_signal(signal.SIGTERM)
    out, _ = orchestrator.communicate(timeout=60)
    assert orchestrator.returncode == 130 and out.strip() == "interrupted True"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_wait_healthy_gives_up_after_its_timeout():
    with pytest.raises(StageError, match="did not answer"):
        wait_healthy("http://127.0.0.1:9/health", timeout_s=1.5)


@pytest.mark.parametrize("learn_guesses", [False, True])
def test_warm_start_leaves_the_guesses_unlearnt_unless_told(tmp_path, monkeypatch, learn_guesses):
    """warmstart.learn_guesses=false (the default) gives the SFT trainer the guess_span column as
    data.loss_exclude_key; true leaves it out (every response token learnt)."""
    from zerosearch.miniature.demo import Demo

    overrides = [f"out_dir={tmp_path}"] + (["warmstart.learn_guesses=true"] if learn_guesses else [])
    demo = Demo(load_demo_config(DEFAULT_CONFIG, overrides))
    started = []
    monkeypatch.setattr(demo.runner, "start", lambda stage, cmd, **kw: started.append(cmd) or object())
    demo.warm_start()
    (cmd,) = started
    assert ("data.loss_exclude_key=guess_span" in cmd) is (not learn_guesses)
    assert "verl.trainer.sft_trainer" in cmd
    # the schedule of configs/demo.yaml: lr held, then decayed over the last fifth of the steps
    assert "optim.warmup_style=wsd" in cmd and "optim.lr_decay_steps_ratio=0.2" in cmd


@pytest.mark.parametrize("side_by_side", [1, 3])
def test_rl_runs_side_by_side_get_their_own_threads(tmp_path, monkeypatch, side_by_side):
    """rl.side_by_side > 1 starts the runs together, each told to use rl.threads_side_by_side torch
    threads (trainer.cpu_threads_per_worker and OMP_NUM_THREADS); one at a time they keep the
    trainer's default. Each policy's evaluation follows its own run. The ablation run comes last
    and only when asked for."""
    from zerosearch.miniature.demo import Demo

    demo = Demo(load_demo_config(DEFAULT_CONFIG, [f"out_dir={tmp_path}", f"rl.side_by_side={side_by_side}",
                                                  "rl.threads_side_by_side=1"]))
    started, running, most = [], [], [0]

    def start(stage, cmd, env=None, cwd=None):
        started.append((stage, cmd, env))
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
        running.append(proc)
        most[0] = max(most[0], sum(p.poll() is None for p in running))
        return proc

    monkeypatch.setattr(demo.runner, "start", start)
    monkeypatch.setattr(demo, "_report", lambda row, records: {"row": row, "records": records})
    scores = demo.train_all_rl()
    assert scores == {row: {"row": row, "records": tmp_path / "eval" / row / "records.jsonl"}
                      for row in ("sim_trained", "real_trained", "fixed_noise")}
    order = [s for s, _, _ in started]
    if side_by_side == 1:
        assert order == ["rl_sim", "eval_sim_trained", "rl_real", "eval_real_trained", "rl_fixed", "eval_fixed_noise"]
    else:
        assert order[:3] == ["rl_sim", "rl_real", "rl_fixed"]
        assert sorted(order[3:]) == ["eval_fixed_noise", "eval_real_trained", "eval_sim_trained"]
    assert most[0] == side_by_side
    for stage, cmd, env in started:
        if stage.startswith("rl_"):
            assert ("trainer.cpu_threads_per_worker=1" in cmd) is (side_by_side > 1)
        else:
            assert cmd[cmd.index("--model") + 1] == str(demo.policy_path({"eval_sim_trained": "rl_sim",
                                                                           "eval_real_trained": "rl_real",
                                                                           "eval_fixed_noise": "rl_fixed"}[stage]))
        assert (env.get("OMP_NUM_THREADS") == "1") is (side_by_side > 1) or "OMP_NUM_THREADS" in os.environ
    started = [run for run in started if run[0].startswith("rl_")]
    search_modes = [cmd[cmd.index("SEARCH_MODE") + 1] for _, cmd, _ in started]
    assert search_modes == ["simulate_sft", "wiki", "simulate_sft"]
    fixed = started[2][1]
    assert fixed[fixed.index("START_THRESHOLD") + 1] == fixed[fixed.index("END_THRESHOLD") + 1] == "0.5"
    demo.cfg.rl.run_fixed_noise_ablation = False
    assert [stage for stage, *_ in demo.rl_runs()] == ["rl_sim", "rl_real"]
