"""Retrieval server hardening over real HTTP: loopback bind by default, body-size cap before
parsing, request data decoded as JSON only, limits enforced before the backend runs."""

import json
import os
import pickle
import socket
import subprocess
import sys

import httpx
import psutil
import pytest

from zerosearch.retrieval.background import BackgroundServer
from zerosearch.retrieval.base import Retriever
from zerosearch.retrieval.corpus import Document
from zerosearch.retrieval.health import process_alive, wait_until_healthy
from zerosearch.retrieval.server import create_app

pytestmark = pytest.mark.slow

LIMIT = 8192


class SpyRetriever(Retriever):
    name = "spy"

    def __init__(self) -> None:
        self.documents = [Document.from_title_text("d0", "T", "text")]
        self.calls = 0

    def search(self, queries, topk):
        self.calls += 1
        return [[(self.documents[0], 1.0)] for _ in queries]


@pytest.fixture(scope="module")
def spy():
    return SpyRetriever()


@pytest.fixture(scope="module")
def server(spy):
    app = create_app(spy, max_batch=8, max_query_chars=64, max_topk=10, max_body_bytes=LIMIT)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture()
def client(server, spy):
    spy.calls = 0
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def padded_body(size: int) -> bytes:
    """A valid single-form request of exactly ``size`` bytes (JSON allows trailing spaces)."""
    core = json.dumps({"query": "q", "top_k": 1}).encode()
    return core + b" " * (size - len(core))


def test_body_at_limit_accepted_one_byte_over_rejected(client, spy):
    r = client.post("/retrieve", content=padded_body(LIMIT))
    assert r.status_code == 200 and spy.calls == 1
    r = client.post("/retrieve", content=padded_body(LIMIT + 1))
    assert r.status_code == 413 and r.json() == {"error": f"request body exceeds {LIMIT} bytes"}
    assert spy.calls == 1


def test_streamed_body_over_limit_rejected(client, spy):
    body = padded_body(4 * LIMIT)
    r = client.post("/retrieve", content=iter([body[i : i + 1000] for i in range(0, len(body), 1000)]))
    assert r.status_code == 413
    assert spy.calls == 0


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_never_unpickled(client, spy, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    for content_type in ("application/json", "application/octet-stream", "application/python-pickle"):
        r = client.post("/retrieve", content=payload, headers={"content-type": content_type})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert not marker.exists()
    assert spy.calls == 0


def test_pathological_json_is_a_clean_400(client, server):
    r = client.post("/retrieve", content=b"[" * (LIMIT - 1))
    assert r.status_code == 400
    r = client.post("/retrieve", content=b'{"query": ' + b"[" * 4000 + b"]" * 4000 + b"}")
    assert r.status_code in (400, 422)
    r = client.post("/retrieve", content=b'{"query": "q", "top_k": ' + b"9" * 5000 + b"}")
    assert r.status_code == 400  # Python refuses int literals this long; still a clean client error
    assert wait_until_healthy(f"{server.url}/health", 5)["status"] == "ok"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"queries": ["q"] * 9}, "queries"),
        ({"queries": ["q" * 65]}, "queries.0"),
        ({"query": "q" * 65}, "query"),
        ({"queries": ["q"], "topk": 11}, "topk"),
        ({"query": "q", "top_k": 10**18}, "top_k"),
        ({"query": "q", "__class__": "x"}, "__class__"),
    ],
)
def test_limits_enforced_before_backend(client, spy, body, field):
    r = client.post("/retrieve", json=body)
    assert r.status_code == 422
    assert field in r.json()["error"]
    assert "Traceback" not in r.text
    assert spy.calls == 0


def test_no_api_docs_or_other_methods_exposed(client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
    assert client.get("/retrieve").status_code == 405


def test_cli_binds_loopback_by_default(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "title": "A", "text": "alpha"}\n', encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerosearch.retrieval.server", "--corpus", str(corpus), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", 60, alive=lambda: process_alive(proc.pid))
        listening = [
            c for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening, "the server process holds no listening socket"
        assert {(c.laddr.ip, c.laddr.port) for c in listening} == {("127.0.0.1", port)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
