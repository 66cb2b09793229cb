"""Bounded retries with exponential backoff and seeded jitter, and the error kinds they act on.

One query makes at most ``max_retries + 1`` attempts. Each attempt is cut after ``timeout``
seconds. Before retry ``k`` (0-based) the caller sleeps ``backoff * 2**k`` plus a jitter drawn
uniformly from ``[0, backoff)``. So a query gives up after at most
``(max_retries + 1) * timeout + sum_k (backoff * 2**k + backoff)`` seconds, plus any wait for a
free concurrency slot.

Retryable: timeouts, transport errors (``aiohttp.ClientError``, ``ConnectionError``), HTTP
408/425/429/5xx and malformed replies. Permanent: any other HTTP 4xx. ``post_json`` is the one
JSON POST of an attempt over a pooled ``aiohttp.ClientSession``, classified this way.

A malformed reply (``MalformedResponseError``: the server answered, but not in the promised form)
is a content problem, not an outage: the server is up, so the next attempt goes out at once, with
no backoff sleep (for a simulator it is a fresh sample, under a fresh seed). Backoff is for
transport failures, where it gives a struggling server room to recover.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp

T = TypeVar("T")


class RetryableError(Exception):
    """A failure another attempt may fix: a timeout, a dropped connection, a 5xx, a garbled reply."""


class PermanentError(Exception):
    """A failure another attempt will not fix, e.g. HTTP 400/401/404 (wrong model name, bad key)."""


class MalformedResponseError(RetryableError):
    """The server answered, but not with what the contract promises.

    Attributes:
        text: what of the reply can still serve as the documents (e.g. a simulated reply without a
            ``Doc 1`` line, cleaned); empty when nothing usable came back (no JSON, no text).
    """

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


_RETRYABLE_STATUS = frozenset({408, 425, 429})


def raise_for_status(status: int, url: str, body: str) -> None:
    """Map an HTTP error ``status`` to ``RetryableError`` (408/425/429/5xx) or ``PermanentError``.

    A 2xx returns. The message names the status, ``url`` and the first 300 characters of ``body``
    (the reply's text) on one line.
    """
    if 200 <= status < 300:
        return
    cut = body[:300].replace("\n", " ")
    message = f"HTTP {status} from {url}: {cut}"
    if status in _RETRYABLE_STATUS or status >= 500:
        raise RetryableError(message)
    raise PermanentError(message)


def decode_body(raw: bytes, charset: str | None) -> str:
    """The reply's text: its declared charset (UTF-8 when none or unknown), undecodable bytes replaced."""
    encoding = "utf-8"
    if charset:
        try:
            encoding = codecs.lookup(charset).name
        except LookupError:
            pass
    return raw.decode(encoding, errors="replace")


async def post_json(session: aiohttp.ClientSession, url: str, body: Any) -> Any:
    """POST ``body`` as JSON to ``url`` and return the parsed JSON reply.

    Raises:
        RetryableError / PermanentError: an HTTP error status (see ``raise_for_status``).
        MalformedResponseError: a 2xx reply that is not JSON.
        aiohttp.ClientError, TimeoutError: transport failures (retryable, see ``is_retryable``).
    """
    # No redirects are followed (a 3xx is a permanent error). The body is read inside the block:
    # leaving it releases the connection to the pool.
    async with session.post(url, json=body, allow_redirects=False) as response:
        raw = await response.read()
        status, charset = response.status, response.charset
    if not 200 <= status < 300:
        raise_for_status(status, url, decode_body(raw, charset))
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise MalformedResponseError(f"reply is not JSON ({describe_error(exc)})") from None


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another attempt (a bad URL is not, though aiohttp files it as a ClientError)."""
    if isinstance(exc, aiohttp.InvalidURL):
        return False
    return isinstance(exc, (RetryableError, TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, ConnectionError))


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """``"Type: message"``, cut to ``limit`` characters."""
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:limit]


@dataclass(frozen=True)
class RetryPolicy:
    """Per-attempt ``timeout`` (s), ``max_retries`` after the first attempt, ``backoff`` base (s)."""

    timeout: float
    max_retries: int
    backoff: float

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {self.timeout!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not (isinstance(self.backoff, (int, float)) and math.isfinite(self.backoff) and self.backoff >= 0):
            raise ValueError(f"backoff must be a finite number of seconds >= 0, got {self.backoff!r}")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Sleep before retry ``retry`` (0-based)."""
        return self.backoff * 2**retry + rng.uniform(0.0, self.backoff)

    def worst_case_s(self) -> float:
        """Longest time one query can take, not counting waits for a concurrency slot."""
        return (self.max_retries + 1) * self.timeout + sum(self.backoff * (2**k + 1) for k in range(self.max_retries))


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    rng: random.Random,
    *,
    semaphore: asyncio.Semaphore | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Await ``attempt(i)`` for i = 0, 1, ... until it succeeds or the policy is spent.

    Each attempt holds ``semaphore`` (when given) and is cut after ``policy.timeout``; the slot is
    released during the backoff sleep, which a ``MalformedResponseError`` skips (the server is up: the
    next attempt is a resample). Errors that ``is_retryable`` rejects are raised at once; the last
    error is raised when the retries run out (a timeout becomes ``RetryableError``).
    """
    for i in range(policy.max_retries + 1):
        try:
            if semaphore is None:
                return await asyncio.wait_for(attempt(i), policy.timeout)
            async with semaphore:
                return await asyncio.wait_for(attempt(i), policy.timeout)
        except (TimeoutError, asyncio.TimeoutError):  # the same class from Python 3.11 on
            error: BaseException = RetryableError(f"no reply within {policy.timeout:g} s")
        except Exception as exc:  # classified below; never swallowed
            error = exc
        if not is_retryable(error) or i == policy.max_retries:
            raise error
        if on_retry is not None:
            on_retry(error)
        if not isinstance(error, MalformedResponseError):
            await asyncio.sleep(policy.delay(i, rng))
    raise AssertionError("unreachable")
