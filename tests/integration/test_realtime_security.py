"""Realtime's security rules, as Supabase Realtime applies them, through the official
client (realtime-py), with raw websocket frames only to pin the exact error reply.

- A DELETE on a table with RLS carries only the primary key in ``old_record``, to every
  subscriber (the row is gone: no policy can say who may see the rest of it), even with
  replica identity full; a table without RLS keeps the whole old row.
- A private channel (``private: true``) is joined only if the RLS policies on
  ``realtime.messages`` let the joining role and claims read its topic; sending needs
  INSERT; a new token that loses read permission closes the channel.
- ``realtime.send`` (a row in realtime.messages) reaches the topic's subscribers: private
  messages the private channels that may read, public ones the public channels.

Test tables are ``public.rt_sec_*``; the realtime.messages policies are ``rt_sec_*``; both
are dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from tests.integration.test_realtime import Db, user_token, wait_until

SILENCE_S = 0.5  # how long "nothing more arrives" is observed after a later event did arrive (s)
TEAM_A, TEAM_B = 1, 2

SCHEMA_SQL = [
    # postgres_changes: an RLS table with replica identity full, and one without RLS
    """create table public.rt_sec_items (id bigserial primary key, team int not null, secret text not null,
                                         note text)""",
    "alter table public.rt_sec_items replica identity full",
    "alter table public.rt_sec_items enable row level security",
    "create table public.rt_sec_members (team int not null, user_id uuid not null, primary key (team, user_id))",
    "grant select on public.rt_sec_members to authenticated",
    """create policy rt_sec_items_team on public.rt_sec_items for select to authenticated using (
         exists (select 1 from public.rt_sec_members m where m.team = rt_sec_items.team and m.user_id = auth.uid()))""",
    "revoke all on public.rt_sec_items from anon",
    "create table public.rt_sec_open (id bigserial primary key, note text not null)",
    "alter table public.rt_sec_open replica identity full",
    "alter publication supabase_realtime add table public.rt_sec_items, public.rt_sec_open",
    # private channels: who may read (and send on) which topic
    """create table public.rt_sec_rooms (topic text not null, user_id uuid not null,
                                         can_send boolean not null default false, primary key (topic, user_id))""",
    "grant select on public.rt_sec_rooms to authenticated",
    """create policy rt_sec_read on realtime.messages for select to authenticated using (
         extension = 'broadcast'
         and exists (select 1 from public.rt_sec_rooms r where r.topic = realtime.topic() and r.user_id = auth.uid()))""",
    """create policy rt_sec_send on realtime.messages for insert to authenticated with check (
         extension = 'broadcast'
         and exists (select 1 from public.rt_sec_rooms r
                     where r.topic = realtime.topic() and r.user_id = auth.uid() and r.can_send))""",
]
DROP_SQL = [
    "drop policy if exists rt_sec_read on realtime.messages",
    "drop policy if exists rt_sec_send on realtime.messages",
    "drop table if exists public.rt_sec_items, public.rt_sec_members, public.rt_sec_open, public.rt_sec_rooms cascade",
]
PUBLIC = {
    "broadcast": {"ack": False, "self": False},
    "presence": {"key": "", "enabled": False},
    "private": False,
}


def unauthorized(topic: str) -> str:
    return f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"


@pytest.fixture(scope="module")
async def db(db_url) -> AsyncIterator[Db]:
    d = Db(db_url)
    for stmt in DROP_SQL + SCHEMA_SQL:
        await d.execute(stmt)
    yield d
    for stmt in DROP_SQL:
        await d.execute(stmt)
    await d.close()


@pytest.fixture(scope="module")
def secret(stack) -> str:
    return stack.secrets.jwt_secret


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


async def member(db: Db, team: int) -> str:
    uid = str(uuid.uuid4())
    await db.execute("insert into public.rt_sec_members values ($1, $2)", team, uuid.UUID(uid))
    return uid


async def room_member(db: Db, topic: str, *, can_send: bool = False) -> str:
    uid = str(uuid.uuid4())
    await db.execute("insert into public.rt_sec_rooms values ($1, $2, $3)", topic, uuid.UUID(uid), can_send)
    return uid


async def changes(
    client: AsyncRealtimeClient, topic: str, table: str, *, token: str | None = None, flt: str | None = None
) -> list[dict]:
    if token is not None:
        await client.set_auth(token)
    events: list[dict] = []
    states: list = []
    ch = client.channel(topic)
    ch.on_postgres_changes("*", callback=events.append, table=table, filter=flt)
    await ch.subscribe(lambda st, err: states.append(st))
    assert states == [RealtimeSubscribeStates.SUBSCRIBED], states
    return events


async def room(
    client: AsyncRealtimeClient,
    topic: str,
    *,
    private: bool = True,
    token: str | None = None,
    ack: bool = False,
) -> tuple[Any, list[dict], list[tuple]]:
    """Join a broadcast channel; returns (channel, broadcasts received, subscribe states)."""
    if token is not None:
        await client.set_auth(token)
    got: list[dict] = []
    states: list[tuple] = []
    ch = client.channel(
        topic, {"config": {**PUBLIC, "broadcast": {"ack": ack, "self": False}, "private": private}}
    )
    ch.on_broadcast("*", got.append)
    await ch.subscribe(lambda st, err: states.append((st, err)))
    return ch, got, states


def by_type(events: list[dict], kind: str) -> list[dict]:
    return [e["data"] for e in events if e["data"]["type"] == kind]


# --- DELETE payloads ---------------------------------------------------------------------
async def test_delete_on_rls_table_carries_only_the_primary_key(db, clients, anon_key, service_key, secret):
    insider, outsider = await member(db, TEAM_A), await member(db, TEAM_B)
    seen_by_insider = await changes(
        clients(anon_key), "rt-sec-del", "rt_sec_items", token=user_token(secret, insider)
    )
    seen_by_outsider = await changes(
        clients(anon_key), "rt-sec-del", "rt_sec_items", token=user_token(secret, outsider)
    )
    service = clients(service_key)
    seen_by_service = await changes(service, "rt-sec-del", "rt_sec_items")
    team_a_only = await changes(service, "rt-sec-del-a", "rt_sec_items", flt=f"team=eq.{TEAM_A}")
    team_b_only = await changes(service, "rt-sec-del-b", "rt_sec_items", flt=f"team=eq.{TEAM_B}")

    res = await db.execute(
        "insert into public.rt_sec_items (team, secret, note) values ($1, 'launch code', 'x') returning id",
        TEAM_A,
    )
    row = res[0]["id"]
    await db.execute("update public.rt_sec_items set note = 'y' where id = $1", row)
    # RLS is checked on the live row: let the insider's UPDATE through before the row goes
    await wait_until(lambda: by_type(seen_by_insider, "UPDATE"), what=lambda: seen_by_insider)
    await db.execute("delete from public.rt_sec_items where id = $1", row)
    for events in (seen_by_insider, seen_by_outsider, seen_by_service, team_a_only):
        await wait_until(lambda events=events: by_type(events, "DELETE"), what=lambda events=events: events)

    for events in (seen_by_insider, seen_by_outsider, seen_by_service, team_a_only):
        (delete,) = by_type(events, "DELETE")
        # the row is gone: everyone, whatever they could see, gets its key and no more
        assert delete["old_record"] == {"id": row}, delete
        assert "record" not in delete and "launch code" not in json.dumps(delete)
        assert {"name": "secret", "type": "text"} in delete["columns"]
    # the outsider never saw the row's INSERT or UPDATE; the insider did, with the old row
    assert [e["data"]["type"] for e in seen_by_outsider] == ["DELETE"]
    (update,) = by_type(seen_by_insider, "UPDATE")
    assert update["old_record"] == {"id": row, "team": TEAM_A, "secret": "launch code", "note": "x"}
    # filters still see the whole old row: team B's subscription gets no DELETE of team A's row
    marker = await db.execute(
        "insert into public.rt_sec_items (team, secret) values ($1, 'm') returning id", TEAM_B
    )
    await wait_until(lambda: team_b_only)
    await asyncio.sleep(SILENCE_S)
    assert [(e["data"]["type"], e["data"]["record"]["id"]) for e in team_b_only] == [
        ("INSERT", marker[0]["id"])
    ]

    # a table without RLS keeps the old row its replica identity gives, as on Supabase
    events = await changes(
        clients(anon_key), "rt-sec-open", "rt_sec_open", token=user_token(secret, str(uuid.uuid4()))
    )
    res = await db.execute("insert into public.rt_sec_open (note) values ('plain') returning id")
    await db.execute("delete from public.rt_sec_open where id = $1", res[0]["id"])
    await wait_until(lambda: by_type(events, "DELETE"))
    assert by_type(events, "DELETE")[0]["old_record"] == {"id": res[0]["id"], "note": "plain"}


# --- column privileges -----------------------------------------------------------------------
async def test_changes_carry_only_the_columns_the_role_may_select(db, clients, anon_key, service_key, secret):
    """As Supabase's apply_rls: a role with SELECT on some columns only subscribes, and its
    changes list and carry only those columns; the service role sees every column."""
    await db.execute("drop table if exists public.rt_sec_cols")
    await db.execute(
        "create table public.rt_sec_cols (id bigserial primary key, note text, secret text, pin int)"
    )
    try:
        for stmt in (
            "alter table public.rt_sec_cols replica identity full",
            "alter table public.rt_sec_cols enable row level security",
            "create policy rt_sec_cols_all on public.rt_sec_cols for select to authenticated using (true)",
            "revoke all on public.rt_sec_cols from anon, authenticated",
            "grant select (id, note) on public.rt_sec_cols to authenticated",
            "alter publication supabase_realtime add table public.rt_sec_cols",
        ):
            await db.execute(stmt)
        user = await changes(
            clients(anon_key), "rt-sec-cols", "rt_sec_cols", token=user_token(secret, str(uuid.uuid4()))
        )
        service = await changes(clients(service_key), "rt-sec-cols", "rt_sec_cols")
        res = await db.execute(
            "insert into public.rt_sec_cols (note, secret, pin) values ('n', 's', 1234) returning id"
        )
        row = res[0]["id"]
        await wait_until(lambda: user)  # RLS reads the live row: one change at a time
        await db.execute("update public.rt_sec_cols set note = 'm', pin = 4321 where id = $1", row)
        await wait_until(lambda: len(user) >= 2)
        await db.execute("delete from public.rt_sec_cols where id = $1", row)
        await wait_until(lambda: len(user) >= 3 and len(service) >= 3, what=lambda: (user, service))

        ins, upd, dele = (e["data"] for e in user)
        assert [c["name"] for c in ins["columns"]] == ["id", "note"]
        assert ins["record"] == {"id": row, "note": "n"}
        assert upd["record"] == {"id": row, "note": "m"} and upd["old_record"] == {"id": row, "note": "n"}
        assert dele["old_record"] == {"id": row} and [c["name"] for c in dele["columns"]] == ["id", "note"]
        assert "1234" not in json.dumps([e["data"] for e in user]) and '"s"' not in json.dumps(ins)
        s_ins, s_upd, _ = (e["data"] for e in service)
        assert s_ins["record"] == {"id": row, "note": "n", "secret": "s", "pin": 1234}
        assert s_upd["old_record"]["pin"] == 1234
    finally:
        await db.execute("drop table if exists public.rt_sec_cols")


# --- private channels ----------------------------------------------------------------------
async def test_private_channel_refuses_anon_and_outsiders(
    db, clients, api_url, anon_key, service_key, secret
):
    topic = "rt-sec-room"
    reader = await room_member(db, topic)
    for who, token in (("anon", None), ("outsider", user_token(secret, str(uuid.uuid4())))):
        ch, _, states = await room(clients(anon_key), topic, token=token)
        await wait_until(lambda states=states: states)
        assert states[0][0] == RealtimeSubscribeStates.CHANNEL_ERROR, (who, states)
        assert unauthorized(topic) in str(states[0][1]), (who, states)
        await ch.unsubscribe()
    _, _, ok = await room(clients(anon_key), topic, token=user_token(secret, reader))
    assert ok == [(RealtimeSubscribeStates.SUBSCRIBED, None)]
    _, _, ok = await room(clients(service_key), topic)  # service_role bypasses RLS
    assert ok == [(RealtimeSubscribeStates.SUBSCRIBED, None)]
    # the same topic as a public channel stays open to anyone
    _, _, ok = await room(clients(anon_key), topic, private=False)
    assert ok == [(RealtimeSubscribeStates.SUBSCRIBED, None)]

    # the exact reply Supabase Realtime gives
    url = api_url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={anon_key}&vsn=1.0.0"
    async with websockets.connect(url) as ws:
        await ws.send(
            json.dumps(
                {
                    "topic": f"realtime:{topic}",
                    "event": "phx_join",
                    "ref": "1",
                    "join_ref": "1",
                    "payload": {"config": {**PUBLIC, "private": True}, "access_token": anon_key},
                }
            )
        )
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply == {
        "event": "phx_reply",
        "topic": f"realtime:{topic}",
        "ref": "1",
        "join_ref": "1",
        "payload": {"status": "error", "response": {"reason": unauthorized(topic)}},
    }


async def test_private_broadcast_needs_insert_and_reaches_only_readers(
    db, clients, anon_key, service_key, secret
):
    topic = "rt-sec-chat"
    sender_id, reader_id, mute_id = (
        await room_member(db, topic, can_send=True),
        await room_member(db, topic),
        await room_member(db, topic),
    )
    sender, _, s1 = await room(clients(anon_key), topic, token=user_token(secret, sender_id))
    _, heard, s2 = await room(clients(anon_key), topic, token=user_token(secret, reader_id))
    mute, _, s3 = await room(clients(anon_key), topic, token=user_token(secret, mute_id), ack=True)
    _, service_heard, s4 = await room(clients(service_key), topic)
    public, public_heard, s5 = await room(clients(anon_key), topic, private=False)
    assert all(s == [(RealtimeSubscribeStates.SUBSCRIBED, None)] for s in (s1, s2, s3, s4, s5))

    # a member whose policies refuse INSERT: dropped without a reply, as Supabase does
    acks: list = []
    push = await mute.push("broadcast", {"type": "broadcast", "event": "muted", "payload": {"n": 0}})
    push.receive("ok", acks.append)
    await public.send_broadcast("public", {"n": 1})  # a public channel of the same name: another room
    await sender.send_broadcast("said", {"n": 2})
    await wait_until(lambda: heard and service_heard)
    await asyncio.sleep(SILENCE_S)
    assert [(m["event"], m["payload"]) for m in heard] == [("said", {"n": 2})]
    assert [m["event"] for m in service_heard] == ["said"]
    assert public_heard == [] and acks == []


async def test_new_token_without_read_permission_closes_private_channel(db, clients, anon_key, secret):
    topic = "rt-sec-leaving"
    uid = await room_member(db, topic)
    client = clients(anon_key)
    ch, _, states = await room(client, topic, token=user_token(secret, uid))
    assert states == [(RealtimeSubscribeStates.SUBSCRIBED, None)]
    system: list = []
    ch.on_system(system.append)
    await db.execute("delete from public.rt_sec_rooms where user_id = $1", uuid.UUID(uid))
    await client.set_auth(user_token(secret, uid, ttl=7200))  # a refreshed session
    await wait_until(
        lambda: any(st == RealtimeSubscribeStates.CLOSED for st, _ in states), what=lambda: states
    )
    assert any(
        st == RealtimeSubscribeStates.CHANNEL_ERROR and f"read from this Channel topic: {topic}" in str(err)
        for st, err in states
    ), states


# --- broadcast from the database ---------------------------------------------------------------
async def test_realtime_send_reaches_the_topics_subscribers(db, clients, anon_key, secret):
    topic = "rt-sec-db"
    reader = await room_member(db, topic)
    _, private_heard, s1 = await room(clients(anon_key), topic, token=user_token(secret, reader))
    _, public_heard, s2 = await room(clients(anon_key), topic, private=False)
    _, elsewhere, s3 = await room(clients(anon_key), "rt-sec-elsewhere", private=False)
    assert s1 == s2 == s3 == [(RealtimeSubscribeStates.SUBSCRIBED, None)]

    await db.execute("""select realtime.send('{"n": 1}'::jsonb, 'from-db', $1, true)""", topic)
    await wait_until(lambda: private_heard)
    (msg,) = private_heard
    assert msg["event"] == "from-db"
    assert msg["payload"]["n"] == 1 and msg["meta"] == {"id": msg["payload"]["id"]}
    uuid.UUID(msg["payload"]["id"])

    # rolled back: never sent; public: to the public channels only
    await db.execute("select 1")  # (re)connects db.conn
    tx = db.conn.transaction()
    await tx.start()
    await db.conn.execute("""select realtime.send('{"n": 2}'::jsonb, 'from-db', $1, false)""", topic)
    await tx.rollback()
    await db.execute("""select realtime.send('{"n": 3}'::jsonb, 'from-db', $1, false)""", topic)
    await wait_until(lambda: public_heard)
    await asyncio.sleep(SILENCE_S)
    assert [m["payload"]["n"] for m in public_heard] == [3]
    assert len(private_heard) == 1 and elsewhere == []
    rows = await db.execute("select count(*) as n from realtime.messages where topic = $1", topic)
    assert rows[0]["n"] == 2  # kept, as Supabase keeps them (pruned after a few days)
