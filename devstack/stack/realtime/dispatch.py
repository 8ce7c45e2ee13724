"""From wal2json messages to postgres_changes frames on subscriber queues.

Batches from the replication thread are processed strictly in order by one task, so the
order of changes is preserved (per table and overall). For each batch:
1. build each published change once (typed record, columns, commit timestamp);
2. match it against the bindings (event, schema, table, filter) → channels and ids;
3. decide visibility per distinct (role, claims) group: one round trip per table for the
   whole batch and all its groups (see db.py); service_role sees everything; DELETEs and
   tables without RLS go to roles that may SELECT from the table, as Supabase does;
4. put the frames on the subscribers' queues, then confirm the batch's last commit to the
   slot. A batch whose checks fail because Postgres is away is retried, never dropped.

Each subscriber gets only the columns its role may SELECT (in ``columns``, ``record`` and
``old_record``), as Supabase's apply_rls does: a role with column grants only sees those.

A DELETE on a table with RLS carries only the primary key in ``old_record``, to every
subscriber: the row is gone, so no policy can say who may see the rest of it (Supabase's
rule; filters are still matched against the whole old row). Tables without RLS keep the
old row their replica identity gives.

Rows inserted into realtime.messages (``realtime.send``) are not postgres_changes: they
are handed, in stream order, to ``on_broadcast`` (the service broadcasts them).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from .channels import Binding, Channel
from .db import Database, TableInfo
from .errors import DatabaseUnavailable
from .protocol import encode_change
from .replication import Batch, WalStream, is_messages_table
from .values import commit_timestamp, convert

log = logging.getLogger("rackpilot.realtime.dispatch")

KINDS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}
ACTIONS = {"I": "insert", "U": "update", "D": "delete"}  # the publication's names
RETRY_S = 0.2  # wait before retrying a batch while Postgres is away (s)


@dataclass(frozen=True, slots=True)
class DbBroadcast:
    """A row inserted into realtime.messages: a broadcast on ``topic`` from the database."""

    topic: str  # without the realtime: prefix
    event: str
    payload: Any
    private: bool
    id: str | None


@dataclass(eq=False, slots=True)
class Change:
    schema: str
    table: str
    kind: str
    commit_ts: str
    columns: list[dict[str, str]]
    types: dict[str, str]
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    key: tuple | None  # primary key values (wal2json's) of the row to re-read for RLS
    info: TableInfo | None = None
    match_values: dict[str, Any] | None = None  # what filters see (a DELETE's whole old row)
    targets: dict[Channel, list[int]] = field(default_factory=dict)
    visible: set[Channel] = field(default_factory=set)
    role_columns: dict[str, frozenset[str] | None] = field(default_factory=dict)  # readable, per role
    _encoded: dict[Any, str] = field(default_factory=dict)

    def data_json(self, select: frozenset[str] | None) -> str:
        cached = self._encoded.get(select)
        if cached is not None:
            return cached
        data: dict[str, Any] = {
            "schema": self.schema,
            "table": self.table,
            "commit_timestamp": self.commit_ts,
            "type": self.kind,
            "errors": None,
        }
        columns = self.columns
        record, old = self.record, self.old_record
        if select is not None:
            columns = [c for c in columns if c["name"] in select]
            record = None if record is None else {k: v for k, v in record.items() if k in select}
            old = None if old is None else {k: v for k, v in old.items() if k in select}
        data["columns"] = columns
        if self.kind in ("INSERT", "UPDATE"):
            data["record"] = record
        if self.kind in ("UPDATE", "DELETE"):
            data["old_record"] = old if old is not None else {}
        text = orjson.dumps(data).decode()
        self._encoded[select] = text
        return text


class Dispatcher:
    def __init__(self, db: Database, registry: Registry):
        self.db = db
        self.registry = registry
        self.stream: WalStream | None = None
        self._pending: deque[Batch] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.delivered = 0  # frames queued (count), for diagnostics
        self.on_broadcast = lambda message: None  # set by the service: realtime.messages rows

    def start(self, stream: WalStream) -> None:
        self.stream = stream
        self._task = asyncio.create_task(self._run(), name="realtime-dispatch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def feed(self, batch: Batch) -> None:
        """Called on the loop (call_soon_threadsafe) with a batch from the stream."""
        self._pending.append(batch)
        if self.stream is not None:
            self.stream.backlog += len(batch)
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._pending.popleft()
            while True:
                try:
                    await self._process(batch)
                    break
                except DatabaseUnavailable:
                    await asyncio.sleep(RETRY_S)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one bad batch must not stop Realtime
                    log.exception("dispatching a batch of changes failed")
                    break
            if self.stream is not None:
                self.stream.backlog -= len(batch)

    async def _process(self, batch: Batch) -> None:
        assert self.stream is not None
        spec = self.stream.streaming_spec or self.stream.spec
        changes: list[Change] = []
        items: list[Change | DbBroadcast] = []  # in stream order
        commit_lsn = 0
        for lsn, msg in batch:
            action = msg.get("action")
            if action == "C":
                commit_lsn = max(commit_lsn, lsn)
                continue
            kind = KINDS.get(action)
            if kind is None:
                continue
            schema, table = msg.get("schema", ""), msg.get("table", "")
            if is_messages_table(schema, table):
                if kind == "INSERT":
                    message = self._db_broadcast(msg)
                    if message is not None:
                        items.append(message)
                continue
            if not spec.covers(schema, table) or not spec.wants(ACTIONS[action]):
                continue  # removed from the publication since the stream started
            targets = self.registry.match(schema, table, kind)
            if not targets:
                continue
            change = await self._build(msg, schema, table, kind)
            if change is None:
                continue
            self._filter(change, targets)
            if change.targets:
                changes.append(change)
                items.append(change)
        if changes:
            await self._decide(changes)
        for item in items:
            if isinstance(item, Change):
                self._deliver(item)
            else:
                self.on_broadcast(item)
        if commit_lsn:
            self.stream.flush_lsn = max(self.stream.flush_lsn, commit_lsn)

    async def _build(self, msg: dict, schema: str, table: str, kind: str) -> Change | None:
        typname = self.db.typname
        info = await self.db.table(schema, table)
        record = old = None
        types: dict[str, str] = {}
        columns: list[dict[str, str]] = []
        if kind != "DELETE":
            record = {}
            for col in msg.get("columns") or ():
                t = typname(col.get("typeoid"), col.get("type", "text"))
                types[col["name"]] = t
                columns.append({"name": col["name"], "type": t})
                record[col["name"]] = convert(t, col.get("value"))
        else:
            columns = [{"name": n, "type": t} for n, t in info.columns]
            types = dict(info.columns)
        identity = msg.get("identity")
        if kind != "INSERT":
            old = {}
            for col in identity or ():
                t = typname(col.get("typeoid"), col.get("type", "text"))
                types.setdefault(col["name"], t)
                old[col["name"]] = convert(t, col.get("value"))
        key = None
        pk = msg.get("pk")
        if pk and kind != "DELETE":
            raw = {c["name"]: c.get("value") for c in msg.get("columns") or ()}
            key = tuple(raw.get(p["name"]) for p in pk)
        match_values = record
        if kind == "DELETE":
            match_values = old
            if info.rls and old is not None:
                # the row is gone: RLS cannot say who may see it, so nobody gets more
                # than its key (Supabase sends the primary key only, to everyone)
                names = [n for n, _ in info.pk] or [p["name"] for p in pk or ()]
                old = {n: old[n] for n in names if n in old}
        return Change(
            schema=schema,
            table=table,
            kind=kind,
            commit_ts=commit_timestamp(msg.get("timestamp")),
            columns=columns,
            types=types,
            record=record,
            old_record=old,
            key=key,
            info=info,
            match_values=match_values,
        )

    def _db_broadcast(self, msg: dict) -> DbBroadcast | None:
        """A realtime.messages insert → a broadcast; None if it lacks what one needs
        (topic, event, payload, private), as Supabase Realtime skips such rows."""
        typname = self.db.typname
        row = {
            c["name"]: convert(typname(c.get("typeoid"), c.get("type", "text")), c.get("value"))
            for c in msg.get("columns") or ()
        }
        topic, event, payload, private = (
            row.get("topic"),
            row.get("event"),
            row.get("payload"),
            row.get("private"),
        )
        if not isinstance(topic, str) or not isinstance(event, str) or payload is None or private is None:
            return None
        msg_id = row.get("id")
        return DbBroadcast(
            topic=topic,
            event=event,
            payload=payload,
            private=bool(private),
            id=None if msg_id is None else str(msg_id),
        )

    @staticmethod
    def _filter(change: Change, targets: list[tuple[Channel, Binding]]) -> None:
        out = change.targets
        values = change.match_values
        for channel, binding in targets:
            flt = binding.filter
            if flt is not None and values is not None:
                if change.kind == "DELETE" and flt.column not in values:
                    pass  # Supabase cannot filter DELETEs on columns the replica identity lacks
                elif not flt.matches(values, change.types):
                    continue
            ids = out.get(channel)
            if ids is None:
                out[channel] = [binding.id]
            elif binding.id not in ids:
                ids.append(binding.id)

    async def _decide(self, changes: list[Change]) -> None:
        """Fill ``change.visible`` (which target channels may see each change) and
        ``change.role_columns`` (the columns each of their roles may read)."""
        privs: dict[tuple[str, str, str], tuple[bool, frozenset[str] | None]] = {}
        # per table: the RLS-checked changes, and for each of them its channels by group
        pending: dict[tuple[str, str], list[tuple[Change, dict[tuple, list[Channel]]]]] = {}
        for change in changes:
            by_group: dict[tuple, list[Channel]] = {}
            service = False
            for channel in change.targets:
                if channel.role == "service_role":
                    service = True
                    change.visible.add(channel)
                    continue
                by_group.setdefault(channel.group, []).append(channel)
            # privileges once per role (subscribers' groups mostly share one role)
            may: dict[str, bool] = {}
            for role in {g[0] for g in by_group} | ({"service_role"} if service else set()):
                key = (role, change.schema, change.table)
                answer = privs.get(key)
                if answer is None:
                    answer = privs[key] = await self.db.privileges(*key)
                may[role] = answer[0]
                change.role_columns[role] = answer[1]
            if not by_group:
                continue
            info = change.info
            if change.kind == "DELETE" or info is None or not info.rls:
                for group, chans in by_group.items():
                    if may[group[0]]:
                        change.visible.update(chans)
                continue
            if change.key is None:
                continue  # RLS table without a primary key: nothing to re-read
            allowed = {group: chans for group, chans in by_group.items() if may[group[0]]}
            if allowed:
                pending.setdefault((change.schema, change.table), []).append((change, allowed))
        for (schema, table), items in pending.items():
            groups: dict[tuple, int] = {}
            subs: list[tuple[str, str, str]] = []
            for _, by_group in items:
                for group, chans in by_group.items():
                    if group not in groups:
                        groups[group] = len(subs)
                        subs.append((group[0], group[1], chans[0].sub))
            info = items[0][0].info
            assert info is not None
            seen = await self.db.visible_rows(info, schema, table, subs, [c.key for c, _ in items])
            for group, n in groups.items():
                for i in seen.get(n, ()):
                    change, by_group = items[i]
                    chans = by_group.get(group)
                    if chans:
                        change.visible.update(chans)

    def _deliver(self, change: Change) -> None:
        for channel, ids in change.targets.items():
            if channel not in change.visible:
                continue
            sock = channel.socket
            if sock.dead or channel.socket.channels.get(channel.topic) is not channel:
                continue  # left or replaced since the change was matched
            select = self.registry.projection(channel, ids)
            readable = change.role_columns.get(channel.role)
            if readable is not None:  # the role may SELECT only some columns: only those
                select = readable if select is None else select & readable
            frame = encode_change(
                sock.vsn, channel.topic_json, orjson.dumps(ids).decode(), change.data_json(select)
            )
            if sock.push(frame):
                self.delivered += 1
            else:
                self.registry.overflow(sock)


class Registry:
    """Who listens to what, indexed by (schema, table) for the dispatcher."""

    def __init__(self) -> None:
        self.channels: set[Channel] = set()
        self._exact: dict[tuple[str, str], list[tuple[Channel, Binding]]] = {}
        self._wild: list[tuple[Channel, Binding]] = []
        self._dirty = False
        self.on_overflow = lambda sock: None

    def add(self, channel: Channel) -> None:
        if channel.bindings:
            self.channels.add(channel)
            self._dirty = True

    def remove(self, channel: Channel) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            self._dirty = True

    def _rebuild(self) -> None:
        exact: dict[tuple[str, str], list[tuple[Channel, Binding]]] = {}
        wild: list[tuple[Channel, Binding]] = []
        for channel in self.channels:
            for b in channel.bindings:
                if b.schema != "*" and b.table not in (None, "*"):
                    exact.setdefault((b.schema, b.table), []).append((channel, b))
                else:
                    wild.append((channel, b))
        self._exact, self._wild, self._dirty = exact, wild, False

    def match(self, schema: str, table: str, kind: str) -> list[tuple[Channel, Binding]]:
        if self._dirty:
            self._rebuild()
        out = [(c, b) for c, b in self._exact.get((schema, table), ()) if b.event == "*" or b.event == kind]
        if self._wild:
            out.extend((c, b) for c, b in self._wild if b.wants(schema, table, kind))
        return out

    @staticmethod
    def projection(channel: Channel, ids: list[int]) -> frozenset[str] | None:
        """Columns to send: the union of the matched bindings' ``select`` lists, or all."""
        cols: set[str] = set()
        for b in channel.bindings:
            if b.id in ids:
                if b.select is None:
                    return None
                cols.update(b.select)
        return frozenset(cols)

    def overflow(self, sock: Any) -> None:
        self.on_overflow(sock)
