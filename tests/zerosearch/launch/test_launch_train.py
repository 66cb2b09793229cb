"""The training launcher: KEY VALUE arguments -> Hydra overrides, checked by composing the real config."""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from zerosearch.launch import train as launch
from zerosearch.launch.keys import KEYS

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def model_dir(tmp_path):
    d = tmp_path / "models" / "Qwen2.5-3B-Instruct"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    return d


def base_args(model_dir, data_dir, device="cpu"):
    return ["MODEL_PATH", str(model_dir), "DATA_PATH", str(data_dir), "DEVICE", device]


def composed(plan):
    with initialize_config_dir(config_dir=plan.config_dir, version_base=None):
        return compose(config_name=plan.config_name, overrides=plan.overrides)


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as info:
        launch.main(argv)
    return info.value.code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Mapping


def test_every_key_reaches_its_hydra_key(model_dir, data_dir, tmp_path):
    args = base_args(model_dir, data_dir, device="cuda") + [
        "NUM_GPUS_PER_NODE", "4", "TOTAL_STEPS", "77", "IP", "10.0.0.1,10.0.0.2", "SEARCH_MODE", "simulate_prompt",
        "SIMULATION_LLM", "Qwen/Qwen2.5-14B-Instruct", "START_THRESHOLD", "0.25", "END_THRESHOLD", "0.75",
        "SEARCH_ENGINE", "google", "MAX_TURNS", "5", "TOPK", "3", "ROLLOUT_ENGINE", "hf", "PORT", "7001",
        "SIM_MODEL_NAME", "sim14b", "SIM_PROTOCOL", "sglang_native", "RETRIEVER_IP", "wiki.local",
        "RETRIEVER_PORT", "7002", "MAX_OBS_LENGTH", "300", "REWARD_METRIC", "em", "TRAIN_BATCH_SIZE", "16",
        "N_AGENT", "3", "PPO_MINI_BATCH_SIZE", "24", "MICRO_BATCH_SIZE", "3", "LOG_PROB_MICRO_BATCH_SIZE", "7",
        "MAX_PROMPT_LENGTH", "1000", "DYNAMIC_BSZ", "false", "MAX_TOKENS_PER_GPU", "5000",
        "LOG_PROB_MAX_TOKENS_PER_GPU", "9000",
        "MAX_RESPONSE_LENGTH", "900", "MAX_NEW_TOKENS", "111", "NNODES", "2", "RAY_ADDRESS", "ray://head:10001",
        "SAVE_DIR", str(tmp_path / "ckpt"), "EXPERIMENT_NAME", "my run", "LOGGER", "console,wandb",
        "SAVE_FREQ", "10", "TEST_FREQ", "20", "SEED", "7",
        # launcher-only keys of the memory plan (tests/zerosearch/launch/test_launch_plan.py): no Hydra key
        "GPU_MEMORY_GIB", "40", "PLAN_CHECK", "off",
    ]
    given = set(args[0::2])
    assert given == {k.name for k in KEYS}, "this test must set every key"
    cfg = composed(launch.parse_launch_args("grpo", args))
    expected = {
        "trainer.n_gpus_per_node": 4, "actor_rollout_ref.model.path": str(model_dir),
        "data.train_files": str(data_dir / "train.parquet"), "data.val_files": str(data_dir / "test.parquet"),
        "trainer.total_training_steps": 77, "retriever.simulation.host": "10.0.0.1,10.0.0.2",
        "retriever.search_mode": "simulate_prompt", "retriever.start_threshold": 0.25,
        "retriever.end_threshold": 0.75, "retriever.search_engine": "google", "retriever.max_turns": 5,
        "retriever.topk": 3, "trainer.device": "cuda", "actor_rollout_ref.rollout.name": "hf",
        "retriever.simulation.port": 7001, "retriever.simulation.model": "sim14b",
        "retriever.simulation.protocol": "sglang_native", "retriever.wiki.host": "wiki.local",
        "retriever.wiki.port": 7002, "retriever.max_obs_length": 300, "reward.fn_kwargs.metric": "em",
        "data.train_batch_size": 16, "actor_rollout_ref.rollout.n": 3,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 3,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 7,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 7,
        "actor_rollout_ref.actor.use_dynamic_bsz": False, "critic.use_dynamic_bsz": False,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 5000, "critic.ppo_max_token_len_per_gpu": 5000,
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": 9000,
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu": 9000,
        "data.max_prompt_length": 1000, "data.max_response_length": 900,
        "actor_rollout_ref.rollout.max_new_tokens": 111, "trainer.nnodes": 2,
        "trainer.ray_address": "ray://head:10001", "trainer.experiment_name": "my-run",
        "trainer.default_local_dir": str(tmp_path / "ckpt" / "my-run"), "trainer.logger": ["console", "wandb"],
        "trainer.save_freq": 10, "trainer.test_freq": 20, "trainer.seed": 7,
        # 16 prompts x 3 = 48 trajectories = two mini-batches of 24; 24 / (2 x 4) = 3 per device.
        "actor_rollout_ref.actor.ppo_mini_batch_size": 24,
    }
    for dotted, value in expected.items():
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        got = list(node) if dotted == "trainer.logger" else node
        assert got == value, dotted


def test_defaults(model_dir, data_dir):
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir))
    cfg = composed(plan)
    assert cfg.trainer.n_gpus_per_node == 1 and cfg.trainer.total_training_steps == 203
    assert cfg.retriever.simulation.host == "127.0.0.1" and cfg.retriever.simulation.port == 6001
    assert cfg.retriever.simulation.model == "simulation" and cfg.retriever.simulation.protocol == "openai"
    assert (cfg.retriever.search_mode, cfg.retriever.search_engine) == ("simulate_sft", "wiki")
    assert (cfg.retriever.start_threshold, cfg.retriever.end_threshold) == (0.0, 0.5)
    assert (cfg.retriever.max_turns, cfg.retriever.topk) == (2, 5)
    assert cfg.data.train_batch_size == 64 and cfg.actor_rollout_ref.rollout.n == 5
    # 320 trajectories on one device: auto micro-batch = largest divisor of 320 that is <= 16.
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 320
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 16
    assert cfg.trainer.test_freq == -1 and cfg.trainer.save_freq == 50 and cfg.trainer.ray_address is None
    assert list(cfg.trainer.logger) == ["console", "jsonl"]
    assert cfg.trainer.default_local_dir == os.path.abspath(os.path.join("verl_checkpoints", plan.experiment_name))
    assert plan.experiment_name == "Qwen2.5-3B-Instruct_GRPO_simulate_sft_simulation_0_0.5_wiki_turns_2"


def test_auto_micro_batch_divides_the_per_device_batch(model_dir, data_dir):
    # 6 prompts x 5 = 30 trajectories over 2 devices = 15 per device -> largest divisor <= 16 is 15.
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + [
        "TRAIN_BATCH_SIZE", "6", "NUM_GPUS_PER_NODE", "2"])
    assert plan.settings["MICRO_BATCH_SIZE"] == 15
    # 7 x 5 = 35 on one device -> 7.
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + ["TRAIN_BATCH_SIZE", "7"])
    assert plan.settings["MICRO_BATCH_SIZE"] == 7


def test_ppo_mini_batch_size_auto_is_the_whole_step_and_a_value_splits_it(model_dir, data_dir):
    # auto: 64 x 5 = 320 trajectories, one update per step (today's behaviour), critic alike
    plan = launch.parse_launch_args("ppo", base_args(model_dir, data_dir))
    assert plan.settings["PPO_MINI_BATCH_SIZE"] == 320
    # the original's two updates per step, made even: 320 / 160 = 2 mini-batches; on 4 devices
    # 160 / 4 = 40 per device, auto micro-batch = largest divisor of 40 that is <= 16 = 10
    plan = launch.parse_launch_args("ppo", base_args(model_dir, data_dir) + [
        "PPO_MINI_BATCH_SIZE", "160", "NUM_GPUS_PER_NODE", "4"])
    cfg = composed(plan)
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 160
    assert cfg.critic.ppo_mini_batch_size == 160
    assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 10
    assert cfg.critic.ppo_micro_batch_size_per_gpu == 10
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=160" in plan.overrides


@pytest.mark.parametrize("extra, why", [
    (["PPO_MINI_BATCH_SIZE", "256"], "divide the 320"),  # the original's uneven 256 + 64
    (["PPO_MINI_BATCH_SIZE", "0"], "integer > 0"),
    (["PPO_MINI_BATCH_SIZE", "10", "NUM_GPUS_PER_NODE", "4"], "multiple of the 4 devices"),
    (["PPO_MINI_BATCH_SIZE", "40", "MICRO_BATCH_SIZE", "16"], "per-device mini-batch of 40"),
])
def test_ppo_mini_batch_size_must_split_the_step_evenly(model_dir, data_dir, capsys, extra, why):
    code, err = run_main(["--algo", "grpo"] + base_args(model_dir, data_dir) + extra, capsys)
    key = "MICRO_BATCH_SIZE" if "MICRO_BATCH_SIZE" in extra else "PPO_MINI_BATCH_SIZE"
    assert code == 2 and key in err and why in err


def _vllm_importable(monkeypatch, importable: bool) -> None:
    """Make ``importlib.util.find_spec("vllm")`` (the auto rule's probe) find vLLM or not."""
    real = launch.importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "vllm":
            return real("os") if importable else None  # any spec stands for "importable"
        return real(name, *args, **kwargs)

    monkeypatch.setattr(launch.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("importable", [True, False])
def test_auto_rollout_engine_rule(monkeypatch, importable):
    _vllm_importable(monkeypatch, importable)
    assert launch.auto_rollout_engine("cuda") == "vllm"
    assert launch.auto_rollout_engine("cpu") == ("vllm" if importable else "hf")


@pytest.mark.parametrize("importable", [True, False])
def test_auto_rollout_engine_reaches_the_config(model_dir, data_dir, monkeypatch, importable):
    _vllm_importable(monkeypatch, importable)
    cpu = launch.parse_launch_args("grpo", base_args(model_dir, data_dir, device="cpu"))
    gpu = launch.parse_launch_args("grpo", base_args(model_dir, data_dir, device="cuda"))
    engine = "vllm" if importable else "hf"
    assert cpu.settings["ROLLOUT_ENGINE"] == engine and gpu.settings["ROLLOUT_ENGINE"] == "vllm"
    assert composed(cpu).actor_rollout_ref.rollout.name == engine
    # vLLM-CPU's thread settings come with the engine, not with the device.
    assert ("VLLM_CPU_NUM_OF_RESERVED_CPU" in cpu.env) is importable
    # An explicit value always wins over the rule.
    explicit = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + ["ROLLOUT_ENGINE", "hf"])
    assert explicit.settings["ROLLOUT_ENGINE"] == "hf"


def test_device_dependent_defaults(model_dir, data_dir):
    gpu = composed(launch.parse_launch_args("ppo", base_args(model_dir, data_dir, device="cuda")))
    cpu = composed(launch.parse_launch_args("ppo", base_args(model_dir, data_dir, device="cpu")))
    assert gpu.actor_rollout_ref.rollout.name == "vllm"
    assert cpu.actor_rollout_ref.rollout.name == launch.auto_rollout_engine("cpu")
    for cfg, on in ((gpu, True), (cpu, False)):
        assert cfg.actor_rollout_ref.actor.fsdp_config.param_offload is on
        assert cfg.actor_rollout_ref.actor.fsdp_config.optimizer_offload is on
        assert cfg.actor_rollout_ref.ref.fsdp_config.param_offload is on
        assert cfg.critic.fsdp_config.param_offload is on
        assert cfg.actor_rollout_ref.model.use_remove_padding is on
        assert cfg.critic.model.use_remove_padding is on
        assert cfg.actor_rollout_ref.actor.use_dynamic_bsz is on and cfg.critic.use_dynamic_bsz is on
        assert cfg.trainer.device == ("cuda" if on else "cpu")
    # the paper's GPU run: bf16 actor / reference / critic compute and vLLM weights, flash-attn if present
    assert (gpu.actor_rollout_ref.model.dtype, gpu.actor_rollout_ref.rollout.dtype, gpu.critic.model.dtype) == (
        "bfloat16", "bfloat16", "bfloat16")
    assert gpu.actor_rollout_ref.model.attn_implementation == "auto"
    # CPU numerics unchanged: float32 and sdpa
    assert (cpu.actor_rollout_ref.model.dtype, cpu.actor_rollout_ref.rollout.dtype, cpu.critic.model.dtype) == (
        "float32", "float32", "float32")
    assert cpu.actor_rollout_ref.model.attn_implementation == "sdpa"


def test_token_budget_keys_auto_leave_the_profile_and_values_override_it(model_dir, data_dir):
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir, device="cuda"))
    assert not [o for o in plan.overrides if "max_token_len" in o or "use_dynamic_bsz" in o]
    cfg = composed(plan)
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 16384
    assert cfg.actor_rollout_ref.ref.log_prob_max_token_len_per_gpu == 32768
    cfg = composed(launch.parse_launch_args("grpo", base_args(model_dir, data_dir, device="cpu") + [
        "DYNAMIC_BSZ", "true", "MAX_TOKENS_PER_GPU", "4096", "LOG_PROB_MAX_TOKENS_PER_GPU", "8192"]))
    assert cfg.actor_rollout_ref.actor.use_dynamic_bsz is True and cfg.critic.use_dynamic_bsz is True
    assert cfg.critic.ppo_max_token_len_per_gpu == 4096
    assert cfg.actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu == 8192
    assert cfg.actor_rollout_ref.model.dtype == "float32"  # the rest of the cpu profile stands


def test_help_shows_the_device_profiles(capsys):
    assert launch.main(["--algo", "grpo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "verl/trainer/config/device/DEVICE.yaml" in out
    row = next(l for l in out.splitlines() if l.strip().startswith("model_dtype "))
    assert row.split()[1:] == ["bfloat16", "float32"]


def test_cpu_vllm_environment_and_caller_env_wins(model_dir, data_dir):
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + ["ROLLOUT_ENGINE", "vllm"])
    assert plan.env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and plan.env["PYTHONUNBUFFERED"] == "1"
    env = plan.environment({"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "HOME": "/h"})
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1" and env["HOME"] == "/h" and env["PYTHONUNBUFFERED"] == "1"
    hf = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + ["ROLLOUT_ENGINE", "hf"])
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in hf.env


def test_order_does_not_matter(model_dir, data_dir):
    pairs = [("MODEL_PATH", str(model_dir)), ("DATA_PATH", str(data_dir)), ("DEVICE", "cpu"), ("TOPK", "3"),
             ("IP", "h1,h2"), ("MAX_TURNS", "4"), ("START_THRESHOLD", "0.1"), ("SEED", "5")]
    reference = launch.parse_launch_args("reinforce", [x for p in pairs for x in p]).overrides
    rng = random.Random(0)
    for _ in range(5):
        rng.shuffle(pairs)
        assert launch.parse_launch_args("reinforce", [x for p in pairs for x in p]).overrides == reference


def test_passthrough_comes_last_and_wins(model_dir, data_dir):
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + [
        "SEED", "1", "--", "trainer.seed=99", "actor_rollout_ref.actor.optim.lr=2e-6"])
    assert plan.overrides[-2:] == ["trainer.seed=99", "actor_rollout_ref.actor.optim.lr=2e-6"]
    cfg = composed(plan)
    assert cfg.trainer.seed == 99 and cfg.actor_rollout_ref.actor.optim.lr == 2e-6


def test_awkward_strings_survive_hydra(tmp_path, data_dir):
    model = tmp_path / "it's a model=1,2"
    model.mkdir()
    (model / "config.json").write_text("{}")
    plan = launch.parse_launch_args("grpo", ["MODEL_PATH", str(model), "DATA_PATH", str(data_dir), "DEVICE", "cpu",
                                              "SIM_MODEL_NAME", "org/model:v1 beta", "RAY_ADDRESS", "auto"])
    cfg = composed(plan)
    assert cfg.actor_rollout_ref.model.path == str(model)
    assert cfg.retriever.simulation.model == "org/model:v1 beta"
    assert cfg.trainer.ray_address == "auto"
    # The experiment name (a folder name) has no slashes or spaces.
    assert "/" not in plan.experiment_name and " " not in plan.experiment_name
    assert "_org-model-v1-beta_" in plan.experiment_name


def test_simulation_llm_is_only_in_the_experiment_name(model_dir, data_dir):
    a = launch.parse_launch_args("ppo", base_args(model_dir, data_dir) + ["SIMULATION_LLM", "Simulation_LLM_google_14B"])
    b = launch.parse_launch_args("ppo", base_args(model_dir, data_dir) + ["SIMULATION_LLM", "other/llm"])
    assert a.experiment_name == "Qwen2.5-3B-Instruct_PPO_simulate_sft_Simulation_LLM_google_14B_0_0.5_wiki_turns_2"
    assert b.experiment_name == "Qwen2.5-3B-Instruct_PPO_simulate_sft_other-llm_0_0.5_wiki_turns_2"
    strip = lambda plan: [o for o in plan.overrides
                         if not o.startswith(("trainer.experiment_name", "trainer.default_local_dir", "hydra.run.dir"))]
    assert strip(a) == strip(b)


# ---------------------------------------------------------------------------------------------
# Per-algorithm defaults (spec §2.2)


def test_grpo_and_reinforce_defaults(model_dir, data_dir):
    for algo in ("grpo", "reinforce"):
        cfg = composed(launch.parse_launch_args(algo, base_args(model_dir, data_dir)))
        actor = cfg.actor_rollout_ref.actor
        assert cfg.algorithm.adv_estimator == algo
        assert actor.optim.lr == 1e-6 and actor.optim.lr_warmup_steps_ratio == 0.95
        assert actor.use_kl_loss is True and actor.kl_loss_coef == 0.001 and actor.kl_loss_type == "low_var_kl"
        assert cfg.algorithm.use_kl_in_reward is False
        assert actor.entropy_coeff == 0.001
        assert cfg.actor_rollout_ref.rollout.n == 5 and cfg.actor_rollout_ref.rollout.top_p == 0.95
        assert cfg.actor_rollout_ref.rollout.temperature == 1.0
        assert cfg.actor_rollout_ref.ref.enable is True


def test_ppo_defaults(model_dir, data_dir):
    cfg = composed(launch.parse_launch_args("ppo", base_args(model_dir, data_dir)))
    actor = cfg.actor_rollout_ref.actor
    assert cfg.algorithm.adv_estimator == "gae"
    assert actor.optim.lr == 1e-6 and actor.optim.lr_warmup_steps_ratio == 0.285
    assert actor.use_kl_loss is False
    assert cfg.algorithm.use_kl_in_reward is True and cfg.algorithm.kl_penalty == "kl"
    assert cfg.algorithm.kl_ctrl.type == "fixed" and cfg.algorithm.kl_ctrl.kl_coef == 0.001
    assert cfg.critic.model.path == str(model_dir)
    assert cfg.critic.optim.lr == 1e-5 and cfg.critic.optim.lr_warmup_steps_ratio == 0.015
    assert cfg.critic.cliprange_value == 0.5 and cfg.trainer.critic_warmup == 0
    assert cfg.actor_rollout_ref.rollout.n == 5  # the original PPO script also used n_agent=5
    # Defect 15: the mini-batch is the whole step, for actor and critic alike.
    assert actor.ppo_mini_batch_size == 320 and cfg.critic.ppo_mini_batch_size == 320


# ---------------------------------------------------------------------------------------------
# Errors: exit code 2, the key named, the valid keys listed


@pytest.mark.parametrize("extra, key", [
    (["FOO", "1"], "FOO"),
    (["TOPK"], "TOPK"),
    (["TOPK", "3", "TOPK", "4"], "TOPK"),
    (["TOPK", "0"], "TOPK"),
    (["TOTAL_STEPS", "ten"], "TOTAL_STEPS"),
    (["NUM_GPUS_PER_NODE", "-1"], "NUM_GPUS_PER_NODE"),
    (["START_THRESHOLD", "1.5"], "START_THRESHOLD"),
    (["END_THRESHOLD", "x"], "END_THRESHOLD"),
    (["SEARCH_MODE", "simulate"], "SEARCH_MODE"),
    (["SEARCH_ENGINE", "bing"], "SEARCH_ENGINE"),
    (["SIM_PROTOCOL", "grpc"], "SIM_PROTOCOL"),
    (["DEVICE", "tpu"], "DEVICE"),
    (["ROLLOUT_ENGINE", "sglang"], "ROLLOUT_ENGINE"),
    (["PORT", "70000"], "PORT"),
    (["IP", "http://x//y"], "IP"),
    (["IP", "a,,b"], "IP"),
    (["LOGGER", "console,mlflow"], "LOGGER"),
    (["TEST_FREQ", "0"], "TEST_FREQ"),
    (["SEED", "-3"], "SEED"),
    (["REWARD_METRIC", "bleu"], "REWARD_METRIC"),
    (["TRAIN_BATCH_SIZE", "3", "N_AGENT", "1", "NUM_GPUS_PER_NODE", "2"], "TRAIN_BATCH_SIZE"),
    (["MICRO_BATCH_SIZE", "7"], "MICRO_BATCH_SIZE"),
    (["DYNAMIC_BSZ", "maybe"], "DYNAMIC_BSZ"),
    (["MAX_TOKENS_PER_GPU", "0"], "MAX_TOKENS_PER_GPU"),
    (["LOG_PROB_MAX_TOKENS_PER_GPU", "lots"], "LOG_PROB_MAX_TOKENS_PER_GPU"),
    (["trainer.seed=1"], "trainer.seed=1"),
])
def test_bad_arguments_exit_2_naming_the_key(model_dir, data_dir, capsys, extra, key):
    code, err = run_main(["--algo", "grpo"] + base_args(model_dir, data_dir) + extra, capsys)
    assert code == 2
    assert key in err
    assert "valid keys: NUM_GPUS_PER_NODE MODEL_PATH DATA_PATH" in err


def test_bad_values_say_what_was_expected(model_dir, data_dir, capsys):
    _, err = run_main(["--algo", "grpo"] + base_args(model_dir, data_dir) + ["SEARCH_MODE", "simulate"], capsys)
    assert "simulate_sft, simulate_prompt, google, wiki" in err
    _, err = run_main(["--algo", "grpo"] + base_args(model_dir, data_dir) + ["START_THRESHOLD", "2"], capsys)
    assert "[0, 1]" in err


def test_paths_are_checked(tmp_path, model_dir, data_dir, capsys):
    code, err = run_main(["--algo", "grpo", "MODEL_PATH", str(tmp_path / "nope"), "DATA_PATH", str(data_dir)], capsys)
    assert code == 2 and "MODEL_PATH" in err and "not a folder" in err
    empty = tmp_path / "empty_model"
    empty.mkdir()
    code, err = run_main(["--algo", "grpo", "MODEL_PATH", str(empty), "DATA_PATH", str(data_dir)], capsys)
    assert code == 2 and "config.json" in err
    (data_dir / "test.parquet").unlink()
    code, err = run_main(["--algo", "grpo", "MODEL_PATH", str(model_dir), "DATA_PATH", str(data_dir)], capsys)
    assert code == 2 and "DATA_PATH" in err and "test.parquet" in err


def test_required_keys(model_dir, capsys):
    code, err = run_main(["--algo", "grpo", "MODEL_PATH", str(model_dir)], capsys)
    assert code == 2 and "DATA_PATH is required" in err


def test_algo_is_required_and_checked(model_dir, data_dir, capsys):
    code, err = run_main(base_args(model_dir, data_dir), capsys)
    assert code == 2 and "--algo" in err
    code, err = run_main(["--algo", "dpo"] + base_args(model_dir, data_dir), capsys)
    assert code == 2 and "grpo, ppo, reinforce" in err


# The defaults --help shows, written out by hand from configs/zerosearch_run.yaml, configs/retriever/
# default.yaml and verl/trainer/config/ (a default changed there must be changed here too).
HELP_DEFAULTS = {
    "NUM_GPUS_PER_NODE": "default 1", "MODEL_PATH": "(required)", "DATA_PATH": "(required)",
    "TOTAL_STEPS": "default 203", "IP": "default 127.0.0.1", "SEARCH_MODE": "default simulate_sft",
    "SIMULATION_LLM": "default auto", "START_THRESHOLD": "default 0.0", "END_THRESHOLD": "default 0.5",
    "SEARCH_ENGINE": "default wiki", "MAX_TURNS": "default 2", "TOPK": "default 5", "DEVICE": "default auto",
    "ROLLOUT_ENGINE": "default auto", "PORT": "default 6001", "SIM_MODEL_NAME": "default simulation",
    "SIM_PROTOCOL": "default openai", "RETRIEVER_IP": "default 127.0.0.1", "RETRIEVER_PORT": "default 6002",
    "MAX_OBS_LENGTH": "default 2048", "REWARD_METRIC": "default f1", "TRAIN_BATCH_SIZE": "default 64",
    "N_AGENT": "default 5", "PPO_MINI_BATCH_SIZE": "default auto", "MICRO_BATCH_SIZE": "default auto",
    "LOG_PROB_MICRO_BATCH_SIZE": "default 32", "DYNAMIC_BSZ": "default auto", "MAX_TOKENS_PER_GPU": "default auto",
    "LOG_PROB_MAX_TOKENS_PER_GPU": "default auto", "MAX_PROMPT_LENGTH": "default 2048",
    "MAX_RESPONSE_LENGTH": "default 4096", "MAX_NEW_TOKENS": "default 500", "NNODES": "default 1",
    "RAY_ADDRESS": "default none", "SAVE_DIR": "default verl_checkpoints", "EXPERIMENT_NAME": "default auto",
    "LOGGER": "default console,jsonl", "SAVE_FREQ": "default 50", "TEST_FREQ": "default -1",
    "GPU_MEMORY_GIB": "default auto", "PLAN_CHECK": "default on", "SEED": "default 42",
}


def test_help_lists_every_key_with_its_default(capsys):
    assert set(HELP_DEFAULTS) == {k.name for k in KEYS}
    assert launch.main(["--algo", "ppo", "--help"]) == 0
    out = capsys.readouterr().out
    for spec in KEYS:
        line = next((l for l in out.splitlines() if l.strip().startswith(spec.name + " ")), None)
        assert line is not None, spec.name
        assert HELP_DEFAULTS[spec.name] + " " in line, line
        if spec.path:
            assert line.endswith(f"-> {spec.path}"), line
    assert "--algo ppo" in out


def _config_copy(tmp_path, edit):
    """A copy of configs/ with ``edit(text of zerosearch_run.yaml)`` applied."""
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    run = configs / "zerosearch_run.yaml"
    run.write_text(edit(run.read_text()))
    return str(configs)


def test_defaults_live_in_the_config_and_nowhere_else(model_dir, data_dir, tmp_path, capsys):
    # The launcher holds no values of its own: a default changed in the YAML is what --help shows
    # and what the run gets.
    configs = _config_copy(tmp_path, lambda t: t.replace("max_prompt_length: 2048", "max_prompt_length: 1234")
                           .replace("save_freq: 50", "save_freq: 7"))
    assert launch.main(["--algo", "grpo", "--help", "--config-dir", configs]) == 0
    out = capsys.readouterr().out
    assert "default 1234" in next(l for l in out.splitlines() if l.strip().startswith("MAX_PROMPT_LENGTH "))
    assert "default 7 " in next(l for l in out.splitlines() if l.strip().startswith("SAVE_FREQ "))
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir), config_dir=configs)
    assert plan.settings["MAX_PROMPT_LENGTH"] == 1234 and plan.settings["SAVE_FREQ"] == 7
    cfg = composed(plan)
    assert cfg.data.max_prompt_length == 1234 and cfg.trainer.save_freq == 7
    # and a key given on the command line wins over the YAML
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + ["MAX_PROMPT_LENGTH", "99"],
                                    config_dir=configs)
    assert composed(plan).data.max_prompt_length == 99
    # every key with a config home names one that exists in the composed config
    cfg = launch.compose_run_config("ppo", [])
    from omegaconf import OmegaConf

    for spec in KEYS:
        if spec.path:
            parent, _, leaf = spec.path.rpartition(".")
            assert leaf in OmegaConf.select(cfg, parent).keys(), spec.path


def test_a_bad_default_in_the_config_names_the_config_key(model_dir, data_dir, tmp_path, capsys):
    configs = _config_copy(tmp_path, lambda t: t.replace("train_batch_size: 64", "train_batch_size: -4"))
    code, err = run_main(["--algo", "grpo", "--config-dir", configs] + base_args(model_dir, data_dir), capsys)
    assert code == 2
    assert "TRAIN_BATCH_SIZE" in err and "data.train_batch_size = '-4'" in err and "an integer > 0" in err


def test_a_passthrough_override_of_a_keys_config_key_is_checked_like_the_key(model_dir, data_dir, capsys):
    # 3 prompts x 5 trajectories = 15 do not split over 2 devices, whether TRAIN_BATCH_SIZE 3 or
    # data.train_batch_size=3 after -- says it.
    code, err = run_main(["--algo", "grpo"] + base_args(model_dir, data_dir) + [
        "NUM_GPUS_PER_NODE", "2", "--", "data.train_batch_size=3"], capsys)
    assert code == 2 and "TRAIN_BATCH_SIZE" in err and "15 trajectories" in err
    # an auto key's config key set after -- replaces the rule's value in the checks
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + [
        "--", "actor_rollout_ref.actor.ppo_mini_batch_size=160"])
    assert plan.settings["PPO_MINI_BATCH_SIZE"] == 160 and plan.settings["MICRO_BATCH_SIZE"] == 16


def test_help_says_which_reward_metric_is_which_paper_column(capsys):
    assert launch.main(["--algo", "grpo", "--help"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("REWARD_METRIC "))
    assert "default f1" in line
    assert "f1 = token F1, the paper's training reward" in line
    assert "sub_em = the original ZeroSearch's \"EM\"" in line and "substring" in line
    assert "em = Search-R1's strict EM" in line


def test_help_tells_how_to_reproduce_the_original_mini_batches(capsys):
    assert launch.main(["--algo", "ppo", "--help"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("PPO_MINI_BATCH_SIZE "))
    assert "default auto" in line and "one update per step" in line
    assert "256" in line and "two updates per step" in line and "PPO_MINI_BATCH_SIZE 160" in line


def test_dry_run_prints_the_trainer_command(model_dir, data_dir, capsys):
    assert launch.main(["--algo", "grpo", "--dry-run"] + base_args(model_dir, data_dir)) == 0
    out = capsys.readouterr().out
    assert "PYTHONUNBUFFERED=1" in out
    assert "-m verl.trainer.main_ppo --config-path" in out and "--config-name zerosearch_run" in out
    assert " algo=grpo " in out


@pytest.mark.parametrize("algo, estimator", [("grpo", "grpo"), ("ppo", "gae"), ("reinforce", "reinforce")])
def test_shell_scripts(model_dir, data_dir, algo, estimator):
    script = REPO / f"train_{algo}.sh"
    proc = subprocess.run(["bash", str(script), "--dry-run"] + base_args(model_dir, data_dir),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert f" algo={algo} " in proc.stdout
    # the trainer's command composes to the algorithm's estimator
    argv = shlex.split(proc.stdout.strip().splitlines()[-1])
    config_dir, overrides = argv[argv.index("--config-path") + 1], argv[argv.index("--config-name") + 2:]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        assert compose(config_name="zerosearch_run", overrides=overrides).algorithm.adv_estimator == estimator
    bad = subprocess.run(["bash", str(script), "TOPK", "x"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "TOPK" in bad.stderr
    helped = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert helped.returncode == 0
    assert "sub_em = the original ZeroSearch's \"EM\"" in helped.stdout and "PPO_MINI_BATCH_SIZE" in helped.stdout


def test_simulation_endpoints_and_hydra_run_dir(model_dir, data_dir, tmp_path):
    plan = launch.parse_launch_args("grpo", base_args(model_dir, data_dir) + [
        "IP", "http://10.0.0.1:6001, sim2:7000", "SAVE_DIR", str(tmp_path / "runs")])
    cfg = composed(plan)
    assert cfg.retriever.simulation.host == "http://10.0.0.1:6001,sim2:7000"
    with initialize_config_dir(config_dir=plan.config_dir, version_base=None):
        hydra_cfg = compose(config_name=plan.config_name, overrides=plan.overrides, return_hydra_config=True)
    assert hydra_cfg.hydra.run.dir.startswith(str(tmp_path / "runs" / plan.experiment_name / "hydra") + "/")
