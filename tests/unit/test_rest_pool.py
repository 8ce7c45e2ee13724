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


class _Conn:
    """Stands in for an asyncpg connection (no database needed for the pool's own rules)."""

    def __init__(self, name: str, in_tx: bool = False, refuse: bool = False):
        self.name, self.in_tx, self.refuse, self.calls = name, in_tx, refuse, 0

    def is_closed(self) -> bool:
        return False

    def is_in_transaction(self) -> bool:
        return self.in_tx

    async def fetchrow(self, *_args):
        self.calls += 1
        if self.refuse:
            import asyncpg

            raise asyncpg.InsufficientPrivilegeError("permission denied for schema _rackpilot_rest")
        return ("[]", 0, None, None)


def _service(*conns: _Conn):
    from devstack.stack.rest.service import RestService

    svc = RestService.__new__(RestService)
    svc._conns, svc._prepared, svc.replaced = _Pool(), {}, []
    for c in conns:
        svc._conns.put_nowait(c)

    async def replace(conn):
        svc.replaced.append(conn.name)
        return _Conn(f"fresh-{conn.name}")

    svc._replace = replace
    return svc


def test_a_connection_left_inside_a_transaction_is_never_handed_out():
    svc = _service(_Conn("open", in_tx=True))
    conn = asyncio.run(svc._checkout())
    assert svc.replaced == ["open"] and conn.name == "fresh-open"


def test_a_connection_whose_role_outlived_its_request_is_replaced_and_the_request_runs():
    svc = _service(_Conn("poisoned", refuse=True))
    args = ("authenticated", "{}", "POST", "/t", "{}", "public", False, "insert ...", [], False)
    row = asyncio.run(svc._run(args, "s1", read_only=False, rollback=False, role="authenticated"))
    assert row == ("[]", 0, None, None) and svc.replaced == ["poisoned"]
    # the fresh connection went back to the pool, the poisoned one did not
    assert [c.name for c in svc._conns._free] == ["fresh-poisoned"]
