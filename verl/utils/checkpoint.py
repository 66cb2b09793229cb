"""Atomic, keep-last-N checkpoint folders and never-rotated weight exports on the driver side.

Layout under ``root``::

    global_step_<N>/            one complete checkpoint for resume (workers write their files here)
        trainer_state.json      step, data position, plug-in state, KL controller...
        COMPLETE                written last; a folder without it is never loaded
    latest_checkpointed_iteration.txt   N of the newest complete checkpoint
    exports/global_step_<N>/    weights only (a Hugging Face folder), one per save, never rotated
        train_config.yaml       the run's config, when the trainer passes it (read by evaluation)

A checkpoint is first written into ``.tmp_global_step_<N>`` and renamed into place only when
complete, so a process killed during a save leaves the previous checkpoint as the latest. Only the
newest ``max_to_keep`` checkpoints are kept; exports are written the same way (into
``exports/.tmp_global_step_<N>``, renamed when complete, so an export folder that exists is
whole) and are never removed, so every saved step can be evaluated after training.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Callable

LATEST_FILE = "latest_checkpointed_iteration.txt"
COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"
EXPORTS_DIR = "exports"
# The run's config written into each export (``save_export(config_yaml=...)``): evaluation of that
# step takes its task settings from it (zerosearch/evaluation/train_config.py).
TRAIN_CONFIG_FILE = "train_config.yaml"
_STEP_DIR = re.compile(r"^global_step_(\d+)$")


def export_steps(root: str) -> list[tuple[int, str]]:
    """``[(N, folder)]`` of the exports under ``root/exports``, ascending by step."""
    exports = os.path.join(root, EXPORTS_DIR)
    if not os.path.isdir(exports):
        return []
    found = []
    for name in os.listdir(exports):
        m = _STEP_DIR.match(name)
        if m and os.path.isdir(os.path.join(exports, name)):
            found.append((int(m.group(1)), os.path.join(exports, name)))
    return sorted(found)


def link_tree(src: str, dst: str) -> None:
    """Copy the folder ``src`` to ``dst`` (which must not exist) by hard links where the filesystem
    allows them (no second copy of the weights on disk), by copies otherwise."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointManager:
    """Save and find checkpoints under ``root``, keeping the newest ``max_to_keep`` (<=0: all)."""

    def __init__(self, root: str, max_to_keep: int = 2) -> None:
        self.root = root
        self.max_to_keep = max_to_keep

    def step_dir(self, step: int) -> str:
        return os.path.join(self.root, f"global_step_{step}")

    def export_dir(self, step: int) -> str:
        return os.path.join(self.root, EXPORTS_DIR, f"global_step_{step}")

    def save_export(self, step: int, write_fn: Callable[[str], None], config_yaml: str | None = None) -> str:
        """Write the weights-only export of ``step``: ``write_fn(tmp_dir)`` writes it (and
        ``config_yaml``, the run's config as YAML text, goes into ``TRAIN_CONFIG_FILE``); the folder
        is renamed into place when whole. Exports are never pruned."""
        parent = os.path.join(self.root, EXPORTS_DIR)
        os.makedirs(parent, exist_ok=True)
        final = self.export_dir(step)
        tmp = os.path.join(parent, f".tmp_global_step_{step}")
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        write_fn(tmp)
        if not os.path.isdir(tmp):
            raise RuntimeError(f"save_export: the export of step {step} wrote nothing to {tmp}")
        if config_yaml is not None:
            _write_atomic(os.path.join(tmp, TRAIN_CONFIG_FILE), config_yaml)
        _fsync_dir(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(parent)
        return final

    def save(self, step: int, trainer_state: dict[str, Any], write_fn: Callable[[str], None]) -> str:
        """Write a checkpoint for ``step``: ``write_fn(tmp_dir)`` writes the workers' files."""
        os.makedirs(self.root, exist_ok=True)
        final = self.step_dir(step)
        tmp = os.path.join(self.root, f".tmp_global_step_{step}")
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        write_fn(tmp)
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(trainer_state, f)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(tmp, COMPLETE_MARKER), "w") as f:
            f.write("ok\n")
        _fsync_dir(tmp)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        _write_atomic(os.path.join(self.root, LATEST_FILE), f"{step}\n")
        self._prune(keep=step)
        return final

    def complete_steps(self) -> list[int]:
        """Steps with a complete checkpoint folder, ascending."""
        if not os.path.isdir(self.root):
            return []
        steps = []
        for name in os.listdir(self.root):
            m = _STEP_DIR.match(name)
            if m and os.path.exists(os.path.join(self.root, name, COMPLETE_MARKER)):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def latest(self) -> str | None:
        """Folder of the newest complete checkpoint, or None."""
        steps = self.complete_steps()
        return self.step_dir(steps[-1]) if steps else None

    def _prune(self, keep: int) -> None:
        for name in os.listdir(self.root):
            if name.startswith(".tmp_global_step_"):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        if self.max_to_keep <= 0:
            return
        steps = self.complete_steps()
        for s in steps[:-self.max_to_keep]:
            if s != keep:
                shutil.rmtree(self.step_dir(s), ignore_errors=True)


def load_trainer_state(ckpt_dir: str) -> dict[str, Any]:
    """Read ``trainer_state.json`` of a complete checkpoint folder, with a clear error otherwise."""
    if not os.path.exists(os.path.join(ckpt_dir, COMPLETE_MARKER)):
        raise FileNotFoundError(f"{ckpt_dir} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
    with open(os.path.join(ckpt_dir, STATE_FILE), encoding="utf-8") as f:
        return json.load(f)
