"""Advantage estimators, losses, KL and controllers against hand-worked numbers, float64 numpy
loops written here, and numbers printed by verl 0.9.1 on the same inputs
(docs/cpu-feasibility.md section 6)."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.trainer.ppo import core_algos as ca
from verl.utils import torch_functional as F

# ----------------------------------------------------------------------------- shared inputs
GROUP_SCORES = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5]
GROUPS = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)


def outcome_batch(scores, lengths, width=5):
    """Rewards with each score on its row's last valid token; mask = 1 on the first ``length`` tokens."""
    mask = torch.zeros(len(scores), width, dtype=torch.float64)
    rewards = torch.zeros(len(scores), width, dtype=torch.float64)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        mask[i, :n] = 1
        rewards[i, n - 1] = s
    return rewards, mask


def np_whiten(x, mask):
    """(x - mean) / sqrt(unbiased var + 1e-8) with statistics over mask == 1, applied everywhere."""
    sel = x[mask == 1]
    return (x - sel.mean()) / math.sqrt(sel.var(ddof=1) + 1e-8)


def np_gae(rewards, values, mask, gamma, lam):
    """GAE over the valid positions of each row only; a masked position takes the advantage of
    the next valid position (0 if none). Returns raw advantages (unwhitened)."""
    adv = np.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        valid = [t for t in range(rewards.shape[1]) if mask[i, t] == 1]
        a_at = {}
        next_a, next_v = 0.0, 0.0
        for t in reversed(valid):
            delta = rewards[i, t] + gamma * next_v - values[i, t]
            next_a = delta + gamma * lam * next_a
            next_v = values[i, t]
            a_at[t] = next_a
        carried = 0.0
        for t in reversed(range(rewards.shape[1])):
            carried = a_at.get(t, carried)
            adv[i, t] = carried
    return adv


# ----------------------------------------------------------------------------- registries
def test_registries_know_the_builtin_names_and_reject_unknown_ones():
    assert {"gae", "grpo", "reinforce", "reinforce_plus_plus", "rloo"} <= set(ca.ADV_ESTIMATOR_REGISTRY)
    assert ca.get_adv_estimator_fn("grpo") is ca.compute_grpo_outcome_advantage
    assert ca.get_policy_loss_fn("vanilla") is ca.compute_policy_loss
    with pytest.raises(ValueError, match="grpo"):
        ca.get_adv_estimator_fn("nope")
    with pytest.raises(ValueError, match="vanilla"):
        ca.get_policy_loss_fn("nope")


def test_registering_a_second_function_under_a_taken_name_fails():
    ca.register_adv_est("grpo")(ca.compute_grpo_outcome_advantage)  # same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        ca.register_adv_est("grpo")(lambda **kw: None)
    with pytest.raises(ValueError, match="already registered"):
        ca.register_policy_loss("vanilla")(lambda **kw: None)


# ----------------------------------------------------------------------------- GAE
def test_gae_hand_worked_skips_a_masked_observation_token():
    # mask [1, 0, 1], gamma = lam = 1: t2: 1 - 0.2 = 0.8; t1 masked carries 0.8 and V=0.2;
    # t0: 0 + 0.2 - 0.5 + 0.8 = 0.5 -> raw advantages [0.5, 0.8, 0.8]
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 9.0, 0.2], [0.1, 0.3, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    adv, ret = ca.compute_gae_advantage_return(rewards, values, mask, gamma=1.0, lam=1.0)
    # row 1: t1: 1 - 0.3 = 0.7; t0: 0.3 - 0.1 + 0.7 = 0.9; t2 (padding) has nothing after it: 0
    raw = np.array([[0.5, 0.8, 0.8], [0.9, 0.7, 0.0]])
    np.testing.assert_allclose(ret.numpy(), raw + values.numpy(), atol=1e-12)
    np.testing.assert_allclose(adv.numpy(), np_whiten(raw, mask.numpy()), atol=1e-7)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 1.0)])
def test_gae_matches_a_plain_loop_with_interior_masks(gamma, lam):
    gen = torch.Generator().manual_seed(3)
    rewards = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    values = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 0], [1, 0, 1, 0, 1, 0, 0], [0, 1, 1, 1, 0, 0, 0]],
        dtype=torch.float64,
    )
    adv, ret = ca.compute_gae_advantage_return(rewards, values, mask, gamma=gamma, lam=lam)
    raw = np_gae(rewards.numpy(), values.numpy(), mask.numpy(), gamma, lam)
    np.testing.assert_allclose(ret.numpy(), raw + values.numpy(), atol=1e-10)
    np.testing.assert_allclose(adv.numpy(), np_whiten(raw, mask.numpy()), atol=1e-7)


# ----------------------------------------------------------------------------- outcome estimators
def test_grpo_hand_worked_groups():
    rewards, mask = outcome_batch(GROUP_SCORES, [5, 3, 5, 4, 2, 5])
    adv, ret = ca.compute_grpo_outcome_advantage(rewards, mask, GROUPS, epsilon=1e-6)
    # a: (1, 0) mean .5 std .7071; b: equal scores -> 0; c: (0, .5) mean .25 std .35355
    s = 1 / math.sqrt(2)
    expected = [0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.0, 0.0, -0.25 / (s / 2 + 1e-6), 0.25 / (s / 2 + 1e-6)]
    np.testing.assert_allclose(adv[:, 0].numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(adv.numpy(), np.array(expected)[:, None] * mask.numpy(), atol=1e-9)
    assert torch.equal(adv, ret)
    np.testing.assert_allclose(adv[:, 0].numpy(), [0.7071, -0.7071, 0, 0, -0.7071, 0.7071], atol=1e-4)


def test_grpo_without_std_single_groups_and_bad_index():
    rewards, mask = outcome_batch([2.0, 1.0, 3.0], [2, 3, 1], width=3)
    adv, _ = ca.compute_grpo_outcome_advantage(rewards, mask, [7, 7, (1, "x")], norm_adv_by_std_in_grpo=False)
    # group 7 mean 1.5 -> .5, -.5; the single row keeps mean 0 -> 3
    assert adv[:, 0].tolist() == pytest.approx([0.5, -0.5, 3.0])
    adv, _ = ca.compute_grpo_outcome_advantage(rewards, mask, ["u", "v", "w"], epsilon=1e-6)
    assert adv[:, 0].tolist() == pytest.approx([2.0 / (1 + 1e-6), 1.0 / (1 + 1e-6), 3.0 / (1 + 1e-6)])
    with pytest.raises(ValueError, match="index"):
        ca.compute_grpo_outcome_advantage(rewards, mask, ["u", "v"])


def test_rloo_hand_worked_groups():
    rewards, mask = outcome_batch(GROUP_SCORES, [5, 3, 5, 4, 2, 5])
    adv, ret = ca.compute_rloo_outcome_advantage(rewards, mask, GROUPS)
    # pairs: score - other score
    np.testing.assert_allclose(adv[:, 0].numpy(), [1, -1, 0, 0, -0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(adv.numpy(), np.array([1, -1, 0, 0, -0.5, 0.5])[:, None] * mask.numpy())
    assert torch.equal(adv, ret)
    # group of three: 3 - mean(0, 6) = 0; 0 - 4.5 = -4.5; 6 - 1.5 = 4.5; a single row keeps its score
    rewards, mask = outcome_batch([3.0, 0.0, 6.0, 2.0], [1, 1, 1, 1], width=2)
    adv, _ = ca.compute_rloo_outcome_advantage(rewards, mask, ["g", "g", "g", "solo"])
    assert adv[:, 0].tolist() == pytest.approx([0.0, -4.5, 4.5, 2.0])


def test_reinforce_is_the_raw_score_on_masked_tokens():
    rewards, mask = outcome_batch([1.0, 0.0, 0.5], [4, 2, 5])
    adv, ret = ca.compute_reinforce_outcome_advantage(rewards, mask)
    expected = np.array([1.0, 0.0, 0.5])[:, None] * mask.numpy()
    np.testing.assert_array_equal(adv.numpy(), expected)
    assert torch.equal(adv, ret)


def test_reinforce_plus_plus_matches_a_plain_loop():
    gamma = 0.9
    rewards = torch.tensor([[0.0, 0.5, 0.0, 1.0], [0.2, 0.0, 1.0, 0.3], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float64)
    r, m = rewards.numpy(), mask.numpy()
    ref_ret = np.zeros_like(r)
    for i in range(r.shape[0]):
        running = 0.0
        for t in reversed(range(r.shape[1])):
            if m[i, t] == 1:  # only policy tokens are steps; the 0.3 on row 1's padding is not credited
                running = r[i, t] + gamma * running
                ref_ret[i, t] = running
    adv, ret = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=gamma)
    np.testing.assert_allclose(ret.numpy(), ref_ret, atol=1e-12)
    np.testing.assert_allclose(adv.numpy(), np_whiten(ref_ret, m) * m, atol=1e-7)
    # row 0 by hand: G3 = 1, G2 = 0.9 * 1, G1 = 0.5 + 0.9 * 0.9, G0 = 0.9 * G1
    assert ret[0].tolist() == pytest.approx([0.9 * (0.5 + 0.81), 0.5 + 0.81, 0.9, 1.0])


# ----------------------------------------------------------------------------- masks with holes
# A multi-turn trajectory: policy tokens, an <information> block (mask 0), policy tokens, padding.
# Mask 0 inside a response is an observation, never the end of the episode.
HOLE = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_reinforce_plus_plus_carries_the_return_across_an_observation_block_gamma_1():
    rewards = torch.tensor([[0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    mask = torch.tensor([HOLE, [1, 1, 1, 1, 0, 0]], dtype=torch.float64)
    adv, ret = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=1.0)
    # the outcome flows past the block to the first turn; the block and the padding have return 0
    assert ret.tolist() == [[1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    # whitening over the 8 policy tokens (four 1s, four 0s): mean 1/2, unbiased var (8 / 4) / 7 = 2/7
    a = 0.5 / math.sqrt(2 / 7 + 1e-8)
    np.testing.assert_allclose(adv.numpy(), [[a, a, 0, 0, a, a], [-a, -a, -a, -a, 0, 0]], atol=1e-6)


def test_reinforce_plus_plus_discounts_per_policy_token_not_per_observation_token():
    rewards = torch.tensor([[0, 0.5, 0, 0, 0, 2.0]], dtype=torch.float64)
    mask = torch.tensor([HOLE], dtype=torch.float64)
    adv, ret = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=0.5)
    # t5: 2; t4: 0.5 * 2 = 1; t3, t2 carry 1 (return 0 there); t1: 0.5 + 0.5 * 1 = 1; t0: 0.5 * 1
    assert ret[0].tolist() == [0.5, 1.0, 0.0, 0.0, 1.0, 2.0]
    # policy returns (0.5, 1, 1, 2): mean 1.125, squared deviations sum 1.1875, unbiased var / 3
    std = math.sqrt(1.1875 / 3 + 1e-8)
    expected = [(0.5 - 1.125) / std, (1 - 1.125) / std, 0, 0, (1 - 1.125) / std, (2 - 1.125) / std]
    np.testing.assert_allclose(adv[0].numpy(), expected, atol=1e-6)


def test_reinforce_plus_plus_on_policy_tokens_ignores_where_observations_sit():
    # the same three policy tokens, compact and with a block + trailing padding between them
    gamma = 0.9
    compact = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    expanded = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    holes = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    _, ret_c = ca.compute_reinforce_plus_plus_outcome_advantage(compact, torch.ones_like(compact), gamma=gamma)
    _, ret_e = ca.compute_reinforce_plus_plus_outcome_advantage(expanded, holes, gamma=gamma)
    assert ret_c[0].tolist() == pytest.approx([0.81, 0.9, 1.0])
    assert ret_e[0].tolist() == pytest.approx([0.81, 0.0, 0.9, 1.0, 0.0, 0.0])


def test_reinforce_plus_plus_does_not_credit_a_reward_on_a_masked_position():
    # a reward on an observation token or on padding is not a step of the policy
    rewards = torch.tensor([[0.0, 0.0, 5.0, 0.0, 1.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    _, ret = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=1.0)
    assert ret[0].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_gae_two_token_observation_block_gamma_lam_below_1():
    # gamma = lam = 0.5; the values on the observation tokens (7, -7) must not be read
    rewards = torch.tensor([[0, 0, 0, 0, 0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.2, 0.4, 7.0, -7.0, 0.6, 0.8]], dtype=torch.float64)
    mask = torch.tensor([HOLE], dtype=torch.float64)
    adv, ret = ca.compute_gae_advantage_return(rewards, values, mask, gamma=0.5, lam=0.5)
    # t5: 1 - 0.8 = 0.2; t4: 0.5 * 0.8 - 0.6 + 0.25 * 0.2 = -0.15; the block carries -0.15;
    # t1: 0.5 * 0.6 - 0.4 + 0.25 * -0.15 = -0.1375; t0: 0.5 * 0.4 - 0.2 + 0.25 * -0.1375 = -0.034375
    raw = [-0.034375, -0.1375, -0.15, -0.15, -0.15, 0.2]
    np.testing.assert_allclose(ret[0].numpy(), np.array(raw) + values[0].numpy(), atol=1e-12)
    pol = np.array([-0.034375, -0.1375, -0.15, 0.2])
    std = math.sqrt(((pol - pol.mean()) ** 2).sum() / 3 + 1e-8)
    np.testing.assert_allclose(adv[0].numpy(), (np.array(raw) - pol.mean()) / std, atol=1e-7)


def test_group_and_plain_outcome_estimators_on_masks_with_holes():
    # row 0: two turns around a block, score 1 on its last policy token; row 1: one turn, a block,
    # padding, score 0. Both rows one group. Every policy token gets the row's advantage, holes 0.
    rewards = torch.tensor([[0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    mask = torch.tensor([HOLE, [1, 0, 0, 0, 0, 0]], dtype=torch.float64)
    s = 1 / math.sqrt(2)  # unbiased std of (1, 0)
    g = 0.5 / (s + 1e-6)
    grpo, _ = ca.compute_grpo_outcome_advantage(rewards, mask, ["q", "q"])
    np.testing.assert_allclose(grpo.numpy(), [[g, g, 0, 0, g, g], [-g, 0, 0, 0, 0, 0]], atol=1e-12)
    rloo, _ = ca.compute_rloo_outcome_advantage(rewards, mask, ["q", "q"])
    assert rloo.tolist() == [[1, 1, 0, 0, 1, 1], [-1, 0, 0, 0, 0, 0]]
    plain, _ = ca.compute_reinforce_outcome_advantage(rewards, mask)
    assert plain.tolist() == [[1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]


def test_kl_in_the_reward_on_a_mask_with_holes_then_reinforce_plus_plus():
    # the log-probs differ on the observation tokens too (the actor computes them everywhere);
    # only the policy tokens' KL may enter the reward, and it flows past the block
    scores = torch.tensor([[0, 0, 0, 0, 0, 1.0]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -1.0, -3.0, -3.0, -1.0, -1.0]], dtype=torch.float64)
    ref = torch.tensor([[-2.0, -1.0, -1.0, -1.0, -1.0, -1.5]], dtype=torch.float64)
    mask = torch.tensor([HOLE], dtype=torch.float64)
    rewards, _ = ca.compute_rewards_with_kl(scores, old, ref, 0.1, mask, kl_penalty="kl")
    # k1 = old - ref on policy tokens: [1, 0, -, -, 0, 0.5]
    np.testing.assert_allclose(rewards[0].numpy(), [-0.1, 0, 0, 0, 0, 1 - 0.05], atol=1e-12)
    _, ret = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=1.0)
    np.testing.assert_allclose(ret[0].numpy(), [0.85, 0.95, 0, 0, 0.95, 0.95], atol=1e-12)


def test_estimators_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        ca.compute_reinforce_outcome_advantage(torch.zeros(2, 3), torch.ones(2, 4))


# ----------------------------------------------------------------------------- loss aggregation
LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
LOSS_MASK = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", 27 / 5),  # (1 + 2 + 7 + 8 + 9) / 5
        ("seq-mean-token-sum", (3 + 24) / 2),  # the empty row is left out
        ("seq-mean-token-mean", (1.5 + 8) / 2),
        ("seq-mean-token-sum-norm", (3 + 24) / 2 / 3),  # / mask width 3
    ],
)
def test_agg_loss_modes(mode, expected):
    assert ca.agg_loss(LOSS_MAT, LOSS_MASK, mode).item() == pytest.approx(expected)
    assert ca.agg_loss(LOSS_MAT, torch.zeros_like(LOSS_MASK), mode).item() == 0.0


def test_agg_loss_global_normalisers_and_bad_mode():
    assert ca.agg_loss(LOSS_MAT, LOSS_MASK, "token-mean", batch_num_tokens=10).item() == pytest.approx(2.7)
    assert ca.agg_loss(LOSS_MAT, LOSS_MASK, "seq-mean-token-sum", global_batch_size=9).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="token-mean"):
        ca.agg_loss(LOSS_MAT, LOSS_MASK, "token-sum-whatever")


# ----------------------------------------------------------------------------- policy loss
def test_dual_clip_policy_loss_hand_worked_cases():
    # (advantage, ratio) -> per-token loss, eps 0.2, clip_ratio_c 3
    cases = [
        (1.0, 1.1, -1.1),  # A > 0, inside the clip
        (1.0, 1.5, -1.2),  # A > 0, ratio above 1 + eps: clipped at -1.2 (clipfrac)
        (1.0, 0.5, -0.5),  # A > 0, ratio below 1 - eps: the unclipped term is larger
        (-1.0, 0.5, 0.8),  # A < 0, ratio below 1 - eps: clipped at 0.8 (clipfrac)
        (-1.0, 1.1, 1.1),  # A < 0, inside the clip
        (-1.0, 5.0, 3.0),  # A < 0, huge ratio: PPO gives 5, dual clip caps at 3 (clipfrac_lower)
    ]
    adv = torch.tensor([[a, 99.0] for a, _, _ in cases], dtype=torch.float64)
    old = torch.full((6, 2), -1.0, dtype=torch.float64)
    new = torch.tensor([[-1.0 + math.log(r), 5.0] for _, r, _ in cases], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0]] * 6, dtype=torch.float64)  # the second token must not count
    loss, metrics = ca.compute_policy_loss(old, new, adv, mask, 0.2, 0.2, 3.0, "token-mean")
    per_token = [c[2] for c in cases]
    assert loss.item() == pytest.approx(sum(per_token) / 6)
    assert metrics["clipfrac"].item() == pytest.approx(2 / 6)
    assert metrics["clipfrac_lower"].item() == pytest.approx(1 / 6)
    ppo_kl = -sum(math.log(r) for _, r, _ in cases) / 6
    assert metrics["ppo_kl"].item() == pytest.approx(ppo_kl)
    loss.backward()
    # d(-A * ratio)/d logp = -A * ratio where unclipped; 0 where a clip is active; 0 on masked tokens
    expected_grad = [-1.1 / 6, 0.0, -0.5 / 6, 0.0, 1.1 / 6, 0.0]
    np.testing.assert_allclose(new.grad[:, 0].numpy(), expected_grad, atol=1e-12)
    assert new.grad[:, 1].abs().sum().item() == 0.0


def test_policy_loss_asymmetric_clip_and_seq_modes():
    adv = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    old = torch.zeros(2, 2)
    new = torch.log(torch.tensor([[1.25, 1.35], [1.0, 0.7]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # high 0.3: 1.25 stays, 1.35 -> 1.3; row 1 only its first token counts
    loss, metrics = ca.compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.1, clip_ratio_high=0.3)
    assert loss.item() == pytest.approx((-1.25 - 1.3 - 1.0) / 3, abs=1e-6)
    assert metrics["clipfrac"].item() == pytest.approx(1 / 3)
    loss, _ = ca.compute_policy_loss(
        old, new, adv, mask, clip_ratio_low=0.1, clip_ratio_high=0.3, loss_agg_mode="seq-mean-token-sum"
    )
    assert loss.item() == pytest.approx(((-1.25 - 1.3) + (-1.0)) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        ca.compute_policy_loss(old, new, adv, mask, clip_ratio_c=1.0)


def test_log_ratio_is_clamped_at_20():
    old = torch.zeros(1, 1)
    new = torch.full((1, 1), 50.0)
    adv = torch.ones(1, 1)
    _, metrics = ca.compute_policy_loss(old, new, adv, torch.ones(1, 1))
    assert metrics["ppo_kl"].item() == pytest.approx(-20.0)


# ----------------------------------------------------------------------------- value and entropy
def test_value_loss_clipping():
    values = torch.zeros(1, 4)
    vpreds = torch.tensor([[1.0, 0.1, 1.0, 7.0]])
    returns = torch.tensor([[0.5, 1.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # t0: max(0.25, (0.2-0.5)^2 = 0.09) = 0.25; t1: inside the clip, 0.81; t2: max(0, (0.2-1)^2) = 0.64 (clipped)
    loss, clipfrac = ca.compute_value_loss(vpreds, returns, values, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.81 + 0.64) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)


def test_entropy_loss_of_uniform_logits_is_log_vocab():
    logits = torch.zeros(2, 3, 6)
    logits[1, 2] = torch.tensor([50.0, 0, 0, 0, 0, 0])  # near-zero entropy, but masked out
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert ca.compute_entropy_loss(logits, mask).item() == pytest.approx(math.log(6))


# ----------------------------------------------------------------------------- KL
LP = torch.tensor([[math.log(0.5), 0.0, 0.0]])
REF = torch.tensor([[math.log(0.25), -30.0, 30.0]])


def test_kl_estimators_closed_forms():
    d = math.log(2)  # log p - log ref on the first token
    assert ca.kl_penalty(LP, REF, "kl")[0, 0].item() == pytest.approx(d)
    assert ca.kl_penalty(LP, REF, "k1")[0, 0].item() == pytest.approx(d)
    assert ca.kl_penalty(-LP, -REF, "abs")[0, 0].item() == pytest.approx(d)
    assert ca.kl_penalty(LP, REF, "mse")[0, 0].item() == pytest.approx(0.5 * d * d)
    assert ca.kl_penalty(LP, REF, "k2")[0, 0].item() == pytest.approx(0.5 * d * d)
    # k3 with x = ref - lp = -log 2: exp(x) - x - 1 = 0.5 + log 2 - 1
    k3 = ca.kl_penalty(LP, REF, "low_var_kl")[0]
    assert k3[0].item() == pytest.approx(d - 0.5, abs=1e-6)
    # x = -30 -> clamped to -20 -> e^-20 + 19 -> clamped to 10; x = +30 -> e^20 - 21 -> 10
    assert k3[1].item() == pytest.approx(10.0) and k3[2].item() == pytest.approx(10.0)
    assert torch.equal(ca.kl_penalty(LP, REF, "k3"), ca.kl_penalty(LP, REF, "low_var_kl"))
    with pytest.raises(ValueError, match="low_var_kl"):
        ca.kl_penalty(LP, REF, "full")


def test_plus_suffix_keeps_the_value_and_takes_the_k2_gradient():
    lp = torch.tensor([-0.2, -1.0, -3.0], requires_grad=True)
    ref = torch.tensor([-0.5, -0.9, -1.0])
    out = ca.kl_penalty(lp, ref, "k3+")
    x = (ref - lp.detach()).numpy().astype(np.float64)
    np.testing.assert_allclose(out.detach().numpy(), np.exp(x) - x - 1, atol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(lp.grad.numpy(), (lp.detach() - ref).numpy(), atol=1e-6)


def test_kl_loss_is_a_penalty_added_by_the_actor():
    lp = torch.tensor([[math.log(0.5), math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), 0.0]])
    mask = torch.tensor([[1.0, 0.0]])
    loss = ca.compute_kl_loss(lp, ref, mask, kl_loss_type="low_var_kl")
    assert loss.item() == pytest.approx(math.log(2) - 0.5, abs=1e-6)
    loss.backward()
    # d/dlp [exp(ref - lp) - (ref - lp) - 1] = 1 - exp(ref - lp) = 0.5 > 0: descent lowers lp toward ref
    assert lp.grad[0, 0].item() == pytest.approx(0.5, abs=1e-6)
    assert lp.grad[0, 1].item() == 0.0


def test_rewards_with_kl():
    scores = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.5]])
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -0.5, -9.0], [-1.0, -2.0, -2.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, metrics = ca.compute_rewards_with_kl(scores, old, ref, 0.1, mask, kl_penalty="kl")
    # k1 = old - ref, masked: [[0.5, -0.5, 0], [-1, 0, 0.5]]
    expected = [[-0.05, 1.05, 0.0], [0.1, 0.0, 0.45]]
    np.testing.assert_allclose(rewards.numpy(), expected, atol=1e-6)
    # row means: 0 and -1/6 -> batch mean -1/12
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(-1 / 12)
    assert metrics["actor/reward_kl_penalty_coeff"] == pytest.approx(0.1)


# ----------------------------------------------------------------------------- controllers
def test_fixed_controller_never_moves():
    ctrl = ca.FixedKLController(0.001)
    ctrl.update(current_kl=5.0, n_steps=256)
    assert ctrl.value == 0.001


def test_adaptive_controller_formula():
    ctrl = ca.AdaptiveKLController(init_kl_coef=0.1, target_kl=0.1, horizon=100)
    ctrl.update(current_kl=0.2, n_steps=10)  # error clipped to +0.2 -> x 1.02
    assert ctrl.value == pytest.approx(0.102)
    ctrl.update(current_kl=0.11, n_steps=10)  # error 0.1 -> x 1.01
    assert ctrl.value == pytest.approx(0.102 * 1.01)
    ctrl.update(current_kl=0.0, n_steps=50)  # error clipped to -0.2 -> x 0.9
    assert ctrl.value == pytest.approx(0.102 * 1.01 * 0.9)
    with pytest.raises(ValueError, match="horizon"):
        ca.AdaptiveKLController(0.1, 0.1, 0)


def test_get_kl_controller_from_dict_and_dictconfig():
    fixed = ca.get_kl_controller({"type": "fixed", "kl_coef": 0.01})
    assert isinstance(fixed, ca.FixedKLController) and fixed.value == 0.01
    cfg = OmegaConf.create({"type": "adaptive", "kl_coef": 0.2, "target_kl": 0.05, "horizon": 1000})
    adaptive = ca.get_kl_controller(cfg)
    assert isinstance(adaptive, ca.AdaptiveKLController)
    assert (adaptive.value, adaptive.target, adaptive.horizon) == (0.2, 0.05, 1000)
    with pytest.raises(ValueError, match="fixed"):
        ca.get_kl_controller({"type": "pid", "kl_coef": 0.1})
    with pytest.raises(KeyError, match="target_kl"):
        ca.get_kl_controller({"type": "adaptive", "kl_coef": 0.1, "horizon": 10})


# ----------------------------------------------------------------------------- verl 0.9.1 numbers
def test_matches_numbers_printed_by_verl_on_the_same_inputs():
    """Same draw order as the reference script in docs/cpu-feasibility.md section 6."""
    torch.manual_seed(0)
    B, T = 6, 5
    mask = torch.ones(B, T)
    mask[1, 3:] = 0
    mask[4, 2:] = 0
    scores = torch.tensor(GROUP_SCORES)
    rewards = torch.zeros(B, T)
    rewards[torch.arange(B), (mask.sum(-1) - 1).long()] = scores
    values = torch.randn(B, T) * mask
    adv, ret = ca.compute_gae_advantage_return(rewards, values, mask, gamma=torch.tensor(1.0), lam=torch.tensor(0.95))
    g_adv, _ = ca.compute_grpo_outcome_advantage(rewards, mask, GROUPS, epsilon=1e-6, norm_adv_by_std_in_grpo=True)
    r_adv, _ = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=1.0)
    l_adv, _ = ca.compute_rloo_outcome_advantage(rewards, mask, GROUPS)
    logp_old = -torch.rand(B, T)
    logp = logp_old + 0.3 * torch.randn(B, T)
    ref = logp_old + 0.1 * torch.randn(B, T)

    close = dict(abs=1e-5)
    assert adv[0].tolist() == pytest.approx(
        [1.3808951377868652, 1.5183875560760498, 0.6074293255805969, 0.8825069665908813, -0.4949822723865509], **close
    )
    assert ret[0].tolist() == pytest.approx(
        [0.7617900371551514, 0.862534761428833, 0.921119749546051, 0.9924355745315552, 1.0], **close
    )
    assert g_adv[:, 0].tolist() == pytest.approx(
        [0.7071057558059692, -0.7071057558059692, 0.0, 0.0, -0.7071047425270081, 0.7071047425270081], **close
    )
    assert r_adv[0].tolist() == pytest.approx([0.7348468899726868] * 5, **close)
    assert l_adv[:, 0].tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0, -0.5, 0.5], **close)

    kl_expected = {
        "kl": -0.07814379036426544,
        "abs": 0.22619551420211792,
        "mse": 0.0422942154109478,
        "low_var_kl": 0.04530609771609306,
        "k3+": 0.04530609771609306,
    }
    for kind, expected in kl_expected.items():
        assert F.masked_mean(ca.kl_penalty(logp, ref, kind), mask).item() == pytest.approx(expected, **close), kind

    pg_expected = {
        "token-mean": -0.106377,
        "seq-mean-token-sum": -0.443237,
        "seq-mean-token-mean": 0.020344,
        "seq-mean-token-sum-norm": -0.088647,
    }
    for mode, expected in pg_expected.items():
        loss, metrics = ca.compute_policy_loss(logp_old, logp, g_adv, mask, 0.2, 0.2, 3.0, loss_agg_mode=mode)
        assert loss.item() == pytest.approx(expected, abs=1e-6), mode  # printed with 6 decimals
        assert metrics["clipfrac"].item() == pytest.approx(0.08, **close)
        assert metrics["ppo_kl"].item() == pytest.approx(0.102, abs=5e-4)  # printed with 3 decimals
        assert metrics["clipfrac_lower"].item() == 0.0

    vpreds = values + 0.5 * torch.randn(B, T)
    vf_loss, vf_clipfrac = ca.compute_value_loss(vpreds, ret, values, mask, cliprange_value=0.2)
    assert vf_loss.item() == pytest.approx(0.8696225881576538, **close)
    assert vf_clipfrac.item() == pytest.approx(0.23999999463558197, **close)
    assert ca.compute_entropy_loss(torch.randn(B, T, 11), mask).item() == pytest.approx(1.9763882160186768, **close)
