"""Wait until a retrieval server answers ``GET /health``, with a bounded timeout.

CLI: ``python -m zerosearch.retrieval.health --host 127.0.0.1 --port 6002 --timeout 120``
exits 0 once healthy (printing the health JSON), 1 on timeout or when the process given by
``--pid`` exits first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Callable

import httpx
import psutil


def wait_until_healthy(
    url: str,
    timeout_s: float,
    *,
    interval_s: float = 0.2,
    alive: Callable[[], bool] | None = None,
) -> dict:
    """Poll ``url`` (a ``/health`` address) until it answers 200 with ``status == "ok"``.

    Args:
        url: full health URL, e.g. ``http://127.0.0.1:6002/health``.
        timeout_s: give up after this many seconds (TimeoutError).
        interval_s: pause between polls.
        alive: optional check called between polls (e.g. "the server process still runs"); when
            it returns False, waiting stops with RuntimeError.

    Returns:
        the health JSON.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt yet"
    while True:
        remaining = deadline - time.monotonic()
        try:
            reply = httpx.get(url, timeout=max(0.1, min(5.0, remaining)))
            if reply.status_code == 200 and reply.json().get("status") == "ok":
                return reply.json()
            last_error = f"HTTP {reply.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if alive is not None and not alive():
            raise RuntimeError(f"server at {url} exited before becoming healthy (last error: {last_error})")
        if time.monotonic() + interval_s > deadline:
            raise TimeoutError(f"{url} not healthy after {timeout_s:.0f} s (last error: {last_error})")
        time.sleep(interval_s)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as exited)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    """Terminate ``proc`` and reap it; kill it when it has not exited after ``grace_s`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m zerosearch.retrieval.health", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True, help="seconds to wait at most")
    p.add_argument("--pid", type=int, default=None, help="stop waiting when this (server) process exits")
    args = p.parse_args(argv)
    alive = (lambda: process_alive(args.pid)) if args.pid is not None else None
    try:
        health = wait_until_healthy(f"http://{args.host}:{args.port}/health", args.timeout, alive=alive)
    except (TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(health))
    return 0


if __name__ == "__main__":
    sys.exit(main())
