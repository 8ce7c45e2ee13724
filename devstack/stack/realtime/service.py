"""The gateway's ``/realtime/v1`` service: Supabase Realtime's websocket for the local stack.

``/realtime/v1/websocket?apikey=<key>&vsn=1.0.0`` speaks the Phoenix channel protocol as
Supabase Realtime does (see supabase-clients.md): ``phx_join`` with postgres_changes
bindings and broadcast options, ``phx_leave``, ``heartbeat`` on ``phoenix``,
``access_token`` (re-verified; a token that no longer grants access closes the channel
with a ``system`` error and ``phx_close``), client-to-client ``broadcast`` with ``self``
and ``ack``, presence (``track``/``untrack``, ``presence_state``, ``presence_diff``; see
presence.py), and ``system`` messages. Changes come from logical decoding (see
replication.py and dispatch.py).

A postgres_changes binding that no table of the ``supabase_realtime`` publication matches,
or that names an unknown column, gets what Supabase gives: an ok join, then a ``system``
error with Supabase's "Unable to subscribe to changes with given parameters..." message,
and none of the channel's bindings deliver. A concrete table the role may not read at all
and a filter the local stack cannot parse refuse the join.

Private channels (join config ``private: true``) follow Supabase's Realtime Authorization:
the join is allowed only if the RLS policies on ``realtime.messages`` let the joining role,
with its JWT claims and ``realtime.topic()`` set to the channel's topic, SELECT a
``broadcast`` or ``presence`` row of it; otherwise the join reply is an error
``Unauthorized: You do not have permissions to read from this Channel topic: <topic>``.
Broadcasts sent on a private channel need INSERT (asked on the first send, a refused send
is dropped silently as Supabase does) and reach only private subscribers who may read.
A new token re-asks; losing read permission closes the channel. Rows inserted into
realtime.messages (``realtime.send``) are broadcast to their topic's private or public
channels.

Limits: frames over MAX_FRAME_BYTES get an error reply and are otherwise ignored, as are
frames that are not JSON or not Phoenix messages; the socket stays open. A client whose
outgoing queue overflows gets a ``system`` error on each channel and is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from ..asgi import BodyTooLarge, header_dict, read_body, send_bytes, send_json
from ..jwtauth import JWTError, bearer_token
from .channels import Binding, Channel, Socket, next_binding_id
from .db import SLOT_PREFIX, Database
from .dispatch import DbBroadcast, Dispatcher, Registry
from .errors import BindingError, DatabaseUnavailable, FilterError, ProtocolError, SlotError
from .filters import parse_filter
from .presence import (
    PRESENCE_CLIENT_MAX_CALLS,
    PRESENCE_CLIENT_WINDOW_S,
    PresenceRegistry,
    presence_enabled,
    presence_key,
)
from .protocol import MAX_FRAME_BYTES, SUPPORTED_VSN, VSN_1, Frame, decode_binary, decode_text, encode, reply
from .replication import WalStream

log = logging.getLogger("rackpilot.realtime")

MAX_CHANNELS_PER_SOCKET = 100  # topics one websocket may join (count)
MAX_BINDINGS_PER_CHANNEL = 100  # postgres_changes bindings per join (count)
PUBLICATION_POLL_S = 1.0  # how often the publication is re-read for new/removed tables (s)
JOIN_STREAM_WAIT_S = 5.0  # a join waits this long for the stream to include its tables (s)
SLOW_CLIENT_GRACE_S = 10.0  # a dropped slow client gets this long to take its error and close (s)
MESSAGES_KEEP_DAYS = 3  # realtime.messages rows older than this are deleted (days), as Supabase does
MESSAGES_PRUNE_S = 3600.0  # how often they are looked for (s)
EVENTS = ("INSERT", "UPDATE", "DELETE", "*")
WAL_WRITER_DELAY_MAX_MS = 20  # above this the cluster's WAL writer noticeably delays events (ms)


def _elixir_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _params_to_log(b: Binding) -> str:
    """A binding as Supabase Realtime names it in its subscription errors."""
    filters = "[]"
    if b.filter is not None:
        value = "{" + ",".join(b.filter.values) + "}" if b.filter.op == "in" else b.filter.values[0]
        filters = (
            f"[{{{_elixir_str(b.filter.column)}, {_elixir_str(b.filter.op)}, {_elixir_str(value)}, false}}]"
        )
    select = "nil" if b.select is None else "[" + ", ".join(_elixir_str(c) for c in b.select) + "]"
    table = b.table if b.table not in (None, "") else "*"
    return f"event: {b.event}, schema: {b.schema}, table: {table}, filters: {filters}, select: {select}"


def unpublished(b: Binding) -> str:
    """Supabase's system message for a binding no table of the publication matches."""
    return (
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled "
        f"for the given connect parameters: [{_params_to_log(b)}]"
    )


def subscribe_exception(b: Binding, error: str) -> str:
    """Supabase's system message for a binding its subscription check raised on."""
    return (
        "Unable to subscribe to changes with given parameters. An exception happened so please check "
        f"your connect parameters: [{_params_to_log(b)}]. Exception: ERROR P0001 (raise_exception) {error}"
    )


class RealtimeService:
    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.verifier = ctx.verifier
        self.slot = f"{SLOT_PREFIX}{ctx.cfg.api_port}"
        self.db = Database(ctx.dsn("postgres"))
        self.registry = Registry()
        self.registry.on_overflow = self._drop_slow
        self.dispatcher = Dispatcher(self.db, self.registry)
        self.dispatcher.on_broadcast = self._db_broadcast
        self.stream: WalStream | None = None
        self.sockets: set[Socket] = set()
        self.broadcast_groups: dict[tuple[str, bool], set[Channel]] = {}
        self.presence = PresenceRegistry()
        self._watch: asyncio.Task | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def startup(self) -> None:
        await self.db.start()
        delay_ms = await self.db.wal_writer_delay_ms()
        if delay_ms > WAL_WRITER_DELAY_MAX_MS:
            # a cluster made before wal_writer_delay was lowered: async commits reach the
            # stream only every delay_ms (rackpilot dev destroy + up fixes it)
            log.warning("wal_writer_delay is %sms: Realtime events will lag by up to that much", delay_ms)
        await self.db.create_slot(self.slot)
        spec = await self.db.publication()
        loop = asyncio.get_running_loop()
        self.stream = WalStream(
            dsn=self.ctx.dsn("postgres"),
            slot=self.slot,
            loop=loop,
            deliver=self.dispatcher.feed,
            on_state=self._stream_state,
            spec=spec,
        )
        self.dispatcher.start(self.stream)
        ready = self.stream.set_spec(spec)
        self.stream.start()
        try:
            await asyncio.wait_for(ready, 10)
        except TimeoutError:
            raise SlotError(f"the replication stream on slot {self.slot} did not start") from None
        self._watch = asyncio.create_task(self._watch_publication(), name="realtime-publication")
        try:
            await self.db.prune_messages(MESSAGES_KEEP_DAYS)
        except DatabaseUnavailable:
            pass  # the hourly pass does it

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for sock in list(self.sockets):
            sock.push_final([], 1012, "server restarting")
        await self.dispatcher.stop()
        if self.stream is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.stream.stop)
        try:
            await self.db.drop_slot(self.slot)
        except SlotError as exc:
            log.warning("%s", exc)
        await self.db.close()

    def _stream_state(self, up: bool) -> None:
        if up:
            self.db.forget()  # a restart may have come with DDL: re-read table facts

    async def _watch_publication(self) -> None:
        pruned = time.monotonic()
        while True:
            await asyncio.sleep(PUBLICATION_POLL_S)
            if time.monotonic() - pruned > MESSAGES_PRUNE_S:
                pruned = time.monotonic()
                try:
                    await self.db.prune_messages(MESSAGES_KEEP_DAYS)
                except DatabaseUnavailable:
                    pass
            try:
                await self._sync_publication()
            except DatabaseUnavailable:
                continue
            except Exception:  # noqa: BLE001 - keep watching whatever happened
                log.exception("reading the publication failed")

    async def _sync_publication(self) -> asyncio.Future:
        assert self.stream is not None
        spec = await self.db.publication()
        if spec != self.stream.spec:
            self.db.forget()
        return self.stream.set_spec(spec)

    # --- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
            return
        if scope["type"] != "websocket":
            return
        if scope["path"].rstrip("/") != "/realtime/v1/websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        vsn = (query.get("vsn") or [VSN_1])[0]
        token = (query.get("apikey") or [None])[0] or header_dict(scope).get("apikey")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if vsn not in SUPPORTED_VSN:
            await self._reject(scope, send, 400, f"unsupported protocol version {vsn!r}")
            return
        try:
            claims = self.verifier.verify(token)
        except JWTError as exc:
            await self._reject(scope, send, 403, exc.message)
            return
        await send({"type": "websocket.accept"})
        sock = Socket(vsn, claims, token or "")
        self.sockets.add(sock)
        writer = asyncio.create_task(sock.writer(send))
        reader = asyncio.create_task(self._read(sock, receive))
        try:
            await asyncio.wait({reader, sock.finished}, return_when=asyncio.FIRST_COMPLETED)
            if sock.dead and not reader.done():
                # a dropped slow client: give it a moment to take its error, then let go
                await asyncio.wait(
                    {reader, sock.finished}, timeout=SLOW_CLIENT_GRACE_S, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            reader.cancel()
            writer.cancel()
            self._forget_socket(sock)

    # --- HTTP: the broadcast API --------------------------------------------------------------
    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        """``POST /realtime/v1/api/broadcast`` (a batch) and
        ``POST /realtime/v1/api/broadcast/<topic>/events/<event>`` (one message), as
        Supabase Realtime serves them: the JWT is the bearer token, else the apikey; 202
        with no body when accepted."""
        raw = scope.get("raw_path") or scope["path"].encode()
        parts = [unquote(p) for p in raw.decode("latin-1").split("?", 1)[0].rstrip("/").split("/")]
        route = parts[3:]  # after "", "realtime", "v1"
        single = len(route) == 5 and route[:2] == ["api", "broadcast"] and route[3] == "events"
        if scope.get("method") != "POST" or not (route == ["api", "broadcast"] or single):
            await send_json(send, 404, {"message": "Not found"})
            return
        headers = header_dict(scope)
        try:
            claims = self.verifier.verify(bearer_token(headers))
        except JWTError:
            await send_json(send, 401, {"message": "Unauthorized"})
            return
        try:
            body = await read_body(receive, MAX_FRAME_BYTES)
        except BodyTooLarge:
            await send_json(send, 413, {"message": "Payload size exceeds tenant limit"})
            return
        if "octet-stream" in headers.get("content-type", ""):
            await send_json(
                send,
                415,
                {
                    "message": "binary broadcast payloads are not supported by the rackpilot "
                    "local stack; send JSON"
                },
            )
            return
        try:
            data = orjson.loads(body) if body.strip() else None
        except orjson.JSONDecodeError:
            await send_json(send, 400, {"message": "the request body is not valid JSON"})
            return
        role = claims.get("role", "anon")
        claims_json = orjson.dumps(claims, option=orjson.OPT_SORT_KEYS).decode()
        try:
            if single:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                private = (query.get("private") or ["false"])[0] == "true"
                status, answer = await self._http_single(route[2], route[4], data, private, role, claims_json)
            else:
                status, answer = await self._http_batch(data, role, claims_json)
        except DatabaseUnavailable:
            status, answer = 422, {"message": "Tenant database unavailable"}
        if answer is None:
            await send_bytes(send, status, b"", None)
        else:
            await send_json(send, status, answer)

    async def _http_single(
        self, topic: str, event: str, payload: Any, private: bool, role: str, claims_json: str
    ) -> tuple[int, Any]:
        if not topic or not event:
            return 422, {"errors": {"topic" if not topic else "event": ["can't be blank"]}}
        if payload is None:
            return 422, {"errors": {"payload": ["can't be blank"]}}
        if private and not await self.db.write_policy(role, claims_json, topic, "broadcast"):
            return 403, {"message": "Unauthorized"}
        self._fan_out("realtime:" + topic, private, {"type": "broadcast", "event": event, "payload": payload})
        return 202, None

    async def _http_batch(self, data: Any, role: str, claims_json: str) -> tuple[int, Any]:
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages:
            return 422, {
                "errors": {"messages": ["can't be blank" if messages in (None, []) else "is invalid"]}
            }
        errors: list[dict[str, list[str]]] = []
        for m in messages:
            problems: dict[str, list[str]] = {}
            if not isinstance(m, dict):
                problems["messages"] = ["is invalid"]
            else:
                for name, kind in (("topic", str), ("event", str), ("payload", dict)):
                    value = m.get(name)
                    if value is None or value == "":
                        problems[name] = ["can't be blank"]
                    elif not isinstance(value, kind):
                        problems[name] = ["is invalid"]
                if not isinstance(m.get("private", False), bool):
                    problems["private"] = ["is invalid"]
            errors.append(problems)
        if any(errors):
            return 422, {"errors": {"messages": errors}}
        allowed: dict[str, bool] = {}
        for m in messages:
            private = bool(m.get("private", False))
            if private:
                topic = m["topic"]
                if topic not in allowed:  # as Supabase: asked once per topic, refused ones dropped
                    allowed[topic] = await self.db.write_policy(role, claims_json, topic, "broadcast")
                if not allowed[topic]:
                    continue
            out: dict[str, Any] = {"type": "broadcast", "event": m["event"], "payload": m["payload"]}
            if m.get("id") is not None:
                out["meta"] = {"id": m["id"]}
            self._fan_out("realtime:" + m["topic"], private, out)
        return 202, None

    async def _reject(self, scope: dict, send: Any, status: int, message: str) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):
            body = orjson.dumps({"message": message})
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _read(self, sock: Socket, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive" or sock.dead:
                continue
            text, data = message.get("text"), message.get("bytes")
            size = len(text) if text is not None else len(data or b"")
            try:
                if size > MAX_FRAME_BYTES:
                    self._oversize(sock, text, data)
                    continue
                frame = decode_text(text) if text is not None else decode_binary(data or b"")
            except ProtocolError as exc:
                self._send(
                    sock,
                    encode(
                        sock.vsn,
                        "phoenix",
                        "phx_reply",
                        {"status": "error", "response": {"reason": str(exc)}},
                    ),
                )
                continue
            try:
                await self._handle(sock, frame)
            except Exception:  # noqa: BLE001 - one bad frame must not end the socket
                log.exception("handling a %s frame failed", frame.event)
                self._reply(sock, frame, "error", {"reason": "internal error handling the message"})

    def _oversize(self, sock: Socket, text: str | None, data: bytes | None) -> None:
        reason = f"frame of more than {MAX_FRAME_BYTES} bytes ignored"
        frame = None
        try:
            frame = decode_text(text) if text is not None else decode_binary(data or b"")
        except ProtocolError:
            pass
        if frame is not None and frame.ref is not None:
            self._reply(sock, frame, "error", {"reason": reason})
        else:
            self._send(
                sock,
                encode(sock.vsn, "phoenix", "phx_reply", {"status": "error", "response": {"reason": reason}}),
            )

    # --- outgoing -----------------------------------------------------------------------------
    def _send(self, sock: Socket, text: str) -> None:
        if not sock.push(text) and not sock.dead:
            self._drop_slow(sock)

    def _reply(self, sock: Socket, frame: Frame, status: str, response: Any) -> None:
        if frame.ref is None and frame.event != "heartbeat":
            return  # nothing to correlate a reply with
        self._send(sock, reply(sock.vsn, frame, status, response))

    def _system(self, channel: Channel, status: str, message: str, extension: str = "system") -> str:
        return encode(
            channel.socket.vsn,
            channel.topic,
            "system",
            {"channel": channel.sub_topic, "extension": extension, "message": message, "status": status},
        )

    def _drop_slow(self, sock: Socket) -> None:
        if sock.dead:
            return
        frames = [
            self._system(ch, "error", "Too many messages queued for this client: disconnected")
            for ch in sock.channels.values()
        ]
        for ch in list(sock.channels.values()):
            self._unregister(ch)
        sock.push_final(frames)
        log.warning("disconnected a slow Realtime client (outgoing queue overflowed)")

    # --- frames -------------------------------------------------------------------------------
    async def _handle(self, sock: Socket, frame: Frame) -> None:
        event = frame.event
        if frame.topic == "phoenix":
            if event == "heartbeat":
                self._reply(sock, frame, "ok", {})
            else:
                self._reply(sock, frame, "error", {"reason": f"unknown event {event!r} on topic phoenix"})
            return
        if event == "phx_join":
            await self._join(sock, frame)
            return
        channel = sock.channels.get(frame.topic)
        if channel is None:
            self._reply(sock, frame, "error", {"reason": "unmatched topic"})
            return
        if event == "phx_leave":
            self._unregister(channel)
            sock.channels.pop(frame.topic, None)
            self._reply(sock, frame, "ok", {})
        elif event == "access_token":
            await self._access_token(channel, frame)
        elif event == "broadcast":
            await self._broadcast(channel, frame)
        elif event == "presence":
            await self._presence(channel, frame)
        elif event == "heartbeat":
            self._reply(sock, frame, "ok", {})
        else:
            self._reply(sock, frame, "error", {"reason": f"unknown event {event!r}"})

    async def _join(self, sock: Socket, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else None
        if payload is None:
            self._reply(sock, frame, "error", {"reason": "join payload must be an object"})
            return
        if not frame.topic.startswith("realtime:"):
            self._reply(sock, frame, "error", {"reason": "topic must start with 'realtime:'"})
            return
        if frame.topic not in sock.channels and len(sock.channels) >= MAX_CHANNELS_PER_SOCKET:
            self._reply(
                sock, frame, "error", {"reason": f"at most {MAX_CHANNELS_PER_SOCKET} channels per connection"}
            )
            return
        token = payload.get("access_token")
        if token is not None and not isinstance(token, str):
            self._reply(sock, frame, "error", {"reason": "access_token must be a string"})
            return
        token = token or sock.token
        try:
            claims = self.verifier.verify(token)
        except JWTError as exc:
            self._reply(sock, frame, "error", {"reason": f"Invalid token: {exc.message}"})
            return
        config = payload.get("config") or {}
        if not isinstance(config, dict):
            self._reply(sock, frame, "error", {"reason": "config must be an object"})
            return
        broadcast = config.get("broadcast") or {}
        broadcast = broadcast if isinstance(broadcast, dict) else {}
        if "replay" in broadcast:  # Supabase's refusal on public channels; not kept here at all
            self._reply(
                sock,
                frame,
                "error",
                {
                    "reason": "UnableToReplayMessages: "
                    + (
                        "Replay is not supported by the rackpilot local stack"
                        if config.get("private")
                        else "Replay is not allowed for public channels"
                    )
                },
            )
            return
        channel = Channel(
            socket=sock,
            topic=frame.topic,
            join_ref=frame.join_ref or frame.ref,
            claims=claims,
            token=token,
            broadcast_self=bool(broadcast.get("self")),
            broadcast_ack=bool(broadcast.get("ack")),
            private=bool(config.get("private")),
            presence_key=presence_key(config),
            presence_enabled=presence_enabled(config),
        )
        if channel.private:
            try:
                allowed = await self._authorize_read(channel)
            except DatabaseUnavailable:
                self._reply(
                    sock, frame, "error", {"reason": "Realtime was unable to connect to the project database"}
                )
                return
            if not allowed:
                self._reply(
                    sock,
                    frame,
                    "error",
                    {
                        "reason": f"Unauthorized: You do not have permissions to read from this Channel topic: "
                        f"{channel.sub_topic}"
                    },
                )
                return
        raw = config.get("postgres_changes") or []
        problem = None
        try:
            bindings = self._parse_bindings(raw)
            if bindings:
                problem = await self._check_bindings(channel.role, bindings)
        except (BindingError, FilterError) as exc:
            self._reply(sock, frame, "error", {"reason": str(exc)})
            return
        except DatabaseUnavailable:
            self._reply(sock, frame, "error", {"reason": "database unavailable, retry shortly"})
            return
        # as Supabase: a binding that cannot be subscribed (table not in the publication,
        # unknown column) fails the channel's postgres_changes as a whole, reported by a
        # system message after an ok join; broadcast and presence still work
        channel.bindings = [] if problem else bindings
        old = sock.channels.get(frame.topic)
        if old is not None:
            # a client re-joining a topic (reconnect, rejoin after timeout) replaces its
            # channel silently: a phx_close here would close the new channel client-side
            self._unregister(old)
        sock.channels[frame.topic] = channel
        self.registry.add(channel)
        self.broadcast_groups.setdefault((channel.topic, channel.private), set()).add(channel)
        self._arm_expiry(channel)
        self._reply(sock, frame, "ok", {"postgres_changes": [b.echo for b in bindings]})
        if problem:
            self._send(sock, self._system(channel, "error", problem, "postgres_changes"))
        elif bindings:
            self._send(sock, self._system(channel, "ok", "Subscribed to PostgreSQL", "postgres_changes"))
        if channel.presence_enabled:
            self._presence_sync(channel)

    def _parse_bindings(self, raw: Any) -> list[Binding]:
        if not isinstance(raw, list):
            raise BindingError("postgres_changes must be a list")
        if len(raw) > MAX_BINDINGS_PER_CHANNEL:
            raise BindingError(f"at most {MAX_BINDINGS_PER_CHANNEL} postgres_changes bindings per channel")
        out = []
        for item in raw:
            if not isinstance(item, dict):
                raise BindingError("each postgres_changes binding must be an object")
            event = item.get("event")
            if not isinstance(event, str) or event.upper() not in EVENTS:
                raise BindingError(f"invalid event {event!r}: use INSERT, UPDATE, DELETE or *")
            schema = item.get("schema", "public")
            table = item.get("table")
            if not isinstance(schema, str) or not schema:
                raise BindingError("schema must be a non-empty string")
            if table is not None and (not isinstance(table, str) or not table):
                raise BindingError("table must be a non-empty string")
            flt_text = item.get("filter")
            flt = parse_filter(flt_text) if flt_text not in (None, "") else None
            select = item.get("select")
            if select is not None:
                if not isinstance(select, list) or not all(isinstance(c, str) for c in select):
                    raise BindingError("select must be a list of column names")
                select = tuple(select)
            echo = {k: item[k] for k in ("event", "schema", "table", "filter", "select") if k in item}
            bid = next_binding_id()
            echo["id"] = bid
            out.append(
                Binding(
                    id=bid,
                    event=event.upper(),
                    schema=schema,
                    table=table,
                    filter=flt,
                    select=select,
                    echo=echo,
                )
            )
        return out

    async def _check_bindings(self, role: str, bindings: list[Binding]) -> str | None:
        """Refuse (BindingError) a concrete table the role may not read at all; return
        Supabase's system message for the first binding that cannot be subscribed (no
        published table matches it, or it names unknown columns), or None when all can.
        The stream includes the publication's current tables when this returns."""
        ready = await self._sync_publication()
        assert self.stream is not None
        spec = self.stream.spec
        problem = None
        for b in bindings:
            if b.schema == "*" or b.table in (None, "*"):
                if (
                    problem is None
                    and not spec.all_tables
                    and not any(b.schema in ("*", s) for s, _ in spec.tables)
                ):
                    problem = unpublished(b)
                continue
            info = await self.db.table(b.schema, b.table)
            if not info.exists or not spec.covers(b.schema, b.table):
                problem = problem or unpublished(b)
                continue
            if role != "service_role" and not await self.db.can_select(role, b.schema, b.table):
                raise BindingError(f"permission denied for table {b.schema}.{b.table}")
            if problem is not None:
                continue
            names = {n for n, _ in info.columns}
            if b.filter is not None and b.filter.column not in names:
                problem = subscribe_exception(b, f"invalid column for filter {b.filter.column}")
            elif b.select is not None and not set(b.select) <= names:
                unknown = next(c for c in b.select if c not in names)
                problem = subscribe_exception(b, f"invalid column for select {unknown}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), JOIN_STREAM_WAIT_S)
        except TimeoutError:
            raise DatabaseUnavailable("replication stream not ready") from None
        return problem

    async def _access_token(self, channel: Channel, frame: Frame) -> None:
        sock = channel.socket
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        token = payload.get("access_token")
        if token is None or token == "":
            # supabase-js sends a null token after sign-out: fall back to the apikey
            token = sock.token
        if not isinstance(token, str):
            self._reply(sock, frame, "error", {"reason": "access_token must be a string"})
            return
        try:
            claims = self.verifier.verify(token)
        except JWTError as exc:
            self._revoke(channel, f"Invalid token: {exc.message}")
            return
        role = claims.get("role", "anon")
        try:
            for b in channel.bindings:
                if b.schema == "*" or b.table in (None, "*") or role == "service_role":
                    continue
                if not await self.db.can_select(role, b.schema, b.table):
                    self._revoke(
                        channel, f"You do not have permission to read {b.schema}.{b.table} with this token"
                    )
                    return
        except DatabaseUnavailable:
            self._reply(sock, frame, "error", {"reason": "database unavailable, retry shortly"})
            return
        if channel.private:
            before = (channel.can_read_broadcast, channel.can_read_presence)
            previous = (channel.claims, channel.token)
            channel.set_claims(claims, token)
            try:
                allowed = await self._authorize_read(channel)
            except DatabaseUnavailable:
                channel.set_claims(*previous)
                self._reply(sock, frame, "error", {"reason": "database unavailable, retry shortly"})
                return
            if not allowed:
                self._revoke(
                    channel,
                    f"You do not have permissions to read from this Channel topic: {channel.sub_topic}",
                )
                return
            if (before[0] and not channel.can_read_broadcast) or (
                before[1] and channel.presence_enabled and not channel.can_read_presence
            ):
                self._revoke(
                    channel,
                    f"You no longer have permission to read from this Channel topic: {channel.sub_topic}",
                )
                return
        channel.set_claims(claims, token)
        self._arm_expiry(channel)
        self._reply(sock, frame, "ok", {})

    async def _authorize_read(self, channel: Channel) -> bool:
        """Ask realtime.messages' policies whether the channel's role and claims may read
        its topic; records the answer on the channel (write is asked again on next send or
        track). As Supabase, presence read counts only where presence is enabled."""
        bcast, presence = await self.db.read_policies(channel.role, channel.claims_json, channel.sub_topic)
        channel.can_read_broadcast, channel.can_read_presence = bcast, presence
        channel.can_write_broadcast = channel.can_write_presence = None
        return bcast or (presence and channel.presence_enabled)

    def _revoke(self, channel: Channel, message: str) -> None:
        sock = channel.socket
        if sock.channels.get(channel.topic) is not channel:
            return
        self._unregister(channel)
        sock.channels.pop(channel.topic, None)
        self._send(sock, self._system(channel, "error", message))
        self._send(
            sock,
            encode(sock.vsn, channel.topic, "phx_close", {}, ref=channel.join_ref, join_ref=channel.join_ref),
        )

    def _arm_expiry(self, channel: Channel) -> None:
        if channel.expiry is not None:
            channel.expiry.cancel()
        exp = channel.claims.get("exp")
        if isinstance(exp, (int, float)):
            delay = max(0.0, float(exp) - time.time())
            channel.expiry = asyncio.get_running_loop().call_later(
                delay, self._revoke, channel, "Token has expired"
            )

    async def _broadcast(self, channel: Channel, frame: Frame) -> None:
        sock = channel.socket
        payload = frame.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
            self._reply(sock, frame, "error", {"reason": "broadcast payload must be {type, event, payload}"})
            return
        if channel.private:
            if channel.can_write_broadcast is None:
                try:
                    channel.can_write_broadcast = await self.db.write_policy(
                        channel.role, channel.claims_json, channel.sub_topic, "broadcast"
                    )
                except DatabaseUnavailable:
                    log.warning("broadcast on %s dropped: database unavailable", channel.topic)
                    return
            if not channel.can_write_broadcast:
                return  # as Supabase: a send the policies refuse is dropped, with no reply
            if sock.channels.get(channel.topic) is not channel:
                return  # left or replaced while the policy was asked
        out = {"type": "broadcast", "event": payload["event"], "payload": payload.get("payload")}
        self._fan_out(channel.topic, channel.private, out, skip=None if channel.broadcast_self else channel)
        if channel.broadcast_ack:
            self._reply(sock, frame, "ok", {})

    # --- presence ----------------------------------------------------------------------------
    async def _presence(self, channel: Channel, frame: Frame) -> None:
        """``presence`` from a client: ``track`` (or update) and ``untrack``, answered as
        Supabase Realtime answers them."""
        sock = channel.socket
        payload = frame.payload
        if not isinstance(payload, dict) or "event" not in payload:
            self._reply(sock, frame, "ok", {})
            return
        now = time.monotonic()
        if now > channel.presence_window_end:
            channel.presence_calls, channel.presence_window_end = 0, now + PRESENCE_CLIENT_WINDOW_S
        if channel.presence_calls >= PRESENCE_CLIENT_MAX_CALLS:
            self._revoke(channel, "Client presence rate limit exceeded")
            return
        channel.presence_calls += 1
        event = payload["event"].lower() if isinstance(payload["event"], str) else None
        if event == "untrack":
            diff = self.presence.untrack(channel)
            channel.presence_payload = None
            self._reply(sock, frame, "ok", {})
            if diff is not None:
                self._presence_diff(channel, diff)
            return
        if event != "track":
            self._reply(sock, frame, "error", {})
            return
        meta = payload.get("payload", {})
        if not isinstance(meta, dict):
            self._reply(sock, frame, "error", {"reason": "Presence track payload must be a map"})
            return
        if channel.private and channel.can_write_presence is None:
            try:  # (read was asked at join, for presence too: it decides what this channel gets)
                channel.can_write_presence = await self.db.write_policy(
                    channel.role, channel.claims_json, channel.sub_topic, "presence"
                )
            except DatabaseUnavailable:
                self._reply(sock, frame, "error", {})
                return
            if sock.channels.get(channel.topic) is not channel:
                return  # left or replaced while the policies were asked
        if channel.private and not channel.can_write_presence:
            self._reply(sock, frame, "error", {})
            return
        if meta == channel.presence_payload:
            self._reply(sock, frame, "ok", {})  # the same payload again: nothing changes
            return
        diff = self.presence.track(channel, meta)
        channel.presence_payload = meta
        self._reply(sock, frame, "ok", {})
        if not channel.presence_enabled:
            # this track enables presence for the channel: it never had the join's state
            channel.presence_enabled = True
            self._presence_sync(channel)
        self._presence_diff(channel, diff)

    def _presence_sync(self, channel: Channel) -> None:
        """``presence_state`` to one channel (a private one only if it may read presence)."""
        if channel.private and not channel.can_read_presence:
            return
        sock = channel.socket
        self._send(
            sock,
            encode(
                sock.vsn, channel.topic, "presence_state", self.presence.state(self.presence.group(channel))
            ),
        )

    def _presence_diff(self, origin: Channel, diff: dict) -> None:
        """``presence_diff`` to the topic's channels: all of a public topic; of a private
        one those with presence enabled that may read presence."""
        encoded: dict[str, str] = {}
        for other in list(self.broadcast_groups.get((origin.topic, origin.private), ())):
            if origin.private and not (other.presence_enabled and other.can_read_presence):
                continue
            osock = other.socket
            if osock.dead:
                continue
            text = encoded.get(osock.vsn)
            if text is None:
                text = encoded[osock.vsn] = encode(osock.vsn, other.topic, "presence_diff", diff)
            self._send(osock, text)

    def _fan_out(self, topic: str, private: bool, out: dict, skip: Channel | None = None) -> None:
        """Send a broadcast to the channels of ``topic`` of that kind (private channels
        only where their user may read broadcasts)."""
        encoded: dict[str, str] = {}
        for other in list(self.broadcast_groups.get((topic, private), ())):
            if other is skip or (private and not other.can_read_broadcast):
                continue
            osock = other.socket
            if osock.dead:
                continue
            text = encoded.get(osock.vsn)
            if text is None:
                text = encoded[osock.vsn] = encode(osock.vsn, other.topic, "broadcast", out)
            self._send(osock, text)

    def _db_broadcast(self, message: DbBroadcast) -> None:
        """A realtime.messages row (realtime.send): the frame Supabase Realtime sends."""
        out: dict[str, Any] = {"type": "broadcast", "event": message.event, "payload": message.payload}
        if message.id is not None:
            out["meta"] = {"id": message.id}
        self._fan_out("realtime:" + message.topic, message.private, out)

    # --- bookkeeping ----------------------------------------------------------------------------
    def _unregister(self, channel: Channel) -> None:
        self.registry.remove(channel)
        group = self.broadcast_groups.get((channel.topic, channel.private))
        if group is not None:
            group.discard(channel)
            if not group:
                del self.broadcast_groups[(channel.topic, channel.private)]
        diff = self.presence.untrack(channel)
        if diff is not None:
            self._presence_diff(channel, diff)  # to the others: the channel is gone from the group
        if channel.expiry is not None:
            channel.expiry.cancel()
            channel.expiry = None

    def _forget_socket(self, sock: Socket) -> None:
        sock.dead = True
        for channel in list(sock.channels.values()):
            self._unregister(channel)
        sock.channels.clear()
        self.sockets.discard(sock)
