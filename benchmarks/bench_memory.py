"""Row 6, memory and scaling: peak trainer RSS and step time at 1x, 2x and 4x the batch.

The real trainer (single-turn GRPO, random ~100M model, HF engine, one Ray CPU worker with actor,
reference and AdamW state) runs one warm-up step at 1x, then one step at each of 1x, 2x, 4x
prompts (the PPO mini-batch stays at the 1x size, so larger batches take more optimizer steps).
``PeakRSS`` samples the driver plus the Ray worker processes during each step.

6a. RSS(4x) ÷ RSS(1x): memory must grow no faster than the batch (≤ 4).
6b. Log-log slope of step time against batch size (least squares over 1x, 2x, 4x): ~linear
    means ≤ 1.1 (fixed per-step costs make it smaller).
"""

from __future__ import annotations

import math

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

PROMPTS = 1
GROUP = 4
NEW_TOKENS = 32
SCALES = (1, 2, 4)

SPECS = [
    RowSpec("6a", "memory: peak trainer RSS at 4x ÷ 1x batch (single-turn GRPO, ~100M model)", Target("<=", 4.0),
            "memory grows faster than the batch: some buffer scales with batch x length x vocabulary."),
    RowSpec("6b", "scaling: log-log slope of step time vs batch size (1x, 2x, 4x)", Target("<=", 1.1),
            "step time grows faster than the batch (e.g. padding to the longest row or quadratic attention)."),
]


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx) ** 2 for a in lx)
    if var == 0:
        raise ValueError("loglog_slope needs at least two different x values")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / var


def measure(ctx: BenchContext, record: Recorder) -> None:
    from benchmarks.models import random_policy
    from benchmarks.trainer_harness import PeakRSS, TrainerRun, cpu_grpo_overrides, environment_for_trainer, qa_parquet

    environment_for_trainer()
    model = random_policy(ctx.workdir, "100m")
    data = qa_parquet(ctx.workdir)
    overrides = cpu_grpo_overrides(model, data, ctx.workdir / "runs" / "memory", prompts=PROMPTS, group=GROUP,
                                   max_new_tokens=NEW_TOKENS, max_response_length=NEW_TOKENS,
                                   micro_batch=PROMPTS * GROUP)
    overrides += ["actor_rollout_ref.rollout.agent_loop=verl.agent_loop.single_turn.SingleTurnAgentLoop"]
    rss: dict[int, float] = {}
    secs: dict[int, float] = {}
    with TrainerRun(overrides) as run, PeakRSS() as meter:
        run.step(run.batch(PROMPTS, offset=0))  # warm-up
        offset = PROMPTS
        for scale in SCALES:
            meter.reset()
            _, secs[scale] = run.step(run.batch(PROMPTS * scale, offset=offset))
            offset += PROMPTS * scale
            rss[scale] = meter.peak() / 2**30
            log(f"memory: {scale}x batch ({PROMPTS * scale * GROUP} rows): {secs[scale]:.1f} s, peak RSS {rss[scale]:.2f} GiB")
    rows = ", ".join(f"{s}x ({PROMPTS * s * GROUP} rows): {rss[s]:.2f} GiB, {secs[s]:.1f} s" for s in SCALES)
    record(Measurement(
        "6a", value=rss[SCALES[-1]] / rss[SCALES[0]],
        shown=f"{rss[SCALES[-1]] / rss[SCALES[0]]:.2f} ({' / '.join(f'{rss[s]:.2f}' for s in SCALES)} GiB)",
        note=f"Peak RSS of driver + Ray workers per step: {rows}.",
        details={"rss_gib": rss, "step_s": secs},
    ))
    slope = loglog_slope([float(s) for s in SCALES], [secs[s] for s in SCALES])
    record(Measurement(
        "6b", value=slope,
        shown=f"{slope:.2f} (t2x/t1x {secs[2] / secs[1]:.2f}, t4x/t1x {secs[4] / secs[1]:.2f})",
        note=f"Step times: {', '.join(f'{s}x {secs[s]:.1f} s' for s in SCALES)}; a slope of 1 is linear.",
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
