"""Groups concurrent generation requests into batches for a backend.

Requests go into an asyncio queue. A single worker task takes the first waiting request, then
keeps collecting for up to ``max_wait_s`` (or until ``max_batch`` prompts), and runs the whole
batch in one backend call on a worker thread, so the event loop keeps accepting requests while the
model runs. Requests that arrive during a run form the next batch, so batches grow with load.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field

from zerosearch.simulation.backend import GenerationBackend
from zerosearch.simulation.sampling import GenerationRequest, GenerationResult


@dataclass
class BatchStats:
    """Counters since start: backend calls, prompts, largest batch, busy seconds."""

    batches: int = 0
    prompts: int = 0
    max_batch_size: int = 0
    busy_s: float = 0.0
    errors: int = 0
    batch_sizes: deque = field(default_factory=lambda: deque(maxlen=32))

    def as_dict(self) -> dict:
        return {"batches": self.batches, "prompts": self.prompts, "max_batch_size": self.max_batch_size,
                "mean_batch_size": self.prompts / self.batches if self.batches else 0.0,
                "busy_s": round(self.busy_s, 4), "errors": self.errors,
                "recent_batch_sizes": list(self.batch_sizes)}


class RequestBatcher:
    """Async front of a backend: ``await batcher.submit([...])`` returns the results in order.

    Args:
        backend: the model.
        max_batch: most prompts per backend call (a single request with more prompts still runs whole).
        max_wait_s: how long the first request of a batch waits for company.
    """

    def __init__(self, backend: GenerationBackend, max_batch: int = 64, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="request-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Queue the requests of one HTTP call together; raises what the backend raised."""
        if self._queue is None:
            raise RuntimeError("RequestBatcher.start() was not awaited")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((requests, future))
        return await future

    async def _collect(self) -> list[tuple[list[GenerationRequest], asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        size = len(batch[0][0])
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if self._queue.qsize():  # already waiting (e.g. arrived during the last run): take now
                    item = self._queue.get_nowait()
                elif remaining > 0:
                    item = await asyncio.wait_for(self._queue.get(), timeout=remaining)
                else:
                    break
            except asyncio.TimeoutError:
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            flat = [req for reqs, _ in batch for req in reqs]
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self.backend.generate, flat)
                if len(results) != len(flat):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(flat)} prompts")
            except Exception as err:  # the error goes to every waiting caller; the loop goes on
                self.stats.errors += 1
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            finally:
                self.stats.busy_s += time.monotonic() - started
            self.stats.batches += 1
            self.stats.prompts += len(flat)
            self.stats.max_batch_size = max(self.stats.max_batch_size, len(flat))
            self.stats.batch_sizes.append(len(flat))
            offset = 0
            for reqs, future in batch:
                if not future.done():  # a caller that gave up (disconnect) is skipped
                    future.set_result(results[offset: offset + len(reqs)])
                offset += len(reqs)
