"""Sockets, channels and postgres_changes bindings: the server-side state of clients."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from .filters import Filter

MAX_QUEUED_FRAMES = 20_000  # frames waiting for a slow client before it is disconnected (count)
MAX_QUEUED_BYTES = 32 * 1024 * 1024  # bytes waiting for a slow client before it is disconnected
CLOSE = object()  # queue sentinel: send a close frame and stop writing

_binding_ids = itertools.count(1)


def next_binding_id() -> int:
    return next(_binding_ids)


@dataclass(eq=False, slots=True)
class Binding:
    id: int
    event: str  # INSERT, UPDATE, DELETE or *
    schema: str  # a schema or *
    table: str | None  # None or * for every table of the schema
    filter: Filter | None
    select: tuple[str, ...] | None
    echo: dict[str, Any]  # what the join reply returns for it (the client's keys, plus id)

    def wants(self, schema: str, table: str, kind: str) -> bool:
        return (
            (self.event == "*" or self.event == kind)
            and (self.schema == "*" or self.schema == schema)
            and (self.table is None or self.table == "*" or self.table == table)
        )


@dataclass(eq=False)
class Channel:
    socket: Socket
    topic: str
    join_ref: str | None
    claims: dict[str, Any]
    token: str
    bindings: list[Binding] = field(default_factory=list)
    broadcast_self: bool = False
    broadcast_ack: bool = False
    private: bool = False
    expiry: asyncio.TimerHandle | None = None
    # Realtime Authorization of a private channel (RLS on realtime.messages), for the
    # current claims: read decided at join (and again on a new token), write on first send
    can_read_broadcast: bool = True
    can_read_presence: bool = True
    can_write_broadcast: bool | None = None  # None: not asked yet
    can_write_presence: bool | None = None  # None: not asked yet
    # presence (see presence.py): the key this channel tracks under, whether it receives
    # presence_state/presence_diff, what it tracks now, and its track/untrack rate window
    presence_key: str = ""
    presence_enabled: bool = False
    presence_payload: dict[str, Any] | None = None
    presence_calls: int = 0
    presence_window_end: float = 0.0

    def __post_init__(self) -> None:
        self.topic_json = orjson.dumps(self.topic).decode()
        self.set_claims(self.claims, self.token)

    def set_claims(self, claims: dict[str, Any], token: str) -> None:
        self.claims = claims
        self.token = token
        self.role: str = claims.get("role", "anon")
        self.claims_json = orjson.dumps(claims, option=orjson.OPT_SORT_KEYS).decode()
        self.sub = str(claims.get("sub") or "")
        # subscribers with identical claims share one visibility check per change
        self.group = (self.role, self.claims_json)

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")


class Socket:
    """One websocket: its channels and a bounded outgoing queue drained by a writer task."""

    def __init__(self, vsn: str, claims: dict[str, Any], token: str):
        self.vsn = vsn
        self.claims = claims
        self.token = token
        self.channels: dict[str, Channel] = {}
        self.queue: deque[Any] = deque()
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.dead = False  # no more frames are accepted (overflowed or closing)
        self.close_code, self.close_reason = 1000, ""
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()

    def push(self, text: str) -> bool:
        """Queue a frame; False (and the socket is being dropped) if the client is too slow."""
        if self.dead:
            return False
        if len(self.queue) >= MAX_QUEUED_FRAMES or self.queued_bytes + len(text) > MAX_QUEUED_BYTES:
            return False
        self.queue.append(text)
        self.queued_bytes += len(text)
        self.wakeup.set()
        return True

    def push_final(
        self, frames: list[str], code: int = 1008, reason: str = "client too slow: outgoing queue overflowed"
    ) -> None:
        """Drop whatever is queued, send ``frames`` and close (slow consumers, shutdown)."""
        self.dead = True
        self.close_code, self.close_reason = code, reason
        self.queue.clear()
        self.queued_bytes = 0
        for text in frames:
            self.queue.append(text)
        self.queue.append(CLOSE)
        self.wakeup.set()

    async def writer(self, send: Any) -> None:
        try:
            while True:
                while not self.queue:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                item = self.queue.popleft()
                if item is CLOSE:
                    await send(
                        {"type": "websocket.close", "code": self.close_code, "reason": self.close_reason}
                    )
                    break
                self.queued_bytes -= len(item)
                await send({"type": "websocket.send", "text": item})
        except Exception:  # noqa: BLE001 - the client went away: nothing more to write
            pass
        finally:
            if not self.finished.done():
                self.finished.set_result(None)
