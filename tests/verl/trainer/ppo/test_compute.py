"""verl/trainer/ppo/compute.py: the registry is the dispatch, on real DataProto batches.

Expected numbers are worked by hand in the comments (float64), not taken from the code.
"""

import math
import sys

import pytest
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.trainer.main_ppo import load_config
from verl.trainer.ppo import advantages as adv_mod
from verl.trainer.ppo.advantages import describe_estimator, get_adv_estimator, register_adv_est
from verl.trainer.ppo.compute import compute_advantage, load_estimator, required_roles

# Two prompts, three samples each. Response length 4; position 1 is an observation token (mask 0)
# and the score sits on the last policy token (position 3).
SCORES = {"a": [1.0, 0.0, 0.5], "b": [0.0, 0.0, 1.0]}
MASK = [1.0, 0.0, 1.0, 1.0]


def _prompts() -> DataProto:
    return DataProto.from_dict({"prompt_ids": torch.tensor([[11], [22]])}, {"uid": ["a", "b"]})


def _scored(batch: DataProto) -> DataProto:
    """Give each row of a repeated batch its score (in order of appearance within its uid)."""
    seen: dict[str, int] = {}
    rewards = torch.zeros(len(batch), 4, dtype=torch.float64)
    for row, uid in enumerate(batch.non_tensor_batch["uid"]):
        k = seen.setdefault(uid, 0)
        seen[uid] = k + 1
        rewards[row, 3] = SCORES[uid][k]
    batch.batch["token_level_rewards"] = rewards
    batch.batch["response_mask"] = torch.tensor([MASK] * len(batch), dtype=torch.long)
    return batch


# GRPO by hand: a: mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5 -> [1, -1, 0];
# b: mean 1/3, std sqrt((1/9 + 1/9 + 4/9) / 2) = sqrt(1/3) -> [-1/sqrt(3), -1/sqrt(3), 2/sqrt(3)].
GRPO = {"a": [1.0, -1.0, 0.0], "b": [-1 / math.sqrt(3), -1 / math.sqrt(3), 2 / math.sqrt(3)]}


def _expected(batch: DataProto, table: dict[str, list[float]]) -> torch.Tensor:
    seen: dict[str, int] = {}
    out = torch.zeros(len(batch), 4, dtype=torch.float64)
    for row, uid in enumerate(batch.non_tensor_batch["uid"]):
        k = seen.setdefault(uid, 0)
        seen[uid] = k + 1
        out[row] = table[uid][k] * torch.tensor(MASK, dtype=torch.float64)
    return out


@pytest.mark.parametrize("interleave", [True, False])
def test_grpo_groups_by_uid_after_a_repeat(interleave):
    batch = _scored(_prompts().repeat(3, interleave=interleave))
    compute_advantage(batch, "grpo", {"gamma": 1.0, "lam": 1.0, "norm_adv_by_std_in_grpo": True})
    expected = _expected(batch, GRPO)
    assert torch.allclose(batch.batch["advantages"], expected, atol=1e-5)
    assert torch.equal(batch.batch["returns"], batch.batch["advantages"])
    assert (batch.batch["advantages"][:, 1] == 0).all()  # the observation token gets no advantage


def test_grpo_option_from_the_algorithm_section_reaches_the_estimator():
    batch = _scored(_prompts().repeat(3))
    compute_advantage(batch, "grpo", OmegaConf.create({"norm_adv_by_std_in_grpo": False, "gamma": 1.0}))
    # centring only: a -> [0.5, -0.5, 0]; b -> [-1/3, -1/3, 2/3]
    centred = {"a": [0.5, -0.5, 0.0], "b": [-1 / 3, -1 / 3, 2 / 3]}
    assert torch.allclose(batch.batch["advantages"], _expected(batch, centred), atol=1e-12)


def test_rloo_and_reinforce_through_the_registry():
    batch = _scored(_prompts().repeat(3))
    compute_advantage(batch, "rloo", {})
    # RLOO: score minus the mean of the other two: a -> [1 - 0.25, 0 - 0.75, 0.5 - 0.5]; b -> [-0.5, -0.5, 1]
    rloo = {"a": [0.75, -0.75, 0.0], "b": [-0.5, -0.5, 1.0]}
    assert torch.allclose(batch.batch["advantages"], _expected(batch, rloo), atol=1e-12)
    compute_advantage(batch, "reinforce", {})
    assert torch.allclose(batch.batch["advantages"], _expected(batch, SCORES), atol=1e-12)


def test_gae_reads_values_and_options():
    # one row, mask [1, 0, 1], reward 1 at t2, values [0.5, 9, 0.2], gamma 0.5, lam 1:
    # t2: 1 - 0.2 = 0.8; t1 (mask 0) carries 0.8 and V = 0.2; t0: 0 + 0.5 * 0.2 - 0.5 + 0.5 * 0.8 = 0.0
    # returns = raw advantages + values = [0.5, 9.8, 1.0]
    batch = DataProto.from_dict({"token_level_rewards": torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64),
                                 "values": torch.tensor([[0.5, 9.0, 0.2]], dtype=torch.float64),
                                 "response_mask": torch.tensor([[1, 0, 1]])}, {"uid": ["x"]})
    compute_advantage(batch, "gae", {"gamma": 0.5, "lam": 1.0})
    assert torch.allclose(batch.batch["returns"], torch.tensor([[0.5, 9.8, 1.0]], dtype=torch.float64))


def test_missing_inputs_are_named():
    batch = _scored(_prompts().repeat(2))
    del batch.non_tensor_batch["uid"]
    with pytest.raises(KeyError, match="uid"):
        compute_advantage(batch, "grpo", {})
    with pytest.raises(KeyError, match="values"):
        compute_advantage(_scored(_prompts().repeat(2)), "gae", {"gamma": 1.0, "lam": 1.0})
    with pytest.raises(KeyError, match="algorithm.gamma"):
        compute_advantage(_scored(_prompts().repeat(2)), "reinforce_plus_plus", {})
    with pytest.raises(ValueError, match="algorithm.adv_estimator"):
        compute_advantage(_scored(_prompts().repeat(2)), "nope", {})


def test_the_registry_reads_needs_from_parameter_names():
    gae, grpo = get_adv_estimator("gae"), get_adv_estimator("grpo")
    assert gae.needs_critic and not gae.needs_groups and set(gae.required_options) == {"gamma", "lam"}
    assert not grpo.needs_critic and grpo.needs_groups
    assert set(grpo.options) == {"epsilon", "norm_adv_by_std_in_grpo"} and grpo.required_options == ()
    with pytest.raises(TypeError, match="name each input"):
        describe_estimator("loose", lambda token_level_rewards, **kw: None)


@pytest.fixture
def custom_estimators():
    """Register two estimators for one test and remove them after it."""
    names = ("test_half", "test_ref_aware")

    @register_adv_est("test_half")
    def half(token_level_rewards, response_mask, scale=0.5):
        adv = torch.full_like(token_level_rewards, float(scale)) * response_mask
        return adv, adv

    @register_adv_est("test_ref_aware")
    def ref_aware(token_level_rewards, response_mask, ref_log_prob, values):
        return token_level_rewards, token_level_rewards

    yield names
    for name in names:
        adv_mod.ADV_ESTIMATOR_REGISTRY.pop(name, None)


def test_a_registered_estimator_is_called_with_its_options(custom_estimators):
    batch = _scored(_prompts().repeat(2))
    compute_advantage(batch, "test_half", {"scale": 2.0, "gamma": 1.0})
    assert torch.equal(batch.batch["advantages"], 2.0 * batch.batch["response_mask"].to(torch.float64))


@pytest.mark.parametrize(
    "estimator, kl_loss, kl_reward, ref_enable, critic, reference",
    [
        ("grpo", True, False, True, False, True),
        ("grpo", False, False, True, False, False),
        ("grpo", True, False, False, False, False),  # ref disabled: the KL loss has no reference
        ("gae", False, True, True, True, True),
        ("reinforce", False, False, True, False, False),
        ("test_ref_aware", False, False, False, True, True),  # the estimator itself reads both
    ],
)
def test_required_roles_come_from_the_registry(custom_estimators, estimator, kl_loss, kl_reward, ref_enable,
                                               critic, reference):
    cfg = load_config([f"algorithm.adv_estimator={estimator}", f"actor_rollout_ref.actor.use_kl_loss={kl_loss}",
                       f"algorithm.use_kl_in_reward={kl_reward}", f"actor_rollout_ref.ref.enable={ref_enable}"])
    roles = required_roles(cfg)
    assert (roles.critic, roles.reference) == (critic, reference)


def test_import_modules_registers_before_lookup():
    cfg = OmegaConf.create({"adv_estimator": "constant_quarter", "import_modules": ["tests.e2e.custom_estimator"]})
    try:
        estimator = load_estimator(cfg)
        assert estimator.name == "constant_quarter" and not estimator.needs_critic
    finally:  # unregister and forget the module, so that a later import registers it again
        adv_mod.ADV_ESTIMATOR_REGISTRY.pop("constant_quarter", None)
        sys.modules.pop("tests.e2e.custom_estimator", None)
    with pytest.raises(ImportError, match="algorithm.import_modules"):
        load_estimator(OmegaConf.create({"adv_estimator": "grpo", "import_modules": ["no_such_module_xyz"]}))


def test_unknown_estimator_lists_the_valid_ones():
    with pytest.raises(ValueError, match="grpo"):
        load_estimator(OmegaConf.create({"adv_estimator": "nope", "import_modules": []}))
