"""Training launcher: named ``KEY VALUE`` arguments -> checked settings -> Hydra overrides -> trainer.

Usage::

    python -m zerosearch.launch --algo grpo MODEL_PATH m DATA_PATH d [KEY VALUE ...] [-- HYDRA_OVERRIDE ...]
    python -m zerosearch.launch --algo ppo --help

``train_grpo.sh`` / ``train_ppo.sh`` / ``train_reinforce.sh`` call this. Keys may come in any order;
each key sets one config key and has a validator; its default is that config key's value in
``configs/zerosearch_run.yaml`` with ``configs/algo/<algorithm>.yaml`` (``--help`` reads them), or a
rule (``auto``) the key's help states. An unknown key, a key without a value or a bad value (given,
or found in the config) stops with exit code 2 and a message naming the key. Everything after ``--`` is
passed to Hydra unchanged and placed last, so it wins over what the keys set. ``--dry-run`` prints
the environment and the trainer command instead of running it. ``--plan`` prints the memory plan
(``zerosearch.launch.plan``) from the model's config.json alone and exits (2 when it does not fit);
a real run prints the same plan first and stops with exit 2 when it does not fit, unless
``PLAN_CHECK off``.

The per-algorithm settings (``configs/algo/``) reproduce the original ZeroSearch scripts, including
the ones that look accidental; each of those is marked there so that it is a visible choice, not an
inherited one.
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
    LaunchKey,
    config_text,
    valid_keys_line,
)

ALGORITHMS = ("grpo", "ppo", "reinforce")
TRAINER_MODULE = "verl.trainer.main_ppo"
# The runs the launchers start: the original release's settings, home of every default --help shows.
CONFIG_NAME = "zerosearch_run"
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


def _parse_given(given: dict[str, str], plan_only: bool = False) -> dict[str, Any]:
    """Validate each given value; then check that every required key was given.
    ``plan_only``: paths are checked as ``--plan`` needs them (PLAN_PARSERS)."""
    settings: dict[str, Any] = {}
    for spec in KEYS:  # given values first, so a bad value is reported before a missing key
        if spec.name in given:
            settings[spec.name] = _parse_value(spec, given[spec.name], plan_only)
    for spec in KEYS:
        if spec.required and spec.name not in given:
            raise LaunchArgumentError(f"key {spec.name} is required ({spec.help}). {valid_keys_line()}", key=spec.name)
    return settings


def _parse_value(spec: LaunchKey, text: str, plan_only: bool, where: str = "") -> Any:
    parse = PLAN_PARSERS.get(spec.name, spec.parse) if plan_only else spec.parse
    try:
        return parse(text)
    except ValueError as err:
        raise LaunchArgumentError(f"bad value for {spec.name}{where}: {err}. {valid_keys_line()}", key=spec.name) from None


def _plain(value: Any) -> Any:
    """A config value as plain Python (a list node becomes a list)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def compose_run_config(algo: str, overrides: list[str], config_dir: str = DEFAULT_CONFIG_DIR) -> Any:
    """The run's config (``CONFIG_NAME`` with ``algo/<algo>.yaml``) composed with ``overrides``, unresolved."""
    from verl.trainer.main_ppo import load_config

    return load_config([f"algo={algo}", *overrides], config_dir, CONFIG_NAME)


def _defaults_from_config(algo: str, settings: dict[str, Any], passthrough: list[str], config_dir: str,
                          plan_only: bool) -> None:
    """Fill in every key not given: the config's value at the key's path, or ``auto``.

    The config is composed with the given keys and the passthrough, so the values checked here
    are the ones the run gets (a passthrough override of a key's path wins, as it does in the run).
    """
    from omegaconf import OmegaConf

    from verl.trainer.main_ppo import override_keys

    given = [f"{spec.path}={hydra_value(settings[spec.name])}" for spec in KEYS
             if spec.name in settings and spec.path and not (spec.auto and settings[spec.name] == AUTO)]
    cfg = compose_run_config(algo, [*given, *passthrough], config_dir)
    passed = set(override_keys(passthrough))
    source = f"{CONFIG_NAME}.yaml with algo/{algo}.yaml"
    for spec in KEYS:
        if spec.path is None or not (spec.reads_config or spec.path in passed):
            settings.setdefault(spec.name, AUTO if spec.auto else None)
            continue
        try:
            value = _plain(OmegaConf.select(cfg, spec.path, throw_on_missing=True))
        except Exception as err:  # a missing (???) or unresolvable value
            raise LaunchArgumentError(f"{spec.name}: the config key {spec.path} has no usable value ({err}); "
                                      f"give {spec.name} or set {spec.path} in {source}", key=spec.name) from None
        where = f" (config key {spec.path} = {config_text(value)!r}, from {source} or an override after --)"
        settings[spec.name] = _parse_value(spec, config_text(value), plan_only, where)


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


def key_overrides(s: dict[str, Any], given: set[str]) -> list[tuple[str, Any]]:
    """The run's overrides, as (Hydra key, value): the data files, each key given on the command
    line on its config key, each ``auto`` key the launcher resolved (the device profile's token
    budgets stay with the config), and SAVE_DIR as an absolute path (where the launcher says the
    run goes, whichever folder the trainer starts in). A key not given keeps the config's value."""
    pairs: list[tuple[str, Any]] = [("data.train_files", os.path.join(s["DATA_PATH"], "train.parquet")),
                                    ("data.val_files", os.path.join(s["DATA_PATH"], "test.parquet"))]
    for spec in KEYS:
        if spec.path is None or (spec.auto and s[spec.name] == AUTO):
            continue
        if spec.name in given or spec.auto or spec.name == "SAVE_DIR":
            pairs.append((spec.path, s[spec.name]))
    return pairs


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
    settings = _parse_given(_split_pairs(pairs), plan_only)
    given = set(settings)
    _defaults_from_config(algo, settings, list(passthrough), config_dir, plan_only)
    _resolve(algo, settings)
    keyed = [("algo", algo), *key_overrides(settings, given)]
    overrides = [f"{k}={hydra_value(v)}" for k, v in keyed] + list(passthrough)
    return LaunchPlan(algo=algo, settings=settings, overrides=overrides,
                      experiment_name=settings["EXPERIMENT_NAME"], env=_environment(settings),
                      config_dir=config_dir)


# ---------------------------------------------------------------------------------------------
# Command line


def key_defaults(algo: str = "grpo", config_dir: str = DEFAULT_CONFIG_DIR) -> dict[str, str]:
    """Each key's default as ``--help`` shows it: ``(required)``, ``auto``, or the config's value."""
    from omegaconf import OmegaConf

    cfg = compose_run_config(algo, [], config_dir)
    return {spec.name: "(required)" if spec.required else AUTO if spec.auto
            else config_text(_plain(OmegaConf.select(cfg, spec.path))) for spec in KEYS}


def help_text(algo: str | None = None, config_dir: str = DEFAULT_CONFIG_DIR) -> str:
    """Usage plus every key with its default (read from the config) and meaning."""
    name = algo or "{" + ",".join(ALGORITHMS) + "}"
    lines = [
        f"usage: python -m zerosearch.launch --algo {name} [--dry-run] [--plan] [--config-dir DIR] "
        "KEY VALUE [KEY VALUE ...] [-- HYDRA_OVERRIDE ...]",
        "",
        "Keys come in any order. Required keys have no default. Anything after -- is passed to Hydra",
        "as is and wins over the keys (e.g. -- actor_rollout_ref.actor.optim.lr=2e-6).",
        f"A key sets the config key after its arrow; its default is that key's value in {CONFIG_NAME}.yaml",
        f"(and what it builds on: zerosearch_trainer.yaml, algo/{algo or 'ALGO'}.yaml, the engine's files), or auto,",
        "a rule its text states.",
        "--dry-run prints the environment and the trainer command without running it.",
        "--plan prints the memory plan per GPU and phase from the model's config.json alone (no GPU, no weights,",
        "no data needed; GPU_MEMORY_GIB and DEVICE cuda plan a GPU run anywhere) and exits: 0 fits, 2 does not.",
        "A run prints the same plan first and stops with exit 2 before loading anything when it does not fit",
        "(PLAN_CHECK off runs anyway).",
    ]
    defaults = key_defaults(algo or "grpo", config_dir)
    group = None
    width = max(len(k.name) for k in KEYS)
    groups = ["run", "search", "batching and scale", "logging, checkpoints, cluster"]
    for spec in sorted(KEYS, key=lambda k: groups.index(k.group)):
        if spec.group != group:
            group = spec.group
            lines += ["", f"{group}:"]
        default = defaults[spec.name] if spec.required else f"default {defaults[spec.name]}"
        target = f" -> {spec.path}" if spec.path else ""
        lines.append(f"  {spec.name:<{width}}  {default:<24}  {spec.help}{target}")
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
            sys.stdout.write(help_text(opts["algo"], opts["config_dir"]))
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
