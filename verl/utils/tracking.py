"""Experiment tracking: console, jsonl, tensorboard and wandb behind one ``log`` call."""

from __future__ import annotations

import json
import math
import os
from typing import Any

SUPPORTED_BACKENDS = ("console", "jsonl", "tensorboard", "wandb")

# Config keys whose values are never sent to a tracker, whatever their nesting.
_SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password")


def scrub_secrets(obj: Any) -> Any:
    """Return a copy of a nested dict/list with values of secret-looking keys replaced.

    Keys that only *name* an environment variable (ending in ``_env``) are kept: they are not secrets.
    """
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = str(k).lower()
            if any(m in key for m in _SECRET_MARKERS) and not key.endswith("_env"):
                out[k] = "***"
            else:
                out[k] = scrub_secrets(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [scrub_secrets(v) for v in obj]
    return obj


def _to_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


class Tracking:
    """Fan a dict of scalar metrics out to the configured backends.

    Args:
        project_name: wandb project / tensorboard folder name.
        experiment_name: run name.
        backends: any of ``SUPPORTED_BACKENDS``.
        config: the run config as a plain dict (secrets are scrubbed before any backend sees it).
        log_dir: folder for ``metrics.jsonl`` and tensorboard event files.
    """

    def __init__(self, project_name: str, experiment_name: str, backends: list[str] | str,
                 config: dict | None = None, log_dir: str | None = None) -> None:
        if isinstance(backends, str):
            backends = [backends]
        unknown = [b for b in backends if b not in SUPPORTED_BACKENDS]
        if unknown:
            raise ValueError(f"trainer.logger: unknown backend(s) {unknown}; valid: {list(SUPPORTED_BACKENDS)}")
        self.backends = list(backends)
        self.log_dir = log_dir or "."
        config = scrub_secrets(config or {})
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if "jsonl" in self.backends or "tensorboard" in self.backends:
            os.makedirs(self.log_dir, exist_ok=True)
        if "jsonl" in self.backends:
            self._jsonl = open(os.path.join(self.log_dir, "metrics.jsonl"), "a", encoding="utf-8")
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.log_dir, "tensorboard"))
        if "wandb" in self.backends:
            import wandb

            self._wandb = wandb.init(project=project_name, name=experiment_name, config=config,
                                     dir=self.log_dir, reinit=True)

    def log(self, data: dict[str, Any], step: int) -> None:
        scalars = {k: f for k, v in data.items() if (f := _to_float(v)) is not None}
        if "console" in self.backends:
            shown = " - ".join(f"{k}:{v:.4g}" for k, v in sorted(scalars.items()) if math.isfinite(v))
            print(f"step:{step} - {shown}", flush=True)
        if self._jsonl is not None:
            record = {"step": step}
            record.update({k: (v if math.isfinite(v) else None) for k, v in scalars.items()})
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def finish(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
