"""Run the real trainer (``python -m verl.trainer.main_ppo``) as a child process for the
reliability tests: tiny CPU settings, its own process group (so a kill takes Ray down with it),
output captured to a file, bounded waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def tiny_overrides(model: str, train_file: str, run_dir: str, sim_port: int, steps: int) -> list[str]:
    """Hydra overrides of a tiny GRPO run on cpu with the searching policy and the hash reward."""
    return [
        f"data.train_files={train_file}", "data.train_batch_size=2", "data.max_prompt_length=256",
        "data.max_response_length=96",
        f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.max_new_tokens=12", "actor_rollout_ref.actor.strategy=none",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "reward.fn=hash_reward.score", "reward.num_examine=0",
        "trainer.device=cpu", "trainer.n_gpus_per_node=1", "trainer.ray_num_cpus=2",
        f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={run_dir}",
        "trainer.logger=[console,jsonl]", "trainer.save_freq=1",
        f"hydra.run.dir={run_dir}/hydra",
        "retriever.max_turns=2", "retriever.max_obs_length=64", "retriever.end_threshold=0.5",
        f"retriever.simulation.port={sim_port}", "retriever.simulation.timeout=5.0",
        "retriever.simulation.max_retries=1", "retriever.simulation.backoff=0.1",
    ]


def trainer_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HYDRA_FULL_ERROR"] = "1"
    env.update(extra)
    return env


class TrainerProcess:
    """One trainer run in its own session; ``output`` is its stdout+stderr so far."""

    def __init__(self, overrides: list[str], log_path: str | Path, env: dict[str, str] | None = None) -> None:
        self.log_path = Path(log_path)
        cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "configs"),
               "--config-name", "zerosearch_trainer", *overrides]
        self._log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env or trainer_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"trainer still running after {timeout_s:.0f} s; output:\n{self.output[-4000:]}")
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL the whole process group (driver, Ray and its workers), as a lost node would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self._log.close()

    def kill_when(self, condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.002) -> float:
        """Poll ``condition`` and SIGKILL the group as soon as it holds; returns the time waited."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"trainer exited (rc={self.proc.returncode}) before the kill point:\n"
                                     f"{self.output[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"kill point not reached in {timeout_s:.0f} s:\n{self.output[-4000:]}")
            time.sleep(poll_s)
        self.kill()
        return time.monotonic() - self.started


def read_metrics(run_dir: str | Path) -> dict[int, dict]:
    """The last ``metrics.jsonl`` record of each step (a step redone after a resume replaces the
    record of the killed attempt)."""
    path = Path(run_dir) / "logs" / "metrics.jsonl"
    out: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out[int(record["step"])] = record
    return out
