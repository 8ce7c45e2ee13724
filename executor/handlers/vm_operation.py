"""``vm_operation``: shut VMs down (their guest OS, through VMware Tools) or power them off,
or disconnect their CD-ROM and floppy media, through their vCenter, then refresh the VMs'
inventory rows: the fixes the update wizard's pre-flight offers for a VM that would keep its
host from entering maintenance mode.

Steps:

=================  ========  ==============================================================
step               priority  resumable
=================  ========  ==============================================================
apply              100       yes: every action is idempotent (a VM already off, or with no
                             media connected, is a success that says so); a cancel is
                             honoured between two VMs
refresh_inventory  90        yes: a read of the vCenter and the idempotent store of
                             ``vcenter_sync`` (the blocker columns the pre-flight reads)
=================  ========  ==============================================================

A VM that fails does not stop the others; the inventory is refreshed for every vCenter the
job touched, and the job then fails naming the VMs that failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..jobparams import VmOperationParams
from ..steps import HandlerError, JobHandler, StepContext, StepError, step
from ..targets.errors import TargetError
from ..targets.vsphere import VSphereClient
from ..vocabulary import JobType, TaskStatus, TaskTargetKind
from . import register
from ._vsphere import TargetProfile, sync_inventory, vcenter_row, vcenter_session

VM = TaskTargetKind.VM
VM_COLUMNS = "id,name,moref,vcenter_id,power_state,cdrom_connected"


class VmOperationFailed(HandlerError):
    """One or more VMs could not be changed (each VM's task names its error)."""


def _params(job_params: Any) -> VmOperationParams:
    try:
        return VmOperationParams.model_validate(job_params or {})
    except ValueError as exc:
        raise StepError(f"invalid vm_operation params: {exc}") from None


async def load_vms(ctx: StepContext, ids: list[str]) -> list[dict[str, Any]]:
    """The ``vms`` rows of the job, in the params' order; a VM gone since the job was created
    is an error naming it."""
    rows = {str(r["id"]): r for r in await ctx.select("vms", VM_COLUMNS, id=ids)}
    gone = [i for i in ids if i not in rows]
    if gone:
        raise VmOperationFailed(f"VM(s) {', '.join(gone)} no longer exist; run vcenter_sync or fix the job")
    return [rows[i] for i in ids]


def _apply(client: VSphereClient, action: str, moref: str, timeout: float) -> dict[str, Any]:
    """One VM's action through ``client`` (blocking; run in a thread)."""
    if action == "shutdown_guest":
        if not client.shutdown_guest_vm(moref, timeout=timeout):
            return {"changed": False, "message": "already powered off"}
        return {"changed": True, "message": "guest shut down; powered off"}
    if action == "power_off":
        if client.vm_power_state(moref) == "poweredOff":
            return {"changed": False, "message": "already powered off"}
        client.power_off_vm(moref, timeout=timeout)
        return {"changed": True, "message": "powered off"}
    labels = client.disconnect_vm_media(moref, timeout=timeout)
    if not labels:
        return {"changed": False, "message": "no CD-ROM or floppy was connected"}
    return {"changed": True, "message": f"disconnected {', '.join(labels)}", "devices": labels}


def per_vm(ctx: StepContext) -> dict[str, dict[str, Any]]:
    """The checkpoint's record per VM id, completed by what an interrupted run saved."""
    done = ctx.checkpoint.setdefault("vms", {})
    for vid, rec in ((ctx.saved_progress or {}).get("vms") or {}).items():
        done.setdefault(vid, rec)
    return done


@register
class VmOperationHandler(JobHandler):
    job_type = JobType.VM_OPERATION

    def validate(self, job: dict[str, Any]) -> None:
        _params(job.get("params"))

    @step(100, resumable=True, abortable=True)
    async def apply(self, ctx: StepContext) -> dict[str, Any]:
        p = _params(ctx.params)
        vms = await load_vms(ctx, [str(v) for v in p.vm_ids])
        done = per_vm(ctx)
        by_vcenter: dict[str, list[dict[str, Any]]] = {}
        for vm in vms:
            by_vcenter.setdefault(str(vm["vcenter_id"]), []).append(vm)
        ctx.checkpoint["vcenters"] = sorted(by_vcenter)
        profile = TargetProfile.load()
        # the budget per VM on the targets' clock (a time-scaled lab's loopback round trips
        # still take real time: never under 10 s there)
        budget = float(p.timeout_s) if profile.time_scale == 1 else max(profile.seconds(p.timeout_s), 10.0)
        for vc_id, group in by_vcenter.items():
            todo = [vm for vm in group if not done.get(str(vm["id"]), {}).get("ok")]
            if not todo:
                continue  # finished before an interruption
            vc = await vcenter_row(ctx, vc_id)
            async with vcenter_session(ctx, vc, profile) as client:
                for vm in todo:
                    ctx.check_cancel()  # safe point: between two VMs (the rows refresh at the next sync)
                    vid = str(vm["id"])
                    await ctx.update_task(VM, vm, TaskStatus.RUNNING)
                    try:
                        r = await asyncio.to_thread(_apply, client, p.action, vm["moref"], budget)
                    except TargetError as exc:
                        done[vid] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                        await ctx.update_task(VM, vm, TaskStatus.FAILED, error=done[vid]["error"])
                    else:
                        done[vid] = {"ok": True, "action": p.action, **r}
                        await ctx.update_task(VM, vm, TaskStatus.COMPLETED, result=done[vid])
                    await ctx.save_progress({"vms": done})
        return {
            "action": p.action,
            "changed": sum(1 for v in done.values() if v.get("ok") and v.get("changed")),
            "unchanged": sum(1 for v in done.values() if v.get("ok") and not v.get("changed")),
            "failed": sum(1 for v in done.values() if not v.get("ok")),
        }

    @step(90, resumable=True)
    async def refresh_inventory(self, ctx: StepContext) -> dict[str, Any]:
        p = _params(ctx.params)
        ids = [str(v) for v in p.vm_ids]
        vcenters = ctx.checkpoint.get("vcenters") or sorted(
            {str(v["vcenter_id"]) for v in await load_vms(ctx, ids)}
        )
        for vc_id in vcenters:
            vc = await vcenter_row(ctx, vc_id)
            async with vcenter_session(ctx, vc) as client:
                inv = await asyncio.to_thread(client.inventory)
            await sync_inventory(ctx, vc, inv, include_vms=True, prune=False)
        rows = await ctx.select("vms", VM_COLUMNS, id=ids)
        done = per_vm(ctx)
        failed = {
            str(r["name"]): done[str(r["id"])]["error"]
            for r in rows
            if not done.get(str(r["id"]), {}).get("ok", True)
        }
        if failed:
            raise VmOperationFailed(
                f"{len(failed)} of {len(ids)} VM(s) failed: "
                + "; ".join(f"{name}: {err}" for name, err in sorted(failed.items()))
            )
        return {
            "vms": [
                {"name": r["name"], "power_state": r["power_state"], "cdrom_connected": r["cdrom_connected"]}
                for r in sorted(rows, key=lambda r: ids.index(str(r["id"])))
            ]
        }
