"""Advantage estimators behind a name registry that is also the trainer's dispatch.

Shapes: B = rows, R = response length. ``token_level_rewards`` and ``response_mask`` are (B, R);
the outcome estimators read a row's score as ``token_level_rewards.sum(-1)`` (the reward sits on
the last policy token). ``index`` is the per-row group id (the non-tensor ``uid`` column): a
numpy array or list of B hashable values. Every estimator returns ``(advantages, returns)``,
both (B, R).

An estimator says what it needs by the names of its parameters; ``register_adv_est`` reads them
once and the trainer derives everything else from that record (``AdvantageEstimator``):

- batch columns, (B, R) tensors: ``token_level_rewards``, ``response_mask``, ``values`` (the
  critic's values: the run builds a critic), ``ref_log_prob`` (the reference policy's log-probs:
  the run builds a reference), ``old_log_probs``;
- ``index``: the group id of each row (the non-tensor ``uid`` column, one id per prompt);
- any other parameter is an option read from the ``algorithm`` config section under its own name
  (``gamma``, ``lam``, ``norm_adv_by_std_in_grpo``, ...); a parameter with a default may be absent
  there.

The built-in estimators take:

==========================  =============================================================
gae                         token_level_rewards, values, response_mask, gamma, lam
grpo                        token_level_rewards, response_mask, index, epsilon,
                            norm_adv_by_std_in_grpo
reinforce                   token_level_rewards, response_mask
reinforce_plus_plus         token_level_rewards, response_mask, gamma
rloo                        token_level_rewards, response_mask, index, epsilon
==========================  =============================================================
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from verl.utils import torch_functional as F

AdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]

# Parameter names an estimator may take that the trainer fills from the batch.
BATCH_INPUTS = ("token_level_rewards", "response_mask", "values", "ref_log_prob", "old_log_probs")
# The parameter that receives the per-row group ids (the batch's non-tensor ``uid`` column).
GROUP_INPUT = "index"


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator and what it needs, read from its signature at registration.

    ``batch_inputs``: the batch columns it takes; ``needs_groups``: whether it takes ``index``;
    ``options``: its other parameters (read from the ``algorithm`` config), and
    ``required_options`` those without a default.
    """

    name: str
    fn: AdvantageFn
    batch_inputs: tuple[str, ...]
    needs_groups: bool
    options: tuple[str, ...]
    required_options: tuple[str, ...]

    @property
    def needs_critic(self) -> bool:
        """The run must build a critic: the estimator reads its ``values``."""
        return "values" in self.batch_inputs

    @property
    def needs_reference(self) -> bool:
        """The run must build a reference policy: the estimator reads ``ref_log_prob``."""
        return "ref_log_prob" in self.batch_inputs

    def __call__(self, batch: dict[str, torch.Tensor], index: Union[np.ndarray, Sequence[Any], None],
                 options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Call the estimator with its batch columns, group ids and options.

        ``batch``: the batch's tensors by column name (each (B, R)); ``index``: B group ids, or
        None when the batch has none; ``options``: the ``algorithm`` config values by name.
        A missing column, group id or required option raises KeyError naming it.
        """
        kwargs: dict[str, Any] = {}
        for col in self.batch_inputs:
            if col not in batch:
                raise KeyError(f"advantage estimator {self.name!r} needs the batch column {col!r}")
            kwargs[col] = batch[col]
        if self.needs_groups:
            if index is None:
                raise KeyError(f"advantage estimator {self.name!r} needs the non-tensor 'uid' column "
                               "(one group id per prompt)")
            kwargs[GROUP_INPUT] = index
        for opt in self.options:
            if opt in options and options[opt] is not None:
                kwargs[opt] = options[opt]
            elif opt in self.required_options:
                raise KeyError(f"advantage estimator {self.name!r} needs the option algorithm.{opt}")
        return self.fn(**kwargs)


ADV_ESTIMATOR_REGISTRY: dict[str, AdvantageEstimator] = {}


def describe_estimator(name: str, fn: AdvantageFn) -> AdvantageEstimator:
    """Read what ``fn`` needs from its parameter names (see the module docstring)."""
    batch_inputs, options, required = [], [], []
    needs_groups = False
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"advantage estimator {name!r}: *args/**kwargs cannot say what it needs; "
                            "name each input as a parameter")
        if param.name in BATCH_INPUTS:
            batch_inputs.append(param.name)
        elif param.name == GROUP_INPUT:
            needs_groups = True
        else:
            options.append(param.name)
            if param.default is param.empty:
                required.append(param.name)
    return AdvantageEstimator(name, fn, tuple(batch_inputs), needs_groups, tuple(options), tuple(required))


def register_adv_est(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an advantage estimator under ``name`` (a second, different one raises).

    What the estimator needs is read from its parameter names (module docstring); the function
    itself is returned unchanged.
    """

    def decorator(fn: AdvantageFn) -> AdvantageFn:
        known = ADV_ESTIMATOR_REGISTRY.get(name)
        if known is not None and known.fn is not fn:
            raise ValueError(f"advantage estimator '{name}' is already registered to {known.fn.__qualname__}")
        ADV_ESTIMATOR_REGISTRY[name] = describe_estimator(name, fn)
        return fn

    return decorator


def get_adv_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as ``name`` with what it needs; ValueError listing the valid names."""
    if name not in ADV_ESTIMATOR_REGISTRY:
        raise ValueError(f"unknown advantage estimator '{name}' (algorithm.adv_estimator); "
                         f"valid: {sorted(ADV_ESTIMATOR_REGISTRY)}")
    return ADV_ESTIMATOR_REGISTRY[name]


def get_adv_estimator_fn(name: str) -> AdvantageFn:
    """The function registered as ``name``; ValueError listing the valid names otherwise."""
    return get_adv_estimator(name).fn


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"expected tensors of one (B, R) shape, got {shapes}")


def _group_ids(index: Union[np.ndarray, Sequence[Any]], rows: int, device: torch.device) -> torch.Tensor:
    """Map each row's group id (any hashable) to 0..G-1 in order of first appearance. Returns (B,)."""
    if len(index) != rows:
        raise ValueError(f"index has {len(index)} entries but the batch has {rows} rows")
    ids: dict[Any, int] = {}
    out = [ids.setdefault(key, len(ids)) for key in index]
    return torch.tensor(out, dtype=torch.long, device=device)


def _group_stats(scores: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row group size, group mean and unbiased group std. scores, group: (B,) -> three (B,)."""
    n_groups = int(group.max()) + 1 if group.numel() else 0
    zeros = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device)
    count = zeros.clone().index_add_(0, group, torch.ones_like(scores))
    total = zeros.clone().index_add_(0, group, scores)
    mean = total / count
    sq_dev = torch.zeros_like(total).index_add_(0, group, (scores - mean[group]) ** 2)
    std = torch.sqrt(sq_dev / (count - 1).clamp(min=1))
    return count[group], mean[group], std[group]


def _masked_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: Union[float, torch.Tensor],
                lam: Union[float, torch.Tensor]) -> torch.Tensor:
    """Unwhitened GAE advantages (B, R), walking backwards over the positions where ``mask`` is 1.

    rewards, values, mask: (B, R), mask 0/1 in the values' dtype. delta_t = r_t + gamma * V_next -
    V_t and A_t = delta_t + gamma * lam * A_next, where V_next and A_next come from the next
    position with mask 1 (0 if none). A position with mask 0 is skipped: it carries the next value
    and advantage across, and its entry is that carried advantage.
    """
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    reversed_adv = []
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        m = mask[:, t]
        next_value = values[:, t] * m + (1 - m) * next_value
        next_adv = adv_t * m + (1 - m) * next_adv
        reversed_adv.append(next_adv)
    return torch.stack(reversed_adv[::-1], dim=1)


@register_adv_est("gae")
def compute_gae_advantage_return(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: Union[float, torch.Tensor],
    lam: Union[float, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (PPO with a critic).

    token_level_rewards, values, response_mask: (B, R). Walking backwards,
    delta_t = r_t + gamma * V_next - V_t and A_t = delta_t + gamma * lam * A_next, where V_next and
    A_next come from the next position with response_mask 1: positions with mask 0 (observation
    tokens inside a response, padding) are skipped, carrying the next value and advantage across
    them. Returns (advantages whitened over the mask, returns = unwhitened advantages + values).
    """
    _check_same_shape(token_level_rewards=token_level_rewards, values=values, response_mask=response_mask)
    with torch.no_grad():
        advantages = _masked_gae(token_level_rewards, values, response_mask.to(values.dtype), gamma, lam)
        returns = advantages + values
        advantages = F.masked_whiten(advantages, response_mask)
    return advantages, returns


@register_adv_est("grpo")
def compute_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Union[np.ndarray, Sequence[Any]],
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: (score - group mean) / (unbiased group std + epsilon), broadcast over masked tokens.

    token_level_rewards, response_mask: (B, R); index: B group ids. A group of one row uses mean 0
    and std 1. With ``norm_adv_by_std_in_grpo=False`` only the mean is subtracted (Dr.GRPO).
    Returns (adv, adv), each (B, R) and 0 where the mask is 0.
    """
    _check_same_shape(token_level_rewards=token_level_rewards, response_mask=response_mask)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        count, mean, std = _group_stats(scores, _group_ids(index, scores.shape[0], scores.device))
        single = count == 1
        mean = torch.where(single, torch.zeros_like(mean), mean)
        std = torch.where(single, torch.ones_like(std), std)
        adv = scores - mean
        if norm_adv_by_std_in_grpo:
            adv = adv / (std + epsilon)
        adv = adv.unsqueeze(-1) * response_mask
    return adv, adv


@register_adv_est("reinforce")
def compute_reinforce_outcome_advantage(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain REINFORCE: the raw outcome score on every masked token; no baseline, no normalisation.

    token_level_rewards, response_mask: (B, R). Returns (adv, adv), each (B, R).
    """
    _check_same_shape(token_level_rewards=token_level_rewards, response_mask=response_mask)
    with torch.no_grad():
        adv = token_level_rewards.sum(dim=-1, keepdim=True) * response_mask
    return adv, adv


@register_adv_est("reinforce_plus_plus")
def compute_reinforce_plus_plus_outcome_advantage(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: Union[float, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted return-to-go over the policy tokens, whitened over the batch's mask.

    token_level_rewards, response_mask: (B, R). Walking backwards over the positions with mask 1,
    G_t = r_t + gamma * G_next, where G_next is the return of the next position with mask 1 (0 if
    none). Positions with mask 0 (observation tokens between turns, trailing padding) are not steps
    of the policy: their return is 0, the running return is carried across them unchanged (no
    discount, no reset), and a reward placed on them is not credited. So an outcome reward on the
    last policy token reaches every policy token before an ``<information>`` block, as in verl
    0.9.1 (a mask 0 inside a response is an observation, not the end of the episode).
    Returns (whitened G * mask, G), each (B, R).
    """
    _check_same_shape(token_level_rewards=token_level_rewards, response_mask=response_mask)
    with torch.no_grad():
        # G is GAE with zero values and lambda 1; its carried entries on mask 0 are zeroed
        mask = response_mask.to(token_level_rewards.dtype)
        returns = _masked_gae(token_level_rewards, torch.zeros_like(token_level_rewards), mask, gamma, 1.0) * mask
        advantages = F.masked_whiten(returns, response_mask) * response_mask
    return advantages, returns


@register_adv_est("rloo")
def compute_rloo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Union[np.ndarray, Sequence[Any]],
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO: score minus the mean of the other rows of its group, i.e. (score - mean) * n / (n - 1).

    token_level_rewards, response_mask: (B, R); index: B group ids. A group of one row keeps its
    raw score (baseline 0). ``epsilon`` is accepted for a uniform group-estimator signature and
    unused. Returns (adv, adv), each (B, R).
    """
    _check_same_shape(token_level_rewards=token_level_rewards, response_mask=response_mask)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        count, mean, _ = _group_stats(scores, _group_ids(index, scores.shape[0], scores.device))
        scale = count / (count - 1).clamp(min=1)
        adv = torch.where(count > 1, scores * scale - mean * scale, scores)
        adv = adv.unsqueeze(-1) * response_mask
    return adv, adv
