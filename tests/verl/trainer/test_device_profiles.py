"""Device profiles (verl/trainer/config/device/) reach the engine keys, and the attention-kernel choice."""

import logging
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl
from verl.utils import model as model_utils
from verl.utils.model import check_attn_implementation

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def _config(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="ppo_trainer", overrides=["actor_rollout_ref.model.path=m", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def test_trainer_device_selects_the_profile_and_explicit_keys_win():
    cuda, cpu = _config("trainer.device=cuda"), _config("trainer.device=cpu")
    arr = cuda.actor_rollout_ref
    assert (arr.model.dtype, arr.rollout.dtype, arr.model.attn_implementation) == ("bfloat16", "bfloat16", "auto")
    assert arr.actor.use_dynamic_bsz is True and arr.model.use_remove_padding is True
    assert arr.actor.ppo_max_token_len_per_gpu == 16384 and arr.ref.log_prob_max_token_len_per_gpu == 32768
    assert cuda.critic.model.dtype == "bfloat16" and cuda.critic.ppo_max_token_len_per_gpu == 16384
    arr = cpu.actor_rollout_ref
    assert (arr.model.dtype, arr.rollout.dtype, arr.model.attn_implementation) == ("float32", "float32", "sdpa")
    assert arr.actor.use_dynamic_bsz is False and arr.actor.fsdp_config.param_offload is False
    one = _config("trainer.device=cuda", "actor_rollout_ref.model.dtype=float32")
    assert one.actor_rollout_ref.model.dtype == "float32" and one.actor_rollout_ref.rollout.dtype == "bfloat16"


def test_auto_attention_uses_flash_attn_when_it_imports(monkeypatch):
    model_utils._auto_attn.cache_clear()
    monkeypatch.setattr(model_utils, "flash_attn_available", lambda: True)
    try:
        assert check_attn_implementation("auto", "cuda", torch.bfloat16) == "flash_attention_2"
        # flash-attn cannot compute in float32: auto takes sdpa there, and cpu never uses flash-attn
        assert check_attn_implementation("auto", "cuda", torch.float32) == "sdpa"
        assert check_attn_implementation("auto", "cpu", torch.bfloat16) == "sdpa"
    finally:
        model_utils._auto_attn.cache_clear()


def test_auto_attention_without_flash_attn_is_sdpa_with_one_warning(monkeypatch, caplog):
    model_utils._auto_attn.cache_clear()
    monkeypatch.setattr(model_utils, "flash_attn_available", lambda: False)
    try:
        with caplog.at_level(logging.WARNING, logger="verl.utils.model"):
            assert check_attn_implementation("auto", "cuda", torch.bfloat16) == "sdpa"
            assert check_attn_implementation("auto", "cuda", torch.bfloat16) == "sdpa"
        warnings = [r for r in caplog.records if "flash_attn does not import" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        model_utils._auto_attn.cache_clear()


def test_flash_attention_refuses_float32_cpu_and_a_missing_package(monkeypatch):
    monkeypatch.setattr(model_utils, "flash_attn_available", lambda: True)
    with pytest.raises(ValueError, match=r"model.attn_implementation=flash_attention_2.*model.dtype is float32"):
        check_attn_implementation("flash_attention_2", "cuda", torch.float32)
    with pytest.raises(ValueError, match="needs trainer.device=cuda"):
        check_attn_implementation("flash_attention_2", "cpu", torch.bfloat16)
    assert check_attn_implementation("flash_attention_2", "cuda", torch.bfloat16) == "flash_attention_2"
    monkeypatch.setattr(model_utils, "flash_attn_available", lambda: False)
    with pytest.raises(ValueError, match="flash_attn package does not import"):
        check_attn_implementation("flash_attention_2", "cuda", torch.bfloat16)
    with pytest.raises(ValueError, match="must be one of"):
        check_attn_implementation("flash", "cuda", torch.bfloat16)
