"""torch.distributed set-up for workers, and small collective helpers.

The backend follows the device: on cuda one group with two backends, ``cpu:gloo,cuda:nccl``
(NCCL for tensors on the GPU, gloo for the few that live on the CPU, e.g. FSDP's CPU-offloaded
state); on cpu gloo alone. Code that issues a collective itself builds its tensor on the compute
device (``device_of``), so the fast backend carries it.
"""

from __future__ import annotations

import datetime
import logging
import socket
from typing import Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_BACKENDS = {"cuda": "cpu:gloo,cuda:nccl", "cpu": "gloo"}


def backend_for_device(device: str) -> str:
    """``cpu:gloo,cuda:nccl`` for cuda, ``gloo`` for cpu; ValueError for anything else."""
    if device not in _BACKENDS:
        raise ValueError(f"trainer.device must be one of {sorted(_BACKENDS)}, got {device!r}")
    return _BACKENDS[device]


def get_free_port(host: str = "") -> int:
    """A TCP port that is free on this machine right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def get_node_ip() -> str:
    """This node's IP as Ray sees it (falls back to the host's resolved address without Ray)."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # Ray not importable or not initialised here
        return socket.gethostbyname(socket.gethostname())


def init_distributed(
    device: str,
    rank: int,
    world_size: int,
    master_addr: Optional[str],
    master_port: Optional[int],
    local_rank: int = 0,
    timeout_s: float = 1800.0,
) -> None:
    """Create the default process group (once per process) and pick the CUDA device.

    World size 1 without MASTER_ADDR uses an in-memory store, so a single process needs no port.
    A process group that already exists must have the same world size (else RuntimeError).
    """
    backend = backend_for_device(device)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but torch sees no CUDA device in this worker")
        # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPU, so index 0 is it; otherwise LOCAL_RANK.
        torch.cuda.set_device(0 if torch.cuda.device_count() == 1 else local_rank)
    if dist.is_initialized():
        if dist.get_world_size() != world_size:
            raise RuntimeError(
                f"a process group of size {dist.get_world_size()} already exists; this worker needs {world_size}"
            )
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    if world_size == 1 and not master_addr:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return
    if not master_addr or master_port is None:
        raise ValueError(f"init_distributed: world_size={world_size} needs master_addr and master_port")
    host = f"[{master_addr}]" if ":" in master_addr else master_addr
    logger.info("rank %d/%d joins %s process group at %s:%s", rank, world_size, backend, master_addr, master_port)
    dist.init_process_group(backend, init_method=f"tcp://{host}:{master_port}", rank=rank, world_size=world_size,
                            timeout=timeout)


def device_of(device: str) -> torch.device:
    """The compute device of this worker (``trainer.device`` cuda or cpu): where its collectives' tensors go."""
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"trainer.device must be cuda or cpu, got {device!r}")


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average each scalar over the ranks of the default group (identity without one)."""
    if not values or not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}
