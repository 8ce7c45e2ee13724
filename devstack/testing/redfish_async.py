"""The fleet inventory on asyncio + httpx: the measured alternative to the executor's
threads + sushy path (:func:`executor.targets.redfish.fleet_inventory`).

It lives in the harness, not the product: nothing in the executor calls it.
``bench/fleet_inventory.py`` runs both paths in one run (on the 2-core lab machine this one
was the slower: httpx's per-request CPU cost outweighs the thread switches), and
``tests/integration/test_idrac_firmware.py`` checks both read the same inventory. It keeps
the product's session discipline, retry rules and error mapping (the same error classes,
message ids through :data:`executor.targets.redfish.MESSAGE_ERRORS`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpx

from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import (
    AuthenticationFailed,
    RequestRejected,
    SessionLimitReached,
    TargetError,
    TargetServerError,
    TargetUnreachable,
    TLSConfigurationError,
    UnsupportedTarget,
)
from executor.targets.redfish import (
    MESSAGE_ERRORS,
    InventoryResult,
    RedfishClient,
    SystemInfo,
    error_message,
    inventory_oddities,
    message_ids,
    short_id,
)

LOG = logging.getLogger("rackpilot.targets.redfish")


async def _arequest(
    http: Any, method: str, url: str, ep: Endpoint, t: Timeouts, operation: str, **kw: Any
) -> Any:
    """One request of the async fleet path with the same retry rules and error mapping as
    the sushy client: transport errors and 5xx on GET retried `t.retries` times."""
    attempts = t.retries + 1
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            r = await http.request(method, url, **kw)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise TLSConfigurationError(
                    "TLS handshake failed: the certificate is not trusted",
                    target=ep.display,
                    operation=operation,
                ) from None
            if last:
                raise TargetUnreachable(
                    "connection to the BMC failed", target=ep.display, operation=operation
                ) from None
        except httpx.TimeoutException:
            if last:
                raise TargetUnreachable(
                    "the BMC did not answer within the timeout", target=ep.display, operation=operation
                ) from None
        except httpx.TransportError:
            if last:
                raise TargetUnreachable(
                    "no answer from the BMC (connection dropped)", target=ep.display, operation=operation
                ) from None
        else:
            if r.status_code < 400:
                return r
            try:
                body = r.json()
            except ValueError:
                body = None
            if not (r.status_code >= 500 and method == "GET" and not last):
                ids = message_ids(body)
                for mid in ids:
                    cls = MESSAGE_ERRORS.get(short_id(mid))
                    if cls is not None:
                        raise cls(
                            error_message(body) or mid,
                            target=ep.display,
                            operation=operation,
                            message_id=short_id(mid),
                        )
                msg = error_message(body) or f"HTTP {r.status_code}"
                if r.status_code in (401, 403):
                    raise AuthenticationFailed(
                        f"access denied (HTTP {r.status_code})", target=ep.display, operation=operation
                    )
                cls2 = TargetServerError if r.status_code >= 500 else RequestRejected
                raise cls2(
                    f"BMC answered HTTP {r.status_code}: {msg}", target=ep.display, operation=operation
                )
        await asyncio.sleep(t.retry_delay)
    raise AssertionError("unreachable")


async def async_fleet_inventory(
    endpoints: Iterable[Endpoint], *, concurrency: int = 48, timeouts: Timeouts | None = None
) -> list[InventoryResult]:
    """The fleet inventory on asyncio + httpx instead of threads + sushy: the same
    session discipline (one session per BMC, deleted in `finally`), the same RAC0218 wait,
    fewer requests (no service-root read) and no threads. Kept as the measured
    alternative: bench/fleet_inventory.py runs both; on the 2-core lab machine it was the
    slower of the two (httpx's per-request CPU cost outweighs the thread switches)."""
    t = timeouts or Timeouts()
    eps = list(endpoints)
    sem = asyncio.Semaphore(max(1, concurrency))
    contexts: dict[Any, Any] = {}

    def client_for(ep: Endpoint) -> httpx.AsyncClient:
        # One small client per BMC (each BMC is its own origin, so a shared pool buys
        # nothing and its bookkeeping grows with the fleet); the TLS context is built once
        # per trust setting, since loading a CA bundle costs milliseconds of CPU.
        key = ep.verify
        if key not in contexts:
            if key is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=key if isinstance(key, str) else None)
            contexts[key] = ctx
        return httpx.AsyncClient(verify=contexts[key], timeout=httpx.Timeout(t.read, connect=t.connect))

    async def one(ep: Endpoint) -> InventoryResult:
        t0 = time.monotonic()
        http = client_for(ep)
        session_uri: str | None = None
        async with sem:
            try:
                deadline = time.monotonic() + t.session_wait
                while True:
                    try:
                        r = await _arequest(
                            http,
                            "POST",
                            f"{ep.url}/redfish/v1/SessionService/Sessions",
                            ep,
                            t,
                            "open session",
                            json={"UserName": ep.username, "Password": ep.password},
                        )
                        break
                    except SessionLimitReached:
                        if time.monotonic() >= deadline:
                            raise
                        await asyncio.sleep(
                            t.poll
                        )  # quirk RAC0218: wait for another tool's sessions to expire
                session_uri = r.headers.get("Location")
                h = {"X-Auth-Token": r.headers.get("X-Auth-Token", ""), "OData-Version": "4.0"}

                async def get(path: str, op: str) -> dict[str, Any]:
                    return (await _arequest(http, "GET", f"{ep.url}{path}", ep, t, op, headers=h)).json()

                systems = await get("/redfish/v1/Systems", "read system")
                s = await get(systems["Members"][0]["@odata.id"], "read system")
                us = await get("/redfish/v1/UpdateService", "read firmware inventory")
                inv_path = (us.get("FirmwareInventory") or {}).get("@odata.id")
                if not inv_path:
                    raise UnsupportedTarget(
                        "the BMC has no FirmwareInventory",
                        target=ep.display,
                        operation="read firmware inventory",
                    )
                inv = await get(f"{inv_path}?$expand=*($levels=1)", "read firmware inventory")
                members = inv.get("Members") or []
                if not all("Version" in m for m in members):  # no $expand support: one GET per member
                    members = [await get(m["@odata.id"], "read firmware inventory") for m in members]
                sid = (((s.get("Oem") or {}).get("Dell") or {}).get("DellSystem") or {}).get("SystemID")
                info = SystemInfo(
                    model=s.get("Model") or "",
                    service_tag=s.get("SKU") or "",
                    serial=s.get("SerialNumber") or "",
                    manufacturer=s.get("Manufacturer") or "",
                    power_state=s.get("PowerState") or "",
                    bios_version=s.get("BiosVersion") or "",
                    system_id=f"{int(sid):04X}" if isinstance(sid, int) else None,
                    generation_label=(((s.get("Oem") or {}).get("Dell") or {}).get("DellSystem") or {}).get(
                        "SystemGeneration"
                    ),
                )
                firmware = [RedfishClient.firmware_component(m) for m in members]
                return InventoryResult(
                    ep.display,
                    True,
                    info,
                    firmware,
                    seconds=time.monotonic() - t0,
                    warnings=inventory_oddities(info, firmware),
                )
            except TargetError as exc:
                return InventoryResult(
                    ep.display,
                    False,
                    error=str(exc),
                    error_kind=type(exc).__name__,
                    seconds=time.monotonic() - t0,
                )
            finally:
                try:
                    if session_uri:
                        await _arequest(
                            http,
                            "DELETE",
                            f"{ep.url}{session_uri}",
                            ep,
                            t,
                            "close session",
                            headers={"X-Auth-Token": h["X-Auth-Token"]},
                        )
                except TargetError as exc:
                    LOG.warning("target %s: could not delete the Redfish session: %s", ep.display, exc)
                finally:
                    await http.aclose()

    for ep in {e.verify: e for e in eps}.values():
        ep.announce(LOG)
    return list(await asyncio.gather(*(one(ep) for ep in eps)))
