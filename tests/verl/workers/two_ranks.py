"""Run a function on two gloo ranks (``torch.multiprocessing.spawn``), and record what reaches collectives.

``run_two_ranks(fn, *args)`` calls ``fn(rank, *args)`` in two fresh processes that have joined a
world-size-2 process group through ``verl.utils.distributed.init_distributed("cpu", ...)``; an
exception in either process fails the caller. ``fn`` must be a module-level function.

``CollectiveRecorder`` wraps every collective of ``torch.distributed`` (the classic API FSDP2 and
our code call) and of ``torch.distributed._functional_collectives`` (what DTensor calls when it
reduces or redistributes sharded tensors) and records, per call, the collective's name, which API
it came through and the devices of its tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.multiprocessing as mp

from verl.utils.distributed import get_free_port, init_distributed

CLASSIC = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single", "all_gather_object",
           "broadcast", "reduce", "reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_single",
           "all_to_all", "all_to_all_single", "gather", "scatter", "all_reduce_coalesced")
FUNCTIONAL = ("all_reduce", "all_reduce_inplace", "all_reduce_coalesced", "all_gather_tensor",
              "all_gather_tensor_autograd", "all_gather_into_tensor_coalesced", "reduce_scatter_tensor",
              "reduce_scatter_tensor_autograd", "reduce_scatter_tensor_coalesced", "all_to_all_single",
              "all_to_all_single_autograd", "broadcast", "all_gather_single", "reduce_scatter_single")


@dataclasses.dataclass
class Call:
    api: str  # "torch.distributed" or "functional" (DTensor's collectives)
    name: str
    devices: list[torch.device]


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


class CollectiveRecorder:
    """Context manager: while active, every collective call is appended to ``self.calls``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._saved: list[tuple[Any, str, Callable]] = []

    def _wrap(self, module: Any, api: str, name: str) -> None:
        original = getattr(module, name, None)
        if original is None:
            return

        def wrapper(*args, **kwargs):
            tensors = [t for a in (*args, *kwargs.values()) for t in _tensors(a)]
            self.calls.append(Call(api, name, [t.device for t in tensors]))
            return original(*args, **kwargs)

        self._saved.append((module, name, original))
        setattr(module, name, wrapper)

    def __enter__(self) -> "CollectiveRecorder":
        for name in CLASSIC:
            self._wrap(dist, "torch.distributed", name)
        for name in FUNCTIONAL:
            self._wrap(funcol, "functional", name)
        return self

    def __exit__(self, *exc) -> None:
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()

    def wrong_device(self, device: torch.device) -> list[Call]:
        """Calls with a tensor anywhere but ``device``."""
        return [c for c in self.calls if any(d != device for d in c.devices)]


def _entry(rank: int, port: int, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)
    init_distributed("cpu", rank, 2, "127.0.0.1", port, timeout_s=120)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def run_two_ranks(fn: Callable, *args) -> None:
    """``fn(rank, *args)`` on ranks 0 and 1 of a fresh gloo group; raises if either fails."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_entry, args=(get_free_port("127.0.0.1"), fn, args), nprocs=2, join=True)
