"""The launcher's memory plan: compose the run's trainer config, read the model's config.json and
print ``verl.utils.memory_plan``'s prediction per GPU and phase.

``print_plan`` serves ``--plan`` (stdout; exit code 0 fits, 2 does not). ``check_before_run``
runs before a real run starts the trainer: it prints the same plan on stderr and stops with exit
code 2 when the run cannot fit, unless ``PLAN_CHECK off``. A model whose config.json the plan
cannot read (an architecture other than the Qwen2 / Llama layout) is reported and, for a real
run, not refused.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, TextIO

from verl.utils.memory_plan import GIB, PlanError, read_model_shape, render_plan, settings_from_config
from verl.workers.rollout import check_tensor_parallel
from zerosearch.launch import gpu_occupants
from zerosearch.launch.keys import AUTO, KEYS


class RolloutRefused(PlanError):
    """A run the rollout cannot serve whatever the memory (a tensor-parallel rollout)."""


# What GPU_MEMORY_GIB auto means when DEVICE is cuda but no GPU is visible (planning on a laptop).
DEFAULT_GPU_GIB = 80.0
# Memory in use on an otherwise idle GPU (driver, display) that the plan does not count as held.
HELD_MIN_GIB = 1.0


def device_memory_gib(settings: dict[str, Any], gpus: Optional[list] = None) -> tuple[float, float]:
    """(memory of one device, the part of it other processes hold), GiB.

    GPU_MEMORY_GIB when set (nothing counted as held); on cuda, when ``gpus``
    (``zerosearch.launch.gpu_occupants.query``) says, the smallest of the trainer's GPUs and the most
    memory used on any of them, none below ``HELD_MIN_GIB`` (vLLM sizes its share from the whole
    device, so what others hold is a term of every phase, not a smaller device); else the first
    visible GPU's memory (80 GiB when no GPU is visible); on cpu the machine's RAM shared by its
    NUM_GPUS_PER_NODE workers."""
    if settings["GPU_MEMORY_GIB"] != AUTO:
        return float(settings["GPU_MEMORY_GIB"]), 0.0
    if settings["DEVICE"] == "cuda":
        if gpus:
            held = max(g.used_bytes for g in gpus) / GIB
            return min(g.total_bytes for g in gpus) / GIB, held if held >= HELD_MIN_GIB else 0.0
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / GIB, 0.0
        return DEFAULT_GPU_GIB, 0.0
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return ram / GIB / settings["NUM_GPUS_PER_NODE"], 0.0


def plan_text(plan) -> tuple[str, bool]:
    """(the rendered plan, whether it fits) for a ``zerosearch.launch.train.LaunchPlan``."""
    from verl.trainer.main_ppo import load_config

    cfg = load_config(plan.overrides, plan.config_dir, plan.config_name)
    try:
        check_tensor_parallel(cfg.actor_rollout_ref.rollout)
    except ValueError as err:
        raise RolloutRefused(str(err)) from None
    model_path = str(cfg.actor_rollout_ref.model.path)
    shape = read_model_shape(model_path)
    gpus = (gpu_occupants.query(os.environ.get("CUDA_VISIBLE_DEVICES"), int(plan.settings["NUM_GPUS_PER_NODE"]))
            if plan.settings["DEVICE"] == "cuda" else None)
    capacity, held = device_memory_gib(plan.settings, gpus)
    settings = settings_from_config(cfg, capacity, held)
    name = os.path.basename(model_path.rstrip("/")).removesuffix(".json").removesuffix("config").rstrip("/") or model_path
    # the verdict names the launcher key where one sets the config key it suggests
    text, fits = render_plan(shape, settings, name, {spec.path: spec.name for spec in KEYS if spec.path})
    occupants = gpu_occupants.describe(gpus or [])
    if occupants:
        counted = ("the plan counts what they hold in every phase" if plan.settings["GPU_MEMORY_GIB"] == AUTO
                   else "GPU_MEMORY_GIB is set, so the plan does not count with them")
        text = "".join(f"plan: {line}\n" for line in occupants) + (
            f"plan: other processes hold the trainer's GPUs ({counted}); if one is the simulation server, "
            "give it and the trainer different GPUs with CUDA_VISIBLE_DEVICES\n") + text
    return text, fits


def print_plan(plan, out: TextIO | None = None) -> int:
    """``--plan``: print the plan; 0 when it fits, 2 when it does not or cannot be made."""
    out = out or sys.stdout
    try:
        text, fits = plan_text(plan)
    except PlanError as err:
        sys.stderr.write(f"zerosearch.launch.train: error: memory plan: {err}\n")
        return 2
    out.write(text)
    return 0 if fits else 2


def check_before_run(plan) -> None:
    """Before the trainer starts: print the plan on stderr; exit 2 when it does not fit and PLAN_CHECK is on."""
    try:
        text, fits = plan_text(plan)
    except RolloutRefused as err:
        sys.stderr.write(f"zerosearch.launch.train: error: {err}; nothing was loaded\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    except PlanError as err:
        sys.stderr.write(f"zerosearch.launch.train: memory plan skipped: {err}\n")
        return
    sys.stderr.write(text)
    if not fits and plan.settings["PLAN_CHECK"] == "on":
        sys.stderr.write("zerosearch.launch.train: error: the memory plan says this run does not fit; nothing was loaded. "
                         "Change the key it names, or pass PLAN_CHECK off to run anyway.\n")
        sys.stderr.flush()
        raise SystemExit(2)
    sys.stderr.flush()
