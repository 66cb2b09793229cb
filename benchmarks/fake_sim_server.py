"""A stand-in simulation LLM server with a known latency and capacity, for the fan-out benchmark.

It speaks the OpenAI chat route that ``SimulationSearchTool`` (and the ``openai`` client) use.
Every request holds one of ``capacity`` slots for ``latency_s`` seconds and then answers a fixed
five-document reply; requests beyond ``capacity`` wait for a free slot (first come, first served).
So a turn of N requests can finish no sooner than ``ceil(N / capacity) * latency_s``.

    python -m benchmarks.fake_sim_server --port 18001 --latency-s 1.0 --capacity 320

Routes: ``POST /v1/chat/completions``, ``GET /health`` (``{"status": "ok"}``), ``GET /stats``
(requests served, most requests seen in flight at once, total slot wait), ``POST /stats/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import uvicorn
from fastapi import FastAPI, Request

REPLY = "\n".join(f"Doc {k}: simulated document {k} about the query." for k in range(1, 6))


def create_app(latency_s: float, capacity: int) -> FastAPI:
    """The ASGI app: ``capacity`` concurrent slots, each held ``latency_s`` seconds per request."""
    if not latency_s > 0:
        raise ValueError(f"latency_s must be > 0, got {latency_s}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    app = FastAPI()
    slots = asyncio.Semaphore(capacity)
    stats: dict[str, float] = {"served": 0, "in_flight": 0, "max_in_flight": 0, "queue_wait_s": 0.0}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "latency_s": latency_s, "capacity": capacity}

    @app.get("/stats")
    async def get_stats() -> dict[str, float]:
        return dict(stats)

    @app.post("/stats/reset")
    async def reset_stats() -> dict[str, float]:
        stats.update(served=0, max_in_flight=0, queue_wait_s=0.0)
        return dict(stats)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        arrived = time.monotonic()
        async with slots:
            stats["queue_wait_s"] += time.monotonic() - arrived
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            try:
                await asyncio.sleep(latency_s)
            finally:
                stats["in_flight"] -= 1
        stats["served"] += 1
        return {
            "id": f"sim-{int(stats['served'])}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "")),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    return app


@contextlib.contextmanager
def running_server(latency_s: float, capacity: int, *, port: int, python: str = sys.executable,
                   startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Start the server in its own process on 127.0.0.1:``port``; yields its base URL.

    A separate process keeps the server's event loop off the measured client's interpreter. The
    process is terminated (then killed after 10 s) on exit.
    """
    from zerosearch.retrieval.health import process_alive, stop_process, wait_until_healthy

    cmd = [python, "-m", "benchmarks.fake_sim_server", "--port", str(port), "--latency-s", str(latency_s),
           "--capacity", str(capacity)]
    repo_root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=repo_root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url + "/health", startup_timeout_s, alive=lambda: process_alive(proc.pid))
        yield url
    finally:
        stop_process(proc, 10)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, required=True, help="port to bind")
    parser.add_argument("--latency-s", type=float, required=True, help="seconds each request holds a slot")
    parser.add_argument("--capacity", type=int, required=True, help="requests served at once")
    args = parser.parse_args(argv)
    app = create_app(args.latency_s, args.capacity)
    # backlog above the default 2048 is not needed; the capacity queue lives in the app.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
