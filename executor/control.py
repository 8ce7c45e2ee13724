"""The executor's only way to the control plane: supabase-py over HTTPS with the service key.

Every call is a PostgREST rpc (``/rest/v1/rpc/<fn>``) or a table read, exactly what hosted
Supabase serves; the executor never opens a Postgres connection.

Delivery rules for writes:

* **never dropped** - a write that fails for a transient reason (network error, timeout,
  HTTP 5xx, Postgres restarting or refusing connections, serialization failure) is retried
  with exponential backoff and jitter (``control_retry_initial`` doubling up to
  ``control_retry_max``) until it succeeds, is refused for a permanent reason, or the
  executor stops. The RPCs it retries are idempotent on the server side (a step report is
  an upsert keyed by job and step), so a retry after a lost response is harmless;
* **ordered per job** - writes for one job go through that job's lock, one at a time, so a
  "completed" can never overtake its "running";
* **fenced** - a refusal for a stale lease epoch raises :class:`StaleEpoch` at once and is
  never retried.

Response times of every request are sampled for the heartbeat's metrics (p50/p95).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
from postgrest.exceptions import APIError

from supabase import AsyncClient, AsyncClientOptions, acreate_client

from . import ExecutorError
from .config import ExecutorSettings
from .log import SECRETS
from .steps import Fenced

log = logging.getLogger("rackpilot.executor.control")

# PostgREST codes that mean "the database is not reachable right now"
_TRANSIENT_PGRST = {"PGRST000", "PGRST001", "PGRST002", "PGRST003"}
# SQLSTATE classes/codes worth a retry: connection exceptions, shutdown in progress,
# insufficient resources, serialization failure and deadlock.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "53", "40001", "40P01", "55P03")
# The message prefix of the data model's refusal of a lease (SQLSTATE P0001, hint
# rackpilot.fenced; supabase/migrations/*_executor_rpcs.sql): the one it raises.
_FENCE_PREFIX = "stale_epoch"
# The refusal of every executor RPC once an admin re-keyed this identity and the new key
# registered (executor_row() compares the key id header below with the bound key).
REPLACED_PREFIX = "executor_replaced"
KEY_ID_HEADER = "X-Rackpilot-Key-Id"


class ControlPlaneError(ExecutorError):
    """Root of control-plane failures."""


class Rejected(ControlPlaneError):
    """The control plane refused the call for a reason a retry cannot fix."""

    def __init__(self, fn: str, code: str | None, message: str, hint: str | None = None):
        super().__init__(f"{fn}: {message} ({code})")
        self.fn, self.code, self.reason, self.hint = fn, code, message, hint


class Unavailable(ControlPlaneError):
    """The control plane stayed unreachable until the caller gave up (executor stopping)."""


class StaleEpoch(Fenced, ControlPlaneError):
    """A write carried a lease epoch the control plane no longer accepts."""


def classify(exc: BaseException) -> str:
    """``"transient"``, ``"fenced"`` or ``"permanent"`` for an error of one request."""
    if isinstance(exc, httpx.TransportError):
        return "transient"
    if isinstance(exc, APIError):
        code = str(exc.code or "")
        message = str(exc.message or "")
        if message.startswith(_FENCE_PREFIX):
            return "fenced"
        # A bare HTTP status (a non-PostgREST error body) has 3 digits; SQLSTATEs have 5.
        if code.isdigit() and len(code) == 3:
            status = int(code)
            return "transient" if status >= 500 or status in (408, 429) else "permanent"
        if code in _TRANSIENT_PGRST or code.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return "transient"
        return "permanent"
    return "permanent"


class LatencyWindow:
    """Recent request durations for p50/p95 in the heartbeat."""

    def __init__(self, size: int = 512):
        self.samples: deque[float] = deque(maxlen=size)
        self.errors = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        s = sorted(self.samples)
        if not s:
            return {"api_calls": 0, "api_errors": self.errors}
        return {
            "api_calls": len(s),
            "api_errors": self.errors,
            "api_p50_ms": round(s[len(s) // 2] * 1000, 2),
            "api_p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))] * 1000, 2),
        }


class ControlPlane:
    """supabase-py client wrapper with retries, per-job ordering and fencing."""

    def __init__(
        self,
        settings: ExecutorSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        key_id: str | None = None,
    ):
        self.settings = settings
        # sent on every request, so the control plane refuses a process whose key no longer
        # holds the identity (executor_replaced); on_replaced hears of it once
        self.key_id = key_id
        self.on_replaced: Callable[[str], None] | None = None
        self.client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._sleep = sleep
        self.latency = LatencyWindow()
        self.stopping = asyncio.Event()
        SECRETS.add(settings.supabase_key.get_secret_value())

    async def start(self) -> AsyncClient:
        if self.client is None:

            async def _timed_req(request: httpx.Request) -> None:
                request.extensions["rackpilot_t0"] = time.perf_counter()

            async def _timed_resp(response: httpx.Response) -> None:
                t0 = response.request.extensions.get("rackpilot_t0")
                if t0 is not None:
                    self.latency.add(time.perf_counter() - t0)

            self._http = httpx.AsyncClient(
                timeout=self.settings.control_timeout,
                event_hooks={"request": [_timed_req], "response": [_timed_resp]},
            )
            options = AsyncClientOptions(
                httpx_client=self._http,
                postgrest_client_timeout=self.settings.control_timeout,
                auto_refresh_token=False,
                persist_session=False,
            )
            if self.key_id:
                options.headers = {**options.headers, KEY_ID_HEADER: self.key_id}
            self.client = await acreate_client(
                self.settings.supabase_url, self.settings.supabase_key.get_secret_value(), options
            )
        return self.client

    async def close(self) -> None:
        self.stopping.set()
        if self.client is not None:
            try:
                await self.client.realtime.close()
            except Exception:  # noqa: BLE001 - closing a socket that is already gone
                pass
        if self._http is not None:
            await self._http.aclose()
        self.client = None

    def job_lock(self, job_id: str) -> asyncio.Lock:
        lock = self._locks.get(job_id)
        if lock is None:
            lock = self._locks[job_id] = asyncio.Lock()
        return lock

    def forget_job(self, job_id: str) -> None:
        self._locks.pop(job_id, None)

    # --- the retry core ------------------------------------------------------------------
    async def _once(self, fn: str, params: dict[str, Any]) -> Any:
        client = await self.start()
        resp = await client.rpc(fn, params).execute()
        return resp.data

    def rpc_url(self, fn: str) -> str:
        return f"{self.settings.supabase_url}/rest/v1/rpc/{fn}"

    def _rejected(self, what: str, exc: BaseException) -> Rejected:
        message = SECRETS.redact(str(getattr(exc, "message", None) or exc))
        if message.startswith(REPLACED_PREFIX) and self.on_replaced is not None:
            self.on_replaced(message)
        hint = getattr(exc, "hint", None)
        return Rejected(
            what, getattr(exc, "code", None), message, SECRETS.redact(hint) if isinstance(hint, str) else None
        )

    async def call(
        self,
        fn: str,
        params: dict[str, Any],
        *,
        retry: bool = True,
        until: asyncio.Event | None = None,
        log_every: bool = False,
    ) -> Any:
        """Call rpc ``fn``; retry transient failures until success (or ``until``/stop is set).
        Retry lines name the URL and the error; ``log_every`` logs every retry (start-up),
        otherwise the 1st, 5th and every 20th."""
        delay = self.settings.control_retry_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(fn, params)
            except (httpx.TransportError, APIError) as exc:
                kind = classify(exc)
                if kind == "fenced":
                    raise StaleEpoch(SECRETS.redact(str(getattr(exc, "message", exc)))) from None
                if kind == "permanent":
                    raise self._rejected(fn, exc) from None
                self.latency.errors += 1
                if not retry:
                    raise Unavailable(f"{fn}: {type(exc).__name__}") from None
                stop = until if until is not None else self.stopping
                if stop.is_set():
                    raise Unavailable(
                        f"{fn}: gave up after {attempt} attempt(s), executor stopping"
                    ) from None
                pause = random.uniform(delay / 2, delay)
                if log_every or attempt in (1, 5) or attempt % 20 == 0:
                    log.warning(
                        "control plane call %s to %s failed (%s), retrying in %.1fs",
                        fn,
                        self.rpc_url(fn),
                        SECRETS.redact(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"),
                        pause,
                        extra={"attempt": attempt, "url": self.rpc_url(fn)},
                    )
                # Full jitter keeps several executors from hammering a recovering gateway together.
                await self._sleep(pause)
                delay = min(delay * 2, self.settings.control_retry_max)

    async def job_call(self, job_id: str, fn: str, params: dict[str, Any], **kw: Any) -> Any:
        """A write for one job, in order with its other writes."""
        async with self.job_lock(job_id):
            return await self.call(fn, params, **kw)

    async def select(
        self, table: str, columns: str, *, retry: bool = True, **filters: Any
    ) -> list[dict[str, Any]]:
        """A table read with ``eq``/``in`` filters, retried like a write (``retry=False``:
        :class:`Unavailable` at the first transient failure)."""
        delay = self.settings.control_retry_initial
        while True:
            client = await self.start()
            query = client.table(table).select(columns)
            for col, value in filters.items():
                query = (
                    query.in_(col, list(value))
                    if isinstance(value, list | tuple | set)
                    else query.eq(col, value)
                )
            try:
                # PostgREST answers a select with a JSON array of row objects
                return cast(list[dict[str, Any]], (await query.execute()).data or [])
            except (httpx.TransportError, APIError) as exc:
                if classify(exc) != "transient":
                    raise self._rejected(f"select {table}", exc) from None
                self.latency.errors += 1
                if not retry:
                    raise Unavailable(
                        f"select {table}: {type(exc).__name__}: "
                        f"{SECRETS.redact(str(getattr(exc, 'message', None) or exc))}"
                    ) from None
                if self.stopping.is_set():
                    raise Unavailable(f"select {table}: executor stopping") from None
                await self._sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.settings.control_retry_max)
