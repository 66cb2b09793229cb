"""The named arguments of the training launchers: each key's config key, meaning and validator.

The launchers (``train_grpo.sh``, ``train_ppo.sh``, ``train_reinforce.sh``, ``python -m
zerosearch.launch.train``) take ``KEY VALUE`` pairs in any order. This module holds no defaults: a
key's default is the value of its config key in ``configs/zerosearch_run.yaml`` (and what that file
builds on), or a launcher rule (``auto``) that the key's help states. It only describes and checks
single values; ``zerosearch.launch.train`` reads the defaults and turns the values into Hydra
overrides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable

AUTO = "auto"
SEARCH_MODES = ("simulate_sft", "simulate_prompt", "google", "wiki")
DEVICES = ("cuda", "cpu")
PROTOCOLS = ("openai", "sglang_native")
ROLLOUT_ENGINES = ("hf", "vllm")
LOGGERS = ("console", "jsonl", "wandb", "tensorboard")
REWARD_METRICS = ("f1", "em", "sub_em")


class LaunchArgumentError(ValueError):
    """A launcher argument is unknown, lacks its value, or has a bad value.

    Attributes:
        key: the offending key (or option), or None when the error is not about one key.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class LaunchKey:
    """One launcher key.

    Attributes:
        name: the key as typed on the command line (upper case).
        path: the config key it sets (dotted). Its default is that key's value in the run's
            config (``configs/zerosearch_run.yaml`` and what it builds on); None for a key that
            sets a derived value (``DATA_PATH``) or none (``GPU_MEMORY_GIB``).
        help: what it means.
        parse: turns the text into a value; raises ValueError with what was expected.
        group: heading under which ``--help`` lists it.
        required: no default: the key must be given.
        auto: the default is ``auto``, a rule of the launcher that ``help`` states (e.g. the
            device the machine has); otherwise the default is read from the config at ``path``.
    """

    name: str
    path: str | None
    help: str
    parse: Callable[[str], Any]
    group: str
    required: bool = False
    auto: bool = False

    @property
    def reads_config(self) -> bool:
        """Whether its default is the config's value at ``path``."""
        return self.path is not None and not self.required and not self.auto


def config_text(value: Any) -> str:
    """A config value as the launcher would read it typed: lists comma-joined, None as ``none``,
    bools as ``true``/``false``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(config_text(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Validators: text in, value out, ValueError("expected ...") on bad input.


def checked_number(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """A validator: ``convert`` the text (``int`` or ``float``) and keep it when ``ok(value)``;
    otherwise ValueError("expected <expected>, got '<text>'")."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise ValueError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = checked_number(int, lambda v: v > 0, "an integer > 0")
non_negative_int = checked_number(int, lambda v: v >= 0, "an integer >= 0")
# An interval in steps: an integer > 0, or -1 for never.
frequency = checked_number(int, lambda v: v > 0 or v == -1, "an integer > 0 or -1 (never)")
port = checked_number(int, lambda v: 1 <= v <= 65535, "a TCP port 1..65535")
probability = checked_number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
gib_amount = checked_number(float, lambda v: v > 0, "a number of GiB > 0")


def choice(*valid: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in valid:
            raise ValueError(f"expected one of {', '.join(valid)}; got {text!r}")
        return text

    return parse


_HOST = re.compile(r"^[A-Za-z0-9_.\-:\[\]]+$")
_ENDPOINT = re.compile(r"^(https?://)?[A-Za-z0-9_.\-:\[\]]+/?$")


def host_list(text: str) -> str:
    """One server or a comma-separated list; each entry ``host``, ``host:port`` or ``http://host:port``."""
    hosts = [h.strip() for h in text.split(",")]
    if not text.strip() or any(not h or not _ENDPOINT.match(h) for h in hosts):
        raise ValueError(f"expected host, host:port or http://host:port, or a comma-separated list of them; got {text!r}")
    return ",".join(hosts)


def host(text: str) -> str:
    if not text or not _HOST.match(text) or "," in text:
        raise ValueError(f"expected one host name or IP address (no scheme), got {text!r}")
    return text


def non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a non-empty value")
    return text


def model_dir(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        raise ValueError(f"expected a Hugging Face model folder, but {path} is not a folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"expected a Hugging Face model folder with config.json, none in {path}")
    return path


def data_dir(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        raise ValueError(f"expected a folder with train.parquet and test.parquet, but {path} is not a folder")
    missing = [f for f in ("train.parquet", "test.parquet") if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ValueError(f"expected a folder with train.parquet and test.parquet; missing {', '.join(missing)} in {path}")
    return path


def out_dir(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a folder path")
    return os.path.abspath(os.path.expanduser(text))


def config_source(text: str) -> str:
    """MODEL_PATH under ``--plan``: a model folder with config.json (weights optional) or a config .json file."""
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.isfile(path) and path.endswith(".json"):
        return path
    return model_dir(text)


def logger_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in LOGGERS]
    if not names or bad:
        raise ValueError(f"expected a comma-separated subset of {', '.join(LOGGERS)}; got {text!r}")
    return list(dict.fromkeys(names))


def auto_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(text: str) -> Any:
        return AUTO if text == AUTO else parse(text)

    return wrapped


def boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def none_or_text(text: str) -> str | None:
    return None if text.lower() in ("none", "null", "") else text


# ---------------------------------------------------------------------------------------------
# The keys. The first twelve are the positional arguments of the original launch scripts, now
# named; the rest make a CPU or a multi-node deployment possible without editing a script.

_G_RUN = "run"
_G_SEARCH = "search"
_G_SCALE = "batching and scale"
_G_OPS = "logging, checkpoints, cluster"

KEYS: tuple[LaunchKey, ...] = (
    LaunchKey("NUM_GPUS_PER_NODE", "trainer.n_gpus_per_node", "GPUs per node (on cpu: worker processes per node)", positive_int, _G_SCALE),
    LaunchKey("MODEL_PATH", "actor_rollout_ref.model.path", "policy model folder (Hugging Face, with config.json); the critic of ppo follows it", model_dir, _G_RUN, required=True),
    LaunchKey("DATA_PATH", None, "folder holding train.parquet and test.parquet -> data.train_files, data.val_files", data_dir, _G_RUN, required=True),
    LaunchKey("TOTAL_STEPS", "trainer.total_training_steps", "training steps, also the curriculum horizon", positive_int, _G_RUN),
    LaunchKey("IP", "retriever.simulation.host", "simulation server(s): host, host:port or http://host:port, comma-separated for several", host_list, _G_SEARCH),
    LaunchKey("SEARCH_MODE", "retriever.search_mode", f"search backend in training rollouts ({', '.join(SEARCH_MODES)})", choice(*SEARCH_MODES), _G_SEARCH),
    LaunchKey("SIMULATION_LLM", None, "name of the simulation LLM, recorded in the experiment name only (auto = SIM_MODEL_NAME); the server decides which model answers", non_empty, _G_SEARCH, auto=True),
    LaunchKey("START_THRESHOLD", "retriever.start_threshold", "curriculum p_noisy at step 0, in [0, 1]", probability, _G_SEARCH),
    LaunchKey("END_THRESHOLD", "retriever.end_threshold", "curriculum p_noisy at the last step, in [0, 1]", probability, _G_SEARCH),
    LaunchKey("SEARCH_ENGINE", "retriever.search_engine", f"search backend in validation ({', '.join(SEARCH_MODES)}; the paper: google)", choice(*SEARCH_MODES), _G_SEARCH),
    LaunchKey("MAX_TURNS", "retriever.max_turns", "search rounds per trajectory (the paper-era scripts used 2; the July-2025 README example passes 5)", positive_int, _G_SEARCH),
    LaunchKey("TOPK", "retriever.topk", "documents per query", positive_int, _G_SEARCH),
    # Added keys.
    LaunchKey("DEVICE", "trainer.device", "cuda or cpu (auto = cuda when torch sees a GPU)", auto_or(choice(*DEVICES)), _G_RUN, auto=True),
    LaunchKey("ROLLOUT_ENGINE", "actor_rollout_ref.rollout.name", "rollout engine hf or vllm (auto = vllm on cuda; on cpu vllm when vLLM is importable (faster than HF generate, benchmarks row 2b), else hf)", auto_or(choice(*ROLLOUT_ENGINES)), _G_RUN, auto=True),
    LaunchKey("PORT", "retriever.simulation.port", "simulation server port", port, _G_SEARCH),
    LaunchKey("SIM_MODEL_NAME", "retriever.simulation.model", "model name the simulation server serves (vLLM checks it, sglang ignores it)", non_empty, _G_SEARCH),
    LaunchKey("SIM_PROTOCOL", "retriever.simulation.protocol", f"simulation protocol ({', '.join(PROTOCOLS)})", choice(*PROTOCOLS), _G_SEARCH),
    LaunchKey("RETRIEVER_IP", "retriever.wiki.host", "host of the local retrieval server (wiki mode)", host, _G_SEARCH),
    LaunchKey("RETRIEVER_PORT", "retriever.wiki.port", "port of the local retrieval server", port, _G_SEARCH),
    LaunchKey("MAX_OBS_LENGTH", "retriever.max_obs_length", "token cap of one <information> observation", positive_int, _G_SEARCH),
    LaunchKey("REWARD_METRIC", "reward.fn_kwargs.metric",
              f"training reward ({', '.join(REWARD_METRICS)}). "
              "f1 = token F1, the paper's training reward; sub_em = the original ZeroSearch's \"EM\" column "
              "(substring match: the normalised gold answer occurs in the normalised answer); "
              "em = Search-R1's strict EM (normalised answer equals a gold answer)",
              choice(*REWARD_METRICS), _G_RUN),
    LaunchKey("TRAIN_BATCH_SIZE", "data.train_batch_size", "prompts per step", positive_int, _G_SCALE),
    LaunchKey("N_AGENT", "actor_rollout_ref.rollout.n", "trajectories per prompt (group size)", positive_int, _G_SCALE),
    LaunchKey("PPO_MINI_BATCH_SIZE", "actor_rollout_ref.actor.ppo_mini_batch_size",
              "trajectories per optimizer update, over all devices (auto = TRAIN_BATCH_SIZE x N_AGENT: the whole step, "
              "one update per step); must divide TRAIN_BATCH_SIZE x N_AGENT and be a multiple of the device count "
              "(critic.ppo_mini_batch_size follows it). "
              "The original used 256 against 64 x 5 = 320 trajectories: two updates per step, on 256 and on 64 "
              "(uneven splits are refused here); PPO_MINI_BATCH_SIZE 160 gives its two updates per step, evenly",
              auto_or(positive_int), _G_SCALE, auto=True),
    LaunchKey("MICRO_BATCH_SIZE", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "trajectories per forward/backward per device when DYNAMIC_BSZ is off (auto = largest divisor of the per-device mini-batch that is <= 16; the critic follows)", auto_or(positive_int), _G_SCALE, auto=True),
    LaunchKey("LOG_PROB_MICRO_BATCH_SIZE", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", "rows per log-prob forward per device (rollout, ref) when DYNAMIC_BSZ is off", positive_int, _G_SCALE),
    LaunchKey("DYNAMIC_BSZ", "actor_rollout_ref.actor.use_dynamic_bsz", "micro-batches by a token budget per device (true) instead of MICRO_BATCH_SIZE / LOG_PROB_MICRO_BATCH_SIZE rows (false); auto = the device profile (see below; the critic follows)", auto_or(boolean), _G_SCALE, auto=True),
    LaunchKey("MAX_TOKENS_PER_GPU", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu", "real tokens per update micro-batch per device with DYNAMIC_BSZ (a longer row runs alone); auto = the device profile (the critic follows)", auto_or(positive_int), _G_SCALE, auto=True),
    LaunchKey("LOG_PROB_MAX_TOKENS_PER_GPU", "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", "real tokens per log-prob micro-batch per device (actor, ref) with DYNAMIC_BSZ; auto = the device profile (ref follows)", auto_or(positive_int), _G_SCALE, auto=True),
    LaunchKey("MAX_PROMPT_LENGTH", "data.max_prompt_length", "token cap of the initial prompt", positive_int, _G_SCALE),
    LaunchKey("MAX_RESPONSE_LENGTH", "data.max_response_length", "token cap of the whole response side (all turns and observations)", positive_int, _G_SCALE),
    LaunchKey("MAX_NEW_TOKENS", "actor_rollout_ref.rollout.max_new_tokens", "tokens generated per turn", positive_int, _G_SCALE),
    LaunchKey("NNODES", "trainer.nnodes", "nodes", positive_int, _G_SCALE),
    LaunchKey("RAY_ADDRESS", "trainer.ray_address", "existing Ray cluster to join (auto, ray://host:10001, ...; none = start a local one)", none_or_text, _G_OPS),
    LaunchKey("SAVE_DIR", "launcher.save_dir", "parent folder of the run folder SAVE_DIR/EXPERIMENT_NAME (trainer.default_local_dir)", out_dir, _G_OPS),
    LaunchKey("EXPERIMENT_NAME", "trainer.experiment_name", "run name (auto = MODEL_ALGO_SEARCHMODE_SIMLLM_START_END_ENGINE_turns_N)", auto_or(non_empty), _G_OPS, auto=True),
    LaunchKey("LOGGER", "trainer.logger", f"comma-separated loggers ({', '.join(LOGGERS)})", logger_list, _G_OPS),
    LaunchKey("SAVE_FREQ", "trainer.save_freq", "checkpoint every N steps (-1 = never)", frequency, _G_OPS),
    LaunchKey("TEST_FREQ", "trainer.test_freq", "validate every N steps (-1 = never; evaluation is a separate command)", frequency, _G_OPS),
    LaunchKey("GPU_MEMORY_GIB", None, "memory of one GPU for the memory plan printed before loading (auto = what the GPU reports, 80 when none is visible; on cpu: RAM / NUM_GPUS_PER_NODE); see --plan", auto_or(gib_amount), _G_SCALE, auto=True),
    LaunchKey("PLAN_CHECK", "launcher.plan_check", "on: a run whose memory plan does not fit stops with exit 2 before loading anything; off: print the plan and run anyway", choice("on", "off"), _G_SCALE),
    LaunchKey("SEED", "trainer.seed", "global seed", non_negative_int, _G_OPS),
)

KEYS_BY_NAME: dict[str, LaunchKey] = {k.name: k for k in KEYS}
# Under --plan only the model's config.json is read and no data: these parsers replace the keys' own.
PLAN_PARSERS: dict[str, Callable[[str], Any]] = {"MODEL_PATH": config_source, "DATA_PATH": out_dir}


def valid_keys_line() -> str:
    return "valid keys: " + " ".join(k.name for k in KEYS)
