"""KL estimators between the policy and the reference model, and the KL coefficient controllers.

Two places use KL, with opposite bookkeeping but the same meaning (a penalty on drifting away
from the reference model):

- in the reward (PPO, ``algorithm.use_kl_in_reward``): ``compute_rewards_with_kl`` subtracts
  ``kl_coef * KL`` from the token-level scores before the advantages are computed;
- as a loss (GRPO / REINFORCE, ``actor.use_kl_loss``): ``compute_kl_loss`` gives a term the
  actor ADDS to its policy loss: ``loss = pg_loss + kl_loss_coef * kl_loss``.

Shapes: B = rows, R = response length; log-prob tensors are (B, R).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import numpy as np
import torch

from verl.trainer.ppo.policy_losses import agg_loss
from verl.utils import torch_functional as F

KL_ESTIMATORS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


def _kl_forward(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str) -> torch.Tensor:
    if kind in ("kl", "k1"):
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind in ("mse", "k2"):
        return 0.5 * (logprob - ref_logprob).square()
    if kind in ("low_var_kl", "k3"):
        log_ratio = torch.clamp(ref_logprob - logprob, min=-20, max=20)
        return torch.clamp(torch.exp(log_ratio) - log_ratio - 1, min=-10, max=10)
    valid = list(KL_ESTIMATORS) + [k + "+" for k in KL_ESTIMATORS]
    raise ValueError(f"unknown KL estimator '{kind}'; valid: {valid}")


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference). logprob, ref_logprob: (B, R) -> (B, R).

    - "kl" / "k1": logprob - ref_logprob;
    - "abs": |logprob - ref_logprob|;
    - "mse" / "k2": 0.5 * (logprob - ref_logprob)^2;
    - "low_var_kl" / "k3": with d = clamp(ref_logprob - logprob, -20, 20),
      clamp(exp(d) - d - 1, -10, 10) (non-negative, low variance).

    A trailing "+" (e.g. "k3+") keeps the forward value but takes the gradient of k2, whose
    expected gradient is the gradient of the true KL.
    """
    if kl_penalty.endswith("+"):
        forward = _kl_forward(logprob, ref_logprob, kl_penalty[:-1])
        surrogate = 0.5 * (logprob - ref_logprob).square()
        return surrogate - surrogate.detach() + forward.detach()
    return _kl_forward(logprob, ref_logprob, kl_penalty)


def compute_kl_loss(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kl_loss_type: str,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: Any,
) -> torch.Tensor:
    """The actor's KL loss: agg_loss(kl_penalty(log_prob, ref_log_prob, kl_loss_type), mask).

    log_prob, ref_log_prob, response_mask: (B, R). Returns a scalar that the actor adds to the
    policy loss, ``pg_loss + kl_loss_coef * kl_loss``, so that drifting from the reference model
    costs loss (a penalty, never a bonus). ``agg_kwargs`` are passed to ``agg_loss``.
    """
    kld = kl_penalty(log_prob, ref_log_prob, kl_loss_type)
    return agg_loss(kld, response_mask, loss_agg_mode, **agg_kwargs)


def compute_rewards_with_kl(
    token_level_scores: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    kl_ctrl_value: float,
    response_mask: torch.Tensor,
    kl_penalty: str = "kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL in the reward: token_level_rewards = scores - kl_ctrl_value * KL * mask.

    All tensors (B, R). Returns (token_level_rewards, metrics) with
    "actor/reward_kl_penalty" = mean over rows of each row's masked mean KL (feed it to the KL
    controller's ``update``) and "actor/reward_kl_penalty_coeff" = the coefficient used.
    """
    kld = _kl_penalty_fn(old_log_prob, ref_log_prob, kl_penalty) * response_mask
    rewards = token_level_scores - kl_ctrl_value * kld
    current_kl = torch.mean(F.masked_mean(kld, response_mask, axis=-1))
    metrics = {"actor/reward_kl_penalty": float(current_kl), "actor/reward_kl_penalty_coeff": float(kl_ctrl_value)}
    return rewards, metrics


_kl_penalty_fn = kl_penalty


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op (kept so both controllers share one interface)."""


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al., 2019).

    After each step, value *= 1 + clip(current_kl / target_kl - 1, -0.2, 0.2) * n_steps / horizon,
    so the coefficient grows when the KL exceeds the target and shrinks when it falls below.
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int) -> None:
        if target_kl <= 0:
            raise ValueError(f"AdaptiveKLController: target_kl must be > 0, got {target_kl}")
        if horizon <= 0:
            raise ValueError(f"AdaptiveKLController: horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target_kl)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Scale ``value`` by the clipped proportional error; ``n_steps`` = samples in this step."""
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon


def get_kl_controller(kl_ctrl_cfg: Union[Mapping, Any]) -> Union[FixedKLController, AdaptiveKLController]:
    """Build the controller named by ``kl_ctrl_cfg.type`` ("fixed" or "adaptive").

    Reads ``kl_coef`` (both) and ``target_kl``, ``horizon`` (adaptive) from a dict or DictConfig.
    """

    def get(key: str) -> Any:
        if isinstance(kl_ctrl_cfg, Mapping):
            if key not in kl_ctrl_cfg:
                raise KeyError(f"algorithm.kl_ctrl: missing key '{key}'")
            return kl_ctrl_cfg[key]
        if not hasattr(kl_ctrl_cfg, key):
            raise KeyError(f"algorithm.kl_ctrl: missing key '{key}'")
        return getattr(kl_ctrl_cfg, key)

    kind = get("type")
    if kind == "fixed":
        return FixedKLController(kl_coef=get("kl_coef"))
    if kind == "adaptive":
        return AdaptiveKLController(init_kl_coef=get("kl_coef"), target_kl=get("target_kl"), horizon=get("horizon"))
    raise ValueError(f"algorithm.kl_ctrl.type must be 'fixed' or 'adaptive', got {kind!r}")
