"""Async client for Dell OpenManage Enterprise (OME) on httpx.

    async with OMEClient(Endpoint("https://ome.example", "admin", pw, ca_bundle=...)) as ome:
        devices = await ome.devices()
        report = await ome.compliance(baseline_id)

One API session per client (X-Auth-Token), always deleted on exit. Every collection is
read through all of its pages (`@odata.nextLink`): OME pages results, and a client that
reads the first page only silently misses servers. Failures are `TargetError` subclasses,
mapped and retried by the rules every HTTP target client shares (transport.py). Waits are
bounded by `Timeouts` (seconds; see endpoint.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx

from ..calllog import httpx_hooks
from .endpoint import Endpoint, Timeouts
from .errors import JobFailed, JobStuck, RequestRejected, TargetError
from .transport import RetryPolicy, aretry, http_error, retryable_request, transport_error

LOG = logging.getLogger("rackpilot.targets.ome")

# OME job status ids (LastRunStatus.Id)
JOB_RUNNING = {2040, 2050, 2080, 2101}  # Starting, Running, New, Paused
JOB_DONE = {2060}
JOB_FAILED = {2070, 2090, 2100, 2102, 2103}  # Failed, Warning, Aborted, Stopped, Canceled
MAX_PAGES = 10_000  # guard against a server whose nextLink never ends
# a device's PowerState as OME reports it (any other value: "Unknown")
_POWER_STATES: dict[object, str] = {17: "On", 18: "Off"}


@dataclass
class OMEDevice:
    id: int
    service_tag: str
    model: str
    name: str
    address: str | None
    power_state: str  # On | Off | Unknown
    system_id: str | None  # Dell SystemID, 4 hex digits


@dataclass
class OMEComponentCompliance:
    component_id: str
    name: str
    current: str
    target: str
    action: str  # UPGRADE | DOWNGRADE | EQUAL
    status: str  # OK | WARNING | CRITICAL | DOWNGRADE
    criticality: str
    reboot_required: bool


@dataclass
class OMEDeviceCompliance:
    device_id: int
    service_tag: str
    model: str
    status: str
    reboot_required: bool
    components: list[OMEComponentCompliance] = field(default_factory=list)

    @property
    def updates(self) -> list[OMEComponentCompliance]:
        return [c for c in self.components if c.action == "UPGRADE"]


class OMEClient:
    def __init__(self, endpoint: Endpoint, timeouts: Timeouts | None = None):
        self.endpoint = endpoint
        self.timeouts = timeouts or Timeouts()
        self.target = endpoint.display
        self._http: httpx.AsyncClient | None = None
        self._session_id: str | None = None
        self._doing: str | None = None

    async def __aenter__(self) -> OMEClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self.endpoint.announce(LOG)
        t = self.timeouts
        self._http = httpx.AsyncClient(
            base_url=self.endpoint.url,
            verify=self.endpoint.verify,
            timeout=httpx.Timeout(t.read, connect=t.connect),
            headers={"Accept": "application/json"},
            event_hooks=httpx_hooks(self.target),
        )  # on record: executor/calllog.py
        try:
            r = await self._send(
                "POST",
                "/api/SessionService/Sessions",
                "open session",
                json={
                    "UserName": self.endpoint.username,
                    "Password": self.endpoint.password,
                    "SessionType": "API",
                },
            )
        except BaseException:
            await self._http.aclose()
            self._http = None
            raise
        token = r.headers.get("X-Auth-Token")
        self._session_id = str(r.json().get("Id", ""))
        if not token or not self._session_id:
            await self._http.aclose()
            self._http = None
            raise RequestRejected(
                "OME accepted the login but returned no session token",
                target=self.target,
                operation="open session",
            )
        self._http.headers["X-Auth-Token"] = token

    async def close(self) -> None:
        """Delete the API session (always attempted), then drop the connection pool."""
        http, sid = self._http, self._session_id
        self._session_id = None
        if http is None:
            return
        try:
            if sid:
                await self._send("DELETE", f"/api/SessionService/Sessions('{sid}')", "close session")
        except TargetError as exc:
            LOG.warning("OME %s: could not delete the API session: %s", self.target, exc)
        finally:
            await http.aclose()
            self._http = None

    # ---- transport ---------------------------------------------------------------------------------
    async def _send(self, method: str, url: str, operation: str, **kw: Any) -> httpx.Response:
        """One request with the retry rule every HTTP target client shares (transport.py):
        a transport failure is retried for any method, an HTTP 5xx for a GET,
        `timeouts.retries` times `timeouts.retry_delay` apart; anything else is mapped to
        its error at once."""
        assert self._http is not None, "OMEClient is not open; use it as an async context manager"
        http = self._http
        label = operation if not self._doing or self._doing == operation else f"{self._doing} ({operation})"

        async def once() -> httpx.Response:
            try:
                r = await http.request(method, url, **kw)
            except httpx.TransportError as exc:
                raise transport_error(exc, peer="OME", target=self.target, operation=label) from None
            if r.status_code < 400:
                return r
            try:
                body = r.json()
            except ValueError:
                body = None
            raise http_error(
                r.status_code, body, peer="OME", target=self.target, operation=label, raw_text=r.text
            )

        return await aretry(once, RetryPolicy.requests(self.timeouts), retryable=retryable_request(method))

    async def get(self, path: str, operation: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        r = await self._send("GET", path, operation, params=params)
        return r.json()

    async def paged(
        self, path: str, operation: str, params: dict[str, Any] | None = None
    ) -> AsyncIterator[dict]:
        """Every item of an OData collection, following `@odata.nextLink` to the end."""
        url: str | None = path
        seen: set[str] = set()
        first = True
        pages = 0
        while url:
            if url in seen or pages >= MAX_PAGES:
                raise RequestRejected(
                    f"OME paging does not terminate at {url}", target=self.target, operation=operation
                )
            seen.add(url)
            doc = await self.get(url, operation, params if first else None)
            first = False
            pages += 1
            for item in doc.get("value", []):
                yield item
            nxt = doc.get("@odata.nextLink")
            url = urljoin(path if nxt and nxt.startswith("?") else "/", nxt) if nxt else None

    async def collect(self, path: str, operation: str, params: dict[str, Any] | None = None) -> list[dict]:
        return [item async for item in self.paged(path, operation, params)]

    # ---- devices & inventory ---------------------------------------------------------------------------
    async def devices(self, *, odata_filter: str | None = None) -> list[OMEDevice]:
        params = {"$filter": odata_filter} if odata_filter else None
        out = []
        for d in await self.collect("/api/DeviceService/Devices", "list devices", params):
            mgmt = (d.get("DeviceManagement") or [{}])[0] if d.get("DeviceManagement") else {}
            sid = d.get("SystemId")
            out.append(
                OMEDevice(
                    int(d["Id"]),
                    str(d.get("DeviceServiceTag") or d.get("Identifier") or ""),
                    str(d.get("Model") or ""),
                    str(d.get("DeviceName") or ""),
                    mgmt.get("NetworkAddress"),
                    _POWER_STATES.get(d.get("PowerState"), "Unknown"),
                    f"{int(sid):04X}" if isinstance(sid, int) else None,
                )
            )
        return out

    async def device_firmware(self, device_id: int) -> list[tuple[str, str, str]]:
        """Installed firmware as (component_id, name, version) — the shape catalog.compliance takes."""
        doc = await self.get(
            f"/api/DeviceService/Devices({device_id})/InventoryDetails('deviceSoftware')",
            "read device firmware",
        )
        return [
            (str(i.get("ComponentId", "")), str(i.get("DeviceDescription", "")), str(i.get("Version", "")))
            for i in doc.get("InventoryInfo", [])
            if i.get("Status", "Installed") == "Installed"
        ]

    # ---- firmware baselines -------------------------------------------------------------------------------
    async def catalogs(self) -> list[dict[str, Any]]:
        return await self.collect("/api/UpdateService/Catalogs", "list catalogs")

    async def baselines(self) -> list[dict[str, Any]]:
        return await self.collect("/api/UpdateService/Baselines", "list baselines")

    async def baseline(self, name: str) -> dict[str, Any]:
        for b in await self.baselines():
            if b.get("Name") == name:
                return b
        raise RequestRejected(
            f"no firmware baseline named {name!r}", target=self.target, operation="find baseline"
        )

    async def compliance(self, baseline_id: int) -> list[OMEDeviceCompliance]:
        out = []
        path = f"/api/UpdateService/Baselines({baseline_id})/DeviceComplianceReports"
        for r in await self.collect(path, "read compliance report"):
            comps = [
                OMEComponentCompliance(
                    str(c.get("TargetIdentifier") or c.get("UniqueIdentifier") or ""),
                    str(c.get("Name", "")),
                    str(c.get("CurrentVersion", "")),
                    str(c.get("Version", "")),
                    str(c.get("UpdateAction", "")),
                    str(c.get("ComplianceStatus", "")),
                    str(c.get("Criticality", "")),
                    bool(c.get("RebootRequired")),
                )
                for c in r.get("ComponentComplianceReports", [])
            ]
            out.append(
                OMEDeviceCompliance(
                    int(r["DeviceId"]),
                    str(r.get("ServiceTag", "")),
                    str(r.get("DeviceModel", "")),
                    str(r.get("ComplianceStatus", "")),
                    bool(r.get("RebootRequired")),
                    comps,
                )
            )
        return out

    # ---- jobs -------------------------------------------------------------------------------------------
    async def wait_job(self, job_id: int, *, operation: str, timeout: float | None = None) -> dict[str, Any]:
        """Poll an OME job until it completes; failures raise JobFailed, no end within
        `timeout` (default `timeouts.job`) raises JobStuck."""
        t = self.timeouts
        limit = t.job if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            job = await self.get(f"/api/JobService/Jobs({job_id})", operation)
            st = job.get("LastRunStatus") or {}
            sid, name = st.get("Id"), st.get("Name", "")
            if sid in JOB_DONE:
                return job
            if sid in JOB_FAILED:
                raise JobFailed(
                    f"OME job {job_id} ({job.get('JobName', '')}) ended {name}",
                    job_id=str(job_id),
                    state=name,
                    target=self.target,
                    operation=operation,
                )
            if time.monotonic() >= deadline:
                raise JobStuck(
                    f"OME job {job_id} ({job.get('JobName', '')}) still {name} after {limit:g} s",
                    job_id=str(job_id),
                    state=name,
                    target=self.target,
                    operation=operation,
                )
            await asyncio.sleep(t.poll)

    async def refresh_inventory(self, device_ids: list[int], *, wait: bool = True) -> int:
        """Run an inventory job on the devices; returns the job id."""
        body = {
            "JobName": "rackpilot inventory refresh",
            "JobDescription": "rackpilot inventory refresh",
            "Schedule": "startnow",
            "State": "Enabled",
            "JobType": {"Id": 8, "Name": "Inventory_Task"},
            "Targets": [
                {"Id": i, "Data": "", "TargetType": {"Id": 1000, "Name": "DEVICE"}} for i in device_ids
            ],
            "Params": [],
        }
        r = await self._send("POST", "/api/JobService/Jobs", "refresh inventory", json=body)
        job_id = int(r.json()["Id"])
        if wait:
            await self.wait_job(job_id, operation="refresh inventory")
        return job_id

    async def refresh_compliance(self, baseline_id: int, *, wait: bool = True) -> int:
        """Re-run the baseline's compliance task (OME keeps it as a job), then wait."""
        b = await self.get(f"/api/UpdateService/Baselines({baseline_id})", "refresh compliance")
        task = int(b["TaskId"])
        await self._send(
            "POST",
            "/api/JobService/Actions/JobService.RunJobs",
            "refresh compliance",
            json={"JobIds": [task]},
        )
        if wait:
            await self.wait_job(task, operation="refresh compliance")
        return task
