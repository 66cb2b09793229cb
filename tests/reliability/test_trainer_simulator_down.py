"""Point 1 at the trainer level: ``python -m verl.trainer.main_ppo`` with no simulation server.

The policy searches on every turn (``searching_model.py``), so the first rollout meets the dead
server. Training must stop on its own, quickly, with an error that names the server's address, and
without writing a checkpoint or a step record. Under the default failure policy it stops after
the second search round with no reply (``retriever.failure_streak_rounds=2``): 2 prompts x 2
samples = 4 searches per round, so 8 of 8 failed.
"""

from __future__ import annotations

import re

import pytest
from reliability_helpers import free_port
from retry_bounds import TRAINER_STARTUP_S
from trainer_runs import TrainerProcess, tiny_overrides

pytestmark = pytest.mark.slow


def test_training_with_dead_simulator_fails_fast_naming_the_server(searching_model_dir, train_parquet, tmp_path):
    port = free_port()  # nothing listens there
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(searching_model_dir, train_parquet, str(run_dir), port, steps=3)
    trainer = TrainerProcess(overrides, tmp_path / "trainer.log")
    rc = trainer.wait(timeout_s=TRAINER_STARTUP_S + 60)  # two rounds: 2 attempts of at most 5 s each
    out = trainer.output
    assert rc != 0, out[-3000:]
    assert re.search(rf"SearchFailureError: 8 of 8 search requests failed against .*http://127\.0\.0\.1:{port}.* in "
                     r"2 search rounds in a row", out), out[-3000:]
    assert not (run_dir / "global_step_1").exists()
    assert not re.search(r"^step:1 ", out, re.MULTILINE)
