"""One retry rule and one error mapping for the HTTP target clients: the Redfish client
(requests, through sushy), the OME client (httpx) and the harness's asyncio Redfish path.

Retry (`RetryPolicy`, `retry`, `aretry`). What is tried again, and nothing else:

- a transport failure (connection refused, reset or dropped, connect or read timeout), for
  any method: BMCs drop connections while busy or restarting, and the OME appliance while
  it restarts its web service. A TLS failure is never retried: it is a configuration
  problem, and trying again only repeats it.
- an HTTP 5xx answer to a GET (a GET can be sent twice): iDRAC web services answer 500
  transiently under load. A 5xx to any other method is reported at once, since the
  device may have acted on it.
- a named vendor condition, at the call site that knows it, with a policy of its own
  (iDRAC RAC0218, session table full: `RetryPolicy.session_slot`).

A policy is bounded by `attempts` (tries in all, the first included; a count) and/or
`budget` (seconds from the first try after which no new try starts), `delay` (seconds)
apart. The defaults come from `Timeouts` (endpoint.py): `Timeouts.retries` (2) retries,
so 3 attempts, `Timeouts.retry_delay` (2 s) apart; the session-slot wait polls every
`Timeouts.poll` (5 s) for at most `Timeouts.session_wait` (120 s). The Redfish client
leaves the per-request rule to sushy's connector, which applies the same one with the
same two settings (`server_side_retries`, `server_side_retries_delay`).

Error mapping (`http_error`, `transport_error`): every failure becomes one `TargetError`
subclass (errors.py) naming the target, the operation and, where the device sent one, its
message id: a vendor message id in `MESSAGE_ERRORS` first, then 401/403 (access denied),
5xx (the device failing) and any other 4xx (the request refused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .endpoint import Timeouts
from .errors import (
    AuthenticationFailed,
    JobAlreadyRunning,
    LifecycleControllerNotReady,
    PendingConfiguration,
    RequestRejected,
    SessionLimitReached,
    TargetError,
    TargetServerError,
    TargetUnreachable,
    TLSConfigurationError,
)

LOG = logging.getLogger("rackpilot.targets.transport")
T = TypeVar("T")

# Vendor message ids (the suffix after the registry prefix, e.g. IDRAC.2.8.RAC0218) -> error class.
MESSAGE_ERRORS: dict[str, type[TargetError]] = {
    "RAC0218": SessionLimitReached,  # iDRAC: session table full (8 on iDRAC9)
    "LC068": PendingConfiguration,  # iDRAC: pending attribute changes / config job in progress
    "RAC0679": JobAlreadyRunning,  # iDRAC: another job operation is running
    "SYS518": LifecycleControllerNotReady,  # iDRAC: iDRAC/LC not ready after boot or reset
    "RAC0508": AuthenticationFailed,  # iDRAC: login refused
    "CSEC5017": SessionLimitReached,  # OME: the appliance's API session cap is reached
}
# What an operator does about a vendor message id, where the class's own hint does not fit.
MESSAGE_HINTS: dict[str, str] = {
    "CSEC5017": "close unused OME API sessions or wait for them to expire",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failed call is tried again (see the module docstring)."""

    attempts: int | None = 3  # tries in all, the first included (count); None: only `budget` bounds them
    delay: float = 2.0  # seconds between two tries
    budget: float | None = None  # seconds after the first try when no new try starts; None: no limit

    def __post_init__(self) -> None:
        if self.attempts is None and self.budget is None:
            raise ValueError("a retry policy needs attempts, a budget, or both")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts counts the first try too: at least 1")

    @classmethod
    def requests(cls, t: Timeouts) -> RetryPolicy:
        """One request: `t.retries` retries (so `t.retries + 1` attempts), `t.retry_delay` apart."""
        return cls(attempts=t.retries + 1, delay=t.retry_delay)

    @classmethod
    def session_slot(cls, t: Timeouts) -> RetryPolicy:
        """A login refused for a full session table: every `t.poll` for `t.session_wait`."""
        return cls(attempts=None, delay=t.poll, budget=t.session_wait)

    def again(self, attempt: int, started: float) -> bool:
        """Whether a try after the `attempt`-th (1-based), begun at `started`
        (time.monotonic), may start."""
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return self.budget is None or time.monotonic() - started < self.budget


def retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retryable: Callable[[TargetError], bool],
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[TargetError], None] | None = None,
) -> T:
    """`fn()`, tried again while it raises a TargetError that `retryable` accepts and
    `policy` allows another try; the last error is raised as it is. Each retry is logged
    (INFO), or told to `on_retry` instead."""
    started, attempt = time.monotonic(), 1
    while True:
        try:
            return fn()
        except TargetError as exc:
            if not retryable(exc) or not policy.again(attempt, started):
                raise
            _note_retry(exc, policy, attempt, on_retry)
        sleep(policy.delay)
        attempt += 1


async def aretry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[TargetError], bool],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[TargetError], None] | None = None,
) -> T:
    """`retry` for a coroutine function."""
    started, attempt = time.monotonic(), 1
    while True:
        try:
            return await fn()
        except TargetError as exc:
            if not retryable(exc) or not policy.again(attempt, started):
                raise
            _note_retry(exc, policy, attempt, on_retry)
        await sleep(policy.delay)
        attempt += 1


def _note_retry(
    exc: TargetError, policy: RetryPolicy, attempt: int, on_retry: Callable[[TargetError], None] | None
) -> None:
    if on_retry is not None:
        on_retry(exc)
    else:
        LOG.info("%s; trying again in %g s (attempt %d)", exc, policy.delay, attempt + 1)


def retryable_request(method: str) -> Callable[[TargetError], bool]:
    """The per-request rule: a transport failure for any method, a 5xx for a GET."""

    def ok(err: TargetError) -> bool:
        if isinstance(err, TargetUnreachable):
            return True
        return isinstance(err, TargetServerError) and method.upper() == "GET"

    return ok


# ---- error mapping -------------------------------------------------------------------------------
def message_ids(body: Any) -> list[str]:
    """Message ids in a Redfish error body (`error.@Message.ExtendedInfo[].MessageId`, then `error.code`)."""
    if not isinstance(body, dict):
        return []
    err = body.get("error", body)
    if not isinstance(err, dict):
        return []
    infos = err.get("@Message.ExtendedInfo") or []
    ids = [str(i.get("MessageId", "")) for i in infos if isinstance(i, dict)]
    if err.get("code"):
        ids.append(str(err["code"]))
    return [i for i in ids if i]


def short_id(message_id: str) -> str:
    return message_id.rsplit(".", 1)[-1]


def error_message(body: Any) -> str:
    """The first message of a Redfish error body, or its `error.message`."""
    if not isinstance(body, dict):
        return ""
    err = body.get("error", body)
    if not isinstance(err, dict):
        return ""
    infos = err.get("@Message.ExtendedInfo") or []
    for i in infos:
        if isinstance(i, dict) and i.get("Message"):
            return str(i["Message"])
    return str(err.get("message") or "")


def http_error(
    status: int, body: Any, *, peer: str, target: str, operation: str, raw_text: str = ""
) -> TargetError:
    """The error for an HTTP answer of `status` >= 400 with the (parsed JSON) `body`;
    `peer` names the device in the message ("the BMC", "OME"); `raw_text`, the start of a
    body that is not JSON, stands in for the device's message."""
    ids = message_ids(body)
    text = error_message(body) or " ".join(raw_text.split())[:200]
    for raw_id in ids:
        mid = short_id(raw_id)
        cls = MESSAGE_ERRORS.get(mid)
        if cls is not None:
            return cls(
                text or raw_id,
                target=target,
                operation=operation,
                message_id=mid,
                hint=MESSAGE_HINTS.get(mid),
            )
    msg = text or f"HTTP {status}"
    mid_or_none = short_id(ids[0]) if ids else None
    if status in (401, 403):
        return AuthenticationFailed(
            f"access denied (HTTP {status})" + (f": {text}" if text else ""),
            target=target,
            operation=operation,
            message_id=mid_or_none,
        )
    if status >= 500:
        return TargetServerError(
            f"{peer} answered HTTP {status}: {msg}",
            target=target,
            operation=operation,
            message_id=mid_or_none,
        )
    return RequestRejected(
        f"{peer} refused the request (HTTP {status}): {msg}",
        target=target,
        operation=operation,
        message_id=mid_or_none,
    )


def _chain(exc: BaseException) -> tuple[str, list[str]]:
    """The text of the exception and its causes, and their class names: what a transport
    failure is read from (sushy's ConnectionError carries the requests error in its text,
    httpx chains the ssl error as the cause)."""
    texts: list[str] = []
    names: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts.append(str(e))
        names.append(type(e).__name__)
        e = e.__cause__ or e.__context__
    return " | ".join(texts), names


def transport_error(exc: BaseException, *, peer: str, target: str, operation: str) -> TargetError:
    """The error for a request that got no HTTP answer (a requests or httpx error, or
    sushy's ConnectionError)."""
    text, names = _chain(exc)
    low = text.lower()
    if any("SSL" in n for n in names) or "SSLError" in text or "certificate" in low:
        return TLSConfigurationError(
            "TLS handshake failed: the certificate is not trusted", target=target, operation=operation
        )
    if "read timed out" in low or "readtimeout" in low or "ReadTimeout" in names:
        what = f"{peer} accepted the connection but did not answer within the read timeout"
    elif "connecttimeout" in low or "timed out" in low or any("Timeout" in n for n in names):
        what = f"connection to {peer} timed out"
    elif "refused" in low:
        what = f"connection refused by {peer}'s address"
    else:
        what = f"no answer from {peer} (connection dropped)"
    return TargetUnreachable(what, target=target, operation=operation)


__all__ = [
    "MESSAGE_ERRORS",
    "MESSAGE_HINTS",
    "RetryPolicy",
    "aretry",
    "error_message",
    "http_error",
    "message_ids",
    "retry",
    "retryable_request",
    "short_id",
    "transport_error",
]
