"""Masked statistics and small tensor helpers shared by the losses, the actor and the rollout.

Shapes: B = rows, R = response length, T = sequence length, V = vocabulary size.
Masks are 0/1 tensors (float, int or bool) broadcastable to the values they mask.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from verl.utils.chunked_logprob import DEFAULT_CHUNK_SIZE, log_probs_and_entropy

Axis = Optional[Union[int, tuple[int, ...]]]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, axis: Axis = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1.

    values, mask: same shape (any). Returns a scalar (``axis=None``) or ``values`` reduced over
    ``axis``. Masked-out entries are zeroed before the product, so a NaN or inf under a 0 of the
    mask cannot leak into the sum.
    """
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))
    return (kept * mask).sum(dim=axis)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: Axis = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1: masked_sum / (mask count + 1e-8).

    values, mask: same shape. Returns a scalar or ``values`` reduced over ``axis``; an all-zero
    mask gives 0 (not NaN).
    """
    return masked_sum(values, mask, axis) / (mask.sum(dim=axis) + 1e-8)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over all entries where ``mask`` is 1 (a scalar).

    values, mask: same shape. ``unbiased`` applies Bessel's correction n / (n - 1) with
    n = mask.sum(); it needs at least two unmasked entries and raises ValueError otherwise.
    """
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count == 0:
            raise ValueError("masked_var(unbiased=True): the mask selects no entry")
        if count == 1:
            raise ValueError("masked_var(unbiased=True): the mask selects a single entry (n / (n - 1) is undefined)")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - masked mean) / sqrt(unbiased masked var + 1e-8), same shape as ``values``.

    With ``shift_mean=False`` the mean is added back (only the scale changes). Entries under a 0
    of the mask are transformed too; callers multiply by the mask when they need zeros there.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask, unbiased=True)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def clip_by_value(
    x: torch.Tensor, tensor_min: Union[float, torch.Tensor], tensor_max: Union[float, torch.Tensor]
) -> torch.Tensor:
    """Element-wise clamp of ``x`` into [tensor_min, tensor_max]; bounds may be tensors shaped like ``x``."""
    lower = torch.as_tensor(tensor_min, dtype=x.dtype, device=x.device)
    upper = torch.as_tensor(tensor_max, dtype=x.dtype, device=x.device)
    return torch.maximum(torch.minimum(x, upper), lower)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int = DEFAULT_CHUNK_SIZE
                         ) -> torch.Tensor:
    """log softmax(logits)[label] for every position.

    logits: (..., V); labels: (...) integer ids. Returns (...) in the dtype of ``logits``,
    computed in float32 (float64 for float64 logits) ``chunk_rows`` positions at a time, so the
    extra memory is (chunk_rows, V) floats (see ``verl.utils.chunked_logprob``).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logprobs_from_logits: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree"
        )
    log_probs, _ = log_probs_and_entropy(logits, labels, calculate_entropy=False, chunk_size=chunk_rows)
    return log_probs.to(logits.dtype)


def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dimension.

    logits: (..., V). Returns (...) in float32 (float64 for float64 logits): logsumexp(logits) -
    sum(softmax(logits) * logits), ``chunk_rows`` positions at a time.
    """
    labels = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    _, entropy = log_probs_and_entropy(logits, labels, calculate_entropy=True, chunk_size=chunk_rows)
    return entropy


def compute_position_id_with_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids from an attention mask: cumsum(mask) - 1, clipped at 0.

    mask: (B, T) of 0/1 (left or right padding). Returns (B, T) long; the first real token is at
    position 0 and left padding also gets 0.
    """
    return torch.clamp(torch.cumsum(mask.long(), dim=-1) - 1, min=0)


def get_response_mask(
    response_ids: torch.Tensor, eos_token: Union[int, Sequence[int]], dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """1 up to and including the first end-of-sequence token of each row, 0 after it.

    response_ids: (B, R) ids; ``eos_token``: one id or several. Returns (B, R) of ``dtype``.
    A row without an end token is all ones.
    """
    eos_ids = [eos_token] if isinstance(eos_token, int) else list(eos_token)
    if not eos_ids:
        raise ValueError("get_response_mask: eos_token must name at least one token id")
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    # number of end tokens strictly before each position
    before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()
    return (before == 0).to(dtype)


def pad_2d_list_to_length(
    rows: Sequence[Sequence[int]], pad_id: int, max_length: Optional[int] = None, left_pad: bool = False
) -> torch.Tensor:
    """Pad a ragged list of id lists into a (len(rows), L) LongTensor.

    L = ``max_length`` when given (a longer row raises ValueError), else the longest row.
    Rows are right-padded with ``pad_id``, or left-padded when ``left_pad``.
    """
    longest = max((len(r) for r in rows), default=0)
    if max_length is None:
        width = longest
    else:
        if max_length < 0:
            raise ValueError(f"pad_2d_list_to_length: max_length must be >= 0, got {max_length}")
        if longest > max_length:
            raise ValueError(f"pad_2d_list_to_length: a row has {longest} ids, more than max_length={max_length}")
        width = max_length
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) == 0:
            continue
        values = torch.as_tensor(list(row), dtype=torch.long)
        if left_pad:
            out[i, width - len(row):] = values
        else:
            out[i, : len(row)] = values
    return out
