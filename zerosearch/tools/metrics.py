"""Counters of a search tool, accumulated between two ``pop()`` calls (thread-safe)."""

from __future__ import annotations

import threading


class SearchMetrics:
    """requests, failures, malformed replies, retries, cache hits and latencies of the queries
    answered so far. A malformed reply is not a failure: failures are queries with no reply."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._requests = 0
        self._failures = 0
        self._malformed = 0
        self._retries = 0
        self._cache_hits = 0
        self._latency_sum = 0.0
        self._latency_max = 0.0
        self._latency_count = 0

    def record(self, ok: bool, cached: bool, latency_s: float, malformed: bool = False) -> None:
        """Count one query: a failure when not ``ok`` and not ``malformed``; cached answers do not
        enter the latency statistics."""
        with self._lock:
            self._requests += 1
            self._failures += 0 if ok or malformed else 1
            self._malformed += 1 if malformed else 0
            if cached:
                self._cache_hits += 1
            else:
                self._latency_sum += latency_s
                self._latency_max = max(self._latency_max, latency_s)
                self._latency_count += 1

    def add_retry(self) -> None:
        with self._lock:
            self._retries += 1

    def pop(self) -> dict[str, float]:
        """The counters since the last pop, then zero them.

        Keys: ``requests, failures, malformed, retries, cache_hits, failure_rate, malformed_rate,
        latency_mean_s, latency_max_s``.
        """
        with self._lock:
            out = {
                "requests": float(self._requests),
                "failures": float(self._failures),
                "malformed": float(self._malformed),
                "retries": float(self._retries),
                "cache_hits": float(self._cache_hits),
                "failure_rate": self._failures / self._requests if self._requests else 0.0,
                "malformed_rate": self._malformed / self._requests if self._requests else 0.0,
                "latency_mean_s": self._latency_sum / self._latency_count if self._latency_count else 0.0,
                "latency_max_s": self._latency_max,
            }
            self._reset()
        return out
