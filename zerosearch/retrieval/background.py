"""Run an ASGI app (e.g. the retrieval server) with uvicorn in a background thread.

For embedding a retrieval server in one process (evaluation scripts, demos, tests)::

    with BackgroundServer(create_app(retriever)) as server:
        httpx.post(server.url + "/retrieve", json={"query": "...", "top_k": 3})
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class BackgroundServer:
    """Context manager: serve ``app`` on ``host:port`` (port 0 = a free port) in a daemon thread.

    Args:
        app: the ASGI app.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (read it from ``.port`` / ``.url``).
        startup_timeout_s: how long to wait for uvicorn to start (TimeoutError after).
        log_level: uvicorn's log level.
        lifespan: uvicorn's lifespan mode; "on" for an app whose start-up and shut-down hooks must
            run (e.g. the simulation server's batcher).
    """

    def __init__(
        self,
        app,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 30.0,
        log_level: str = "warning",
        lifespan: str = "off",
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.startup_timeout_s = startup_timeout_s
        self.log_level = log_level
        self.lifespan = lifespan
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("BackgroundServer is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.requested_port))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self.log_level, access_log=False, lifespan=self.lifespan)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="retrieval-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self._close_socket()
                raise RuntimeError(f"uvicorn exited during start-up on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise TimeoutError(f"uvicorn did not start within {self.startup_timeout_s} s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.startup_timeout_s)
        self._close_socket()
        self.port = None

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
