"""The retrieval server over real HTTP on 127.0.0.1: both contracts, 413, and the launch script."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from verl.utils.distributed import get_free_port
from zerosearch.retrieval.background import BackgroundServer
from zerosearch.retrieval.bm25 import BM25Retriever
from zerosearch.retrieval.corpus import Document
from zerosearch.retrieval.health import wait_until_healthy
from zerosearch.retrieval.server import create_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
DOCS = [
    Document.from_title_text("paris", "Paris", "Paris is the capital and largest city of France."),
    Document.from_title_text("lyon", "Lyon", "Lyon is a city in France known for its cuisine."),
    Document.from_title_text("berlin", "Berlin", "Berlin is the capital of Germany."),
    Document.from_title_text("piano", "Piano", "The piano is a keyboard instrument."),
]


@pytest.fixture(scope="module")
def retriever():
    return BM25Retriever(DOCS)


@pytest.fixture(scope="module")
def server(retriever):
    with BackgroundServer(create_app(retriever, max_body_bytes=64 * 1024)) as srv:
        yield srv


def test_batch_contract(server, retriever):
    queries = ["capital of France", "keyboard instrument"]
    r = httpx.post(
        f"{server.url}/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}, timeout=10
    )
    assert r.status_code == 200
    result = r.json()["result"]
    expected = retriever.search(queries, 3)
    assert len(result) == 2
    for got, want in zip(result, expected):
        assert [item["document"]["id"] for item in got] == [d.id for d, _ in want]
        assert [item["score"] for item in got] == pytest.approx([s for _, s in want], abs=1e-5)
    top = result[0][0]["document"]
    assert top == {
        "id": "paris",
        "title": "Paris",
        "text": "Paris is the capital and largest city of France.",
        "contents": '"Paris"\nParis is the capital and largest city of France.',
    }
    r = httpx.post(f"{server.url}/retrieve", json={"queries": queries[:1], "topk": 1}, timeout=10)
    assert r.json() == {"result": [[top]]}


@pytest.mark.parametrize("path", ["/retrieve", "/search"])
def test_single_contract(server, path):
    r = httpx.post(f"{server.url}{path}", json={"query": "city in France", "top_k": 2}, timeout=10)
    assert r.status_code == 200
    items = r.json()
    assert isinstance(items, list) and len(items) == 2
    assert {item["id"] for item in items} == {"paris", "lyon"}
    assert set(items[0]) == {"id", "title", "text", "score"}
    assert items[0]["score"] >= items[1]["score"] > 0


def test_bad_input_names_field(server):
    r = httpx.post(f"{server.url}/retrieve", json={"queries": ["a"], "topk": 1000}, timeout=10)
    assert r.status_code == 422 and "topk" in r.json()["error"]


def test_oversized_body_413_declared_and_streamed(server):
    big = b'{"queries": ["' + b"a" * (100 * 1024) + b'"]}'
    with httpx.Client(timeout=10) as client:
        r = client.post(f"{server.url}/retrieve", content=big)
        assert r.status_code == 413 and "65536" in r.json()["error"]

        def chunks():  # no Content-Length: chunked transfer encoding
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        r = client.post(f"{server.url}/retrieve", content=chunks())
        assert r.status_code == 413
        # The server is still serving afterwards.
        r = client.post(f"{server.url}/search", json={"query": "Berlin", "top_k": 1})
        assert r.status_code == 200 and r.json()[0]["id"] == "berlin"


def test_launch_script_waits_for_health_and_prints_settings(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(f'{{"id": "{d.id}", "title": "{d.title}", "text": "{d.text}"}}\n' for d in DOCS)
    )
    port = get_free_port("127.0.0.1")
    env = dict(os.environ, PYTHON=sys.executable, RETRIEVAL_STARTUP_TIMEOUT="60")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "launch_retrieval_server.sh"), str(corpus), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "retriever.wiki.port" in line:
                break
        assert (
            lines and lines[-1].strip() == f"retriever.wiki.host=127.0.0.1 retriever.wiki.port={port}"
        ), lines
        r = httpx.post(f"http://127.0.0.1:{port}/retrieve", json={"query": "Germany", "top_k": 1}, timeout=10)
        assert r.json()[0]["id"] == "berlin"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    with pytest.raises((TimeoutError, RuntimeError)):
        wait_until_healthy(f"http://127.0.0.1:{port}/health", 1.0)
