"""Row 3, step anatomy: one ZeroSearch GRPO step on CPU split by phase, and the framework overhead.

The real trainer (Ray worker, FSDP actor + reference, HF rollout) trains the primed tiny policy
with the search agent loop; searches go to the fake simulation server. Step 1 warms up; step 2 is
measured, followed by a checkpoint (as ``fit`` does at a save step). Phases are the trainer's own
``timing_s/*`` metrics (gen, search, reward, old_log_prob, ref, adv, update_actor) plus the
checkpoint; weight sync is reported when the worker times it, otherwise it is part of
update_actor. Value: (step wall time - sum of phases) ÷ step wall time.
"""

from __future__ import annotations

import time

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, free_port, log, row_main

PROMPTS = 4
GROUP = 4
MAX_NEW_TOKENS = 64
MAX_RESPONSE_LENGTH = 384
SEARCH_LATENCY_S = 0.5
PHASES = ("wake_weights", "weight_sync", "wake_kv_cache", "gen", "search", "sleep_rollout", "reward", "old_log_prob",
          "ref", "adv", "update_actor")

SPECS = [
    RowSpec("3", "step anatomy: framework overhead ÷ GRPO step time (CPU, primed tiny model, search loop)",
            Target("<=", 0.10),
            "time outside the timed phases (driver-side batch assembly, Ray dispatch and transfer of "
            "DataProto batches, metrics) is large next to the phases of a small model's step."),
]


def measure(ctx: BenchContext, record: Recorder) -> None:
    from benchmarks.fake_sim_server import running_server
    from benchmarks.models import primed_policy
    from benchmarks.trainer_harness import TrainerRun, cpu_grpo_overrides, environment_for_trainer, qa_parquet

    environment_for_trainer()
    model = primed_policy(ctx.workdir)
    data = qa_parquet(ctx.workdir)
    port = free_port()
    overrides = cpu_grpo_overrides(model, data, ctx.workdir / "runs" / "anatomy", prompts=PROMPTS, group=GROUP,
                                   max_new_tokens=MAX_NEW_TOKENS, max_response_length=MAX_RESPONSE_LENGTH,
                                   micro_batch=PROMPTS * GROUP)
    overrides += [f"retriever.simulation.port={port}", "retriever.simulation.host=127.0.0.1",
                  "retriever.max_obs_length=128"]
    with running_server(SEARCH_LATENCY_S, 64, port=port, python=ctx.python):
        with TrainerRun(overrides) as run:
            _, warm_s = run.step(run.batch())
            log(f"anatomy: warm-up step {warm_s:.1f} s")
            start = time.perf_counter()
            metrics, _ = run.step(run.batch())
            ckpt_start = time.perf_counter()
            run.trainer.save_checkpoint()
            checkpoint_s = time.perf_counter() - ckpt_start
            wall = time.perf_counter() - start
    phases = {p: float(metrics.get(f"timing_s/{p}", float("nan"))) for p in PHASES}
    missing = [p for p, v in phases.items() if v != v]
    if missing:
        record(Measurement("3", error=f"the trainer did not report timing_s/ for {missing}"))
        return
    phases["checkpoint"] = checkpoint_s
    overhead = wall - sum(phases.values())
    split = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
    searches = metrics.get("search/searches_per_row", float("nan"))
    record(Measurement(
        "3", value=overhead / wall, shown=f"{overhead / wall:.3f} ({overhead:.2f} s of {wall:.1f} s)",
        note=(f"Step 2 of {PROMPTS} prompts x {GROUP} (searches per row {searches:.2f}, max_new_tokens "
              f"{MAX_NEW_TOKENS}, simulator latency {SEARCH_LATENCY_S} s), seconds: {split}; "
              f"overhead {overhead:.2f} s. Step wall time = train_step + checkpoint; "
              f"trainer timing_s/step {metrics.get('timing_s/step', float('nan')):.2f} s."),
        details={"phases_s": phases, "wall_s": wall, "warmup_step_s": warm_s},
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
