"""Loss aggregation, the PPO policy loss (behind a registry), the value loss and the entropy loss.

Shapes: B = rows, R = response length, V = vocabulary size. Per-token inputs are (B, R) and
``response_mask`` is the 0/1 loss mask (B, R): 1 only on tokens the policy sampled.

Micro-batching: by default each call normalises by its own tokens / rows. To make micro-batch
losses add up to the mini-batch loss, pass ``batch_num_tokens`` (loss tokens in the mini-batch,
for "token-mean") or ``global_batch_size`` (non-empty rows in the mini-batch, for the seq-mean
modes).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from verl.utils import torch_functional as F

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

POLICY_LOSS_REGISTRY: dict[str, PolicyLossFn] = {}


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: register a policy loss under ``name`` (a second, different one raises)."""

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        known = POLICY_LOSS_REGISTRY.get(name)
        if known is not None and known is not fn:
            raise ValueError(f"policy loss '{name}' is already registered to {known.__qualname__}")
        POLICY_LOSS_REGISTRY[name] = fn
        return fn

    return decorator


def get_policy_loss_fn(name: str) -> PolicyLossFn:
    """The policy loss registered as ``name``; ValueError listing the valid names otherwise."""
    if name not in POLICY_LOSS_REGISTRY:
        raise ValueError(f"unknown policy loss '{name}'; valid: {sorted(POLICY_LOSS_REGISTRY)}")
    return POLICY_LOSS_REGISTRY[name]


def _safe_divide(total: torch.Tensor, denom) -> torch.Tensor:
    """total / denom, or 0 (still attached to the graph) when denom is 0."""
    denom = torch.as_tensor(denom, dtype=total.dtype, device=total.device)
    if denom.item() == 0:
        return total * 0.0
    return total / denom


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    *,
    batch_num_tokens: Optional[float] = None,
    global_batch_size: Optional[float] = None,
) -> torch.Tensor:
    """Reduce a (B, R) per-token loss to a scalar.

    - "token-mean": sum over masked tokens / number of masked tokens;
    - "seq-mean-token-sum": mean over rows of each row's masked token sum;
    - "seq-mean-token-mean": mean over rows of each row's masked token mean;
    - "seq-mean-token-sum-norm": "seq-mean-token-sum" divided by R (= loss_mat.shape[-1]),
      a length normaliser that does not depend on how long the responses are (Dr.GRPO).

    Rows whose mask is all 0 are left out of the seq means. An empty selection gives 0.
    """
    if loss_mat.shape != loss_mask.shape or loss_mat.dim() != 2:
        raise ValueError(
            f"agg_loss: loss_mat {tuple(loss_mat.shape)} and loss_mask {tuple(loss_mask.shape)} must share one (B, R)"
        )
    if loss_agg_mode == "token-mean":
        denom = loss_mask.sum() if batch_num_tokens is None else batch_num_tokens
        return _safe_divide(F.masked_sum(loss_mat, loss_mask), denom)
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"agg_loss: unknown loss_agg_mode '{loss_agg_mode}'; valid: {list(LOSS_AGG_MODES)}")
    tokens_per_row = loss_mask.sum(dim=-1)
    row_sums = F.masked_sum(loss_mat, loss_mask, axis=-1)
    if loss_agg_mode == "seq-mean-token-mean":
        row_losses = row_sums / (tokens_per_row + 1e-8)
    else:
        row_losses = row_sums
    rows_kept = (tokens_per_row > 0).to(loss_mat.dtype)
    denom = rows_kept.sum() if global_batch_size is None else global_batch_size
    loss = _safe_divide(F.masked_sum(row_losses, rows_kept), denom)
    if loss_agg_mode == "seq-mean-token-sum-norm":
        loss = loss / loss_mat.shape[-1]
    return loss


@register_policy_loss("vanilla")
def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    *,
    batch_num_tokens: Optional[float] = None,
    global_batch_size: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO surrogate with dual clip.

    old_log_prob, log_prob, advantages, response_mask: (B, R). With ratio = exp(clamp(log_prob -
    old_log_prob, -20, 20)), the per-token loss is max(-A * ratio, -A * clip(ratio, 1 - low,
    1 + high)); for A < 0 it is further capped at -A * clip_ratio_c (dual clip, which bounds the
    loss when the ratio is very large). Returns (aggregated loss, metrics) where the metrics are
    detached scalars: "clipfrac" (share of tokens where the clipped term wins), "ppo_kl" (masked
    mean of old - new log-prob), "clipfrac_lower" (share of A < 0 tokens where the dual clip bites).
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"compute_policy_loss: clip_ratio_c must be > 1.0 for dual-clip PPO, got {clip_ratio_c}")
    shapes = {tuple(t.shape) for t in (old_log_prob, log_prob, advantages, response_mask)}
    if len(shapes) != 1:
        raise ValueError(f"compute_policy_loss: inputs must share one (B, R) shape, got {sorted(shapes)}")
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(log_ratio)
    ppo_kl = F.masked_mean(-log_ratio, response_mask)

    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    ppo_losses = torch.maximum(unclipped, clipped)
    clipfrac = F.masked_mean(torch.gt(clipped, unclipped).to(log_prob.dtype), response_mask)

    dual_bound = -advantages * clip_ratio_c
    dual_losses = torch.minimum(ppo_losses, dual_bound)
    negative = (advantages < 0).to(log_prob.dtype)
    clipfrac_lower = F.masked_mean(torch.gt(ppo_losses, dual_bound).to(log_prob.dtype) * negative, response_mask)

    pg_losses = torch.where(advantages < 0, dual_losses, ppo_losses)
    pg_loss = agg_loss(
        pg_losses, response_mask, loss_agg_mode, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size
    )
    metrics = {"clipfrac": clipfrac.detach(), "ppo_kl": ppo_kl.detach(), "clipfrac_lower": clipfrac_lower.detach()}
    return pg_loss, metrics


def compute_value_loss(
    vpreds: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float,
    loss_agg_mode: str = "token-mean",
    *,
    batch_num_tokens: Optional[float] = None,
    global_batch_size: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * agg(max((v - R)^2, (clip(v, old - c, old + c) - R)^2)).

    vpreds (new values), returns, values (old values), response_mask: (B, R). Returns
    (loss, clipfrac) with clipfrac the masked share of tokens where the clipped term is larger.
    """
    clipped_preds = F.clip_by_value(vpreds, values - cliprange_value, values + cliprange_value)
    losses_unclipped = (vpreds - returns) ** 2
    losses_clipped = (clipped_preds - returns) ** 2
    losses = torch.maximum(losses_unclipped, losses_clipped)
    vf_loss = 0.5 * agg_loss(
        losses, response_mask, loss_agg_mode, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size
    )
    vf_clipfrac = F.masked_mean(torch.gt(losses_clipped, losses_unclipped).to(vpreds.dtype), response_mask)
    return vf_loss, vf_clipfrac.detach()


def compute_entropy_loss(
    logits: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    *,
    batch_num_tokens: Optional[float] = None,
    global_batch_size: Optional[float] = None,
) -> torch.Tensor:
    """Aggregated entropy of the policy. logits: (B, R, V); response_mask: (B, R). Returns a scalar.

    The actor subtracts ``entropy_coeff * entropy`` from its loss to reward exploration.
    """
    entropy = F.entropy_from_logits(logits)
    return agg_loss(
        entropy, response_mask, loss_agg_mode, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size
    )
