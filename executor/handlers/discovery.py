"""``discovery_scan``: find the site's iDRACs in IP ranges and host lists, and register them.

Params: :class:`executor.jobparams.DiscoveryScanParams` (ranges, hosts, credential sets in
priority order, port, scheme, max_parallel, dry_run). Each address is probed as
:mod:`executor.targets.discovery` describes: unauthenticated first, then the credential
sets whose sealed endpoints cover the address, one session at a time, always deleted.

=====  ========  =========================================================================
step   priority  resumable
=====  ========  =========================================================================
scan   100       yes: probes only read BMCs; results are recorded per (job, address) and
                 registration matches existing servers by address and service tag, so a
                 re-run records the same rows and registers nothing twice
=====  ========  =========================================================================

Addresses are probed with at most ``max_parallel`` in flight (threads: each probe waits on
sockets), results are written in batches of 200 through ``executor_record_discovery``,
which decides registrations under a per-site lock (see its migration for the rules: an
existing server's address, TLS trust and credential are never changed by a scan). The job
result counts addresses by outcome and skip reason, and lists the first 200 skipped ones.
"""

from __future__ import annotations

import time
from typing import Any

from ..binding import EndpointSpecError, Target
from ..jobparams import DiscoveryScanParams
from ..steps import JobHandler, StepContext, step
from ..targets.discovery import MAX_ADDRESSES, Probe, RangeError, expand, probe
from ..targets.errors import TargetError
from ..vocabulary import JobType, TaskStatus, TaskTargetKind
from . import register
from ._dell import DellHandlerError, params_of, target_timeouts
from ._fanout import in_threads

BATCH = 200  # results per executor_record_discovery call (count)


class DiscoveryStalled(TargetError):
    """No address finished probing for the stall budget."""


async def finish_site_task(
    ctx: StepContext, result: dict[str, Any], status: TaskStatus = TaskStatus.COMPLETED
) -> None:
    """Close the job's site-wide task, if its scope has one (create-job's site target)."""
    for t in (ctx.job.get("scope") or {}).get("targets") or []:
        if isinstance(t, dict) and t.get("kind") == "site":
            await ctx.update_task(
                TaskTargetKind.SITE,
                {"id": t["id"], "name": str(t.get("name") or "")},
                status,
                result=result,
                progress=100,
            )


async def known_servers(ctx: StepContext) -> dict[tuple[str, str, int], str]:
    """The site's registered servers by (scheme, host, port) of their iDRAC address."""
    rows = await ctx.select("servers", "id,idrac_address,details", site_id=str(ctx.job["site_id"]))
    out = {}
    for r in rows:
        tls = (r.get("details") or {}).get("tls") or {}
        try:
            t = Target.of(str(r["idrac_address"]), tls if isinstance(tls, dict) else {})
        except EndpointSpecError:
            try:
                t = Target.of(str(r["idrac_address"]))
            except EndpointSpecError:
                continue
        out[(t.scheme, t.host, t.port)] = str(r["id"])
    return out


@register
class DiscoveryScanHandler(JobHandler):
    job_type = JobType.DISCOVERY_SCAN

    def validate(self, job: dict[str, Any]) -> None:
        p = params_of(job, DiscoveryScanParams)
        try:
            expand(p.ranges, p.hosts, MAX_ADDRESSES)
        except RangeError as exc:
            raise DellHandlerError(f"discovery_scan: {exc}") from None

    @step(100, resumable=True)
    async def scan(self, ctx: StepContext) -> dict[str, Any]:
        p: DiscoveryScanParams = params_of(ctx.job, DiscoveryScanParams)
        try:
            addresses = expand(p.ranges, p.hosts, MAX_ADDRESSES)
        except RangeError as exc:
            raise DellHandlerError(f"discovery_scan: {exc}") from None
        creds = [await ctx.credentials(str(c)) for c in p.credential_set_ids]
        known = await known_servers(ctx)
        timeouts = target_timeouts()
        t0 = time.monotonic()

        def one(host: str) -> Probe:
            try:
                return probe(host, p.scheme, p.port, creds, timeouts)
            except Exception as exc:  # noqa: BLE001 - one address must not end the scan
                from ..targets.discovery import inventory_address

                return Probe(
                    host,
                    inventory_address(p.scheme, host, p.port),
                    reason="error",
                    message=f"probe failed: {type(exc).__name__}",
                )

        probes = await in_threads(
            ctx,
            one,
            addresses,
            max_workers=min(p.max_parallel, len(addresses)),
            name="discovery",
            what=f"discovery of {len(addresses)} address(es)",
            budget=timeouts.job,
            on_stall=lambda why: DiscoveryStalled(why, operation="discovery scan"),
        )
        probe_s = time.monotonic() - t0

        rows = []
        for pr in probes:
            row = pr.row()
            host = pr.address
            sid = known.get((p.scheme, host, p.port))
            if sid:
                row["server_id"] = sid
            rows.append(row)
        counts: dict[str, int] = {}
        for i in range(0, len(rows), BATCH):
            got = await ctx.rpc(
                "executor_record_discovery", {"p_dry_run": p.dry_run, "p_results": rows[i : i + BATCH]}
            )
            for k, v in (got or {}).items():
                counts[k] = counts.get(k, 0) + int(v)
        skipped = [
            {"address": pr.address, "reason": pr.reason, "message": pr.message} for pr in probes if pr.reason
        ]
        result = {
            "addresses": len(addresses),
            "dry_run": p.dry_run,
            "counts": counts,
            "probe_seconds": round(probe_s, 3),
            "seconds": round(time.monotonic() - t0, 3),
            "sessions_opened": sum(pr.sessions_opened for pr in probes),
            "sessions_closed": sum(pr.sessions_closed for pr in probes),
            "skipped": skipped[:200],
        }
        await finish_site_task(ctx, {k: v for k, v in result.items() if k != "skipped"})
        return result
