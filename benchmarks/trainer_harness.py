"""Drive the real trainer (``verl.trainer.main_ppo.build_trainer`` + ``RayPPOTrainer.train_step``)
for the step-level rows, and watch the memory of its processes.

``TrainerRun`` builds the dataset (``scripts/data_process/qa_search.py`` on the shipped QA
samples), composes the ZeroSearch trainer config for a CPU GRPO run with the given overrides,
builds the trainer (Ray workers included) and runs steps one at a time, the way ``fit`` does.
``PeakRSS`` samples the resident memory of the driver plus its Ray worker processes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO_ROOT, log


def qa_parquet(workdir: Path) -> Path:
    """``train.parquet`` built from the shipped QA samples (built once per run)."""
    out = Path(workdir) / "data"
    train = out / "train.parquet"
    if not train.is_file():
        from scripts.data_process.qa_search import main as build_parquet

        build_parquet(["--out", str(out)])
    return train


def cpu_grpo_overrides(model_path: Path, train_file: Path, run_dir: Path, *, prompts: int, group: int,
                       max_new_tokens: int, max_response_length: int, micro_batch: int) -> list[str]:
    """Hydra overrides of a CPU GRPO run with a KL loss against the reference (as the launcher's grpo)."""
    rows = prompts * group
    return [
        f"actor_rollout_ref.model.path={model_path}",
        f"data.train_files={train_file}",
        f"data.train_batch_size={prompts}",
        f"actor_rollout_ref.rollout.n={group}",
        f"actor_rollout_ref.rollout.max_new_tokens={max_new_tokens}",
        f"data.max_response_length={max_response_length}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={rows}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro_batch}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro_batch}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.ref.enable=true",
        "algorithm.adv_estimator=grpo",
        "trainer.device=cpu",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        "trainer.total_training_steps=100",
        "trainer.resume_mode=disable",
        "trainer.save_freq=-1",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={run_dir}",
        "reward.num_examine=0",
    ]


class PeakRSS:
    """Samples, every ``interval_s``, the summed RSS of this process and its Ray worker processes
    (descendants whose title starts with ``ray::``, idle pool workers excluded); ``peak()`` is the
    largest sum since the last ``reset()``, in bytes."""

    def __init__(self, interval_s: float = 0.1) -> None:
        import psutil

        self._me = psutil.Process()
        self.interval_s = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-peak-rss", daemon=True)

    def sample(self) -> int:
        import psutil

        total = self._me.memory_info().rss
        for child in self._me.children(recursive=True):
            try:
                title = " ".join(child.cmdline())
                if title.startswith("ray::") and not title.startswith("ray::IDLE"):
                    total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.sample())
            self._stop.wait(self.interval_s)

    def reset(self) -> None:
        self._peak = self.sample()

    def peak(self) -> int:
        return max(self._peak, self.sample())

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def worker_threads() -> str:
    """``OMP_NUM_THREADS`` of this process's Ray worker processes (how many cores torch uses there)."""
    import psutil

    seen = []
    for child in psutil.Process().children(recursive=True):
        try:
            if " ".join(child.cmdline()).startswith("ray::") and "IDLE" not in child.cmdline()[0]:
                seen.append(child.environ().get("OMP_NUM_THREADS", "unset"))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return ", ".join(sorted(set(seen))) or "no worker found"


class TrainerRun:
    """A built trainer, ready to run steps; ``close()`` shuts Ray down.

    Args:
        overrides: Hydra overrides on configs/zerosearch_trainer.yaml.
    """

    def __init__(self, overrides: Sequence[str]) -> None:
        import random

        import numpy as np
        import torch
        from omegaconf import OmegaConf

        from verl.trainer.main_ppo import build_trainer, load_config

        self.config = load_config(list(overrides), config_dir=str(REPO_ROOT / "configs"),
                                  config_name="zerosearch_trainer")
        OmegaConf.resolve(self.config)
        seed = int(self.config.trainer.seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        start = time.perf_counter()
        self.trainer = build_trainer(self.config)
        log(f"trainer built in {time.perf_counter() - start:.0f} s")

    def batch(self, prompts: int | None = None, offset: int = 0):
        """The next training batch from the trainer's iterator, or ``prompts`` rows from ``offset``."""
        t = self.trainer
        if prompts is None:
            indices = next(t.train_iterator)
        else:
            if offset + prompts > len(t.train_dataset):
                raise ValueError(f"the training set has {len(t.train_dataset)} rows, {offset + prompts} needed")
            indices = list(range(offset, offset + prompts))
        return t.collate_fn([t.train_dataset[i] for i in indices])

    def step(self, batch) -> tuple[dict[str, float], float]:
        """One ``train_step``; returns (its metrics, wall seconds)."""
        self.trainer.global_step += 1
        start = time.perf_counter()
        metrics = self.trainer.train_step(batch)
        return metrics, time.perf_counter() - start

    def close(self) -> None:
        import ray

        try:
            self.trainer.agent_loop.close()
        finally:
            if ray.is_initialized():
                ray.shutdown()

    def __enter__(self) -> "TrainerRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def environment_for_trainer() -> None:
    """Give the single CPU worker every core: Ray sets ``OMP_NUM_THREADS`` to an actor's CPU share
    (1) unless the driver's environment sets it; the trainer forwards ``OMP_*`` to its workers."""
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
