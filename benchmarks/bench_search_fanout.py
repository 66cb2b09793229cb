"""Row 1, search fan-out: one turn of simulated searches against a server of known latency/capacity.

The server (``fake_sim_server``) holds each request ``LATENCY_S`` seconds and serves ``CAPACITY``
at once, so the ideal turn of ``QUERIES`` queries takes ``ceil(QUERIES / CAPACITY) * LATENCY_S``
(one round at full concurrency). Two clients send the same simulation prompts to it:

- ours: ``SimulationSearchTool`` (one pooled ``aiohttp.ClientSession``, ``concurrency = CAPACITY``), timed
  on warm turns (the trainer reuses the tool's pool turn after turn), median of ``OUR_TURNS``;
- the original release's scheme: ``ThreadPoolExecutor(10)``, a new ``openai.OpenAI``
  client per request, ``max_tokens=600``, no stop strings, the empty system message and the
  content-part user message, then its post-processing; one turn (it is 32x slower).

Rows: 1a ours ÷ ideal (≤ 1.2), 1b original ÷ ours (≥ 5).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import REPO_ROOT, BenchContext, Measurement, Recorder, RowSpec, Target, free_port, log, row_main
from benchmarks.fake_sim_server import running_server

QUERIES = 320  # the original's turn: 64 prompts x 5 samples
LATENCY_S = 2.0  # seconds a simulator takes for one reply (a few hundred tokens)
CAPACITY = 320  # requests the server serves at once (a continuously batching sglang/vLLM)
ORIGINAL_WORKERS = 10
ORIGINAL_MAX_TOKENS = 600
OUR_TURNS = 3
QA_FILES = ("nq.jsonl", "hotpotqa.jsonl")

SPECS = [
    RowSpec("1a", f"search fan-out: our turn time ÷ ideal ({QUERIES} simulated queries)", Target("<=", 1.2),
            "client CPU time per request (see the client CPU figures) adds to the one-round ideal on 2 "
            "shared cores; the tool sends through one pooled aiohttp session, so compare with the bare "
            "aiohttp turn in the note: the gap between the two is the tool's own overhead (prompts, retry "
            "wrapper, semaphore), the rest is the machine's load."),
    RowSpec("1b", "search fan-out: original scheme's turn time ÷ ours", Target(">=", 5.0),
            "the original's 10 threads need ceil(N/10) rounds; a smaller ratio means our turn was slow."),
]


def load_questions(n: int, qa_dir: Path = REPO_ROOT / "data" / "qa") -> list[dict]:
    """The first ``n`` questions of the real QA samples (question + gold answers)."""
    rows: list[dict] = []
    for name in QA_FILES:
        path = qa_dir / name
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "question" not in obj or not obj.get("golden_answers"):
                    raise ValueError(f"{path}:{line_no}: needs 'question' and non-empty 'golden_answers'")
                rows.append(obj)
                if len(rows) == n:
                    return rows
    raise ValueError(f"{qa_dir}: only {len(rows)} questions in {QA_FILES}, the benchmark needs {n}")


def ideal_turn_s(queries: int, capacity: int, latency_s: float) -> float:
    """One round per ``capacity`` requests, each round ``latency_s``."""
    return math.ceil(queries / capacity) * latency_s


def original_turn(url: str, prompts: list[str], topk: int) -> tuple[float, int]:
    """The original scheme's turn; returns (seconds, failed requests)."""
    import openai

    def ask(prompt: str) -> str:
        client = openai.OpenAI(base_url=url + "/v1", api_key="EMPTY", timeout=120.0, max_retries=0)
        reply = client.chat.completions.create(
            model="",
            messages=[{"role": "system", "content": ""},
                      {"role": "user", "content": [{"type": "text", "text": prompt}]}],
            max_tokens=ORIGINAL_MAX_TOKENS,
            temperature=0.8,
        )
        text = reply.choices[0].message.content.replace("\n\n", "\n")
        return text.split(f"Doc {topk + 1}")[0]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=ORIGINAL_WORKERS) as pool:
        futures = [pool.submit(ask, p) for p in prompts]
        failed = 0
        for f in futures:
            try:
                f.result(timeout=600)
            except Exception:  # counted, as the benchmark must finish
                failed += 1
    return time.perf_counter() - start, failed


def bare_aiohttp_turn(url: str, tool, requests) -> tuple[float, float]:
    """Reference: the tool's own request bodies sent from one aiohttp session; (seconds, CPU seconds).

    Not a row: it shows how much of our turn is client overhead rather than the server's latency.
    """
    import asyncio

    import aiohttp

    bodies = [tool._payload(tool.build_prompt(r), seed=i)[1] for i, r in enumerate(requests)]

    async def turn() -> tuple[float, float]:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CAPACITY), timeout=timeout) as session:
            async def one(body: dict) -> None:
                async with session.post(url + "/v1/chat/completions", json=body) as reply:
                    reply.raise_for_status()
                    await reply.json()

            await asyncio.gather(*(one(b) for b in bodies))  # opens the pool
            start, cpu_start = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(b) for b in bodies))
            return time.perf_counter() - start, time.process_time() - cpu_start

    return asyncio.run(turn())


def measure(ctx: BenchContext, record: Recorder) -> None:
    from zerosearch.tools.base import SearchRequest
    from zerosearch.tools.simulation import SimulationSearchTool

    rows = load_questions(QUERIES)
    requests = [SearchRequest(query=r["question"], question=r["question"], golden_answers=r["golden_answers"], row=i)
                for i, r in enumerate(rows)]
    ideal = ideal_turn_s(QUERIES, CAPACITY, LATENCY_S)
    port = free_port()
    log(f"fan-out: fake simulator on port {port}: latency {LATENCY_S} s, capacity {CAPACITY}; ideal turn {ideal:.2f} s")
    with running_server(LATENCY_S, CAPACITY, port=port, python=ctx.python) as url:
        tool = SimulationSearchTool(mode="simulate_sft", hosts=url, model="simulation", concurrency=CAPACITY,
                                    max_tokens=ORIGINAL_MAX_TOKENS, timeout=60.0, max_retries=0)
        try:
            prompts = [tool.build_prompt(r) for r in requests]
            ours: list[float] = []
            cpu: list[float] = []
            for turn in range(OUR_TURNS + 1):  # turn 0 opens the connection pool
                start, cpu_start = time.perf_counter(), time.process_time()
                results = tool.search(requests)
                elapsed = time.perf_counter() - start
                cpu_s = time.process_time() - cpu_start
                failed = sum(not r.ok for r in results)
                if failed:
                    raise RuntimeError(f"{failed} of {QUERIES} simulated searches failed: {results[0].error}")
                log(f"fan-out: ours, {'warm-up' if turn == 0 else 'turn'} {turn}: {elapsed:.2f} s "
                    f"(client CPU {cpu_s:.2f} s)")
                if turn > 0:
                    ours.append(elapsed)
                    cpu.append(cpu_s)
        finally:
            tool.close()
        ours_s = statistics.median(ours)
        bare_s, bare_cpu = bare_aiohttp_turn(url, tool, requests)
        log(f"fan-out: reference bare aiohttp turn: {bare_s:.2f} s (client CPU {bare_cpu:.2f} s)")
        record(Measurement(
            "1a", value=ours_s / ideal,
            note=(f"Ours: median of {OUR_TURNS} warm turns {ours_s:.2f} s (all: {', '.join(f'{t:.2f}' for t in ours)}) "
                  f"vs ideal {ideal:.2f} s = ceil({QUERIES}/{CAPACITY}) x {LATENCY_S} s; SimulationSearchTool "
                  f"concurrency {CAPACITY}, server in its own process on 127.0.0.1. Client CPU per turn "
                  f"{statistics.median(cpu):.2f} s; for reference, the same {QUERIES} requests from a bare aiohttp "
                  f"session (one pooled connector) took {bare_s:.2f} s with {bare_cpu:.2f} s of client CPU."),
            details={"ours_s": ours, "ours_cpu_s": cpu, "ideal_s": ideal, "latency_s": LATENCY_S,
                     "capacity": CAPACITY, "bare_aiohttp_s": bare_s, "bare_aiohttp_cpu_s": bare_cpu},
        ))
        log(f"fan-out: original scheme ({ORIGINAL_WORKERS} threads, new client per request), "
            f"expect ~{math.ceil(QUERIES / ORIGINAL_WORKERS) * LATENCY_S:.0f} s")
        orig_s, orig_failed = original_turn(url, prompts, topk=tool.topk)
    if orig_failed:
        record(Measurement("1b", error=f"{orig_failed} of {QUERIES} requests of the original scheme failed"))
        return
    record(Measurement(
        "1b", value=orig_s / ours_s,
        note=(f"Original scheme: {orig_s:.1f} s for the same {QUERIES} prompts ({ORIGINAL_WORKERS} worker threads, "
              f"a new openai.OpenAI client per request, max_tokens {ORIGINAL_MAX_TOKENS}, no stop); "
              f"its floor is ceil({QUERIES}/{ORIGINAL_WORKERS}) x {LATENCY_S} s = "
              f"{math.ceil(QUERIES / ORIGINAL_WORKERS) * LATENCY_S:.0f} s."),
        details={"original_s": orig_s},
    ))


if __name__ == "__main__":
    raise SystemExit(row_main(SPECS, measure))
