"""A user-registered advantage estimator, named by tests through ``algorithm.import_modules``."""

import torch

from verl.trainer.ppo.advantages import register_adv_est


@register_adv_est("constant_quarter")
def constant_quarter(token_level_rewards: torch.Tensor, response_mask: torch.Tensor):
    """0.25 on every policy token, whatever the reward: (B, R) -> ((B, R), (B, R))."""
    adv = 0.25 * response_mask.to(token_level_rewards.dtype)
    return adv, adv
