"""The trainer's glue between a batch and the pure functions of core_algos.

``apply_kl_penalty`` puts the KL into the reward (PPO style); ``compute_advantage`` dispatches
to the configured estimator. Both read and write named columns of a DataProto.
"""

from __future__ import annotations

import numpy as np

from verl.protocol import DataProto
from verl.trainer.ppo import core_algos

ADV_ESTIMATORS = ("gae", "grpo", "reinforce", "reinforce_plus_plus", "rloo")


def apply_kl_penalty(data: DataProto, kl_ctrl, kl_penalty: str = "kl") -> dict[str, float]:
    """token_level_rewards = token_level_scores - beta * KL(old || ref) on policy tokens.

    Reads ``token_level_scores``, ``old_log_probs``, ``ref_log_prob``, ``response_mask`` (B, R);
    writes ``token_level_rewards`` (B, R) and updates the controller with the batch KL.
    """
    rewards, metrics = core_algos.compute_rewards_with_kl(
        data.batch["token_level_scores"], data.batch["old_log_probs"], data.batch["ref_log_prob"],
        float(kl_ctrl.value), data.batch["response_mask"].to(data.batch["token_level_scores"].dtype), kl_penalty)
    data.batch["token_level_rewards"] = rewards
    kl_ctrl.update(current_kl=metrics["actor/reward_kl_penalty"], n_steps=len(data))
    return metrics


def compute_advantage(data: DataProto, adv_estimator: str, gamma: float = 1.0, lam: float = 1.0,
                      norm_adv_by_std_in_grpo: bool = True) -> DataProto:
    """Write ``advantages`` and ``returns`` (B, R) from ``token_level_rewards`` and ``response_mask``.

    The mask is the loss mask: observation tokens inserted by tools are not steps of the policy,
    so GAE skips them and outcome estimators give them no advantage. Group estimators read the
    non-tensor ``uid`` column.
    """
    rewards = data.batch["token_level_rewards"]
    mask = data.batch["response_mask"].to(rewards.dtype)
    if adv_estimator == "gae":
        adv, ret = core_algos.compute_gae_advantage_return(rewards, data.batch["values"], mask, gamma, lam)
    elif adv_estimator == "grpo":
        adv, ret = core_algos.compute_grpo_outcome_advantage(
            rewards, mask, _uids(data), norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo)
    elif adv_estimator == "reinforce":
        adv, ret = core_algos.compute_reinforce_outcome_advantage(rewards, mask)
    elif adv_estimator == "reinforce_plus_plus":
        adv, ret = core_algos.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma)
    elif adv_estimator == "rloo":
        adv, ret = core_algos.compute_rloo_outcome_advantage(rewards, mask, _uids(data))
    else:
        raise ValueError(f"algorithm.adv_estimator={adv_estimator!r} is not supported; valid: {list(ADV_ESTIMATORS)}")
    data.batch["advantages"] = adv
    data.batch["returns"] = ret
    return data


def _uids(data: DataProto) -> np.ndarray:
    if "uid" not in data.non_tensor_batch:
        raise KeyError("group advantage estimators need the non-tensor 'uid' column (one id per prompt)")
    return data.non_tensor_batch["uid"]
