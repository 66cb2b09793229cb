"""The search-tool interface: a whole turn's queries in, one document string per query out.

Every tool owns a private event loop in a background thread (``BackgroundEventLoop``). All of its
network work runs there, so the pooled HTTP client survives across the many synchronous
``search()`` calls a trainer makes; ``asearch()`` from another loop awaits the same work. The base
class also provides the in-memory LRU cache (``cache_size``; duplicates inside one call are sent
once when the cache is on) and the metrics returned by ``pop_metrics()``. Call ``close()`` when
done.

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


@dataclass
class SearchRequest:
    """One query, carrying its own row's context (never another row's: spec defect 1).

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
        documents: ``"Doc 1: ...\\nDoc 2: ..."``, or ``NO_INFORMATION`` on failure.
        ok: False when the backend failed after its retries.
        error: a short reason when ``ok`` is False.
        latency_s: wall time spent on this query, retries and waits for a free slot included.
        cached: True when served from the cache (or from a duplicate query of the same call).
    """

    documents: str
    ok: bool = True
    error: str | None = None
    latency_s: float = 0.0
    cached: bool = False


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
        """Counters since the last pop: requests, failures, retries, cache_hits, failure_rate,
        latency_mean_s, latency_max_s."""
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
        failed = [r for r in final if not r.ok]
        for r in final:
            self._metrics.record(ok=r.ok, cached=r.cached, latency_s=r.latency_s)
        if failed:
            logger.warning(
                "%s: %d of %d queries failed after retries; last error: %s",
                self.describe(),
                len(failed),
                len(final),
                failed[-1].error,
            )
        return final
