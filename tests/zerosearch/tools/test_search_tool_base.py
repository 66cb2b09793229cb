"""The SearchTool base: private loop, cache, metrics, malformed-reply log; the mode factory.

The failure policy (zerosearch/tools/failure.py) has its own file, test_failure_policy.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zerosearch.tools import (
    NO_INFORMATION,
    SEARCH_MODES,
    SearchRequest,
    SearchResult,
    SearchTool,
    build_search_tool,
)
from zerosearch.tools.base import should_log_occurrence
from zerosearch.tools.cache import LRUCache
from zerosearch.tools.retry import RetryPolicy


class EchoTool(SearchTool):
    """Answers ``Doc 1: <query>``; queries starting with "fail" fail, queries starting with "bad" get
    a malformed reply (their text is the query itself). Records the loop thread."""

    name = "echo"

    def __init__(self, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.sent: list[str] = []
        self.threads: set[int] = set()

    def describe(self) -> str:
        return "echo backend"

    async def _search_uncached(self, requests):
        self.threads.add(threading.get_ident())
        self.sent.extend(r.query for r in requests)
        return [self._one(r) for r in requests]

    @staticmethod
    def _one(request):
        if request.query.startswith("fail"):
            return SearchResult(NO_INFORMATION, ok=False, error="boom", latency_s=0.5)
        if request.query.startswith("bad"):
            return SearchResult(request.query, ok=False, malformed=True, error=f"no 'Doc 1' line: {request.query!r}",
                                latency_s=0.125)
        return SearchResult(f"Doc 1: {request.query}", latency_s=0.25)


def test_runs_on_one_private_thread_and_closes():
    tool = EchoTool()
    tool.search([SearchRequest("a")])
    tool.search([SearchRequest("b")])
    assert len(tool.threads) == 1 and threading.get_ident() not in tool.threads
    loop_thread = tool._loop._thread
    tool.close()
    assert not loop_thread.is_alive()
    tool.close()  # idempotent


def test_metrics_accumulate_and_reset():
    with EchoTool() as tool:
        tool.search([SearchRequest("a"), SearchRequest("fail-1"), SearchRequest("b"), SearchRequest("fail-2"),
                     SearchRequest("bad-1")])
        metrics = tool.pop_metrics()
        # A malformed reply is counted on its own, never as a failure.
        assert metrics == {
            "requests": 5.0,
            "failures": 2.0,
            "malformed": 1.0,
            "retries": 0.0,
            "cache_hits": 0.0,
            "failure_rate": 0.4,
            "malformed_rate": 0.2,
            "latency_mean_s": (0.25 + 0.5 + 0.25 + 0.5 + 0.125) / 5,
            "latency_max_s": 0.5,
        }
        assert tool.pop_metrics()["requests"] == 0.0


def test_three_outcomes():
    with EchoTool() as tool:
        ok, failed, bad = tool.search([SearchRequest("a"), SearchRequest("fail"), SearchRequest("bad reply")])
    assert (ok.ok, ok.malformed, ok.failed) == (True, False, False)
    assert (failed.ok, failed.malformed, failed.failed) == (False, False, True)
    assert (bad.ok, bad.malformed, bad.failed) == (False, True, False)
    assert bad.documents == "bad reply"  # the reply's own text, passed on
    with pytest.raises(ValueError, match="malformed result cannot be ok"):
        SearchResult("x", ok=True, malformed=True)


def test_malformed_replies_are_not_cached():
    with EchoTool(cache_size=10) as tool:
        tool.search([SearchRequest("bad q")])
        again = tool.search([SearchRequest("bad q"), SearchRequest("bad q")])
    assert tool.sent == ["bad q", "bad q"]  # resent: not served from the cache; the duplicate rides along
    assert [r.cached for r in again] == [False, False] and all(r.malformed for r in again)


def test_should_log_occurrence_first_few_then_every_nth():
    logged = [k for k in range(1, 301) if should_log_occurrence(k, first=3, every=100)]
    assert logged == [1, 2, 3, 100, 200, 300]


def test_malformed_replies_are_logged_with_a_sample_rate_limited(caplog):
    with EchoTool() as tool, caplog.at_level(logging.WARNING, logger="zerosearch.tools.base"):
        tool.search([SearchRequest(f"bad {k}") for k in range(7)])
        tool.search([SearchRequest("fail now")])
    malformed = [r.getMessage() for r in caplog.records if "malformed reply" in r.getMessage()]
    # The first 5 of the 7 (MALFORMED_LOG_FIRST), numbered, each with its query and text sample.
    assert len(malformed) == 5
    assert malformed[0].startswith("echo backend: malformed reply #1 (query 'bad 0')")
    assert "no 'Doc 1' line: 'bad 4'" in malformed[4]
    failed = [r.getMessage() for r in caplog.records if "failed after retries" in r.getMessage()]
    assert failed == ["echo backend: 1 of 1 queries failed after retries; last error: boom"]


def test_requests_must_be_search_requests():
    with EchoTool() as tool:
        with pytest.raises(TypeError, match=r"requests\[1\]"):
            tool.search([SearchRequest("a"), "b"])


def test_lru_cache_evicts_least_recent():
    cache = LRUCache(2)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"
    cache.put("c", "3")  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == "1" and cache.get("c") == "3"
    off = LRUCache(0)
    off.put("a", "1")
    assert off.get("a") is None and len(off) == 0
    with pytest.raises(ValueError, match="cache_size"):
        LRUCache(-1)


def test_cache_key_includes_mode_query_noisy_question():
    with EchoTool(cache_size=10) as tool:
        base = SearchRequest("q", question="Q1?", golden_answers=["A"])
        tool.search([base])
        results = tool.search(
            [
                SearchRequest("q", question="Q1?", golden_answers=["other answer"]),  # same key
                SearchRequest("q", question="Q2?"),
                SearchRequest("q", question="Q1?", noisy=True),
            ]
        )
    assert [r.cached for r in results] == [True, False, False]
    assert tool.sent == ["q", "q", "q"]


def test_retry_policy_bounds():
    policy = RetryPolicy(timeout=2.0, max_retries=3, backoff=0.5)
    # 4 attempts of 2 s + sleeps (0.5 + 1 + 2) + jitter of at most 0.5 each.
    assert policy.worst_case_s() == pytest.approx(8.0 + 3.5 + 1.5)
    for bad in (dict(timeout=0, max_retries=1, backoff=0), dict(timeout=1, max_retries=-1, backoff=0),
                dict(timeout=1, max_retries=1, backoff=-1)):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def retriever_cfg():
    cfg = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "retriever" / "default.yaml")
    cfg.seed = 3
    return cfg


def test_build_search_tool_modes(monkeypatch):
    from zerosearch.tools.google import GoogleSearchTool
    from zerosearch.tools.simulation import SimulationSearchTool
    from zerosearch.tools.wiki import WikiSearchTool

    monkeypatch.setenv("SERPAPI_API_KEY", "dummy")
    cfg = retriever_cfg()
    cfg.simulation.host = "10.0.0.1,10.0.0.2:7000"
    expected = {
        "simulate_sft": SimulationSearchTool,
        "simulate_prompt": SimulationSearchTool,
        "wiki": WikiSearchTool,
        "google": GoogleSearchTool,
    }
    assert set(expected) == set(SEARCH_MODES)
    for mode, cls in expected.items():
        tool = build_search_tool(cfg, mode)
        try:
            assert type(tool) is cls and tool.topk == 5
        finally:
            tool.close()
    sim = build_search_tool(cfg, "simulate_prompt")
    assert sim.mode == "simulate_prompt" and sim.endpoints == ["http://10.0.0.1:6001", "http://10.0.0.2:7000"]
    sim.close()


def test_simulate_prompt_uses_the_users_templates_and_simulate_sft_ignores_them(tmp_path):
    from zerosearch.prompts import PromptTemplateError, build_simulation_prompt

    useful, noisy = tmp_path / "useful.txt", tmp_path / "noisy.txt"
    useful.write_text("U {documents} for {query} ({question} -> {answer})\n", encoding="utf-8")
    noisy.write_text("N {topk} for {query}\n", encoding="utf-8")
    cfg = retriever_cfg()
    cfg.topk = 2
    cfg.simulation.prompt_useful_template = str(useful)
    cfg.simulation.prompt_noisy_template = str(noisy)
    request = dict(query="hamlet author", question="who wrote hamlet", golden_answers=["Shakespeare", "Will"], row=0)
    sim = build_search_tool(cfg, "simulate_prompt")
    try:
        assert sim.build_prompt(SearchRequest(noisy=False, **request)) == \
            "U two useful documents for hamlet author (who wrote hamlet? -> Shakespeare)\n"
        assert sim.build_prompt(SearchRequest(noisy=True, **request)) == "N 2 for hamlet author\n"
    finally:
        sim.close()
    sft = build_search_tool(cfg, "simulate_sft")
    try:
        assert sft.build_prompt(SearchRequest(noisy=False, **request)) == \
            build_simulation_prompt("simulate_sft", "hamlet author", "who wrote hamlet", "Shakespeare", False, 2)
    finally:
        sft.close()
    noisy.write_text("N without the query\n", encoding="utf-8")
    with pytest.raises(PromptTemplateError, match=f"{noisy} lacks the required placeholder {{query}}"):
        build_search_tool(cfg, "simulate_prompt")


def test_build_search_tool_errors():
    cfg = retriever_cfg()
    with pytest.raises(ValueError, match="simulate_sft, simulate_prompt, google, wiki"):
        build_search_tool(cfg, "bing")
    del cfg.simulation["port"]
    with pytest.raises(ValueError, match="simulation.port"):
        build_search_tool(cfg, "simulate_sft")
