"""Search over a local retrieval server (Search-R1's contract).

Request (one per chunk of at most ``max_batch_size`` distinct queries, chunks sent concurrently):
    POST {base}/retrieve  {"queries": [q1, ...], "topk": k, "return_scores": false}
Reply:
    {"result": [[hit, ...] per query]}, where a hit is ``{"document": {...}, "score": s}`` or the
    document itself; a document is ``{"id", "contents": "\\"Title\\"\\ntext"}`` or
    ``{"title", "text"}``.
Documents are written ``Doc i: (Title: t) text``. A query with no hits gets ``NO_INFORMATION``
(ok=True); a chunk that still fails after its retries gives ``NO_INFORMATION`` with ok=False to each
of its queries, marked ``malformed`` when the server did answer, but not in this shape (a content
problem, judged apart from outages). Chunks go out through one pooled ``aiohttp.ClientSession`` (a ``TCPConnector`` of
``concurrency`` connections), each attempt with a timeout and bounded retries (``retry.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any, Hashable, Sequence

import aiohttp

from zerosearch.tools.base import NO_INFORMATION, SearchRequest, SearchResult, SearchTool, require_int
from zerosearch.tools.documents import format_documents, format_passage
from zerosearch.tools.endpoints import parse_endpoints
from zerosearch.tools.http_pool import HTTPPool
from zerosearch.tools.retry import (
    MalformedResponseError,
    RetryPolicy,
    call_with_retries,
    describe_error,
    post_json,
)


def passage_of(hit: Any) -> str:
    """``(Title: t) text`` of one hit of the reply (see the module docstring for the accepted shapes)."""
    doc = hit.get("document", hit) if isinstance(hit, dict) else hit
    if not isinstance(doc, dict):
        raise MalformedResponseError(f"retrieval hit is not an object: {hit!r:.120}")
    if isinstance(doc.get("contents"), str):
        first, newline, rest = doc["contents"].partition("\n")
        if not newline:
            return format_passage("", first)
        return format_passage(first.strip().strip('"'), rest)
    if isinstance(doc.get("text"), str):
        title = doc.get("title") or ""
        return format_passage(str(title), doc["text"])
    raise MalformedResponseError(f"retrieval hit has neither 'contents' nor 'text': {hit!r:.120}")


class WikiSearchTool(SearchTool):
    """Passages from a retrieval server.

    Args:
        host: comma-separated hosts (``host``, ``host:port`` or ``http://host:port``) or a list;
            chunk ``c``'s attempt ``a`` goes to host ``(c + a) % n_hosts``.
        port: port of the hosts given without one.
        topk: passages per query.
        concurrency: chunks in flight at most.
        timeout: seconds per attempt.
        max_retries: attempts after the first.
        backoff: base of the exponential backoff, seconds.
        max_batch_size: queries per request at most.
        cache_size: LRU entries keyed by query; 0 = off.
        seed: seed of the retry jitter.
    """

    name = "wiki"

    def __init__(
        self,
        host: str | Sequence[str] = "127.0.0.1",
        port: int = 6002,
        topk: int = 5,
        concurrency: int = 32,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_batch_size: int = 512,
        cache_size: int = 0,
        seed: int = 0,
    ):
        super().__init__(cache_size=cache_size)
        self.endpoints = parse_endpoints(host, port, key="retriever.wiki.host")
        self.topk = require_int("topk (retriever.topk)", topk, 1)
        self.concurrency = require_int("concurrency (retriever.wiki.concurrency)", concurrency, 1)
        self.max_batch_size = require_int("max_batch_size (retriever.wiki.max_batch_size)", max_batch_size, 1)
        self.seed = require_int("seed (retriever.seed)", seed, 0)
        self.policy = RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        self._rng = random.Random(self.seed)
        self._chunks_sent = 0
        self._http = HTTPPool(self.concurrency, self.policy.timeout)

    def describe(self) -> str:
        return f"wiki retrieval server(s) {', '.join(self.endpoints)}"

    def __repr__(self) -> str:
        return f"WikiSearchTool(endpoints={self.endpoints}, topk={self.topk}, max_batch_size={self.max_batch_size})"

    def cache_key(self, request: SearchRequest) -> Hashable:
        return (self.name, request.query)

    async def _ensure_session(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The tool's pooled session and the semaphore that bounds the requests in flight."""
        return await self._http.get()

    async def _chunk(self, queries: list[str], number: int) -> tuple[list[str] | None, str | None, bool, float]:
        """(documents per query, None, False, latency), or (None, error, malformed, latency) where
        ``malformed`` says the last attempt got a reply that broke the contract."""
        session, semaphore = await self._ensure_session()
        start = time.monotonic()

        async def attempt(i: int) -> list[str]:
            base = self.endpoints[(number + i) % len(self.endpoints)]
            body = {"queries": queries, "topk": self.topk, "return_scores": False}
            data = await post_json(session, base + "/retrieve", body)
            result = data.get("result") if isinstance(data, dict) else None
            if not isinstance(result, list) or len(result) != len(queries):
                raise MalformedResponseError(
                    f"reply must be {{'result': [one list per query]}} for {len(queries)} queries, got {str(data)[:120]}"
                )
            documents = []
            for hits in result:
                if not isinstance(hits, list):
                    raise MalformedResponseError(f"hits of a query must be a list, got {hits!r:.120}")
                documents.append(format_documents([passage_of(h) for h in hits[: self.topk]]))
            return documents

        try:
            docs = await call_with_retries(
                attempt, self.policy, self._rng, semaphore=semaphore, on_retry=lambda _: self._metrics.add_retry()
            )
        except Exception as exc:  # a failed chunk must not fail the batch
            malformed = isinstance(exc, MalformedResponseError)
            return None, describe_error(exc), malformed, time.monotonic() - start
        return docs, None, False, time.monotonic() - start

    async def _search_uncached(self, requests: list[SearchRequest]) -> list[SearchResult]:
        unique = list(dict.fromkeys(r.query for r in requests))
        chunks = [unique[i : i + self.max_batch_size] for i in range(0, len(unique), self.max_batch_size)]
        first = self._chunks_sent
        self._chunks_sent += len(chunks)
        replies = await asyncio.gather(*(self._chunk(c, first + k) for k, c in enumerate(chunks)))
        by_query: dict[str, SearchResult] = {}
        for chunk, (docs, error, malformed, latency) in zip(chunks, replies):
            for k, query in enumerate(chunk):
                if docs is None:
                    by_query[query] = SearchResult(
                        NO_INFORMATION, ok=False, error=error, latency_s=latency, malformed=malformed
                    )
                else:
                    by_query[query] = SearchResult(docs[k], latency_s=latency)
        return [dataclasses.replace(by_query[r.query]) for r in requests]

    async def _aclose(self) -> None:
        await self._http.close()
