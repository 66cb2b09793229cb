"""One GPU without the serving stack: the trainer's actor worker through a step's phases, measured
against the memory plan.

    python -m scripts.gpu_worker_check --models DIR [DIR ...] --out OUT [--device cuda]
                                       [--rows 8] [--prompt-length 1024] [--response-length 3072]
                                       [--new-tokens 32] [-- HYDRA_OVERRIDE ...]

For a GPU machine that has PyTorch and transformers but not vLLM or Ray (``scripts/gpu_worker_check.sh``
adds the few pure-Python packages the worker needs): what ``scripts/gpu_smoke.sh`` measures about
the trainer's own GPU code, without the rollout engine and the simulator. For each model folder
(random weights of a real shape: ``python -m zerosearch.miniature.tiny --shape ...``):

1. The launcher composes the trainer config for one rank on ``--device`` with the device profile's
   defaults (cuda: bf16 mixed precision, CPU offload, token-budget micro-batches) and the hf rollout
   engine; the memory plan (``verl/utils/memory_plan.py``) is printed. A model the plan refuses is
   recorded, not loaded.
2. The real ``ActorRolloutRefWorker`` runs in this process (one NCCL rank on cuda, gloo on cpu) and
   goes through the phases of a step: weight sync into the engine, a short generation, the log-prob
   passes of actor and reference over ``--rows`` trajectories of the full prompt + response length,
   two updates (the first creates the optimizer states), a second weight sync. The default rows and
   lengths fill the cuda profile's token budgets exactly (8 rows of 4,096 tokens: two update
   micro-batches of 16,384 tokens, one log-prob micro-batch of 32,768), the case the plan bounds.
3. Checks: after the sync, every engine weight equals the actor's gathered weight in the engine's
   dtype (max |diff| must be 0); the engine's log-probs of freshly sampled tokens against the
   actor's log-prob pass over the same tokens (mean |diff|, the trainer's
   ``actor/rollout_old_logprob_abs_diff``) must be under ``LOGPROB_DIFF_MAX``.

Measured per phase on cuda (``verl.utils.device_memory``): the largest memory this process's tensors
held (``max_allocated``) and the GPU memory in use at the phase's end (``device_used``, every
process and the CUDA context included), against the plan's peak for that phase. The rollout
phase generates ``--new-tokens`` only, far below the plan's bound of full-length sequences.
Writes ``OUT/worker_check.md`` (a table per model) and ``OUT/worker_check.json``; exit 0 when every
model ran and passed its checks, 1 otherwise, 2 when ``--device cuda`` finds no GPU.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

GIB = 2**30
# The engine and the actor compute in the same dtype from the same weights; what differs is kernels
# and the order of sums (bf16 on cuda: a few hundredths of a nat on random-weight models).
LOGPROB_DIFF_MAX = 0.1
PHASES = ("weight sync", "rollout", "log-prob", "update")
# A model whose planned host memory (CPU-offloaded weights, gradients and AdamW states) passes this
# share of the machine's memory is not loaded: the kernel would kill the process mid-run.
HOST_SHARE = 0.9


def gpu_capacity_gib(device: str) -> float:
    """One device's memory in GiB (cuda), or a bound no CPU run reaches."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory / GIB
    return 1024.0


def host_memory_needed_gib(phases: list[Any], device: str) -> float:
    """The most host memory any planned phase needs: the offloaded state on cuda, everything on cpu."""
    return max((p.host_total if device == "cuda" else p.peak + p.host_total) for p in phases) / GIB


def engine_weight_diff(worker: Any) -> float:
    """max |engine weight - actor weight gathered and cast to the engine's dtype| over every tensor."""
    import torch

    from verl.utils.fsdp_utils import unwrap_model
    from verl.workers.rollout.weight_sync import full_tensor, named_weights

    engine = worker.rollout._get_module().state_dict()
    worst = 0.0
    with torch.no_grad():
        for name, tensor in named_weights(unwrap_model(worker.actor_module)):
            full = full_tensor(tensor)
            target = engine[name]
            diff = (full.to(target.device, target.dtype).float() - target.float()).abs().max()
            worst = max(worst, float(diff))
    return worst


def sample_and_score(worker: Any, vocab: int, rows: int, prompt_len: int, new_tokens: int, seed: int) -> float:
    """Sample ``new_tokens`` per row with the engine at the rollout temperature; mean |engine log-prob -
    actor log-prob| over the sampled tokens (the actor's pass over prompt + sampled response)."""
    import torch

    from verl.protocol import DataProto
    from verl.utils.torch_functional import compute_position_id_with_mask

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(10, vocab, (rows, prompt_len), generator=g)
    sampling = {"max_new_tokens": new_tokens, "temperature": float(worker.cfg.rollout.temperature),
                "do_sample": True, "seed": seed}
    out = worker.generate(DataProto.from_dict(non_tensors={"prompt_token_ids": prompts.tolist()},
                                              meta_info={"sampling": sampling}))
    tokens = [list(t) for t in out.non_tensor_batch["output_token_ids"]]
    engine_lp = [list(lp) for lp in out.non_tensor_batch["output_log_probs"]]
    width = max(len(t) for t in tokens)
    if width == 0:
        raise RuntimeError("the engine generated no token for any row")
    responses = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    engine = torch.zeros(rows, width)
    for i, (t, lp) in enumerate(zip(tokens, engine_lp)):
        responses[i, :len(t)] = torch.tensor(t, dtype=torch.long)
        mask[i, :len(t)] = 1
        engine[i, :len(lp)] = torch.tensor(lp)
    ids = torch.cat([prompts, responses], dim=1)
    attention = torch.cat([torch.ones_like(prompts), mask], dim=1)
    positions = compute_position_id_with_mask(attention)
    batch = DataProto.from_dict({"input_ids": ids, "attention_mask": attention, "position_ids": positions,
                                 "responses": responses, "response_mask": mask})
    actor = worker.compute_log_prob(batch).batch["old_log_probs"].float()
    keep = mask.bool()
    return float((actor[keep] - engine[keep]).abs().mean())


def check_model(model: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Plan, then run the worker's phases for one model folder; the record of what was measured."""
    import psutil
    import torch

    from benchmarks.bench_plan_memory import full_length_batch, launcher_config
    from verl.utils.device_memory import ALLOCATED, DEVICE_USED
    from verl.utils.memory_plan import plan_memory, read_model_shape, render_plan, settings_from_config
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    cfg = launcher_config(model, out, device=args.device, rows=args.rows, prompt=args.prompt_length,
                          response=args.response_length, overrides=tuple(args.overrides))
    shape = read_model_shape(str(model))
    settings = settings_from_config(cfg, capacity_gib=gpu_capacity_gib(args.device))
    text, fits = render_plan(shape, settings, model.name)
    print(text, end="", flush=True)
    phases = plan_memory(shape, settings)
    record: dict[str, Any] = {"model": model.name, "params_b": shape.num_params / 1e9, "plan_text": text,
                              "planned_gib": {p.name: p.peak / GIB for p in phases}}
    if not fits:
        record["result"] = "refused by the plan: " + text.strip().splitlines()[-1]
        return record
    host_gib = host_memory_needed_gib(phases, args.device)
    have_gib = psutil.virtual_memory().total / GIB
    if host_gib > HOST_SHARE * have_gib:
        record["result"] = (f"not run: the plan needs {host_gib:.1f} GiB of host memory, more than {HOST_SHARE:.0%} "
                            f"of this machine's {have_gib:.1f} GiB")
        return record

    seconds: dict[str, float] = {}
    memory: dict[str, dict[str, float]] = {}  # phase -> {"max_allocated": GiB, "device_used": GiB}
    readings = {ALLOCATED: "max_allocated", DEVICE_USED: "device_used"}  # the worker's metric prefixes

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - start
        for key, value in worker.memory_metrics().items():
            prefix, kind = next((p, k) for p, k in readings.items() if key.startswith(p))
            slot = memory.setdefault(key.removeprefix(prefix), {})
            slot[kind] = max(slot.get(kind, 0.0), value)
        print(f"gpu_worker_check: {model.name}: {name} {seconds[name]:.1f} s", flush=True)
        return result

    worker = ActorRolloutRefWorker(cfg, "actor_rollout_ref")
    timed("init", worker.init_model)
    timed("weight sync (first)", worker.sync_rollout_weights)
    batch = full_length_batch(shape.vocab_size, rows=args.rows, prompt=args.prompt_length,
                              response=args.response_length)
    timed("actor log-prob", lambda: worker.compute_log_prob(copy.deepcopy(batch)))
    timed("ref log-prob", lambda: worker.compute_ref_log_prob(copy.deepcopy(batch)))
    timed("update (first)", lambda: worker.update_actor(copy.deepcopy(batch)))
    timed("update", lambda: worker.update_actor(copy.deepcopy(batch)))
    stale = engine_weight_diff(worker)
    sync_stats = timed("weight sync", worker.sync_rollout_weights)
    synced = engine_weight_diff(worker)
    lp_diff = timed("rollout + log-prob check",
                    lambda: sample_and_score(worker, shape.vocab_size, args.rows, min(args.prompt_length, 256),
                                             args.new_tokens, seed=1))
    problems = []
    if stale == 0.0:
        problems.append("the updates left the actor's weights equal to the engine's: nothing to check the sync with")
    if synced != 0.0:
        problems.append(f"after the sync an engine weight differs from the actor's by {synced:.3g}")
    if not lp_diff < LOGPROB_DIFF_MAX:
        problems.append(f"engine vs actor log-prob mean |diff| {lp_diff:.3g} >= {LOGPROB_DIFF_MAX}")
    record.update({
        "result": "ok" if not problems else "failed: " + "; ".join(problems),
        "seconds": seconds, "measured_gib": memory, "weight_diff_before_sync": stale, "weight_diff_after_sync": synced,
        "rollout_logprob_abs_diff": lp_diff, "sync": sync_stats, "attn_implementation":
            str(getattr(getattr(worker.actor_module, "config", None), "_attn_implementation", "?")),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
    })
    del worker
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return record


def render(records: list[dict[str, Any]], command: str) -> str:
    """Markdown: per model, the plan against the measured peaks of each phase, seconds and checks."""
    lines = ["# GPU worker check", "", f"command: `{command}`", ""]
    for r in records:
        lines += [f"## {r['model']} ({r['params_b']:.2f}B parameters)", ""]
        if "measured_gib" not in r:
            lines += [r["result"], ""]
            continue
        lines += [f"device {r['device']}, attention {r['attn_implementation']}; result: {r['result']}", "",
                  "| phase | plan GiB | device used GiB | max allocated GiB | plan ÷ device used |",
                  "| --- | --- | --- | --- | --- |"]
        for phase in PHASES:
            planned = r["planned_gib"].get(phase)
            got = r["measured_gib"].get(phase, {})
            used, alloc = got.get("device_used"), got.get("max_allocated")
            ratio = f"{planned / used:.2f}" if planned and used else "n/a"
            lines.append(f"| {phase} | {planned:.2f} | " + (f"{used:.2f}" if used is not None else "n/a") + " | "
                         + (f"{alloc:.2f}" if alloc is not None else "n/a") + f" | {ratio} |")
        lines += ["", "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()),
                  f"weight sync: {r['sync'].get('weight_sync/bytes', 0) / 2**20:.0f} MiB moved; engine weights vs "
                  f"actor: max |diff| {r['weight_diff_before_sync']:.3g} before the sync, "
                  f"{r['weight_diff_after_sync']:.3g} after; engine vs actor log-probs of sampled tokens: "
                  f"mean |diff| {r['rollout_logprob_abs_diff']:.3g} (at most {LOGPROB_DIFF_MAX})", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_worker_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="model folders (config.json, weights, tokenizer)")
    parser.add_argument("--out", required=True, help="folder for worker_check.md and worker_check.json")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--rows", type=int, default=8, help="trajectories per pass, a multiple of 4 (default 8)")
    parser.add_argument("--prompt-length", type=int, default=1024)
    parser.add_argument("--response-length", type=int, default=3072)
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens sampled per row by the engine")
    args = parser.parse_args(argv)
    args.overrides = overrides
    for folder in args.models:
        if not (Path(folder) / "config.json").is_file():
            parser.error(f"--models: {folder} has no config.json")
    if args.rows <= 0 or args.rows % 4:
        parser.error(f"--rows must be a positive multiple of 4, got {args.rows}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_worker_check: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m scripts.gpu_worker_check " + " ".join(sys.argv[1:] if argv is None else argv)
    records = []
    for folder in args.models:
        try:
            records.append(check_model(Path(folder), out, args))
        except Exception as exc:  # a model that breaks is recorded; the next one still runs
            import traceback

            traceback.print_exc()
            gc.collect()  # the failed model's worker goes before the next one loads
            if args.device == "cuda":
                torch.cuda.empty_cache()
            records.append({"model": Path(folder).name, "params_b": float("nan"),
                            "result": f"failed: {type(exc).__name__}: {exc}"})
        (out / "worker_check.json").write_text(json.dumps(records, indent=1, default=str))
        (out / "worker_check.md").write_text(render(records, command))
    print(render(records, command))
    return 0 if all(r["result"] == "ok" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
