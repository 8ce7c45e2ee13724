"""``vcenter_sync``: read one vCenter's inventory into the control plane.

One PropertyCollector pass over a container view reads every cluster (HA, DRS, admission
control, affinity rules), host (version, build, connection, maintenance, service tag, BMC
address) and VM with its blocker-relevant devices (``VSphereClient.inventory``); one
epoch-checked RPC (``vsphere_sync_inventory``) stores it set-wise: upserts that rewrite only
changed rows, VMs sent only when their content hash differs from the stored one (an unchanged
re-sync is one request), vanished objects marked (or pruned), hosts linked to Dell servers by service
tag or BMC address, and each cluster's safety status (safe / degraded / unsafe) recorded
when it changes, with the change queued for notification.

Steps: ``read_inventory`` (resumable: a read) then ``store_inventory`` (resumable: the
store is idempotent - a second run of the same inventory changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..jobparams import VcenterSyncParams
from ..steps import JobHandler, StepContext, StepError, step
from . import register
from ._vsphere import TargetProfile, one, sync_inventory, vcenter_client

log = logging.getLogger("rackpilot.executor.vcenter_sync")


@register
class VcenterSyncHandler(JobHandler):
    job_type = "vcenter_sync"

    def __init__(self) -> None:
        self._inventory: Any = None

    def validate(self, job: dict[str, Any]) -> None:
        try:
            VcenterSyncParams.model_validate(job.get("params") or {})
        except ValueError as exc:
            raise StepError(f"invalid vcenter_sync params: {exc}") from None

    @step(100, resumable=True)
    async def read_inventory(self, ctx: StepContext) -> dict[str, Any]:
        params = VcenterSyncParams.model_validate(ctx.params)
        vc = await one(
            ctx,
            "vcenters",
            "id,name,address,credential_set_id,site_id,details",
            f"vCenter {params.vcenter_id}",
            id=str(params.vcenter_id),
        )
        client = await vcenter_client(ctx, vc, TargetProfile.load())

        def read() -> tuple[Any, float]:
            # this thread's CPU time: the read's own cost, whatever else the machine runs
            c0 = time.thread_time()
            inv = client.inventory()
            return inv, time.thread_time() - c0

        try:
            t0 = time.monotonic()
            self._inventory, read_cpu_s = await asyncio.to_thread(read)
            read_s = time.monotonic() - t0
        finally:
            await asyncio.to_thread(client.close)
        inv = self._inventory
        return {
            "clusters": len(inv.clusters),
            "hosts": len(inv.hosts),
            "vms": len(inv.vms),
            "read_s": round(read_s, 3),
            "read_cpu_s": round(read_cpu_s, 3),
        }

    @step(90, resumable=True)
    async def store_inventory(self, ctx: StepContext) -> dict[str, Any]:
        params = VcenterSyncParams.model_validate(ctx.params)
        vc = await one(
            ctx,
            "vcenters",
            "id,name,address,credential_set_id,site_id,details",
            f"vCenter {params.vcenter_id}",
            id=str(params.vcenter_id),
        )
        if self._inventory is None:
            # resumed in another executor run: the read is cheap and must be fresh anyway
            await self.read_inventory(ctx)
        t0 = time.monotonic()
        result = await sync_inventory(
            ctx, vc, self._inventory, include_vms=params.include_vms, prune=params.prune_missing
        )
        result["store_s"] = round(time.monotonic() - t0, 3)
        return result
