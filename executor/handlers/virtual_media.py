"""``virtual_media_mount``: attach an ISO or image by URL to servers' virtual media
(the iDRAC fetches it), optionally boot from it once; or eject it (``eject: true``).

Steps:

==========  ========  =====================================================================
step        priority  resumable
==========  ========  =====================================================================
preflight   100       yes: reads the servers and opens their credentials; with ``boot_once``
                      the replication gate (a storage server whose pair lags pauses the job)
media       80        yes: mounting an image already mounted, or ejecting an image not
                      mounted, changes nothing and says so
boot_once   60        **no**: sets the one-time boot override and restarts the host into the
                      image (only with ``boot_once``); a second run would restart it again
==========  ========  =====================================================================

Eject is careful: it ejects only ``image_url``. A slot holding another image is left alone
and the job fails saying what is mounted, so one operator never pulls another's media.
Every configuration request waits for the Lifecycle Controller first.
"""

from __future__ import annotations

from typing import Any

from ..jobparams import VirtualMediaMountParams
from ..steps import JobHandler, StepContext, step
from ..targets.errors import RequestRejected, TargetError
from ..targets.redfish import RedfishClient
from ..vocabulary import JobType, TaskStatus
from . import register
from ._dell import (
    SERVER,
    DellHandlerError,
    bmc,
    call,
    each_server,
    fail_server,
    open_servers,
    params_of,
    per_server,
    raise_failures,
    wait_lc_ready,
)
from ._replication_gate import gate_servers, skipped_servers
from .power import power_one

SLOTS = {"cd": None, "usb": "RemovableDisk"}  # None: the first slot taking CD/DVD media


async def _media(ctx: StepContext, c: RedfishClient, p: VirtualMediaMountParams) -> dict[str, Any]:
    await wait_lc_ready(ctx, c, "eject virtual media" if p.eject else "insert virtual media")
    slot = SLOTS[p.media_type]
    if p.eject:
        vm = await call(c.media_slot, slot)
        if vm.inserted and vm.image != p.image_url:
            raise RequestRejected(
                f"slot {vm.identity} holds {vm.image}, not {p.image_url}; left mounted",
                target=c.target,
                operation="eject virtual media",
                hint="eject it by its own URL if it really should go",
            )
        r = await call(c.eject_media, slot)
    else:
        r = await call(c.insert_media, p.image_url, slot)
    return {"slot": r.slot, "changed": r.changed, "image": r.image, "message": r.message}


@register
class VirtualMediaHandler(JobHandler):
    job_type = JobType.VIRTUAL_MEDIA_MOUNT

    def validate(self, job: dict[str, Any]) -> None:
        p = params_of(job, VirtualMediaMountParams)
        if not p.write_protected:
            # The client mounts read-only only; accepting the flag and ignoring it would lie.
            raise DellHandlerError(
                "write_protected=false is not supported: images are always mounted read-only"
            )
        if p.eject and p.boot_once:
            raise DellHandlerError("boot_once cannot be combined with eject")

    @step(100, resumable=True)
    async def preflight(self, ctx: StepContext) -> dict[str, Any]:
        p = params_of(ctx.job, VirtualMediaMountParams)
        servers, _ = await open_servers(ctx, p.server_ids)
        if p.boot_once:  # the restart takes the host down: replication gate (_replication_gate.py)
            await gate_servers(ctx, servers)
        return {"servers": [s["name"] for s in servers], "eject": p.eject}

    @step(80, resumable=True)
    async def media(self, ctx: StepContext) -> dict[str, Any]:
        p = params_of(ctx.job, VirtualMediaMountParams)
        servers, eps = await open_servers(ctx, p.server_ids)

        async def mount(s: dict[str, Any], c: RedfishClient) -> dict[str, Any]:
            return {"media": await _media(ctx, c, p)}

        failures = await each_server(
            ctx, servers, eps, mount, skip=skipped_servers(ctx), complete=not p.boot_once
        )
        raise_failures(failures, len(servers))
        done = per_server(ctx)
        return {"changed": sum(1 for v in done.values() if v.get("media", {}).get("changed"))}

    @step(60, resumable=False)
    async def boot_once(self, ctx: StepContext) -> dict[str, Any]:
        p = params_of(ctx.job, VirtualMediaMountParams)
        if not p.boot_once:
            return {"skipped": "boot_once not asked for"}
        servers, eps = await open_servers(ctx, p.server_ids)
        done = per_server(ctx)
        failures: dict[str, BaseException] = {}
        skipped = skipped_servers(ctx)
        for s in servers:
            sid = str(s["id"])
            if sid in skipped:
                continue
            try:
                async with bmc(eps[sid]) as c:
                    await wait_lc_ready(ctx, c, "set one-time boot")
                    # the way this BMC boots its virtual CD (iDRAC9: Dell OEM attributes; iDRAC10: Cd)
                    how = await call(c.set_virtual_media_boot)
                    state = await call(c.power_state)
                    power = await power_one(ctx, c, "reset" if state != "Off" else "on")
            except TargetError as exc:
                await fail_server(ctx, s, exc, failures, done, keep=True)
                continue
            done[sid] = {**done.get(sid, {}), "boot": {"override": how, **power}}
            await ctx.update_task(SERVER, s, TaskStatus.COMPLETED, result=done[sid])
        raise_failures(failures, len(servers))
        return {"rebooted": len(servers) - len(failures) - len(skipped & {str(s["id"]) for s in servers})}
