"""The search-tool interface: a whole turn's queries in, one document string per query out.

Every tool owns a private event loop in a background thread (``BackgroundEventLoop``). All of its
network work runs there, so the pooled HTTP client survives across the many synchronous
``search()`` calls a trainer makes; ``asearch()`` from another loop awaits the same work. The base
class also provides the in-memory LRU cache (``cache_size``; duplicates inside one call are sent
once when the cache is on) and the metrics returned by ``pop_metrics()``. Call ``close()`` when
done.

Every query ends in one of three outcomes (``SearchResult``): answered (``ok``); malformed (the
server answered, but after its resamples still not in the expected form: the documents are what the
reply still offers, and it is logged with a sample of the text, the first few times and then every
``MALFORMED_LOG_EVERY``-th); or failed (no reply after the retries: the server is down, unreachable
or refuses). Only failures speak of an outage; ``zerosearch.tools.failure`` judges both rates.

A backend implements ``_search_uncached`` (runs on the private loop, one result per request, in
order, never raising for a single failed query) and ``describe``; it may override ``cache_key`` and
``_aclose``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from zerosearch.tools.cache import LRUCache
from zerosearch.tools.event_loop import BackgroundEventLoop
from zerosearch.tools.metrics import SearchMetrics

logger = logging.getLogger(__name__)

NO_INFORMATION = "No information available"
# Malformed replies logged per tool: the first MALFORMED_LOG_FIRST, then every MALFORMED_LOG_EVERY-th.
MALFORMED_LOG_FIRST = 5
MALFORMED_LOG_EVERY = 100


@dataclass
class SearchRequest:
    """One query, carrying its own row's context (the original release gave a query the context of
    the k-th row of its batch, often another row's).

    Attributes:
        query: the text the policy wrote between ``<search>`` and ``</search>``.
        question: the question of the row that issued the query.
        golden_answers: that row's gold answers (the simulation prompt uses the first).
        noisy: ask a simulation backend for noisy documents instead of useful ones.
        row: index of the issuing row in the batch, for bookkeeping.
    """

    query: str
    question: str = ""
    golden_answers: Sequence[str] = field(default_factory=list)
    noisy: bool = False
    row: int = -1


@dataclass
class SearchResult:
    """What one query returned.

    Attributes:
        documents: ``"Doc 1: ...\\nDoc 2: ..."``; for a malformed reply what it still offers (e.g.
            the simulator's text as written), else ``NO_INFORMATION``; ``NO_INFORMATION`` on failure.
        ok: True when the documents are in the expected form; False for a failed query and for a
            malformed reply (so such documents are never cached nor taken for good ones).
        malformed: True when the server answered but, after the resamples, not in the expected form
            (a content problem, not an outage).
        error: a short reason when ``ok`` is False (for a malformed reply, with a sample of its text).
        latency_s: wall time spent on this query, retries and waits for a free slot included.
        cached: True when served from the cache (or from a duplicate query of the same call).
    """

    documents: str
    ok: bool = True
    error: str | None = None
    latency_s: float = 0.0
    cached: bool = False
    malformed: bool = False

    def __post_init__(self) -> None:
        if self.ok and self.malformed:
            raise ValueError("SearchResult: a malformed result cannot be ok")

    @property
    def failed(self) -> bool:
        """No reply after the retries (connection refused, timeout, HTTP error): an outage signal."""
        return not self.ok and not self.malformed


def require_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def require_number(name: str, value: Any, minimum: float) -> float:
    """``value`` as a finite float >= ``minimum``, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
    return float(value)


class SearchTool(ABC):
    """A search backend. ``asearch`` runs all requests of a turn concurrently."""

    name: str = "base"

    def __init__(self, cache_size: int = 0):
        self._cache = LRUCache(cache_size)
        self._metrics = SearchMetrics()
        self._malformed_seen = 0  # malformed replies over the tool's life, for the sampled log
        self._loop = BackgroundEventLoop(name=f"zerosearch-{self.name}-search")
        self._closed = False

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    async def _search_uncached(self, requests: list[SearchRequest]) -> list[SearchResult]:
        """Answer ``requests`` on the private loop: one result each, in order, never raising per query."""

    @abstractmethod
    def describe(self) -> str:
        """The backend and its server(s), for logs and failure messages (never secrets)."""

    def cache_key(self, request: SearchRequest) -> Hashable:
        """What makes two requests interchangeable for the cache."""
        return (self.name, request.query, bool(request.noisy), request.question)

    async def _aclose(self) -> None:
        """Release connection pools; runs on the private loop."""

    # ----------------------------------------------------------------- public API
    async def asearch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        """Answer every request; never raises for a single failed query (it becomes NO_INFORMATION)."""
        self._check_open()
        return await self._loop.arun(self._answer(list(requests)))

    def search(self, requests: list[SearchRequest]) -> list[SearchResult]:
        """Blocking ``asearch`` for callers outside the tool's loop (safe to call many times)."""
        self._check_open()
        return self._loop.run(self._answer(list(requests)))

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last pop: requests, failures, malformed, retries, cache_hits,
        failure_rate, malformed_rate, latency_mean_s, latency_max_s."""
        return self._metrics.pop()

    def close(self) -> None:
        """Close the connection pools and stop the private loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._loop.started:
                self._loop.run(self._aclose(), timeout=30.0)
        finally:
            self._loop.stop()

    async def aclose(self) -> None:
        """``close()`` for async callers on another loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> "SearchTool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.describe()}: the search tool is closed")

    def _check_requests(self, requests: list[SearchRequest]) -> None:
        for i, request in enumerate(requests):
            if not isinstance(request, SearchRequest):
                raise TypeError(f"requests[{i}] must be a SearchRequest, got {type(request).__name__}")
            if not isinstance(request.query, str):
                raise TypeError(f"requests[{i}].query must be str, got {type(request.query).__name__}")

    async def _answer(self, requests: list[SearchRequest]) -> list[SearchResult]:
        self._check_requests(requests)
        results: list[SearchResult | None] = [None] * len(requests)
        to_send: list[SearchRequest] = []
        sent_at: list[int] = []
        duplicates: dict[Hashable, list[int]] = {}
        keys: list[Hashable | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            if self._cache.enabled:
                key = keys[i] = self.cache_key(request)
                hit = self._cache.get(key)
                if hit is not None:
                    results[i] = SearchResult(documents=hit, cached=True)
                    continue
                if key in duplicates:
                    duplicates[key].append(i)
                    continue
                duplicates[key] = []
            to_send.append(request)
            sent_at.append(i)

        fresh = await self._search_uncached(to_send) if to_send else []
        if len(fresh) != len(to_send):
            raise RuntimeError(f"{self.describe()}: backend returned {len(fresh)} results for {len(to_send)} requests")
        for i, result in zip(sent_at, fresh):
            results[i] = result
            if self._cache.enabled:
                key = keys[i]
                if result.ok:
                    self._cache.put(key, result.documents)
                for j in duplicates[key]:
                    results[j] = dataclasses.replace(result, cached=result.ok, latency_s=0.0 if result.ok else result.latency_s)

        final: list[SearchResult] = [r for r in results if r is not None]
        assert len(final) == len(requests)
        for r in final:
            self._metrics.record(ok=r.ok, cached=r.cached, latency_s=r.latency_s, malformed=r.malformed)
        self._log_outcomes(requests, final)
        return final

    def _log_outcomes(self, requests: list[SearchRequest], results: list[SearchResult]) -> None:
        """One warning per call with failures; malformed replies one by one, sampled (see the module
        docstring), each with its query and a sample of its text."""
        failed = [r for r in results if r.failed]
        if failed:
            logger.warning(
                "%s: %d of %d queries failed after retries; last error: %s",
                self.describe(),
                len(failed),
                len(results),
                failed[-1].error,
            )
        for request, result in zip(requests, results):
            if not result.malformed:
                continue
            self._malformed_seen += 1
            if should_log_occurrence(self._malformed_seen, MALFORMED_LOG_FIRST, MALFORMED_LOG_EVERY):
                logger.warning(
                    "%s: malformed reply #%d (query %r) after its resamples, passed on as the observation: %s",
                    self.describe(),
                    self._malformed_seen,
                    request.query[:120],
                    result.error,
                )


def should_log_occurrence(count: int, first: int, every: int) -> bool:
    """Whether the ``count``-th (1-based) occurrence of a recurring event is logged: the first
    ``first`` ones, then every ``every``-th."""
    return count <= first or count % every == 0
