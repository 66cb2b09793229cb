"""Row 4, update efficiency: actor-update FLOP/s ÷ the matmul rate torch reaches on this machine.

The actor is the project's ``DataParallelPPOActor`` (policy loss, entropy, KL loss against given
reference log-probs, AdamW from ``verl.utils.optim``) on the random ~100M model, one process, no
wrapper. One ``update_policy`` call on ``ROWS`` x ``SEQ_LEN`` tokens (one mini-batch, one
micro-batch) is timed after a warm-up call, in float32 and bfloat16. Update FLOPs are
``6 * parameters * tokens``. The reference rate is the best of ``MATMUL_REPEATS`` square
``MATMUL_N``-sized ``torch.matmul`` calls in the same dtype, measured in the same run. The row
reports the dtype whose update is faster. bfloat16 is measured only where the CPU computes it
natively (``cpu_has_native_bf16``: AMX or AVX512-BF16): emulated bfloat16 runs an
update more than ten times slower than float32, past the row's time limit, and no run here trains
in it (``autocast_dtype: auto`` picks float32 there).
"""

from __future__ import annotations

import time

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

ROWS = 4
SEQ_LEN = 256
PROMPT_LEN = 64
MATMUL_N = 2048
MATMUL_REPEATS = 5
DTYPES = ("float32", "bfloat16")

SPECS = [
    RowSpec("4", "update efficiency: actor update FLOP/s (6·params·tokens) ÷ torch matmul rate (~100M model)",
            Target(">=", 0.40),
            "the update also runs attention, normalisation, softmax/log-prob, the optimizer and Python "
            "dispatch, none of which reach matmul speed; on 2 cores with other load the matmul peak "
            "itself varies between runs."),
]


def matmul_rate(dtype_name: str, n: int = MATMUL_N, repeats: int = MATMUL_REPEATS) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) ``torch.matmul`` in ``dtype_name`` (2 n^3 FLOPs each)."""
    import torch

    from verl.utils.model import torch_dtype

    dtype = torch_dtype(dtype_name)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def synthetic_batch(vocab: int, rows: int, seq_len: int, prompt_len: int):
    """A full-length update batch (no padding): random ids, zero-mean advantages, plausible log-probs."""
    import torch

    from verl.protocol import DataProto

    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (rows, seq_len), generator=g)
    response_len = seq_len - prompt_len
    return DataProto.from_dict(
        tensors={
            "input_ids": input_ids,
            "attention_mask": torch.ones(rows, seq_len, dtype=torch.long),
            "position_ids": torch.arange(seq_len).expand(rows, seq_len).clone(),
            "responses": input_ids[:, prompt_len:].clone(),
            "response_mask": torch.ones(rows, response_len, dtype=torch.long),
            "old_log_probs": -7.0 + 0.1 * torch.randn(rows, response_len, generator=g),
            "ref_log_prob": -7.0 + 0.1 * torch.randn(rows, response_len, generator=g),
            "advantages": torch.randn(rows, response_len, generator=g),
        },
        meta_info={"temperature": 1.0},
    )


def update_seconds(model_path, dtype_name: str) -> tuple[float, int]:
    """(seconds of one timed ``update_policy``, parameter count) in ``dtype_name``."""
    from benchmarks.bench_rollout import trainer_config
    from verl.utils.model import load_causal_lm, torch_dtype
    from verl.utils.optim import build_optimizer
    from verl.workers.actor.dp_actor import DataParallelPPOActor

    cfg = trainer_config([f"actor_rollout_ref.model.path={model_path}", "data.train_files=unused",
                          f"actor_rollout_ref.actor.ppo_mini_batch_size={ROWS}",
                          f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={ROWS}",
                          "actor_rollout_ref.actor.use_kl_loss=true"], "cpu")
    actor_cfg = cfg.actor_rollout_ref.actor
    module = load_causal_lm(str(model_path), torch_dtype(dtype_name), "sdpa")
    optimizer = build_optimizer(module.parameters(), actor_cfg.optim, "actor_rollout_ref.actor.optim")
    actor = DataParallelPPOActor(actor_cfg, module, optimizer, None,
                                 dp_size=1, device="cpu")
    params = sum(p.numel() for p in module.parameters())
    batch = synthetic_batch(module.config.vocab_size, ROWS, SEQ_LEN, PROMPT_LEN)
    actor.update_policy(batch)  # warm-up: allocator, optimizer state
    start = time.perf_counter()
    actor.update_policy(batch)
    return time.perf_counter() - start, params


def measure(ctx: BenchContext, record: Recorder) -> None:
    from benchmarks.models import random_policy
    from verl.trainer.sft_trainer import cpu_has_native_bf16

    path = random_policy(ctx.workdir, "100m")
    tokens = ROWS * SEQ_LEN
    dtypes = [d for d in DTYPES if d != "bfloat16" or cpu_has_native_bf16()]
    skipped = "" if len(dtypes) == len(DTYPES) else " bfloat16 not measured: this CPU has no native bfloat16."
    results = {}
    for dtype in dtypes:
        peak = matmul_rate(dtype)
        secs, params = update_seconds(path, dtype)
        achieved = 6 * params * tokens / secs
        results[dtype] = {"update_s": secs, "update_flops": achieved, "matmul_flops": peak, "params": params}
        log(f"update: {dtype}: update {secs:.2f} s = {achieved / 1e9:.1f} GFLOP/s; matmul {peak / 1e9:.1f} GFLOP/s")
    best = min(results, key=lambda d: results[d]["update_s"])
    r = results[best]
    others = "; ".join(f"{d}: update {v['update_s']:.2f} s, {v['update_flops'] / 1e9:.1f} GFLOP/s, matmul "
                       f"{v['matmul_flops'] / 1e9:.1f} GFLOP/s, ratio {v['update_flops'] / v['matmul_flops']:.2f}"
                       for d, v in results.items())
    record(Measurement(
        "4", value=r["update_flops"] / r["matmul_flops"],
        shown=f"{r['update_flops'] / r['matmul_flops']:.2f} ({best})",
        note=(f"{r['params'] / 1e6:.1f}M parameters, {ROWS} x {SEQ_LEN} tokens per update (one micro-batch), "
              f"matmul reference {MATMUL_N}x{MATMUL_N}, best of {MATMUL_REPEATS}. {others}.{skipped}"),
        details=results,
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
