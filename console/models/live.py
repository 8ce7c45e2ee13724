"""Realtime for the console: one channel per feed, changes dispatched to the models.

supabase-py's Realtime is async only; in Jupyter the kernel's event loop keeps running
between cells, so a feed started with ``await feed.start()`` keeps delivering changes to
its sinks (and so to the widgets) while the operator works in other cells.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from console.errors import ServiceUnavailable

if TYPE_CHECKING:
    from realtime import AsyncRealtimeChannel

    from console.session import Session
    from supabase import AsyncClient

SUBSCRIBE_TIMEOUT_S = 15.0  # how long start() waits for the channel to be joined (s)
JOB_TABLES = ("jobs", "job_tasks", "workflow_executions", "job_blockers")

Sink = Callable[[dict[str, Any]], Any]


class LiveFeed:
    """Postgres changes of the job tables, as the signed-in user may see them (Realtime
    applies RLS per subscriber). ``job_id`` narrows the feed to one job, the way the job
    view subscribes: ``id=eq.<job>`` on jobs and ``job_id=eq.<job>`` on the others."""

    def __init__(
        self, session: Session, *, tables: tuple[str, ...] = JOB_TABLES, job_id: str | None = None
    ) -> None:
        self.session = session
        self.tables = tables
        self.job_id = job_id
        self.sinks: list[Sink] = []
        self.errors: list[str] = []
        self.received = 0
        self._client: AsyncClient | None = None
        self._channel: AsyncRealtimeChannel | None = None
        self._untoken: Callable[[], None] = lambda: None

    def add_sink(self, fn: Sink) -> None:
        self.sinks.append(fn)

    def _dispatch(self, payload: Any) -> None:
        # the change as realtime hands it (a PostgresChangesPayload: a dict), given to every sink
        self.received += 1
        for fn in list(self.sinks):
            try:
                fn(payload)
            except Exception as exc:  # one broken view must not stop the feed for the others
                self.errors.append(f"{type(exc).__name__}: {exc}")

    async def start(self) -> LiveFeed:
        from realtime import RealtimeSubscribeStates
        from realtime.types import RealtimePostgresChangesListenEvent

        self._client, self._untoken = await self.session.realtime_client()
        topic = f"console-{self.job_id or 'all'}-{uuid.uuid4().hex[:8]}"
        ch = self._client.channel(topic)
        for table in self.tables:
            flt = None
            if self.job_id:
                flt = f"id=eq.{self.job_id}" if table == "jobs" else f"job_id=eq.{self.job_id}"
            ch = ch.on_postgres_changes(
                RealtimePostgresChangesListenEvent.All,
                callback=self._dispatch,
                table=table,
                schema="public",
                filter=flt,
            )
        joined: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_state(state: Any, err: Exception | None) -> None:
            if joined.done():
                if state != RealtimeSubscribeStates.SUBSCRIBED:
                    self.errors.append(f"realtime channel {state}: {err or ''}".strip())
                return
            if state == RealtimeSubscribeStates.SUBSCRIBED:
                joined.set_result(True)
            else:
                joined.set_exception(
                    ServiceUnavailable(
                        f"Realtime refused the subscription ({state}): {err or ''}", code="realtime_refused"
                    )
                )

        await ch.subscribe(on_state)
        self._channel = ch
        try:
            await asyncio.wait_for(joined, SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise ServiceUnavailable(
                "Realtime did not confirm the subscription in time", code="realtime_timeout"
            ) from None
        return self

    async def stop(self) -> None:
        self._untoken()
        if self._client is not None:
            try:
                await self._client.remove_all_channels()
            finally:
                self._client = None
                self._channel = None

    @property
    def running(self) -> bool:
        return self._client is not None
