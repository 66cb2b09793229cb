"""Soak: 2,000 queries from 32 concurrent async clients against the retrieval server CLI on
loopback, over the real corpus. Every reply must be a success and carry the same documents as an
in-process BM25 over the same corpus (no cross-talk between concurrent requests)."""

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from zerosearch.retrieval.bm25 import BM25Retriever
from zerosearch.retrieval.health import process_alive, wait_until_healthy

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "data"
CORPUS = DATA / "corpus" / "wiki_paragraphs.jsonl"
N_QUERIES = 2000
N_CLIENTS = 32
TOPK = 3
OVERALL_BOUND_S = 300


def questions() -> list[str]:
    out = []
    for path in sorted((DATA / "qa").glob("*.jsonl")):
        out += [
            json.loads(line)["question"]
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    return [out[i % len(out)] for i in range(N_QUERIES)]


async def client_loop(
    base_url: str, work: asyncio.Queue, expected: dict, latencies: list, errors: list
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        while True:
            try:
                i, query = work.get_nowait()
            except asyncio.QueueEmpty:
                return
            form = i % 3
            start = time.perf_counter()
            try:
                if form == 0:
                    r = await client.post(
                        "/retrieve", json={"queries": [query], "topk": TOPK, "return_scores": True}
                    )
                elif form == 1:
                    r = await client.post("/retrieve", json={"query": query, "top_k": TOPK})
                else:
                    r = await client.post("/search", json={"query": query, "top_k": TOPK})
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors.append((i, f"HTTP {r.status_code}: {r.text[:200]}"))
                    continue
                body = r.json()
                ids = (
                    [item["document"]["id"] for item in body["result"][0]]
                    if form == 0
                    else [item["id"] for item in body]
                )
                if ids != expected[query]:
                    errors.append((i, f"documents {ids} != expected {expected[query]}"))
            except httpx.HTTPError as exc:
                errors.append((i, f"{type(exc).__name__}: {exc}"))


def test_soak_2000_queries_32_clients():
    queries = questions()
    reference = BM25Retriever.from_corpus(CORPUS)
    unique = sorted(set(queries))
    expected = {q: [d.id for d, _ in hits] for q, hits in zip(unique, reference.search(unique, TOPK))}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zerosearch.retrieval.server",
            "--corpus",
            str(CORPUS),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{base_url}/health", 120, alive=lambda: process_alive(proc.pid))
        work: asyncio.Queue = asyncio.Queue()
        for item in enumerate(queries):
            work.put_nowait(item)
        latencies: list[float] = []
        errors: list = []

        async def run_all():
            await asyncio.gather(
                *(client_loop(base_url, work, expected, latencies, errors) for _ in range(N_CLIENTS))
            )

        start = time.perf_counter()
        asyncio.run(asyncio.wait_for(run_all(), timeout=OVERALL_BOUND_S))
        wall = time.perf_counter() - start
        health = httpx.get(f"{base_url}/health", timeout=10).json()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)

    assert not errors, errors[:5]
    assert len(latencies) == N_QUERIES
    lat_ms = sorted(x * 1e3 for x in latencies)
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[int(0.99 * (len(lat_ms) - 1))]
    print(
        f"retrieval soak: {N_QUERIES} queries, {N_CLIENTS} clients, {wall:.1f} s, "
        f"{N_QUERIES / wall:.0f} q/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    assert wall < OVERALL_BOUND_S
    assert health["stats"]["server_errors"] == 0 and health["stats"]["client_errors"] == 0
    assert health["stats"]["queries"] == N_QUERIES
    assert b"Traceback" not in stderr
