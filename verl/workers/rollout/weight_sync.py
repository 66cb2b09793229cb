"""Stream the actor's weights into a rollout engine, one tensor at a time, in buckets.

``stream_weights`` walks a module's parameters in order, casts each to the engine's dtype (an
FSDP2 shard is cast where it lies, before the gather, so that the gather moves and allocates
engine-dtype bytes only), gathers each shard into the full tensor (``DTensor.full_tensor()``, a
collective every rank must run in the same order; a plain tensor is taken as it is) and hands it
on. Gathered tensors are held in a bucket until it reaches ``bucket_bytes`` (or the parameters run
out), then passed to the consumer one by one and dropped: the stream itself never holds more than
one bucket plus the tensor that overflowed it, and never a copy of the whole model.

Tied parameters (an output head sharing the input embedding) are one ``nn.Parameter`` and appear
once, under their first name (``model.embed_tokens.weight`` for Qwen2): engines that tie the
same way load them once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

logger = logging.getLogger(__name__)


@dataclass
class SyncStats:
    """What one sync moved.

    Attributes:
        tensors: tensors handed to the engine.
        bytes: their total size in the engine's dtype.
        peak_held_bytes: the most bytes of gathered tensors the stream held at one time.
        largest_bytes: the largest single tensor.
    """

    tensors: int = 0
    bytes: int = 0
    peak_held_bytes: int = 0
    largest_bytes: int = 0

    def metrics(self, prefix: str = "weight_sync") -> dict[str, float]:
        return {
            f"{prefix}/tensors": float(self.tensors),
            f"{prefix}/bytes": float(self.bytes),
            f"{prefix}/peak_held_bytes": float(self.peak_held_bytes),
        }


def bucket_bytes_of(bucket_mb: float | int, key: str = "actor_rollout_ref.rollout.weight_sync_bucket_mb") -> int:
    """``bucket_mb`` (MiB, from config ``key``) as bytes; a clear error for a non-positive value."""
    if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb > 0:
        raise ValueError(f"{key} must be a positive number of MiB, got {bucket_mb!r}")
    return int(bucket_mb * 1024 * 1024)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (collective), or ``tensor`` itself when it is not sharded.

    A shard offloaded to the CPU while its mesh lives on an accelerator is moved to the
    accelerator first (the all-gather runs there, e.g. over NCCL).
    """
    if not hasattr(tensor, "full_tensor"):
        return tensor
    mesh = tensor.device_mesh
    if tensor.device.type != mesh.device_type:
        from torch.distributed.tensor import DTensor

        local = tensor.to_local().to(mesh.device_type)
        tensor = DTensor.from_local(local, mesh, tensor.placements, run_check=False, shape=tensor.shape,
                                    stride=tensor.stride())
    return tensor.full_tensor()


def named_weights(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The parameters of ``module`` with their state-dict names, tied ones once (detached)."""
    for name, param in module.named_parameters():
        yield name, param.detach()


def stream_weights(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    dtype: torch.dtype | None,
    bucket_bytes: int,
    stats: SyncStats | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, full tensor in dtype)`` for each input, gathering in buckets of ``bucket_bytes``.

    Args:
        named_tensors: (name, tensor) pairs; DTensors are gathered with ``full_tensor()``.
        dtype: the engine's dtype (None keeps each tensor's own).
        bucket_bytes: gathered bytes held before they are handed on (> 0).
        stats: filled in as the stream is consumed.

    A tensor that already has the right dtype and is not sharded is yielded as it is (no copy).
    A shard is cast before it is gathered (a local cast: the gather moves engine-dtype bytes).
    Every tensor yielded is detached and contiguous.
    """
    if bucket_bytes <= 0:
        raise ValueError(f"stream_weights: bucket_bytes must be > 0, got {bucket_bytes}")
    stats = stats if stats is not None else SyncStats()
    bucket: list[tuple[str, torch.Tensor]] = []
    held = 0
    for name, tensor in named_tensors:
        tensor = tensor.detach()
        if dtype is not None:
            tensor = tensor.to(dtype)  # a no-op at the same dtype; a DTensor stays sharded
        whole = full_tensor(tensor).contiguous()
        size = whole.numel() * whole.element_size()
        bucket.append((name, whole))
        del whole, tensor
        held += size
        stats.largest_bytes = max(stats.largest_bytes, size)
        stats.peak_held_bytes = max(stats.peak_held_bytes, held)
        if held >= bucket_bytes:
            yield from _drain(bucket, stats)
            held = 0
    yield from _drain(bucket, stats)
    if stats.tensors == 0:
        raise ValueError("stream_weights: no tensors were given")


def _drain(bucket: list[tuple[str, torch.Tensor]], stats: SyncStats) -> Iterator[tuple[str, torch.Tensor]]:
    """Hand on and forget the bucket's tensors, oldest first."""
    bucket.reverse()
    while bucket:
        name, tensor = bucket.pop()
        stats.tensors += 1
        stats.bytes += tensor.numel() * tensor.element_size()
        yield name, tensor
        del tensor
