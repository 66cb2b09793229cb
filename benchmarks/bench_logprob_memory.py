"""Row 10, log-prob and entropy memory: the chunked computation against the plain one.

A log-prob pass turns the LM head's (N, V) logits into each label's log-probability and the
entropy of each position. Computed the plain way it builds several (N, V) temporaries: the logits
divided by the temperature, a float32 log-softmax, a softmax for the entropy and the product in its
sum. ``verl.utils.chunked_logprob`` (what the actor uses) divides in place and walks ``chunk_size``
positions at a time, so its temporaries are (chunk, V).

Both run under ``torch.no_grad`` (as ``compute_log_prob`` does) on the same float32 logits of
``TOKENS`` positions of a Qwen2.5 vocabulary (``VOCAB``). Measured: the process's peak resident
memory during each computation (``VmHWM``, reset before each, after ``malloc_trim``) minus the
resident memory just before it (the logits already allocated).

10. peak extra memory, chunked ÷ plain: <= 0.25. The note gives both in GiB and the largest
    difference between the two results (they compute the same numbers).
"""

from __future__ import annotations

import os

from benchmarks.bench_plan_memory import PeakResident
from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

TOKENS = 4096
VOCAB = 151_936
TEMPERATURE = 0.7
GIB = 2**30

SPECS = [
    RowSpec("10", f"log-prob + entropy peak extra memory, chunked ÷ plain ({TOKENS} tokens, vocab {VOCAB}, float32)",
            Target("<=", 0.25),
            "the chunked path built an (N, V) temporary again (a copy of the logits, a full softmax)."),
]


def plain_log_probs_and_entropy(logits, labels, temperature: float):
    """(N, V) logits, (N,) labels -> (N,) log-probs, (N,) entropy, the way without chunks."""
    import torch

    x = logits / temperature
    log_probs = torch.log_softmax(x.float(), dim=-1).gather(-1, labels[:, None]).squeeze(-1)
    p = torch.softmax(x, dim=-1)
    entropy = torch.logsumexp(x, dim=-1) - (p * x).sum(-1)
    return log_probs, entropy


def chunked_log_probs_and_entropy(logits, labels, temperature: float):
    """The same numbers through the actor's path: temperature in place, then chunk by chunk."""
    from verl.utils.chunked_logprob import log_probs_and_entropy

    return log_probs_and_entropy(logits.div_(temperature), labels, calculate_entropy=True)


def measure(ctx: BenchContext, record: Recorder) -> None:
    import torch

    labels = torch.randint(0, VOCAB, (TOKENS,), generator=torch.Generator().manual_seed(0))
    memory = PeakResident()
    extra, results = {}, {}
    with torch.no_grad():
        for name, fn in (("plain", plain_log_probs_and_entropy), ("chunked", chunked_log_probs_and_entropy)):
            logits = torch.randn(TOKENS, VOCAB, generator=torch.Generator().manual_seed(1)).mul_(4.0)  # the same for both
            before = memory.reset()
            results[name] = fn(logits, labels, TEMPERATURE)
            extra[name] = memory.peak() - before
            log(f"{name}: peak extra {extra[name] / GIB:.2f} GiB")
            del logits
    diff = max(float((a - b).abs().max()) for a, b in zip(results["plain"], results["chunked"]))
    ratio = extra["chunked"] / extra["plain"]
    logits_gib = TOKENS * VOCAB * 4 / GIB
    record(Measurement(
        "10", value=ratio, shown=f"{ratio:.3f} ({extra['chunked'] / GIB:.2f} of {extra['plain'] / GIB:.2f} GiB)",
        note=(f"{TOKENS} x {VOCAB} float32 logits ({logits_gib:.2f} GiB) under no_grad, temperature {TEMPERATURE}: "
              f"plain {extra['plain'] / GIB:.2f} GiB extra, chunked {extra['chunked'] / GIB:.2f} GiB; "
              f"largest difference of the results {diff:.1e}."),
        details={"plain_extra_bytes": extra["plain"], "chunked_extra_bytes": extra["chunked"], "max_abs_diff": diff},
    ))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    raise SystemExit(row_main(SPECS, measure))
