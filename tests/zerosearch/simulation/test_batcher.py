"""The request batcher with a recording fake backend: grouping, order, limits, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from zerosearch.simulation.backend import GenerationBackend
from zerosearch.simulation.batcher import RequestBatcher
from zerosearch.simulation.sampling import GenerationRequest, GenerationResult, SamplingSpec


class EchoBackend(GenerationBackend):
    """Returns each prompt's ids reversed; records the size of every batch; can be slow or fail."""

    name = "echo"

    def __init__(self, delay_s: float = 0.0, fail: bool = False):
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.threads: set[str] = set()

    def generate(self, requests):
        self.calls.append(len(requests))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return [GenerationResult(text=str(r.prompt_ids), output_ids=r.prompt_ids[::-1],
                                 finish_reason={"type": "length", "length": len(r.prompt_ids)},
                                 prompt_tokens=len(r.prompt_ids)) for r in requests]


def _req(*ids):
    return GenerationRequest(prompt_ids=list(ids), sampling=SamplingSpec(max_new_tokens=4))


async def _with_batcher(backend, coro_fn, **kw):
    batcher = RequestBatcher(backend, **kw)
    await batcher.start()
    try:
        return await coro_fn(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_backend_call_and_keep_order():
    backend = EchoBackend()

    async def go(b):
        return await asyncio.gather(*[b.submit([_req(i, i + 1)]) for i in range(6)]), b.stats

    results, stats = asyncio.run(_with_batcher(backend, go, max_batch=64, max_wait_s=0.2))
    assert backend.calls == [6]
    assert [r[0].output_ids for r in results] == [[i + 1, i] for i in range(6)]
    assert stats.batches == 1 and stats.prompts == 6 and stats.max_batch_size == 6
    assert backend.threads and all(t.startswith("generate") for t in backend.threads)


def test_max_batch_caps_the_batch_but_keeps_a_multi_prompt_request_whole():
    backend = EchoBackend()

    async def go(b):
        return await asyncio.gather(b.submit([_req(1), _req(2), _req(3)]), *[b.submit([_req(9)]) for _ in range(3)])

    results = asyncio.run(_with_batcher(backend, go, max_batch=4, max_wait_s=0.2))
    assert sum(backend.calls) == 6 and max(backend.calls) <= 4
    assert [r.output_ids for r in results[0]] == [[1], [2], [3]]


def test_requests_arriving_during_a_run_form_the_next_batch():
    backend = EchoBackend(delay_s=0.3)

    async def go(b):
        first = asyncio.create_task(b.submit([_req(1)]))
        await asyncio.sleep(0.1)  # the first batch (wait 0) is running now
        rest = await asyncio.gather(*[b.submit([_req(i)]) for i in range(2, 6)])
        return await first, rest

    asyncio.run(_with_batcher(backend, go, max_batch=64, max_wait_s=0.0))
    assert backend.calls == [1, 4]


def test_backend_error_reaches_every_caller_and_the_loop_survives():
    backend = EchoBackend(fail=True)

    async def go(b):
        outcome = await asyncio.gather(b.submit([_req(1)]), b.submit([_req(2)]), return_exceptions=True)
        backend.fail = False
        after = await b.submit([_req(3, 4)])
        return outcome, after, b.stats

    outcome, after, stats = asyncio.run(_with_batcher(backend, go, max_batch=8, max_wait_s=0.1))
    assert all(isinstance(o, RuntimeError) and "exploded" in str(o) for o in outcome)
    assert after[0].output_ids == [4, 3]
    assert stats.errors == 1 and stats.batches == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        RequestBatcher(EchoBackend(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        RequestBatcher(EchoBackend(), max_wait_s=-1)
