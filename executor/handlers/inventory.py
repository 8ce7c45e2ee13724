"""``inventory_refresh``: read many BMCs (system facts and firmware inventory) with bounded
concurrency and write the result into ``servers`` and ``server_firmware``.

Params (:class:`executor.jobparams.InventoryRefreshParams`, the schema create-job checks):

* ``server_ids`` - servers to read; empty = every server of the job's site (``site_id``);
* ``max_parallel`` - BMCs read at once (default 32; ``bench/fleet_inventory.py`` measured
  48 threads as the sweet spot on two cores).

Steps:

=======  ========  ======================================================================
step     priority  resumable
=======  ========  ======================================================================
collect  100       yes: reads only; one Redfish session per BMC, always deleted. A BMC that
                   fails is recorded on its server (``details.inventory_error``), not fatal;
                   what a good read found odd (a sub-resource not served, a missing or
                   unknown component, an unsupported generation) goes to
                   ``details.inventory_warnings`` (a list of sentences, [] when none)
store    90        yes: one batched, fenced upsert per 200 servers
=======  ========  ======================================================================

The job fails only when every BMC failed; otherwise the result counts the failures by
error class and lists each failed server with its error.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from ..jobparams import InventoryRefreshParams
from ..steps import JobHandler, StepContext, step
from ..targets.endpoint import Endpoint
from ..targets.errors import TargetError
from ..targets.redfish import InventoryResult, RedfishClient
from ..vocabulary import JobType
from . import register
from ._dell import (
    DellHandlerError,
    ServersFailed,
    endpoints,
    inventory_row,
    load_servers,
    site_servers,
    target_timeouts,
    upsert_inventory,
)
from ._fanout import in_threads
from .discovery import finish_site_task


def parse(job: dict[str, Any]) -> InventoryRefreshParams:
    try:
        return InventoryRefreshParams.model_validate(job.get("params") or {})
    except ValidationError as exc:
        raise DellHandlerError(
            "invalid params for inventory_refresh: "
            + "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None


class InventoryStalled(TargetError):
    """The fleet read stopped making progress (no BMC finished for the stall budget)."""


async def read_fleet(ctx: StepContext, eps: list[Endpoint], max_parallel: int) -> list[InventoryResult]:
    """Inventory of every endpoint, at most ``max_parallel`` at once (threads: sushy is
    synchronous and waits on sockets), followed through ``ctx.wait_for`` with the number
    of BMCs done as the progress marker."""
    timeouts = target_timeouts()

    def one(ep: Endpoint) -> InventoryResult:
        t0 = time.monotonic()
        try:
            with RedfishClient(ep, timeouts) as c:
                r = c.inventory()
        except TargetError as exc:
            r = InventoryResult(ep.display, False, error=str(exc), error_kind=type(exc).__name__)
        r.seconds = time.monotonic() - t0
        return r

    return await in_threads(
        ctx,
        one,
        eps,
        max_workers=max_parallel,
        name="inventory",
        what=f"inventory of {len(eps)} BMC(s)",
        budget=timeouts.job,
        on_stall=lambda why: InventoryStalled(why, operation="inventory refresh"),
    )


@register
class InventoryRefreshHandler(JobHandler):
    job_type = JobType.INVENTORY_REFRESH

    def validate(self, job: dict[str, Any]) -> None:
        parse(job)

    @step(100, resumable=True)
    async def collect(self, ctx: StepContext) -> dict[str, Any]:
        p = parse(ctx.job)
        servers = (
            await load_servers(ctx, [str(s) for s in p.server_ids])
            if p.server_ids
            else await site_servers(ctx)
        )
        if not servers:
            raise DellHandlerError("no servers to read: the site has none")
        usable = [s for s in servers if s.get("credential_set_id")]
        eps = await endpoints(ctx, usable)
        t0 = time.monotonic()
        results = await read_fleet(ctx, [eps[str(s["id"])] for s in usable], p.max_parallel)
        rows = [inventory_row(str(s["id"]), r) for s, r in zip(usable, results, strict=True)]
        rows += [
            {
                "server_id": str(s["id"]),
                "seen": False,
                "details": {
                    "inventory_error": "no credential set assigned",
                    "inventory_error_kind": "NoCredential",
                    "inventory_checked_at": time.time(),
                },
            }
            for s in servers
            if not s.get("credential_set_id")
        ]
        failed = {r["server_id"]: r["details"] for r in rows if not r["seen"]}
        ctx.checkpoint["rows"] = rows
        kinds: dict[str, int] = {}
        for d in failed.values():
            kinds[d["inventory_error_kind"] or "Error"] = (
                kinds.get(d["inventory_error_kind"] or "Error", 0) + 1
            )
        names = {str(s["id"]): s["name"] for s in servers}
        warned = {
            names[r["server_id"]]: r["details"]["inventory_warnings"]
            for r in rows
            if r["seen"] and r["details"].get("inventory_warnings")
        }
        return {
            "warnings": dict(list(warned.items())[:100]),
            "servers": len(servers),
            "ok": len(servers) - len(failed),
            "failed": len(failed),
            "failed_by_kind": kinds,
            "seconds": round(time.monotonic() - t0, 3),
            "failures": {names[sid]: d["inventory_error"] for sid, d in list(failed.items())[:100]},
        }

    @step(90, resumable=True)
    async def store(self, ctx: StepContext) -> dict[str, Any]:
        rows = ctx.checkpoint.pop("rows", [])
        written = await upsert_inventory(ctx, rows)
        failed = [r for r in rows if not r["seen"]]
        ctx.checkpoint["summary"] = {"written": written, "failed": len(failed)}
        if rows and len(failed) == len(rows):
            raise ServersFailed({r["server_id"]: r["details"]["inventory_error"] for r in failed}, len(rows))
        await finish_site_task(ctx, {"written": written, "failed": len(failed)})
        return {"written": written}
