"""End-to-end CPU runs of the engine: 3 steps each of GAE, GRPO and REINFORCE, and resume.

Single-turn rollouts with HF generate on the tiny model, Ray workers on gloo, a text-only reward.
"""

import json
import os

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _overrides(model, data, out, estimator, steps, extra=()):
    ov = [
        f"data.train_files={data}/train.parquet",
        f"data.val_files={data}/test.parquet",
        "data.train_batch_size=2",
        "data.val_batch_size=5",
        "data.max_prompt_length=256",
        "data.max_response_length=24",
        "data.truncation=left",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.max_new_tokens=24",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.actor.strategy=none",
        "critic.strategy=none",
        "critic.optim.lr=1e-3",
        f"algorithm.adv_estimator={estimator}",
        "reward.fn=tests.e2e.rewards.vowel_share",
        "reward.num_examine=0",
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=1",
        "trainer.ray_num_cpus=2",
        f"trainer.total_training_steps={steps}",
        "trainer.logger=[jsonl]",
        f"trainer.default_local_dir={out}",
        "trainer.seed=7",
    ]
    if estimator == "gae":
        ov += ["algorithm.use_kl_in_reward=true", "actor_rollout_ref.actor.use_kl_loss=false"]
    else:
        ov += ["actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.kl_loss_coef=0.01"]
    return ov + list(extra)


def _run(overrides):
    from verl.trainer.main_ppo import load_config, run_ppo

    cfg = load_config(overrides)
    return run_ppo(cfg)


def _metrics(out):
    with open(os.path.join(out, "logs", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


@pytest.mark.parametrize("estimator", ["grpo", "reinforce", "gae"])
def test_three_steps_change_weights_with_finite_losses(estimator, tiny_model, qa_parquet, tmp_path):
    out = str(tmp_path / estimator)
    _run(_overrides(tiny_model, qa_parquet, out, estimator, 3, ["trainer.save_freq=3"]))
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["actor/pg_loss"] is not None and abs(r["actor/pg_loss"]) < 1e3
        assert r["critic/advantages/mean"] is not None
        assert r["actor/grad_norm"] is not None and r["actor/grad_norm"] > 0
        if estimator == "gae":
            assert r["critic/vf_loss"] is not None
            assert r["actor/reward_kl_penalty"] is not None
        else:
            assert r["actor/kl_loss"] is not None
    before = _weights(tiny_model)
    after = _weights(os.path.join(out, "global_step_3", "actor", "huggingface"))
    assert set(before) == set(after)
    changed = max(float((before[k].float() - after[k].float()).abs().max()) for k in before)
    assert changed > 1e-6


def test_resume_matches_uninterrupted_run(tiny_model, qa_parquet, tmp_path):
    full = str(tmp_path / "full")
    _run(_overrides(tiny_model, qa_parquet, full, "grpo", 4, ["trainer.save_freq=2"]))
    part = str(tmp_path / "part")
    # the same run stopped after step 2 (constant lr, so the shorter horizon changes nothing) ...
    _run(_overrides(tiny_model, qa_parquet, part, "grpo", 2, ["trainer.save_freq=2"]))
    # ... then resumed from its checkpoint for the remaining two steps
    _run(_overrides(tiny_model, qa_parquet, part, "grpo", 4, ["trainer.save_freq=2", "trainer.resume_mode=auto"]))
    a = _weights(os.path.join(full, "global_step_4", "actor", "huggingface"))
    b = _weights(os.path.join(part, "global_step_4", "actor", "huggingface"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    fm = {r["step"]: r for r in _metrics(full)}
    pm = {r["step"]: r for r in _metrics(part)}
    for step in (3, 4):
        for key in ("critic/score/mean", "actor/pg_loss", "actor/kl_loss", "response_length/mean"):
            assert fm[step][key] == pytest.approx(pm[step][key], abs=1e-6), (step, key)


def test_user_registered_estimator_trains_end_to_end(tiny_model, qa_parquet, tmp_path):
    """An estimator registered in a user module, named through algorithm.import_modules, drives the step."""
    out = str(tmp_path / "custom")
    _run(_overrides(tiny_model, qa_parquet, out, "constant_quarter", 2,
                    ["algorithm.import_modules=[tests.e2e.custom_estimator]", "trainer.save_freq=2"]))
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # tests/e2e/custom_estimator.py gives 0.25 on every policy token, whatever the reward
        assert r["critic/advantages/mean"] == pytest.approx(0.25, abs=1e-6)
        assert r["critic/advantages/max"] == pytest.approx(0.25, abs=1e-6)
        assert "critic/vf_loss" not in r  # it reads no values, so the run built no critic
    before = _weights(tiny_model)
    after = _weights(os.path.join(out, "global_step_2", "actor", "huggingface"))
    assert max(float((before[k].float() - after[k].float()).abs().max()) for k in before) > 1e-6
