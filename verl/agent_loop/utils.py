"""Build the agent-loop output tensors from per-row token lists.

Layout (B rows, P prompt width, R response width, T = P + R)::

    input_ids       [pad .. pad | prompt ids][response ids | pad .. pad]
    attention_mask  [ 0  ..  0  |    1 ..   ][     1 ..    |  0  ..  0 ]
    response_mask                            [ 1 sampled, 0 observation | 0 .. 0 ]

Prompts are left-padded, responses right-padded, both with ``pad_token_id``. Position ids are
``cumsum(attention_mask) - 1`` clipped at 0 over the whole row.
"""

from __future__ import annotations

from typing import Sequence

import torch

from verl.protocol import DataProto
from verl.utils.torch_functional import compute_position_id_with_mask, pad_2d_list_to_length


def prompts_from_batch(batch: DataProto) -> list[list[int]]:
    """The prompt ids of each row, without padding.

    Uses the non-tensor ``raw_prompt_ids`` when the batch has it, else the ``input_ids`` entries
    where ``attention_mask`` is 1.
    """
    if "raw_prompt_ids" in batch.non_tensor_batch:
        return [[int(t) for t in ids] for ids in batch.non_tensor_batch["raw_prompt_ids"]]
    missing = [k for k in ("input_ids", "attention_mask") if k not in batch.batch]
    if missing:
        raise KeyError(f"prompts_from_batch: the batch has neither raw_prompt_ids nor the tensors {missing}")
    input_ids, mask = batch.batch["input_ids"], batch.batch["attention_mask"]
    if input_ids.shape != mask.shape:
        raise ValueError(
            f"prompts_from_batch: input_ids {tuple(input_ids.shape)} and attention_mask {tuple(mask.shape)} differ"
        )
    return [ids[m.bool()].tolist() for ids, m in zip(input_ids.cpu(), mask.cpu())]


def assemble_rollout(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    response_mask: Sequence[Sequence[int]],
    response_log_probs: Sequence[Sequence[float]],
    pad_token_id: int,
    prompt_length: int | None = None,
    response_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad per-row lists into the agent-loop output tensors.

    Args:
        prompt_ids: B lists of prompt ids (unpadded).
        response_ids: B lists: everything after the prompt (sampled tokens and observations).
        response_mask: B lists of 0/1, same lengths as ``response_ids``; 1 = sampled by the policy.
        response_log_probs: B lists of the sampling log-probs, same lengths (ignored where the
            mask is 0: written as 0).
        pad_token_id: id used for both paddings.
        prompt_length: P; default the longest prompt. A longer prompt raises ValueError.
        response_length: R; default the longest response (at least 1). A longer one raises.

    Returns:
        ``prompts`` (B, P), ``responses`` (B, R), ``input_ids`` (B, T), ``attention_mask`` (B, T),
        ``position_ids`` (B, T), ``response_mask`` (B, R) (all int64) and ``rollout_log_probs``
        (B, R) float32.
    """
    rows = len(prompt_ids)
    for name, seq in (("response_ids", response_ids), ("response_mask", response_mask),
                      ("response_log_probs", response_log_probs)):
        if len(seq) != rows:
            raise ValueError(f"assemble_rollout: {name} has {len(seq)} rows, prompt_ids has {rows}")
    for i in range(rows):
        n = len(response_ids[i])
        if len(response_mask[i]) != n or len(response_log_probs[i]) != n:
            raise ValueError(
                f"assemble_rollout: row {i} has {n} response ids, {len(response_mask[i])} mask values and "
                f"{len(response_log_probs[i])} log-probs; they must be equal"
            )
        if any(m not in (0, 1) for m in response_mask[i]):
            raise ValueError(f"assemble_rollout: row {i} response_mask has values other than 0/1")
    if response_length is None:
        response_length = max([1] + [len(r) for r in response_ids])

    prompts = pad_2d_list_to_length(prompt_ids, pad_token_id, prompt_length, left_pad=True)
    prompt_mask = pad_2d_list_to_length([[1] * len(p) for p in prompt_ids], 0, prompts.shape[1], left_pad=True)
    responses = pad_2d_list_to_length(response_ids, pad_token_id, response_length)
    resp_attention = pad_2d_list_to_length([[1] * len(r) for r in response_ids], 0, response_length)
    resp_mask = pad_2d_list_to_length(response_mask, 0, response_length)
    log_probs = torch.zeros(rows, response_length, dtype=torch.float32)
    for i, lps in enumerate(response_log_probs):
        if len(lps):
            log_probs[i, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
    log_probs = torch.where(resp_mask.bool(), log_probs, torch.zeros_like(log_probs))

    attention_mask = torch.cat([prompt_mask, resp_attention], dim=1)
    return {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask),
        "response_mask": resp_mask,
        "rollout_log_probs": log_probs,
    }
