"""Point 2: SIGKILL at three points of a run, resume with ``trainer.resume_mode=auto``, and end with
the same weights and metrics as a run that was never interrupted.

Both runs: the real trainer (Ray, HF rollout, cpu), the always-searching tiny policy, the hash
reward, a checkpoint every step, 4 steps. Each step sends 8 simulator requests (2 prompts x 2
samples x 2 search rounds) to a fault-free ``fault_sim_server.py`` whose documents depend on the
request's query, useful/noisy kind and seed, so the search tool's request seeds and the noise
curriculum must survive the resume too. The interrupted run is killed (its whole process group,
Ray included):

1. during the rollout of step 2 (the simulator has received step 2's first request);
2. during the update of step 3: ``UPDATE_OFFSET_S`` after the step's last simulator reply, with
   ``ppo_epochs`` raised so that the update fills most of the time between the rollout and the
   checkpoint; the test checks that the rollout was complete and the checkpoint not yet begun;
3. while step 3's checkpoint is being written (``.tmp_global_step_3`` exists). The previous
   checkpoint must stay the latest and load; the half-written one must never be picked up;

and then resumed to the end.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from reliability_helpers import FaultServer, free_port
from retry_bounds import TRAINER_STARTUP_S
from safetensors.torch import load_file
from trainer_runs import TrainerProcess, read_metrics, tiny_overrides

from verl.utils.checkpoint import COMPLETE_MARKER, CheckpointManager, load_trainer_state

pytestmark = pytest.mark.slow

STEPS = 4
REQUESTS_PER_STEP = 8
DELAY_S = 0.3  # per simulator request: a rollout takes >= 2 rounds x 0.3 s
# After a step's last simulator reply come the last generation turn, the reward and the log-prob
# pass (together ~0.1-0.4 s), then the update, then the checkpoint. ppo_epochs=30 makes the update
# last seconds even on an idle machine with every core (ppo_epochs=6 finished inside 0.7 s there).
PPO_EPOCHS = 30
UPDATE_OFFSET_S = 0.5
# Metrics that measure time rather than the computation.
_VOLATILE = ("timing_s/", "perf/", "search/latency")


def overrides(model, data, run_dir, port):
    return tiny_overrides(model, data, str(run_dir), port, steps=STEPS) + [
        f"actor_rollout_ref.actor.ppo_epochs={PPO_EPOCHS}", "data.max_response_length=160", "retriever.max_obs_length=48",
        "trainer.max_ckpt_to_keep=2",
    ]


def after(condition, delay_s):
    """A condition that holds ``delay_s`` seconds after ``condition`` first held."""
    first: list[float] = []

    def check() -> bool:
        if not first and condition():
            first.append(time.monotonic())
        return bool(first) and time.monotonic() - first[0] >= delay_s

    return check


def answered(server: FaultServer) -> int:
    try:
        return int(server.stats()["answered"])
    except Exception:  # the server is busy; ask again at the next poll
        return -1


def weights(run_dir, step):
    return load_file(str(run_dir / f"global_step_{step}" / "actor" / "huggingface" / "model.safetensors"))


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def stable(record):
    return {k: v for k, v in record.items() if not k.startswith(_VOLATILE)}


def test_kill_anywhere_then_resume_matches_an_uninterrupted_run(searching_model_dir, train_parquet, tmp_path):
    ref_server = FaultServer(free_port(), delay=DELAY_S).start()
    run_server = FaultServer(free_port(), delay=DELAY_S).start()
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    log = tmp_path / "interrupted.log"
    try:
        reference = TrainerProcess(overrides(searching_model_dir, train_parquet, ref_dir, ref_server.port),
                                   tmp_path / "reference.log")
        args = overrides(searching_model_dir, train_parquet, run_dir, run_server.port)
        ckpt = CheckpointManager(str(run_dir))

        # 1. Kill during the rollout of step 2.
        first = TrainerProcess(args, log)
        first.kill_when(lambda: answered(run_server) >= REQUESTS_PER_STEP + 1, TRAINER_STARTUP_S + 120, poll_s=0.02)
        assert ckpt.complete_steps() == [1]
        assert not (run_dir / ".tmp_global_step_2").exists()

        # 2. Resume (redo step 2), kill after step 3's rollout, before its checkpoint: the update.
        base = answered(run_server)
        second = TrainerProcess(args, log)
        second.kill_when(after(lambda: answered(run_server) >= base + 2 * REQUESTS_PER_STEP, UPDATE_OFFSET_S),
                         TRAINER_STARTUP_S + 120, poll_s=0.02)
        assert ckpt.complete_steps() == [1, 2]
        assert not (run_dir / ".tmp_global_step_3").exists()
        assert 3 not in read_metrics(run_dir)
        assert "[checkpoint] resumed from" in second.output and "at step 1" in second.output

        # 3. Resume from step 2, kill while step 3's checkpoint is being written.
        third = TrainerProcess(args, log)
        tmp3 = run_dir / ".tmp_global_step_3"
        third.kill_when(tmp3.exists, TRAINER_STARTUP_S + 120, poll_s=0.0005)
        assert not (tmp3 / COMPLETE_MARKER).exists()  # the kill landed inside the save
        assert ckpt.complete_steps() == [1, 2] and ckpt.latest() == str(run_dir / "global_step_2")
        assert load_trainer_state(ckpt.latest())["global_step"] == 2
        torch.load(run_dir / "global_step_2" / "actor" / "extra_state_rank0.pt", weights_only=False)

        # 4. Resume to the end.
        last = TrainerProcess(args, log)
        assert last.wait(TRAINER_STARTUP_S + 120) == 0, last.output[-4000:]
        assert "resumed from" in last.output and "at step 2" in last.output
        assert reference.wait(TRAINER_STARTUP_S + 120) == 0, reference.output[-4000:]
    finally:
        ref_server.kill()
        run_server.kill()

    assert not tmp3.exists()  # the resumed run cleaned the half-written folder
    ref_w, run_w = weights(ref_dir, STEPS), weights(run_dir, STEPS)
    assert max_abs_diff(weights(ref_dir, STEPS - 1), ref_w) > 1e-4  # the steps really moved the weights
    assert max_abs_diff(ref_w, run_w) == 0.0

    ref_m, run_m = read_metrics(ref_dir), read_metrics(run_dir)
    assert sorted(ref_m) == sorted(run_m) == list(range(1, STEPS + 1))
    for step in ref_m:
        assert stable(run_m[step]) == stable(ref_m[step]), f"metrics of step {step} differ"
    assert all(ref_m[s]["search/requests"] == REQUESTS_PER_STEP for s in ref_m)
    assert sum(ref_m[s]["search/noisy_share"] for s in ref_m) > 0  # the curriculum drew noisy queries

    ref_state = json.loads((ref_dir / f"global_step_{STEPS}" / "trainer_state.json").read_text())
    run_state = json.loads((run_dir / f"global_step_{STEPS}" / "trainer_state.json").read_text())
    assert run_state == ref_state
