"""Row 9, the memory plan against a measurement: plan ÷ measured peak memory of the update and
log-prob phases, a ~100M model on CPU.

The launcher's settings for a CPU GRPO run (``zerosearch.launch.train``: FSDP on one gloo rank, gradient
checkpointing, reference policy, hf rollout engine) with ``ROWS`` trajectories of the full
``PROMPT`` + ``RESPONSE`` length compose the trainer config; ``verl.utils.memory_plan`` predicts
each phase's peak from it and the model's config.json. The real ``ActorRolloutRefWorker`` then
runs in this process: a first update (``actor.update_policy``; its AdamW step creates the optimizer
states), a second update (the steady state the plan models: optimizer states resident during the
forward and backward) and a log-prob pass (``compute_log_prob``). Measured: the process's peak
resident memory during each phase (``VmHWM``, reset through ``/proc/self/clear_refs`` before each
phase, after ``malloc_trim``) minus the resident memory before the worker loaded anything.

9. plan ÷ measured, for the phase farther from 1 (both in the note): within 0.75 – 1.33.
"""

from __future__ import annotations

import ctypes
import math
import os
import time

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

ROWS = 4           # trajectories: TRAIN_BATCH_SIZE 1 x N_AGENT 4, one micro-batch each pass
PROMPT, RESPONSE = 64, 448

SPECS = [
    RowSpec("9", "memory plan ÷ measured peak memory, update and log-prob phases (~100M model, CPU)",
            Target("within", 0.75, 1.33),
            "the plan's model of activations, logits or FSDP buffers no longer matches the code (see the note's terms)."),
]


def worst_ratio(ratios: dict[str, float]) -> tuple[str, float]:
    """The (phase, plan ÷ measured) farthest from 1 on a log scale."""
    return max(ratios.items(), key=lambda kv: abs(math.log(kv[1])))


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakResident:
    """The process's peak resident memory since ``reset()`` (Linux ``VmHWM``), in bytes."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL("libc.so.6")

    def reset(self) -> int:
        """Return freed heap to the system, restart the high-water mark; the resident bytes now."""
        self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        return _status_kib("VmHWM") * 1024


def launcher_config(model, workdir, device: str = "cpu", rows: int = ROWS, prompt: int = PROMPT,
                    response: int = RESPONSE, overrides: tuple[str, ...] = ()):
    """The trainer config the launcher composes for a GRPO run on ``device`` with one rank, the hf
    rollout engine and ``rows`` trajectories (``rows // 4`` prompts x 4) of ``prompt`` + ``response``
    tokens, each pass one micro-batch of all rows where the device profile sets no token budget."""
    from verl.trainer.main_ppo import load_config
    from zerosearch.launch.train import parse_launch_args

    if rows % 4:
        raise ValueError(f"rows must be a multiple of 4 (prompts x 4 trajectories), got {rows}")
    plan = parse_launch_args("grpo", [
        "MODEL_PATH", str(model), "DATA_PATH", str(workdir / "unused"), "DEVICE", device, "ROLLOUT_ENGINE", "hf",
        "NUM_GPUS_PER_NODE", "1", "TRAIN_BATCH_SIZE", str(rows // 4), "N_AGENT", "4",
        "LOG_PROB_MICRO_BATCH_SIZE", str(rows), "MAX_PROMPT_LENGTH", str(prompt),
        "MAX_RESPONSE_LENGTH", str(response), "SAVE_DIR", str(workdir / "runs"),
        "--", "actor_rollout_ref.actor.optim.total_training_steps=203",  # the trainer sets it from TOTAL_STEPS
        *overrides,
    ], plan_only=True)
    return load_config(plan.overrides, plan.config_dir, plan.config_name)


def full_length_batch(vocab: int, seed: int = 0, rows: int = ROWS, prompt: int = PROMPT, response: int = RESPONSE):
    """``rows`` rows of ``prompt`` + ``response`` real tokens (the plan's worst case) with what an update needs."""
    import torch

    from verl.protocol import DataProto

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (rows, prompt + response), generator=g)
    mask = torch.ones_like(ids)
    return DataProto.from_dict({
        "input_ids": ids, "attention_mask": mask,
        "position_ids": torch.arange(prompt + response).expand(rows, -1).clone(),
        "responses": ids[:, prompt:].clone(), "response_mask": torch.ones(rows, response, dtype=torch.long),
        "old_log_probs": -torch.rand(rows, response, generator=g) * 5,
        "ref_log_prob": -torch.rand(rows, response, generator=g) * 5,
        "advantages": torch.randn(rows, response, generator=g),
    }, meta_info={"temperature": 1.0})


def measure(ctx: BenchContext, record: Recorder) -> None:
    import copy

    from benchmarks.models import random_policy
    from verl.utils.memory_plan import GIB, plan_memory, read_model_shape, settings_from_config
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    model = random_policy(ctx.workdir, "100m")
    cfg = launcher_config(model, ctx.workdir)
    shape = read_model_shape(str(model))
    settings = settings_from_config(cfg, capacity_gib=1024.0)
    planned = {p.name: p for p in plan_memory(shape, settings)}

    meter = PeakResident()
    worker = ActorRolloutRefWorker(cfg, "actor_rollout_ref")
    batch = full_length_batch(shape.vocab_size)
    base = meter.reset()
    start = time.perf_counter()
    worker.init_model()
    log(f"plan memory: worker built in {time.perf_counter() - start:.0f} s "
        f"(+{(meter.peak() - base) / GIB:.2f} GiB peak while loading)")

    measured: dict[str, float] = {}
    seconds: dict[str, float] = {}
    phases = (("first update", lambda: worker.actor.update_policy(copy.deepcopy(batch))),
              ("update", lambda: worker.actor.update_policy(copy.deepcopy(batch))),
              ("log-prob", lambda: worker.compute_log_prob(copy.deepcopy(batch))))
    for name, run in phases:
        meter.reset()
        start = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - start
        measured[name] = meter.peak() - base
        log(f"plan memory: {name}: measured +{measured[name] / GIB:.2f} GiB ({seconds[name]:.0f} s)")
    first = measured.pop("first update")
    ratios = {name: planned[name].peak / measured[name] for name in measured}
    phase, value = worst_ratio(ratios)
    terms = "; ".join(f"{name}: " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in planned[name].terms.items() if v)
                      for name in measured)
    record(Measurement(
        "9", value=value,
        shown=f"{value:.2f} ({phase}; " + ", ".join(f"{n} {r:.2f}" for n, r in ratios.items()) + ")",
        note=(f"{shape.num_params / 1e6:.0f}M-parameter model, {ROWS} rows of {PROMPT}+{RESPONSE} tokens, launcher "
              f"settings for DEVICE cpu (FSDP on one rank, checkpointing, reference, hf engine). Measured peak "
              f"resident memory above the pre-load baseline: "
              + ", ".join(f"{n} {measured[n] / GIB:.2f} GiB ({seconds[n]:.0f} s)" for n in measured)
              + f"; first update (no optimizer states during its forward and backward) {first / GIB:.2f} GiB"
              + f" ({seconds['first update']:.0f} s)"
              + "; planned: " + ", ".join(f"{n} {planned[n].peak / GIB:.2f} GiB" for n in measured)
              + f". Plan terms (GiB): {terms}."),
        details={"measured_bytes": {**measured, "first update": first}, "planned_bytes": {n: planned[n].peak for n in measured},
                 "seconds": seconds, "ratios": ratios},
    ))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    raise SystemExit(row_main(SPECS, measure))
