"""The REST schema cache: reloaded on NOTIFY pgrst, 'reload schema' (as `supabase db
reset`, `rackpilot dev reset` and the platform's DDL event triggers send it), exposing
tables and views of the exposed schemas only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import httpx
import psycopg2
import pytest

from devstack.stack.rest.service import DEALLOCATE_SQL

TEARDOWN_SQL = """
drop view if exists public.rest_contract_cache_view;
drop table if exists public.rest_contract_cache_silent, public.rest_contract_cache_base;
"""


@pytest.fixture
def db(stack) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(TEARDOWN_SQL)
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
        conn.close()


def _status_within(url: str, headers: dict, want: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(url, headers=headers, timeout=5).status_code
        if status == want or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_reload_on_notify(db, api_url, service_key):
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    url = f"{api_url}/rest/v1/rest_contract_cache_silent"
    with db.cursor() as cur:
        # replica mode keeps the DDL event triggers quiet, so only our NOTIFY can reload
        cur.execute("set session_replication_role = replica")
        cur.execute("create table public.rest_contract_cache_silent (id int primary key)")
        cur.execute("insert into public.rest_contract_cache_silent values (7)")
        cur.execute("set session_replication_role = origin")
    time.sleep(0.3)
    r = httpx.get(url, headers=hdrs)
    assert r.status_code == 404 and r.json()["code"] == "PGRST205"
    with db.cursor() as cur:
        cur.execute("notify pgrst, 'reload schema'")
    assert _status_within(url, hdrs, 200) == 200
    assert httpx.get(url, headers=hdrs).json() == [{"id": 7}]


def test_views_and_ddl_driven_reload(db, api_url, service_key):
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    with db.cursor() as cur:
        cur.execute("create table public.rest_contract_cache_base (id int primary key, label text)")
        cur.execute("insert into public.rest_contract_cache_base values (1, 'one'), (2, 'two')")
        cur.execute(
            "create view public.rest_contract_cache_view as "
            "select id, upper(label) as shout from public.rest_contract_cache_base"
        )
    url = f"{api_url}/rest/v1/rest_contract_cache_view?select=shout&id=gt.1"
    assert _status_within(url, hdrs, 200) == 200
    assert httpx.get(url, headers=hdrs).json() == [{"shout": "TWO"}]
    with db.cursor() as cur:
        cur.execute("drop view public.rest_contract_cache_view")
    assert _status_within(url, hdrs, 404) == 404


def test_unexposed_schemas_are_invisible(api_url, service_key, stack):
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    assert "auth" not in stack.cfg.exposed_schemas
    r = httpx.get(f"{api_url}/rest/v1/users", headers={**hdrs, "Accept-Profile": "auth"})
    assert r.status_code == 406 and r.json()["code"] == "PGRST106"
    r = httpx.get(f"{api_url}/rest/v1/users", headers=hdrs)
    assert r.status_code == 404
    r = httpx.post(f"{api_url}/rest/v1/rpc/run", headers=hdrs, json={})
    assert r.status_code == 404 and r.json()["code"] == "PGRST202"


def test_reads_survive_terminated_connections(db, api_url, service_key):
    """Connections the database drops (restart, `pg_terminate_backend`) are replaced; a
    read that meets one is retried on the replacement instead of failing."""
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    with db.cursor() as cur:
        cur.execute("create table public.rest_contract_cache_base (id int primary key, label text)")
        cur.execute("insert into public.rest_contract_cache_base values (1, 'one')")
    url = f"{api_url}/rest/v1/rest_contract_cache_base?select=label"
    assert _status_within(url, hdrs, 200) == 200
    with db.cursor() as cur:
        cur.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where application_name = 'rackpilot-rest' and pid <> pg_backend_pid()"
        )
        assert cur.fetchone()[0] >= 1
    for _ in range(20):  # more than the connections kept, so every one is met once
        r = httpx.get(url, headers=hdrs, timeout=10)
        assert r.status_code == 200 and r.json() == [{"label": "one"}]
    # the schema listener reconnects too: DDL is seen again
    with db.cursor() as cur:
        cur.execute("create view public.rest_contract_cache_view as select 1 as one")
    assert _status_within(f"{api_url}/rest/v1/rest_contract_cache_view", hdrs, 200) == 200


def test_statement_cleanup_keeps_the_drivers_statements(stack):
    """The REST layer deallocates only its own prepared statements when a connection has
    too many; asyncpg's own statements on the same connection must survive."""

    async def check() -> None:
        conn = await asyncpg.connect(stack.pg.dsn("authenticator"))
        try:
            await conn.execute("prepare _rp_cleanup_test as select 1")
            stmt = await conn.prepare("select 2")  # asyncpg names and keeps this one itself
            await conn.execute(DEALLOCATE_SQL)
            names = {r["name"] for r in await conn.fetch("select name from pg_prepared_statements")}
            assert "_rp_cleanup_test" not in names
            assert await stmt.fetchval() == 2
        finally:
            await conn.close()

    asyncio.run(check())


def test_the_schema_cache_reloads_after_the_pool_was_terminated(db, api_url, service_key):
    """Every pooled connection dropped by the database, and no request since to replace
    them: the next DDL must still reach the schema cache. The reload used to take a dead
    connection from the pool, fail, and leave the cache stale until requests happened to
    replace the whole pool (a supabase-js test then waited 30 s for a new table in vain)."""
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    with db.cursor() as cur:
        cur.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where application_name = 'rackpilot-rest' and pid <> pg_backend_pid()"
        )
        assert cur.fetchone()[0] >= 1
        # the listener reconnects on its own (about a second); DDL after that is announced
        cur.execute("create table public.rest_contract_cache_after_kill (id int primary key)")
        cur.execute("insert into public.rest_contract_cache_after_kill values (7)")
    try:
        assert _status_within(f"{api_url}/rest/v1/rest_contract_cache_after_kill", hdrs, 200) == 200
    finally:
        with db.cursor() as cur:
            cur.execute("drop table if exists public.rest_contract_cache_after_kill")


def test_a_write_after_the_pool_was_terminated_goes_ahead(db, api_url, service_key):
    """A connection the database dropped while idle is replaced when it is taken from the
    pool, so a write (which is never retried) is not answered 503 for it."""
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}", "Prefer": "return=minimal"}
    with db.cursor() as cur:
        cur.execute("create table if not exists public.rest_contract_cache_write (id int primary key)")
    try:
        assert _status_within(f"{api_url}/rest/v1/rest_contract_cache_write", hdrs, 200) == 200
        with db.cursor() as cur:
            cur.execute(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where application_name = 'rackpilot-rest' and pid <> pg_backend_pid()"
            )
            assert cur.fetchone()[0] >= 1

        def terminated_seen() -> bool:  # the pooled connections notice their end while idle
            with db.cursor() as cur:
                cur.execute("select count(*) from pg_stat_activity where application_name = 'rackpilot-rest'")
                return cur.fetchone()[0] == 0

        deadline = time.monotonic() + 10
        while not terminated_seen() and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(20):  # more than the connections kept, so every one is met once
            r = httpx.post(
                f"{api_url}/rest/v1/rest_contract_cache_write", headers=hdrs, json={"id": i}, timeout=10
            )
            assert r.status_code == 201, r.text
    finally:
        with db.cursor() as cur:
            cur.execute("drop table if exists public.rest_contract_cache_write")


# more catalog invalidations than a backend's queue holds (4096 messages): every other
# backend then resets its caches the next time it runs a statement
CACHE_RESET_SQL = """do $$ begin
  for i in 1..700 loop
    execute format('create table public.rest_cache_reset_%s (id int)', i);
    execute format('drop table public.rest_cache_reset_%s', i);
  end loop;
end $$"""


def test_run_answers_as_the_caller_after_a_cache_reset(stack, api_url, service_key):
    """After a cache reset, ``_rackpilot_rest.run`` must still answer as the caller: nothing
    it does after switching to the caller's role may look a name up in ``_rackpilot_rest``,
    which only the authenticator may use. Its result was once a row type named there, which
    plpgsql looks up again by name once the type cache was reset: such a request failed with
    'permission denied for schema _rackpilot_rest' (on the gateway, until its pool replaced
    the connection and logged it)."""
    from devstack.stack.rest.service import RUN_SQL

    args = ("authenticated", "{}", "GET", "/x", "{}", '"public"', True, "select 'x', 1::bigint, 1::bigint")
    args += ([], False, None, False)

    async def direct() -> None:
        conn = await asyncpg.connect(stack.pg.dsn("authenticator"))
        admin = await asyncpg.connect(stack.pg.dsn())
        try:
            for _ in range(2):
                row = await conn.fetchrow(RUN_SQL, *args)
                assert (row["body"], row["page_total"], row["total"]) == ("x", 1, 1)
                await admin.execute(CACHE_RESET_SQL)
            row = await conn.fetchrow(RUN_SQL, *args)  # raised InsufficientPrivilegeError
            assert row["body"] == "x"
        finally:
            await conn.close()
            await admin.close()

    asyncio.run(direct())

    # the gateway's pooled connections, reset the same way, answer without being replaced
    log = stack.cfg.log_dir / "gateway.log"
    replaced_before = log.read_text().count("refused its own wrapper")
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            url = f"{api_url}/rest/v1/sites?select=id&limit=1"
            return [
                r.status_code
                for r in await asyncio.gather(*(client.get(url, headers=hdrs) for _ in range(32)))
            ]

    assert set(asyncio.run(burst())) == {200}
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(CACHE_RESET_SQL)
    finally:
        conn.close()
    assert set(asyncio.run(burst())) == {200}
    assert log.read_text().count("refused its own wrapper") == replaced_before
