"""The search-tool interface: a whole turn's queries in, one document string per query out."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

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
    golden_answers: list[str] = field(default_factory=list)
    noisy: bool = False
    row: int = -1


@dataclass
class SearchResult:
    """What one query returned.

    Attributes:
        documents: ``"Doc 1: ...\\nDoc 2: ..."``, or ``NO_INFORMATION`` on failure.
        ok: False when the backend failed after its retries.
        error: a short reason when ``ok`` is False.
        latency_s: wall time spent on this query, retries included.
        cached: True when served from the cache.
    """

    documents: str
    ok: bool = True
    error: str | None = None
    latency_s: float = 0.0
    cached: bool = False


class SearchTool(ABC):
    """A search backend. ``asearch`` runs all requests of a turn concurrently."""

    name: str = "base"

    @abstractmethod
    async def asearch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        """Answer every request; never raises for a single failed query (it becomes NO_INFORMATION)."""

    def search(self, requests: list[SearchRequest]) -> list[SearchResult]:
        """Synchronous wrapper around ``asearch`` for callers outside an event loop."""
        return asyncio.run(self.asearch(requests))

    async def aclose(self) -> None:
        """Close connection pools."""

    def close(self) -> None:
        asyncio.run(self.aclose())
