"""zerosearch/tools/http_pool.py: one session per pool, bounded, reopened after close."""

import asyncio

from zerosearch.tools.http_pool import HTTPPool


def test_one_session_until_closed_then_a_new_one():
    async def scenario():
        pool = HTTPPool(concurrency=3, timeout_s=7.0)
        s1, sem1 = await pool.get()
        s2, sem2 = await pool.get()
        assert s1 is s2 and sem1 is sem2
        assert s1.connector.limit == 3 and s1.timeout.total == 7.0
        assert sem1._value == 3  # three requests in flight at most
        await pool.close()
        assert s1.closed
        s3, _ = await pool.get()
        assert s3 is not s1 and not s3.closed
        await pool.close()
        await pool.close()  # closing twice is harmless

    asyncio.run(scenario())
