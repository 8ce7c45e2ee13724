"""``firmware_update``: bring servers to a Dell catalog's firmware, staged while the host
runs and applied in one reboot, verified afterwards.

Steps (priority order):

=============  ====  ==========  ==============================================================
step           prio  resumable   what it does
=============  ====  ==========  ==============================================================
compliance     100   yes         downloads and parses the catalog (``Catalog.xml`` or ``.gz``),
                                 reads each server's inventory and records per component the
                                 current and target version, criticality and reboot need (the
                                 dry run stops here; "nothing to do" is a success)
scp_backup     90    yes         DESIGN.md invariant 4: a server is flashed only with a stored
                                 SCP backup younger than ``scp_backup_max_age_h``; takes one
                                 when there is none
prepare_queue  80    yes         Lifecycle Controller Ready; stale Dell jobs cleared
                                 (JID_CLEARALL, escalated to JID_CLEARALL_FORCE)
stage          70    **no**      one update job per package, the package pushed to the
                                 iDRAC's MultipartHttpPushUri when it advertises one (streamed
                                 from a temporary download), else SimpleUpdate from the
                                 repository: reboot-needing packages wait as Scheduled jobs
                                 (OnReset), iDRAC firmware applies at once (then the iDRAC
                                 restarts and is waited for); a flash must never run twice
reboot         60    **no**      one restart per server applies every staged job
                                 (``reboot: staged`` leaves them for the next reboot)
apply          50    yes         waits for the staged jobs to finish
verify         40    yes         reads the inventory again: "Completed" with the old version is
                                 a failure (``FirmwareVerificationFailed``); records inventory
drop_staged    cleanup           on every exit after ``stage`` started: with ``reboot:
                                 immediate``, firmware jobs still Scheduled (the reboot failed,
                                 the job was cancelled or lost) are deleted from the iDRAC queue,
                                 so they cannot fire at some unrelated reboot later; also the
                                 job of a request whose answer never got on record (see below)
=============  ====  ==========  ==============================================================

Servers are flashed one after the other (``max_parallel`` is an upper bound; one at a time
honours it).

The per-component result (``checkpoint.servers.<id>.components`` in the job's result, and
each server's task result) keeps before / target / after / job / status for every component,
also when some of them failed. Packages come from beside the catalog (a repository mirror
laid out as Dell Repository Manager does), or from the catalog's ``baseLocation`` when the
catalog was read from that host: the executor pushes them (``transfer: multipart``) or the
iDRAC fetches them itself (``transfer: simple_update``).

Save before you act: before each update request the stage step saves, on the component,
the ids of the jobs the iDRAC queue held just before (``queued_before``). An executor killed
after the iDRAC queued the job but before its answer was saved leaves a job nobody
recorded; ``drop_staged`` then deletes the unapplied ``FirmwareUpdate`` jobs that are not in
that set and name that component (or none yet: the package still downloading). A job that
was queued before the request is never touched.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from ..jobparams import FirmwareUpdateParams
from ..steps import BlockersFound, JobHandler, Progress, StepContext, cleanup_step, step
from ..targets.catalog import Catalog, ComplianceReport, version_key
from ..targets.dell import FAILED, FINISHED, DellJob, DellOEM
from ..targets.endpoint import Endpoint
from ..targets.errors import (
    CatalogError,
    FirmwareVerificationFailed,
    JobFailed,
    JobStuck,
    LifecycleControllerNotReady,
    OperationTimedOut,
    TargetError,
    TargetUnreachable,
)
from ..targets.redfish import InventoryResult, RedfishClient
from ..vocabulary import JobType, TaskStatus
from . import register
from ._dell import (
    SERVER,
    DellHandlerError,
    ServersFailed,
    bmc,
    call,
    error_text,
    http_get,
    inventory_row,
    latest_artifact,
    open_servers,
    params_of,
    per_server,
    save_servers,
    upsert_inventory,
    wait,
    wait_lc_ready,
)
from ._replication_gate import server_gate
from .power import power_one
from .scp_backup import take_backup

IDRAC_COMPONENT_ID = "25227"
CATALOG_MAX_BYTES = 256 * 1024 * 1024  # Dell's full catalog is ~50 MB uncompressed


# --- catalog ---------------------------------------------------------------------------------
async def fetch_catalog(url: str) -> Catalog:
    r = await http_get(
        url,
        what="catalog",
        operation="load catalog",
        hint="check the catalog URL and that the executor can reach it",
    )
    if r.status_code != 200:
        raise CatalogError(
            f"cannot download catalog {url}: HTTP {r.status_code}",
            operation="load catalog",
            hint="check the catalog URL",
        )
    if len(r.content) > CATALOG_MAX_BYTES:
        raise CatalogError(
            f"catalog {url} is larger than {CATALOG_MAX_BYTES} bytes", operation="load catalog"
        )
    return await asyncio.to_thread(Catalog.from_bytes, r.content, url)


def package_base(catalog_url: str, catalog: Catalog) -> str:
    """Where the iDRAC fetches packages: the catalog's baseLocation when the catalog came
    from that host, else the folder of the catalog (a local repository mirror)."""
    parts = urlsplit(catalog_url)
    base = catalog.base_location
    base_host = urlsplit(base if "://" in base else f"https://{base}").hostname if base else None
    if base_host and base_host == parts.hostname:
        return base if "://" in base else f"{parts.scheme}://{base}"
    return catalog_url.rsplit("/", 1)[0]


def _words(*texts: str) -> set[str]:
    return {w for t in texts for w in re.split(r"[^a-z0-9]+", (t or "").lower()) if w}


def selected(c: Any, wanted: list[str]) -> bool:
    """Component filter: a name matches the component id, or a word of the component's
    name, the package's name, category or type (``BIOS``, ``iDRAC``, ``RAID``, ``Network``)."""
    if not wanted:
        return True
    pkg = c.package
    words = _words(
        c.name, pkg.name if pkg else "", pkg.category if pkg else "", pkg.component_type if pkg else ""
    )
    return any(w.lower() == c.component_id or w.lower() in words for w in wanted)


def plan_server(report: ComplianceReport, p: FirmwareUpdateParams, base: str) -> list[dict[str, Any]]:
    out = []
    for c in report.components:
        if c.package is None or not selected(c, list(p.firmware.components)):
            continue
        if c.status == "update" or (c.status == "newer_than_catalog" and p.firmware.allow_downgrade):
            out.append(
                {
                    "component_id": c.component_id,
                    "name": c.name,
                    "before": c.current,
                    "target": c.package.version,
                    "criticality": c.criticality,
                    "reboot_required": c.package.reboot_required,
                    "image_uri": c.package.url(base, base),
                    "action": "update" if c.status == "update" else "downgrade",
                    "status": "pending",
                }
            )
    # reboot-needing packages first (staged as Scheduled), iDRAC firmware last: it restarts the iDRAC
    return sorted(out, key=lambda x: (not x["reboot_required"], x["component_id"] == IDRAC_COMPONENT_ID))


# --- waits on Dell jobs ------------------------------------------------------------------------
async def wait_jobs(
    ctx: StepContext,
    c: RedfishClient,
    dell: DellOEM,
    comps: list[dict[str, Any]],
    *,
    until_scheduled: bool,
    operation: str,
) -> None:
    """Wait until every component's job is finished (or Scheduled, when staging); record
    the end state on each component. Failed jobs fail their component only."""
    pending = [x for x in comps if x.get("job_id") and x["status"] in ("pending", "staged")]

    async def probe() -> Progress:
        marker = []
        for x in pending:
            if x.get("_done"):
                continue
            j = await call(dell.job, x["job_id"])
            x["job_state"], x["percent"] = j.state, j.percent
            if j.state in FAILED:
                x.update(
                    status="failed",
                    message=f"job {j.id} ended {j.state}: {j.message}",
                    error_class="JobFailed",
                    _done=True,
                )
            elif j.state in FINISHED or (until_scheduled and j.state == "Scheduled"):
                x["_done"] = True
                x["message"] = j.message
            marker.append((x["job_id"], j.state, j.percent))
        return Progress(all(x.get("_done") for x in pending), tuple(marker))

    try:
        if pending:
            await wait(
                ctx,
                probe,
                what=f"{c.target}: {operation}",
                budget=c.timeouts.job,
                on_stall=lambda why: JobStuck(why, target=c.target, operation=operation),
            )
    except JobStuck as exc:
        for x in pending:
            if not x.get("_done"):
                x.update(
                    status="failed",
                    message=f"job {x['job_id']} stuck in {x.get('job_state')}: {exc.detail}",
                    error_class="JobStuck",
                )
    finally:
        for x in pending:
            x.pop("_done", None)


UNAPPLIED = ("Scheduled", "Downloaded", "Downloading", "New")  # a Dell update job not run yet


def unrecorded_jobs(x: dict[str, Any], queue: Iterable[DellJob], claimed: set[str]) -> list[DellJob]:
    """The update jobs the iDRAC queued for component ``x`` while the answer to the stage
    request went unrecorded: not in the queue saved just before the request
    (``queued_before``), not another component's, still unapplied, of type FirmwareUpdate,
    and named for ``x`` ("Firmware Update: <component>") or for no component yet (the
    package still downloading; the stage step sends one request at a time per server)."""
    before = set(x.get("queued_before") or ())
    out = []
    for j in queue:
        if j.id in before or j.id in claimed or j.job_type != "FirmwareUpdate" or j.state not in UNAPPLIED:
            continue
        _, sep, what = j.name.partition(":")
        if not sep or not what.strip() or what.strip().lower() == str(x.get("name") or "").lower():
            out.append(j)
    return out


def components_to_drop(rec: dict[str, Any], saved: dict[str, Any]) -> list[dict[str, Any]]:
    """A server's components still staged or pending with a job of ours: one recorded, or a
    request sent whose answer never got on record (``queued_before``). The job ids and
    queues an interrupted stage step saved (``saved``, its progress) are taken over first."""
    seen = {x["component_id"]: x for x in saved.get("components", [])}
    for x in rec.get("components", []):
        was = seen.get(x["component_id"], {})
        if not x.get("job_id") and was.get("job_id"):
            x["job_id"] = was["job_id"]
        elif not x.get("job_id") and "queued_before" in was:
            x["queued_before"] = was["queued_before"]
    return [
        x
        for x in rec.get("components", [])
        if (x.get("job_id") or "queued_before" in x) and x["status"] in ("staged", "pending")
    ]


async def drop_jobs(dell: DellOEM, comps: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[str]:
    """Delete from the iDRAC queue the jobs of ``ours`` (of the server's components ``comps``)
    that no reboot applied, the unrecorded ones too; returns the ids deleted."""
    dropped: list[str] = []
    queue = {j.id: j for j in await call(dell.jobs)}
    claimed = {x["job_id"] for x in comps if x.get("job_id")}
    for x in ours:
        if not x.get("job_id"):
            # its request was sent, its answer never got on record
            for orphan in unrecorded_jobs(x, queue.values(), claimed):
                await call(dell.delete_job, orphan.id)
                claimed.add(orphan.id)
                x["job_id"] = orphan.id
                x["status"], x["message"] = (
                    "dropped",
                    f"update job {orphan.id} (queued, its answer never recorded) deleted: no reboot applied it",
                )
                dropped.append(orphan.id)
            x.pop("queued_before", None)
            continue
        job = queue.get(x["job_id"])
        if job is not None and job.state in UNAPPLIED:
            await call(dell.delete_job, x["job_id"])
            x["status"], x["message"] = ("dropped", f"staged job {x['job_id']} deleted: no reboot applied it")
            dropped.append(x["job_id"])
    return dropped


async def wait_idrac_back(ctx: StepContext, c: RedfishClient, dell: DellOEM, operation: str) -> None:
    """After new iDRAC firmware: see the iDRAC go away, come back, and its LC report Ready."""
    t = c.timeouts
    grace = max(t.poll * 20, t.connect)  # quirk: the restart begins seconds after the job completes
    started = time.monotonic()
    phase = {"now": "await_down"}

    async def probe() -> Progress:
        if phase["now"] == "await_down":
            if not await call(dell.reachable):
                phase["now"] = "down"
            elif time.monotonic() - started > grace:
                phase["now"] = "lc"  # it restarted faster than we polled, or not at all
        elif phase["now"] == "down":
            if await call(dell.reachable):
                phase["now"] = "lc"
        if phase["now"] == "lc":
            try:
                st = await call(dell.lc_status)
            except TargetUnreachable:
                return Progress(False, "lc:unreachable")
            return Progress(st.ready, ("lc", st.lc_status, st.rt_status))
        return Progress(False, phase["now"])

    await wait(
        ctx,
        probe,
        what=f"{c.target}: iDRAC back after its firmware update",
        budget=t.idrac_reset,
        on_stall=lambda why: OperationTimedOut(
            f"iDRAC not back after its firmware update: {why}",
            target=c.target,
            operation=operation,
            hint=LifecycleControllerNotReady.hint,
        ),
    )


# --- verification ---------------------------------------------------------------------------------
def compare_versions(comps: list[dict[str, Any]], after: dict[str, str]) -> None:
    """Each component's version read after the update (``after``, by component id) against
    its target: ``updated``, or ``unchanged`` with why; a failed component stays failed."""
    for x in comps:
        x["after"] = after.get(x["component_id"])
        if x["status"] == "failed":
            continue
        if x["after"] is not None and version_key(x["after"]) == version_key(x["target"]):
            x["status"] = "updated"
        else:
            # quirk: the job said Completed but the component kept its old version
            x["status"] = "unchanged"
            x["message"] = (
                f"job {x.get('job_id')} reported {x.get('job_state')} but the version "
                f"is {x['after']}, not {x['target']}"
            )


def components_failure(server: str, comps: list[dict[str, Any]]) -> TargetError | None:
    """The error a server's update ends in: its first failed component's job (JobFailed or
    JobStuck), else the components whose version did not change; None when all went well."""
    failed = [x for x in comps if x["status"] == "failed"]
    unchanged = [x for x in comps if x["status"] == "unchanged"]
    if failed:
        first = failed[0]
        cls = JobStuck if first.get("error_class") == "JobStuck" else JobFailed
        return cls(
            f"{len(failed)} of {len(comps)} component(s) failed; first: {first['name']}: "
            f"{first.get('message', '')}",
            job_id=first.get("job_id"),
            state=first.get("job_state"),
            target=server,
            operation="firmware update",
        )
    if unchanged:
        return FirmwareVerificationFailed(
            "update reported success but versions did not change: "
            + ", ".join(f"{x['name']} still {x['after']} (wanted {x['target']})" for x in unchanged),
            target=server,
            operation="firmware update",
        )
    return None


# --- the handler --------------------------------------------------------------------------------
@register
class FirmwareUpdateHandler(JobHandler):
    job_type = JobType.FIRMWARE_UPDATE

    def validate(self, job: dict[str, Any]) -> None:
        params_of(job, FirmwareUpdateParams)

    # helpers ------------------------------------------------------------------------------
    async def _servers(self, ctx: StepContext) -> tuple[FirmwareUpdateParams, list[dict[str, Any]], dict]:
        p = params_of(ctx.job, FirmwareUpdateParams)
        return p, *await open_servers(ctx, p.server_ids)

    @staticmethod
    def _work(ctx: StepContext, sid: str) -> dict[str, Any] | None:
        """The server's record when it still has components to flash and has not failed."""
        rec = per_server(ctx).get(sid)
        if not rec or rec.get("failed") or rec.get("skipped") or ctx.checkpoint.get("dry_run"):
            return None
        return rec if any(x["status"] in ("pending", "staged") for x in rec["components"]) else None

    @classmethod
    def _with_work(
        cls, ctx: StepContext, servers: list[dict[str, Any]]
    ) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
        """(server, id, record) of each server :meth:`_work` finds work for, in turn."""
        for s in servers:
            sid = str(s["id"])
            rec = cls._work(ctx, sid)
            if rec is not None:
                yield s, sid, rec

    @staticmethod
    async def _fail(ctx: StepContext, server: dict[str, Any], exc: BaseException) -> None:
        rec = per_server(ctx).setdefault(str(server["id"]), {"components": []})
        rec["failed"] = error_text(exc)
        rec["error_class"] = type(exc).__name__
        await ctx.update_task(SERVER, server, TaskStatus.FAILED, error=rec["failed"], result=rec)

    @classmethod
    async def _inventory(
        cls, ctx: StepContext, server: dict[str, Any], ep: Endpoint, errors: dict[str, BaseException]
    ) -> InventoryResult | None:
        """The server's inventory; None when it could not be read: the server failed, its
        error in ``errors`` and on its task."""
        try:
            async with bmc(ep) as c:
                return await call(c.inventory)
        except TargetError as exc:
            errors[server["name"]] = exc
            await cls._fail(ctx, server, exc)
            return None

    @classmethod
    @asynccontextmanager
    async def _per_server(
        cls, ctx: StepContext, server: dict[str, Any], errors: dict[str, BaseException]
    ) -> AsyncIterator[None]:
        """One server's share of a step: a TargetError fails that server only (recorded in
        ``errors`` for _stop_if_all_failed) and the step goes on with the next one."""
        try:
            yield
        except TargetError as exc:
            errors[server["name"]] = exc
            await cls._fail(ctx, server, exc)

    @staticmethod
    def _count(ctx: StepContext, status: str) -> int:
        """The components of all servers whose status is ``status``."""
        return sum(
            1 for r in per_server(ctx).values() for x in r.get("components", []) if x["status"] == status
        )

    @staticmethod
    def _stop_if_all_failed(
        ctx: StepContext, servers: list[dict[str, Any]], errors: dict[str, BaseException]
    ) -> None:
        """Once no server is left to work on, the job fails now with the servers' errors."""
        recs = per_server(ctx)
        if servers and all(recs.get(str(s["id"]), {}).get("failed") for s in servers):
            if len(servers) == 1 and errors:
                raise next(iter(errors.values()))
            raise ServersFailed({s["name"]: recs[str(s["id"])]["failed"] for s in servers}, len(servers))

    # steps ----------------------------------------------------------------------------------
    @step(100, resumable=True)
    async def compliance(self, ctx: StepContext) -> dict[str, Any]:
        p, servers, eps = await self._servers(ctx)
        catalog = await fetch_catalog(p.firmware.stored_catalog_url())
        base = package_base(p.firmware.stored_catalog_url(), catalog)
        recs = per_server(ctx)
        errors: dict[str, BaseException] = {}
        inventory = []
        for s in servers:
            sid = str(s["id"])
            await ctx.update_task(SERVER, s, TaskStatus.RUNNING, progress=5)
            inv = await self._inventory(ctx, s, eps[sid], errors)
            if inv is None:
                continue
            inventory.append(inventory_row(sid, inv))
            info = inv.system
            assert info is not None  # BmcClient.inventory always reads the system (it raises otherwise)
            report = catalog.compliance(model=info.model, system_id=info.system_id, components=inv.firmware)
            comps = plan_server(report, p, base)
            recs[sid] = {
                "model": info.model,
                "system_id": info.system_id,
                "compliance": report.as_rows(),
                "components": comps,
                "nothing_to_do": not comps,
                "reboot_required": any(x["reboot_required"] for x in comps),
            }
            if not comps or p.dry_run:
                await ctx.update_task(
                    SERVER, s, TaskStatus.COMPLETED, result={**recs[sid], "dry_run": p.dry_run}
                )
        await upsert_inventory(ctx, inventory)
        ctx.checkpoint["dry_run"] = p.dry_run
        ctx.checkpoint["catalog"] = {
            "url": p.firmware.catalog_url,
            "version": catalog.version,
            "date": catalog.date_time,
            "age_days": catalog.age_days(),
            "package_base": base,
        }
        self._stop_if_all_failed(ctx, servers, errors)
        if not p.dry_run and p.reboot == "immediate":  # the reboot takes the host down: replication gate
            down = [
                s
                for s in servers
                if recs.get(str(s["id"]), {}).get("reboot_required") and not recs[str(s["id"])].get("failed")
            ]
            found, skip = await server_gate(ctx, down)
            if found:
                raise BlockersFound(found)
            for s in down:
                if str(s["id"]) in skip:
                    recs[str(s["id"])]["skipped"] = "skip_host decision (replication lag)"
                    await ctx.update_task(SERVER, s, TaskStatus.SKIPPED, result=recs[str(s["id"])])
        return {
            "updates": {
                s["name"]: len(recs[str(s["id"])]["components"])
                for s in servers
                if str(s["id"]) in recs and not recs[str(s["id"])].get("failed")
            },
            "dry_run": p.dry_run,
        }

    @step(90, resumable=True)
    async def scp_backup(self, ctx: StepContext) -> dict[str, Any]:
        p, servers, eps = await self._servers(ctx)
        errors: dict[str, BaseException] = {}
        for s, sid, rec in self._with_work(ctx, servers):
            if rec.get("backup"):
                continue
            async with self._per_server(ctx, s, errors):
                prev = await latest_artifact(ctx, sid, "scp_backup", content=False)
                if prev is not None and prev["age_seconds"] <= p.scp_backup_max_age_h * 3600:
                    rec["backup"] = {
                        "artifact_id": str(prev["id"]),
                        "sha256": prev["sha256"],
                        "taken": False,
                        "age_s": round(prev["age_seconds"], 1),
                    }
                    continue
                async with bmc(eps[sid]) as c:
                    b = await take_backup(ctx, c, s, components=["ALL"], export_format="XML")
                rec["backup"] = {
                    "artifact_id": b["artifact_id"],
                    "sha256": b["sha256"],
                    "taken": True,
                    "age_s": 0,
                }
        self._stop_if_all_failed(ctx, servers, errors)
        return {"backups": {sid: r["backup"] for sid, r in per_server(ctx).items() if r.get("backup")}}

    @step(80, resumable=True)
    async def prepare_queue(self, ctx: StepContext) -> dict[str, Any]:
        _, servers, eps = await self._servers(ctx)
        errors: dict[str, BaseException] = {}
        for s, sid, rec in self._with_work(ctx, servers):
            async with self._per_server(ctx, s, errors):
                async with bmc(eps[sid]) as c:
                    dell = await call(c.require_dell, "firmware update")
                    await wait_lc_ready(ctx, c, "firmware update")
                    if any(not j.finished for j in await call(dell.jobs)):
                        q = await call(dell.clear_job_queue)
                        rec["queue"] = {"removed": q.removed, "forced": q.forced, "message": q.message}
        self._stop_if_all_failed(ctx, servers, errors)
        return {"cleared": {sid: r["queue"] for sid, r in per_server(ctx).items() if r.get("queue")}}

    @step(70, resumable=False)
    async def stage(self, ctx: StepContext) -> dict[str, Any]:
        _, servers, eps = await self._servers(ctx)
        errors: dict[str, BaseException] = {}
        for s, sid, rec in self._with_work(ctx, servers):
            if not rec.get("backup"):
                # Invariant 4, checked again right before the first flash.
                raise DellHandlerError(f"server {s['name']}: no fresh SCP backup recorded; refusing to flash")
            await ctx.update_task(SERVER, s, TaskStatus.RUNNING, progress=30)
            async with self._per_server(ctx, s, errors):
                async with bmc(eps[sid]) as c:
                    dell = await call(c.require_dell, "firmware update")
                    for x in rec["components"]:
                        await wait_lc_ready(ctx, c, f"stage {x['name']}")
                        # saved before the request: a kill before its answer is on record
                        # leaves a job the cleanup can tell from every job queued before
                        x["queued_before"] = sorted(j.id for j in await call(dell.jobs))
                        await save_servers(ctx)
                        # pushed when the iDRAC advertises a MultipartHttpPushUri, else
                        # SimpleUpdate; iDRAC10 gets the device in Targets (PLDM devices)
                        x["job_id"], x["transfer"] = await call(
                            dell.stage_package,
                            x["image_uri"],
                            component_id=x["component_id"],
                            reboot_required=x["reboot_required"],
                        )
                        # recorded at once: the cleanup step finds the job even if we die now
                        x.pop("queued_before", None)
                        await save_servers(ctx)
                        await wait_jobs(
                            ctx,
                            c,
                            dell,
                            [x],
                            until_scheduled=x["reboot_required"],
                            operation=f"stage {x['name']}",
                        )
                        if x["status"] == "failed":
                            continue
                        if x.get("job_state") == "Scheduled":
                            x["status"] = "staged"
                        elif x["component_id"] == IDRAC_COMPONENT_ID or "idrac" in x["name"].lower():
                            # quirk: new iDRAC firmware restarts the iDRAC right after its job
                            await wait_idrac_back(ctx, c, dell, f"apply {x['name']}")
                            x["status"] = "applied"
                        else:
                            x["status"] = "applied"
        self._stop_if_all_failed(ctx, servers, errors)
        return {"staged": self._count(ctx, "staged")}

    @step(60, resumable=False)
    async def reboot(self, ctx: StepContext) -> dict[str, Any]:
        p, servers, eps = await self._servers(ctx)
        errors: dict[str, BaseException] = {}
        rebooted = []
        for s in servers:
            sid = str(s["id"])
            rec = per_server(ctx).get(sid)
            if (
                not rec
                or rec.get("failed")
                or not any(x["status"] == "staged" for x in rec.get("components", []))
            ):
                continue
            if p.reboot == "staged":
                rec["reboot"] = "pending: staged jobs apply at the next reboot of the host"
                continue
            async with self._per_server(ctx, s, errors):
                async with bmc(eps[sid]) as c:
                    state = await call(c.power_state)
                    rec["reboot"] = await power_one(ctx, c, "graceful_restart" if state == "On" else "on")
                rebooted.append(s["name"])
        self._stop_if_all_failed(ctx, servers, errors)
        return {"rebooted": rebooted}

    @step(50, resumable=True)
    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        p, servers, eps = await self._servers(ctx)
        if p.reboot == "staged":
            return {"skipped": "reboot is staged: jobs apply at the next reboot"}
        errors: dict[str, BaseException] = {}
        for s in servers:
            sid = str(s["id"])
            rec = per_server(ctx).get(sid)
            if not rec or rec.get("failed"):
                continue
            staged = [x for x in rec.get("components", []) if x["status"] == "staged"]
            if not staged:
                continue
            async with self._per_server(ctx, s, errors):
                async with bmc(eps[sid]) as c:
                    dell = await call(c.require_dell, "firmware update")
                    await wait_jobs(
                        ctx, c, dell, staged, until_scheduled=False, operation="apply staged firmware"
                    )
                    for x in staged:
                        if x["status"] == "staged":
                            x["status"] = "applied"
                    if all(x["status"] == "applied" for x in staged):
                        # settled before verify reads the inventory; a stuck job keeps the LC
                        # busy, and then its JobStuck is the error to report, not the LC
                        await wait_lc_ready(ctx, c, "firmware update")
        self._stop_if_all_failed(ctx, servers, errors)
        return {"applied": self._count(ctx, "applied")}

    @step(40, resumable=True)
    async def verify(self, ctx: StepContext) -> dict[str, Any]:
        p, servers, eps = await self._servers(ctx)
        recs = per_server(ctx)
        if ctx.checkpoint.get("dry_run"):
            return {"dry_run": True, "updates": sum(len(r.get("components", [])) for r in recs.values())}
        failures: dict[str, BaseException] = {}
        inventory = []
        summary = {}
        for s in servers:
            sid = str(s["id"])
            rec = recs.get(sid)
            if rec is None:
                continue
            if rec.get("failed"):
                failures[s["name"]] = DellHandlerError(rec["failed"])
                continue
            if rec.get("skipped"):
                summary[s["name"]] = {"skipped": 1}
                continue
            comps = rec.get("components", [])
            if comps and p.reboot != "staged":
                inv = await self._inventory(ctx, s, eps[sid], failures)
                if inv is None:
                    continue
                inventory.append(inventory_row(sid, inv))
                compare_versions(comps, {f.component_id: f.version for f in inv.firmware})
            counts: dict[str, int] = {}
            for x in comps:
                counts[x["status"]] = counts.get(x["status"], 0) + 1
            summary[s["name"]] = counts or {"nothing_to_do": 1}
            failure = components_failure(s["name"], comps)
            if failure is not None:
                failures[s["name"]] = failure
                await ctx.update_task(SERVER, s, TaskStatus.FAILED, error=error_text(failure), result=rec)
            elif comps:
                await ctx.update_task(SERVER, s, TaskStatus.COMPLETED, result=rec)
        if inventory:
            await upsert_inventory(ctx, inventory)
        if failures:
            if len(servers) == 1:
                raise next(iter(failures.values()))
            raise ServersFailed({k: error_text(v) for k, v in failures.items()}, len(servers))
        return {"servers": summary}

    @cleanup_step(10, only_if_started="stage")
    async def drop_staged(self, ctx: StepContext) -> dict[str, Any]:
        p, servers, eps = await self._servers(ctx)
        if p.reboot == "staged":
            return {"kept": "reboot is staged: the Scheduled jobs are meant for the next reboot"}
        # Job ids of an interrupted stage step live in its saved progress, not in the checkpoint.
        progress = (await ctx.progress_of("stage")).get("servers") or {}
        dropped: dict[str, list[str]] = {}
        for s in servers:
            sid = str(s["id"])
            rec = per_server(ctx).get(sid) or {}
            ours = components_to_drop(rec, progress.get(sid) or {})
            if not ours:
                continue
            async with bmc(eps[sid]) as c:
                dell = await call(c.require_dell, "drop staged firmware")
                ids = await drop_jobs(dell, rec.get("components", []), ours)
            if ids:
                dropped[s["name"]] = ids
        return {"dropped": dropped}
