"""How a call on a worker group fans out to its ranks and how the answers come back.

A worker method marked with ``@register(dispatch_mode=...)`` becomes a method of every
``RayWorkerGroup`` built from that worker class. The dispatch mode decides which ranks are
called with which arguments, and how their results are combined:

- ``ONE_TO_ALL``: the same arguments go to every rank; the result is the list of rank results.
- ``DP_COMPUTE_PROTO``: every ``DataProto`` argument is split into ``world_size`` equal chunks in
  row order (rank i gets chunk i; other arguments are passed unchanged). The row count must
  divide evenly (the caller pads with ``pad_dataproto_to_divisor``). Results are ``DataProto``
  and are concatenated in rank order (meta_info from rank 0).
- ``RANK_ZERO``: only rank 0 is called; its result is returned as is.
- ``ALL_TO_ALL``: the arguments are passed as is to every rank; the list of rank results.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from verl.protocol import DataProto

_SPEC_ATTR = "__single_controller_spec__"


class Dispatch(Enum):
    """How a group call is split over ranks (see the module docstring)."""

    ONE_TO_ALL = "one_to_all"
    DP_COMPUTE_PROTO = "dp_compute_proto"
    RANK_ZERO = "rank_zero"
    ALL_TO_ALL = "all_to_all"


@dataclass(frozen=True)
class MethodSpec:
    """What ``@register`` recorded on a worker method."""

    dispatch_mode: Dispatch
    blocking: bool


def register(dispatch_mode: Dispatch = Dispatch.ALL_TO_ALL, blocking: bool = True) -> Callable:
    """Mark a worker method as callable from a worker group.

    Args:
        dispatch_mode: a ``Dispatch`` member.
        blocking: True waits for every rank and returns the collected result; False returns a
            ``PendingResult`` whose ``get()`` waits and collects.
    """
    if not isinstance(dispatch_mode, Dispatch):
        raise TypeError(f"register: dispatch_mode must be a Dispatch member, got {dispatch_mode!r}")
    if not isinstance(blocking, bool):
        raise TypeError(f"register: blocking must be a bool, got {blocking!r}")

    def decorator(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"register: can only decorate a function, got {fn!r}")
        setattr(fn, _SPEC_ATTR, MethodSpec(dispatch_mode=dispatch_mode, blocking=blocking))
        return fn

    return decorator


def registered_methods(cls: type) -> dict[str, MethodSpec]:
    """Name -> spec of every ``@register``'ed method of ``cls`` (inherited ones included)."""
    found: dict[str, MethodSpec] = {}
    for name, member in inspect.getmembers(cls, predicate=callable):
        spec = getattr(member, _SPEC_ATTR, None)
        if isinstance(spec, MethodSpec):
            found[name] = spec
    return found


def dispatch_args(mode: Dispatch, world_size: int, args: tuple, kwargs: dict) -> list[tuple[int, tuple, dict]]:
    """The calls to make: a list of (rank, args, kwargs)."""
    if world_size <= 0:
        raise ValueError(f"dispatch_args: world_size must be positive, got {world_size}")
    if mode in (Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL):
        return [(rank, args, kwargs) for rank in range(world_size)]
    if mode is Dispatch.RANK_ZERO:
        return [(0, args, kwargs)]
    if mode is Dispatch.DP_COMPUTE_PROTO:
        return _split_for_dp(world_size, args, kwargs)
    raise ValueError(f"dispatch_args: unknown dispatch mode {mode!r}")


def _split_for_dp(world_size: int, args: tuple, kwargs: dict) -> list[tuple[int, tuple, dict]]:
    def chunks(name: str, value: Any) -> list[Any]:
        if not isinstance(value, DataProto):
            return [value] * world_size
        if len(value) % world_size:
            raise ValueError(
                f"DP_COMPUTE_PROTO: argument {name} has {len(value)} rows, not divisible by the group's "
                f"world_size {world_size}; pad it with verl.protocol.pad_dataproto_to_divisor first"
            )
        return value.chunk(world_size)

    n_proto = sum(isinstance(v, DataProto) for v in (*args, *kwargs.values()))
    if n_proto == 0:
        raise TypeError("DP_COMPUTE_PROTO: the call needs at least one DataProto argument")
    split_args = [chunks(f"#{i}", a) for i, a in enumerate(args)]
    split_kwargs = {k: chunks(k, v) for k, v in kwargs.items()}
    return [
        (rank, tuple(a[rank] for a in split_args), {k: v[rank] for k, v in split_kwargs.items()})
        for rank in range(world_size)
    ]


def collect_results(mode: Dispatch, results: list[Any]) -> Any:
    """Combine the per-rank results (in rank order) of one call."""
    if mode in (Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL):
        return list(results)
    if mode is Dispatch.RANK_ZERO:
        if len(results) != 1:
            raise ValueError(f"RANK_ZERO: expected one result, got {len(results)}")
        return results[0]
    if mode is Dispatch.DP_COMPUTE_PROTO:
        bad = [i for i, r in enumerate(results) if not isinstance(r, DataProto)]
        if bad:
            raise TypeError(f"DP_COMPUTE_PROTO: ranks {bad} returned {type(results[bad[0]]).__name__}, expected DataProto")
        return DataProto.concat(results)
    raise ValueError(f"collect_results: unknown dispatch mode {mode!r}")
