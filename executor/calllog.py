"""The BMC call log: every Redfish and OME request a job makes, on record in ``bmc_calls``.

What is recorded per request: the job and step (from the logging context variables the
runner and the step engine set, :mod:`executor.log`), the target, the method, the path
(without query secrets: BMC paths carry none, and the query string is dropped anyway),
the HTTP status or the transport error's class, the duration, the first Dell/Redfish
MessageId of an error answer, and for some requests a request body.

Bodies are kept only where they are safe: never for a session login, an account or a
session-service request (``SessionService``, ``AccountService``, OME's ``SessionService``),
and never when the body holds a key that looks like a secret (password, token, secret,
key, community, passphrase) - such a key is replaced by ``"[redacted]"`` - and every
string passes the executor's secret redactor (:data:`executor.log.SECRETS`) as well. Bodies
over 2 KB are not kept. Headers are never recorded (``X-Auth-Token`` lives there).

Calls are buffered in memory (bounded: :data:`MAX_BUFFER`; past it, the newest are counted
as dropped, never blocking a BMC call) and written in batches by :func:`flush_loop`
through ``executor_record_bmc_calls``. The runner starts that loop and flushes once more on
shutdown. Threads started with ``loop.run_in_executor`` do not inherit context variables;
code that fans out that way runs its work through ``contextvars.copy_context().run`` so
the calls keep their job and step.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from .log import SECRETS, job_id_var, step_var

log = logging.getLogger("rackpilot.executor.calllog")

MAX_BUFFER = 50_000  # calls held in memory before new ones are dropped (count)
BATCH = 2000  # calls per RPC (count)
MAX_BODY = 2048  # largest request body kept (characters of JSON)
_NO_BODY_PATHS = re.compile(r"(SessionService|AccountService|/Accounts|/Sessions)", re.IGNORECASE)
_SECRET_KEY = re.compile(r"pass|secret|token|key|community|credential|auth", re.IGNORECASE)
REDACTED = "[redacted]"


def _scrub(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) else _scrub(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    if isinstance(obj, str):
        return SECRETS.redact(obj)
    return obj


def safe_body(path: str, body: Any) -> Any:
    """The request body as it may be stored, or None."""
    if body is None or _NO_BODY_PATHS.search(path):
        return None
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(body, (dict, list)):
        return None
    clean = _scrub(body)
    text = json.dumps(clean, default=str)
    return clean if len(text) <= MAX_BODY else None


def _first(body: Any, key: str, fallback: str) -> str | None:
    """``key`` of the first ``@Message.ExtendedInfo`` entry of a Redfish/Dell error body
    (``error`` or the body itself) that has it, else the error's ``fallback`` field."""
    if not isinstance(body, dict):
        return None
    err = body.get("error", body)
    if not isinstance(err, dict):
        return None
    for info in err.get("@Message.ExtendedInfo") or []:
        if isinstance(info, dict) and info.get(key):
            return str(info[key])
    return str(err[fallback]) if err.get(fallback) else None


def message_id(body: Any) -> str | None:
    """The first MessageId of a Redfish/Dell error body (``error.@Message.ExtendedInfo``)."""
    found = _first(body, "MessageId", "code")
    return found[:128] if found is not None else None


def _note(body: Any) -> str | None:
    found = _first(body, "Message", "message")
    return (SECRETS.redact(found)[:1000] or None) if found is not None else None


class CallLog:
    """The process's buffer of calls not yet written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf: list[dict[str, Any]] = []
        self.dropped = 0
        self.recorded = 0

    def record(
        self,
        *,
        target: str,
        protocol: str,
        method: str,
        url: str,
        status: int | None,
        seconds: float,
        error: str | None = None,
        response_body: Any = None,
        request_body: Any = None,
    ) -> None:
        job = job_id_var.get()
        if job is None:
            return  # not a job's call (a check, a test tool): nothing to attach it to
        path = urlsplit(url).path or url
        entry: dict[str, Any] = {
            "job_id": job,
            "step": step_var.get(),
            "target": target[:300],
            "protocol": protocol,
            "method": method.upper()[:7],
            "path": path[:1000],
            "status": status,
            "duration_ms": max(0, int(seconds * 1000)),
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        if error:
            entry["error"] = SECRETS.redact(error)[:500]
        if status is not None and status >= 400:
            entry["message_id"] = message_id(response_body)
            entry["response_note"] = _note(response_body)
        body = safe_body(path, request_body)
        if body is not None:
            entry["request_body"] = body
        with self._lock:
            if len(self._buf) >= MAX_BUFFER:
                self.dropped += 1
                return
            self._buf.append(entry)
            self.recorded += 1

    def take(self, n: int = BATCH) -> list[dict[str, Any]]:
        with self._lock:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def put_back(self, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            self._buf[:0] = entries[: max(0, MAX_BUFFER - len(self._buf))]

    def pending(self) -> int:
        with self._lock:
            return len(self._buf)

    async def flush(self, control: Any, executor_id: str) -> int:
        """Write everything buffered; on a control-plane error the batch goes back."""
        done = 0
        while True:
            batch = self.take()
            if not batch:
                return done
            try:
                await control.call(
                    "executor_record_bmc_calls", {"p_executor_id": executor_id, "p_calls": batch}
                )
            except asyncio.CancelledError:
                self.put_back(batch)  # stopping: the final flush writes them
                raise
            except Exception as exc:  # noqa: BLE001 - the log must never take a job down
                self.put_back(batch)
                log.warning("could not store %d BMC call(s): %s", len(batch), type(exc).__name__)
                return done
            done += len(batch)

    async def flush_loop(
        self, control: Any, executor_id: str, stop: asyncio.Event, interval: float = 0.5
    ) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            await self.flush(control, executor_id)


CALLS = CallLog()


def _json_or_none(response: Any) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def attach_requests(session: Any, target: str, protocol: str = "redfish") -> None:
    """Record every request ``session`` (a ``requests.Session``) makes from now on."""
    inner = session.request
    if getattr(inner, "_rackpilot_logged", False):
        return

    def request(method: str, url: str, *args: Any, **kw: Any) -> Any:
        t0 = time.monotonic()
        body = kw.get("json", kw.get("data"))
        try:
            r = inner(method, url, *args, **kw)
        except Exception as exc:
            CALLS.record(
                target=target,
                protocol=protocol,
                method=method,
                url=url,
                status=None,
                seconds=time.monotonic() - t0,
                error=type(exc).__name__,
                request_body=body,
            )
            raise
        CALLS.record(
            target=target,
            protocol=protocol,
            method=method,
            url=url,
            status=r.status_code,
            seconds=time.monotonic() - t0,
            response_body=_json_or_none(r) if r.status_code >= 400 else None,
            request_body=body,
        )
        return r

    request._rackpilot_logged = True  # type: ignore[attr-defined]
    session.request = request


def httpx_hooks(target: str, protocol: str = "ome") -> dict[str, list[Any]]:
    """``event_hooks`` for an ``httpx.AsyncClient``: every answered request is recorded
    (a request that got no answer surfaces as the client's own error instead)."""

    async def on_request(request: Any) -> None:
        request.extensions["rackpilot_t0"] = time.monotonic()

    async def on_response(response: Any) -> None:
        req = response.request
        t0 = req.extensions.get("rackpilot_t0", time.monotonic())
        body = None
        if response.status_code >= 400:
            await response.aread()
            body = _json_or_none(response)
        content = None
        with contextlib.suppress(Exception):
            content = req.content
        CALLS.record(
            target=target,
            protocol=protocol,
            method=req.method,
            url=str(req.url),
            status=response.status_code,
            seconds=time.monotonic() - t0,
            response_body=body,
            request_body=content,
        )

    return {"request": [on_request], "response": [on_response]}
