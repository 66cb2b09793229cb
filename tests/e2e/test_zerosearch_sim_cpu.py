"""ZeroSearch end to end on CPU: a real vLLM-CPU OpenAI server serves the simulation model, and
two GRPO steps run through train_grpo.sh with SEARCH_MODE simulate_sft.

The policy and the simulator are tiny models rewired to write fixed text (bigram_models.py,
tests/reliability/searching_model.py): the policy always searches "capital city", the simulator
always answers with one "Doc 1: ..." line. Checked from the logged metrics: searches were issued
and answered, observation tokens carry no loss, and p_noisy follows the curriculum.
"""

import json
import os
import subprocess

import pytest

from verl.utils.distributed import get_free_port

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM_TEXT = "\nDoc 1: The capital city is on the river.\n"


@pytest.fixture(scope="module")
def sim_server(tmp_path_factory):
    from tests.e2e.bigram_models import rewire_as_bigram
    from zerosearch.miniature.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("sim")
    model = rewire_as_bigram(build_tiny_model(root / "simulator", size="tiny", kind="simulation", seed=1), SIM_TEXT)
    port = get_free_port("127.0.0.1")
    logs = root / "logs"
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "scripts", "launch_simulation_server.sh"), str(model), "ENGINE", "vllm",
         "PORT", str(port), "LOG_DIR", str(logs), "SERVED_MODEL_NAME", "simulation", "DTYPE", "float32",
         "MAX_MODEL_LEN", "1024", "WAIT_TIMEOUT", "400"],
        capture_output=True, text=True, timeout=460)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "SIM_MODEL_NAME simulation" in proc.stdout  # the launcher prints the client settings
    pid_file = logs / f"simulation_server_{port}.pid"
    yield port
    if pid_file.exists():
        subprocess.run(["kill", pid_file.read_text().strip()], check=False)


def test_two_grpo_steps_with_simulated_search(sim_server, qa_parquet, tmp_path):
    from tests.reliability.searching_model import build_searching_model

    policy = build_searching_model(tmp_path / "policy", seed=0)
    save = tmp_path / "runs"
    cmd = ["bash", os.path.join(REPO, "train_grpo.sh"),
           "MODEL_PATH", str(policy), "DATA_PATH", qa_parquet, "TOTAL_STEPS", "2", "DEVICE", "cpu",
           "ROLLOUT_ENGINE", "hf",  # the tiny searching model; auto would pick vLLM-CPU where it is installed
           "SEARCH_MODE", "simulate_sft", "IP", "127.0.0.1", "PORT", str(sim_server), "SIM_MODEL_NAME", "simulation",
           "START_THRESHOLD", "0.2", "END_THRESHOLD", "0.8", "MAX_TURNS", "2", "TOPK", "3",
           "TRAIN_BATCH_SIZE", "2", "N_AGENT", "2", "MAX_NEW_TOKENS", "12", "MAX_RESPONSE_LENGTH", "160",
           "MAX_OBS_LENGTH", "48", "MAX_PROMPT_LENGTH", "512", "SAVE_DIR", str(save), "EXPERIMENT_NAME", "e2e",
           "SAVE_FREQ", "-1", "LOGGER", "jsonl", "SEED", "3",
           "--", "retriever.simulation.max_tokens=32", "trainer.ray_num_cpus=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(save / "e2e" / "logs" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2]
    # p_noisy = start + (4^(step/total) - 1) / 3 * (end - start): step 1 of 2 -> 0.2 + (2 - 1)/3 * 0.6 = 0.4;
    # step >= total -> end = 0.8
    assert rows[0]["search/p_noisy"] == pytest.approx(0.4, abs=1e-9)
    assert rows[1]["search/p_noisy"] == pytest.approx(0.8, abs=1e-9)
    for r in rows:
        assert r["search/requests"] > 0 and r["search/searches_per_row"] >= 1
        assert r["search/failure_rate"] == 0.0
        assert r["search/valid_action_rate"] > 0
        # observations are part of the response but carry no loss
        assert r["search/obs_tokens_share"] > 0
        assert r["response_length/policy_tokens/mean"] < r["response_length/mean"]
