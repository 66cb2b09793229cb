"""DataParallelPPOActor on a tiny Qwen2 in one process (no process group needed)."""

import copy

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from verl.workers.actor.dp_actor import DataParallelPPOActor

P, R = 6, 5


def actor_cfg(**over):
    cfg = {
        "ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 2, "use_dynamic_bsz": False,
        "ppo_max_token_len_per_gpu": 64, "ppo_epochs": 1, "shuffle": False, "clip_ratio": 0.2,
        "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0, "loss_agg_mode": "token-mean",
        "policy_loss": "vanilla", "entropy_coeff": 0.0, "use_kl_loss": False, "kl_loss_coef": 0.001,
        "kl_loss_type": "low_var_kl", "grad_clip": 1.0e9,
    }
    cfg.update(over)
    return OmegaConf.create(cfg)


@pytest.fixture(scope="module")
def model64(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64, attn_implementation="sdpa")


def _batch(make_batch, model, seed=0, holes=None):
    vocab = model.config.vocab_size
    return make_batch(vocab, prompt_lens=[6, 3, 4, 2], resp_lens=[5, 2, 4, 3], P=P, R=R, seed=seed, holes=holes)


def _meta(batch, **over):
    batch.meta_info.update({"micro_batch_size": 3, "use_dynamic_bsz": False, "max_token_len": 64, **over})
    return batch


def _reference_log_probs(model, batch, temperature=1.0):
    """Each row alone (no padding), float64 log-softmax, picked at the response tokens."""
    out = torch.zeros(len(batch), R, dtype=torch.float64)
    ent = torch.zeros(len(batch), R, dtype=torch.float64)
    for b in range(len(batch)):
        mask = batch.batch["attention_mask"][b].bool()
        ids = batch.batch["input_ids"][b][mask]
        n_prompt = int(mask[:P].sum())
        n_resp = int(mask[P:].sum())
        with torch.no_grad():
            logits = model(input_ids=ids[None]).logits[0].double() / temperature
        logp = torch.log_softmax(logits, -1)
        for j in range(n_resp):
            pos = n_prompt - 1 + j
            out[b, j] = logp[pos, ids[pos + 1]]
            ent[b, j] = -(logp[pos].exp() * logp[pos]).sum()
    return out, ent


@pytest.mark.parametrize("remove_padding", [False, True])
def test_log_probs_and_entropy_match_float64_reference(model64, make_batch, remove_padding):
    batch = _meta(_batch(make_batch, model64), temperature=0.7)
    actor = DataParallelPPOActor(actor_cfg(), model64, use_remove_padding=remove_padding)
    log_probs, entropy = actor.compute_log_prob(batch, calculate_entropy=True)
    ref_lp, ref_ent = _reference_log_probs(model64, batch, temperature=0.7)
    mask = batch.batch["attention_mask"][:, P:].bool()
    assert log_probs.shape == (4, R) and entropy.shape == (4, R)
    torch.testing.assert_close(log_probs[mask], ref_lp[mask], rtol=0, atol=1e-10)
    torch.testing.assert_close(entropy[mask], ref_ent[mask], rtol=0, atol=1e-10)


def test_dynamic_micro_batches_give_the_same_log_probs_in_row_order(model64, make_batch):
    batch = _batch(make_batch, model64)
    actor = DataParallelPPOActor(actor_cfg(), model64)
    fixed, _ = actor.compute_log_prob(_meta(copy.deepcopy(batch), micro_batch_size=4))
    dynamic, _ = actor.compute_log_prob(_meta(copy.deepcopy(batch), use_dynamic_bsz=True, max_token_len=12))
    mask = batch.batch["attention_mask"][:, P:].bool()
    torch.testing.assert_close(dynamic[mask], fixed[mask], rtol=0, atol=1e-12)


def _update_batch(actor, batch, advantages, seed=0):
    old, _ = actor.compute_log_prob(_meta(copy.deepcopy(batch)))
    batch.batch["old_log_probs"] = old.detach()
    batch.batch["advantages"] = advantages
    return batch


def _sgd_actor(model, lr=1.0, **cfg):
    module = copy.deepcopy(model)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    return DataParallelPPOActor(actor_cfg(**cfg), module, opt), module


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_update_changes_weights(model64, make_batch):
    actor, module = _sgd_actor(model64, lr=0.1)
    before = _params(module)
    batch = _update_batch(actor, _batch(make_batch, model64), torch.randn(4, R, dtype=torch.float64))
    metrics = actor.update_policy(batch)
    after = _params(module)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert metrics["actor/grad_norm"] > 0
    for key in ("actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/entropy_loss", "actor/lr"):
        assert key in metrics


def test_advantages_only_on_masked_positions_give_zero_gradient(model64, make_batch):
    holes = {0: [1, 2], 2: [0]}
    batch = _batch(make_batch, model64, holes=holes)
    actor, module = _sgd_actor(model64, lr=1.0)
    # advantages are non-zero exactly where response_mask is 0 (holes and padding)
    adv = (1 - batch.batch["response_mask"]).double() * 5.0
    batch = _update_batch(actor, batch, adv)
    before = _params(module)
    metrics = actor.update_policy(batch)
    assert metrics["actor/grad_norm"] == 0.0
    after = _params(module)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_gradient_accumulation_is_invariant_to_the_micro_batch_split(model64, make_batch, mode):
    batch = _batch(make_batch, model64, holes={0: [3]})
    adv = torch.randn(4, R, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for micro in (1, 4):
        actor, module = _sgd_actor(model64, lr=1.0, ppo_micro_batch_size_per_gpu=micro, loss_agg_mode=mode,
                                   entropy_coeff=0.01)
        before = _params(module)
        actor.update_policy(_update_batch(actor, copy.deepcopy(batch), adv))
        results.append({k: v - before[k] for k, v in _params(module).items()})
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-9, atol=1e-14)
    assert any(results[0][k].abs().max() > 0 for k in results[0])


def test_dynamic_batch_update_equals_fixed_update(model64, make_batch):
    batch = _batch(make_batch, model64)
    adv = torch.randn(4, R, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    deltas = []
    for dyn in (False, True):
        actor, module = _sgd_actor(model64, lr=1.0, use_dynamic_bsz=dyn, ppo_max_token_len_per_gpu=12)
        before = _params(module)
        actor.update_policy(_update_batch(actor, copy.deepcopy(batch), adv))
        deltas.append({k: v - before[k] for k, v in _params(module).items()})
    for k in deltas[0]:
        torch.testing.assert_close(deltas[0][k], deltas[1][k], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("kl_type", ["low_var_kl", "mse"])
def test_kl_loss_pulls_log_probs_toward_the_reference(model64, make_batch, kl_type):
    batch = _batch(make_batch, model64)
    actor, module = _sgd_actor(model64, lr=0.5, use_kl_loss=True, kl_loss_coef=1.0, kl_loss_type=kl_type)
    batch = _update_batch(actor, batch, torch.zeros(4, R, dtype=torch.float64))
    old = batch.batch["old_log_probs"]
    shift = torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64)[:, None]
    batch.batch["ref_log_prob"] = old + shift  # rows 0, 2: reference more likely; rows 1, 3: less
    actor.update_policy(batch)
    new, _ = actor.compute_log_prob(_meta(copy.deepcopy(batch)))
    mask = batch.batch["response_mask"].double()
    moved = ((new - old) * mask).sum(-1) / mask.sum(-1)
    assert moved[0] > 0 and moved[2] > 0, moved
    assert moved[1] < 0 and moved[3] < 0, moved


def test_entropy_bonus_raises_entropy(model64, make_batch):
    batch = _batch(make_batch, model64)
    actor, module = _sgd_actor(model64, lr=5.0, entropy_coeff=1.0)
    batch = _update_batch(actor, batch, torch.zeros(4, R, dtype=torch.float64))
    _, ent_before = actor.compute_log_prob(_meta(copy.deepcopy(batch)), calculate_entropy=True)
    actor.update_policy(batch)
    _, ent_after = actor.compute_log_prob(_meta(copy.deepcopy(batch)), calculate_entropy=True)
    mask = batch.batch["response_mask"].bool()
    assert ent_after[mask].mean() > ent_before[mask].mean()


def test_non_finite_gradient_skips_the_step(model64, make_batch):
    actor, module = _sgd_actor(model64, lr=1.0)
    adv = torch.ones(4, R, dtype=torch.float64)
    adv[0, 0] = float("nan")  # response_mask is 1 there
    batch = _update_batch(actor, _batch(make_batch, model64), adv)
    before = _params(module)
    metrics = actor.update_policy(batch)
    assert metrics["actor/skipped_steps"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in _params(module).items())


def test_scheduler_steps_once_per_update_call(model64, make_batch):
    from verl.utils.optim import build_lr_scheduler, build_optimizer

    module = copy.deepcopy(model64)
    optim_cfg = OmegaConf.create({"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0, "lr_warmup_steps": 4,
                                  "lr_warmup_steps_ratio": 0.0, "warmup_style": "constant", "min_lr_ratio": 0.0,
                                  "total_training_steps": 10})
    opt = build_optimizer(module.parameters(), optim_cfg)
    sched = build_lr_scheduler(opt, optim_cfg)
    # 2 epochs x 2 mini-batches = 4 optimizer steps in one call
    actor = DataParallelPPOActor(actor_cfg(ppo_mini_batch_size=2, ppo_epochs=2), module, opt, sched)
    batch = _update_batch(actor, _batch(make_batch, model64), torch.randn(4, R, dtype=torch.float64))
    lrs = [actor.update_policy(copy.deepcopy(batch))["actor/lr"] for _ in range(2)]
    assert lrs == pytest.approx([0.0, 0.25e-3])
    assert sched.last_epoch == 2


def test_uneven_mini_batches_and_missing_keys_are_errors(model64, make_batch):
    actor, _ = _sgd_actor(model64, ppo_mini_batch_size=3, ppo_micro_batch_size_per_gpu=1)
    batch = _update_batch(actor, _batch(make_batch, model64), torch.zeros(4, R, dtype=torch.float64))
    with pytest.raises(ValueError, match="mini-batch"):
        actor.update_policy(batch)
    actor, _ = _sgd_actor(model64, use_kl_loss=True)
    with pytest.raises(KeyError, match="ref_log_prob"):
        actor.update_policy(batch)


def _recording(actor, sizes):
    """Wrap the actor's micro-batch forward to record each micro-batch's real tokens per row."""
    forward = actor._forward_micro_batch

    def wrapped(micro, *args, **kwargs):
        sizes.append(micro["attention_mask"].sum(-1).tolist())
        return forward(micro, *args, **kwargs)

    actor._forward_micro_batch = wrapped


def test_token_budget_holds_in_log_prob_and_update_passes_and_matches_fixed_split(model64, make_batch):
    # rows of 11, 5, 8 and 5 real tokens; a budget of 9 tokens: the 11-token row must run alone
    batch = _batch(make_batch, model64)
    adv = torch.randn(4, R, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    budget = 9
    fixed_actor, fixed_module = _sgd_actor(model64, lr=1.0)
    dyn_actor, dyn_module = _sgd_actor(model64, lr=1.0, use_dynamic_bsz=True, ppo_max_token_len_per_gpu=budget)
    sizes: list[list[int]] = []
    _recording(dyn_actor, sizes)
    fixed_lp, _ = fixed_actor.compute_log_prob(_meta(copy.deepcopy(batch), micro_batch_size=4))
    dyn_lp, _ = dyn_actor.compute_log_prob(_meta(copy.deepcopy(batch), use_dynamic_bsz=True, max_token_len=budget))
    mask = batch.batch["attention_mask"][:, P:].bool()
    torch.testing.assert_close(dyn_lp[mask], fixed_lp[mask], rtol=0, atol=1e-12)
    assert sorted(t for s in sizes for t in s) == [5, 5, 8, 11]
    assert [11] in sizes and all(sum(s) <= budget for s in sizes if s != [11])

    sizes.clear()
    before = _params(fixed_module)
    data = copy.deepcopy(batch)
    data.batch["old_log_probs"] = fixed_lp.detach()
    data.batch["advantages"] = adv
    fixed_actor.update_policy(copy.deepcopy(data))
    dyn_actor.update_policy(copy.deepcopy(data))
    assert [11] in sizes and all(sum(s) <= budget for s in sizes if s != [11]) and len(sizes) >= 3
    fixed_after, dyn_after = _params(fixed_module), _params(dyn_module)
    assert any((fixed_after[k] - before[k]).abs().max() > 1e-8 for k in before)
    for k in before:
        torch.testing.assert_close(dyn_after[k] - before[k], fixed_after[k] - before[k], rtol=1e-9, atol=1e-14)
