"""The REST layer's connection pool: free connections are taken at once, a connection
given back goes to the longest waiting request, and a cancelled wait loses none."""

import asyncio

from devstack.stack.rest.service import _Pool


def test_free_connections_then_waiters_first_come_first_served():
    async def scenario() -> list:
        pool = _Pool()
        pool.put_nowait("a")
        assert await pool.get() == "a"  # free: no waiting
        got: list = []

        async def take(tag: str) -> None:
            got.append((tag, await pool.get()))

        first = asyncio.create_task(take("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(take("second"))
        await asyncio.sleep(0)
        assert pool.qsize() == 0 and not got  # both wait
        pool.put_nowait("b")
        pool.put_nowait("c")
        await asyncio.gather(first, second)
        return got

    assert asyncio.run(scenario()) == [("first", "b"), ("second", "c")]


def test_a_cancelled_wait_loses_no_connection():
    async def scenario() -> tuple:
        pool = _Pool()
        gone = asyncio.create_task(pool.get())
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while waiting: the next connection skips it
        await asyncio.sleep(0)
        pool.put_nowait("a")
        assert pool.qsize() == 1 and await pool.get() == "a"

        # handed a connection, then cancelled before it ran: the connection goes back
        late = asyncio.create_task(pool.get())
        await asyncio.sleep(0)
        pool.put_nowait("b")
        late.cancel()
        try:
            await late
        except asyncio.CancelledError:
            pass
        return pool.qsize(), pool._free[:]

    assert asyncio.run(scenario()) == (1, ["b"])
