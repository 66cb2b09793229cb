"""The trainer's glue between a batch and the pure functions of core_algos.

``apply_kl_penalty`` puts the KL into the reward (PPO style); ``compute_advantage`` calls the
configured estimator through its registry record, which also decides which workers a run builds
(``required_roles``). Both read and write named columns of a DataProto.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.advantages import AdvantageEstimator, get_adv_estimator


@dataclass(frozen=True)
class RequiredRoles:
    """Which workers besides the actor and rollout a run needs."""

    critic: bool
    reference: bool


def load_estimator(algorithm: Mapping[str, Any]) -> AdvantageEstimator:
    """The estimator named by ``algorithm.adv_estimator``, after importing ``algorithm.import_modules``.

    ``algorithm``: the ``algorithm`` config section. Modules listed in ``import_modules`` are
    imported first, so that estimators they register with ``@register_adv_est`` can be named.
    """
    for module in algorithm.get("import_modules") or ():
        try:
            importlib.import_module(str(module))
        except ImportError as err:
            raise ImportError(f"algorithm.import_modules: cannot import {module!r}: {err}") from err
    return get_adv_estimator(str(algorithm["adv_estimator"]))


def required_roles(config, estimator: AdvantageEstimator | None = None) -> RequiredRoles:
    """The critic and reference a trainer config needs, from the estimator's registry record.

    A critic when the estimator reads ``values``; a reference when the estimator reads
    ``ref_log_prob`` or a KL term (``algorithm.use_kl_in_reward``, ``actor.use_kl_loss``) does and
    ``actor_rollout_ref.ref.enable`` is on. ``estimator``: the one already loaded from
    ``config.algorithm`` (loaded here when None).
    """
    estimator = estimator or load_estimator(config.algorithm)
    kl = bool(config.algorithm.use_kl_in_reward) or bool(config.actor_rollout_ref.actor.use_kl_loss)
    reference = estimator.needs_reference or (bool(config.actor_rollout_ref.ref.enable) and kl)
    return RequiredRoles(critic=estimator.needs_critic, reference=reference)


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


def compute_advantage(data: DataProto, adv_estimator: str | AdvantageEstimator,
                      options: Mapping[str, Any] | None = None) -> DataProto:
    """Write ``advantages`` and ``returns`` (B, R) with the estimator registered as ``adv_estimator``.

    The estimator gets the batch columns, group ids and options its parameters name
    (``verl/trainer/ppo/advantages.py``): ``token_level_rewards`` and ``response_mask`` (B, R), the
    critic's ``values`` (B, R), the non-tensor ``uid`` column as group ids, and ``options`` (the
    ``algorithm`` config section: ``gamma``, ``lam``, ...). The mask is the loss mask:
    observation tokens inserted by tools are not steps of the policy, so GAE skips them and outcome
    estimators give them no advantage.
    """
    estimator = get_adv_estimator(adv_estimator) if isinstance(adv_estimator, str) else adv_estimator
    rewards = data.batch["token_level_rewards"]
    columns = {k: data.batch[k] for k in estimator.batch_inputs if k in data.batch}
    if "response_mask" in columns:
        columns["response_mask"] = columns["response_mask"].to(rewards.dtype)
    adv, ret = estimator(columns, data.non_tensor_batch.get("uid"), dict(options or {}))
    data.batch["advantages"] = adv
    data.batch["returns"] = ret
    return data
