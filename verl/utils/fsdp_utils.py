"""Data-parallel wrapping of HF models and the state-dict plumbing around it.

Strategies:
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on every decoder layer and the root.
  Works on cuda+nccl and, with torch >= 2.13, on cpu+gloo (forward, backward, grad clip,
  AdamW step, full and sharded state dicts were checked with 2 ranks).
- ``ddp``: ``DistributedDataParallel`` (replicated weights, all-reduced gradients).
- ``none``: the bare module; only valid with one process.

Loading under FSDP over several ranks: only rank 0 reads the weights; the other ranks build the
model on the meta device, every rank shards it, and ``fill_from_rank0`` broadcasts rank 0's full
state dict into the shards (see ``loads_on_rank0_only``).

Checkpoints of model + optimizer go through ``torch.distributed.checkpoint`` (DCP): every rank
writes its own ``__<rank>_0.distcp`` file (its shard under FSDP), and the checkpoint can be
loaded again with the same or another world size.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

logger = logging.getLogger(__name__)

STRATEGIES = ("fsdp", "ddp", "none")


def check_strategy(strategy: str, world_size: int) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "none" and world_size > 1:
        raise ValueError(f"strategy=none cannot synchronise gradients over {world_size} processes; use fsdp or ddp")
    return strategy


def _layer_classes(module: torch.nn.Module) -> set[str]:
    names = getattr(module, "_no_split_modules", None) or []
    return set(names)


def wrap_model(module: torch.nn.Module, strategy: str, device: str, *, world_size: int, trainable: bool = True,
               mixed_precision_dtype: Optional[torch.dtype] = None, reshard_after_forward: bool = True,
               cpu_offload: bool = False) -> torch.nn.Module:
    """Wrap ``module`` for data-parallel training (or sharded inference when not ``trainable``).

    mixed_precision_dtype: FSDP computes in this dtype and reduces gradients in float32 (cuda).
    cpu_offload: FSDP keeps parameters, gradients and the optimizer step on the CPU (cuda only;
    on cpu everything is there already).
    """
    check_strategy(strategy, world_size)
    if strategy == "fsdp":
        mesh = init_device_mesh(device, (world_size,))
        mp = (MixedPrecisionPolicy(param_dtype=mixed_precision_dtype, reduce_dtype=torch.float32)
              if mixed_precision_dtype is not None else MixedPrecisionPolicy())
        offload = CPUOffloadPolicy() if (cpu_offload and device == "cuda") else OffloadPolicy()
        kwargs = dict(mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp, offload_policy=offload)
        layer_classes = _layer_classes(module)
        if not layer_classes:
            raise ValueError(f"{type(module).__name__} names no _no_split_modules; cannot pick FSDP units")
        n_units = 0
        for sub in module.modules():
            if type(sub).__name__ in layer_classes:
                fully_shard(sub, **kwargs)
                n_units += 1
        fully_shard(module, **kwargs)
        logger.info("FSDP2 over %d ranks on %s: %d layer units + root", world_size, device, n_units)
        return module
    module = module.to(device)
    if strategy == "ddp" and trainable:
        device_ids = [torch.cuda.current_device()] if device == "cuda" else None
        return DDP(module, device_ids=device_ids)
    return module


def loads_on_rank0_only(strategy: str, world_size: int) -> bool:
    """Whether only rank 0 reads a model's weights from disk: FSDP over more than one rank. The
    other ranks build the model on the meta device, and ``fill_from_rank0`` gives every rank its
    shards of rank 0's weights after ``wrap_model``; so one host copy of the full model exists, not
    one per rank."""
    return strategy == "fsdp" and world_size > 1


def _non_persistent_buffers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
    """(full name, owning module, attribute) of every buffer that the state dict leaves out, in
    module order (the same on every rank)."""
    found = []
    for prefix, sub in module.named_modules():
        for name in sorted(sub._non_persistent_buffers_set):
            if sub._buffers.get(name) is not None:
                found.append((f"{prefix}.{name}" if prefix else name, sub, name))
    return found


def _tied_parameters(module: torch.nn.Module) -> list[list[str]]:
    """Groups of parameter names that share one Parameter object (tied embeddings), sorted."""
    names: dict[int, list[str]] = {}
    for prefix, sub in module.named_modules():
        for name, param in sub._parameters.items():
            if param is not None:
                names.setdefault(id(param), []).append(f"{prefix}.{name}" if prefix else name)
    return sorted(sorted(group) for group in names.values() if len(group) > 1)


def fill_from_rank0(module: torch.nn.Module, full_state: Optional[dict[str, torch.Tensor]],
                    device: str, *, cpu_offload: bool = False) -> None:
    """Give an FSDP2 module rank 0's weights on every rank. Collective.

    module: the output of ``wrap_model(..., strategy="fsdp")`` of the same model class and config
    on every rank: on rank 0 built with real weights, elsewhere on the meta device.
    full_state: on rank 0 that model's full ``state_dict()`` taken before ``wrap_model`` (it holds
    the only full copy); None on the other ranks.
    device / cpu_offload: as given to ``wrap_model``. Shards are materialised where FSDP keeps them
    (the CPU under cuda CPU offload, else ``device``), buffers on ``device``.

    Steps: ranks other than 0 allocate empty storage for their shards and buffers (``to_empty``);
    ``set_model_state_dict(..., broadcast_from_rank0=True)`` sends every parameter and persistent
    buffer from rank 0, each rank keeping its own shard; the non-persistent buffers (e.g. rotary
    ``inv_freq``), which no state dict holds, are broadcast one by one after a check that every rank
    has the same names, shapes and dtypes. Tied parameters must still be tied afterwards (checked).
    """
    rank = dist.get_rank()
    if (full_state is None) != (rank != 0):
        raise ValueError(f"fill_from_rank0: rank {rank} must pass "
                         f"{'its full state dict' if rank == 0 else 'full_state=None'}")
    if not is_fsdp(module):
        raise ValueError(f"fill_from_rank0: {type(module).__name__} is not FSDP2-sharded (call wrap_model first)")
    tied = _tied_parameters(module)
    if rank != 0:
        module.to_empty(device="cpu" if (cpu_offload and device == "cuda") else device)
        for sub in module.modules():  # FSDP keeps buffers on the compute device, offload or not
            for name, buf in sub._buffers.items():
                if buf is not None and buf.device.type != torch.device(device).type:
                    sub._buffers[name] = buf.to(device)
    set_model_state_dict(module, full_state if rank == 0 else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    buffers = _non_persistent_buffers(module)
    layout = [(name, tuple(sub._buffers[attr].shape), str(sub._buffers[attr].dtype)) for name, sub, attr in buffers]
    layouts: list = [None] * dist.get_world_size()
    dist.all_gather_object(layouts, layout)
    if any(other != layouts[0] for other in layouts):
        raise RuntimeError(f"fill_from_rank0: non-persistent buffers differ between ranks: rank 0 has "
                           f"{layouts[0]}, rank {rank} has {layout}")
    for _, sub, attr in buffers:
        dist.broadcast(sub._buffers[attr], src=0)
    if _tied_parameters(module) != tied:
        raise RuntimeError(f"fill_from_rank0: tied parameters {tied} came apart while materialising "
                           f"(now {_tied_parameters(module)})")


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside a DDP wrapper (FSDP2 modules are the model itself)."""
    return module.module if isinstance(module, DDP) else module


def is_fsdp(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def full_state_dict(module: torch.nn.Module, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict with HF parameter names. Collective under FSDP.

    rank0_only: under FSDP only rank 0 gets the tensors (on cpu) and other ranks get {}; else
    every rank gets every tensor (on the compute device). Tensors are detached.
    """
    if is_fsdp(module):
        options = StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)
        return get_model_state_dict(module, options=options)
    if rank0_only and dist.is_initialized() and dist.get_rank() != 0:
        return {}
    return {k: v.detach() for k, v in unwrap_model(module).state_dict().items()}


def _shard_group(grad: torch.Tensor) -> Optional[dist.ProcessGroup]:
    """The process group over which a sharded (DTensor) gradient's pieces must be summed, else None."""
    if not isinstance(grad, DTensor):
        return None
    mesh = grad.device_mesh
    if mesh.ndim != 1:
        raise ValueError(f"clip_grad_norm: gradients on a {mesh.ndim}-D device mesh are not supported (1-D FSDP only)")
    if all(p.is_replicate() for p in grad.placements):
        return None
    return mesh.get_group()


def grad_norm_squared(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Sum of squared entries of ``grads`` over all ranks' shards, a float64 scalar on ``device``.

    Each rank squares only its local pieces (``DTensor.to_local()``, wherever they live: the CPU
    under FSDP CPU offload) and moves that partial sum to ``device``, the compute device, before
    one ``all_reduce`` per shard group. So the collective never sees a tensor on the offload
    device, which an NCCL group could not reduce.
    """
    local: dict[Optional[dist.ProcessGroup], torch.Tensor] = {}
    for g in grads:
        group = _shard_group(g)
        piece = g.to_local() if isinstance(g, DTensor) else g
        sq = torch.linalg.vector_norm(piece, 2, dtype=torch.promote_types(piece.dtype, torch.float32)).double() ** 2
        sq = sq.to(device)
        local[group] = local[group] + sq if group in local else sq
    total = torch.zeros((), dtype=torch.float64, device=device)
    for group, sq in local.items():
        if group is not None:
            dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=group)
        total = total + sq
    return total


def clip_grad_norm(module: torch.nn.Module, max_norm: float, device: torch.device | str) -> float:
    """Clip gradients to ``max_norm`` (global L2 norm over all ranks' shards); returns the norm before clipping.

    device: the compute device (``verl.utils.distributed.device_of``); the norm is reduced there
    (see ``grad_norm_squared``), then every local gradient piece is scaled in place by
    min(1, max_norm / (norm + 1e-6)) on its own device. A non-finite norm is returned as is and
    the gradients are left unscaled (the caller skips the step).
    """
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norm = grad_norm_squared(grads, torch.device(device)).sqrt()
    value = float(norm)
    if not math.isfinite(value):
        return value
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    with torch.no_grad():
        for g in grads:
            piece = g.to_local() if isinstance(g, DTensor) else g
            piece.mul_(coef.to(device=piece.device, dtype=piece.dtype))
    return value


@contextlib.contextmanager
def gradient_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Under DDP, skip the gradient all-reduce of this backward when ``sync`` is False.

    FSDP2 modules always reduce-scatter each backward, so gradient memory stays sharded during
    accumulation; the result is the same.
    """
    if not sync and isinstance(module, DDP):
        with module.no_sync():
            yield
    else:
        yield


def _dcp_state(module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> dict[str, Any]:
    """``{"model": ...}`` (+ ``"optimizer"``) state dicts in the layout DCP saves and loads in place."""
    if optimizer is None:
        return {"model": get_model_state_dict(module)}
    model_sd, optim_sd = get_state_dict(module, optimizer)
    return {"model": model_sd, "optimizer": optim_sd}


def save_model_optimizer(folder: str, module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> None:
    """Write model (+ optimizer) state with DCP into ``folder`` (one file per rank + .metadata). Collective."""
    dcp.save(_dcp_state(module, optimizer), checkpoint_id=folder)


def load_model_optimizer(folder: str, module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> None:
    """Load what ``save_model_optimizer`` wrote into ``module`` (+ ``optimizer``). Collective."""
    state = _dcp_state(module, optimizer)
    dcp.load(state, checkpoint_id=folder)
    if optimizer is None:
        set_model_state_dict(module, state["model"])
    else:
        set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
