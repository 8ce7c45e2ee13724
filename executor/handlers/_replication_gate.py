"""Maintenance gate: a host is not taken down while a replication pair on its storage server
is lagging beyond its policy.

A pair names the servers its datasets live on (``replication_pairs.source_server_id`` /
``target_server_id``). When a job would take such a server's host out of service and the
pair's lag (now minus the creation time of the newest snapshot on the replica; a pair never
synced counts as lagging) exceeds ``max_lag_seconds``, the job pauses with a
``replication_lag`` blocker naming the pair and its lag. The operator then:

* waits, or runs "sync now" for the pair, and decides ``recheck``: the job resumes, the scan
  runs again and a pair back within its lag no longer blocks;
* skips the host (``skip_host``; the blocker must name an ESXi host);
* overrides with a reason (``acknowledge`` with a note, refused without one): that pair no
  longer blocks that host in this job, and the decision stays in the audit trail.

Every job type that takes a storage host down runs the gate before its first change:
``rolling_cluster_update`` (``blocker_scan``), ``esxi_upgrade`` (``preflight``),
``firmware_update`` with ``reboot: immediate`` (``compliance``, servers that need a reboot),
``power_operation`` other than ``on`` (``preflight``) and ``virtual_media_mount`` with
``boot_once`` (``preflight``: it restarts the server). Jobs on servers go through
:func:`server_gate`, which also reads the job's earlier decisions: ``skip_host`` there leaves
the server out of the job. See docs/replication.md#gating.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ..steps import Blocker, BlockersFound, StepContext

PAIR_COLUMNS = (
    "id,name,source_host,source_dataset,target_host,target_dataset,source_server_id,target_server_id,"
    "max_lag_seconds,last_synced_snapshot_at,last_success_at,enabled"
)


def current_lag(pair: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds the replica is behind, or None when it never received a snapshot."""
    at = pair.get("last_synced_snapshot_at")
    if not at:
        return None
    t = at if isinstance(at, datetime) else datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return max(0.0, (now if now is not None else time.time()) - t.timestamp())


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "never synced"
    if seconds >= 7200:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


async def replication_lag_blockers(
    ctx: StepContext, hosts: list[dict[str, Any]], blockers: list[dict[str, Any]], decisions: dict[str, str]
) -> list[Blocker]:
    """One blocker per (host, lagging pair on its server) not overridden in this job."""
    servers = {str(h["server_id"]): h for h in hosts if h.get("server_id")}
    if not servers:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for col in ("source_server_id", "target_server_id"):
        for r in await ctx.select("replication_pairs", PAIR_COLUMNS, **{col: list(servers)}):
            rows[str(r["id"])] = r
    # an override names the host, or the server when the job works on servers
    overridden = {
        (str((b.get("details") or {}).get("pair_id")), str(b.get(key) or (b.get("details") or {}).get(key)))
        for b in blockers
        if b.get("kind") == "replication_lag" and decisions.get(str(b["id"])) == "acknowledge"
        for key in ("host_id", "server_id")
    }
    now = time.time()
    found = []
    for pair in rows.values():
        if not pair.get("enabled", True):
            continue
        lag = current_lag(pair, now)
        limit = float(pair.get("max_lag_seconds") or 0)
        if lag is not None and lag <= limit:
            continue
        for side in ("source", "target"):
            host = servers.get(str(pair.get(f"{side}_server_id")))
            if (
                host is None
                or {(str(pair["id"]), str(host.get("id"))), (str(pair["id"]), str(host["server_id"]))}
                & overridden
            ):
                continue
            found.append(
                Blocker(
                    kind="replication_lag",
                    target=pair["name"],
                    message=(
                        f"{host['name']} holds the {side} of replication pair {pair['name']} "
                        f"({pair['source_dataset']} -> {pair['target_dataset']}), whose lag is {_fmt(lag)}, "
                        f"beyond the allowed {_fmt(limit)}: wait, sync the pair now, skip the host, or "
                        f"override with a reason"
                    ),
                    details={
                        "host_id": host.get("id"),
                        "host_name": host["name"],
                        "server_id": host.get("server_id"),
                        "pair_id": str(pair["id"]),
                        "pair_name": pair["name"],
                        "side": side,
                        "lag_seconds": None if lag is None else int(lag),
                        "max_lag_seconds": int(limit),
                    },
                )
            )
    return found


# job types on servers (power_operation, firmware_update): they touch the server itself
TAKES_HOST_DOWN_POWER = {"graceful_shutdown", "force_off", "graceful_restart", "force_restart", "power_cycle"}


async def server_gate(ctx: StepContext, servers: list[dict[str, Any]]) -> tuple[list[Blocker], set[str]]:
    """The gate for a job that takes ``servers`` down: (blockers, ids of servers the
    operator chose to skip). A server's ESXi host, when it has one, is named on the blocker
    (so ``skip_host`` is possible); otherwise the blocker names the server only."""
    if not servers:
        return [], set()
    blockers = await ctx.select("job_blockers", "id,kind,host_id,server_id,details", job_id=ctx.job_id)
    decisions = {
        str(r["blocker_id"]): r["action"]
        for r in await ctx.select("blocker_resolutions", "blocker_id,action", job_id=ctx.job_id)
    }
    skipped = {
        str(b.get("server_id") or (b.get("details") or {}).get("server_id"))
        for b in blockers
        if b.get("kind") == "replication_lag" and decisions.get(str(b["id"])) == "skip_host"
    }
    ids = [str(s["id"]) for s in servers if str(s["id"]) not in skipped]
    hosts = {
        str(h["server_id"]): str(h["id"])
        for h in (await ctx.select("esxi_hosts", "id,server_id", server_id=ids) if ids else [])
    }
    subjects = [
        {"id": hosts.get(sid), "name": s["name"], "server_id": sid}
        for s in servers
        if (sid := str(s["id"])) in ids
    ]
    return await replication_lag_blockers(ctx, subjects, blockers, decisions), skipped


async def gate_servers(ctx: StepContext, servers: list[dict[str, Any]]) -> None:
    """:func:`server_gate` in the step before a job's first change: a lagging pair pauses the
    job (:class:`BlockersFound`); the servers the operator chose to skip are kept in the
    checkpoint for the later steps (:func:`skipped_servers`)."""
    found, skip = await server_gate(ctx, servers)
    if found:
        raise BlockersFound(found)
    ctx.checkpoint["replication_skip"] = sorted(skip)


def skipped_servers(ctx: StepContext) -> set[str]:
    """The ids of the servers :func:`gate_servers` left out of the job (``skip_host``)."""
    return set(ctx.checkpoint.get("replication_skip") or [])
