"""Rows 7a-7c, weight sync actor -> vLLM engine: time, memory and exactness of the streamed sync.

The actor is the random ~100M model (float32, plain module) in this process; the engine is the
project's ``VLLMRollout`` (vLLM-CPU here, in-process) with the trainer's default rollout config
(dtype, ``weight_sync_bucket_mb``). The streamed sync is ``VLLMRollout.sync_weights`` (tensors
streamed into vLLM's in-place reload, no file). The baseline is the file-based sync this project
used before, kept here only: the full state dict written as one safetensors file, then
``collective_rpc("reload_weights", weights_path=...)``. Both take fresh copies of the actor's
tensors, as gathering FSDP shards makes them (the streamed one per parameter, when it needs it;
the baseline the whole state dict).

- 7a: median seconds of ``TIMED_SYNCS`` streamed syncs ÷ median of ``TIMED_SYNCS`` file-based syncs,
  alternated, in a process set up as the trainer's: glibc's default allocator settings and no
  sampler thread (7b's instrumentation runs in another process: its ``mallopt`` gives every
  allocation of 1 MiB or more fresh pages, whose faults add to every sync of either kind a time
  that does not belong to it). The file goes where the project's old sync put it, a temporary
  folder (``tempfile``: ``$TMPDIR`` or /tmp); the note names that folder's filesystem and gives, for
  reference, the same file-based sync through tmpfs (/dev/shm).
- 7b: peak extra resident memory of one streamed sync ÷ the model's bytes (engine dtype), worst of
  ``SYNCS``, in a fresh process (``memory_rounds``) with its own engine. The process RSS is sampled
  every ``SAMPLE_S`` from a thread, after ``malloc_trim``; from the start, allocations of 1 MiB or
  more get their own mappings (``mallopt``), so that RSS follows the live tensors rather than the
  heap's high-water mark; the file-based sync's peak is in the note.
- 7d (measured, no target): the same timings less the engine's own work: each sync's median seconds
  minus the median of vLLM's reload fed tensors already in memory (``reload_alone``: no stream, no
  file, no gather), streamed ÷ file-based. It separates what a way of syncing adds from the
  reload both ways run, which on vLLM-CPU re-packs every linear weight.
- 7c: max |rollout log-prob - actor log-prob| over ``EVAL_ROWS`` sequences after each of 3 AdamW
  steps (random-token cross-entropy, lr ``LR``), each followed by a streamed sync. The engine's
  log-probs are vLLM prompt log-probs; the actor's are the float32 forward's ``log_softmax``.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.common import BenchContext, Measurement, Recorder, RowSpec, Target, log, row_main

SYNCS = 3
TIMED_SYNCS = 5
SHM = Path("/dev/shm")
OPT_STEPS = 3
LR = 1e-3
EVAL_ROWS, EVAL_LEN = 2, 32
SAMPLE_S = 0.002
# the tolerance tests/verl/workers/test_fsdp_workers_vllm.py holds the vLLM-CPU rollout to
LOG_PROB_ATOL = 1e-3

SPECS = [
    RowSpec("7a", "weight sync time: streamed in memory ÷ file-based (safetensors + reload), ~100M model, vLLM-CPU",
            Target("<=", 0.5),
            "both paths run vLLM's same layer-by-layer reload (vLLM-CPU keeps only a oneDNN-packed copy of "
            "each linear weight, so every sync re-packs the model: no direct load into the parameters as on "
            "cuda), and that reload is most of the streamed sync; the file adds only a write and a read of "
            "the model through the page cache, less than the reload itself, so the ratio stays above 0.5."),
    RowSpec("7b", "weight sync peak extra memory ÷ model bytes (streamed, default bucket), ~100M model",
            Target("<=", 0.25),
            "besides the bucket, vLLM's reload materialises each layer once more while it loads and "
            "re-packs it."),
    RowSpec("7c", f"rollout log-prob max abs diff vs the actor after each of {OPT_STEPS} optimizer steps + syncs",
            Target("<=", LOG_PROB_ATOL),
            "vLLM-CPU's kernels differ from the actor's float32 forward by rounding only; a larger gap "
            "means the engine kept stale weights."),
    RowSpec("7d", "weight sync time beyond vLLM's own reload: streamed ÷ file-based, ~100M model, vLLM-CPU",
            Target("measured")),
]


class PeakRss:
    """Samples this process's resident memory from a thread; ``peak`` is the highest seen."""

    def __init__(self, interval_s: float = SAMPLE_S) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakRss":
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra(self) -> int:
        return self.peak - self.start


def map_large_allocations(threshold: int = 1 << 20) -> None:
    """Serve allocations of ``threshold`` bytes or more with their own mappings (glibc ``mallopt``),
    so that freeing one returns it to the OS at once and RSS follows the live tensors."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except OSError:
        pass


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS rises again when memory is reused."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def file_sync(rollout, module, folder: Path) -> None:
    """The file-based baseline: the full state dict as one safetensors file, re-read by vLLM."""
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().clone().to("cpu").contiguous()  # the full state dict gathered from the shards
        if tensor.untyped_storage().data_ptr() in seen:  # tied weights share storage
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    try:
        rollout.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder), "is_checkpoint_format": True})
    finally:
        path.unlink(missing_ok=True)
    rollout.llm.reset_prefix_cache()


def _reload(worker, weights: list) -> None:
    """Run on the vLLM worker: its in-place reload fed ``weights`` (HF names, tensors in memory)."""
    worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)


def reload_alone(rollout, weights: list) -> None:
    """The engine's own part of any sync: vLLM's reload of tensors already in memory, no stream or file."""
    rollout.llm.collective_rpc(_reload, args=(weights,))
    rollout.llm.reset_prefix_cache()


def filesystem_of(path: str | Path) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/mounts; "unknown" elsewhere)."""
    path, best, kind = str(Path(path).resolve()), "", "unknown"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and (path == fields[1] or path.startswith(fields[1].rstrip("/") + "/")) \
                and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def gathered(module):
    """The actor's parameters as an FSDP gather hands them over: a fresh full tensor each, made when
    the stream asks for it (a plain module would otherwise pass its own tensors, with no copy)."""
    from verl.workers.rollout.weight_sync import named_weights

    return ((name, tensor.clone()) for name, tensor in named_weights(module))


def max_log_prob_diff(rollout, module, sequences: list[list[int]]) -> float:
    """max over tokens of |engine prompt log-prob - actor log-prob| for each sequence after its first token."""
    import torch
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    results = rollout.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], sampling_params=params,
                                   use_tqdm=False)
    with torch.no_grad():
        logits = module(input_ids=torch.tensor(sequences)).logits.float()
    actor = torch.log_softmax(logits, dim=-1)
    worst = 0.0
    for b, (seq, result) in enumerate(zip(sequences, results)):
        for i in range(1, len(seq)):
            engine_lp = result.prompt_logprobs[i][seq[i]].logprob
            worst = max(worst, abs(engine_lp - float(actor[b, i - 1, seq[i]])))
    return worst


def optimizer_step(module, optimizer, vocab: int, generator) -> None:
    """One AdamW step on next-token cross-entropy of random tokens (moves every weight)."""
    import torch

    ids = torch.randint(0, vocab, (1, 32), generator=generator)
    loss = module(input_ids=ids, labels=ids).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def measure(ctx: BenchContext, record: Recorder) -> None:
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.bench_rollout import rollout_config
    from benchmarks.models import random_policy
    from verl.workers.rollout.vllm_rollout import VLLMRollout
    from zerosearch.launch.train import vllm_cpu_environment

    path = random_policy(ctx.workdir, "100m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    module = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rollout_cfg = rollout_config(path, "cpu")
    for key, value in {**vllm_cpu_environment(), "VLLM_CPU_KVCACHE_SPACE": "1"}.items():
        os.environ.setdefault(key, value)
    start = time.perf_counter()
    rollout = VLLMRollout(path, tokenizer, {**rollout_cfg, "max_model_len": 256}, seed=0, device="cpu")
    log(f"weight sync: vLLM engine up in {time.perf_counter() - start:.0f} s")
    model_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    bucket_mb = rollout_cfg["weight_sync_bucket_mb"]

    # 7c first: the baseline re-points vLLM's model config at its temporary folder
    g = torch.Generator().manual_seed(0)
    vocab = module.config.vocab_size
    sequences = torch.randint(0, vocab, (EVAL_ROWS, EVAL_LEN), generator=g).tolist()
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR)
    before = max_log_prob_diff(rollout, module, sequences)
    diffs = []
    for step in range(OPT_STEPS):
        optimizer_step(module, optimizer, vocab, g)
        stale_diff = max_log_prob_diff(rollout, module, sequences)
        t0 = time.perf_counter()
        rollout.sync_weights(gathered(module))
        log(f"weight sync: streamed sync {time.perf_counter() - t0:.2f} s")
        diffs.append(max_log_prob_diff(rollout, module, sequences))
        log(f"weight sync: step {step + 1}: before the sync {stale_diff:.3g}, after {diffs[-1]:.3g}")
    record(Measurement(
        "7c", value=max(diffs), shown=" / ".join(f"{d:.2g}" for d in diffs),
        note=(f"max |log-prob diff| over {EVAL_ROWS} x {EVAL_LEN - 1} tokens after each of {OPT_STEPS} AdamW steps "
              f"(lr {LR}) and streamed syncs: {', '.join(f'{d:.2g}' for d in diffs)} (before any step {before:.2g}; "
              f"the row is their max). Before each sync the engine's stale weights gave {stale_diff:.2g} at the last "
              f"step, so the check can fail."),
        details={"after_sync": diffs, "before_steps": before, "stale_last": stale_diff},
    ))

    # 7a: time as the trainer runs (default allocator, no sampler thread); 7b's instrumented rounds after
    streamed_s, file_s, shm_s, alone_s = [], [], [], []
    timed = {"streamed": streamed_s, "file": file_s, "file on /dev/shm": shm_s, "reload alone": alone_s}
    in_memory = list(gathered(module))  # made before the timer
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="sync_baseline_") as folder, \
            tempfile.TemporaryDirectory(prefix="sync_baseline_", dir=SHM if SHM.is_dir() else None) as shm:
        syncs = {"streamed": lambda: rollout.sync_weights(gathered(module)),
                 "file": lambda: file_sync(rollout, module, Path(folder)),
                 "file on /dev/shm": lambda: file_sync(rollout, module, Path(shm)),
                 "reload alone": lambda: reload_alone(rollout, in_memory)}
        for _ in range(TIMED_SYNCS):
            for kind, sync in syncs.items():
                t0 = time.perf_counter()
                sync()
                timed[kind].append(time.perf_counter() - t0)
            log("weight sync: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in timed.items()))
        fs, shm_fs = filesystem_of(folder), filesystem_of(shm)
        tmp_parent = str(Path(folder).parent)
    med = statistics.median
    ratio = med(streamed_s) / med(file_s)
    record(Measurement(
        "7a", value=ratio,
        shown=f"{ratio:.2f} ({med(streamed_s):.2f} s vs {med(file_s):.2f} s)",
        note=(f"{TIMED_SYNCS} syncs of each kind, alternated, of a {model_bytes / 2**20:.0f} MiB float32 model, "
              f"timed without 7b's memory instrumentation; seconds streamed "
              f"{', '.join(f'{s:.2f}' for s in streamed_s)}; file-based {', '.join(f'{s:.2f}' for s in file_s)} "
              f"(the row is the ratio of medians). The file went to {tmp_parent} ({fs}, float32 as the engine); "
              f"through {shm_fs} ({Path(shm).parent}) the file-based sync took a median {med(shm_s):.2f} s "
              f"(ratio {med(streamed_s) / med(shm_s):.2f})."),
        details={"streamed_s": streamed_s, "file_s": file_s, "file_shm_s": shm_s, "file_fs": fs,
                 "shm_fs": shm_fs, "model_bytes": model_bytes},
    ))

    floor = med(alone_s)
    beyond = (med(streamed_s) - floor) / (med(file_s) - floor)
    record(Measurement(
        "7d", value=beyond,
        shown=f"{beyond:.2f} ({med(streamed_s) - floor:.3f} s vs {med(file_s) - floor:.3f} s)",
        note=(f"vLLM's reload of tensors already in memory (the same model, no stream, no file) took "
              f"{', '.join(f'{x:.2f}' for x in alone_s)} s (median {floor:.2f}), timed alternately with 7a's syncs; "
              f"beyond it the streamed sync took {med(streamed_s) - floor:.3f} s and the file-based "
              f"{med(file_s) - floor:.3f} s (medians less the reload's)."),
        details={"reload_alone_s": alone_s},
    ))

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        mem = pool.submit(memory_rounds, str(path), rollout_cfg).result()
    streamed_mem, file_mem, held = mem["streamed"], mem["file"], mem["held"]
    peak = max(streamed_mem)
    record(Measurement(
        "7b", value=peak / model_bytes, shown=f"{peak / model_bytes:.3f} ({rss_mb(peak)} MB)",
        note=(f"peak RSS rise during a streamed sync (worst of {SYNCS}) with the default bucket of {bucket_mb} MiB, "
              f"model {model_bytes / 2**20:.0f} MiB; the stream itself held at most {rss_mb(max(held))} MB of gathered "
              f"tensors; the file-based sync rose by {rss_mb(max(file_mem))} MB "
              f"({max(file_mem) / model_bytes:.2f} of the model)."),
        details={"streamed_extra_bytes": streamed_mem, "file_extra_bytes": file_mem, "stream_held_bytes": held,
                 "bucket_mb": bucket_mb},
    ))


def memory_rounds(model_path: str, rollout_cfg: dict) -> dict[str, list[int]]:
    """7b, run in a fresh process: extra RSS of ``SYNCS`` streamed and file-based syncs, alternated,
    and the stream's peak held bytes, with every allocation of 1 MiB or more on its own mapping."""
    map_large_allocations()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl.workers.rollout.vllm_rollout import VLLMRollout

    module = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    rollout = VLLMRollout(model_path, AutoTokenizer.from_pretrained(model_path), {**rollout_cfg, "max_model_len": 256},
                          seed=0, device="cpu")
    out: dict[str, list[int]] = {"streamed": [], "file": [], "held": []}
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="sync_baseline_") as folder:
        rollout.sync_weights(gathered(module))  # unmeasured: the first sync of an engine allocates once
        for _ in range(SYNCS):
            trim_heap()
            with PeakRss() as rss:
                stats = rollout.sync_weights(gathered(module))
            out["streamed"].append(rss.extra)
            out["held"].append(stats.peak_held_bytes)
            trim_heap()
            with PeakRss() as rss:
                file_sync(rollout, module, Path(folder))
            out["file"].append(rss.extra)
            log(f"weight sync: memory: streamed +{rss_mb(out['streamed'][-1])} MB, "
                f"file-based +{rss_mb(out['file'][-1])} MB")
    return out


def rss_mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
