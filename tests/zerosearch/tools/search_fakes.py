"""A fake simulation / retrieval server for the search-tool tests.

A FastAPI app served by uvicorn in a thread on 127.0.0.1 (a free port). It implements
``/v1/chat/completions``, ``/generate``, ``/retrieve`` and ``/get_model_info``, records every request body, counts the
requests in flight, and can be told to be slow, to hang, to answer 500 / 400, to return garbage, or
to fail the first N requests. Simulated documents echo the question, answer and query found in the
prompt, so a test can check that each query was built from its own row.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

_QA_LINE = re.compile(r'The user is trying to answer the question: "(.*)" whose answer is (.*)\.\n')
# The prompt's last line, at the end of the text or of the user turn of a chat-templated text.
_QUERY_LINE = re.compile(r"\nQuery: (.*)\n(Useful|Noisy) Output:\n(?:<\|im_end\|>|$)")


@dataclass
class FakeState:
    """What the fake server does next; tests change these fields between calls."""

    mode: str = "ok"  # ok | garbage | error500 | error400 | hang | not_json
    delay: float = 0.0  # seconds every request waits before answering
    fail_first: int = 0  # answer 500 to this many requests, then behave per mode
    n_docs: int = 7  # simulated documents per reply
    retrieve_shape: str = "document"  # document | plain | title_text | wrong_length | empty
    model_path: str | None = None  # what /get_model_info reports as the served model's folder
    requests: list[tuple[str, dict]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    released: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.released = True  # frees requests still hanging from the previous test
        time.sleep(0.05)
        with self.lock:
            self.mode, self.delay, self.fail_first, self.n_docs = "ok", 0.0, 0, 7
            self.retrieve_shape = "document"
            self.model_path = None
            self.requests = []
            self.in_flight = self.max_in_flight = 0
            self.released = False

    def bodies(self, path: str) -> list[dict]:
        with self.lock:
            return [b for p, b in self.requests if p == path]


def simulated_reply(prompt: str, n_docs: int) -> str:
    """Documents naming the prompt's question, answer, query and kind, separated by blank lines."""
    qa = _QA_LINE.search(prompt)
    query = _QUERY_LINE.search(prompt)
    question, answer = (qa.group(1), qa.group(2)) if qa else ("-", "-")
    q, kind = (query.group(1), query.group(2)) if query else ("-", "-")
    return "\n\n".join(f"Doc {i}: kind={kind} question={question} answer={answer} query={q}" for i in range(1, n_docs + 1))


def build_app(state: FakeState) -> FastAPI:
    app = FastAPI()

    async def enter(path: str, body: dict) -> JSONResponse | None:
        with state.lock:
            state.requests.append((path, body))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            fail = state.fail_first > 0
            if fail:
                state.fail_first -= 1
        try:
            deadline = time.monotonic() + (3600.0 if state.mode == "hang" else state.delay)
            while time.monotonic() < deadline and not state.released:
                await asyncio.sleep(0.01)
        finally:
            with state.lock:
                state.in_flight -= 1
        if fail or state.mode == "error500":
            return JSONResponse({"error": "internal"}, status_code=500)
        if state.mode == "error400":
            return JSONResponse({"error": "model 'x' does not exist"}, status_code=400)
        return None

    def faked(path: str):
        """Serve ``handler(body)`` at POST ``path`` after ``enter`` recorded the request (and maybe failed it)."""

        def register(handler):
            async def endpoint(request: Request):
                body = await request.json()
                early = await enter(path, body)
                return early if early is not None else handler(body)

            app.post(path, name=handler.__name__)(endpoint)
            return handler

        return register

    @faked("/v1/chat/completions")
    def chat(body: dict):
        if state.mode == "not_json":
            return PlainTextResponse("<html>oops</html>")
        text = "I cannot help with that." if state.mode == "garbage" else simulated_reply(body["messages"][-1]["content"], state.n_docs)
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    @faked("/generate")
    def generate(body: dict):
        text = "garbage" if state.mode == "garbage" else simulated_reply(body["text"], state.n_docs)
        return {"text": text, "meta_info": {}}

    @app.get("/get_model_info")
    async def model_info():
        return {"model_path": state.model_path, "is_generation": True}

    @faked("/retrieve")
    def retrieve(body: dict):
        shape = state.retrieve_shape
        result: list[Any] = []
        for q in body["queries"]:
            if shape == "empty":
                result.append([])
                continue
            hits = []
            for j in range(1, body["topk"] + 2):  # one more than asked, to check the cut
                doc = {"id": f"{q}-{j}", "contents": f'"Title {j} of {q}"\nText {j} about\n{q}.'}
                if shape == "document":
                    hits.append({"document": doc, "score": 1.0 / j})
                elif shape == "plain":
                    hits.append(doc)
                else:
                    hits.append({"title": f"T{j}", "text": f"text {j} for {q}"})
            result.append(hits)
        if shape == "wrong_length":
            result = result[:-1]
        return {"result": result}

    return app


class FakeServer:
    """The app above, served in a daemon thread; ``url`` is its base address."""

    def __init__(self) -> None:
        self.state = FakeState()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(build_app(self.state), log_level="error", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, timeout: float = 20.0) -> "FakeServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake search server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.state.reset()
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()


def dead_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
