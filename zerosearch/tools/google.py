"""Real web search through SerpAPI's Google engine (the official ``serpapi`` package).

Each query is one ``serpapi.Client.search({"engine": "google", "q": query, "num": topk})`` call, run
in a thread pool of ``concurrency`` workers with a per-attempt timeout and bounded retries. Each
organic result becomes ``Doc i: {title}{title_snippet_sep}{snippet}``. Raw results are kept in an
on-disk JSON cache, one file per query (``cache_dir/<sha256>.json``), so evaluating again costs no
API calls. The API key is read from the environment variable named by ``api_key_env`` when the tool
is built; when that is the default ``SERPAPI_API_KEY`` and it is unset, the original ZeroSearch's
variable ``SER_API_KEY`` is accepted (a one-line notice names the variable). The key never appears
in ``repr``, logs or error messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Hashable

import requests
import serpapi
from serpapi import exceptions as serpapi_exceptions

from zerosearch.tools.base import NO_INFORMATION, SearchRequest, SearchResult, SearchTool, require_int
from zerosearch.tools.documents import format_documents, one_line
from zerosearch.tools.retry import PermanentError, RetryableError, RetryPolicy, call_with_retries, describe_error

logger = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "SERPAPI_API_KEY"
# The variable the original ZeroSearch release reads; accepted only in place of the default one.
ORIGINAL_KEY_ENV = "SER_API_KEY"
_NO_RESULTS_MARKER = "hasn't returned any results"
_ERROR_CHARS = 300


class GoogleSearchTool(SearchTool):
    """Google results via SerpAPI.

    Args:
        api_key_env: name of the environment variable holding the SerpAPI key. With the default
            name, an unset ``SERPAPI_API_KEY`` falls back to ``SER_API_KEY`` (the original's).
        topk: results per query (SerpAPI ``num``).
        title_snippet_sep: text between a result's title and its snippet.
        cache_dir: folder of the on-disk result cache; None = no disk cache.
        concurrency: API calls in flight at most.
        timeout: seconds per attempt.
        max_retries: attempts after the first.
        backoff: base of the exponential backoff, seconds.
        cache_size: in-memory LRU entries keyed by query; 0 = off.
        seed: seed of the retry jitter.
    """

    name = "google"

    def __init__(
        self,
        api_key_env: str = DEFAULT_KEY_ENV,
        topk: int = 5,
        title_snippet_sep: str = ". ",
        cache_dir: str | os.PathLike | None = None,
        concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 2.0,
        cache_size: int = 0,
        seed: int = 0,
    ):
        if not isinstance(api_key_env, str) or not api_key_env:
            raise ValueError(f"api_key_env (retriever.google.api_key_env) must name an environment variable, got {api_key_env!r}")
        if not isinstance(title_snippet_sep, str):
            raise ValueError(f"title_snippet_sep (retriever.google.title_snippet_sep) must be a string, got {title_snippet_sep!r}")
        key = os.environ.get(api_key_env, "").strip()
        if not key and api_key_env == DEFAULT_KEY_ENV:
            key = os.environ.get(ORIGINAL_KEY_ENV, "").strip()
            if key:
                logger.info("%s is not set: using the SerpAPI key in %s (the original ZeroSearch's variable)",
                            DEFAULT_KEY_ENV, ORIGINAL_KEY_ENV)
        if not key:
            also = f" (nor {ORIGINAL_KEY_ENV}, the original ZeroSearch's name)" if api_key_env == DEFAULT_KEY_ENV else ""
            raise ValueError(
                f"environment variable {api_key_env} (retriever.google.api_key_env) is not set{also}; "
                "it must hold the SerpAPI key used by the google search mode"
            )
        super().__init__(cache_size=cache_size)
        self.api_key_env = api_key_env
        self.topk = require_int("topk (retriever.topk)", topk, 1)
        self.title_snippet_sep = title_snippet_sep
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.concurrency = require_int("concurrency (retriever.google.concurrency)", concurrency, 1)
        self.seed = require_int("seed (retriever.seed)", seed, 0)
        self.policy = RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        self.__api_key = key
        self._client = serpapi.Client(api_key=key, timeout=self.policy.timeout)
        self._rng = random.Random(self.seed)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._semaphore: asyncio.Semaphore | None = None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return "google search (SerpAPI)"

    def __repr__(self) -> str:
        return (
            f"GoogleSearchTool(api_key_env={self.api_key_env!r}, topk={self.topk}, "
            f"title_snippet_sep={self.title_snippet_sep!r}, cache_dir={self.cache_dir})"
        )

    def cache_key(self, request: SearchRequest) -> Hashable:
        return (self.name, request.query)

    # ----------------------------------------------------------------- helpers
    def _redact(self, text: str) -> str:
        return text.replace(self.__api_key, "***")

    @staticmethod
    def _full_error(exc: BaseException) -> str:
        # Uncut: the key must be redacted before a message is shortened, or a cut key escapes.
        return describe_error(exc, limit=len(str(exc)) + 200)

    def _params(self, query: str) -> dict[str, Any]:
        return {"engine": "google", "q": query, "num": self.topk}

    def _cache_path(self, query: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(self._params(query), sort_keys=True).encode("utf-8")).hexdigest()
        return self.cache_dir / f"{digest}.json"

    def _read_cache(self, query: str) -> list[dict[str, str]] | None:
        path = self._cache_path(query)
        if path is None or not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["params"] != self._params(query):
                raise ValueError("params differ")
            return list(entry["organic_results"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable google cache file %s (%s)", path, describe_error(exc))
            return None

    def _write_cache(self, query: str, organic: list[dict[str, str]]) -> None:
        path = self._cache_path(query)
        if path is None:
            return
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"params": self._params(query), "organic_results": organic}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def format_results(self, organic: list[dict[str, str]]) -> str:
        """``Doc i: title{sep}snippet`` lines for the first ``topk`` results."""
        docs = []
        for item in organic[: self.topk]:
            title, snippet = one_line(item.get("title") or ""), one_line(item.get("snippet") or "")
            docs.append(self.title_snippet_sep.join(part for part in (title, snippet) if part))
        return format_documents([d for d in docs if d]) if docs else NO_INFORMATION

    def _call_api(self, query: str) -> list[dict[str, str]]:
        """One blocking SerpAPI call (in a worker thread); errors come back classified and redacted."""
        try:
            results = self._client.search(self._params(query))
        except serpapi_exceptions.HTTPError as exc:
            status = getattr(exc, "status_code", -1)
            detail = self._redact(f"HTTP {status}: {getattr(exc, 'error', None) or self._full_error(exc)}")[:_ERROR_CHARS]
            if status == -1 or status == 429 or status >= 500:
                raise RetryableError(detail) from None
            raise PermanentError(detail) from None
        except (requests.exceptions.RequestException, serpapi_exceptions.SerpApiError, OSError) as exc:
            raise RetryableError(self._redact(self._full_error(exc))[:_ERROR_CHARS]) from None
        error = results.get("error")
        organic = results.get("organic_results") or []
        if error and not organic:
            if _NO_RESULTS_MARKER in str(error):
                return []
            raise PermanentError(self._redact(f"SerpAPI error: {error}"))
        return [{"title": str(r.get("title") or ""), "snippet": str(r.get("snippet") or "")} for r in organic]

    async def _one(self, request: SearchRequest) -> SearchResult:
        start = time.monotonic()
        cached = self._read_cache(request.query)
        if cached is not None:
            return SearchResult(self.format_results(cached), cached=True)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="serpapi")
            self._semaphore = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()

        async def attempt(i: int) -> list[dict[str, str]]:
            return await loop.run_in_executor(self._executor, functools.partial(self._call_api, request.query))

        try:
            organic = await call_with_retries(
                attempt, self.policy, self._rng, semaphore=self._semaphore, on_retry=lambda _: self._metrics.add_retry()
            )
        except Exception as exc:  # a failed query must not fail the batch
            return SearchResult(
                NO_INFORMATION, ok=False, error=self._redact(describe_error(exc)), latency_s=time.monotonic() - start
            )
        self._write_cache(request.query, organic)
        return SearchResult(self.format_results(organic), latency_s=time.monotonic() - start)

    async def _search_uncached(self, requests: list[SearchRequest]) -> list[SearchResult]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
