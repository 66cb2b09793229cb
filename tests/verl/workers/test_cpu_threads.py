import os

import pytest
from omegaconf import OmegaConf

from verl.workers.fsdp_workers import cpu_threads_per_worker


def test_default_shares_the_cores_among_the_node_workers(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cpu_threads_per_worker(OmegaConf.create({"n_gpus_per_node": 4, "cpu_threads_per_worker": None})) == 4
    assert cpu_threads_per_worker(OmegaConf.create({"n_gpus_per_node": 32, "cpu_threads_per_worker": None})) == 1


def test_explicit_value_and_bad_value():
    assert cpu_threads_per_worker(OmegaConf.create({"n_gpus_per_node": 1, "cpu_threads_per_worker": 3})) == 3
    with pytest.raises(ValueError, match="cpu_threads_per_worker"):
        cpu_threads_per_worker(OmegaConf.create({"n_gpus_per_node": 1, "cpu_threads_per_worker": 0}))
