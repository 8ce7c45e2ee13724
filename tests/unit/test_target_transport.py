"""The retry rule and error mapping every HTTP target client shares (executor/targets/transport.py).

The transport failures are real ones, made on loopback: a port nobody listens on (refused),
a listener that never answers (read timeout), a TLS handshake against an untrusted
certificate is covered by the Redfish and OME integration tests. The HTTP answers are the
bodies iDRAC and OME send (message ids as the labs send them).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import requests
from sushy import exceptions as sx

from executor.targets.endpoint import Timeouts
from executor.targets.errors import (
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
from executor.targets.redfish import translate
from executor.targets.transport import (
    RetryPolicy,
    aretry,
    http_error,
    retry,
    retryable_request,
    transport_error,
)


def body(message_id: str, message: str = "it went wrong") -> dict:
    return {
        "error": {
            "code": "Base.1.12.GeneralError",
            "@Message.ExtendedInfo": [{"MessageId": message_id, "Message": message}],
        }
    }


# ---- retry ---------------------------------------------------------------------------------------
def test_policies_from_the_timeouts_say_attempts_and_seconds() -> None:
    t = Timeouts(retries=2, retry_delay=1.5, poll=4.0, session_wait=60.0)
    assert RetryPolicy.requests(t) == RetryPolicy(attempts=3, delay=1.5, budget=None)
    assert RetryPolicy.session_slot(t) == RetryPolicy(attempts=None, delay=4.0, budget=60.0)
    assert RetryPolicy() == RetryPolicy(attempts=3, delay=2.0, budget=None)  # Timeouts' defaults
    with pytest.raises(ValueError, match="attempts, a budget"):
        RetryPolicy(attempts=None, budget=None)
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


def failing(errors: list[TargetError], result: str = "ok"):
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def test_retry_tries_again_what_is_retryable_until_the_attempts_are_spent() -> None:
    slept: list[float] = []
    down = TargetUnreachable("gone", target="t", operation="op")
    fn, calls = failing([down, down])
    got = retry(
        fn, RetryPolicy(attempts=3, delay=0.25), retryable=retryable_request("POST"), sleep=slept.append
    )
    assert got == "ok" and len(calls) == 3 and slept == [0.25, 0.25]

    fn, calls = failing([down, down, down])
    slept.clear()
    with pytest.raises(TargetUnreachable) as ei:
        retry(fn, RetryPolicy(attempts=3, delay=0.25), retryable=retryable_request("GET"), sleep=slept.append)
    assert ei.value is down and len(calls) == 3 and slept == [0.25, 0.25]


def test_each_retry_is_told_to_on_retry_when_given(caplog: pytest.LogCaptureFixture) -> None:
    down = TargetUnreachable("gone", target="t", operation="op")
    told: list[TargetError] = []
    fn, _ = failing([down, down])
    with caplog.at_level("INFO", logger="rackpilot.targets.transport"):
        retry(
            fn,
            RetryPolicy(attempts=3, delay=0.0),
            retryable=lambda e: True,
            sleep=lambda s: None,
            on_retry=told.append,
        )
    assert told == [down, down] and caplog.records == []
    fn, _ = failing([down])
    with caplog.at_level("INFO", logger="rackpilot.targets.transport"):
        retry(fn, RetryPolicy(attempts=3, delay=0.5), retryable=lambda e: True, sleep=lambda s: None)
    assert [r.getMessage() for r in caplog.records] == [f"{down}; trying again in 0.5 s (attempt 2)"]


def test_retry_reports_at_once_what_is_not_retryable() -> None:
    slept: list[float] = []
    cases = [
        ("GET", RequestRejected("no", target="t")),
        ("POST", TargetServerError("500", target="t")),  # the device may have acted on it
        ("GET", TLSConfigurationError("untrusted", target="t")),
        ("GET", AuthenticationFailed("401", target="t")),
    ]
    for method, err in cases:
        fn, calls = failing([err])
        with pytest.raises(type(err)):
            retry(
                fn,
                RetryPolicy(attempts=5, delay=1.0),
                retryable=retryable_request(method),
                sleep=slept.append,
            )
        assert len(calls) == 1, (method, err)
    assert slept == []
    fn, calls = failing([TargetServerError("500", target="t")])
    assert (
        retry(fn, RetryPolicy(attempts=2, delay=0.0), retryable=retryable_request("get"), sleep=slept.append)
        == "ok"
    )


def test_a_budget_stops_new_tries_however_many_attempts_are_left() -> None:
    full = SessionLimitReached("full", target="t", message_id="RAC0218")
    fn, calls = failing([full] * 100)
    with pytest.raises(SessionLimitReached):
        retry(
            fn,
            RetryPolicy(attempts=None, delay=0.0, budget=0.0),
            retryable=lambda e: True,
            sleep=lambda s: None,
        )
    assert len(calls) == 1  # the budget was spent by the first try
    fn, calls = failing([full] * 4)
    assert (
        retry(
            fn,
            RetryPolicy(attempts=None, delay=0.0, budget=60.0),
            retryable=lambda e: True,
            sleep=lambda s: None,
        )
        == "ok"
    )
    assert len(calls) == 5


def test_aretry_follows_the_same_rule() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    errors = [TargetServerError("500", target="t"), TargetServerError("500", target="t")]

    async def fn() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    assert (
        asyncio.run(
            aretry(fn, RetryPolicy(attempts=3, delay=0.5), retryable=retryable_request("GET"), sleep=sleep)
        )
        == "ok"
    )
    assert slept == [0.5, 0.5]
    errors[:] = [TargetServerError("500", target="t")]
    with pytest.raises(TargetServerError):
        asyncio.run(
            aretry(fn, RetryPolicy(attempts=3, delay=0.5), retryable=retryable_request("PATCH"), sleep=sleep)
        )


# ---- HTTP answers --------------------------------------------------------------------------------
CASES = [
    # (status, body, class, message id)
    (
        503,
        body("IDRAC.2.8.RAC0218", "The maximum number of user sessions is reached."),
        SessionLimitReached,
        "RAC0218",
    ),
    (400, body("IDRAC.2.8.LC068"), PendingConfiguration, "LC068"),
    (400, body("IDRAC.2.8.RAC0679"), JobAlreadyRunning, "RAC0679"),
    (503, body("IDRAC.2.8.SYS518"), LifecycleControllerNotReady, "SYS518"),
    (401, body("IDRAC.2.8.RAC0508"), AuthenticationFailed, "RAC0508"),
    (
        400,
        body("CSEC5017", "Unable to create a session because the maximum number of sessions is reached."),
        SessionLimitReached,
        "CSEC5017",
    ),
    (401, body("CSEC5002"), AuthenticationFailed, "CSEC5002"),
    (403, None, AuthenticationFailed, None),
    (500, body("IDRAC.2.8.SYS446"), TargetServerError, "SYS446"),
    (400, body("Base.1.12.PropertyUnknown"), RequestRejected, "PropertyUnknown"),
    (404, None, RequestRejected, None),
]


@pytest.mark.parametrize(("status", "doc", "cls", "mid"), CASES)
def test_http_answers_map_to_one_error_each(
    status: int, doc: dict | None, cls: type, mid: str | None
) -> None:
    err = http_error(status, doc, peer="the BMC", target="10.0.0.5", operation="power on")
    assert type(err) is cls and err.message_id == mid
    assert str(err).startswith("10.0.0.5: power on: ")
    if doc is not None:
        assert doc["error"]["@Message.ExtendedInfo"][0]["Message"] in err.detail


@pytest.mark.parametrize(("status", "doc", "cls", "mid"), CASES)
def test_the_redfish_client_maps_sushys_errors_the_same_way(
    status: int, doc: dict | None, cls: type, mid: str | None
) -> None:
    """One mapping: a sushy HTTPError for the same answer becomes the same error."""
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(doc).encode() if doc is not None else b""  # noqa: SLF001 - building a response by hand
    r.headers["Content-Type"] = "application/json"
    with pytest.raises(sx.HTTPError) as ei:
        sx.raise_for_response("GET", "https://10.0.0.5/redfish/v1/Systems/1", r)
    err = translate(ei.value, "10.0.0.5", "power on")
    same = http_error(status, doc, peer="the BMC", target="10.0.0.5", operation="power on")
    assert type(err) is cls and err.message_id == mid
    assert str(err) == str(same)


def test_wording_names_the_peer_and_what_to_do() -> None:
    e = http_error(
        500,
        body("CGEN1009", "Unable to complete the operation."),
        peer="OME",
        target="ome",
        operation="list devices",
    )
    assert str(e) == (
        "ome: list devices: OME answered HTTP 500: Unable to complete the operation. [CGEN1009] "
        f"({TargetServerError.hint})"
    )
    e = http_error(400, body("CSEC5017", "cap"), peer="OME", target="ome", operation="open session")
    assert e.hint == "close unused OME API sessions or wait for them to expire"
    e = http_error(
        502, None, peer="OME", target="ome", operation="x", raw_text="<html>\n <b>Bad   gateway</b></html>"
    )
    assert isinstance(
        e, TargetServerError
    ) and "OME answered HTTP 502: <html> <b>Bad gateway</b></html>" in str(e)
    e = http_error(401, None, peer="the BMC", target="b", operation="open session")
    assert e.detail == "access denied (HTTP 401)" and "credentials" in str(e)


# ---- transport failures (real ones, on loopback) ---------------------------------------------------
@contextmanager
def refused_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    yield port


@contextmanager
def silent_port() -> Iterator[int]:
    """A listener that takes connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_transport_failures_of_requests_httpx_and_sushy_read_the_same() -> None:
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/redfish/v1"
        with pytest.raises(requests.RequestException) as ri:
            requests.get(url, timeout=2)
        with pytest.raises(httpx.TransportError) as hi:
            httpx.get(url, timeout=2)
        sushy_err = sx.ConnectionError(url=url, error=ri.value)
        for exc in (ri.value, hi.value, sushy_err):
            e = transport_error(exc, peer="the BMC", target="b", operation="open session")
            assert (
                isinstance(e, TargetUnreachable) and e.detail == "connection refused by the BMC's address"
            ), exc
    with silent_port() as port:
        url = f"http://127.0.0.1:{port}/redfish/v1"
        with pytest.raises(requests.RequestException) as ri:
            requests.get(url, timeout=(2, 0.2))
        with pytest.raises(httpx.TransportError) as hi:
            httpx.get(url, timeout=httpx.Timeout(0.2, connect=2))
        for exc in (ri.value, hi.value, sx.ConnectionError(url=url, error=ri.value)):
            e = transport_error(exc, peer="OME", target="ome", operation="list devices")
            assert isinstance(e, TargetUnreachable), exc
            assert e.detail == "OME accepted the connection but did not answer within the read timeout", exc
