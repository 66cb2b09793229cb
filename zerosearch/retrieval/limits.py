"""ASGI middleware for the retrieval server: request body size cap and a per-request log line."""

from __future__ import annotations

import json
import logging
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised while the body streams in, once it passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body exceeds {limit} bytes")


async def _send_json(send: Send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _HTTPMiddleware:
    """An ASGI middleware whose ``handle`` sees HTTP requests; other scopes (lifespan) go straight to ``app``."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request through ``self.app``."""
        raise NotImplementedError


class BodySizeLimit(_HTTPMiddleware):
    """Reject bodies over ``max_bytes`` with 413 before the app parses them.

    A ``Content-Length`` over the limit is refused without reading the body; a body without one
    (chunked) is counted as it streams and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    await _send_json(send, 400, {"error": "Content-Length header is not a number"})
                    return
                if int(value) > self.max_bytes:
                    await _send_json(send, 413, {"error": f"request body exceeds {self.max_bytes} bytes"})
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_json(send, 413, {"error": f"request body exceeds {self.max_bytes} bytes"})


class RequestLog(_HTTPMiddleware):
    """One debug-level line per request (method, path, status, latency) and status counters.

    Args:
        stats: a dict updated in place with ``requests``, ``client_errors``, ``server_errors``.
    """

    def __init__(self, app: ASGIApp, logger: logging.Logger, stats: dict[str, int]) -> None:
        self.app = app
        self.logger = logger
        self.stats = stats

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self.stats["requests"] += 1
            if 400 <= status < 500:
                self.stats["client_errors"] += 1
            elif status >= 500:
                self.stats["server_errors"] += 1
            self.logger.debug(
                "%s %s -> %d in %.1f ms",
                scope.get("method"),
                scope.get("path"),
                status,
                (time.perf_counter() - start) * 1e3,
            )
