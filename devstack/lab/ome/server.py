"""Simulated Dell OpenManage Enterprise: the REST surface rackpilot's OME client uses,
shaped after OME 3.x's published API.

- sessions: POST /api/SessionService/Sessions (X-Auth-Token), DELETE .../Sessions('<id>')
- devices: /api/DeviceService/Devices, /Devices(<id>), /Devices(<id>)/InventoryDetails('deviceSoftware')
- firmware: /api/UpdateService/Catalogs, /Baselines, /Baselines(<id>)/DeviceComplianceReports
- jobs: POST /api/JobService/Jobs (inventory refresh), /Jobs(<id>),
  POST /api/JobService/Actions/JobService.RunJobs (re-run a baseline's compliance task)

Collections are paged the OData way (`$top`, `$skip`, `@odata.nextLink`), because real
OME pages results and clients that read only the first page silently miss devices.
Control API (unauthenticated, loopback lab only): GET /_lab/state, POST /_lab/faults.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..idrac.bmc import default_components
from ..idrac.http import Request, Response, start_server

# OME job status ids (LastRunStatus.Id)
JOB_STATUS = {
    2050: "Running",
    2060: "Completed",
    2070: "Failed",
    2080: "New",
    2090: "Warning",
    2100: "Aborted",
    2040: "Starting",
}
POWER = {"On": 17, "Off": 18}
_SEG = re.compile(r"[A-Za-z]+|\d+")


def _vkey(v: str) -> tuple:
    return tuple((1, int(s)) if s.isdigit() else (0, s.upper()) for s in _SEG.findall(v or ""))


@dataclass
class Device:
    id: int
    service_tag: str
    model: str
    system_id: str
    name: str
    address: str
    power: str = "On"
    components: list[dict[str, str]] = field(default_factory=list)  # ComponentId, Name, Version
    last_inventory: str = "2026-01-01 00:00:00.000"


@dataclass
class Job:
    id: int
    name: str
    job_type: tuple[int, str]
    targets: list[int]
    status: int = 2080
    started: float = 0.0
    duration: float = 0.0
    on_done: Any = None
    stuck: bool = False


@dataclass
class Faults:
    unreachable: bool = False
    server_errors: int = 0  # next N requests answer 500; -1 = all
    job_outcome: str = ""  # "" | "fail" | "stuck"
    FIELDS = ("unreachable", "server_errors", "job_outcome")


class OMESim:
    SESSION_CAP = 20

    def __init__(
        self,
        *,
        devices: list[Device] | None = None,
        packages: list[dict[str, Any]] | None = None,
        username: str = "admin",
        password: str = "ome-lab-pw",
        page_size: int = 50,
        time_scale: float = 1.0,
        job_seconds: float = 60.0,
        session_idle: float = 1800.0,
    ):
        self.devices = {d.id: d for d in (devices or [])}
        # Catalog packages: {"component_id", "version", "name", "criticality", "reboot_required",
        # "system_ids": [...], "path"}; the sim computes compliance from them as OME does.
        self.packages = list(packages or [])
        self.username, self.password = username, password
        self.page_size = page_size
        self.time_scale = time_scale
        self.job_seconds = job_seconds
        self.session_idle = session_idle
        self.sessions: dict[str, tuple[str, float]] = {}  # id -> (token, last_used)
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(10_000)
        self.faults = Faults()
        self.lock = threading.RLock()
        self.port = 0
        self.host = "127.0.0.1"
        self.peak_sessions = 0
        self.sessions_created = 0
        self.sessions_deleted = 0
        self.catalog_id, self.repository_id = 11, 21
        self.baseline_id, self.baseline_task = 31, next(self._ids)
        self.jobs[self.baseline_task] = Job(
            self.baseline_task,
            "Baseline compliance: rackpilot-baseline",
            (42, "Baseline_Task"),
            list(self.devices),
            status=2060,
        )
        self._server: asyncio.base_events.Server | None = None

    # ---- helpers -------------------------------------------------------------------------------
    @staticmethod
    def lab_devices(count: int, first_id: int = 25000) -> list[Device]:
        from ..idrac.bmc import MODELS

        models = list(MODELS)
        out = []
        for i in range(count):
            model = models[i % len(models)]
            comps = [
                {"ComponentId": c.component_id, "Name": c.name, "Version": c.version}
                for c in default_components(model, i)
            ]
            out.append(
                Device(
                    first_id + i,
                    f"SIM{i:04d}",
                    model,
                    MODELS[model],
                    f"sim{i:04d}.lab",
                    f"10.0.{i // 250}.{i % 250 + 1}",
                    components=comps,
                )
            )
        return out

    def inject(self, **faults: Any) -> None:
        with self.lock:
            for k, v in faults.items():
                if k not in Faults.FIELDS:
                    raise ValueError(f"unknown fault {k!r}")
                setattr(self.faults, k, v)

    def own_sessions(self) -> int:
        with self.lock:
            return len(self.sessions)

    def _tick(self) -> None:
        now = time.monotonic()
        for j in self.jobs.values():
            if j.status == 2050 and not j.stuck and now >= j.started + j.duration / self.time_scale:
                if self.faults.job_outcome == "fail":
                    j.status = 2070
                else:
                    j.status = 2060
                    if j.on_done:
                        j.on_done()
        idle = self.session_idle / self.time_scale
        for sid in [s for s, (_, used) in self.sessions.items() if now - used > idle]:
            del self.sessions[sid]

    def _start_job(self, name: str, jtype: tuple[int, str], targets: list[int], on_done: Any = None) -> Job:
        j = Job(
            next(self._ids),
            name,
            jtype,
            targets,
            status=2050,
            started=time.monotonic(),
            duration=self.job_seconds,
            on_done=on_done,
            stuck=self.faults.job_outcome == "stuck",
        )
        self.jobs[j.id] = j
        return j

    # ---- documents -------------------------------------------------------------------------------
    def device_doc(self, d: Device) -> dict[str, Any]:
        return {
            "@odata.type": "#DeviceService.Device",
            "@odata.id": f"/api/DeviceService/Devices({d.id})",
            "Id": d.id,
            "Type": 1000,
            "Identifier": d.service_tag,
            "DeviceServiceTag": d.service_tag,
            "ChassisServiceTag": None,
            "Model": d.model,
            "PowerState": POWER[d.power],
            "ManagedState": 3000,
            "Status": 1000,
            "ConnectionState": True,
            "AssetTag": None,
            "SystemId": int(d.system_id, 16),
            "DeviceName": d.name,
            "LastInventoryTime": d.last_inventory,
            "LastStatusTime": d.last_inventory,
            "DeviceSubscription": None,
            "DeviceCapabilities": [1, 2, 3, 4, 7, 8, 9, 41, 50],
            "DeviceManagement": [
                {
                    "ManagementId": d.id + 1,
                    "NetworkAddress": d.address,
                    "MacAddress": "4c:d9:8f:00:00:00",
                    "ManagementType": 2,
                    "InstrumentationName": d.name,
                    "DnsName": d.name,
                    "ManagementProfile": [
                        {
                            "ManagementProfileId": d.id + 2,
                            "ProfileId": "WSMAN_OOB",
                            "ManagementId": d.id + 1,
                            "AgentName": "iDRAC",
                            "HasCreds": 0,
                            "ManagementURL": f"https://{d.address}:443/",
                            "Status": 1000,
                            "StatusDateTime": d.last_inventory,
                        }
                    ],
                }
            ],
            "Actions": None,
            "SensorHealth@odata.navigationLink": f"/api/DeviceService/Devices({d.id})/SensorHealth",
            "InventoryDetails@odata.navigationLink": f"/api/DeviceService/Devices({d.id})/InventoryDetails",
        }

    def software_doc(self, d: Device) -> dict[str, Any]:
        return {
            "@odata.context": "/api/$metadata#DeviceService.InventoryDetail",
            "@odata.id": f"/api/DeviceService/Devices({d.id})/InventoryDetails('deviceSoftware')",
            "InventoryType": "deviceSoftware",
            "InventoryInfo": [
                {
                    "Version": c["Version"],
                    "InstallationDate": "2026-01-01T00:00:00Z",
                    "Status": "Installed",
                    "SoftwareType": "FRMW" if c["ComponentId"] != "159" else "BIOS",
                    "PackageName": "",
                    "ComponentId": c["ComponentId"],
                    "DeviceDescription": c["Name"],
                    "InstanceId": f"DCIM:INSTALLED#{c['ComponentId']}__{c['Name']}",
                    "VendorId": "",
                    "SubDeviceId": "",
                    "SubVendorId": "",
                    "PciDeviceId": "",
                }
                for c in d.components
            ],
        }

    def compliance_doc(self, d: Device) -> dict[str, Any]:
        comps = []
        worst = "OK"
        reboot = False
        rank = {"OK": 0, "DOWNGRADE": 1, "WARNING": 2, "CRITICAL": 3}
        for c in d.components:
            cands = [
                p
                for p in self.packages
                if c["ComponentId"] == p["component_id"]
                and d.system_id.upper() in {s.upper() for s in p["system_ids"]}
            ]
            if not cands:
                continue
            pkg = max(cands, key=lambda p: _vkey(p["version"]))
            cur, tgt = _vkey(c["Version"]), _vkey(pkg["version"])
            action = "EQUAL" if cur == tgt else ("UPGRADE" if cur < tgt else "DOWNGRADE")
            status = {"EQUAL": "OK", "DOWNGRADE": "DOWNGRADE"}.get(
                action, "CRITICAL" if pkg["criticality"] == "Urgent" else "WARNING"
            )
            if rank[status] > rank[worst]:
                worst = status
            reboot = reboot or (action == "UPGRADE" and pkg["reboot_required"])
            comps.append(
                {
                    "Id": len(comps) + 1,
                    "Version": pkg["version"],
                    "CurrentVersion": c["Version"],
                    "Path": pkg.get("path", ""),
                    "Name": pkg.get("name") or c["Name"],
                    "Criticality": pkg["criticality"],
                    "UniqueIdentifier": c["ComponentId"],
                    "TargetIdentifier": c["ComponentId"],
                    "UpdateAction": action,
                    "SourceName": c["Name"],
                    "PrerequisiteInfo": "",
                    "ImpactAssessment": "",
                    "Uri": "",
                    "RebootRequired": bool(pkg["reboot_required"]),
                    "ComplianceStatus": status,
                    "ComponentType": "FRMW",
                    "DependencyUpgradeRequired": False,
                }
            )
        return {
            "@odata.type": "#UpdateService.DeviceComplianceReport",
            "Id": d.id,
            "DeviceId": d.id,
            "ServiceTag": d.service_tag,
            "DeviceModel": d.model,
            "DeviceTypeName": "SERVER",
            "DeviceName": d.name,
            "FirmwareStatus": "Non-Compliant" if worst != "OK" else "Compliant",
            "ComplianceStatus": worst,
            "DeviceTypeId": 1000,
            "RebootRequired": reboot,
            "ComponentComplianceReports": comps,
        }

    def baseline_doc(self) -> dict[str, Any]:
        reports = [self.compliance_doc(d) for d in self.devices.values()]
        count = {
            s: sum(1 for r in reports if r["ComplianceStatus"] == s)
            for s in ("CRITICAL", "WARNING", "OK", "DOWNGRADE")
        }
        worst = next((s for s in ("CRITICAL", "WARNING", "DOWNGRADE") if count[s]), "OK")
        return {
            "@odata.type": "#UpdateService.Baselines",
            "@odata.id": f"/api/UpdateService/Baselines({self.baseline_id})",
            "Id": self.baseline_id,
            "Name": "rackpilot-baseline",
            "Description": "lab baseline",
            "CatalogId": self.catalog_id,
            "RepositoryId": self.repository_id,
            "DowngradeEnabled": True,
            "Is64Bit": True,
            "LastRun": "2026-01-01 00:00:00.000",
            "TaskId": self.baseline_task,
            "TaskStatusId": self.jobs[self.baseline_task].status,
            "RepositoryName": "lab-repository",
            "RepositoryType": "HTTP",
            "Targets": [{"Id": i, "Type": {"Id": 1000, "Name": "DEVICE"}} for i in self.devices],
            "ComplianceSummary": {
                "ComplianceStatus": worst,
                "NumberOfCritical": count["CRITICAL"],
                "NumberOfWarning": count["WARNING"],
                "NumberOfNormal": count["OK"],
                "NumberOfDowngrade": count["DOWNGRADE"],
                "NumberOfUnknown": 0,
            },
            "DeviceComplianceReports@odata.navigationLink": f"/api/UpdateService/Baselines({self.baseline_id})/DeviceComplianceReports",
        }

    def job_doc(self, j: Job) -> dict[str, Any]:
        st = {"Id": j.status, "Name": JOB_STATUS[j.status]}
        return {
            "@odata.type": "#JobService.Job",
            "@odata.id": f"/api/JobService/Jobs({j.id})",
            "Id": j.id,
            "JobName": j.name,
            "JobDescription": j.name,
            "NextRun": None,
            "LastRun": "2026-01-01 00:00:00.000",
            "StartTime": None,
            "EndTime": None,
            "Schedule": "startnow",
            "State": "Enabled",
            "CreatedBy": self.username,
            "UpdatedBy": None,
            "Visible": True,
            "Editable": True,
            "Builtin": False,
            "UserGenerated": True,
            "Targets": [
                {"JobId": j.id, "Id": t, "Data": "", "TargetType": {"Id": 1000, "Name": "DEVICE"}}
                for t in j.targets
            ],
            "Params": [],
            "LastRunStatus": st,
            "JobType": {"Id": j.job_type[0], "Name": j.job_type[1], "Internal": False},
            "JobStatus": st,
            "ExecutionHistories@odata.navigationLink": f"/api/JobService/Jobs({j.id})/ExecutionHistories",
        }

    # ---- HTTP ------------------------------------------------------------------------------------------
    def page(self, req: Request, path: str, items: list[dict[str, Any]], context: str) -> dict[str, Any]:
        try:
            top = int(req.query.get("$top", self.page_size))
            skip = int(req.query.get("$skip", 0))
        except ValueError as exc:
            raise ValueError("$top and $skip must be integers") from exc
        top = max(1, min(top, self.page_size))  # the server caps the page size, whatever asked
        doc: dict[str, Any] = {
            "@odata.context": f"/api/$metadata#Collection({context})",
            "@odata.count": len(items),
            "value": items[skip : skip + top],
        }
        if skip + top < len(items):
            doc["@odata.nextLink"] = f"{path}?$skip={skip + top}&$top={top}"
        return doc

    async def __call__(self, req: Request) -> Response | None:
        if req.path.startswith("/_lab/"):
            with self.lock:
                if req.path == "/_lab/faults" and req.method == "POST":
                    self.inject(**req.json())
                return Response.json(
                    {
                        "sessions": len(self.sessions),
                        "peak_sessions": self.peak_sessions,
                        "sessions_created": self.sessions_created,
                        "sessions_deleted": self.sessions_deleted,
                    }
                )
        with self.lock:
            self._tick()
            if self.faults.unreachable:
                return None
            if self.faults.server_errors:
                if self.faults.server_errors > 0:
                    self.faults.server_errors -= 1
                return self._err(
                    500, "CGEN1009", "Unable to complete the operation because of an internal error."
                )
            try:
                return self._route(req)
            except (ValueError, KeyError, TypeError) as exc:
                return self._err(
                    400, "CGEN1004", f"Unable to complete the request because the input is invalid: {exc}"
                )

    @staticmethod
    def _err(status: int, mid: str, message: str) -> Response:
        return Response.json(
            {
                "error": {
                    "code": "Base.1.0.GeneralError",
                    "message": "A general error has occurred. See ExtendedInfo for more information.",
                    "@Message.ExtendedInfo": [
                        {
                            "MessageId": mid,
                            "RelatedProperties": [],
                            "Message": message,
                            "MessageArgs": [],
                            "Severity": "Critical",
                            "Resolution": "Retry the operation.",
                        }
                    ],
                }
            },
            status,
        )

    def _route(self, req: Request) -> Response:
        p, m = req.path, req.method
        if p == "/api/SessionService/Sessions" and m == "POST":
            return self._login(req)
        token = req.headers.get("x-auth-token", "")
        sid = next((s for s, (t, _) in self.sessions.items() if t == token), None)
        if sid is None:
            return self._err(
                401,
                "CSEC1006",
                "Unable to complete the operation because the session is invalid or has expired.",
            )
        self.sessions[sid] = (token, time.monotonic())
        for method, pattern, handler in _ROUTES:
            if m == method and (mm := re.fullmatch(pattern, p)):
                return handler(self, req, *mm.groups())
        return self._missing()

    def _login(self, req: Request) -> Response:
        body = req.json()
        if (body.get("UserName"), body.get("Password")) != (self.username, self.password):
            return self._err(
                401, "CSEC5002", "Unable to log in because the user name or password is invalid."
            )
        if len(self.sessions) >= self.SESSION_CAP:
            return self._err(
                400,
                "CSEC5017",
                "Unable to create a session because the maximum number of sessions is reached.",
            )
        sid, token = secrets.token_hex(8), secrets.token_hex(16)
        self.sessions[sid] = (token, time.monotonic())
        self.sessions_created += 1
        self.peak_sessions = max(self.peak_sessions, len(self.sessions))
        return Response.json(
            {
                "Id": sid,
                "Description": "admin",
                "Name": "API",
                "UserName": self.username,
                "UserId": 10074,
                "Password": "",
                "Roles": ["ADMINISTRATOR"],
                "IpAddress": "127.0.0.1",
                "StartTimeStamp": "2026-01-01 00:00:00.000",
                "LastAccessedTimeStamp": "2026-01-01 00:00:00.000",
                "DirectoryGroup": [],
            },
            201,
            {"X-Auth-Token": token, "Location": f"/api/SessionService/Sessions('{sid}')"},
        )

    def _logout(self, req: Request, sid: str) -> Response:
        if self.sessions.pop(sid, None) is None:
            return self._err(
                404,
                "CGEN1006",
                "Unable to complete the request because the resource "
                "URI does not exist or is not implemented.",
            )
        self.sessions_deleted += 1
        return Response.empty(204)

    def _get_devices(self, req: Request) -> Response:
        items = [self.device_doc(d) for d in sorted(self.devices.values(), key=lambda d: d.id)]
        return Response.json(self.page(req, req.path, items, "DeviceService.Device"))

    def _get_device(self, req: Request, device_id: str) -> Response:
        d = self.devices.get(int(device_id))
        return Response.json(self.device_doc(d)) if d else self._missing()

    def _get_device_software(self, req: Request, device_id: str) -> Response:
        d = self.devices.get(int(device_id))
        return Response.json(self.software_doc(d)) if d else self._missing()

    def _get_catalogs(self, req: Request) -> Response:
        cat = {
            "@odata.type": "#UpdateService.Catalogs",
            "Id": self.catalog_id,
            "Filename": "Catalog.xml",
            "SourcePath": "catalog/Catalog.xml",
            "Status": "Completed",
            "TaskId": 0,
            "BaseLocation": "lab-repository",
            "ManifestIdentifier": "rackpilot-lab",
            "ReleaseIdentifier": "RP01",
            "ManifestVersion": "26.10.01",
            "NextUpdate": None,
            "PredecessorIdentifier": None,
            "LastUpdated": "2026-10-01 08:00:00.000",
            "BundlesCount": 0,
            "PredCatalogs": [],
            "AssociatedBaselines": [{"BaselineId": self.baseline_id, "BaselineName": "rackpilot-baseline"}],
            "Repository": {
                "Id": self.repository_id,
                "Name": "lab-repository",
                "Description": "",
                "Source": "127.0.0.1",
                "DomainName": None,
                "Username": None,
                "Password": None,
                "CheckCertificate": False,
                "RepositoryType": "HTTP",
            },
        }
        return Response.json(self.page(req, req.path, [cat], "UpdateService.Catalogs"))

    def _get_baselines(self, req: Request) -> Response:
        return Response.json(self.page(req, req.path, [self.baseline_doc()], "UpdateService.Baselines"))

    def _get_baseline(self, req: Request, baseline_id: str) -> Response:
        return Response.json(self.baseline_doc()) if int(baseline_id) == self.baseline_id else self._missing()

    def _get_compliance(self, req: Request, baseline_id: str) -> Response:
        if int(baseline_id) != self.baseline_id:
            return self._missing()
        items = [self.compliance_doc(d) for d in sorted(self.devices.values(), key=lambda d: d.id)]
        return Response.json(self.page(req, req.path, items, "UpdateService.DeviceComplianceReport"))

    def _get_job(self, req: Request, job_id: str) -> Response:
        j = self.jobs.get(int(job_id))
        return Response.json(self.job_doc(j)) if j else self._missing()

    def _create_job(self, req: Request) -> Response:
        body = req.json()
        jtype = body["JobType"]
        targets = [int(t["Id"]) for t in body.get("Targets", [])]
        unknown = [t for t in targets if t not in self.devices]
        if unknown:
            return self._err(
                400,
                "CJOB4002",
                f"Unable to create the job because the target device(s) {unknown} do not exist.",
            )
        if jtype.get("Id") != 8:
            return self._err(400, "CJOB4001", "Only inventory jobs (JobType 8) are simulated.")

        def refreshed() -> None:
            for t in targets:
                self.devices[t].last_inventory = time.strftime("%Y-%m-%d %H:%M:%S.000")

        j = self._start_job(str(body.get("JobName", "Inventory")), (8, "Inventory_Task"), targets, refreshed)
        return Response.json(self.job_doc(j), 201)

    def _run_jobs(self, req: Request) -> Response:
        ids = [int(i) for i in req.json().get("JobIds", [])]
        for i in ids:
            if i not in self.jobs:
                return self._err(400, "CJOB4010", f"Unable to run job {i} because it does not exist.")
        for i in ids:
            j = self.jobs[i]
            j.status, j.started, j.duration = 2050, time.monotonic(), self.job_seconds
            j.stuck = self.faults.job_outcome == "stuck"
        return Response.empty(204)

    def _missing(self) -> Response:
        return self._err(
            404,
            "CGEN1006",
            "Unable to complete the request because the resource URI does not exist or is not implemented.",
        )

    async def start(self, port: int = 0) -> OMESim:
        self._server = await start_server(self.host, port, self)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


# what an authenticated request reaches: (method, path pattern, handler); a pattern's groups
# are the handler's arguments after the request, and what matches none answers 404
_ROUTES: tuple[tuple[str, str, Callable[..., Response]], ...] = (
    ("DELETE", r"/api/SessionService/Sessions\('([^']+)'\)", OMESim._logout),
    ("GET", r"/api/DeviceService/Devices", OMESim._get_devices),
    ("GET", r"/api/DeviceService/Devices\((\d+)\)", OMESim._get_device),
    (
        "GET",
        r"/api/DeviceService/Devices\((\d+)\)/InventoryDetails\('deviceSoftware'\)",
        OMESim._get_device_software,
    ),
    ("GET", r"/api/UpdateService/Catalogs", OMESim._get_catalogs),
    ("GET", r"/api/UpdateService/Baselines", OMESim._get_baselines),
    ("GET", r"/api/UpdateService/Baselines\((\d+)\)", OMESim._get_baseline),
    ("GET", r"/api/UpdateService/Baselines\((\d+)\)/DeviceComplianceReports", OMESim._get_compliance),
    ("GET", r"/api/JobService/Jobs\((\d+)\)", OMESim._get_job),
    ("POST", r"/api/JobService/Jobs", OMESim._create_job),
    ("POST", re.escape("/api/JobService/Actions/JobService.RunJobs"), OMESim._run_jobs),
)
