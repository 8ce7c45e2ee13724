"""What the Dell handlers share: servers and their credentials from the control plane,
target clients built from them, waits on the step engine, artifacts, inventory writes and
per-server task results.

Reaching a server. ``servers.idrac_address`` is a host, ``host:port`` or a URL; the TLS
choice lives in ``servers.details.tls`` and is never silent:

* ``{"ca_bundle": "/etc/rackpilot/idrac-ca.pem"}`` - verify against this bundle;
* ``{"insecure": true}`` - accept any certificate (self-signed iDRACs), logged on every use;
* ``{"allow_plain_http": true}`` with an ``http://`` loopback address - the lab only
  (refused for any other address);
* nothing - HTTPS verified against the system trust store.

Target timeouts (``executor.targets.endpoint.Timeouts``) are the production defaults.
``RACKPILOT_TARGET_TIME_SCALE`` (a factor, default 1) divides them, for the simulated lab
whose clock runs that much faster; it is an executor-side setting, never a job parameter.

Waits. Every wait on a target goes through :meth:`StepContext.wait_for` (:func:`wait`), so
a stalled operation (no state change for the policy's ``stall``) is told from a slow one,
and both end in a target error an operator can act on rather than a bare timeout.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from ..binding import Credential, EndpointNotAllowed, EndpointSpecError, Target
from ..jobparams import JobParamsError
from ..jobtypes import parse_params
from ..steps import HandlerError, Progress, StepContext, StepStalled, StepTimeout
from ..targets.endpoint import Endpoint, Timeouts
from ..targets.errors import CatalogError, TargetError
from ..targets.redfish import RedfishClient
from ..vocabulary import TaskStatus, TaskTargetKind

log = logging.getLogger("rackpilot.executor.dell")
T = TypeVar("T")

SERVER_COLUMNS = "id,site_id,name,idrac_address,credential_set_id,model,service_tag,details"
SERVER = TaskTargetKind.SERVER  # the kind of the Dell handlers' tasks


class DellHandlerError(HandlerError):
    """A Dell job cannot run as asked (unknown server, missing credential, bad params)."""


class ServersFailed(HandlerError):
    """Some servers of a multi-server job failed; each one's error is on its task."""

    def __init__(self, failures: dict[str, str], total: int):
        first = next(iter(failures.items()))
        super().__init__(f"{len(failures)} of {total} server(s) failed; first: {first[0]}: {first[1]}")
        self.failures = failures


# --- settings -------------------------------------------------------------------------------
def time_scale() -> float:
    raw = os.environ.get("RACKPILOT_TARGET_TIME_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        raise DellHandlerError(f"RACKPILOT_TARGET_TIME_SCALE must be a number, got {raw!r}") from None
    if scale <= 0:
        raise DellHandlerError("RACKPILOT_TARGET_TIME_SCALE must be positive")
    return scale


def target_timeouts() -> Timeouts:
    """Client timeouts, compressed for a time-scaled lab. Connect and read keep a floor of
    real seconds: a loaded machine answers loopback requests in milliseconds, not in
    microseconds, whatever the lab's clock says."""
    scale = time_scale()
    t = Timeouts()
    if scale == 1:
        return t
    c = t.compressed(scale)
    return replace(
        c,
        connect=max(c.connect, 2.0),
        read=max(c.read, 10.0),
        poll=max(c.poll, 0.02),
        retry_delay=max(c.retry_delay, 0.01),
    )


async def http_get(
    url: str, *, what: str, operation: str, verify: ssl.SSLContext | bool = True, hint: str | None = None
) -> httpx.Response:
    """GET ``url`` (a catalog or its signature), redirects followed, with the target
    timeouts and a read of at least 30 s; a failure to get an answer at all is a
    :class:`CatalogError` "cannot download <what> <url>: <kind of failure>"."""
    t = target_timeouts()
    try:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(max(t.read, 30.0), connect=t.connect), follow_redirects=True, verify=verify
        ) as http:
            return await http.get(url)
    except httpx.HTTPError as exc:
        raise CatalogError(
            f"cannot download {what} {url}: {type(exc).__name__}", operation=operation, hint=hint
        ) from None


def params_of(job: dict[str, Any], model: type) -> Any:
    try:
        parsed = parse_params(str(job.get("type")), job.get("params") or {})
    except JobParamsError as exc:
        detail = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
            for e in getattr(exc, "errors", [])
        )
        raise DellHandlerError(f"{exc}{': ' + detail if detail else ''}") from None
    assert isinstance(parsed, model)
    return parsed


# --- servers --------------------------------------------------------------------------------
async def load_servers(ctx: StepContext, server_ids: list[str]) -> list[dict[str, Any]]:
    """The job's servers, in the order given; all must exist and belong to the job's site."""
    rows = await ctx.select("servers", SERVER_COLUMNS, id=[str(s) for s in server_ids])
    by_id = {str(r["id"]): r for r in rows}
    missing = [str(s) for s in server_ids if str(s) not in by_id]
    if missing:
        raise DellHandlerError(f"server(s) not found: {', '.join(missing)}")
    site = str(ctx.job.get("site_id") or "")
    strangers = [r["name"] for r in rows if site and str(r["site_id"]) != site]
    if strangers:
        raise DellHandlerError(f"server(s) of another site: {', '.join(strangers)}")
    return [by_id[str(s)] for s in server_ids]


async def site_servers(ctx: StepContext) -> list[dict[str, Any]]:
    rows = await ctx.select("servers", SERVER_COLUMNS, site_id=str(ctx.job["site_id"]))
    return sorted(rows, key=lambda r: (r["name"], str(r["id"])))


def loopback(address: str) -> bool:
    host = urlsplit(address if "://" in address else f"https://{address}").hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def endpoint_for(server: dict[str, Any], cred: Credential) -> Endpoint:
    """The server's iDRAC endpoint with its credential - only when the credential's sealed
    endpoints name this address and TLS trust (:class:`EndpointNotAllowed` otherwise, raised
    before anything connects)."""
    tls = (server.get("details") or {}).get("tls") or {}
    if not isinstance(tls, dict):
        raise DellHandlerError(f"server {server['name']}: details.tls must be an object")
    address = str(server["idrac_address"])
    if tls.get("allow_plain_http") and not loopback(address):
        # credentials in clear text cross only the loopback interface (the lab), never a network
        raise DellHandlerError(f"server {server['name']}: plain HTTP is allowed only to a loopback address")
    try:
        ep = Endpoint(
            address,
            cred.username,
            "",
            ca_bundle=tls.get("ca_bundle"),
            insecure=bool(tls.get("insecure")),
            allow_plain_http=bool(tls.get("allow_plain_http")),
            name=server["name"],
        )
    except TargetError as exc:
        raise DellHandlerError(f"server {server['name']}: {exc}") from None
    return present(cred, ep)


def present(cred: Credential, ep: Endpoint) -> Endpoint:
    """``ep`` (built without its password) with the credential's secret, after checking the
    credential may be presented to its scheme, host, port and TLS trust."""
    try:
        target = Target.of(
            ep.url,
            {
                "ca_bundle": ep.ca_bundle,
                "insecure": ep.insecure,
                "allow_plain_http": ep.allow_plain_http if ep.url.startswith("http://") else False,
            },
            name=ep.display,
        )
    except EndpointSpecError as exc:
        raise DellHandlerError(f"{ep.display}: {exc}") from None
    secret = cred.release(target)
    return replace(ep, username=secret.get("username") or ep.username, password=secret.get("password", ""))


async def endpoints(ctx: StepContext, servers: list[dict[str, Any]]) -> dict[str, Endpoint]:
    """Opened credentials, one fetch per credential set, as endpoints by server id. A server
    its credential may not be presented to fails here, before any server is touched, and
    its task records why."""
    opened: dict[str, Credential] = {}
    out = {}
    for s in servers:
        cid = s.get("credential_set_id")
        if not cid:
            raise DellHandlerError(
                f"server {s['name']} has no credential set; assign one before running jobs on it"
            )
        if cid not in opened:
            opened[cid] = await ctx.credentials(str(cid))
        try:
            out[str(s["id"])] = endpoint_for(s, opened[cid])
        except EndpointNotAllowed as exc:
            await ctx.update_task(SERVER, s, TaskStatus.FAILED, error=error_text(exc))
            raise
    return out


async def open_servers(
    ctx: StepContext, server_ids: Iterable[Any]
) -> tuple[list[dict[str, Any]], dict[str, Endpoint]]:
    """The job's servers (:func:`load_servers`) and their endpoints (:func:`endpoints`):
    every credential opens before any server is touched."""
    servers = await load_servers(ctx, [str(s) for s in server_ids])
    return servers, await endpoints(ctx, servers)


@asynccontextmanager
async def bmc(ep: Endpoint) -> AsyncIterator[RedfishClient]:
    """One Redfish session for the block, deleted on every exit (sushy is synchronous: its
    calls run in worker threads, one at a time for a client)."""
    client = RedfishClient(ep, target_timeouts())
    await asyncio.to_thread(client.open)
    try:
        yield client
    finally:
        # shielded: a cancelled step (fenced job, shutdown) still deletes its session
        await asyncio.shield(asyncio.to_thread(client.close))


async def call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kw)


# --- waits ----------------------------------------------------------------------------------
async def wait(
    ctx: StepContext,
    probe: Callable[[], Awaitable[Progress]],
    *,
    what: str,
    budget: float,
    on_stall: Callable[[str], TargetError],
) -> Progress:
    """``ctx.wait_for`` bounded by ``budget`` seconds from now (the engine's own bound is
    per step, and a step may wait for many servers in turn). A stall or an overrun becomes
    the target error ``on_stall`` builds from the engine's explanation."""
    interval = target_timeouts().poll
    try:
        return await ctx.wait_for(
            probe, what=what, interval=interval, timeout=(time.monotonic() - ctx.started) + budget
        )
    except (StepStalled, StepTimeout) as exc:
        raise on_stall(str(exc)) from None


async def wait_lc_ready(ctx: StepContext, c: RedfishClient, operation: str) -> None:
    """Lifecycle Controller readiness gate before a configuration action (no-op without Dell OEM)."""
    from ..targets.errors import LifecycleControllerNotReady

    dell = await call(lambda: c.dell)
    if dell is None:
        return

    async def probe() -> Progress:
        st = await call(dell.lc_status)
        return Progress(st.ready, (st.lc_status, st.rt_status, st.server_status))

    await wait(
        ctx,
        probe,
        what=f"{c.target}: Lifecycle Controller ready",
        budget=c.timeouts.lc_ready,
        on_stall=lambda why: LifecycleControllerNotReady(why, target=c.target, operation=operation),
    )


# --- results --------------------------------------------------------------------------------
def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def fail_server(
    ctx: StepContext,
    server: dict[str, Any],
    exc: BaseException,
    failures: dict[str, BaseException],
    done: dict[str, dict[str, Any]],
    *,
    keep: bool = False,
) -> None:
    """One server's share of a step failed: its error goes to ``failures`` (for
    raise_failures), to its record in ``done`` (``keep`` keeps what an earlier step recorded
    there) and to its task row; the step then goes on with the next server."""
    sid = str(server["id"])
    failures[server["name"]] = exc
    done[sid] = {**(done.get(sid, {}) if keep else {}), "ok": False, "error": error_text(exc)}
    await ctx.update_task(SERVER, server, TaskStatus.FAILED, error=done[sid]["error"], result=done[sid])


async def each_server(
    ctx: StepContext,
    servers: list[dict[str, Any]],
    eps: dict[str, Endpoint],
    work: Callable[[dict[str, Any], RedfishClient], Awaitable[dict[str, Any]]],
    *,
    skip: Collection[str] = (),
    errors: tuple[type[BaseException], ...] = (TargetError,),
    complete: bool = True,
) -> dict[str, BaseException]:
    """A step's work on each server in turn, each in a BMC session of its own. A server
    recorded ``ok`` before an interruption is not touched again; one in ``skip`` (the
    operator's ``skip_host``, see :mod:`._replication_gate`) gets a skipped task. The record
    ``work`` returns is kept as ``{"ok": True, **record}``, saved at once and, with
    ``complete``, closes the server's task. An error of ``errors`` fails that server only
    (:func:`fail_server`) and the step goes on; the failures are returned, by server name,
    for :func:`raise_failures`."""
    done = per_server(ctx)
    failures: dict[str, BaseException] = {}
    for s in servers:
        sid = str(s["id"])
        if done.get(sid, {}).get("ok"):
            continue  # finished before an interruption
        if sid in skip:
            await ctx.update_task(
                SERVER, s, TaskStatus.SKIPPED, result={"reason": "skip_host decision (replication lag)"}
            )
            continue
        await ctx.update_task(SERVER, s, TaskStatus.RUNNING)
        try:
            async with bmc(eps[sid]) as c:
                record = await work(s, c)
        except errors as exc:
            await fail_server(ctx, s, exc, failures, done)
            continue
        done[sid] = {"ok": True, **record}
        await save_servers(ctx)
        if complete:
            await ctx.update_task(SERVER, s, TaskStatus.COMPLETED, result=done[sid])
    return failures


def raise_failures(failures: dict[str, BaseException], total: int) -> None:
    """One failed server fails the job with its own error; several with a summary."""
    if not failures:
        return
    if total == 1 and len(failures) == 1:
        raise next(iter(failures.values()))
    raise ServersFailed({k: error_text(v) for k, v in failures.items()}, total)


async def latest_artifact(
    ctx: StepContext, server_id: str, kind: str, *, content: bool = True
) -> dict[str, Any] | None:
    rows = await ctx.rpc(
        "executor_latest_artifact", {"p_server_id": server_id, "p_kind": kind, "p_with_content": content}
    )
    if isinstance(rows, dict):
        rows = [rows]
    if not rows:
        return None
    row = dict(rows[0])
    raw = row.pop("content_base64", None)
    row["content"] = base64.b64decode(raw) if raw is not None else None
    return row


_POWER = {"On": "on", "Off": "off", "PoweringOn": "powering_on", "PoweringOff": "powering_off"}


def inventory_row(server_id: str, inv: Any) -> dict[str, Any]:
    """An ``executor_upsert_server_inventory`` element from a Redfish InventoryResult.
    Firmware rows: component = the name the BMC reports, fqdd = the Dell component id
    (stable across versions, unlike Redfish's ``Installed-<id>-<version>`` ids)."""
    if not inv.ok or inv.system is None:
        return {
            "server_id": server_id,
            "seen": False,
            "details": {
                "inventory_error": inv.error,
                "inventory_error_kind": inv.error_kind,
                "inventory_checked_at": time.time(),
            },
        }
    s = inv.system
    idrac = next(
        (f.version for f in inv.firmware if f.component_id == "25227" or "idrac" in f.name.lower()), None
    )
    # iDRAC9 ships the Lifecycle Controller inside its firmware: one version for both
    facts = {
        "model": s.model,
        "service_tag": s.service_tag,
        "bios_version": s.bios_version or None,
        "idrac_version": idrac,
        "lc_version": idrac,
        "power_state": _POWER.get(s.power_state, "unknown"),
    }
    return {
        "server_id": server_id,
        "seen": True,
        "facts": {k: v for k, v in facts.items() if v is not None},
        "details": {
            "system_id": s.system_id,
            "manufacturer": s.manufacturer,
            "serial": s.serial,
            "inventory_error": None,
            # what the read found odd (parts the BMC did not serve, missing or unknown
            # components, a generation rackpilot does not drive); [] clears older ones
            "inventory_warnings": list(inv.warnings),
            "inventory_checked_at": time.time(),
        },
        "firmware": [
            {"component": f.name or f.component_id, "fqdd": f.component_id or f.id, "version": f.version}
            for f in inv.firmware
            if f.version
        ],
    }


async def upsert_inventory(ctx: StepContext, rows: list[dict[str, Any]], batch: int = 200) -> int:
    done = 0
    for i in range(0, len(rows), batch):
        done += int(
            await ctx.rpc("executor_upsert_server_inventory", {"p_servers": rows[i : i + batch]}) or 0
        )
    return done


def per_server(ctx: StepContext) -> dict[str, dict[str, Any]]:
    """The checkpoint's per-server record (it travels into the job's result). A resumed
    step starts from the records it saved with :func:`save_servers` before it was
    interrupted (the checkpoint itself is written only when a step completes)."""
    done = ctx.checkpoint.setdefault("servers", {})
    for sid, rec in ((ctx.saved_progress or {}).get("servers") or {}).items():
        done.setdefault(sid, rec)
    return done


async def save_servers(ctx: StepContext) -> None:
    await ctx.save_progress({"servers": ctx.checkpoint.get("servers", {})})
