"""A simulation LLM server with controllable faults, run as its own process so a test can SIGKILL it.

It speaks the OpenAI chat route that ``SimulationSearchTool`` uses and answers each request with
documents that depend only on the request (its query, whether it asks for useful or noisy output,
and its ``seed``), like a sampling simulator with a seeded RNG would. What it does is set by ``--mode`` at start and can be changed
later with ``POST /control``:

    ok        answer at once (after ``delay`` seconds)
    slow      wait ``slow_s`` seconds before answering (longer than the client's timeout)
    500       answer HTTP 500
    garbage   answer 200 with text that has no ``Doc 1`` line (``garbage_for(query)``, the way a tiny
              simulator goes wrong)
    empty     answer 200 with an empty completion
    not_json  answer 200 with a body that is not JSON

``fail_match``: when set, only requests whose query contains this string get the fault; the
others are answered as in ``ok``. Every request is counted (``GET /stats``: ``received``,
``answered``, ``faulted``) and, with ``--log FILE``, appended to FILE as one JSON line
``{"t", "query", "kind", "seed", "outcome"}`` before the reply is sent.

    python tests/reliability/fault_sim_server.py --port 18001 [--mode ok] [--delay 0.0] [--log F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

MODES = ("ok", "slow", "500", "garbage", "empty", "not_json")
_QUERY_LINE = re.compile(r"Query: (.*)\n(Useful|Noisy) Output:")


def documents_for(query: str, kind: str, seed: Any, n_docs: int = 5) -> str:
    """The reply to one request: ``n_docs`` lines naming the query, the kind and the seed."""
    return "\n".join(f"Doc {k}: {kind} result {k} for {query} (seed {seed})" for k in range(1, n_docs + 1))


def garbage_for(query: str) -> str:
    """The ``garbage`` reply: a simulated reply without a ``Doc 1`` line ("Doc 19987" is not one)."""
    return f"Doc 19987. Its. Its in {query}"


def create_app(mode: str, delay: float, slow_s: float, log_path: str | None) -> FastAPI:
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
    state: dict[str, Any] = {"mode": mode, "delay": delay, "slow_s": slow_s, "fail_match": None}
    counts = {"received": 0, "answered": 0, "faulted": 0}
    app = FastAPI()

    def log(query: str, kind: str, seed: Any, outcome: str) -> None:
        if log_path:
            record = {"t": time.time(), "query": query, "kind": kind, "seed": seed, "outcome": outcome}
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {**counts, **state}

    @app.post("/control")
    async def control(request: Request) -> dict[str, Any]:
        body = await request.json()
        unknown = set(body) - set(state)
        if unknown or body.get("mode", state["mode"]) not in MODES:
            return JSONResponse({"error": f"bad control request {body!r}"}, status_code=400)
        state.update(body)
        return dict(state)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        counts["received"] += 1
        prompt = body["messages"][-1]["content"]
        found = _QUERY_LINE.search(prompt)
        query, kind = (found.group(1), found.group(2)) if found else ("", "")
        seed = body.get("seed")
        fault = state["mode"] if state["fail_match"] is None or state["fail_match"] in query else "ok"
        if state["delay"] > 0:
            await asyncio.sleep(state["delay"])
        if fault == "slow":
            await asyncio.sleep(state["slow_s"])
        if fault != "ok":
            counts["faulted"] += 1
        log(query, kind, seed, fault)
        counts["answered"] += 1
        if fault == "500":
            return JSONResponse({"error": "injected failure"}, status_code=500)
        if fault == "not_json":
            return PlainTextResponse("<html>not json</html>")
        if fault == "garbage":
            text = garbage_for(query)
        elif fault == "empty":
            text = ""
        else:  # ok, and slow once its wait is over
            text = documents_for(query, kind, seed)
        return {
            "id": f"fault-{counts['received']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "")),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds every request waits")
    parser.add_argument("--slow-s", type=float, default=30.0, help="extra wait of the 'slow' mode")
    parser.add_argument("--log", default=None, help="append one JSON line per request to this file")
    args = parser.parse_args(argv)
    app = create_app(args.mode, args.delay, args.slow_s, args.log)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
