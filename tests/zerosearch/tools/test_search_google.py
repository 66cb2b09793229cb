"""GoogleSearchTool with serpapi.Client replaced by a fake (no network)."""

from __future__ import annotations

import logging

import pytest
import requests
import serpapi
from serpapi import exceptions as serpapi_exceptions

from zerosearch.tools import NO_INFORMATION, SearchRequest
from zerosearch.tools.google import GoogleSearchTool

KEY = "sk-test-9f8e7d6c5b4a"
ENV = "ZS_TEST_SERPAPI_KEY"


class FakeClient:
    """Records calls; replies with canned organic results, or raises the queued errors first."""

    calls: list[dict] = []
    errors: list[Exception] = []
    reply: dict = {}

    def __init__(self, *, api_key=None, timeout=None):
        assert api_key == KEY
        self.api_key = api_key

    def search(self, params):
        FakeClient.calls.append(dict(params))
        params["api_key"] = self.api_key  # the real client writes the key into the params it gets
        if FakeClient.errors:
            raise FakeClient.errors.pop(0)
        return FakeClient.reply


@pytest.fixture
def fake_serpapi(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    monkeypatch.setattr(serpapi, "Client", FakeClient)
    FakeClient.calls, FakeClient.errors = [], []
    FakeClient.reply = {
        "organic_results": [
            {"title": "Paris", "snippet": "Paris is the capital of France.", "link": "u1"},
            {"title": "France", "snippet": "A country\nin Europe.", "link": "u2"},
            {"title": "Extra", "snippet": "beyond topk", "link": "u3"},
        ]
    }
    return FakeClient


def http_error(status: int) -> serpapi_exceptions.HTTPError:
    """What the real client raises: the message holds the request URL, api_key included."""
    response = requests.Response()
    response.status_code = status
    response._content = b"<html>not json</html>"
    url = f"https://serpapi.com/search?q=x&api_key={KEY}"
    return serpapi_exceptions.HTTPError(requests.exceptions.HTTPError(f"{status} Error for url: {url}", response=response))


def make_tool(**kwargs) -> GoogleSearchTool:
    args = dict(api_key_env=ENV, topk=2, title_snippet_sep=" | ", timeout=5.0, max_retries=2, backoff=0.01)
    args.update(kwargs)
    return GoogleSearchTool(**args)


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ValueError, match=ENV):
        GoogleSearchTool(api_key_env=ENV)


def test_separator_topk_and_params(fake_serpapi):
    with make_tool() as tool:
        (result,) = tool.search([SearchRequest(query="capital of france")])
    assert result.ok
    assert result.documents == "Doc 1: Paris | Paris is the capital of France.\nDoc 2: France | A country in Europe."
    assert fake_serpapi.calls == [{"engine": "google", "q": "capital of france", "num": 2}]


def test_no_results_is_not_a_failure(fake_serpapi):
    fake_serpapi.reply = {"error": "Google hasn't returned any results for this query."}
    with make_tool() as tool:
        (result,) = tool.search([SearchRequest(query="zzzz")])
    assert result.ok and result.documents == NO_INFORMATION


def test_disk_cache_costs_no_calls_on_reevaluation(fake_serpapi, tmp_path):
    with make_tool(cache_dir=tmp_path) as tool:
        first = tool.search([SearchRequest(query="q1"), SearchRequest(query="q2")])
    assert len(fake_serpapi.calls) == 2
    assert len(list(tmp_path.glob("*.json"))) == 2
    with make_tool(cache_dir=tmp_path, title_snippet_sep=" - ") as tool:
        second = tool.search([SearchRequest(query="q2"), SearchRequest(query="q1")])
        metrics = tool.pop_metrics()
    assert len(fake_serpapi.calls) == 2  # nothing new
    assert metrics["cache_hits"] == 2
    assert second[1].documents == first[0].documents.replace(" | ", " - ")
    assert all(KEY not in p.read_text() for p in tmp_path.glob("*.json"))


def test_transient_errors_are_retried(fake_serpapi):
    fake_serpapi.errors = [requests.exceptions.ConnectionError("reset"), http_error(503)]
    with make_tool(max_retries=2) as tool:
        (result,) = tool.search([SearchRequest(query="q")])
        metrics = tool.pop_metrics()
    assert result.ok
    assert metrics["retries"] == 2 and len(fake_serpapi.calls) == 3


def test_key_never_in_repr_errors_or_logs(fake_serpapi, caplog):
    fake_serpapi.errors = [http_error(401)]
    with caplog.at_level(logging.DEBUG):
        with make_tool() as tool:
            (result,) = tool.search([SearchRequest(query="q")])
            text = repr(tool) + str(tool.describe())
    assert not result.ok and result.documents == NO_INFORMATION
    assert "HTTP 401" in result.error
    assert len(fake_serpapi.calls) == 1  # 401 is not retried
    assert KEY not in result.error and "api_key=***" in result.error
    assert KEY not in text
    assert ENV in repr(tool)
    assert caplog.records, "the failure should be logged"
    assert KEY not in caplog.text
