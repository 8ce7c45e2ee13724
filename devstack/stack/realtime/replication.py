"""Read changes from a logical replication slot (wal2json) over the streaming protocol.

A thread owns a psycopg2 ``LogicalReplicationConnection``: it reads wal2json
format-version 2 messages (one JSON object per change, plus ``B``/``C`` per transaction),
parses them and hands batches to the asyncio loop with ``call_soon_threadsafe``. The loop
reports back how far it has dispatched (``flush_lsn``); only that position is confirmed to
the slot, so a crash re-delivers rather than loses. Connection loss (a Postgres restart)
is retried with backoff and the stream resumes from the slot's confirmed position.

The set of streamed tables is the ``supabase_realtime`` publication's, given to wal2json
as ``add-tables`` so unrelated tables never produce JSON; when the publication changes the
stream restarts with the new list.
"""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extras

from .values import loads

log = logging.getLogger("rackpilot.realtime.wal")

BATCH_MAX = 512  # wal2json messages handed to the loop at once (count)
IDLE_WAIT_S = 0.1  # select() timeout while idle: bounds feedback and restart latency (s)
BACKOFF_START_S = 0.1  # first reconnect delay after losing the connection (s)
BACKOFF_MAX_S = 2.0  # longest reconnect delay (s)
STATUS_INTERVAL_S = 5  # standby status messages at least this often (s)
BACKLOG_MAX = 20_000  # messages handed over but not yet dispatched before reading pauses (count)


@dataclass(frozen=True)
class StreamSpec:
    """What wal2json should emit: the publication's tables and actions."""

    all_tables: bool = False
    tables: frozenset[tuple[str, str]] = frozenset()
    actions: frozenset[str] = frozenset({"insert", "update", "delete"})

    def covers(self, schema: str, table: str) -> bool:
        return self.all_tables or (schema, table) in self.tables

    def wants(self, action: str) -> bool:
        """Does the publication publish this action (insert, update, delete)?"""
        return action in self.actions

    def options(self) -> dict[str, str]:
        # inserts are always decoded: rows inserted into realtime.messages (whose
        # partitions are always streamed, as Supabase Realtime's own publication does)
        # are broadcasts from the database; the dispatcher drops the published tables'
        # actions the publication leaves out
        opts = {
            "format-version": "2",
            "include-timestamp": "1",
            "include-type-oids": "1",
            "include-pk": "1",
            "actions": ",".join(sorted(self.actions | {"insert"})),
        }
        if not self.all_tables:
            tables = [f"{_esc(s)}.{_esc(t)}" for s, t in sorted(self.tables)]
            opts["add-tables"] = ",".join([*tables, f"{MESSAGES_SCHEMA}.*"])
        return opts


MESSAGES_SCHEMA = "realtime"  # realtime.messages and its partitions (messages_*)


def is_messages_table(schema: str, table: str) -> bool:
    return schema == MESSAGES_SCHEMA and (table == "messages" or table.startswith("messages_"))


def _esc(name: str) -> str:
    """wal2json's table-list escaping (backslash before its separators and wildcards)."""
    out = []
    for ch in name:
        if ch in " ',.*\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


Batch = list[tuple[int, dict]]  # (data_start LSN, wal2json message)


@dataclass
class WalStream:
    dsn: str
    slot: str
    loop: asyncio.AbstractEventLoop
    deliver: Callable[[Batch], None]
    on_state: Callable[[bool], None] = lambda up: None
    spec: StreamSpec = field(default_factory=StreamSpec)
    flush_lsn: int = 0  # written by the loop: everything up to here is on subscriber queues
    backlog: int = 0  # written by the loop: messages received but not dispatched yet
    handed_lsn: int = 0  # highest commit handed to the loop (thread-owned)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._thread: threading.Thread | None = None
        self._spec_waiters: list[tuple[StreamSpec, asyncio.Future]] = []
        self._lock = threading.Lock()
        self.streaming_spec: StreamSpec | None = None

    # --- control (from the loop) ------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"wal-{self.slot}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def set_spec(self, spec: StreamSpec) -> asyncio.Future:
        """Stream ``spec`` from now on; the future resolves once the stream runs with it."""
        fut = self.loop.create_future()
        with self._lock:
            if spec == self.spec and self.streaming_spec == spec:
                fut.set_result(None)
                return fut
            self.spec = spec
            self._spec_waiters.append((spec, fut))
        self._restart.set()
        return fut

    # --- thread -------------------------------------------------------------------------
    def _notify(self, fn: Callable, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            conn = None
            try:
                conn = psycopg2.connect(
                    self.dsn,
                    connection_factory=psycopg2.extras.LogicalReplicationConnection,
                    options="-c TimeZone=UTC",
                    connect_timeout=5,
                )
                cur = conn.cursor()
                with self._lock:
                    spec = self.spec
                    self._restart.clear()
                cur.start_replication(
                    slot_name=self.slot,
                    decode=False,
                    options=spec.options(),
                    status_interval=STATUS_INTERVAL_S,
                )
                self.streaming_spec = spec
                self._resolve_waiters(spec)
                self._notify(self.on_state, True)
                backoff = BACKOFF_START_S
                self._consume(cur)
            except (psycopg2.Error, OSError) as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "replication stream interrupted (%s); retrying in %.1fs", type(exc).__name__, backoff
                )
                self._notify(self.on_state, False)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            finally:
                self.streaming_spec = None
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass

    def _resolve_waiters(self, spec: StreamSpec) -> None:
        with self._lock:
            ready = [f for s, f in self._spec_waiters if s == spec]
            self._spec_waiters = [(s, f) for s, f in self._spec_waiters if s != spec]
        for fut in ready:
            self._notify(_set_done, fut)

    def _consume(self, cur) -> None:
        # Each transaction is held until its commit message, then handed over whole. A
        # reconnect resumes from the slot's confirmed position, which Postgres may have
        # kept only in memory (it persists it at checkpoints), so transactions already
        # handed over can come again: any commit at or below ``floor`` is dropped.
        floor = self.handed_lsn
        sent_flush = 0
        last_status = time.monotonic()
        batch: Batch = []
        txn: Batch = []
        while not self._stop.is_set() and not self._restart.is_set():
            if self.backlog > BACKLOG_MAX:  # the loop is behind: let the slot hold the rest
                self._hand_over(batch)
                batch = []
                self._stop.wait(0.01)
                continue
            msg = cur.read_message()
            if msg is not None:
                data = loads(msg.payload)
                action = data.get("action")
                if action == "B":
                    txn = [(msg.data_start, data)]
                elif action == "C":
                    txn.append((msg.data_start, data))
                    if msg.data_start > floor:
                        batch.extend(txn)
                    txn = []
                    if len(batch) >= BATCH_MAX:
                        self._hand_over(batch)
                        batch = []
                else:
                    txn.append((msg.data_start, data))
                continue
            self._hand_over(batch)
            batch = []
            flush = self.flush_lsn
            now = time.monotonic()
            if flush > sent_flush or now - last_status > STATUS_INTERVAL_S:
                cur.send_feedback(write_lsn=flush, flush_lsn=flush, apply_lsn=flush)
                sent_flush = flush
                last_status = now
            select.select([cur], [], [], IDLE_WAIT_S)
        self._hand_over(batch)

    def _hand_over(self, batch: Batch) -> None:
        for i in range(0, len(batch), BATCH_MAX):
            chunk = batch[i : i + BATCH_MAX]
            self._notify(self.deliver, chunk)
        for lsn, data in reversed(batch):
            if data.get("action") == "C":
                self.handed_lsn = max(self.handed_lsn, lsn)
                break


def _set_done(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
