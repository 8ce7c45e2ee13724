"""Realtime Presence as Supabase Realtime does it, through the official client (realtime-py),
with raw websocket frames where the exact frames matter.

- ``track`` makes a channel's payload visible under its presence key to the topic's other
  subscribers (``presence_diff`` joins), a later subscriber gets it in the
  ``presence_state`` sent on join; tracking again replaces the payload (leave + join);
  ``untrack``, leaving the channel and the socket closing remove it (diff leaves).
- presence disabled at join: no ``presence_state`` until a ``track`` enables it.
- a channel may send 5 presence messages per 30 s (Supabase's default); more closes it.
- private channels: presence needs the read policy on extension ``presence`` to receive
  and the write policy (INSERT) to track.

Policies on realtime.messages are ``rt_pres_*``, the table of who may do what is
``public.rt_pres_rooms``; both are dropped at the end.
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

SILENCE_S = 0.5  # how long "nothing more arrives" is observed after a later frame did arrive (s)

SCHEMA_SQL = [
    """create table public.rt_pres_rooms (topic text not null, user_id uuid not null, can_read boolean not null,
                                          can_track boolean not null, can_bcast boolean not null default true,
                                          primary key (topic, user_id))""",
    "grant select on public.rt_pres_rooms to authenticated",
    # broadcast read, presence read and presence write as the member's row says
    """create policy rt_pres_bread on realtime.messages for select to authenticated using (
         extension = 'broadcast'
         and exists (select 1 from public.rt_pres_rooms r
                     where r.topic = realtime.topic() and r.user_id = auth.uid() and r.can_bcast))""",
    """create policy rt_pres_read on realtime.messages for select to authenticated using (
         extension = 'presence'
         and exists (select 1 from public.rt_pres_rooms r
                     where r.topic = realtime.topic() and r.user_id = auth.uid() and r.can_read))""",
    """create policy rt_pres_track on realtime.messages for insert to authenticated with check (
         extension = 'presence'
         and exists (select 1 from public.rt_pres_rooms r
                     where r.topic = realtime.topic() and r.user_id = auth.uid() and r.can_track))""",
]
DROP_SQL = [
    "drop policy if exists rt_pres_bread on realtime.messages",
    "drop policy if exists rt_pres_read on realtime.messages",
    "drop policy if exists rt_pres_track on realtime.messages",
    "drop table if exists public.rt_pres_rooms",
]


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


def config(key: str = "", enabled: bool = True, private: bool = False) -> dict:
    return {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": key, "enabled": enabled},
            "private": private,
        }
    }


async def present(
    client: AsyncRealtimeClient, topic: str, key: str, *, private: bool = False, token: str | None = None
) -> tuple[Any, list[tuple[str, str, list]], list]:
    """Join ``topic`` with presence on under ``key``; returns (channel, join/leave log, states)."""
    if token is not None:
        await client.set_auth(token)
    log: list[tuple[str, str, list]] = []
    states: list = []
    ch = client.channel(topic, config(key, private=private))
    ch.on_presence_join(lambda k, cur, new: log.append(("join", k, new)))
    ch.on_presence_leave(lambda k, cur, left: log.append(("leave", k, left)))
    await ch.subscribe(lambda st, err: states.append((st, err)))
    return ch, log, states


def payloads(ch: Any) -> dict[str, list[dict]]:
    """The channel's presence state without the refs: {key: [payload, ...]}."""
    return {
        k: [{f: v for f, v in m.items() if f != "presence_ref"} for m in metas]
        for k, metas in ch.presence_state().items()
    }


def ws_url(api_url: str) -> str:
    return api_url.replace("http://", "ws://") + "/realtime/v1/websocket"


class Raw:
    """A raw vsn 1.0.0 socket that records every frame it gets."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.frames: list[dict] = []
        self.ref = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                self.frames.append(json.loads(text))
        except websockets.exceptions.ConnectionClosed:
            pass

    async def push(self, topic: str, event: str, payload: Any) -> str:
        self.ref += 1
        await self.ws.send(
            json.dumps(
                {"topic": topic, "event": event, "payload": payload, "ref": str(self.ref), "join_ref": "1"}
            )
        )
        return str(self.ref)

    def of(self, event: str) -> list[dict]:
        return [f for f in self.frames if f["event"] == event]

    def reply(self, ref: str) -> dict | None:
        return next(
            (f["payload"] for f in self.frames if f["event"] == "phx_reply" and f["ref"] == ref), None
        )


# --- public channels ----------------------------------------------------------------------
async def test_track_sync_update_untrack_leave_and_close(clients, anon_key):
    topic = f"rt-pres-{uuid.uuid4().hex[:8]}"
    a_client, b_client, c_client = clients(anon_key), clients(anon_key), clients(anon_key)
    a, a_log, a_states = await present(a_client, topic, "alice")
    b, b_log, _ = await present(b_client, topic, "bob")
    assert a_states[0][0] == RealtimeSubscribeStates.SUBSCRIBED

    await a.track({"status": "online"})
    await wait_until(
        lambda: payloads(b) == {"alice": [{"status": "online"}]}, what=lambda: b.presence_state()
    )
    await wait_until(lambda: "alice" in payloads(a))  # the tracker gets its own diff too
    assert b.presence_state()["alice"][0]["presence_ref"]  # phx_ref, as the client names it
    await b.track({"status": "away"})
    await wait_until(lambda: payloads(a) == {"alice": [{"status": "online"}], "bob": [{"status": "away"}]})

    # a later subscriber gets the whole state on join, without anyone tracking again
    c, _, _ = await present(c_client, topic, "carol")
    await wait_until(lambda: payloads(c) == {"alice": [{"status": "online"}], "bob": [{"status": "away"}]})

    # tracking again replaces the payload: one meta under the key, a new ref
    ref = b.presence_state()["alice"][0]["presence_ref"]
    await a.track({"status": "busy"})
    await wait_until(lambda: payloads(b).get("alice") == [{"status": "busy"}])
    assert b.presence_state()["alice"][0]["presence_ref"] != ref

    await a.untrack()
    await wait_until(lambda: "alice" not in payloads(b) and "alice" not in payloads(c))
    assert ("leave", "alice", [{"presence_ref": b_log[-1][2][0]["presence_ref"], "status": "busy"}]) == b_log[
        -1
    ]

    # leaving the channel removes bob; closing carol's socket removes carol
    await c.track({"status": "here"})
    await wait_until(lambda: "carol" in payloads(a))
    await b.unsubscribe()
    await wait_until(lambda: "bob" not in payloads(a) and "bob" not in payloads(c))
    await c_client.close()
    await wait_until(lambda: payloads(a) == {}, what=lambda: a.presence_state())
    assert any(e[:2] == ("leave", "carol") for e in a_log)


async def test_state_on_join_and_presence_off_until_track(api_url, clients, anon_key):
    topic = f"rt-pres-{uuid.uuid4().hex[:8]}"
    a, _, _ = await present(clients(anon_key), topic, "alice")
    await a.track({"n": 1})
    async with websockets.connect(f"{ws_url(api_url)}?apikey={anon_key}&vsn=1.0.0") as ws:
        raw = Raw(ws)
        t = f"realtime:{topic}"
        on = await raw.push(t, "phx_join", config("", enabled=True))
        await wait_until(lambda: raw.of("presence_state"))
        state = raw.of("presence_state")[0]
        assert state["ref"] is None and state["topic"] == t
        (meta,) = state["payload"]["alice"]["metas"]
        assert meta["n"] == 1 and isinstance(meta["phx_ref"], str) and meta["phx_ref"]
        assert raw.reply(on)["status"] == "ok"

        # a second socket with presence off: no state, not even after others track ...
        off_ws = await websockets.connect(f"{ws_url(api_url)}?apikey={anon_key}&vsn=1.0.0")
        try:
            off = Raw(off_ws)
            joined = await off.push(t, "phx_join", config("", enabled=False))
            await wait_until(lambda: off.reply(joined) is not None)
            # ... public topics still send it the diffs, as Supabase does
            await a.track({"n": 2})
            await wait_until(lambda: off.of("presence_diff") and len(raw.of("presence_diff")) >= 1)
            diff = off.of("presence_diff")[0]["payload"]
            assert diff["joins"]["alice"]["metas"][0]["n"] == 2
            assert diff["joins"]["alice"]["metas"][0]["phx_ref_prev"] == meta["phx_ref"]
            assert diff["leaves"]["alice"]["metas"][0]["phx_ref"] == meta["phx_ref"]
            assert off.of("presence_state") == []
            # its own track enables presence: the reply, then the state (its own entry in it)
            tracked = await off.push(
                t, "presence", {"type": "presence", "event": "track", "payload": {"me": True}}
            )
            await wait_until(lambda: off.of("presence_state"))
            assert off.reply(tracked) == {"status": "ok", "response": {}}
            keys = set(off.of("presence_state")[0]["payload"])
            assert "alice" in keys and len(keys) == 2  # the server gave it a UUID key
            # a payload that is not a map is refused with Supabase's reason
            bad = await off.push(t, "presence", {"type": "presence", "event": "track", "payload": [1]})
            await wait_until(lambda: off.reply(bad) is not None)
            assert off.reply(bad) == {
                "status": "error",
                "response": {"reason": "Presence track payload must be a map"},
            }
        finally:
            await off_ws.close()
        # the closed socket's key leaves
        await wait_until(
            lambda: any(
                f["payload"]["leaves"] and "alice" not in f["payload"]["leaves"]
                for f in raw.of("presence_diff")
            )
        )


async def test_more_than_five_presence_messages_in_30s_close_the_channel(api_url, anon_key):
    t = f"realtime:rt-pres-{uuid.uuid4().hex[:8]}"
    async with websockets.connect(f"{ws_url(api_url)}?apikey={anon_key}&vsn=1.0.0") as ws:
        raw = Raw(ws)
        await raw.push(t, "phx_join", config("k"))
        refs = [
            await raw.push(t, "presence", {"type": "presence", "event": "track", "payload": {"i": i}})
            for i in range(6)
        ]
        await wait_until(lambda: raw.of("phx_close"))
        assert all(raw.reply(r)["status"] == "ok" for r in refs[:5]) and raw.reply(refs[5]) is None
        (system,) = raw.of("system")
        assert system["payload"] == {
            "channel": t.removeprefix("realtime:"),
            "extension": "system",
            "message": "Client presence rate limit exceeded",
            "status": "error",
        }


# --- private channels -----------------------------------------------------------------------
async def member(db: Db, topic: str, *, read: bool, track: bool, bcast: bool = True) -> str:
    uid = str(uuid.uuid4())
    await db.execute(
        "insert into public.rt_pres_rooms values ($1, $2, $3, $4, $5)",
        topic,
        uuid.UUID(uid),
        read,
        track,
        bcast,
    )
    return uid


async def test_private_presence_needs_read_to_see_and_write_to_track(db, clients, anon_key, secret):
    topic = f"rt-pres-priv-{uuid.uuid4().hex[:8]}"
    full = await member(db, topic, read=True, track=True)
    reader = await member(db, topic, read=True, track=False)
    blind = await member(db, topic, read=False, track=True)
    f, _, f_states = await present(
        clients(anon_key), topic, "full", private=True, token=user_token(secret, full)
    )
    r, _, _ = await present(
        clients(anon_key), topic, "reader", private=True, token=user_token(secret, reader)
    )
    b, _, b_states = await present(
        clients(anon_key), topic, "blind", private=True, token=user_token(secret, blind)
    )
    assert (
        f_states[0][0] == b_states[0][0] == RealtimeSubscribeStates.SUBSCRIBED
    )  # broadcast read lets them in

    replies: list = []
    push = await r.push("presence", {"type": "presence", "event": "track", "payload": {"who": "reader"}})
    push.receive("error", lambda resp: replies.append(("error", resp))).receive(
        "ok", lambda resp: replies.append("ok")
    )
    await b.track({"who": "blind"})  # may track without reading
    await f.track({"who": "full"})
    await wait_until(lambda: set(payloads(r)) == {"full", "blind"}, what=lambda: r.presence_state())
    await wait_until(lambda: set(payloads(f)) == {"full", "blind"})
    await asyncio.sleep(SILENCE_S)
    assert replies == [("error", {})]  # the reader may not track
    assert b.presence_state() == {}  # no presence read: neither state nor diffs

    # a public channel of the same name is another topic: it sees none of this
    pub, _, _ = await present(clients(anon_key), topic, "public")
    await pub.track({"who": "public"})
    await wait_until(lambda: "public" in payloads(pub))
    await asyncio.sleep(SILENCE_S)
    assert set(payloads(pub)) == {"public"} and set(payloads(f)) == {"full", "blind"}


async def test_private_join_on_presence_read_alone_needs_presence_enabled(db, api_url, anon_key, secret):
    """Presence read without broadcast read lets a private join in only with presence on."""
    topic = f"rt-pres-priv-{uuid.uuid4().hex[:8]}"
    uid = await member(db, topic, read=True, track=False, bcast=False)
    t, token = f"realtime:{topic}", user_token(secret, uid)
    async with websockets.connect(f"{ws_url(api_url)}?apikey={anon_key}&vsn=1.0.0") as ws:
        raw = Raw(ws)
        off = await raw.push(
            t, "phx_join", {**config("", enabled=False, private=True), "access_token": token}
        )
        await wait_until(lambda: raw.reply(off) is not None)
        assert raw.reply(off) == {
            "status": "error",
            "response": {
                "reason": f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"
            },
        }
        on = await raw.push(t, "phx_join", {**config("", enabled=True, private=True), "access_token": token})
        await wait_until(lambda: raw.reply(on) is not None)
        assert raw.reply(on)["status"] == "ok"
        await wait_until(lambda: raw.of("presence_state"))
        assert raw.of("presence_state")[0]["payload"] == {}


# --- the HTTP broadcast API -------------------------------------------------------------------
async def listen(
    client: AsyncRealtimeClient, topic: str, *, private: bool = False, token: str | None = None
) -> tuple[Any, list[dict]]:
    if token is not None:
        await client.set_auth(token)
    got: list[dict] = []
    ch = client.channel(topic, config(enabled=False, private=private))
    ch.on_broadcast("*", lambda m: got.append({k: v for k, v in m.items() if k != "type"}))
    states: list = []
    await ch.subscribe(lambda st, err: states.append(st))
    assert states[0] == RealtimeSubscribeStates.SUBSCRIBED, states
    return ch, got


async def test_http_send_with_realtime_py(db, clients, anon_key, secret):
    topic = f"rt-http-{uuid.uuid4().hex[:8]}"
    _, public_got = await listen(clients(anon_key), topic)
    sender = clients(anon_key)
    await sender.channel(topic).http_send("hello", {"n": 1})  # no subscribe needed
    await wait_until(lambda: public_got)
    assert public_got == [{"event": "hello", "payload": {"n": 1}}]

    # private: the sender's INSERT policy on realtime.messages decides (presence policies
    # here grant broadcast read only, so add a broadcast write policy for this test)
    await db.execute("""create policy rt_pres_bsend on realtime.messages for insert to authenticated with check (
                          extension = 'broadcast' and exists (select 1 from public.rt_pres_rooms r
                          where r.topic = realtime.topic() and r.user_id = auth.uid() and r.can_track))""")
    try:
        writer = await member(db, topic, read=False, track=True)
        reader = await member(db, topic, read=False, track=False)
        _, private_got = await listen(
            clients(anon_key), topic, private=True, token=user_token(secret, reader)
        )
        w = clients(anon_key)
        await w.set_auth(user_token(secret, writer))
        await w.channel(topic, config(private=True)).http_send("secret", {"n": 2})
        await wait_until(lambda: private_got)
        assert private_got == [{"event": "secret", "payload": {"n": 2}}]
        r = clients(anon_key)
        await r.set_auth(user_token(secret, reader))
        from realtime.exceptions import RealtimeHTTPError

        with pytest.raises(RealtimeHTTPError) as info:
            await r.channel(topic, config(private=True)).http_send("secret", {"n": 3})
        assert info.value.status == 403 and str(info.value) == "Unauthorized"
        await sender.channel(topic).http_send(
            "marker", {"n": 4}
        )  # public: the private channel is another topic
        await wait_until(lambda: len(public_got) == 2)
        await asyncio.sleep(SILENCE_S)
        assert [m["payload"]["n"] for m in private_got] == [2] and public_got[1]["event"] == "marker"
    finally:
        await db.execute("drop policy if exists rt_pres_bsend on realtime.messages")


async def test_batch_broadcast_endpoint(db, api_url, clients, anon_key, service_key, secret):
    import httpx

    topic = f"rt-http-{uuid.uuid4().hex[:8]}"
    uid = await member(db, topic, read=False, track=False)
    _, public_got = await listen(clients(anon_key), topic)
    _, private_got = await listen(clients(anon_key), topic, private=True, token=user_token(secret, uid))
    url = f"{api_url}/realtime/v1/api/broadcast"

    async with httpx.AsyncClient() as http:

        def post(body: Any, token: str | None = anon_key, apikey: str | None = anon_key) -> Any:
            headers = {"apikey": apikey} if apikey else {}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            return http.post(url, json=body, headers=headers)

        # anon may send public messages; its private message is dropped (no INSERT policy), still 202
        res = await post(
            {
                "messages": [
                    {"topic": topic, "event": "a", "payload": {"i": 1}},
                    {"topic": topic, "event": "p", "payload": {"i": 2}, "private": True},
                    {"topic": topic, "event": "b", "payload": {"i": 3}, "id": "m-3"},
                ]
            }
        )
        assert res.status_code == 202 and res.content == b""
        await wait_until(lambda: len(public_got) == 2)
        assert public_got == [
            {"event": "a", "payload": {"i": 1}},
            {"event": "b", "payload": {"i": 3}, "meta": {"id": "m-3"}},
        ]
        # the service role bypasses RLS: its private message arrives (the apikey alone is the JWT)
        res = await post(
            {"messages": [{"topic": topic, "event": "s", "payload": {"i": 4}, "private": True}]},
            token=None,
            apikey=service_key,
        )
        assert res.status_code == 202
        await wait_until(lambda: private_got)
        assert private_got == [{"event": "s", "payload": {"i": 4}}]

        res = await post(
            {"messages": [{"topic": topic, "event": "x"}, {"topic": topic, "event": "y", "payload": 5}]}
        )
        assert res.status_code == 422
        assert res.json() == {
            "errors": {"messages": [{"payload": ["can't be blank"]}, {"payload": ["is invalid"]}]}
        }
        assert (await post({})).json() == {"errors": {"messages": ["can't be blank"]}}
        res = await post({"messages": []}, token="not-a-jwt", apikey="not-a-jwt")
        assert res.status_code == 401 and res.json() == {"message": "Unauthorized"}
        assert (await http.get(url, headers={"apikey": anon_key})).status_code == 404
    await asyncio.sleep(SILENCE_S)
    assert len(public_got) == 2 and len(private_got) == 1


async def test_broadcast_replay_is_refused(api_url, anon_key):
    """Replaying stored broadcasts is not kept by the local stack: a clear refusal, with
    Supabase's own reason on a public channel."""
    async with websockets.connect(f"{ws_url(api_url)}?apikey={anon_key}&vsn=1.0.0") as ws:
        raw = Raw(ws)
        for private, reason in (
            (False, "Replay is not allowed for public channels"),
            (True, "Replay is not supported by the rackpilot local stack"),
        ):
            cfg = config(private=private)
            cfg["config"]["broadcast"]["replay"] = {"since": 0}
            ref = await raw.push(f"realtime:rt-replay-{private}", "phx_join", cfg)
            await wait_until(lambda r=ref: raw.reply(r) is not None)
            assert raw.reply(ref) == {
                "status": "error",
                "response": {"reason": f"UnableToReplayMessages: {reason}"},
            }
