"""``firmware_compliance``: per-component firmware compliance of servers, from one of two
sources, feeding ``servers`` and ``server_firmware`` on the way:

* **OpenManage Enterprise** (``ome_instance_id``): run an OME inventory job, read its devices
  and their firmware (matched to rackpilot servers by service tag), re-run the baseline's
  compliance task and read its report;
* **a Dell catalog** (``catalog_url`` + ``server_ids``): read each iDRAC's inventory and
  compare it with the catalog (the same computation as the firmware update's dry run).

Params (not an operator type of ``create-job`` yet, so the model lives here):
``ome_instance_id`` | (``catalog_url``, ``server_ids``), ``baseline`` (OME baseline name;
default: OME's first baseline), ``refresh_inventory`` (default true).

Steps (OME): ``ome_inventory`` (100) and ``ome_compliance`` (80); (catalog):
``catalog_compliance`` (100). All resumable: they only read targets (an OME inventory or
compliance job changes nothing on the servers) and write idempotent upserts.
The report is stored as a ``firmware_report`` artifact (JSON) and summarised in the result.

OME TLS: HTTPS verified against the system trust store; plain HTTP only to a loopback
address (the lab). ``ome_instances`` has no per-instance TLS settings yet.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..binding import Credential
from ..jobparams import HttpUrlStr
from ..steps import JobHandler, Progress, StepContext, StepSpec, step
from ..targets.endpoint import Endpoint
from ..targets.errors import JobFailed, JobStuck, TargetError
from ..targets.ome import JOB_DONE, JOB_FAILED, OMEClient
from ..vocabulary import JobType, TaskStatus
from . import register
from ._dell import (
    SERVER,
    DellHandlerError,
    bmc,
    call,
    endpoints,
    error_text,
    inventory_row,
    load_servers,
    loopback,
    per_server,
    present,
    raise_failures,
    site_servers,
    target_timeouts,
    upsert_inventory,
    wait,
)
from .firmware import fetch_catalog

_OME_POWER = {"On": "on", "Off": "off"}


class FirmwareComplianceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ome_instance_id: UUID | None = None
    baseline: str | None = Field(default=None, min_length=1, max_length=255)
    refresh_inventory: bool = True
    catalog_url: HttpUrlStr | None = None
    catalog_id: UUID | None = None  # a registered catalog; create-job has filled in catalog_url from it
    server_ids: list[UUID] = Field(default=[], max_length=4096)
    site_id: UUID | None = None  # create-job's site-wide form: every server of the job's site


def parse(job: dict[str, Any]) -> FirmwareComplianceParams:
    try:
        p = FirmwareComplianceParams.model_validate(job.get("params") or {})
    except ValidationError as exc:
        raise DellHandlerError(
            "invalid params for firmware_compliance: "
            + "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None
    if (p.ome_instance_id is None) == (p.catalog_url is None):
        raise DellHandlerError("firmware_compliance needs exactly one source: ome_instance_id or catalog_url")
    if p.catalog_url and not p.server_ids and not p.site_id:
        raise DellHandlerError("catalog compliance needs server_ids or site_id")
    return p


def ome_endpoint(row: dict[str, Any], cred: Credential) -> Endpoint:
    """The OME endpoint with its credential, when the credential's sealed endpoints name its
    address and TLS trust (``ome_instances.details.tls``, as servers.details.tls)."""
    address = str(row["address"])
    tls = (row.get("details") or {}).get("tls") or {}
    if not isinstance(tls, dict):
        raise DellHandlerError(f"OME {row['name']}: details.tls must be an object")
    plain = address.startswith("http://")
    if plain and not loopback(address):
        raise DellHandlerError(f"OME {row['name']}: plain HTTP is allowed only to a loopback address")
    try:
        ep = Endpoint(
            address,
            cred.username,
            "",
            allow_plain_http=plain,
            name=row["name"],
            ca_bundle=None if plain else tls.get("ca_bundle"),
            insecure=False if plain else bool(tls.get("insecure")),
        )
    except TargetError as exc:
        raise DellHandlerError(f"OME {row['name']}: {exc}") from None
    return present(cred, ep)


async def wait_ome_job(ctx: StepContext, ome: OMEClient, job_id: int, operation: str) -> None:
    async def probe() -> Progress:
        job = await ome.get(f"/api/JobService/Jobs({job_id})", operation)
        st = job.get("LastRunStatus") or {}
        if st.get("Id") in JOB_FAILED:
            raise JobFailed(
                f"OME job {job_id} ({job.get('JobName', '')}) ended {st.get('Name')}",
                job_id=str(job_id),
                state=st.get("Name"),
                target=ome.target,
                operation=operation,
            )
        return Progress(st.get("Id") in JOB_DONE, st.get("Name"))

    await wait(
        ctx,
        probe,
        what=f"OME {ome.target}: {operation} job {job_id}",
        budget=ome.timeouts.job,
        on_stall=lambda why: JobStuck(
            f"OME job {job_id}: {why}", job_id=str(job_id), target=ome.target, operation=operation
        ),
    )


@register
class FirmwareComplianceHandler(JobHandler):
    job_type = JobType.FIRMWARE_COMPLIANCE

    def validate(self, job: dict[str, Any]) -> None:
        parse(job)

    def plan(self, job: dict[str, Any]) -> list[StepSpec]:
        ome = (job.get("params") or {}).get("ome_instance_id") is not None
        names = {"ome_inventory", "ome_compliance"} if ome else {"catalog_compliance"}
        return [s for s in self.declared() if s.name in names]

    async def _ome(self, ctx: StepContext) -> tuple[FirmwareComplianceParams, dict[str, Any], OMEClient]:
        p = parse(ctx.job)
        rows = await ctx.select(
            "ome_instances", "id,site_id,name,address,credential_set_id", id=str(p.ome_instance_id)
        )
        if not rows or str(rows[0]["site_id"]) != str(ctx.job.get("site_id")):
            raise DellHandlerError(f"OME instance {p.ome_instance_id} not found in the job's site")
        row = rows[0]
        if not row.get("credential_set_id"):
            raise DellHandlerError(f"OME {row['name']} has no credential set")
        cred = await ctx.credentials(str(row["credential_set_id"]))
        return p, row, OMEClient(ome_endpoint(row, cred), target_timeouts())

    # --- OME ---------------------------------------------------------------------------------
    @step(100, resumable=True)
    async def ome_inventory(self, ctx: StepContext) -> dict[str, Any]:
        p, row, client = await self._ome(ctx)
        by_tag = {
            str(s.get("service_tag") or "").upper(): s
            for s in await site_servers(ctx)
            if s.get("service_tag")
        }
        async with client as ome:
            devices = await ome.devices()
            if p.refresh_inventory and devices:
                job_id = await ome.refresh_inventory([d.id for d in devices], wait=False)
                await wait_ome_job(ctx, ome, job_id, "refresh inventory")
            rows, matched, unmatched = [], {}, []
            for d in devices:
                s = by_tag.get(d.service_tag.upper())
                if s is None:
                    unmatched.append(d.service_tag)
                    continue
                fw = await ome.device_firmware(d.id)
                rows.append(
                    {
                        "server_id": str(s["id"]),
                        "seen": True,
                        "facts": {"model": d.model, "power_state": _OME_POWER.get(d.power_state, "unknown")},
                        "details": {"ome_device_id": d.id, "system_id": d.system_id},
                        "firmware": [
                            {"component": name or cid, "fqdd": cid, "version": v} for cid, name, v in fw if v
                        ],
                    }
                )
                matched[str(s["id"])] = d.id
        await upsert_inventory(ctx, rows)
        ctx.checkpoint["ome_devices"] = matched
        return {"devices": len(devices), "matched": len(matched), "unmatched_service_tags": unmatched[:100]}

    @step(80, resumable=True)
    async def ome_compliance(self, ctx: StepContext) -> dict[str, Any]:
        p, row, client = await self._ome(ctx)
        matched = {int(v): k for k, v in (ctx.checkpoint.get("ome_devices") or {}).items()}
        async with client as ome:
            baseline = (
                await ome.baseline(p.baseline) if p.baseline else next(iter(await ome.baselines()), None)
            )
            if baseline is None:
                raise DellHandlerError(f"OME {row['name']} has no firmware baseline")
            task_id = await ome.refresh_compliance(int(baseline["Id"]), wait=False)
            await wait_ome_job(ctx, ome, task_id, "refresh compliance")
            reports = await ome.compliance(int(baseline["Id"]))
        devices: list[dict[str, Any]] = []
        details_rows = []
        for r in reports:
            comps = [
                {
                    "component_id": c.component_id,
                    "name": c.name,
                    "current": c.current,
                    "target": c.target,
                    "action": c.action,
                    "status": c.status,
                    "criticality": c.criticality,
                    "reboot_required": c.reboot_required,
                }
                for c in r.components
            ]
            devices.append(
                {
                    "device_id": r.device_id,
                    "service_tag": r.service_tag,
                    "model": r.model,
                    "status": r.status,
                    "reboot_required": r.reboot_required,
                    "components": comps,
                }
            )
            sid = matched.get(r.device_id)
            if sid:
                details_rows.append(
                    {
                        "server_id": sid,
                        "seen": True,
                        "details": {
                            "firmware_compliance": {
                                "source": f"ome:{row['name']}:{baseline.get('Name')}",
                                "status": r.status,
                                "updates": len(r.updates),
                                "reboot_required": r.reboot_required,
                            }
                        },
                    }
                )
        await upsert_inventory(ctx, details_rows)
        report = {
            "source": "ome",
            "ome_instance": row["name"],
            "baseline": baseline.get("Name"),
            "devices": devices,
        }
        art = await ctx.put_artifact(
            "firmware_report",
            json.dumps(report, sort_keys=True).encode(),
            content_type="application/json",
            server_id=None,
        )
        await ctx.rpc("executor_touch_ome_instance", {"p_ome_instance_id": str(row["id"])})
        ctx.checkpoint["report_artifact_id"] = art["artifact_id"]
        status: dict[str, int] = {}
        for d in devices:
            status[d["status"]] = status.get(d["status"], 0) + 1
        return {
            "baseline": baseline.get("Name"),
            "devices": len(devices),
            "by_status": status,
            "artifact_id": art["artifact_id"],
        }

    # --- catalog -------------------------------------------------------------------------------
    @step(100, resumable=True)
    async def catalog_compliance(self, ctx: StepContext) -> dict[str, Any]:
        p = parse(ctx.job)
        assert p.catalog_url is not None
        servers = (
            await load_servers(ctx, [str(s) for s in p.server_ids])
            if p.server_ids
            else await site_servers(ctx)
        )
        eps = await endpoints(ctx, servers)
        catalog = await fetch_catalog(p.catalog_url)
        recs = per_server(ctx)
        failures: dict[str, BaseException] = {}
        inventory = []
        for s in servers:
            sid = str(s["id"])
            try:
                async with bmc(eps[sid]) as c:
                    inv = await call(c.inventory)
            except TargetError as exc:
                failures[s["name"]] = exc
                recs[sid] = {"ok": False, "error": error_text(exc)}
                await ctx.update_task(
                    SERVER, s, TaskStatus.FAILED, error=recs[sid]["error"], result=recs[sid]
                )
                continue
            info = inv.system
            assert info is not None  # BmcClient.inventory always reads the system (it raises otherwise)
            rep = catalog.compliance(model=info.model, system_id=info.system_id, components=inv.firmware)
            row = inventory_row(sid, inv)
            row["details"]["firmware_compliance"] = {
                "source": f"catalog:{p.catalog_url}",
                "status": "compliant" if rep.compliant else "updates_available",
                "updates": len(rep.updates),
                "reboot_required": rep.reboot_required,
            }
            inventory.append(row)
            recs[sid] = {
                "ok": True,
                "model": info.model,
                "system_id": info.system_id,
                "compliant": rep.compliant,
                "reboot_required": rep.reboot_required,
                "components": rep.as_rows(),
            }
            await ctx.update_task(SERVER, s, TaskStatus.COMPLETED, result=recs[sid])
        await upsert_inventory(ctx, inventory)
        report = {
            "source": "catalog",
            "catalog_url": p.catalog_url,
            "catalog_version": catalog.version,
            "servers": recs,
        }
        art = await ctx.put_artifact(
            "firmware_report",
            json.dumps(report, sort_keys=True).encode(),
            content_type="application/json",
            server_id=None,
        )
        ctx.checkpoint["report_artifact_id"] = art["artifact_id"]
        raise_failures(failures, len(servers))
        return {
            "compliant": sum(1 for r in recs.values() if r.get("compliant")),
            "updates_available": sum(1 for r in recs.values() if r.get("ok") and not r.get("compliant")),
            "artifact_id": art["artifact_id"],
        }
