"""The training run's own settings for evaluation: a checkpoint is evaluated on the task it was trained on.

A run trained with 5 search rounds and 2048-token observations is evaluated with 5 rounds and 2048
tokens, not with the stock ``configs/zerosearch_trainer.yaml`` values, unless told otherwise.

Where the saved training config of a checkpoint folder CKPT is found (the first that exists wins):

1. ``--train-config PATH``: a YAML file (a trainer config), or a folder searched as in 2 and 3;
2. ``CKPT/train_config.yaml`` (``verl.utils.checkpoint.TRAIN_CONFIG_FILE``): the config the trainer
   writes into each export, that of the launch that trained this very step;
3. the run folder: CKPT or one of its ``MAX_RUN_DEPTH`` parents (``RUN/exports/global_step_N``,
   ``RUN/global_step_N/actor/huggingface``) holding ``hydra/<launch>/.hydra/config.yaml``, the config
   Hydra saves at every launch (``zerosearch.launch`` sets ``hydra.run.dir`` to
   ``SAVE_DIR/EXPERIMENT/hydra/<%Y-%m-%d_%H-%M-%S>``), or ``hydra/.hydra/config.yaml``. A run launched
   several times (resumed) has one per launch: the latest launch's is used (greatest folder name).

None found (a Hugging Face folder that is not inside a run): the stock config applies, no error.
A file found that is not the config of a search-agent RL run (no ``actor_rollout_ref`` and
``retriever`` sections: a warm-start SFT run's) is ignored the same way, and said so.
``--stock-config`` ignores any saved config. A file that is found but unreadable, or that lacks one
of the ``TASK_KEYS`` the user does not set, is an error naming the file and the key.

Only ``TASK_KEYS`` are taken from it, the settings that define the rollout the policy was trained
on. Precedence, lowest first: stock config < saved ``TASK_KEYS`` < ``--override`` < explicit flags
(``--max-turns``, ``--topk``, ...). A key the user sets is not even read from the saved file.

Deliberately not taken (the evaluation's own flags and defaults decide them):

- batch sizes, learning rates, KL, algorithm, data files, seeds: training only;
- ``trainer.device``, ``actor_rollout_ref.rollout.name`` and engine knobs (dtype, memory, vLLM):
  where and how fast it runs, not what it computes;
- ``retriever.search_mode`` / ``search_engine`` and every backend block (``simulation``, ``wiki``,
  ``google``: hosts, ports, served model, simulator prompts): the search backend is the
  evaluation's choice (``--search-engine``);
- ``actor_rollout_ref.rollout.val_kwargs`` and the training sampling (temperature, top_p):
  evaluation decodes greedily unless ``--temperature`` is given;
- ``reward.fn_kwargs.metric``: evaluation reports EM, SubEM and F1 whichever was the reward;
- ``actor_rollout_ref.model.tokenizer_path``: an export carries its tokenizer;
- ``actor_rollout_ref.rollout.agent_loop``: evaluation always runs ``zerosearch.agent.SearchAgentLoop``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from verl.utils.checkpoint import TRAIN_CONFIG_FILE

logger = logging.getLogger(__name__)

# Key -> why it defines the task as trained. The one list of what evaluation takes from a run.
TASK_KEYS: dict[str, str] = {
    "data.max_prompt_length": "prompt token cap: longer prompts are refused or cut as in training",
    "data.truncation": "what happens to a prompt over the cap (error | left | right)",
    "data.apply_chat_template": "whether prompts go through the chat template (the prompt format)",
    "data.max_response_length": "token budget of the whole response side (all turns and observations)",
    "actor_rollout_ref.rollout.max_new_tokens": "tokens generated per turn",
    "retriever.max_turns": "search rounds before the answer-only round",
    "retriever.topk": "documents per search",
    "retriever.max_obs_length": "token cap of one <information> observation",
    "retriever.max_query_chars": "longest query sent, in characters",
    "retriever.invalid_action_template": "the correction message after an invalid action (the policy saw it)",
}
MAX_RUN_DEPTH = 3
HYDRA_DIR = "hydra"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
_ABSENT = object()
# Top-level sections every search-agent RL config has; a saved config without them (an SFT run) is no task.
SEARCH_RL_SECTIONS = ("actor_rollout_ref", "retriever")
# How the log line names each origin.
ORIGINS = {"run": "the run's latest launch", "export": "written with this export", "--train-config": "--train-config"}


class TrainConfigError(ValueError):
    """A saved training config that cannot be found, read or lacks a key (the message names the file)."""


@dataclass
class TrainConfigUse:
    """Which saved training config built an evaluation config, and what it set.

    Attributes:
        path: the file read (None: none found or ``--stock-config``).
        origin: ``--train-config`` | ``export`` (the export's own file) | ``run`` (the run's latest
            launch) | ``none found`` | ``--stock-config`` | ``not an RL search run`` (the file found
            is, e.g., a warm-start SFT run's: ignored).
        applied: the saved values put into the evaluation config.
        overridden: the ``TASK_KEYS`` that ``--override`` or a flag set instead (not read).
    """

    path: Path | None
    origin: str
    applied: dict[str, Any] = field(default_factory=dict)
    overridden: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """For ``run.json``."""
        return {"path": None if self.path is None else str(self.path), "origin": self.origin,
                "applied": dict(self.applied), "overridden": list(self.overridden)}

    @property
    def used(self) -> bool:
        """Whether the saved config set the task (False: the stock settings apply)."""
        return self.path is not None and self.origin in ORIGINS

    def describe(self, model_path: str) -> str:
        """The one log line."""
        if self.path is not None and not self.used:
            return (f"training config: {self.path} (found for {model_path}) is not the config of a search-agent RL "
                    f"run (no {' / '.join(SEARCH_RL_SECTIONS)} sections): ignored; the stock "
                    f"configs/zerosearch_trainer.yaml settings apply")
        if self.path is None:
            why = ("--stock-config" if self.origin == "--stock-config"
                   else f"no saved training config found for {model_path}")
            return f"training config: {why}; the stock configs/zerosearch_trainer.yaml settings apply"
        applied = ", ".join(f"{k}={v}" for k, v in self.applied.items()) or "nothing"
        line = f"training config: {self.path} ({ORIGINS.get(self.origin, self.origin)}) set {applied}"
        if self.overridden:
            line += f"; flags/--override set {', '.join(self.overridden)}"
        return line


def latest_launch_config(run_dir: Path) -> Path | None:
    """``RUN/hydra/<launch>/.hydra/config.yaml`` of the latest launch (greatest launch folder name,
    the launcher's start timestamp), else ``RUN/hydra/.hydra/config.yaml``, else None."""
    hydra = run_dir / HYDRA_DIR
    if not hydra.is_dir():
        return None
    launches = sorted(p for p in hydra.iterdir() if p.is_dir() and (p / HYDRA_CONFIG).is_file())
    if launches:
        return launches[-1] / HYDRA_CONFIG
    return hydra / HYDRA_CONFIG if (hydra / HYDRA_CONFIG).is_file() else None


def find_train_config(folder: str | os.PathLike, max_depth: int = MAX_RUN_DEPTH) -> tuple[Path, str] | None:
    """``(file, origin)`` of the saved training config for a checkpoint (or run) folder, or None.

    ``folder/train_config.yaml`` (origin ``export``) first, then the latest launch config of
    ``folder`` or of its first ``max_depth`` parents (origin ``run``).
    """
    start = Path(os.path.abspath(folder))
    if (start / TRAIN_CONFIG_FILE).is_file():
        return start / TRAIN_CONFIG_FILE, "export"
    for candidate in [start, *start.parents][: max_depth + 1]:
        found = latest_launch_config(candidate)
        if found is not None:
            return found, "run"
    return None


def load_saved_config(path: str | os.PathLike) -> DictConfig:
    """The saved config ``path``; a ``TrainConfigError`` naming it when unreadable or not a mapping."""
    try:
        saved = OmegaConf.load(path)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError) as e:
        raise TrainConfigError(f"cannot read the saved training config {path}: {e}") from e
    if not isinstance(saved, DictConfig):
        raise TrainConfigError(f"the saved training config {path} is not a YAML mapping")
    return saved


def is_search_rl_config(saved: DictConfig) -> bool:
    """Whether ``saved`` is the config of a search-agent RL run (it has the ``actor_rollout_ref`` and
    ``retriever`` sections), not e.g. that of a warm-start SFT run (``verl.trainer.sft_trainer``)."""
    return all(isinstance(saved.get(section), DictConfig) for section in SEARCH_RL_SECTIONS)


def read_task_settings(saved: DictConfig, path: str | os.PathLike, keys: Sequence[str]) -> dict[str, Any]:
    """The values of ``keys`` in the saved config ``saved`` read from ``path`` (interpolations
    resolved in that file).

    Raises:
        TrainConfigError: a key absent, ``???`` or unresolvable, or holding a mapping/list instead
            of one value; the message names file and key.
    """
    values: dict[str, Any] = {}
    for key in keys:
        hint = f"(give it with --override {key}=VALUE, or ignore the file with --stock-config)"
        try:
            value = OmegaConf.select(saved, key, default=_ABSENT, throw_on_missing=True)
        except OmegaConfBaseException as e:
            raise TrainConfigError(f"the saved training config {path}: key {key} cannot be read: "
                                   f"{str(e).splitlines()[0]} {hint}") from e
        if value is _ABSENT:
            raise TrainConfigError(f"the saved training config {path} lacks key {key} {hint}")
        if isinstance(value, (DictConfig, ListConfig)):
            raise TrainConfigError(f"the saved training config {path}: key {key} holds a "
                                   f"{type(value).__name__}, not a single value {hint}")
        values[key] = value
    return values


def override_sets(key: str, override_keys: Sequence[str]) -> bool:
    """Whether a Hydra override on one of ``override_keys`` sets ``key`` (the key itself or a parent)."""
    return any(key == o or key.startswith(o + ".") for o in override_keys)


def resolve_train_config(model_path: str | os.PathLike, train_config: str | os.PathLike | None = None,
                         stock: bool = False, set_by_user: Sequence[str] = ()) -> TrainConfigUse:
    """Find and read the saved training config of ``model_path``.

    Args:
        model_path: the checkpoint folder being evaluated.
        train_config: ``--train-config``: a file, or a folder searched like a checkpoint folder.
        stock: ``--stock-config``: ignore every saved config.
        set_by_user: keys (or parents) set by ``--override`` or flags: not read, listed as overridden.
    """
    if stock and train_config is not None:
        raise TrainConfigError("--train-config and --stock-config exclude each other")
    if stock:
        return TrainConfigUse(None, "--stock-config")
    if train_config is not None:
        given = Path(train_config)
        if given.is_file():
            path, origin = given, "--train-config"
        elif given.is_dir():
            found = find_train_config(given, max_depth=0)
            if found is None:
                raise TrainConfigError(
                    f"--train-config {given}: no saved training config in this folder (expected {TRAIN_CONFIG_FILE} "
                    f"or {HYDRA_DIR}/<launch>/{HYDRA_CONFIG})")
            path, origin = found[0], "--train-config"
        else:
            raise TrainConfigError(f"--train-config {given} does not exist")
    else:
        found = find_train_config(model_path)
        if found is None:
            return TrainConfigUse(None, "none found")
        path, origin = found
    saved = load_saved_config(path)
    if not is_search_rl_config(saved):
        if origin == "--train-config":
            raise TrainConfigError(f"--train-config {path} is not the config of a search-agent RL run "
                                   f"(it lacks the {' / '.join(SEARCH_RL_SECTIONS)} sections)")
        return TrainConfigUse(path, "not an RL search run")
    overridden = [k for k in TASK_KEYS if override_sets(k, set_by_user)]
    applied = read_task_settings(saved, path, [k for k in TASK_KEYS if k not in overridden])
    return TrainConfigUse(path, origin, applied, overridden)
