"""The simulated iDRAC fleet: many BMCs in one asyncio process, one loopback port each.

Scripting from tests: `Lab` (async) or `LabThread` (runs the lab's event loop in a
background thread, for synchronous clients such as sushy). Each BMC also answers an
unauthenticated control API under `/_lab/` so that a lab in another process can be
driven and inspected:

  GET  /_lab/state            this BMC's counters (sessions, peak, jobs, power state)
  POST /_lab/faults           {"fault": value, ...}   (see `Faults`); {"clear": true} resets
  POST /_lab/exhaust-sessions fill the session table with sessions of "another tool"
  POST /_lab/stale-jobs       {"count": n} queue entries that never progress
  GET  /_lab/fleet            counters of every BMC in the process
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any

import httpx

from . import resources as res
from .bmc import BMC, MANAGER_ID, SYSTEM_ID, Rejected, Timing, dell_error
from .http import Request, Response, start_server

R = res.R
_OPEN_PATHS = {"/redfish", R, f"{R}/odata", f"{R}/$metadata"}
_SESSIONS = {f"{R}/SessionService/Sessions", f"{R}/Sessions"}


def _err(status: int, message_id: str, message: str, resolution: str = "") -> Response:
    return Response.json(dell_error(message_id, message, resolution), status)


def _not_found(path: str) -> Response:
    return _err(404, "Base.1.12.ResourceMissingAtURI", f"The resource at the URI {path} was not found.",
                "Place a valid resource at the URI or correct the URI and resubmit the request.")


class BMCApp:
    """HTTP front of one BMC."""

    def __init__(self, bmc: BMC, lab: Lab):
        self.bmc = bmc
        self.lab = lab

    async def __call__(self, req: Request) -> Response | None:
        bmc = self.bmc
        if req.path.startswith("/_lab/"):
            return self.control(req)
        bmc.tick()
        if bmc.faults.unreachable or bmc.idrac_down:
            return None
        if bmc.faults.slow_seconds or self.lab.latency:
            await asyncio.sleep(bmc.faults.slow_seconds + self.lab.latency)
        with bmc.lock:
            bmc.requests += 1
            if bmc.faults.server_errors:
                if bmc.faults.server_errors > 0:
                    bmc.faults.server_errors -= 1
                return _err(500, "SYS446", "Internal server error. The request could not be completed.",
                            "Retry the operation. If the issue persists, reset the iDRAC.")
        try:
            if req.path in _SESSIONS and req.method == "POST":
                return self.login(req)
            if req.path not in _OPEN_PATHS and not self.authorised(req):
                return _err(401, "Base.1.12.NoValidSession", "There is no valid session established with the "
                            "implementation.", "Establish a session before attempting any operations.")
            return await self.route(req)
        except Rejected as rej:
            return _err(rej.status, rej.message_id, rej.message, rej.resolution)
        except (ValueError, KeyError, TypeError) as exc:
            return _err(400, "Base.1.12.MalformedJSON", f"The request body submitted was malformed JSON "
                        f"or missing a field: {exc}", "Correct the request body and resubmit.")

    def authorised(self, req: Request) -> bool:
        token = req.headers.get("x-auth-token")
        basic = None
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                basic = (user, pw)
            except ValueError:
                return False
        return self.bmc.authenticate(token, basic)

    def login(self, req: Request) -> Response:
        body = req.json()
        s = self.bmc.create_session(str(body.get("UserName", "")), str(body.get("Password", "")))
        path = f"{R}/SessionService/Sessions/{s.id}"
        return Response.json(res.session_doc(s.id, s.user), 201, {"X-Auth-Token": s.token, "Location": path})

    # ---- routing --------------------------------------------------------------------------
    async def route(self, req: Request) -> Response:  # noqa: C901 - a flat routing table reads best
        bmc, p, m = self.bmc, req.path, req.method
        mgr, sys_, dell = res.MGR, res.SYS, res.DELL_MGR
        if m in ("GET", "HEAD"):
            doc = self.get(p, req)
            return Response.json(doc) if not isinstance(doc, Response) else doc
        if p.startswith(f"{R}/SessionService/Sessions/") or p.startswith(f"{R}/Sessions/"):
            if m != "DELETE":
                return _err(405, "Base.1.12.OperationNotAllowed", "The operation is not allowed.")
            sid = p.rsplit("/", 1)[-1]
            if not bmc.delete_session(sid):
                return _not_found(p)
            return Response.json({"@Message.ExtendedInfo": [{"MessageId": "Base.1.12.Success",
                                                              "Message": "Successfully Completed Request"}]})
        if m == "POST" and p == f"{sys_}/Actions/ComputerSystem.Reset":
            bmc.reset(req.json().get("ResetType", ""))
            return Response.empty(204)
        if m == "PATCH" and p == sys_:
            body = req.json()
            if "Boot" in body:
                bmc.patch_boot(body["Boot"])
            return Response.json({"@Message.ExtendedInfo": [{"MessageId": "Base.1.12.Success",
                                                              "Message": "Successfully Completed Request"}]})
        if m == "POST" and p.startswith(f"{mgr}/VirtualMedia/") and "/Actions/" in p:
            slot = p.split("/VirtualMedia/", 1)[1].split("/", 1)[0]
            if slot not in bmc.virtual_media:
                return _not_found(p)
            if p.endswith("VirtualMedia.InsertMedia"):
                image = req.json().get("Image")
                if not image:
                    return _err(400, "Base.1.12.PropertyMissing", "The property Image is a required property.")
                if not await self.lab.fetchable(image):
                    return _err(400, "RAC0720", "Unable to locate the ISO or IMG image file or folder in the "
                                "network share location because the file or folder path or the user "
                                "credentials entered are incorrect.",
                                "Enter a valid image URL and credentials and retry the operation.")
                bmc.insert_media(slot, image)
            else:
                bmc.eject_media(slot)
            return Response.empty(204)
        if m == "POST" and p == f"{mgr}/Actions/Oem/EID_674_Manager.ExportSystemConfiguration":
            job = bmc.scp_export(req.json())
            return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})
        if m == "POST" and p == f"{mgr}/Actions/Oem/EID_674_Manager.ImportSystemConfiguration":
            job = bmc.scp_import(req.json())
            return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})
        if m == "POST" and p == f"{R}/UpdateService/Actions/UpdateService.SimpleUpdate":
            job = bmc.simple_update(req.json())
            asyncio.get_running_loop().create_task(self._download(job, req.json()["ImageURI"]))
            return Response.empty(202, {"Location": f"{R}/TaskService/Tasks/{job.id}"})
        if m == "POST" and p == f"{dell}/DellJobService/Actions/DellJobService.DeleteJobQueue":
            bmc.delete_job_queue(str(req.json().get("JobID", "")))
            return Response.json({"@Message.ExtendedInfo": [{"MessageId": "IDRAC.2.8.SUP020",
                                                              "Message": "Successfully deleted the job(s)."}]})
        if m == "POST" and p == f"{dell}/DellLCService/Actions/DellLCService.GetRemoteServicesAPIStatus":
            st = bmc.lc_status()
            st["@Message.ExtendedInfo"] = [{"MessageId": "IDRAC.2.8.LC061", "Message": "Lifecycle Controller "
                                            "Remote Services is ready." if st["Status"] == "Ready" else
                                            "Lifecycle Controller Remote Services is not ready."}]
            return Response.json(st)
        if m == "POST" and p in (f"{dell}/DelliDRACCardService/Actions/DelliDRACCardService.iDRACReset",
                                 f"{mgr}/Actions/Manager.Reset"):
            bmc.reset_idrac()
            return Response.json({"@Message.ExtendedInfo": [{"MessageId": "IDRAC.2.8.RAC064",
                                                              "Message": "iDRAC restart operation initiated "
                                                              "successfully."}]})
        if self._known(p):
            return _err(405, "Base.1.12.OperationNotAllowed", f"The {m} operation is not allowed on {p}.")
        return _not_found(p)

    def _known(self, path: str) -> bool:
        try:
            doc = self.get(path, None)
        except Rejected:
            return False
        return not isinstance(doc, Response)

    async def _download(self, job, uri: str) -> None:
        data, error = await self.lab.fetch(uri)
        self.bmc.download_finished(job, data, error)

    def get(self, p: str, req: Request | None) -> dict[str, Any] | Response:  # noqa: C901
        bmc = self.bmc
        mgr, sys_, dell = res.MGR, res.SYS, res.DELL_MGR
        with bmc.lock:
            if p in ("/redfish",):
                return {"v1": f"{R}/"}
            if p == R:
                return res.service_root(bmc)
            if p == f"{R}/odata":
                return {"@odata.context": f"{R}/$metadata", "value": []}
            if p == f"{R}/SessionService":
                return res.session_service()
            if p in _SESSIONS:
                return res.collection(p, "SessionCollection", "Session Collection",
                                      [f"{R}/SessionService/Sessions/{s}" for s in bmc.sessions])
            if p.startswith(f"{R}/SessionService/Sessions/"):
                s = bmc.sessions.get(p.rsplit("/", 1)[-1])
                return res.session_doc(s.id, s.user) if s else _not_found(p)
            if p == f"{R}/Systems":
                return res.collection(p, "ComputerSystemCollection", "Computer System Collection", [sys_])
            if p == sys_:
                return res.system(bmc)
            if p == f"{R}/Chassis":
                return res.collection(p, "ChassisCollection", "Chassis Collection", [res.CHS])
            if p == res.CHS:
                return res.chassis(bmc)
            if p == f"{R}/Managers":
                return res.collection(p, "ManagerCollection", "BMC", [mgr])
            if p == mgr:
                return res.manager(bmc)
            if p == f"{mgr}/VirtualMedia":
                return res.collection(p, "VirtualMediaCollection", "Virtual Media Services",
                                      [f"{mgr}/VirtualMedia/{s}" for s in bmc.virtual_media])
            if p.startswith(f"{mgr}/VirtualMedia/"):
                slot = p.rsplit("/", 1)[-1]
                return res.virtual_media(bmc, slot) if slot in bmc.virtual_media else _not_found(p)
            if p == f"{R}/UpdateService":
                return res.update_service()
            if p == f"{R}/UpdateService/FirmwareInventory":
                expand = req is not None and "$expand" in req.query
                members = [res.firmware(bmc, c) if expand else
                           f"{R}/UpdateService/FirmwareInventory/{res.fw_id(c)}" for c in bmc.components]
                return res.collection(p, "SoftwareInventoryCollection", "Firmware Inventory Collection", members)
            if p.startswith(f"{R}/UpdateService/FirmwareInventory/"):
                fid = p.rsplit("/", 1)[-1]
                c = next((c for c in bmc.components if res.fw_id(c) == fid), None)
                return res.firmware(bmc, c) if c else _not_found(p)
            if p == f"{mgr}/Jobs":
                expand = req is not None and "$expand" in req.query
                members = [res.job(j) if expand else f"{mgr}/Jobs/{j.id}" for j in bmc.jobs.values()]
                doc = res.collection(p, "DellJobCollection", "Collection of Job Instances", members)
                doc.update({"Id": "JobQueue", "Name": "JobQueue"})
                return doc
            if p.startswith(f"{mgr}/Jobs/"):
                j = bmc.jobs.get(p.rsplit("/", 1)[-1])
                return res.job(j) if j else _not_found(p)
            if p == f"{R}/TaskService":
                return {"@odata.id": p, "@odata.type": "#TaskService.v1_1_4.TaskService", "Id": "TaskService",
                        "Name": "Task Service", "ServiceEnabled": True, "Tasks": res.ref(f"{p}/Tasks")}
            if p == f"{R}/TaskService/Tasks":
                return res.collection(p, "TaskCollection", "Task Collection",
                                      [f"{p}/{j.id}" for j in bmc.jobs.values() if j.is_task])
            if p.startswith(f"{R}/TaskService/Tasks/"):
                j = bmc.jobs.get(p.rsplit("/", 1)[-1])
                if j is None or not j.is_task:
                    return _not_found(p)
                if j.job_type == "ExportConfiguration" and j.state == "Completed":
                    return j.result  # iDRAC answers the finished export task with the profile itself
                doc = res.task(j)
                return doc if j.finished else Response.json(doc, 202, {"Location": p})
            if p == f"{dell}/DellJobService":
                return res.job_service()
            if p == f"{dell}/DellLCService":
                return res.lc_service()
            if p == f"{dell}/DelliDRACCardService":
                return res.idrac_card_service()
        return _not_found(p)

    # ---- control API -------------------------------------------------------------------------
    def control(self, req: Request) -> Response:
        bmc = self.bmc
        try:
            if req.path == "/_lab/state":
                return Response.json(bmc.stats())
            if req.path == "/_lab/fleet":
                return Response.json(self.lab.fleet_stats())
            if req.path == "/_lab/faults" and req.method == "POST":
                body = req.json()
                if body.pop("clear", False):
                    bmc.clear_faults()
                bmc.inject(**body)
                return Response.json(bmc.stats())
            if req.path == "/_lab/exhaust-sessions" and req.method == "POST":
                bmc.exhaust_sessions()
                return Response.json(bmc.stats())
            if req.path == "/_lab/stale-jobs" and req.method == "POST":
                return Response.json({"jobs": bmc.add_stale_jobs(int(req.json().get("count", 2)))})
            if req.path == "/_lab/reset-stats" and req.method == "POST":
                self.lab.reset_stats()
                return Response.json({"ok": True})
        except (ValueError, TypeError) as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json({"error": f"unknown control path {req.path}"}, 404)


class Lab:
    """A fleet of simulated BMCs. `base_port=0` binds each BMC to a free port."""

    def __init__(self, count: int = 1, *, base_port: int = 0, time_scale: float = 1.0,
                 host: str = "127.0.0.1", username: str = "root", password: str = "calvin",
                 timing: Timing | None = None, ssl_context: Any = None, latency: float = 0.0):
        self.host = host
        self.latency = latency  # real seconds added to every answer: network + BMC service time
        self.ssl_context = ssl_context  # serve HTTPS (e.g. a self-signed lab certificate)
        self.base_port = base_port
        self.time_scale = time_scale
        self.bmcs = [BMC(i, time_scale=time_scale, username=username, password=password,
                         timing=Timing(**vars(timing)) if timing else None) for i in range(count)]
        self._servers: list[asyncio.base_events.Server] = []
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> Lab:
        self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=True)
        for bmc in self.bmcs:
            port = self.base_port + bmc.index if self.base_port else 0
            srv = await start_server(self.host, port, BMCApp(bmc, self), ssl=self.ssl_context)
            bmc.host, bmc.port = self.host, srv.sockets[0].getsockname()[1]
            self._servers.append(srv)
        return self

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()
        if self._http:
            await self._http.aclose()

    def url(self, i: int) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.bmcs[i].port}"

    def fleet_stats(self) -> dict[str, Any]:
        stats = [b.stats() for b in self.bmcs]
        return {"count": len(stats), "sessions": sum(s["sessions"] for s in stats),
                "peak_sessions_max": max((s["peak_sessions"] for s in stats), default=0),
                "sessions_created": sum(s["sessions_created"] for s in stats),
                "sessions_deleted": sum(s["sessions_deleted"] for s in stats),
                "requests": sum(s["requests"] for s in stats)}

    def reset_stats(self) -> None:
        for b in self.bmcs:
            with b.lock:
                b.peak_sessions = b.own_sessions()
                b.sessions_created = b.sessions_deleted = b.requests = 0

    async def fetchable(self, url: str) -> bool:
        """Virtual media: the iDRAC checks that the image URL answers before it mounts."""
        assert self._http is not None
        try:
            r = await self._http.head(url)
            if r.status_code == 405:
                r = await self._http.get(url, headers={"Range": "bytes=0-511"})
            return r.status_code in (200, 206)
        except httpx.HTTPError:
            return False

    async def fetch(self, url: str) -> tuple[bytes | None, str]:
        assert self._http is not None
        try:
            r = await self._http.get(url)
        except httpx.HTTPError as exc:
            return None, f"Unable to download the update package: {type(exc).__name__}."
        if r.status_code != 200:
            return None, f"Unable to download the update package: HTTP {r.status_code}."
        return r.content, ""


class LabThread:
    """Runs a `Lab` on its own event loop in a daemon thread (for synchronous clients)."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="idrac-lab", daemon=True)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Lab:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.lab.start(), self.loop).result(30)
        return self.lab

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.lab.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


__all__ = ["Lab", "LabThread", "BMC", "Timing", "MANAGER_ID", "SYSTEM_ID"]
