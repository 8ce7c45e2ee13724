"""``esxi_upgrade``: upgrade ESXi on hosts one at a time.

Per host: maintenance mode through vCenter (DRS evacuates the VMs), ``esxcli software
profile update`` over SSH from the depot, reboot through esxcli, wait until vCenter sees the
host back with a later boot time, verify the new version through pyvmomi, exit maintenance.

Reaching a host over SSH: ``esxi_hosts.details.ssh`` = ``{"address": host, "port": 22,
"known_hosts": path}`` (the host key is never trusted silently; ``"insecure_host_key": true``
must be asked for), and the job's credential set of kind ``esxi`` (``username`` with
``password`` or ``private_key``, an OpenSSH private key in PEM text).

Steps: ``preflight`` (hosts already at the target version are skipped; VMs that cannot
move pause the job with blockers unless ``blocker_default`` says otherwise), ``upgrade``
(per host, resuming from its saved phase: a host found mid-update after a crash is not
updated twice - its version is read and the upgrade continues from the reboot), and the
``cleanup`` step that takes hosts this job put into maintenance back out on every exit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh

from ..binding import EndpointSpecError, Target
from ..jobparams import BlockerDefault, EsxiUpgradeParams
from ..steps import (
    Blocker,
    BlockersFound,
    JobCancelled,
    JobHandler,
    StepContext,
    StepError,
    cleanup_step,
    step,
)
from ..targets.errors import VerificationFailed
from ..targets.esxcli import EsxiShell
from ..targets.vsphere import VSphereClient
from ..targets.vsphere_blockers import BLOCKING, host_blockers
from ..vocabulary import JobType, TaskStatus
from . import register
from ._replication_gate import replication_lag_blockers
from ._vsphere import (
    HOST,
    InventoryMissing,
    TargetProfile,
    VSphereHandlerError,
    one,
    sync_inventory,
    vcenter_row,
    vcenter_session,
)

log = logging.getLogger("rackpilot.executor.esxi_upgrade")
KINDS = {"usb_passthrough", "pci_passthrough", "vgpu", "fault_tolerance", "cdrom_connected", "local_storage"}


async def _job_hosts(
    ctx: StepContext, params: EsxiUpgradeParams
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The job's host rows by id, all known and of one vCenter, and that vCenter's row."""
    rows = await ctx.select(
        "esxi_hosts",
        "id,name,moref,vcenter_id,details,server_id",
        id=[str(h) for h in params.host_ids],
    )
    by_id = {str(r["id"]): r for r in rows}
    missing = [str(h) for h in params.host_ids if str(h) not in by_id]
    if missing:
        raise InventoryMissing(f"host(s) {', '.join(missing)} do not exist; run vcenter_sync")
    vcenters = {r["vcenter_id"] for r in rows}
    if len(vcenters) != 1:
        raise VSphereHandlerError("an esxi_upgrade job takes hosts of one vCenter")
    return by_id, await vcenter_row(ctx, str(next(iter(vcenters))))


def _skipped(
    params: EsxiUpgradeParams, inv: Any, h: dict[str, Any], version: str, skip_decided: bool
) -> str | None:
    """Why host ``h`` is left out of the upgrade, or None when it is upgraded."""
    if version == params.image.target_version:
        return "already at target version"
    if skip_decided:
        return "skip_host decision"
    if params.blocker_default == BlockerDefault.SKIP_HOST and any(
        b.severity == BLOCKING for b in host_blockers(inv, h["moref"])
    ):
        return "blockers (skip_host default)"
    return None


def _vm_blockers(
    params: EsxiUpgradeParams,
    inv: Any,
    h: dict[str, Any],
    power_off: dict[str, list[str]],
    vm_ids: dict[str, str],
) -> list[Blocker]:
    """The blocking VMs on host ``h`` not yet decided on: with the ``ask`` default a blocker
    each, with ``power_off_vm`` added to the host's ``power_off`` list."""
    hid = str(h["id"])
    found = []
    for b in host_blockers(inv, h["moref"]):
        if b.severity != BLOCKING or b.vm in power_off.get(hid, []):
            continue
        if params.blocker_default == BlockerDefault.POWER_OFF_VM:
            power_off.setdefault(hid, []).append(b.vm)
        elif params.blocker_default == BlockerDefault.ASK:
            found.append(
                Blocker(
                    kind=b.kind if b.kind in KINDS else "other",
                    target=b.vm_name,
                    message=f"{b.vm_name} on {b.host_name}: {b.detail}",
                    details={
                        "host_id": hid,
                        "vm_id": vm_ids.get(b.vm),
                        "vm_moref": b.vm,
                        "scan_kind": b.kind,
                        "host_name": b.host_name,
                    },
                )
            )
    return found


@register
class EsxiUpgradeHandler(JobHandler):
    job_type = JobType.ESXI_UPGRADE

    def validate(self, job: dict[str, Any]) -> None:
        try:
            EsxiUpgradeParams.model_validate(job.get("params") or {})
        except ValueError as exc:
            raise StepError(f"invalid esxi_upgrade params: {exc}") from None

    @staticmethod
    def _params(ctx: StepContext) -> EsxiUpgradeParams:
        return EsxiUpgradeParams.model_validate(ctx.params)

    async def _shell(self, ctx: StepContext, host: dict[str, Any]) -> EsxiShell:
        ssh = (host.get("details") or {}).get("ssh") or {}
        if not ssh.get("address"):
            raise InventoryMissing(f"host {host['name']} has no SSH address (esxi_hosts.details.ssh)")
        ids = ctx.job.get("credential_set_ids")
        if ids is None:  # the claim does not carry them; the job row does
            ids = (await one(ctx, "jobs", "credential_set_ids", "the job", id=ctx.job_id))[
                "credential_set_ids"
            ]
        creds = await ctx.select("credential_sets", "id,kind", id=[str(i) for i in ids or []])
        esxi = [c for c in creds if c["kind"] == "esxi"]
        if not esxi:
            raise InventoryMissing("the job names no credential set of kind esxi for the SSH login")
        cred = await ctx.credentials(str(esxi[0]["id"]))
        # the login is released only to an SSH endpoint sealed with it (address, port, host-key trust)
        try:
            target = Target.of(
                str(ssh["address"]),
                {k: ssh[k] for k in ("known_hosts", "insecure_host_key") if ssh.get(k)},
                scheme="ssh",
                port=int(ssh.get("port") or 22),
                name=host["name"],
            )
        except (EndpointSpecError, ValueError) as exc:
            raise VSphereHandlerError(f"host {host['name']}: esxi_hosts.details.ssh: {exc}") from None
        if target.scheme != "ssh":
            raise VSphereHandlerError(
                f"host {host['name']}: esxi_hosts.details.ssh.address must be a host, not a URL"
            )
        secret = cred.release(target)
        keys: tuple[Any, ...] = ()
        if secret.get("private_key"):
            keys = (asyncssh.import_private_key(secret["private_key"]),)
        return EsxiShell(
            target.host,
            secret.get("username") or "root",
            port=target.port,
            client_keys=keys,
            password=secret.get("password") or None,
            known_hosts=ssh.get("known_hosts"),
            insecure_host_key=bool(ssh.get("insecure_host_key")),
            name=host["name"],
        )

    @step(100, resumable=True)
    async def preflight(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        by_id, vc = await _job_hosts(ctx, params)
        async with vcenter_session(ctx, vc) as client:
            inv = await asyncio.to_thread(client.inventory)
        await sync_inventory(ctx, vc, inv)
        vm_ids = {r["moref"]: str(r["id"]) for r in await ctx.select("vms", "id,moref", vcenter_id=vc["id"])}
        decided = {
            str(r["blocker_id"]): r["action"]
            for r in await ctx.select("blocker_resolutions", "blocker_id,action", job_id=ctx.job_id)
        }
        earlier = await ctx.select("job_blockers", "id,kind,host_id,details", job_id=ctx.job_id)
        skip = {str(b["host_id"]) for b in earlier if decided.get(str(b["id"])) == "skip_host"}
        power_off: dict[str, list[str]] = {}
        for row in earlier:
            if decided.get(str(row["id"])) == "power_off_vm" and (row.get("details") or {}).get("vm_moref"):
                power_off.setdefault(str(row["host_id"]), []).append(row["details"]["vm_moref"])
        plan, found = [], []
        for seq, hid in enumerate(str(h) for h in params.host_ids):
            h = by_id[hid]
            live = inv.hosts.get(h["moref"])
            if live is None:
                raise InventoryMissing(f"host {h['name']} is not in vCenter {vc['name']}")
            entry = {
                "id": hid,
                "name": h["name"],
                "moref": h["moref"],
                "details": h.get("details") or {},
                "seq": seq,
            }
            why = _skipped(params, inv, h, live.version, hid in skip)
            if why:
                await ctx.update_task(HOST, entry, TaskStatus.SKIPPED, seq=seq, details={"reason": why})
                continue
            found += _vm_blockers(params, inv, h, power_off, vm_ids)
            plan.append(entry)
            await ctx.update_task(
                HOST, entry, TaskStatus.PENDING, seq=seq, details={"from": live.version, "build": live.build}
            )
        # storage hosts whose replication is behind policy (executor/handlers/_replication_gate.py)
        found += await replication_lag_blockers(
            ctx, [{**e, "server_id": by_id[e["id"]].get("server_id")} for e in plan], earlier, decided
        )
        if found:
            raise BlockersFound(found)
        ctx.checkpoint.update({"vcenter_id": vc["id"], "plan": plan, "power_off": power_off})
        return {"to_upgrade": [h["name"] for h in plan]}

    @step(50, resumable=True)
    async def upgrade(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        progress: dict[str, Any] = dict(ctx.saved_progress or {})
        progress.setdefault("done", [])
        progress.setdefault("phase", {})
        profile = TargetProfile.load()
        vc = await vcenter_row(ctx, ctx.checkpoint["vcenter_id"])
        async with vcenter_session(ctx, vc, profile) as client:
            for h in ctx.checkpoint["plan"]:
                if h["id"] in progress["done"]:
                    continue
                if ctx.cancel_requested:  # safe point: no host of this job is out here
                    raise JobCancelled("cancel requested")
                await self._one(ctx, params, profile, client, h, progress)
                progress["done"].append(h["id"])
                progress["phase"].pop(h["id"], None)
                await ctx.save_progress(progress)
        return {"upgraded": len(progress["done"])}

    async def _one(
        self,
        ctx: StepContext,
        params: EsxiUpgradeParams,
        profile: TargetProfile,
        vc: VSphereClient,
        h: dict[str, Any],
        progress: dict[str, Any],
    ) -> None:
        shell = await self._shell(ctx, h)
        image = params.image
        resumed = progress["phase"].get(h["id"])
        details: dict[str, Any] = {}
        off = list((ctx.checkpoint.get("power_off") or {}).get(h["id"], []))

        async def phase(name: str, pct: int) -> None:
            progress["phase"][h["id"]] = name
            await ctx.save_progress(progress)
            await ctx.update_task(
                HOST, h, TaskStatus.RUNNING, progress=pct, details={"phase": name, **details}
            )

        try:
            if resumed not in ("reboot",):
                running = [m for m in off if await asyncio.to_thread(vc.vm_power_state, m) == "poweredOn"]
                details.update(powered_off_vms=running, maintenance_by_job=True)
                await phase("maintenance", 20)
                for vm in running:
                    await asyncio.to_thread(vc.power_off_vm, vm)
                await asyncio.to_thread(
                    vc.enter_maintenance, h["moref"], profile.seconds(min(params.vmotion_timeout_s, 600))
                )
                await phase("update", 40)
                profile_name = image.profile_name or await shell.profile_name()
                result = await shell.profile_update(str(image.depot_url), profile_name)
                details["update"] = {"message": result.message, "reboot_required": result.reboot_required}
            boot_before = (
                (await asyncio.to_thread(vc.host, h["moref"])).boot_time
                if resumed != "reboot"
                else progress.get("boot_before", {}).get(h["id"])
            )
            progress.setdefault("boot_before", {})[h["id"]] = boot_before
            await phase("reboot", 60)
            if resumed != "reboot":
                await shell.reboot("rackpilot esxi_upgrade")
            back = await asyncio.to_thread(vc.wait_for_host, h["moref"], booted_after=boot_before)
            if back.version != image.target_version:
                raise VerificationFailed(
                    f"{h['name']} runs ESXi {back.version} build {back.build} after the "
                    f"upgrade, not {image.target_version}"
                )
            details["after"] = {"version": back.version, "build": back.build}
            await phase("exit_maintenance", 90)
            await asyncio.to_thread(vc.exit_maintenance, h["moref"])
            for vm in details.get("powered_off_vms") or []:
                await asyncio.to_thread(vc.power_on_vm, vm)
            details["maintenance_by_job"] = False
            await ctx.update_task(
                HOST, h, TaskStatus.COMPLETED, progress=100, details={"phase": "done", **details}
            )
        except Exception as exc:
            await ctx.update_task(
                HOST,
                h,
                TaskStatus.FAILED,
                error=str(exc)[:2000] or type(exc).__name__,
                details={"phase": "failed", **details},
            )
            raise

    @cleanup_step(10, only_if_started="upgrade")
    async def cleanup(self, ctx: StepContext) -> dict[str, Any]:
        tasks = await ctx.select(
            "job_tasks", "target_id,details,status,error", job_id=ctx.job_id, target_kind="host"
        )
        ours = [t for t in tasks if (t.get("details") or {}).get("maintenance_by_job")]
        if not ours or not ctx.checkpoint.get("vcenter_id"):
            return {"hosts_brought_back": []}
        vc = await vcenter_row(ctx, ctx.checkpoint["vcenter_id"])
        back = []
        async with vcenter_session(ctx, vc) as client:
            for t in ours:
                rows = await ctx.select("esxi_hosts", "id,name,moref", id=t["target_id"])
                if not rows:
                    continue
                await asyncio.to_thread(client.wait_for_host, rows[0]["moref"])
                await asyncio.to_thread(client.exit_maintenance, rows[0]["moref"])
                for vm in (t.get("details") or {}).get("powered_off_vms") or []:
                    await asyncio.to_thread(client.power_on_vm, vm)
                await ctx.update_task(
                    HOST,
                    rows[0],
                    TaskStatus(t["status"]) if t["status"] != "running" else TaskStatus.FAILED,
                    details={"maintenance_by_job": False},
                    error=t.get("error") if t["status"] != "running" else "interrupted",
                )
                back.append(rows[0]["name"])
        return {"hosts_brought_back": back}
