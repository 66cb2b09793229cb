"""Fixtures of the simulation-server tests: a tiny offline model and a live server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest

CORPUS = [
    "Doc 1: The George Washington Bridge spans the Hudson River between New York and New Jersey.",
    "Doc 2: It opened in 1931 and was designed by Othmar Ammann.",
    "Query: who designed the bridge? Useful Output: Doc 1: ... Doc 2: ...",
    "<search> bridge designer </search> <information> Doc 1: text </information> <answer> Ammann </answer>",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from zerosearch.miniature.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("sim") / "tiny", size="tiny", corpus_texts=CORPUS,
                                vocab_size=512, kind="simulation"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A uvicorn server for an app, run in a thread; ``url`` once started."""

    def __init__(self, app, timeout_s: float = 30.0):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def hf_backend(tiny_model_dir):
    from zerosearch.simulation.hf_backend import HFBackend

    return HFBackend(tiny_model_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def reference_model(tiny_model_dir):
    """The same weights loaded independently of the server, for greedy references."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def live_server(hf_backend, tiny_model_dir):
    """The app on the HF backend; requests wait up to 150 ms for company so batching is observable."""
    from zerosearch.simulation.server import create_app

    app = create_app(hf_backend, served_model_name="sim-test", model_path=tiny_model_dir, max_batch=16,
                     max_wait_s=0.15, default_max_tokens=8)
    server = LiveServer(app)
    yield server
    server.stop()
