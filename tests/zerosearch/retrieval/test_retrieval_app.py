"""The FastAPI app in process (no sockets): response shapes of both contracts and validation."""

import json

import pytest
from fastapi.testclient import TestClient

from zerosearch.retrieval.base import Retriever
from zerosearch.retrieval.corpus import Document
from zerosearch.retrieval.server import create_app


class ScriptedRetriever(Retriever):
    """Returns documents 0..topk-1 with scores 1/(rank+1), and records each call."""

    name = "scripted"

    def __init__(self, n_docs: int = 10) -> None:
        self.documents = [Document.from_title_text(f"id{i}", f"T{i}", f"text {i}") for i in range(n_docs)]
        self.calls: list[tuple[list[str], int]] = []

    def search(self, queries, topk):
        self.calls.append((list(queries), topk))
        return [
            [(self.documents[r], 1.0 / (r + 1)) for r in range(min(topk, len(self.documents)))]
            for _ in queries
        ]


class FailingRetriever(ScriptedRetriever):
    def search(self, queries, topk):
        raise RuntimeError("index exploded at /secret/path")


@pytest.fixture()
def retriever():
    return ScriptedRetriever()


@pytest.fixture()
def client(retriever):
    app = create_app(
        retriever, max_batch=4, max_query_chars=20, max_topk=5, default_topk=3, max_body_bytes=4096
    )
    with TestClient(app) as c:
        yield c


def doc(i):
    return {"id": f"id{i}", "title": f"T{i}", "text": f"text {i}", "contents": f'"T{i}"\ntext {i}'}


def test_batch_form_with_scores(client, retriever):
    r = client.post("/retrieve", json={"queries": ["a", "b"], "topk": 2, "return_scores": True})
    assert r.status_code == 200
    assert r.json() == {
        "result": [
            [{"document": doc(0), "score": 1.0}, {"document": doc(1), "score": 0.5}],
            [{"document": doc(0), "score": 1.0}, {"document": doc(1), "score": 0.5}],
        ]
    }
    assert retriever.calls == [(["a", "b"], 2)]


def test_batch_form_without_scores_is_documents_only(client, retriever):
    r = client.post("/retrieve", json={"queries": ["a"], "topk": 1})
    assert r.json() == {"result": [[doc(0)]]}
    r = client.post("/retrieve", json={"queries": ["a"], "topk": None, "return_scores": False})
    assert len(r.json()["result"][0]) == 3  # default_topk
    client.post("/retrieve", json={"queries": ["a"]})
    assert [c[1] for c in retriever.calls] == [1, 3, 3]


@pytest.mark.parametrize("path", ["/retrieve", "/search"])
def test_single_form(client, retriever, path):
    r = client.post(path, json={"query": "q", "top_k": 2})
    assert r.status_code == 200
    assert r.json() == [
        {"id": "id0", "title": "T0", "text": "text 0", "score": 1.0},
        {"id": "id1", "title": "T1", "text": "text 1", "score": 0.5},
    ]
    assert retriever.calls == [(["q"], 2)]
    assert len(client.post(path, json={"query": "q"}).json()) == 3


@pytest.mark.parametrize(
    "path, body, status, field",
    [
        ("/retrieve", {"queries": ["a"], "topk": 0}, 422, "topk"),
        ("/retrieve", {"queries": ["a"], "topk": 6}, 422, "topk"),
        ("/retrieve", {"queries": ["a"], "topk": "3"}, 422, "topk"),
        ("/retrieve", {"queries": ["a"], "topk": True}, 422, "topk"),
        ("/retrieve", {"queries": ["a"], "topk": 2.5}, 422, "topk"),
        ("/retrieve", {"queries": []}, 422, "queries"),
        ("/retrieve", {"queries": ["a"] * 5}, 422, "queries"),
        ("/retrieve", {"queries": "a"}, 422, "queries"),
        ("/retrieve", {"queries": ["a", 3]}, 422, "queries.1"),
        ("/retrieve", {"queries": ["x" * 21]}, 422, "queries.0"),
        ("/retrieve", {"queries": ["a"], "return_scores": "yes"}, 422, "return_scores"),
        ("/retrieve", {"queries": ["a"], "top_k": 2}, 422, "top_k"),
        ("/retrieve", {"query": "a", "topk": 2}, 422, "topk"),
        ("/retrieve", {"query": "a", "top_k": 9}, 422, "top_k"),
        ("/retrieve", {"query": ["a"]}, 422, "query"),
        ("/retrieve", {"query": "x" * 21}, 422, "query"),
        ("/retrieve", {"queries": ["a"], "query": "a"}, 422, "queries"),
        ("/retrieve", {"q": "a"}, 422, "queries"),
        ("/retrieve", ["a"], 422, "body"),
        ("/search", {"queries": ["a"]}, 422, "query"),
        ("/search", {"top_k": 2}, 422, "query"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(client, retriever, path, body, status, field):
    r = client.post(path, json=body)
    assert r.status_code == status
    payload = r.json()
    assert field in payload["error"]
    assert field in [d["field"] for d in payload["detail"]]
    assert retriever.calls == []


def test_not_json_is_400(client, retriever):
    r = client.post("/retrieve", content=b"\x80\x03}q\x00.", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/search", content=b"{'query': 'a'}")
    assert r.status_code == 400
    assert retriever.calls == []


def test_oversized_body_is_413(client, retriever):
    r = client.post("/retrieve", content=json.dumps({"queries": ["a" * 5000]}).encode())
    assert r.status_code == 413 and "4096" in r.json()["error"]
    assert retriever.calls == []


def test_backend_failure_is_json_500_without_details():
    app = create_app(FailingRetriever())
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/retrieve", json={"query": "a", "top_k": 1})
    assert r.status_code == 500
    assert r.json() == {"error": "retrieval failed: RuntimeError"}


def test_health_reports_backend_limits_and_counts(client):
    client.post("/retrieve", json={"queries": ["a", "b"]})
    client.post("/retrieve", json={"queries": []})
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["method"] == "scripted" and h["documents"] == 10
    assert h["limits"] == {
        "max_batch": 4,
        "max_query_chars": 20,
        "max_topk": 5,
        "default_topk": 3,
        "max_body_bytes": 4096,
    }
    assert h["stats"] == {"requests": 2, "client_errors": 1, "server_errors": 0, "queries": 2}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_topk": 0}, "max_topk"),
        ({"max_batch": True}, "max_batch"),
        ({"default_topk": 9, "max_topk": 5}, "default_topk"),
    ],
)
def test_create_app_rejects_bad_limits(kwargs, name):
    with pytest.raises(ValueError, match=name):
        create_app(ScriptedRetriever(), **kwargs)


def test_default_body_limit_fits_a_full_default_batch():
    retriever = ScriptedRetriever()
    app = create_app(retriever)  # max_batch 512, max_query_chars 2048
    body = json.dumps({"queries": ["é" * 2048] * 512, "topk": 1})  # ASCII-escaped: 6 bytes a character
    assert len(body) > 6_000_000
    with TestClient(app) as c:
        r = c.post("/retrieve", content=body.encode())
    assert r.status_code == 200 and len(r.json()["result"]) == 512
