"""The PPO-family algorithm pieces as pure tensor functions, in one namespace.

The code lives in three files by family; this module gathers their public names:

- ``advantages``: the advantage-estimator registry and the estimators
  (gae, grpo, reinforce, reinforce_plus_plus, rloo);
- ``policy_losses``: ``agg_loss``, the policy-loss registry with the dual-clip PPO loss
  ("vanilla"), the value loss and the entropy loss;
- ``kl``: KL estimators, the actor's KL loss, KL in the reward and the KL controllers.
"""

from verl.trainer.ppo.advantages import (
    ADV_ESTIMATOR_REGISTRY,
    compute_gae_advantage_return,
    compute_grpo_outcome_advantage,
    compute_reinforce_outcome_advantage,
    compute_reinforce_plus_plus_outcome_advantage,
    compute_rloo_outcome_advantage,
    get_adv_estimator_fn,
    register_adv_est,
)
from verl.trainer.ppo.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    compute_kl_loss,
    compute_rewards_with_kl,
    get_kl_controller,
    kl_penalty,
)
from verl.trainer.ppo.policy_losses import (
    LOSS_AGG_MODES,
    POLICY_LOSS_REGISTRY,
    agg_loss,
    compute_entropy_loss,
    compute_policy_loss,
    compute_value_loss,
    get_policy_loss_fn,
    register_policy_loss,
)

__all__ = [
    "ADV_ESTIMATOR_REGISTRY",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "POLICY_LOSS_REGISTRY",
    "AdaptiveKLController",
    "FixedKLController",
    "agg_loss",
    "compute_entropy_loss",
    "compute_gae_advantage_return",
    "compute_grpo_outcome_advantage",
    "compute_kl_loss",
    "compute_policy_loss",
    "compute_reinforce_outcome_advantage",
    "compute_reinforce_plus_plus_outcome_advantage",
    "compute_rewards_with_kl",
    "compute_rloo_outcome_advantage",
    "compute_value_loss",
    "get_adv_estimator_fn",
    "get_kl_controller",
    "get_policy_loss_fn",
    "kl_penalty",
    "register_adv_est",
    "register_policy_loss",
]
