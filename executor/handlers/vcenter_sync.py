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
from ..vocabulary import JobType
from . import register
from ._vsphere import sync_inventory, vcenter_row, vcenter_session

log = logging.getLogger("rackpilot.executor.vcenter_sync")


def runqueue_wait() -> float | None:
    """Seconds the calling thread has spent runnable but not running (Linux schedstat), or
    None where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@register
class VcenterSyncHandler(JobHandler):
    job_type = JobType.VCENTER_SYNC

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
        vc = await vcenter_row(ctx, str(params.vcenter_id))
        async with vcenter_session(ctx, vc) as client:

            def read() -> tuple[Any, float, float | None]:
                # this thread's CPU time (the read's own cost, whatever else the machine runs)
                # and, where Linux tells, its time runnable but waiting for a CPU
                c0, q0 = time.thread_time(), runqueue_wait()
                inv = client.inventory()
                c1, q1 = time.thread_time(), runqueue_wait()
                return inv, c1 - c0, (q1 - q0 if q0 is not None and q1 is not None else None)

            t0 = time.monotonic()
            self._inventory, read_cpu_s, read_wait_s = await asyncio.to_thread(read)
            read_s = time.monotonic() - t0
        inv = self._inventory
        out = {
            "clusters": len(inv.clusters),
            "hosts": len(inv.hosts),
            "vms": len(inv.vms),
            "read_s": round(read_s, 3),
            "read_cpu_s": round(read_cpu_s, 3),
        }
        if read_wait_s is not None:
            out["read_cpu_wait_s"] = round(read_wait_s, 3)
        return out

    @step(90, resumable=True)
    async def store_inventory(self, ctx: StepContext) -> dict[str, Any]:
        params = VcenterSyncParams.model_validate(ctx.params)
        vc = await vcenter_row(ctx, str(params.vcenter_id))
        if self._inventory is None:
            # resumed in another executor run: the read is cheap and must be fresh anyway
            await self.read_inventory(ctx)
        t0 = time.monotonic()
        result = await sync_inventory(
            ctx, vc, self._inventory, include_vms=params.include_vms, prune=params.prune_missing
        )
        result["store_s"] = round(time.monotonic() - t0, 3)
        return result
