"""Helpers of the reliability suite: the fault server process, a scripted searching policy, configs."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from omegaconf import OmegaConf

from tests.zerosearch.char_tokenizer import char_tokenizer
from verl.protocol import DataProto
from verl.utils.dataset.rl_dataset import left_pad
from verl.utils.distributed import get_free_port
from verl.workers.rollout.base import GenerationOutput, SamplingConfig
from zerosearch.retrieval.health import process_alive, wait_until_healthy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAILURE_POLICY_KEYS = ("max_failure_rate", "max_malformed_rate", "failure_window", "failure_min_requests",
                       "failure_streak_rounds")


def failure_policy_defaults() -> dict[str, Any]:
    """The failure-policy keys as configs/retriever/default.yaml sets them, so tests run the defaults."""
    yaml = OmegaConf.load(REPO / "configs" / "retriever" / "default.yaml")
    return {key: yaml[key] for key in FAILURE_POLICY_KEYS}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return get_free_port("127.0.0.1")


class FaultServer:
    """``fault_sim_server.py`` in its own process on 127.0.0.1:``port``; it can be killed and restarted
    on the same port."""

    def __init__(self, port: int, log_path: str | None = None, **flags: Any) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.flags = flags
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> "FaultServer":
        cmd = [sys.executable, str(HERE / "fault_sim_server.py"), "--port", str(self.port)]
        for key, value in self.flags.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        if self.log_path:
            cmd += ["--log", self.log_path]
        self.proc = subprocess.Popen(cmd, cwd=REPO)
        pid = self.proc.pid
        wait_until_healthy(self.url + "/health", timeout_s, interval_s=0.05, alive=lambda: process_alive(pid))
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def control(self, **state: Any) -> dict:
        reply = httpx.post(self.url + "/control", json=state, timeout=5)
        reply.raise_for_status()
        return reply.json()

    def stats(self) -> dict:
        return httpx.get(self.url + "/stats", timeout=5).json()


class SearchingPolicy:
    """``generate`` for ``SearchAgentLoop``: row k (its prompt reads ``row k:``) writes
    ``<search>{queries[k]}</search>`` in every search turn and ``<answer>a{k}</answer>`` in the last
    (the turn after ``max_turns`` searches: every turn stops at ``</search>`` and ``</answer>``)."""

    def __init__(self, tokenizer: Any, queries: list[str], max_turns: int = 2) -> None:
        self.tok = tokenizer
        self.queries = queries
        self.max_turns = max_turns
        self.calls = 0

    def __call__(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        self.calls += 1
        outs = []
        for p in prompts:
            context = self.tok.decode(p)
            row = int(re.search(r"row (\d+):", context).group(1))
            final = context.count("</search>") >= self.max_turns
            text = f"<answer>a{row}</answer>" if final else f"<search>{self.queries[row]}</search>"
            ids = self.tok.encode(text, add_special_tokens=False)
            outs.append(GenerationOutput(token_ids=ids, log_probs=[-0.5] * len(ids), finish_reason="stop"))
        return outs


def agent_config(port: int, **retriever: Any):
    """A trainer config with what ``SearchAgentLoop`` reads; simulation tool on 127.0.0.1:``port``;
    the failure policy of configs/retriever/default.yaml unless ``retriever`` overrides a key."""
    simulation = {"host": "127.0.0.1", "port": port, "model": "simulation", "protocol": "openai",
                  "system_prompt": "", "tokenizer": None, "temperature": 0.8, "max_tokens": 64, "concurrency": 8,
                  "timeout": 1.0, "max_retries": 1, "backoff": 0.05}
    simulation.update(retriever.pop("simulation", {}))
    cfg = {
        "retriever": {"search_mode": "simulate_sft", "search_engine": "simulate_sft", "topk": 5, "max_turns": 2,
                      "max_obs_length": 200, "max_query_chars": 512, "start_threshold": 0.0,
                      "end_threshold": 0.0, "base": 4.0, "total_steps": 10, "seed": 3, "cache_size": 0,
                      **failure_policy_defaults(), "simulation": simulation, **retriever},
        "actor_rollout_ref": {"rollout": {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_new_tokens": 32,
                                          "val_kwargs": {"do_sample": False, "temperature": 0.0, "top_p": 1.0}}},
        "data": {"max_prompt_length": 64, "max_response_length": 2000},
        "trainer": {"total_training_steps": 10},
    }
    return OmegaConf.create(cfg)


def prompt_batch(tokenizer: Any, n: int) -> DataProto:
    """``n`` left-padded prompts ``row k: question k?`` with their question and gold answers."""
    prompts = [tokenizer.encode(f"row {k}: question {k}?", add_special_tokens=False) for k in range(n)]
    width = max(len(p) for p in prompts)
    padded = [left_pad(p, width, tokenizer.pad_token_id) for p in prompts]
    ids = torch.stack([row["input_ids"] for row in padded])
    mask = torch.stack([row["attention_mask"] for row in padded])
    golden = np.empty(n, dtype=object)
    for k in range(n):
        golden[k] = [f"answer {k}"]
    return DataProto.from_dict(tensors={"input_ids": ids, "attention_mask": mask},
                               non_tensors={"question": np.array([f"question {k}?" for k in range(n)], dtype=object),
                                            "golden_answers": golden,
                                            "uid": np.array([f"u{k}" for k in range(n)], dtype=object)})


def char_tokenizer_without_tags():
    """A character-level tokenizer (one id per printable character) with pad/eos and NO search tags:
    ``<search>`` is eight ordinary tokens for it, as for a tokenizer that was never given the tags."""
    return char_tokenizer()
