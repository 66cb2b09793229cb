"""The pooled HTTP session of a search tool that talks to servers over aiohttp."""

from __future__ import annotations

import asyncio

import aiohttp


class HTTPPool:
    """One ``aiohttp.ClientSession`` (a connector of ``concurrency`` connections, each request
    bounded by ``timeout_s``) and a semaphore of ``concurrency`` for the requests in flight.

    Both are created on first use, on the event loop of the tool that owns the pool (a session is
    bound to its loop), and released by ``close``.
    """

    def __init__(self, concurrency: int, timeout_s: float) -> None:
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None

    async def get(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The session and the semaphore, created on the running loop the first time."""
        if self._session is None:
            # trust_env stays False (aiohttp's default): no per-request proxy/netrc look-ups, and
            # HTTP(S)_PROXY from the environment does not apply to the search servers.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
            self._semaphore = asyncio.Semaphore(self.concurrency)
        assert self._semaphore is not None
        return self._session, self._semaphore

    async def close(self) -> None:
        """Close the session (a later ``get`` opens a new one)."""
        session, self._session = self._session, None
        self._semaphore = None
        if session is not None:
            await session.close()
