"""A private asyncio event loop running in a daemon thread.

Search tools keep one pooled ``aiohttp.ClientSession`` alive across many calls. Such a session is
bound to the loop it was created on (its connector, pooled connections and timers live there), so
``asyncio.run`` per call (a new loop each time) would break it. The tool instead runs every
coroutine on this one loop: synchronous callers block on the result, asynchronous callers on
another loop await a wrapped future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


class BackgroundEventLoop:
    """One event loop in one daemon thread, started on first use, stopped by ``stop()``."""

    def __init__(self, name: str):
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self.name}: the event loop was stopped (the tool is closed)")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name=self.name, daemon=True)
                thread.start()
                if not ready.wait(timeout=30.0):
                    raise RuntimeError(f"{self.name}: the event loop thread did not start within 30 s")
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def is_current(self) -> bool:
        """True when called from a coroutine running on this loop."""
        try:
            return self._loop is not None and asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        try:
            loop = self._ensure_started()
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it finishes (not callable from the loop itself)."""
        if self.is_current():
            coro.close()
            raise RuntimeError(f"{self.name}: run() called from its own loop would deadlock; await the coroutine")
        return self.submit(coro).result(timeout)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this loop from any loop."""
        if self.is_current():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what is left, stop the loop and join its thread. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._stopped = True
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def cancel_pending() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(cancel_pending(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
