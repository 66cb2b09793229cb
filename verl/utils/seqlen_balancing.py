"""Dynamic micro-batches: group rows so that each micro-batch holds at most a token budget.

A row's cost is its number of real tokens (``attention_mask.sum(-1)``). Rows are spread over the
fewest micro-batches that fit the budget with a longest-first greedy (each row goes to the
currently lightest micro-batch), so micro-batches come out balanced. A row longer than the budget
gets a micro-batch of its own (the only way a micro-batch exceeds the budget; logged). With a
process group, all ranks agree on the same number of micro-batches (FSDP and DDP need every rank
to run the same number of forward/backward passes); that agreement is an ``all_reduce`` of a
tensor on the caller's compute device.
"""

from __future__ import annotations

import heapq
import logging
from typing import Optional

import torch
import torch.distributed as dist

from verl.protocol import DataProto

logger = logging.getLogger(__name__)


def _greedy_partition(costs: list[int], k: int) -> list[list[int]]:
    """Split row indices into k groups, longest row first into the lightest group."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0, g) for g in range(k)]
    groups: list[list[int]] = [[] for _ in range(k)]
    for i in order:
        load, g = heapq.heappop(heap)
        groups[g].append(i)
        heapq.heappush(heap, (load + costs[i], g))
    return [sorted(g) for g in groups]


def _fits(groups: list[list[int]], costs: list[int], max_token_len: int) -> bool:
    """Every group within the budget, or a single row (a row longer than the budget stands alone)."""
    return all(len(g) == 1 or sum(costs[i] for i in g) <= max_token_len for g in groups)


def _smallest_k(costs: list[int], max_token_len: int, start: int) -> int:
    k = start
    while k < len(costs) and not _fits(_greedy_partition(costs, k), costs, max_token_len):
        k += 1
    return k


def _all_reduce_max(value: int, group: Optional[dist.ProcessGroup], device: torch.device | str) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t.item())


def partition_by_tokens(costs: list[int], max_token_len: int, dp_group: Optional[dist.ProcessGroup] = None,
                        device: torch.device | str = "cpu") -> list[list[int]]:
    """Row-index groups (each sorted) covering ``range(len(costs))``, each within ``max_token_len``
    tokens or holding a single row longer than it.

    With ``torch.distributed`` initialised (and ``dp_group`` or the default group larger than 1)
    every rank returns the same number of groups; ``device`` is the compute device, where the
    tensor of that agreement's ``all_reduce`` is built.
    """
    if max_token_len <= 0:
        raise ValueError(f"max_token_len must be positive, got {max_token_len}")
    n = len(costs)
    if n == 0:
        raise ValueError("partition_by_tokens: no rows")
    too_long = [c for c in costs if c > max_token_len]
    if too_long:
        logger.warning("%d row(s) of up to %d tokens exceed the micro-batch budget of %d tokens; each runs as a "
                       "micro-batch of its own", len(too_long), max(too_long), max_token_len)
    clipped = sum(min(c, max_token_len) for c in costs)
    k = _smallest_k(costs, max_token_len, max(1, len(too_long), -(-clipped // max_token_len)))
    if dist.is_initialized() and dist.get_world_size(dp_group) > 1:
        while True:  # ends: k only grows and is bounded by the row count
            k_all = _all_reduce_max(k, dp_group, device)
            if k_all > n:
                raise ValueError(f"ranks need {k_all} micro-batches but this rank has only {n} rows; give every "
                                 "rank the same number of rows")
            k = _smallest_k(costs, max_token_len, k_all)
            if _all_reduce_max(int(k != k_all), dp_group, device) == 0:
                break
    return _greedy_partition(costs, k)


def rearrange_micro_batches(batch: DataProto, max_token_len: int, dp_group: Optional[dist.ProcessGroup] = None,
                            device: torch.device | str = "cpu") -> tuple[list[DataProto], list[list[int]]]:
    """Split ``batch`` into token-budgeted micro-batches.

    ``batch`` needs an ``attention_mask`` (B, T); ``device`` is the compute device (for the ranks'
    agreement on the number of micro-batches; the mask itself may live elsewhere, e.g. the CPU). Returns (micro-batches, index order): micro-batch
    j holds rows ``idx_order[j]`` of ``batch``. Use ``restore_order`` to put per-row outputs of
    the micro-batches back into the original row order.
    """
    if "attention_mask" not in batch.batch:
        raise KeyError("rearrange_micro_batches: the batch needs an 'attention_mask' tensor")
    mask = batch.batch["attention_mask"]
    costs = [int(c) for c in mask.sum(dim=-1).tolist()]
    groups = partition_by_tokens(costs, max_token_len, dp_group, device=device)
    return [batch[g] for g in groups], groups


def restore_order(outputs: list[torch.Tensor], idx_order: list[list[int]]) -> torch.Tensor:
    """Concatenate per-micro-batch outputs (rows in ``idx_order``) back into original row order."""
    flat = [i for group in idx_order for i in group]
    cat = torch.cat(outputs, dim=0)
    if cat.shape[0] != len(flat):
        raise ValueError(f"restore_order: outputs have {cat.shape[0]} rows, idx_order names {len(flat)}")
    reverse = torch.empty(len(flat), dtype=torch.long)
    reverse[torch.tensor(flat, dtype=torch.long)] = torch.arange(len(flat))
    return cat[reverse.to(cat.device)]


def split_micro_batches(batch: DataProto, micro_batch_size: Optional[int], use_dynamic_bsz: bool,
                        max_token_len: Optional[int], dp_group: Optional[dist.ProcessGroup] = None,
                        device: torch.device | str = "cpu") -> tuple[list[DataProto], Optional[list[list[int]]]]:
    """Micro-batches of ``batch``: fixed ``micro_batch_size`` rows, or token-budgeted when ``use_dynamic_bsz``.

    ``device``: the compute device, for the collective of the token-budgeted split.

    Returns (micro-batches, idx_order); idx_order is None for fixed micro-batches (rows stay in
    order) and the ``rearrange_micro_batches`` order otherwise.
    """
    if use_dynamic_bsz:
        if max_token_len is None:
            raise ValueError("use_dynamic_bsz needs a max_token_len")
        return rearrange_micro_batches(batch, int(max_token_len), dp_group, device)
    if micro_batch_size is None or int(micro_batch_size) <= 0:
        raise ValueError(f"micro-batch size must be a positive int, got {micro_batch_size!r}")
    return batch.split(int(micro_batch_size)), None


def per_rank_mini_batch_size(n_rows: int, global_mini_batch_size: int, dp_size: int, micro_batch_size: Optional[int],
                             where: str) -> int:
    """The per-rank mini-batch size, after checking that the batch splits evenly.

    ``global_mini_batch_size`` must divide by ``dp_size``, the rank's ``n_rows`` by the per-rank
    mini-batch, and (fixed micro-batches) the mini-batch by ``micro_batch_size``. Uneven splits
    would silently weight some optimizer steps differently, so they are errors.
    """
    if global_mini_batch_size <= 0 or global_mini_batch_size % dp_size:
        raise ValueError(f"{where}.ppo_mini_batch_size={global_mini_batch_size} must be a positive multiple of the "
                         f"data-parallel size {dp_size}")
    mini = global_mini_batch_size // dp_size
    if n_rows % mini:
        raise ValueError(f"{where}: this rank has {n_rows} rows, not a multiple of its mini-batch of {mini} "
                         f"(ppo_mini_batch_size={global_mini_batch_size} / {dp_size} ranks); choose a "
                         "ppo_mini_batch_size that divides the number of trajectories per step")
    if micro_batch_size is not None and (micro_batch_size <= 0 or mini % micro_batch_size):
        raise ValueError(f"{where}: the per-rank mini-batch {mini} is not a multiple of "
                         f"ppo_micro_batch_size_per_gpu={micro_batch_size}")
    return mini
