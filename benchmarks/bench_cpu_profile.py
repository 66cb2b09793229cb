"""Row 4b, the cpu device profile's packing choice: log-prob pass seconds, packed ÷ padded.

``verl/trainer/config/device/cpu.yaml`` keeps ``use_remove_padding: false`` (the padded path) on
CPU. Packing computes only the real tokens of a micro-batch, but with sdpa attention transformers
then masks the packed sequence with a (tokens x tokens) block mask, quadratic in the micro-batch's
tokens. Which path is faster therefore depends on the shape; the row measures both paths of the
project's ``DataParallelPPOActor.compute_log_prob`` (float32, one process, one micro-batch) at two:

- the miniature's shape (``configs/demo.yaml``: the tiny-tied-4h policy, 8 prompts x 8 = 64 rows of
  a 256-token prompt and up to 320 response tokens), which the CPU runs here use: the row's value;
- a ~100M random model on 8 rows of 80 - 512 tokens (trajectories vary about 5x in length), in the
  note: a shape where packing can win.

The value is packed ÷ padded seconds at the miniature's shape: above 1 means the profile's padded
path is the faster one there.
"""

from __future__ import annotations

import time

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

# (preset, rows, padded length, prompt length, real tokens of row i)
SHAPES = {
    "miniature": ("tiny-tied-4h", 64, 576, 256, lambda i: 256 + 40 + (i * 37) % 280),
    "100m": ("100m", 8, 512, 64, lambda i: (512, 400, 300, 220, 160, 120, 96, 80)[i]),
}

SPECS = [
    RowSpec("4b", "cpu profile: log-prob pass seconds, packed ÷ padded (use_remove_padding), the miniature's "
                  "shape (64 rows of 296-575 tokens)",
            Target(">=", 1.0),
            "packing wins where a micro-batch holds few tokens and much padding (see the ~100M shape in the "
            "note); the cpu profile would then have to follow the shape."),
]


def _batch(vocab: int, rows: int, seq_len: int, prompt_len: int, real):
    import torch

    from verl.protocol import DataProto

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (rows, seq_len), generator=g)
    mask = torch.zeros(rows, seq_len, dtype=torch.long)
    for i in range(rows):
        mask[i, :real(i)] = 1  # a full prompt, then a response of its own length, right-padded
    return DataProto.from_dict(
        tensors={"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
                 "responses": ids[:, prompt_len:].clone(), "response_mask": mask[:, prompt_len:].clone()},
        meta_info={"temperature": 1.0, "use_dynamic_bsz": False, "micro_batch_size": rows})


def log_prob_seconds(model_path, packed: bool, rows: int, seq_len: int, prompt_len: int, real) -> float:
    """Seconds of one ``compute_log_prob`` after a warm-up call."""
    import torch

    from benchmarks.bench_rollout import trainer_config
    from verl.utils.model import load_causal_lm
    from verl.workers.actor.dp_actor import DataParallelPPOActor

    cfg = trainer_config([f"actor_rollout_ref.model.path={model_path}", "data.train_files=unused"], "cpu")
    module = load_causal_lm(str(model_path), torch.float32, "sdpa")
    actor = DataParallelPPOActor(cfg.actor_rollout_ref.actor, module, None, dp_size=1, device="cpu",
                                 use_remove_padding=packed)
    batch = _batch(module.config.vocab_size, rows, seq_len, prompt_len, real)
    actor.compute_log_prob(batch)  # warm-up
    start = time.perf_counter()
    actor.compute_log_prob(batch)
    return time.perf_counter() - start


def measure(ctx: BenchContext, record: Recorder) -> None:
    from benchmarks.models import random_policy

    results = {}
    for name, (preset, rows, seq_len, prompt_len, real) in SHAPES.items():
        path = random_policy(ctx.workdir, preset)
        secs = {mode: log_prob_seconds(path, mode == "packed", rows, seq_len, prompt_len, real)
                for mode in ("padded", "packed")}
        tokens = sum(real(i) for i in range(rows))
        results[name] = {**secs, "rows": rows, "real_tokens": tokens, "padded_tokens": rows * seq_len}
        log(f"cpu profile: {name}: padded {secs['padded']:.2f} s, packed {secs['packed']:.2f} s")
    mini, big = results["miniature"], results["100m"]
    record(Measurement(
        "4b", value=mini["packed"] / mini["padded"],
        shown=f"{mini['packed'] / mini['padded']:.1f} (~100M, 8 rows: {big['packed'] / big['padded']:.2f})",
        note=(f"compute_log_prob, float32, sdpa, one micro-batch, after a warm-up call. Miniature shape: "
              f"{mini['rows']} rows, {mini['real_tokens']} real of {mini['padded_tokens']} tokens: padded "
              f"{mini['padded']:.2f} s, packed {mini['packed']:.2f} s. ~100M model: {big['rows']} rows, "
              f"{big['real_tokens']} real of {big['padded_tokens']} tokens: padded {big['padded']:.2f} s, "
              f"packed {big['packed']:.2f} s (packing computes {big['real_tokens'] / big['padded_tokens']:.0%} "
              "of the tokens and wins there; with many rows the packed sequence's attention mask, quadratic "
              "in the micro-batch's tokens, costs more than the padding saves)."),
        details=results,
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
