"""The base class of every worker: its place in the group, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class DistInfo:
    """Where a worker sits in its group (from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: Optional[str]
    master_port: Optional[int]


def _int_env(env: dict, name: str) -> int:
    raw = env[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def read_dist_info(env: Optional[dict] = None) -> DistInfo:
    """Parse the group environment.

    With neither RANK nor WORLD_SIZE set the worker is a single process (rank 0 of 1). Otherwise
    both must be set and valid; MASTER_ADDR and MASTER_PORT are required when WORLD_SIZE > 1.
    """
    env = dict(os.environ if env is None else env)
    has_rank, has_ws = "RANK" in env, "WORLD_SIZE" in env
    if not has_rank and not has_ws:
        return DistInfo(rank=0, world_size=1, local_rank=0, master_addr=env.get("MASTER_ADDR"),
                        master_port=_int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else None)
    if has_rank != has_ws:
        raise ValueError("environment: RANK and WORLD_SIZE must be set together (one of them is missing)")
    rank, world_size = _int_env(env, "RANK"), _int_env(env, "WORLD_SIZE")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"environment: need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world_size}")
    local_rank = _int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    addr = env.get("MASTER_ADDR")
    port = _int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else None
    if world_size > 1 and (not addr or port is None):
        raise ValueError(f"environment: WORLD_SIZE={world_size} needs MASTER_ADDR and MASTER_PORT")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, master_addr=addr, master_port=port)


class Worker:
    """Base class of every worker. Subclasses mark group-callable methods with ``@register``."""

    def __init__(self) -> None:
        self._dist = read_dist_info()

    @property
    def rank(self) -> int:
        return self._dist.rank

    @property
    def world_size(self) -> int:
        return self._dist.world_size

    @property
    def dist_info(self) -> DistInfo:
        return self._dist
