"""Peak GPU memory per step phase, for comparing a run with its memory plan (cuda only).

``PhasePeaks(device)`` wraps each phase of a worker (``with peaks.phase("update"): ...``); on cuda it
resets torch's peak statistics at the start and keeps, per phase name, the largest
``torch.cuda.max_memory_allocated`` (this process's tensors) and the largest device memory in use
at the end of the phase (``torch.cuda.mem_get_info``: every process on the GPU, a vLLM engine core
or a simulator sharing it included). ``pop_metrics`` returns them in GiB and starts over. On any
other device it does nothing and reports nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

GIB = 2**30
ALLOCATED = "memory/max_allocated_gib/"
DEVICE_USED = "memory/device_used_gib/"


class PhasePeaks:
    """Per-phase peak memory of one process on its current GPU (no-op unless ``device`` is cuda)."""

    def __init__(self, device: str) -> None:
        self.enabled = device == "cuda" and torch.cuda.is_available()
        self._allocated: dict[str, int] = {}
        self._used: dict[str, int] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            self._allocated[name] = max(self._allocated.get(name, 0), torch.cuda.max_memory_allocated())
            self._used[name] = max(self._used.get(name, 0), total - free)

    def pop_metrics(self) -> dict[str, float]:
        """``memory/max_allocated_gib/<phase>`` and ``memory/device_used_gib/<phase>`` since the last call."""
        out = {f"{ALLOCATED}{k}": v / GIB for k, v in self._allocated.items()}
        out.update({f"{DEVICE_USED}{k}": v / GIB for k, v in self._used.items()})
        self._allocated.clear()
        self._used.clear()
        return out


def max_over_ranks(results: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the largest value any rank reported (the rank that needs the most memory decides)."""
    out: dict[str, float] = {}
    for metrics in results:
        for key, value in metrics.items():
            out[key] = max(out.get(key, float("-inf")), float(value))
    return out
