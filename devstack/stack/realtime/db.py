"""What the Realtime service asks Postgres: slot lifecycle, publication, table facts, RLS.

Two kinds of connection, both as ``postgres``:
- a small pool for catalog questions (publication, table metadata, privileges) and for
  Realtime Authorization of private channels (RLS on realtime.messages, asked as the
  joining role in a transaction that is rolled back);
- one dedicated connection for visibility checks, which switches ``role`` and
  ``request.jwt.claims`` per subscriber group exactly as PostgREST does for a request.

Row visibility is decided like Supabase Realtime's ``apply_rls``: for an INSERT/UPDATE the
live row is selected by primary key under the subscriber's role and claims, so the table's
policies decide. Trade-off (the same as Supabase's): a row already deleted or changed again
when the check runs is judged by its current state, so an INSERT followed at once by a
DELETE may not reach an RLS-restricted subscriber; service_role, which bypasses RLS, always
sees every change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from .errors import DatabaseUnavailable, SlotError
from .replication import StreamSpec

log = logging.getLogger("rackpilot.realtime.db")

PUBLICATION = "supabase_realtime"
SLOT_PREFIX = "rackpilot_realtime_"
CACHE_TTL_S = 2.0  # table facts and privileges are re-read after this long (s)
QUERY_TIMEOUT_S = 5.0  # catalog questions asked on behalf of a client give up after (s)
RETRY_DELAY_S = 0.2  # wait between attempts while Postgres is away (s)

CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncio.TimeoutError,
)


def qident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableInfo:
    exists: bool
    rls: bool = False
    columns: tuple[tuple[str, str], ...] = ()  # (name, typname) in attnum order
    pk: tuple[tuple[str, str], ...] = ()  # (name, format_type) of the primary key


class Database:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._rls: asyncpg.Connection | None = None
        self._rls_lock = asyncio.Lock()
        self._tables: dict[tuple[str, str], tuple[float, TableInfo]] = {}
        self._privs: dict[tuple[str, str, str], tuple[float, tuple[bool, frozenset[str] | None]]] = {}
        self.typnames: dict[int, str] = {}
        self._vis_fns: dict[tuple, str] = {}

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=3,
            command_timeout=QUERY_TIMEOUT_S,
            server_settings={"application_name": "rackpilot-realtime", "TimeZone": "UTC"},
        )
        await self.load_types()

    async def close(self) -> None:
        if self._rls is not None:
            self._rls.terminate()
            self._rls = None
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    # --- catalog --------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        assert self._pool is not None
        try:
            return await asyncio.wait_for(self._pool.fetch(sql, *args), QUERY_TIMEOUT_S)
        except CONNECTION_ERRORS as exc:
            # one retry: the pool hands out a fresh connection after a Postgres restart
            try:
                return await asyncio.wait_for(self._pool.fetch(sql, *args), QUERY_TIMEOUT_S)
            except CONNECTION_ERRORS:
                raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from None

    async def load_types(self) -> None:
        rows = await self._fetch("select oid::int8 as oid, typname from pg_type")
        self.typnames = {r["oid"]: r["typname"] for r in rows}

    async def wal_writer_delay_ms(self) -> int:
        rows = await self._fetch("select setting::int as ms from pg_settings where name = 'wal_writer_delay'")
        return int(rows[0]["ms"]) if rows else 0

    def typname(self, oid: int | None, fallback: str) -> str:
        if oid is None:
            return fallback
        return self.typnames.get(oid) or fallback

    async def publication(self) -> StreamSpec:
        rows = await self._fetch(
            """select p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, t.schemaname, t.tablename
               from pg_publication p left join pg_publication_tables t on t.pubname = p.pubname
               where p.pubname = $1""",
            PUBLICATION,
        )
        if not rows:
            return StreamSpec(all_tables=False, tables=frozenset())
        first = rows[0]
        actions = {
            a
            for a, on in (
                ("insert", first["pubinsert"]),
                ("update", first["pubupdate"]),
                ("delete", first["pubdelete"]),
            )
            if on
        }
        tables = frozenset((r["schemaname"], r["tablename"]) for r in rows if r["tablename"] is not None)
        return StreamSpec(all_tables=bool(first["puballtables"]), tables=tables, actions=frozenset(actions))

    async def table(self, schema: str, table: str, fresh: bool = False) -> TableInfo:
        key = (schema, table)
        hit = self._tables.get(key)
        now = time.monotonic()
        if hit is not None and not fresh and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        rows = await self._fetch(
            """select c.relrowsecurity, a.attname, t.typname, format_type(a.atttypid, a.atttypmod) as fmt,
                      coalesce(a.attnum = any(i.indkey), false) as is_pk
               from pg_class c
               join pg_namespace n on n.oid = c.relnamespace
               left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
               left join pg_type t on t.oid = a.atttypid
               left join pg_index i on i.indrelid = c.oid and i.indisprimary
               where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p', 'v', 'm', 'f')
               order by a.attnum""",
            schema,
            table,
        )
        if not rows:
            info = TableInfo(exists=False)
        else:
            info = TableInfo(
                exists=True,
                rls=bool(rows[0]["relrowsecurity"]),
                columns=tuple((r["attname"], r["typname"]) for r in rows if r["attname"] is not None),
                pk=tuple((r["attname"], r["fmt"]) for r in rows if r["is_pk"]),
            )
        self._tables[key] = (now, info)
        return info

    async def privileges(self, role: str, schema: str, table: str) -> tuple[bool, frozenset[str] | None]:
        """(may read, readable columns) of ``role`` on the table, as Supabase Realtime
        decides them: it may read with SELECT on any column, and changes carry only the
        columns it may SELECT (None: all of them, SELECT on the table). Cached a moment."""
        key = (role, schema, table)
        hit = self._privs.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        rows = await self._fetch(
            """select has_any_column_privilege($1, c.oid, 'SELECT') as ok,
                      case when has_table_privilege($1, c.oid, 'SELECT') then null else
                        array(select a.attname::text from pg_attribute a
                              where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                                and has_column_privilege($1, c.oid, a.attnum, 'SELECT'))
                      end as cols
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = $2 and c.relname = $3""",
            role,
            schema,
            table,
        )
        if not rows:
            answer: tuple[bool, frozenset[str] | None] = (False, frozenset())
        else:
            cols = rows[0]["cols"]
            answer = (bool(rows[0]["ok"]), None if cols is None else frozenset(cols))
        self._privs[key] = (now, answer)
        return answer

    async def can_select(self, role: str, schema: str, table: str) -> bool:
        return (await self.privileges(role, schema, table))[0]

    def forget(self) -> None:
        self._tables.clear()
        self._privs.clear()

    # --- Realtime Authorization (private channels) ----------------------------------
    async def read_policies(self, role: str, claims_json: str, topic: str) -> tuple[bool, bool]:
        """(broadcast, presence): may this role with these claims read ``topic``?

        As Supabase Realtime decides it: in a transaction that is rolled back, a
        ``broadcast`` and a ``presence`` row of the topic are inserted as ``postgres``,
        then the role, ``request.jwt.claims`` and ``realtime.topic`` are set and the two
        rows are selected back, so the SELECT policies of realtime.messages decide. A policy
        that raises counts as no permission. Raises DatabaseUnavailable."""

        async def check(conn: asyncpg.Connection) -> tuple[bool, bool]:
            rows = await conn.fetch(
                """insert into realtime.messages (topic, extension) values ($1, 'broadcast'), ($1, 'presence')
                   returning id, extension""",
                topic,
            )
            ids = {r["extension"]: r["id"] for r in rows}
            await self._as_role(conn, role, claims_json, topic)
            seen = await conn.fetch(
                """select extension from realtime.messages
                   where topic = $1 and ((extension = 'broadcast' and id = $2) or (extension = 'presence' and id = $3))""",
                topic,
                ids["broadcast"],
                ids["presence"],
            )
            got = {r["extension"] for r in seen}
            return "broadcast" in got, "presence" in got

        return await self._rolled_back(check, (False, False), role, topic)

    async def write_policy(
        self, role: str, claims_json: str, topic: str, extension: str = "broadcast"
    ) -> bool:
        """May this role with these claims send broadcasts (``extension`` broadcast) or
        track presence (``presence``) on ``topic``? An INSERT of such a row of the topic,
        as the role, in a transaction that is rolled back (Supabase's check): the INSERT
        policies of realtime.messages decide."""

        async def check(conn: asyncpg.Connection) -> bool:
            await self._as_role(conn, role, claims_json, topic)
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute(
                        "insert into realtime.messages (topic, extension) values ($1, $2)", topic, extension
                    )
            except asyncpg.InsufficientPrivilegeError:
                return False
            return True

        return await self._rolled_back(check, False, role, topic)

    @staticmethod
    async def _as_role(conn: asyncpg.Connection, role: str, claims_json: str, topic: str) -> None:
        await conn.execute(
            """select set_config('role', $1, true), set_config('realtime.topic', $2, true),
                      set_config('request.jwt.claims', $3, true), set_config('request.headers', '{}', true)""",
            role,
            topic,
            claims_json,
        )

    async def _rolled_back(self, check: Any, denied: Any, role: str, topic: str) -> Any:
        assert self._pool is not None
        try:
            async with self._pool.acquire(timeout=QUERY_TIMEOUT_S) as conn:
                tr = conn.transaction()
                await tr.start()
                try:
                    return await asyncio.wait_for(check(conn), QUERY_TIMEOUT_S)
                finally:
                    if not conn.is_closed():
                        await tr.rollback()
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from None
        except asyncpg.PostgresError as exc:
            # a policy that raises, an unknown role, no realtime.messages: no permission
            log.warning(
                "channel authorization for role %s on topic %r failed: %s %s",
                role,
                topic,
                getattr(exc, "sqlstate", ""),
                exc,
            )
            return denied

    async def prune_messages(self, keep_days: int) -> None:
        """Delete realtime.messages rows older than ``keep_days`` (Supabase drops old
        partitions); nothing if the table is absent."""
        try:
            rows = await self._fetch("select to_regclass('realtime.messages') is not null as ok")
            if rows and rows[0]["ok"]:
                await self._fetch(
                    "delete from realtime.messages where inserted_at < now() - make_interval(days => $1)",
                    keep_days,
                )
        except asyncpg.PostgresError as exc:
            log.warning("pruning realtime.messages failed: %s", exc)

    # --- slot ---------------------------------------------------------------------------
    async def create_slot(self, slot: str) -> None:
        """Fresh slot for this server. Inactive slots of ours are left-overs of a server
        that did not shut down cleanly (their WAL is of no use to anyone): drop them."""
        try:
            await self._fetch(
                """select pg_drop_replication_slot(slot_name) from pg_replication_slots
                   where slot_name like $1 and not active""",
                SLOT_PREFIX + "%",
            )
            await self._fetch(
                """select pg_terminate_backend(active_pid) from pg_replication_slots
                   where slot_name = $1 and active""",
                slot,
            )
            for _ in range(50):
                rows = await self._fetch("select active from pg_replication_slots where slot_name = $1", slot)
                if not rows:
                    break
                if not rows[0]["active"]:
                    await self._fetch("select pg_drop_replication_slot($1)", slot)
                    break
                await asyncio.sleep(0.1)
            await self._fetch("select pg_create_logical_replication_slot($1, 'wal2json')", slot)
        except asyncpg.PostgresError as exc:
            raise SlotError(f"could not create replication slot {slot}: {exc}") from None

    async def drop_slot(self, slot: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = await self._fetch(
                    "select active, active_pid from pg_replication_slots where slot_name = $1", slot
                )
                if not rows:
                    return
                if rows[0]["active"]:
                    await self._fetch("select pg_terminate_backend($1)", rows[0]["active_pid"])
                else:
                    await self._fetch("select pg_drop_replication_slot($1)", slot)
                    return
            except (asyncpg.PostgresError, DatabaseUnavailable) as exc:
                if time.monotonic() > deadline:
                    raise SlotError(f"could not drop replication slot {slot}: {exc}") from None
            if time.monotonic() > deadline:
                raise SlotError(f"replication slot {slot} stayed active")
            await asyncio.sleep(0.1)

    # --- visibility -----------------------------------------------------------------------
    async def _rls_conn(self) -> asyncpg.Connection:
        if self._rls is None or self._rls.is_closed():
            self._rls = await asyncpg.connect(
                self.dsn,
                timeout=QUERY_TIMEOUT_S,
                server_settings={
                    "application_name": "rackpilot-realtime-rls",
                    "statement_timeout": "5s",
                    "TimeZone": "UTC",
                },
            )
            self._vis_fns = {}
        return self._rls

    async def _vis_fn(
        self, conn: asyncpg.Connection, schema: str, table: str, pk: tuple[tuple[str, str], ...]
    ) -> str:
        """The temporary visibility function of one table (created on first use)."""
        key = (schema, table, pk)
        name = self._vis_fns.get(key)
        if name is None:
            name = f"rackpilot_rt_visible_{len(self._vis_fns) + 1}"
            cond = " and ".join(f"x.{qident(col)} = (u.k->>{i})::{fmt}" for i, (col, fmt) in enumerate(pk))
            await conn.execute(
                VISIBLE_FN.replace("{name}", name)
                .replace("{table}", f"{qident(schema)}.{qident(table)}")
                .replace("{cond}", cond)
            )
            self._vis_fns[key] = name
        return name

    async def _visible_call(
        self,
        info: TableInfo,
        schema: str,
        table: str,
        keys_json: str,
        groups: list[tuple[int, tuple[str, str, str]]],
    ) -> list[asyncpg.Record]:
        groups_json = orjson.dumps([{"g": n, "role": r, "claims": c} for n, (r, c, _sub) in groups]).decode()
        async with self._rls_lock:
            try:
                conn = await self._rls_conn()
                fn = await self._vis_fn(conn, schema, table, info.pk)
                return await conn.fetch(
                    f"select rt_g, rt_i from pg_temp.{fn}($1::json, $2::json)", keys_json, groups_json
                )
            except CONNECTION_ERRORS as exc:
                if self._rls is not None:
                    self._rls.terminate()
                    self._rls = None
                raise DatabaseUnavailable(f"database unavailable ({type(exc).__name__})") from None
            except asyncpg.PostgresError:
                self._vis_fns.pop((schema, table, info.pk), None)  # re-created next time (DDL, say)
                raise

    async def visible_rows(
        self, info: TableInfo, schema: str, table: str, groups: list[tuple[str, str, str]], keys: list[tuple]
    ) -> dict[int, set[int]]:
        """Which rows each subscriber group may SELECT now, in one round trip.

        ``groups`` are (role, claims JSON, sub); ``keys`` primary-key tuples as wal2json
        gave them; every group's role must hold SELECT on the table (the caller checks).
        Returns {group index: {key index}}. Raises DatabaseUnavailable if Postgres is away."""
        if not info.pk:
            return {}  # without a primary key a row cannot be re-read: RLS roles get nothing
        keys_json = orjson.dumps([[None if v is None else _text(v) for v in k] for k in keys]).decode()
        everyone = list(enumerate(groups))
        try:
            rows = await self._visible_call(info, schema, table, keys_json, everyone)
        except asyncpg.PostgresError:
            # one group's check failed (a policy that raises, say) and took the call with
            # it: ask group by group so the others still get their answer
            rows = []
            for item in everyone:
                try:
                    rows.extend(await self._visible_call(info, schema, table, keys_json, [item]))
                except asyncpg.PostgresError as exc:
                    log.warning(
                        "visibility check on %s.%s for role %s failed: %s",
                        schema,
                        table,
                        item[1][0],
                        getattr(exc, "sqlstate", ""),
                    )
        out: dict[int, set[int]] = {}
        for r in rows:
            out.setdefault(r["rt_g"], set()).add(r["rt_i"] - 1)
        return out


# One per published table, on Realtime's own connection only (a temporary function: it
# never touches the project's schemas). For each subscriber group it switches role and JWT
# claims as PostgREST does per request and re-reads the rows by primary key, so the
# table's RLS policies decide. The query is static, so its plan is cached and reused
# while the role stays the same (Postgres re-plans RLS queries when the role changes).
# Roles are checked for SELECT on the table beforehand; if a policy raises, the caller
# asks again group by group and the failing group sees nothing.
VISIBLE_FN = """
create or replace function pg_temp.{name}(keys json, groups json)
returns table (rt_g int, rt_i int) language plpgsql as $fn$
#variable_conflict use_column
declare
  grp record;
  hits int[];
begin
  for grp in select * from json_to_recordset(groups) as x(g int, role text, claims text) loop
    perform set_config('role', grp.role, true), set_config('request.jwt.claims', grp.claims, true);
    select array_agg(u.i::int4) into hits
      from json_array_elements(keys) with ordinality as u(k, i)
      where exists (select 1 from {table} x where {cond});
    perform set_config('role', 'none', true);
    if hits is not null then
      rt_g := grp.g;
      foreach rt_i in array hits loop
        return next;
      end loop;
    end if;
  end loop;
end
$fn$;
"""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)
