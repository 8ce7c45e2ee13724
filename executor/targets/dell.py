"""The Dell iDRAC9 and iDRAC10 OEM surface, on top of sushy's Dell extension (`sushy.oem.dell`).

sushy's extension finds the Dell services (Lifecycle Controller, job service, job
collection, iDRAC card service, SCP actions); this module adds what orchestration needs
on top: bounded, progress-aware waits instead of sushy's fixed sleeps, LC-readiness
gating, job-queue hygiene with escalation, staged firmware updates applied in one
reboot and verified afterwards, and an iDRAC reset that waits for the iDRAC to return.

iDRAC10 differs (each difference below carries a comment naming the quirk): its SCP
actions are `OemManager.*` (found by suffix, as sushy does) and its jobs are followed
through TaskService; SimpleUpdate names the device in `Targets` (PLDM devices are updated
only so) with `@Redfish.OperationApplyTime`.

Firmware packages go to the iDRAC by multipart HTTP push when its UpdateService advertises
a `MultipartHttpPushUri` (iDRAC9 from 4.40, iDRAC10): the executor downloads the package
from the repository to a temporary file in chunks and streams it to the iDRAC as
`multipart/form-data` (UpdateParameters + UpdateFile) with a Content-Length, never holding
it whole; the iDRAC needs no route to the repository. Otherwise SimpleUpdate with
`ImageURI`, which the iDRAC downloads itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import requests
from sushy import exceptions as sx

from .catalog import UpdatePackage
from .endpoint import Endpoint, Timeouts
from .errors import (
    FirmwareVerificationFailed,
    JobFailed,
    JobQueueStuck,
    JobStuck,
    LifecycleControllerNotReady,
    OperationTimedOut,
    RequestRejected,
    TargetError,
    TargetUnreachable,
)

LOG = logging.getLogger("rackpilot.targets.dell")
T = TypeVar("T")


class RedfishSession(Protocol):
    """What DellOEM uses of the client that hands it out (``redfish.RedfishClient``, which
    builds on this module: declared here so that this module does not import it back)."""

    target: str
    endpoint: Endpoint
    timeouts: Timeouts
    sleep: Callable[[float], None]

    @property
    def root(self) -> Any: ...  # the sushy root
    @property
    def conn(self) -> Any: ...  # sushy's connector
    @property
    def generation(self) -> int | None: ...
    def doing(self, operation: str) -> AbstractContextManager[None]: ...
    def call(self, operation: str, fn: Callable[[], T]) -> T: ...
    def configure(self, operation: str, fn: Callable[[], T]) -> T: ...
    def get_json(self, path: str, operation: str) -> tuple[int, dict[str, Any], dict[str, str]]: ...
    def request_once(self, method: str, url: str, **kw: Any) -> requests.Response: ...
    def manager(self) -> Any: ...
    def firmware_inventory(self, warnings: list[str] | None = None) -> list[Any]: ...
    def power_state(self) -> str: ...
    def power(self, action: str, *, wait: bool = True) -> Any: ...


ASK = object()  # stage_package: read it from the iDRAC
IDRAC_COMPONENT_ID = "25227"  # Dell component id of "iDRAC with Lifecycle Controller"
FINISHED = {"Completed", "Failed", "CompletedWithErrors", "RebootFailed"}
FAILED = {"Failed", "CompletedWithErrors", "RebootFailed"}
PACKAGE_MAX_BYTES = 4 * 1024**3  # a Dell update package is at most a few hundred MB
CHUNK = 1024 * 1024


def action_target(resource: Any, action: str) -> str:
    """The target URI of `action` (e.g. "#UpdateService.SimpleUpdate") on a sushy resource,
    read from its public `json`, for an action whose sushy method does not send what
    rackpilot needs; MissingActionError when the resource does not offer it."""
    target = ((resource.json.get("Actions") or {}).get(action) or {}).get("target")
    if not target:
        raise sx.MissingActionError(action=action, resource=resource.path)
    return str(target)


class MultipartPackage:
    """A `multipart/form-data` body of two parts, UpdateParameters (JSON) and UpdateFile (the
    package read from disk in chunks), with its length known up front so that it goes out
    with a Content-Length (iDRAC does not take a chunked body). `requests` streams it
    through `read`."""

    def __init__(self, params: dict[str, Any], path: Path, filename: str):
        self.boundary = secrets.token_hex(16)
        safe = "".join(ch for ch in filename if ch.isprintable() and ch not in '"\\') or "package.bin"
        self._head = (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="UpdateParameters"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{json.dumps(params)}\r\n"
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="UpdateFile"; filename="{safe}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._path = path
        self._size = path.stat().st_size
        self._file: Any = None
        self._pos = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        out = b""
        while len(out) < n:
            h, f = len(self._head), self._size
            if self._pos < h:
                piece = self._head[self._pos : self._pos + n - len(out)]
            elif self._pos < h + f:
                if self._file is None:
                    self._file = self._path.open("rb")
                piece = self._file.read(min(n - len(out), h + f - self._pos))
                if not piece:
                    raise OSError(f"{self._path} shrank while it was being sent")
            else:
                piece = self._tail[self._pos - h - f : self._pos - h - f + n - len(out)]
            if not piece:
                break
            out += piece
            self._pos += len(piece)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class LCStatus:
    lc_status: str
    rt_status: str
    server_status: str
    status: str

    @property
    def ready(self) -> bool:
        return self.status == "Ready" and self.lc_status == "Ready"


@dataclass
class DellJob:
    id: str
    name: str
    job_type: str
    state: str
    percent: int
    message: str
    message_id: str

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DellJob:
        return cls(
            str(d.get("Id", "")),
            str(d.get("Name", "")),
            str(d.get("JobType", "")),
            str(d.get("JobState", "")),
            int(d.get("PercentComplete") or 0),
            str(d.get("Message", "")),
            str(d.get("MessageId", "")),
        )


@dataclass
class QueueClearResult:
    removed: list[str]
    forced: bool  # JID_CLEARALL was not enough; JID_CLEARALL_FORCE was used
    message: str


@dataclass
class ScpExport:
    job_id: str
    profile: dict[str, Any]
    sha256: str  # of `text`, the canonical JSON as stored
    text: str
    config_sha256: str  # of the components only (no timestamp): equal hashes = same configuration


@dataclass
class ComponentResult:
    component_id: str
    name: str
    before: str | None
    target: str
    after: str | None = None
    job_id: str | None = None
    job_state: str | None = None
    status: str = "pending"  # already_current | updated | failed | unchanged (success claimed, same version)
    message: str = ""


@dataclass
class FirmwareUpdateReport:
    components: list[ComponentResult] = field(default_factory=list)
    rebooted: bool = False
    queue: QueueClearResult | None = None

    @property
    def nothing_to_do(self) -> bool:
        return all(c.status == "already_current" for c in self.components)

    @property
    def ok(self) -> bool:
        return all(c.status in ("already_current", "updated") for c in self.components)

    def raise_for_failures(self, target: str) -> None:
        unchanged = [c for c in self.components if c.status == "unchanged"]
        failed = [c for c in self.components if c.status == "failed"]
        if failed:
            c = failed[0]
            raise JobFailed(
                f"{len(failed)} component(s) failed; first: {c.name or c.component_id}: {c.message}",
                job_id=c.job_id,
                state=c.job_state,
                target=target,
                operation="firmware update",
            )
        if unchanged:
            names = ", ".join(
                f"{c.name or c.component_id} still {c.after} (wanted {c.target})" for c in unchanged
            )
            raise FirmwareVerificationFailed(
                f"update reported success but versions did not change: {names}",
                target=target,
                operation="firmware update",
            )


class DellOEM:
    def __init__(self, client: RedfishSession, ext: Any):
        self.c = client
        self.ext = ext  # sushy.oem.dell DellManagerExtension

    @property
    def target(self) -> str:
        return self.c.target

    # ---- Lifecycle Controller -----------------------------------------------------------------
    def lc_status(self) -> LCStatus:
        def go() -> LCStatus:
            svc = self.ext.lifecycle_service
            # sushy's is_idrac_ready() and is_realtime_ready() each post the action and keep
            # one field; rackpilot needs all four of one answer (ServerStatus tells POST).
            uri = action_target(svc, "#DellLCService.GetRemoteServicesAPIStatus")
            d = self.c.conn.post(uri, data={}).json()
            return LCStatus(
                str(d.get("LCStatus", "")),
                str(d.get("RTStatus", "")),
                str(d.get("ServerStatus", "")),
                str(d.get("Status", "")),
            )

        return self.c.call("read Lifecycle Controller status", go)

    def wait_lc_ready(
        self, *, operation: str = "wait for Lifecycle Controller", timeout: float | None = None
    ) -> LCStatus:
        """Poll GetRemoteServicesAPIStatus until Ready, bounded by `timeouts.lc_ready`."""
        limit = self.c.timeouts.lc_ready if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            st = self.lc_status()
            if st.ready:
                return st
            if time.monotonic() >= deadline:
                raise LifecycleControllerNotReady(
                    f"Lifecycle Controller not ready after {limit:g} s (LCStatus={st.lc_status}, "
                    f"RTStatus={st.rt_status}, ServerStatus={st.server_status})",
                    target=self.target,
                    operation=operation,
                )
            self.c.sleep(self.c.timeouts.poll)

    # ---- job queue ---------------------------------------------------------------------------------
    def jobs(self) -> list[DellJob]:
        def go() -> list[DellJob]:
            path = self.ext.job_collection.path
            doc = self.c.conn.get(f"{path}?$expand=.($levels=1)").json()
            return [DellJob.from_json(m) for m in doc.get("Members", []) if "JobState" in m]

        return self.c.call("read job queue", go)

    def job(self, job_id: str) -> DellJob:
        def go() -> DellJob:
            if self.c.generation == 10:
                # Quirk: iDRAC10 tracks configuration and update jobs through TaskService;
                # the Dell job sits in the task's Oem.Dell (the task answers 202 while running).
                doc = self.c.conn.get(f"/redfish/v1/TaskService/Tasks/{job_id}").json()
                dell = (doc.get("Oem") or {}).get("Dell") or {}
                return DellJob.from_json(
                    {
                        **dell,
                        "Id": doc.get("Id", job_id),
                        "Name": doc.get("Name", ""),
                        "PercentComplete": doc.get("PercentComplete", dell.get("PercentComplete")),
                    }
                )
            return DellJob.from_json(self.c.conn.get(f"{self.ext.job_collection.path}/{job_id}").json())

        return self.c.call(f"read job {job_id}", go)

    def delete_job(self, job_id: str) -> None:
        """Delete one job from the iDRAC's queue (or all: JID_CLEARALL, JID_CLEARALL_FORCE)."""

        def go() -> None:
            self.ext.job_service.delete_jobs(job_ids=[job_id])

        self.c.call(f"delete job queue ({job_id})", go)

    def clear_job_queue(self) -> QueueClearResult:
        """Job-queue hygiene: JID_CLEARALL; if unfinished entries survive (wedged or still
        running), escalate to JID_CLEARALL_FORCE, which also restarts the LC services, then
        wait for Ready. Entries surviving even that raise JobQueueStuck."""
        with self.c.doing("clear job queue"):
            return self._clear_job_queue()

    def _clear_job_queue(self) -> QueueClearResult:
        before = [j.id for j in self.jobs()]
        if not before:
            return QueueClearResult([], False, "job queue already empty")
        self.delete_job("JID_CLEARALL")
        left = [j for j in self.jobs() if not j.finished]
        forced = False
        if left:
            # Quirk: JID_CLEARALL reports success yet leaves wedged or running entries;
            # Dell's remedy is JID_CLEARALL_FORCE (clears pending data, restarts LC).
            LOG.warning("target %s: %d job(s) survived JID_CLEARALL; force-clearing", self.target, len(left))
            self.delete_job("JID_CLEARALL_FORCE")
            forced = True
            self.wait_lc_ready(operation="clear job queue")
            left = [j for j in self.jobs() if not j.finished]
            if left:
                raise JobQueueStuck(
                    f"{len(left)} job(s) still queued after JID_CLEARALL_FORCE: "
                    + ", ".join(f"{j.id} ({j.state})" for j in left),
                    job_id=left[0].id,
                    state=left[0].state,
                    target=self.target,
                    operation="clear job queue",
                )
        after = {j.id for j in self.jobs()}
        removed = [j for j in before if j not in after]
        return QueueClearResult(
            removed, forced, f"removed {len(removed)} job(s)" + (" with force" if forced else "")
        )

    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        stop_at: frozenset[str] = frozenset(),
        operation: str = "wait for job",
    ) -> DellJob:
        """Poll a Dell job until it finishes (or reaches a state in `stop_at`). Failed ends
        raise JobFailed. Progress-aware: the job is declared stuck when neither its state
        nor its percentage changed for `timeouts.stall`, or it ran past `timeout`
        (default `timeouts.job`) — so slow-but-moving jobs are not cut off early."""
        t = self.c.timeouts
        limit = t.job if timeout is None else timeout
        start = time.monotonic()
        last_change, last_key = start, None
        while True:
            job = self.job(job_id)
            if job.state in FAILED:
                raise JobFailed(
                    f"job {job.id} ({job.name}) ended {job.state}: {job.message}",
                    job_id=job.id,
                    state=job.state,
                    target=self.target,
                    operation=operation,
                    message_id=job.message_id.rsplit(".", 1)[-1] or None,
                )
            if job.finished or job.state in stop_at:
                return job
            now = time.monotonic()
            key = (job.state, job.percent)
            if key != last_key:
                last_key, last_change = key, now
            if now - last_change >= t.stall:
                raise JobStuck(
                    f"job {job.id} ({job.name}) made no progress for {t.stall:g} s "
                    f"(state {job.state}, {job.percent}%)",
                    job_id=job.id,
                    state=job.state,
                    percent=job.percent,
                    target=self.target,
                    operation=operation,
                )
            if now - start >= limit:
                raise JobStuck(
                    f"job {job.id} ({job.name}) not finished after {limit:g} s "
                    f"(state {job.state}, {job.percent}%)",
                    job_id=job.id,
                    state=job.state,
                    percent=job.percent,
                    target=self.target,
                    operation=operation,
                )
            self.c.sleep(t.poll)

    @staticmethod
    def job_id_from(headers: dict[str, str], body: dict[str, Any]) -> str:
        """The Dell job id (JID_/RID_) an action answered with, from Location or @odata.id."""
        loc = headers.get("Location") or headers.get("location") or body.get("@odata.id") or ""
        jid = loc.rstrip("/").rsplit("/", 1)[-1]
        if not jid.startswith(("JID_", "RID_")):
            raise RequestRejected(f"the iDRAC accepted the request but returned no job id (Location {loc!r})")
        return jid

    # ---- SCP ------------------------------------------------------------------------------------------
    def export_scp(
        self, target: str = "ALL", *, export_use: str = "Default", include: str = "Default"
    ) -> ScpExport:
        """Server Configuration Profile export as JSON, waited for with `timeouts.scp`.
        The finished task answers with the profile itself (iDRAC behaviour)."""
        with self.c.doing("export SCP"):
            return self._export_scp(target=target, export_use=export_use, include=include)

    def _export_scp(
        self, target: str = "ALL", *, export_use: str = "Default", include: str = "Default"
    ) -> ScpExport:
        uri = self.ext.export_system_configuration_uri
        body = {
            "ExportFormat": "JSON",
            "ExportUse": export_use,
            "IncludeInExport": include,
            "ShareParameters": {"Target": [target]},
        }
        status, resp, headers = self.c.configure("export SCP", lambda: self.post_action(uri, body))
        jid = self.job_id_from(headers, resp)
        task = f"/redfish/v1/TaskService/Tasks/{jid}"
        t = self.c.timeouts
        start = time.monotonic()
        last_key, last_change = None, start
        while True:
            code, doc, _ = self.c.get_json(task, "export SCP")
            if code == 200 and "SystemConfiguration" in doc:
                text = json.dumps(doc, sort_keys=True, indent=1)
                comps = json.dumps(doc["SystemConfiguration"].get("Components", []), sort_keys=True)
                return ScpExport(
                    jid,
                    doc,
                    hashlib.sha256(text.encode()).hexdigest(),
                    text,
                    hashlib.sha256(comps.encode()).hexdigest(),
                )
            dell = (doc.get("Oem") or {}).get("Dell") or {}
            state, pct = (
                str(dell.get("JobState", doc.get("TaskState", ""))),
                int(dell.get("PercentComplete") or 0),
            )
            if state in FAILED or doc.get("TaskState") == "Exception":
                raise JobFailed(
                    f"SCP export job {jid} ended {state}: {dell.get('Message', '')}",
                    job_id=jid,
                    state=state,
                    target=self.target,
                    operation="export SCP",
                )
            now = time.monotonic()
            if (state, pct) != last_key:
                last_key, last_change = (state, pct), now
            if now - last_change >= t.stall or now - start >= t.scp:
                raise JobStuck(
                    f"SCP export job {jid} not finished (state {state}, {pct}%) after {now - start:.1f} s",
                    job_id=jid,
                    state=state,
                    percent=pct,
                    target=self.target,
                    operation="export SCP",
                )
            self.c.sleep(t.poll)

    def post_action(self, uri: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """POST an action; (status, JSON body or {}, headers). Run it through the client's
        `call`/`configure`, which map its failures."""
        r = self.c.conn.post(uri, data=body)
        return r.status_code, (r.json() if r.content else {}), dict(r.headers)

    def import_scp(
        self, profile: dict[str, Any] | str, *, shutdown: str = "Graceful", wait: bool = True
    ) -> DellJob:
        """Apply a profile. `shutdown` Graceful/Forced reboots the host to apply; NoReboot
        leaves the job Scheduled until someone reboots (returned as-is, not waited)."""
        with self.c.doing("import SCP"):
            return self._import_scp(profile=profile, shutdown=shutdown, wait=wait)

    def _import_scp(
        self, profile: dict[str, Any] | str, *, shutdown: str = "Graceful", wait: bool = True
    ) -> DellJob:
        if shutdown not in ("Graceful", "Forced", "NoReboot"):
            raise ValueError("shutdown must be Graceful, Forced or NoReboot")
        buf = profile if isinstance(profile, str) else json.dumps(profile)
        body = {"ImportBuffer": buf, "ShareParameters": {"Target": "ALL"}, "ShutdownType": shutdown}
        status, resp, headers = self.c.configure(
            "import SCP", lambda: self.post_action(self.ext.import_system_configuration_uri, body)
        )
        jid = self.job_id_from(headers, resp)
        if not wait or shutdown == "NoReboot":
            return self.job(jid)
        return self.wait_job(jid, timeout=self.c.timeouts.scp, operation="import SCP")

    # Dell's own profile for a one-time boot from the virtual CD (the same attributes
    # sushy's Dell extension imports); iDRAC rejects it with insignificant whitespace.
    VIRTUAL_CD_BOOT_ONCE = (
        '<SystemConfiguration><Component FQDD="{fqdd}">'
        '<Attribute Name="ServerBoot.1#BootOnce">Enabled</Attribute>'
        '<Attribute Name="ServerBoot.1#FirstBootDevice">VCD-DVD</Attribute>'
        "</Component></SystemConfiguration>"
    )

    def set_virtual_cd_boot_once(self) -> DellJob:
        """One-time boot from the virtual CD through the iDRAC's ServerBoot attributes (an SCP
        import of iDRAC attributes, applied without a host reboot), waited for."""
        with self.c.doing("set one-time boot from virtual media"):
            fqdd = self.c.manager().identity
            body = {
                "ImportBuffer": self.VIRTUAL_CD_BOOT_ONCE.format(fqdd=fqdd),
                "ShareParameters": {"Target": ["ALL"]},
            }
            _, resp, headers = self.c.configure(
                "set one-time boot", lambda: self.post_action(self.ext.import_system_configuration_uri, body)
            )
            jid = self.job_id_from(headers, resp)
            return self.wait_job(jid, timeout=self.c.timeouts.scp, operation="set one-time boot")

    # ---- firmware ---------------------------------------------------------------------------------
    def simple_update(
        self,
        image_uri: str,
        protocol: str = "HTTP",
        *,
        target: str | None = None,
        apply_time: str | None = None,
    ) -> str:
        """Start a SimpleUpdate; returns the Dell job id. `target` (the FirmwareInventory
        member the package is for) and `apply_time` are sent on iDRAC10 only."""

        def go() -> tuple[int, dict[str, Any], dict[str, str]]:
            us = self.c.root.get_update_service()
            # Not sushy's UpdateService.simple_update: it sends ImageURI, TransferProtocol
            # and Targets only, never the @Redfish.OperationApplyTime iDRAC10 needs.
            uri = action_target(us, "#UpdateService.SimpleUpdate")
            body: dict[str, Any] = {"ImageURI": image_uri, "TransferProtocol": protocol}
            if self.c.generation == 10:
                # Quirk: iDRAC10 updates PLDM devices (NICs, storage controllers) only when
                # SimpleUpdate names them in Targets, with an apply time.
                if target:
                    body["Targets"] = [target]
                if apply_time:
                    body["@Redfish.OperationApplyTime"] = apply_time
            return self.post_action(uri, body)

        _, resp, headers = self.c.configure("firmware SimpleUpdate", go)
        return self.job_id_from(headers, resp)

    def multipart_push_uri(self) -> str | None:
        """The UpdateService's MultipartHttpPushUri, or None when it advertises none."""
        us = self.c.call("read update service", self.c.root.get_update_service)
        return str(us.json.get("MultipartHttpPushUri") or "") or None

    def inventory_member(self, component_id: str, inventory: list[Any] | None = None) -> str | None:
        """The FirmwareInventory member of an installed component (for `Targets`), from
        `inventory` when the caller has just read it."""
        for fc in self.c.firmware_inventory() if inventory is None else inventory:
            if fc.component_id == component_id:
                return f"/redfish/v1/UpdateService/FirmwareInventory/{fc.id}"
        return None

    @contextmanager
    def fetched_package(self, image_uri: str) -> Iterator[Path]:
        """The package behind `image_uri`, downloaded in chunks to a temporary file that is
        removed afterwards; refused beyond PACKAGE_MAX_BYTES."""
        t = self.c.timeouts
        name = unquote(urlsplit(image_uri).path.rsplit("/", 1)[-1]) or "package.bin"
        with tempfile.TemporaryDirectory(prefix="rackpilot-pkg-") as tmp:
            path = Path(tmp) / "package"
            try:
                with requests.get(image_uri, stream=True, timeout=(t.connect, max(t.read, 30.0))) as r:
                    if r.status_code != 200:
                        raise RequestRejected(
                            f"cannot download update package {name}: HTTP {r.status_code}",
                            target=self.target,
                            operation="download update package",
                            hint="check the repository beside the catalog",
                        )
                    size = 0
                    with path.open("wb") as out:
                        os.chmod(path, 0o600)
                        for chunk in r.iter_content(CHUNK):
                            size += len(chunk)
                            if size > PACKAGE_MAX_BYTES:
                                raise RequestRejected(
                                    f"update package {name} is larger than {PACKAGE_MAX_BYTES} bytes",
                                    target=self.target,
                                    operation="download update package",
                                )
                            out.write(chunk)
            except requests.RequestException as exc:
                raise RequestRejected(
                    f"cannot download update package {name}: {type(exc).__name__}",
                    target=self.target,
                    operation="download update package",
                    hint="check that the executor reaches the repository beside the catalog",
                ) from None
            yield path

    def push_update(
        self,
        package: Path,
        *,
        uri: str,
        target: str | None = None,
        apply_time: str = "OnReset",
        filename: str | None = None,
    ) -> str:
        """Push a package file to the MultipartHttpPushUri `uri`; returns the Dell job id.
        UpdateParameters as Dell's own scripts send them: Targets (the device, on iDRAC10)
        and @Redfish.OperationApplyTime (OnReset: staged for the next host reboot;
        Immediate: applied now)."""
        params: dict[str, Any] = {
            "Targets": [target] if target and self.c.generation == 10 else [],
            "@Redfish.OperationApplyTime": apply_time,
            "Oem": {},
        }

        def go() -> tuple[int, dict[str, Any], dict[str, str]]:
            body = MultipartPackage(params, package, filename or package.name)
            url = self.c.endpoint.url.rstrip("/") + uri if uri.startswith("/") else uri
            try:
                # not through sushy's request loop: it retries transport errors by sending
                # again, which a half-sent stream cannot be
                r = self.c.request_once(
                    "POST",
                    url,
                    data=body,
                    headers={"Content-Type": body.content_type, "OData-Version": "4.0"},
                    verify=self.c.endpoint.verify,
                    timeout=(self.c.timeouts.connect, max(self.c.timeouts.read, 60.0)),
                )
            finally:
                body.close()
            return r.status_code, (r.json() if r.content else {}), dict(r.headers)

        _, resp, headers = self.c.configure("firmware multipart push", go)
        return self.job_id_from(headers, resp)

    def stage_package(
        self,
        image_uri: str,
        *,
        component_id: str | None = None,
        reboot_required: bool = True,
        inventory: list[Any] | None = None,
        push_uri: str | None | object = ASK,
    ) -> tuple[str, str]:
        """Start the update of one package: pushed when the iDRAC advertises a
        MultipartHttpPushUri, else SimpleUpdate with ImageURI. Reboot-needing packages wait
        for the next host reboot (OnReset), the rest apply now. Returns (job id, "multipart"
        or "simple_update"). A caller staging several packages passes the firmware
        `inventory` and the `push_uri` (multipart_push_uri()) it read once, instead of two
        reads of the UpdateService and one of the inventory per package."""
        target = self.inventory_member(component_id, inventory) if component_id else None
        apply_time = "OnReset" if reboot_required else "Immediate"
        push = push_uri if push_uri is None or isinstance(push_uri, str) else self.multipart_push_uri()
        if push:
            name = unquote(urlsplit(image_uri).path.rsplit("/", 1)[-1]) or "package.bin"
            with self.fetched_package(image_uri) as path:
                job = self.push_update(path, uri=push, target=target, apply_time=apply_time, filename=name)
                return job, "multipart"
        return self.simple_update(image_uri, target=target, apply_time=apply_time), "simple_update"

    def update_firmware(
        self,
        packages: list[UpdatePackage],
        *,
        reboot: str = "graceful_restart",
        clear_stale_jobs: bool = True,
    ) -> FirmwareUpdateReport:
        """Stage every package, apply them with one host reboot, verify versions after.

        - components already at the target version are skipped ("nothing to do" is success);
        - reboot-required packages are staged (job Scheduled) while the host keeps running;
          packages applied by the iDRAC itself (iDRAC firmware) run last, and the client
          waits for the iDRAC to come back from the restart that follows;
        - one reboot (`reboot`: graceful_restart or reset) applies all staged jobs;
        - afterwards the inventory is read again: a job that "Completed" without changing
          the version is reported `unchanged` (see `raise_for_failures`).
        """
        with self.c.doing("firmware update"):
            return self._update_firmware(packages=packages, reboot=reboot, clear_stale_jobs=clear_stale_jobs)

    def _update_firmware(
        self,
        packages: list[UpdatePackage],
        *,
        reboot: str = "graceful_restart",
        clear_stale_jobs: bool = True,
    ) -> FirmwareUpdateReport:
        report = FirmwareUpdateReport()
        todo = self._firmware_todo(packages, report)
        if not todo:
            return report
        if clear_stale_jobs:
            if any(not j.finished for j in self.jobs()):
                report.queue = self.clear_job_queue()
        # reboot-required packages first (staged), then those the iDRAC applies at once
        staged = [
            cr for p, cr in sorted(todo, key=lambda pc: not pc[0].reboot_required) if self._stage_one(p, cr)
        ]
        if staged:
            self._apply_staged(staged, reboot)
            report.rebooted = True
        self._verify_versions([cr for _, cr in todo])
        return report

    def _firmware_todo(
        self, packages: list[UpdatePackage], report: FirmwareUpdateReport
    ) -> list[tuple[UpdatePackage, ComponentResult]]:
        """One result per package in ``report``; the packages whose component is not at its
        target version yet, with their results."""
        current = {fc.component_id: fc for fc in self.c.firmware_inventory()}
        todo: list[tuple[UpdatePackage, ComponentResult]] = []
        for p in packages:
            fc = current.get(p.component_id)
            cr = ComponentResult(
                p.component_id,
                p.name or (fc.name if fc else ""),
                fc.version if fc else None,
                p.target_version,
            )
            report.components.append(cr)
            if fc is not None and fc.version == p.target_version:
                cr.status, cr.after, cr.message = "already_current", fc.version, "already at target version"
            else:
                todo.append((p, cr))
        return todo

    def _stage_one(self, p: UpdatePackage, cr: ComponentResult) -> bool:
        """Send one package: True when its job waits (Scheduled) for the host's reboot; a
        package the iDRAC applies at once is waited for here (and the iDRAC's own restart
        after iDRAC firmware). A failed job is recorded on ``cr``."""
        try:
            cr.job_id, _ = self.stage_package(
                p.image_uri, component_id=p.component_id, reboot_required=p.reboot_required
            )
            stop = frozenset({"Scheduled"}) if p.reboot_required else frozenset()
            job = self.wait_job(cr.job_id, stop_at=stop, operation=f"stage {cr.name or p.component_id}")
            cr.job_state = job.state
            if job.state == "Scheduled":
                return True
            cr.message = job.message
            if p.component_id == IDRAC_COMPONENT_ID or "idrac" in cr.name.lower():
                # Quirk: new iDRAC firmware takes effect by restarting the iDRAC right
                # after its job completes; wait for it to go away and come back.
                self.wait_idrac_back(operation=f"apply {cr.name or p.component_id}", expect_down=True)
            else:
                self.wait_lc_ready(operation=f"apply {cr.name or p.component_id}")
        except (JobFailed, JobStuck) as exc:
            cr.status, cr.job_state, cr.message = "failed", getattr(exc, "state", None), exc.detail
        return False

    def _apply_staged(self, staged: list[ComponentResult], reboot: str) -> None:
        """One reboot (or power-on) applies every staged job; each is waited for, then the
        Lifecycle Controller."""
        power = self.c.power_state()
        self.c.power(reboot if power == "On" else "on")
        for cr in staged:
            try:
                job = self.wait_job(cr.job_id or "", operation=f"apply {cr.name or cr.component_id}")
                cr.job_state, cr.message = job.state, job.message
            except (JobFailed, JobStuck) as exc:
                cr.status, cr.job_state, cr.message = "failed", getattr(exc, "state", None), exc.detail
        self.wait_lc_ready(operation="firmware update")

    def _verify_versions(self, results: list[ComponentResult]) -> None:
        """The inventory read again: each result not failed is ``updated`` or ``unchanged``."""
        after = {fc.component_id: fc.version for fc in self.c.firmware_inventory()}
        for cr in results:
            cr.after = after.get(cr.component_id)
            if cr.status == "failed":
                continue
            if cr.after == cr.target:
                cr.status = "updated"
            else:
                # Quirk: the job says Completed but the component kept its old version.
                cr.status = "unchanged"
                cr.message = f"job {cr.job_id} reported {cr.job_state} but version is {cr.after}"

    # ---- iDRAC reset ---------------------------------------------------------------------------------
    def reset_idrac(self, *, wait: bool = True) -> None:
        """Restart the iDRAC (Graceful) and, with wait, return once it answers again and
        the Lifecycle Controller is Ready; bounded by `timeouts.idrac_reset`."""
        with self.c.doing("reset iDRAC"):
            return self._reset_idrac(wait=wait)

    def _reset_idrac(self, *, wait: bool = True) -> None:
        self.c.call("reset iDRAC", self.ext.idrac_card_service.reset_idrac)
        if wait:
            self.wait_idrac_back(operation="reset iDRAC", expect_down=True)

    def reachable(self) -> bool:
        """Whether the iDRAC answers at all (any HTTP answer counts; no answer does not)."""
        try:
            self.c.conn.get("/redfish/v1", timeout=self.c.timeouts.connect)
            return True
        except sx.ConnectionError:
            return False
        except sx.HTTPError:
            return True  # it answers, even if not happily

    def wait_idrac_back(self, *, operation: str, expect_down: bool = False) -> None:
        """After an iDRAC restart: wait to see it go away (when `expect_down`), come back,
        accept our session again (sushy re-authenticates on 401) and report LC Ready."""
        t = self.c.timeouts
        deadline = time.monotonic() + t.idrac_reset
        if expect_down:
            # Quirk: the iDRAC answers the reset request first and goes down seconds later;
            # seeing it answer right after the request proves nothing.
            down_deadline = min(deadline, time.monotonic() + max(t.poll * 20, t.connect))
            while self.reachable():
                if time.monotonic() >= down_deadline:
                    LOG.warning("target %s: iDRAC did not go away after the reset request", self.target)
                    break
                self.c.sleep(t.poll)
        while not self.reachable():
            if time.monotonic() >= deadline:
                raise TargetUnreachable(
                    f"iDRAC not back {t.idrac_reset:g} s after its restart",
                    target=self.target,
                    operation=operation,
                )
            self.c.sleep(t.poll)
        remaining = max(t.poll, deadline - time.monotonic())
        try:
            self.wait_lc_ready(operation=operation, timeout=remaining)
        except TargetError as exc:
            if isinstance(exc, LifecycleControllerNotReady):
                raise OperationTimedOut(
                    f"iDRAC answers but its Lifecycle Controller was not Ready within "
                    f"{t.idrac_reset:g} s of the restart",
                    target=self.target,
                    operation=operation,
                    hint=LifecycleControllerNotReady.hint,
                ) from None
            raise

    # ---- pre-flight -------------------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        """iDRAC readiness for a pre-flight report: LC state and unfinished jobs."""
        st = self.lc_status()
        pending = [j for j in self.jobs() if not j.finished]
        return {
            "lc_ready": st.ready,
            "lc_status": st.lc_status,
            "rt_status": st.rt_status,
            "server_status": st.server_status,
            "pending_jobs": [{"id": j.id, "name": j.name, "state": j.state} for j in pending],
        }
