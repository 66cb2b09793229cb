"""The CPU miniature (``python -m zerosearch.miniature.demo``) as CI runs it: the whole default demo of
configs/demo.yaml (seed 0), with its step counts, its servers and launchers and the fixed-noise
ablation. Checks the output contract (table printed, results.json keys, PNG curves, servers
stopped), that the RL runs trained and exported their policies, the baselines' sanity (the scripted
reader answers almost everything, the majority answer almost nothing), and the improvements every
measured seed reached with room (docs/demo.md, "Across seeds"): both SFT stages take their models
from random weights to a low loss, and RL, with simulated search and with real search alike, teaches
the warm-started policy to search on held-out questions and lifts its held-out EM.

The bounds are not one machine's numbers: bfloat16 or float32 compute (chosen by the CPU), other
BLAS kernels and another seed change every number, so each bound sits below the lowest value
measured over seeds 0-2 (values in the comments). About 16 minutes on an idle 2-core machine
(16m10s on 2026-12-07), 20-25 on a slower one."""

import json
import os
import subprocess
import sys

import pytest

# The run takes up to ~25 minutes on a slow host, above pytest.ini's 1200 s per test, so this module has its own
# limit, just above the demo subprocess's timeout (3000 s, the clearer error).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3300)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The demo's defaults.
ARGS = [
    "seed=0",
    "heartbeat_s=60",
]
RL_STEPS = 20  # configs/demo.yaml rl.steps
# Training loss (mean token cross-entropy) of the two SFT stages, first logged step and mean of the
# last steps. Measured (seeds 0-2, the wsd warm start): warm start ~7.4-7.5 at step 1 (ln of the
# ~1,650-token vocabulary), 0.04-0.05 at step 2400 (the counterfactual rows keep it from memorising);
# simulator ~7.4 at step 1, 0.01-0.02 at step 1200.
FIRST_LOSS_ABOVE = 6.0
WARMSTART_LAST_LOSS_BELOW = 0.3
SIMULATOR_LAST_LOSS_BELOW = 0.5
# Held-out behaviour (greedy, real retrieval server, every test question). Measured for the default
# recipe on seeds 0-2 (docs/demo.md, "Across seeds, the default recipe"): searches per question
# 0.01-0.04 for the warm start, 0.97-1.18 after RL; EM lift over the warm start +0.44 to +0.74 per
# arm and for the mean of the two arms (seed 0, the CI run's seed: +0.518 / +0.523). Earlier recipes
# lifted EM by as little as +0.04 on some seed, and float rounding alone once moved a lift from
# +0.26 to +0.10, so the test asserts with room what every run of this recipe showed: RL makes the
# policy search, lifts held-out EM on the mean of the simulated- and real-search arms by more than
# 0.15, and neither arm lowers it by more than noise.
WARM_SEARCHES_BELOW = 0.8
RL_SEARCHES_ABOVE = 0.8
RL_MEAN_EM_LIFT_ABOVE = 0.15
RL_ARM_EM_DROP_BELOW = 0.02
SCRIPTED_EM_ABOVE = 0.9  # the scripted reader: 1.000 on every seed
MAJORITY_EM_BELOW = 0.15  # the majority answer per kind: ~0.04


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "zerosearch.miniature.demo", f"out_dir={out}", *ARGS], cwd=REPO,
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, f"demo failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc.stdout


def test_output_contract(demo_run):
    out, stdout = demo_run
    results = json.loads((out / "results.json").read_text())
    with (out / "work" / "world" / "test.jsonl").open() as f:
        held_out = sum(1 for line in f if line.strip())
    rows = ("warm_start", "rag", "sim_trained", "real_trained", "fixed_noise", "majority", "scripted")
    for row in rows:
        assert set(results[row]) >= {"em", "sub_em", "f1"}
        for key in ("em", "sub_em", "f1"):
            assert 0.0 <= results[row][key] <= 1.0
        # strict EM implies substring EM; F1 is at least EM
        assert results[row]["sub_em"] >= results[row]["em"]
        assert results[row]["f1"] >= results[row]["em"] - 1e-9
        assert results[row]["n"] == held_out  # every held-out question, not a sample
        lo, hi = results[row]["em_ci95"]
        assert lo <= results[row]["em"] <= hi
        assert sum(k["n"] for k in results[row]["em_by_kind"].values()) == held_out
    assert results["wall_seconds"] > 0
    assert set(results["comparisons"]) >= {"sim_trained - warm_start", "sim_trained - rag", "sim_trained - real_trained",
                                           "sim_trained - fixed_noise"}
    # the markdown table is printed, one row per policy, with the numbers of results.json
    for row in rows:
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"| {row} |"))
        assert f"{results[row]['em']:.3f}" in line
    assert (out / "results.md").read_text().count("\n| ") >= len(rows)
    for png in ("scores.png", "reward.png"):
        assert (out / png).stat().st_size > 1000
    assert any((out / "plots" / "rl_sim").glob("*.png"))
    # the simulation server was stopped: its pid file is gone
    assert not list((out / "logs").glob("simulation_server_*.pid"))


def _losses(path):
    return [json.loads(line)["train/loss"] for line in path.open() if line.strip()]


def test_sft_stages_learn(demo_run):
    out, _ = demo_run
    for losses, below in ((_losses(out / "work" / "warmstart" / "logs" / "metrics.jsonl"), WARMSTART_LAST_LOSS_BELOW),
                          (_losses(out / "work" / "simtune" / "model" / "logs" / "metrics.jsonl"),
                           SIMULATOR_LAST_LOSS_BELOW)):
        last = losses[-5:]
        assert losses[0] > FIRST_LOSS_ABOVE and sum(last) / len(last) < below, (losses[0], last)


def test_rl_runs_trained_and_exported(demo_run):
    from safetensors.torch import load_file

    out, _ = demo_run
    start = load_file(str(out / "work" / "warmstart" / "huggingface" / "model.safetensors"))
    for run, mode in (("rl_sim", "simulate_sft"), ("rl_real", "wiki"), ("rl_fixed", "simulate_sft")):
        rows = [json.loads(line) for line in (out / "work" / "rl" / run / "logs" / "metrics.jsonl").open()]
        assert [r["step"] for r in rows] == list(range(1, RL_STEPS + 1))
        # every search of the run got a reply (from the simulator or the retrieval server); a reply that
        # did not parse is content, counted apart, and rare
        assert all(r["search/failure_rate"] == 0.0 for r in rows), run
        assert sum(r.get("search/malformed_rate", 0.0) for r in rows) / len(rows) < 0.2, run
        if run == "rl_sim":  # the curriculum raised p_noisy over the run
            assert rows[0]["search/p_noisy"] < rows[-1]["search/p_noisy"] <= 0.5
        if run == "rl_fixed":  # the ablation held it at the curriculum's end value
            assert all(r["search/p_noisy"] == 0.5 for r in rows)
        export = out / "work" / "rl" / run / f"global_step_{RL_STEPS}" / "actor" / "huggingface"
        trained = load_file(str(export / "model.safetensors"))
        assert max(float((trained[k] - start[k]).abs().max()) for k in start) > 0.0


def test_rl_teaches_searching_and_lifts_held_out_em(demo_run):
    out, _ = demo_run
    results = json.loads((out / "results.json").read_text())
    warm = results["warm_start"]
    assert warm["searches_per_question"] < WARM_SEARCHES_BELOW, warm
    lifts = []
    for row in ("sim_trained", "real_trained"):
        assert results[row]["searches_per_question"] > RL_SEARCHES_ABOVE, (row, results[row])
        lifts.append(results[row]["em"] - warm["em"])
        assert lifts[-1] > -RL_ARM_EM_DROP_BELOW, (row, results[row], warm)
    assert sum(lifts) / len(lifts) > RL_MEAN_EM_LIFT_ABOVE, (lifts, warm)


def test_baselines_bracket_the_policies(demo_run):
    out, _ = demo_run
    results = json.loads((out / "results.json").read_text())
    # the pipeline can answer every question (retrieval finds the right paragraph): the upper bound
    assert results["scripted"]["em"] > SCRIPTED_EM_ABOVE, results["scripted"]
    # guessing the most frequent answer of each kind answers almost none: the world is not guessable
    assert results["majority"]["em"] < MAJORITY_EM_BELOW, results["majority"]
    # RAG searched each question exactly once
    assert results["rag"]["searches_per_question"] == pytest.approx(1.0), results["rag"]
