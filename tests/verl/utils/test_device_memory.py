"""Peak GPU memory per phase: the bookkeeping on a faked torch.cuda, and a no-op on cpu."""

import torch

from verl.utils.device_memory import PhasePeaks, max_over_ranks

GIB = 2**30


def test_cpu_records_nothing():
    peaks = PhasePeaks("cpu")
    with peaks.phase("update"):
        pass
    assert not peaks.enabled and peaks.pop_metrics() == {}


def test_cuda_keeps_the_largest_peak_per_phase(monkeypatch):
    state = {"allocated": 0, "resets": 0}
    readings = iter([(3 * GIB, 3 * GIB), (5 * GIB, 2 * GIB), (1 * GIB, 6 * GIB)])  # (allocated, used) per phase

    def reset():
        state["resets"] += 1

    def mem_get_info():
        allocated, used = next(readings)
        state["allocated"] = allocated
        return 80 * GIB - used, 80 * GIB

    for name, fn in {"is_available": lambda: True, "synchronize": lambda: None, "reset_peak_memory_stats": reset,
                     "mem_get_info": mem_get_info, "max_memory_allocated": lambda: state["allocated"]}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    peaks = PhasePeaks("cuda")
    for name in ("rollout", "rollout", "update"):
        with peaks.phase(name):
            pass
    assert state["resets"] == 3
    assert peaks.pop_metrics() == {
        "memory/max_allocated_gib/rollout": 5.0, "memory/max_allocated_gib/update": 1.0,
        "memory/device_used_gib/rollout": 3.0, "memory/device_used_gib/update": 6.0,
    }
    assert peaks.pop_metrics() == {}


def test_max_over_ranks():
    assert max_over_ranks([{"a": 1.0, "b": 5.0}, {"a": 3.0}, {}]) == {"a": 3.0, "b": 5.0}
