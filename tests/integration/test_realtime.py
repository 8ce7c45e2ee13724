"""Realtime (/realtime/v1/websocket) through the official async clients (realtime-py and
supabase-py's ``acreate_client``), plus raw websocket frames the clients never send
(garbage, unknown events, oversize frames, duplicate joins, a client that stops reading).

Test tables are created here in ``public`` as ``rt_test_*`` with RLS, added to the
``supabase_realtime`` publication and dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import jwt
import pytest
import websockets
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from supabase import acreate_client

EVENT_TIMEOUT_S = 10.0  # how long a test waits for an expected event (s)
SILENCE_S = 0.5  # how long "nothing arrives" is observed after a later event did arrive (s)

TEAM_A, TEAM_B = 1, 2

SCHEMA_SQL = """
create table public.rt_test_items (
  id bigserial primary key,
  team int not null,
  name text not null,
  qty int,
  price numeric,
  tags text[],
  meta jsonb,
  done boolean default false,
  created_at timestamptz not null default now()
);
create table public.rt_test_members (team int not null, user_id uuid not null, primary key (team, user_id));
create table public.rt_test_hidden (id bigserial primary key, name text);
alter table public.rt_test_items enable row level security;
create policy rt_test_items_team on public.rt_test_items for select to authenticated
  using (exists (select 1 from public.rt_test_members m where m.team = rt_test_items.team and m.user_id = auth.uid()));
revoke all on public.rt_test_items from anon;
grant select on public.rt_test_members to authenticated;
alter publication supabase_realtime add table public.rt_test_items;
"""
DROP_SQL = "drop table if exists public.rt_test_items, public.rt_test_members, public.rt_test_hidden cascade"


# --- helpers ---------------------------------------------------------------------------
def user_token(secret: str, user_id: str, ttl: int = 3600, role: str = "authenticated") -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "aud": "authenticated",
            "iss": "rackpilot-local",
            "sub": user_id,
            "role": role,
            "email": f"{user_id[:8]}@example.com",
            "phone": "",
            "app_metadata": {"provider": "email"},
            "user_metadata": {},
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
            "iat": now,
            "exp": now + ttl,
        },
        secret,
        algorithm="HS256",
    )


async def wait_until(pred: Callable[[], bool], timeout: float = EVENT_TIMEOUT_S, what: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met in {timeout}s; state: {what() if callable(what) else what}"
            )
        await asyncio.sleep(0.02)


class Db:
    """A superuser connection that reconnects (the restart test takes Postgres away)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None

    async def execute(self, sql: str, *args: Any, retry_for: float = 0.0) -> Any:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.dsn)
                return await self.conn.fetch(sql, *args)
            except (
                OSError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
            ):
                self.conn = None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


@pytest.fixture(scope="module")
async def db(db_url) -> AsyncIterator[Db]:
    d = Db(db_url)
    await d.execute(DROP_SQL)
    for stmt in SCHEMA_SQL.split(";\n"):
        if stmt.strip():
            await d.execute(stmt)
    yield d
    await d.execute(DROP_SQL)
    await d.close()


@pytest.fixture(scope="module")
def secret(stack) -> str:
    return stack.secrets.jwt_secret


@pytest.fixture
async def user_a(db) -> AsyncIterator[str]:
    uid = str(uuid.uuid4())
    await db.execute("insert into public.rt_test_members values ($1, $2)", TEAM_A, uuid.UUID(uid))
    yield uid
    await db.execute("delete from public.rt_test_members where user_id = $1", uuid.UUID(uid))


@pytest.fixture
async def clients(api_url) -> AsyncIterator[Callable[[str], AsyncRealtimeClient]]:
    made: list[AsyncRealtimeClient] = []

    def make(key: str) -> AsyncRealtimeClient:
        c = AsyncRealtimeClient(f"{api_url}/realtime/v1", token=key, auto_reconnect=False)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def subscribe(
    client: AsyncRealtimeClient, topic: str, bindings: list[dict], *, token: str | None = None
) -> tuple[Any, list[dict], list[tuple]]:
    """Join ``topic`` with postgres_changes ``bindings``; returns (channel, events, states)."""
    if token is not None:
        await client.set_auth(token)
    events: list[dict] = []
    states: list[tuple] = []
    ch = client.channel(topic)
    for b in bindings:
        ch.on_postgres_changes(
            b.get("event", "*"),
            callback=events.append,
            table=b.get("table"),
            schema=b.get("schema", "public"),
            filter=b.get("filter"),
        )
    await ch.subscribe(lambda st, err: states.append((st, err)))
    return ch, events, states


def rows(events: list[dict], kind: str | None = None) -> list[dict]:
    return [
        e["data"].get("record") or e["data"].get("old_record")
        for e in events
        if kind is None or e["data"]["type"] == kind
    ]


async def insert(db: Db, team: int, name: str, **cols: Any) -> int:
    cols = {"team": team, "name": name, **cols}
    names = ", ".join(cols)
    params = ", ".join(f"${i + 1}" for i in range(len(cols)))
    res = await db.execute(
        f"insert into public.rt_test_items ({names}) values ({params}) returning id", *cols.values()
    )
    return res[0]["id"]


# --- postgres_changes ------------------------------------------------------------------
async def test_insert_update_delete_payloads(db, clients, service_key):
    client = clients(service_key)
    sys_msgs: list = []
    ch = client.channel("rt-crud")
    events: list[dict] = []
    states: list = []
    ch.on_postgres_changes("*", callback=events.append, table="rt_test_items")
    ch.on_system(sys_msgs.append)
    await ch.subscribe(lambda st, err: states.append(st))
    assert states == [RealtimeSubscribeStates.SUBSCRIBED]
    await wait_until(lambda: sys_msgs)
    assert sys_msgs[0].extension == "postgres_changes" and sys_msgs[0].status == "ok"
    assert sys_msgs[0].channel == "rt-crud"

    row_id = await insert(
        db, TEAM_A, "first", qty=3, price=Decimal("12.5"), tags=["a", "b c"], meta='{"k": [1, 2]}'
    )
    await db.execute("update public.rt_test_items set name = 'renamed', done = true where id = $1", row_id)
    await db.execute("delete from public.rt_test_items where id = $1", row_id)
    await wait_until(lambda: len(events) >= 3)
    ins, upd, dele = (e["data"] for e in events[:3])

    assert [ins["type"], upd["type"], dele["type"]] == ["INSERT", "UPDATE", "DELETE"]
    for d in (ins, upd, dele):
        assert d["schema"] == "public" and d["table"] == "rt_test_items" and d["errors"] is None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["commit_timestamp"])
        assert {"name": "qty", "type": "int4"} in d["columns"]
        assert {"name": "created_at", "type": "timestamptz"} in d["columns"]
    rec = ins["record"]
    assert rec["id"] == row_id and rec["team"] == TEAM_A and rec["name"] == "first"
    assert rec["qty"] == 3 and rec["price"] == 12.5 and rec["done"] is False
    assert rec["tags"] == ["a", "b c"] and rec["meta"] == {"k": [1, 2]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", rec["created_at"])
    assert "old_record" not in ins
    assert upd["record"]["name"] == "renamed" and upd["record"]["done"] is True
    assert upd["old_record"] == {"id": row_id}  # default replica identity: the primary key
    assert dele["old_record"] == {"id": row_id} and "record" not in dele
    assert all(e["ids"] == [ch.postgres_changes_callbacks[0].id] for e in events[:3])


async def test_event_kinds_and_filters(db, clients, service_key):
    client = clients(service_key)
    _, inserts, _ = await subscribe(client, "rt-inserts", [{"event": "INSERT", "table": "rt_test_items"}])
    _, big, _ = await subscribe(
        client, "rt-big", [{"event": "*", "table": "rt_test_items", "filter": "qty=gte.100"}]
    )
    _, named, _ = await subscribe(
        client,
        "rt-named",
        [{"event": "INSERT", "table": "rt_test_items", "filter": 'name=in.(alpha,"be,ta")'}],
    )
    _, not_two, _ = await subscribe(
        client, "rt-neq", [{"event": "UPDATE", "table": "rt_test_items", "filter": f"team=neq.{TEAM_B}"}]
    )
    _, lt, _ = await subscribe(
        client, "rt-lt", [{"event": "INSERT", "table": "rt_test_items", "filter": "qty=lt.5"}]
    )

    small = await insert(db, TEAM_A, "alpha", qty=1)
    huge = await insert(db, TEAM_B, "be,ta", qty=500)
    mid = await insert(db, TEAM_A, "gamma", qty=100)
    await db.execute(
        "update public.rt_test_items set qty = qty + 1 where id = any($1::int8[])", [small, huge, mid]
    )
    await wait_until(lambda: len(inserts) >= 3 and len(big) >= 4 and len(not_two) >= 2)
    await asyncio.sleep(SILENCE_S)

    assert [r["id"] for r in rows(inserts)] == [small, huge, mid]
    assert all(e["data"]["type"] == "INSERT" for e in inserts)
    assert [(e["data"]["type"], e["data"]["record"]["id"]) for e in big] == [
        ("INSERT", huge),
        ("INSERT", mid),
        ("UPDATE", huge),
        ("UPDATE", mid),
    ]
    assert sorted(r["id"] for r in rows(named)) == [small, huge]
    assert sorted(r["id"] for r in rows(not_two)) == [small, mid]
    assert [r["id"] for r in rows(lt)] == [small]


async def test_invalid_bindings_are_refused(db, clients, service_key):
    client = clients(service_key)
    # a filter the local stack cannot parse: the join itself is refused
    _, _, states = await subscribe(
        client, f"rt-bad-{uuid.uuid4().hex[:6]}", [{"table": "rt_test_items", "filter": "qty=like.5"}]
    )
    assert states and states[0][0] == RealtimeSubscribeStates.CHANNEL_ERROR
    # what Supabase's subscription check refuses: an ok join, then a system error
    # (the client reports CHANNEL_ERROR) with Supabase's message
    for binding, message in (
        (
            {"table": "rt_test_items", "filter": "nosuchcol=eq.1"},
            "Unable to subscribe to changes with given parameters. An exception happened so please check your "
            "connect parameters: [event: *, schema: public, table: rt_test_items, filters: "
            '[{"nosuchcol", "eq", "1", false}], select: nil]. Exception: ERROR P0001 (raise_exception) '
            "invalid column for filter nosuchcol",
        ),
        (
            {"table": "rt_test_no_such_table", "event": "INSERT"},
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given "
            "connect parameters: [event: INSERT, schema: public, table: rt_test_no_such_table, filters: [], "
            "select: nil]",
        ),
    ):
        _, _, states = await subscribe(client, f"rt-bad-{uuid.uuid4().hex[:6]}", [binding])
        await wait_until(lambda s=states: len(s) >= 2, what=lambda s=states: s)
        assert states[0][0] == RealtimeSubscribeStates.SUBSCRIBED, binding
        assert states[1][0] == RealtimeSubscribeStates.CHANNEL_ERROR
        assert json.loads(str(states[1][1]))["message"] == message
    for ch in list(client.channels.values()):
        await ch.unsubscribe()


async def test_rls_hides_rows_service_role_sees_all(db, clients, service_key, anon_key, secret, user_a):
    service = clients(service_key)
    user = clients(anon_key)
    _, all_events, _ = await subscribe(service, "rt-rls", [{"table": "rt_test_items"}])
    _, mine, states = await subscribe(
        user, "rt-rls", [{"table": "rt_test_items"}], token=user_token(secret, user_a)
    )
    assert states[0][0] == RealtimeSubscribeStates.SUBSCRIBED

    hidden = await insert(db, TEAM_B, "other team")
    visible = await insert(db, TEAM_A, "my team")
    await db.execute("update public.rt_test_items set qty = 7 where id = any($1::int8[])", [hidden, visible])
    await wait_until(lambda: len(all_events) >= 4 and len(mine) >= 2)
    await asyncio.sleep(SILENCE_S)
    assert [(e["data"]["type"], e["data"]["record"]["id"]) for e in all_events] == [
        ("INSERT", hidden),
        ("INSERT", visible),
        ("UPDATE", hidden),
        ("UPDATE", visible),
    ]
    assert [(e["data"]["type"], e["data"]["record"]["id"]) for e in mine] == [
        ("INSERT", visible),
        ("UPDATE", visible),
    ]

    # anon has no SELECT on the table: the join itself is refused
    anon = clients(anon_key)
    _, _, anon_states = await subscribe(anon, "rt-rls-anon", [{"table": "rt_test_items"}])
    assert anon_states[0][0] == RealtimeSubscribeStates.CHANNEL_ERROR
    await anon.close()


async def test_policy_error_for_one_subscriber_spares_the_others(db, clients, anon_key, secret):
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute("create table public.rt_test_fragile (id bigserial primary key, note text)")
    try:
        await db.execute("alter table public.rt_test_fragile enable row level security")
        # the policy divides by zero for one user: that user's check fails, nobody else's
        await db.execute(
            f"create policy fragile on public.rt_test_fragile for select to authenticated "
            f"using (1 / (case when auth.uid() = '{bad}' then 0 else 1 end) = 1)"
        )
        await db.execute("alter publication supabase_realtime add table public.rt_test_fragile")
        _, good_events, _ = await subscribe(
            clients(anon_key), "rt-fragile", [{"table": "rt_test_fragile"}], token=user_token(secret, good)
        )
        _, bad_events, _ = await subscribe(
            clients(anon_key), "rt-fragile", [{"table": "rt_test_fragile"}], token=user_token(secret, bad)
        )
        res = await db.execute("insert into public.rt_test_fragile (note) values ('x') returning id")
        await wait_until(lambda: good_events)
        await asyncio.sleep(SILENCE_S)
        assert [r["id"] for r in rows(good_events)] == [res[0]["id"]] and bad_events == []
    finally:
        await db.execute("drop table public.rt_test_fragile")


async def test_table_outside_publication_is_reported(db, clients, service_key):
    """As Supabase: the join is ok, then a system error names the binding, and the
    channel's postgres_changes fail as a whole (its published table too)."""
    client = clients(service_key)
    ch = client.channel("rt-hidden")
    events: list[dict] = []
    system: list = []
    states: list = []
    ch.on_postgres_changes("*", callback=events.append, table="rt_test_hidden", schema="public")
    ch.on_postgres_changes("*", callback=events.append, table="rt_test_items", schema="public")
    ch.on_system(system.append)
    await ch.subscribe(lambda st, err: states.append((st, err)))
    await wait_until(lambda: len(states) >= 2, what=lambda: states)
    assert [st for st, _ in states[:2]] == [
        RealtimeSubscribeStates.SUBSCRIBED,
        RealtimeSubscribeStates.CHANNEL_ERROR,
    ]
    err = json.loads(str(states[1][1]))
    assert err == {
        "channel": "rt-hidden",
        "extension": "postgres_changes",
        "status": "error",
        "message": "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the "
        "given connect parameters: [event: *, schema: public, table: rt_test_hidden, filters: [], "
        "select: nil]",
    }
    assert system == []  # no "Subscribed to PostgreSQL"
    _, witness, _ = await subscribe(clients(service_key), "rt-hidden-witness", [{"table": "rt_test_items"}])
    await db.execute("insert into public.rt_test_hidden (name) values ('x')")
    marker = await insert(db, TEAM_A, "marker")
    await wait_until(lambda: witness)
    await asyncio.sleep(SILENCE_S)
    assert [e["data"]["record"]["id"] for e in witness] == [marker] and events == []

    # a wildcard binding on a schema with no published table is reported the same way
    await db.execute("create schema if not exists rt_test_empty")
    try:
        _, _, states = await subscribe(
            clients(service_key),
            "rt-hidden-schema",
            [{"table": "*", "schema": "rt_test_empty", "event": "UPDATE"}],
        )
        await wait_until(lambda: len(states) >= 2, what=lambda: states)
        assert json.loads(str(states[1][1]))["message"].endswith(
            "[event: UPDATE, schema: rt_test_empty, table: *, filters: [], select: nil]"
        )
    finally:
        await db.execute("drop schema rt_test_empty")


async def test_token_refresh_and_losing_access(db, clients, anon_key, secret, user_a):
    client = clients(anon_key)
    ch, events, states = await subscribe(
        client,
        "rt-refresh",
        [{"table": "rt_test_items", "event": "INSERT"}],
        token=user_token(secret, user_a, ttl=600),
    )
    assert states[0][0] == RealtimeSubscribeStates.SUBSCRIBED
    await client.set_auth(user_token(secret, user_a, ttl=3600))  # a refreshed session
    first = await insert(db, TEAM_A, "after refresh")
    await wait_until(lambda: len(events) == 1)
    assert events[0]["data"]["record"]["id"] == first

    # the user leaves the team: RLS stops delivering that team's rows
    await db.execute("delete from public.rt_test_members where user_id = $1", uuid.UUID(user_a))
    await client.set_auth(user_token(secret, user_a, ttl=3600))
    await insert(db, TEAM_A, "after leaving")
    # a token without the role that may read the table revokes the subscription
    closed: list = []
    ch.subscribe_callback = lambda st, err: closed.append((st, err))
    await client.set_auth(anon_key)
    await wait_until(lambda: any(st == RealtimeSubscribeStates.CLOSED for st, _ in closed))
    assert any(st == RealtimeSubscribeStates.CHANNEL_ERROR for st, _ in closed)  # the system error
    await insert(db, TEAM_A, "after revoke")
    await asyncio.sleep(SILENCE_S * 2)
    assert [r["id"] for r in rows(events)] == [first]


async def test_forged_and_expired_tokens_never_subscribe(api_url, clients, anon_key, secret, user_a):
    forged = user_token("not-the-secret-" * 3, user_a)
    expired = user_token(secret, user_a, ttl=-10)
    client = clients(anon_key)
    for i, token in enumerate((forged, expired)):
        _, _, states = await subscribe(client, f"rt-badtoken-{i}", [{"table": "rt_test_items"}], token=token)
        assert states[0][0] == RealtimeSubscribeStates.CHANNEL_ERROR
    # a forged apikey in the URL is refused at the handshake
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        async with websockets.connect(f"{ws_url(api_url)}?apikey={forged}&vsn=1.0.0"):
            pass
    assert info.value.response.status_code == 403


async def test_expired_channel_token_closes_channel(clients, anon_key, secret, user_a):
    client = clients(anon_key)
    _, _, states = await subscribe(
        client, "rt-expiring", [{"table": "rt_test_items"}], token=user_token(secret, user_a, ttl=2)
    )
    assert states[0][0] == RealtimeSubscribeStates.SUBSCRIBED
    await wait_until(lambda: any(st == RealtimeSubscribeStates.CLOSED for st, _ in states), timeout=8)


async def test_supabase_client_channel(api_url, service_key, db):
    """The same through supabase-py's async client, as application code uses it."""
    sb = await acreate_client(api_url, service_key)
    got: list[dict] = []
    ch = sb.channel("rt-supabase-py").on_postgres_changes(
        "INSERT", callback=got.append, table="rt_test_items", filter="name=eq.via-supabase-py"
    )
    states: list = []
    await ch.subscribe(lambda st, err: states.append(st))
    assert states == [RealtimeSubscribeStates.SUBSCRIBED]
    await insert(db, TEAM_A, "not this one")
    row = await insert(db, TEAM_A, "via-supabase-py")
    await wait_until(lambda: got)
    assert [g["data"]["record"]["id"] for g in got] == [row]
    await sb.remove_all_channels()


async def test_subscription_survives_postgres_restart(stack, db, clients, service_key):
    client = clients(service_key)
    _, events, _ = await subscribe(client, "rt-restart", [{"table": "rt_test_items", "event": "INSERT"}])
    before = await insert(db, TEAM_A, "before restart")
    await wait_until(lambda: len(events) == 1)
    await asyncio.to_thread(stack.pg.restart)
    res = await db.execute(
        "insert into public.rt_test_items (team, name) values ($1, 'after restart') returning id",
        TEAM_A,
        retry_for=30,
    )
    await wait_until(lambda: len(events) >= 2, timeout=30, what=lambda: events)
    assert [r["id"] for r in rows(events)] == [before, res[0]["id"]], [
        (e["ids"], e["data"]["commit_timestamp"], e["data"]["record"]) for e in events
    ]


async def test_select_limits_columns(db, clients, service_key):
    client = clients(service_key)
    got: list[dict] = []
    ch = client.channel("rt-select")
    ch.on_postgres_changes("INSERT", callback=got.append, table="rt_test_items", select=["id", "name"])
    states: list = []
    await ch.subscribe(lambda st, err: states.append(st))
    assert states == [RealtimeSubscribeStates.SUBSCRIBED]
    row = await insert(db, TEAM_A, "narrow", qty=1)
    await wait_until(lambda: got)
    assert got[0]["data"]["record"] == {"id": row, "name": "narrow"}
    assert [c["name"] for c in got[0]["data"]["columns"]] == ["id", "name"]


# realtime-py reads the close code through a websockets API deprecated since 13.1
@pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets")
async def test_client_reconnects_and_rejoins(db, api_url, service_key):
    client = AsyncRealtimeClient(
        f"{api_url}/realtime/v1", token=service_key, auto_reconnect=True, initial_backoff=0.1
    )
    try:
        _, events, _ = await subscribe(
            client, "rt-reconnect", [{"table": "rt_test_items", "event": "INSERT"}]
        )
        first = client._ws_connection
        first.transport.abort()  # the network drops the connection
        await wait_until(
            lambda: (
                client._ws_connection is not None
                and client._ws_connection is not first
                and client.channels["realtime:rt-reconnect"].is_joined
            )
        )
        row = await insert(db, TEAM_A, "after reconnect")
        await wait_until(lambda: events)
        assert [r["id"] for r in rows(events)] == [row]
    finally:
        await client.close()


async def test_slot_belongs_to_the_gateway(stack, db):
    slot = f"rackpilot_realtime_{stack.cfg.api_port}"
    res = await db.execute("select active, plugin from pg_replication_slots where slot_name = $1", slot)
    assert [(r["active"], r["plugin"]) for r in res] == [(True, "wal2json")]
    # a clean stop (what `rackpilot dev down` does) drops it: no WAL is kept for nobody
    await asyncio.to_thread(stack.stop_gateway)
    try:
        assert (
            await db.execute("select 1 from pg_replication_slots where slot_name like 'rackpilot_realtime_%'")
            == []
        )
    finally:
        await asyncio.to_thread(stack.start_gateway)
    res = await db.execute("select active from pg_replication_slots where slot_name = $1", slot)
    assert [r["active"] for r in res] == [True]


# --- broadcast -------------------------------------------------------------------------
async def test_broadcast_round_trip_self_and_ack(clients, anon_key):
    sender, receiver, quiet = clients(anon_key), clients(anon_key), clients(anon_key)
    got_sender: list = []
    got_receiver: list = []
    got_quiet: list = []
    s = sender.channel(
        "rt-room",
        {
            "config": {
                "broadcast": {"self": True, "ack": True},
                "presence": {"key": "", "enabled": False},
                "private": False,
            }
        },
    )
    s.on_broadcast("move", got_sender.append)
    await s.subscribe()
    r = receiver.channel("rt-room")
    r.on_broadcast("*", got_receiver.append)
    await r.subscribe()
    q = quiet.channel("rt-room")  # self false: its own sends do not come back
    q.on_broadcast("*", got_quiet.append)
    await q.subscribe()

    push = await s.push("broadcast", {"type": "broadcast", "event": "move", "payload": {"x": 1}})
    acks: list = []
    push.receive("ok", lambda resp: acks.append(resp))
    await wait_until(lambda: got_receiver and got_sender and got_quiet and acks)
    assert got_receiver[0]["event"] == "move" and got_receiver[0]["payload"] == {"x": 1}
    assert got_sender[0]["payload"] == {"x": 1}

    await q.send_broadcast("ping", {"n": 2})
    await wait_until(lambda: any(m["event"] == "ping" for m in got_receiver))
    await asyncio.sleep(SILENCE_S)
    assert [m["event"] for m in got_quiet] == ["move"]  # self is false: not its own "ping"
    assert [m["event"] for m in got_sender] == ["move"]  # listens to "move" only


# --- robustness (raw frames) ------------------------------------------------------------
def ws_url(api_url: str) -> str:
    return api_url.replace("http://", "ws://") + "/realtime/v1/websocket"


async def recv_json(ws, timeout: float = EVENT_TIMEOUT_S) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred: Callable[[dict], bool], timeout: float = EVENT_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if pred(msg):
            return msg


def frame(topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None = None) -> str:
    return json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref})


async def test_garbage_unknown_and_oversize_frames(api_url, service_key, clients, db):
    watcher = clients(service_key)
    _, events, _ = await subscribe(watcher, "rt-bystander", [{"table": "rt_test_items", "event": "INSERT"}])
    url = f"{ws_url(api_url)}?apikey={service_key}&vsn=1.0.0"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("this is not json")
        msg = await recv_json(ws)
        assert msg["event"] == "phx_reply" and msg["payload"]["status"] == "error"
        assert "JSON" in msg["payload"]["response"]["reason"]
        await ws.send("[1, 2]")
        assert (await recv_json(ws))["payload"]["status"] == "error"
        await ws.send(b"\x09\x00garbage")
        assert (await recv_json(ws))["payload"]["status"] == "error"
        await ws.send(frame("realtime:nowhere", "broadcast", {}, "5"))
        msg = await recv_json(ws)
        assert msg["ref"] == "5" and msg["payload"] == {
            "status": "error",
            "response": {"reason": "unmatched topic"},
        }
        await ws.send(frame("realtime:raw", "phx_join", {"config": {}}, "6", "6"))
        assert (await recv_json(ws))["payload"]["status"] == "ok"
        # a config without presence has presence enabled (Supabase's rule): the state follows
        assert await recv_json(ws) == {
            "event": "presence_state",
            "payload": {},
            "ref": None,
            "topic": "realtime:raw",
            "join_ref": None,
        }
        await ws.send(frame("realtime:raw", "no_such_event", {}, "7", "6"))
        msg = await recv_json(ws)
        assert msg["ref"] == "7" and msg["payload"]["status"] == "error"
        assert "no_such_event" in msg["payload"]["response"]["reason"]
        await ws.send(
            frame(
                "realtime:raw",
                "broadcast",
                {"type": "broadcast", "event": "e", "payload": {"blob": "x" * 400_000}},
                "8",
                "6",
            )
        )
        msg = await recv_json(ws)
        assert msg["ref"] == "8" and "bytes" in msg["payload"]["response"]["reason"]
        await ws.send(frame("phoenix", "heartbeat", {}, "9"))
        assert await recv_json(ws) == {
            "event": "phx_reply",
            "topic": "phoenix",
            "ref": "9",
            "join_ref": None,
            "payload": {"status": "ok", "response": {}},
        }
    # beyond the gateway's 1 MiB limit the connection is closed: only that one
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("x" * (2 << 20))
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT_S)
    row = await insert(db, TEAM_A, "still flowing")
    await wait_until(lambda: rows(events) and rows(events)[-1]["id"] == row)


async def test_duplicate_join_replaces_the_channel(api_url, service_key, db):
    url = f"{ws_url(api_url)}?apikey={service_key}&vsn=1.0.0"
    join = {
        "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_test_items"}]}
    }
    async with websockets.connect(url) as ws:
        await ws.send(frame("realtime:dup", "phx_join", join, "1", "1"))
        first = await recv_until(ws, lambda m: m["event"] == "phx_reply")
        await ws.send(frame("realtime:dup", "phx_join", join, "2", "2"))
        second = await recv_until(ws, lambda m: m["event"] == "phx_reply" and m["ref"] == "2")
        assert first["payload"]["status"] == second["payload"]["status"] == "ok"
        new_id = second["payload"]["response"]["postgres_changes"][0]["id"]
        assert new_id != first["payload"]["response"]["postgres_changes"][0]["id"] and new_id > 0
        row = await insert(db, TEAM_A, "dup")
        change = await recv_until(ws, lambda m: m["event"] == "postgres_changes")
        assert change["payload"]["ids"] == [new_id] and change["payload"]["data"]["record"]["id"] == row
        assert change["ref"] is None
        await ws.send(frame("phoenix", "heartbeat", {}, "3"))
        # the next frame is the heartbeat reply: no second copy of the change was queued
        assert (await recv_json(ws))["ref"] == "3"


async def test_vsn2_array_frames(api_url, service_key, db):
    """supabase-js' default protocol: [join_ref, ref, topic, event, payload] arrays."""
    url = f"{ws_url(api_url)}?apikey={service_key}&vsn=2.0.0"
    join = {
        "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_test_items"}]}
    }
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(["1", "1", "realtime:v2", "phx_join", join]))
        reply = json.loads(await ws.recv())
        assert reply[:4] == ["1", "1", "realtime:v2", "phx_reply"] and reply[4]["status"] == "ok"
        row = await insert(db, TEAM_A, "v2")
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT_S))
            if msg[3] == "postgres_changes":
                break
        assert msg[0] is None and msg[1] is None and msg[4]["data"]["record"]["id"] == row


async def test_slow_consumer_is_dropped_without_blocking_others(api_url, service_key, clients, db):
    watcher = clients(service_key)
    _, events, _ = await subscribe(
        watcher, "rt-fast", [{"table": "rt_test_items", "event": "INSERT", "filter": "name=eq.after-flood"}]
    )
    url = f"{ws_url(api_url)}?apikey={service_key}&vsn=1.0.0"
    join = {
        "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "rt_test_items"}]}
    }
    # the client library's receive buffer is tiny and it never reads: TCP backs up
    async with websockets.connect(url, max_queue=1) as slow:
        await slow.send(frame("realtime:slow", "phx_join", join, "1", "1"))
        assert (await recv_until(slow, lambda m: m["event"] == "phx_reply"))["payload"]["status"] == "ok"
        await db.execute(
            "insert into public.rt_test_items (team, name, meta) "
            "select 1, 'flood', jsonb_build_object('pad', repeat('x', 8000)) from generate_series(1, 8000)"
        )
        row = await insert(db, TEAM_A, "after-flood")
        await wait_until(lambda: rows(events) and rows(events)[-1]["id"] == row, timeout=60)
        # the slow client was told why and disconnected
        seen_error = False
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            while True:
                msg = json.loads(await asyncio.wait_for(slow.recv(), EVENT_TIMEOUT_S))
                if msg["event"] == "system" and msg["payload"]["status"] == "error":
                    seen_error = True
        assert seen_error
    await db.execute("delete from public.rt_test_items where name = 'flood'")
