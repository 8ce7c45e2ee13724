"""Replication: pairs with their lag, last success and bytes, the lag over time, "sync now",
and registering a pair with its dataset names checked before anything is sent.

Lag is computed here as the executor's gate computes it (now minus the creation time of the
newest snapshot on the replica; ``executor.handlers._replication_gate.current_lag``), so the
console and the gate never disagree on whether a pair is behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from console.api import Api, Row
from console.errors import ValidationFailed
from executor.handlers._replication_gate import current_lag
from executor.replication_plan import GridError, parse_grid
from executor.targets.zfs import DatasetNameError, dataset_name

PAIR_COLUMNS = (
    "id,site_id,name,source_host,source_dataset,target_host,target_dataset,schedule,enabled,"
    "retention_snapshots,retention_grid,max_lag_seconds,bandwidth_limit_mbit,allow_full_send,"
    "last_success_at,last_attempt_at,last_status,last_error,last_bytes,last_duration_ms,"
    "last_synced_snapshot_at,last_snapshot,lag_seconds,running_job_id"
)


def check_dataset(name: Any, field: str) -> str:
    """The dataset name, or ValidationFailed naming the field and ZFS's rule it breaks."""
    try:
        return dataset_name(name)
    except DatasetNameError as exc:
        raise ValidationFailed(f"{field}: {exc}", [f"{field}: {exc}"]) from None


class ReplicationModel:
    def __init__(self, api: Api) -> None:
        self.api = api

    def pairs(self, site_id: str | None = None, *, now: float | None = None) -> list[Row]:
        def q(c):
            b = c.table("replication_pairs").select(PAIR_COLUMNS)
            if site_id:
                b = b.eq("site_id", site_id)
            return b.order("name")

        rows = self.api._rest("replication pairs", q)
        for r in rows:
            lag = current_lag(r, now)
            r["current_lag_seconds"] = None if lag is None else int(lag)
            r["lagging"] = bool(r.get("enabled")) and (
                lag is None or lag > float(r.get("max_lag_seconds") or 0)
            )
        return rows

    def lag_series(self, pair_id: str, *, limit: int = 500) -> dict[str, list[Any]]:
        """Lag after each sync over time (x: finished_at, y: lag in seconds), and bytes."""
        rows = self.api._rest(
            "replication runs",
            lambda c: (
                c.table("replication_runs")
                .select("finished_at,lag_seconds,bytes,status,kind")
                .eq("pair_id", pair_id)
                .neq("kind", "dry_run")
                .order("finished_at", desc=True)
                .limit(limit)
            ),
        )
        rows = sorted(rows, key=lambda r: str(r["finished_at"]))
        ok = [r for r in rows if r["status"] == "succeeded" and r.get("lag_seconds") is not None]
        return {
            "x": [r["finished_at"] for r in ok],
            "lag_s": [r["lag_seconds"] for r in ok],
            "bytes": [r["bytes"] for r in ok],
            "failures": [r["finished_at"] for r in rows if r["status"] == "failed"],
        }

    def sync_now(self, pair_id: str, *, dry_run: bool = False) -> Row:
        """A replication_sync job for the pair, through create-job (a pair already syncing is
        skipped by that job, never synced twice at once)."""
        return self.api.create_job(
            "replication_sync", {"replication_pair_ids": [pair_id], "dry_run": dry_run}
        )

    def register_pair(
        self,
        *,
        site_id: str,
        name: str,
        source_host: str,
        source_dataset: str,
        target_host: str,
        target_dataset: str,
        schedule: str = "@hourly",
        retention_snapshots: int = 24,
        retention_grid: str = "",
        max_lag_seconds: int = 7200,
        bandwidth_limit_mbit: int | None = None,
        allow_full_send: bool = False,
    ) -> Row:
        row = {
            "site_id": site_id,
            "name": name,
            "source_host": source_host,
            "target_host": target_host,
            "source_dataset": check_dataset(source_dataset, "source_dataset"),
            "target_dataset": check_dataset(target_dataset, "target_dataset"),
            "schedule": schedule,
            "retention_snapshots": retention_snapshots,
            "retention_grid": retention_grid,
            "max_lag_seconds": max_lag_seconds,
            "bandwidth_limit_mbit": bandwidth_limit_mbit,
            "allow_full_send": allow_full_send,
        }
        # a NUL cannot be stored in a text column: REST would refuse the row with Postgres's
        # 22P05 "unsupported Unicode escape sequence", which names no field
        for field in ("name", "source_host", "target_host", "schedule", "retention_grid"):
            value = row[field]
            if isinstance(value, str) and "\x00" in value:
                raise ValidationFailed(f"{field}: holds a NUL character", [f"{field}: holds a NUL character"])
        try:
            parse_grid(retention_grid)
        except GridError as exc:
            raise ValidationFailed(f"retention_grid: {exc}", [str(exc)]) from None
        if (source_host, row["source_dataset"]) == (target_host, row["target_dataset"]):
            raise ValidationFailed("a pair replicates a dataset somewhere else, not onto itself")
        return self.api._rest(
            "register replication pair", lambda c: c.table("replication_pairs").insert(row)
        )[0]


def pair_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """The pairs as the Replication screen's and the Reports' tables show them."""
    return [
        {
            "pair": r["name"],
            "source": f"{r['source_host']}:{r['source_dataset']}",
            "replica": f"{r['target_host']}:{r['target_dataset']}",
            "lag": fmt_lag(r["current_lag_seconds"]) + (" (behind policy)" if r["lagging"] else ""),
            "allowed lag": fmt_lag(r.get("max_lag_seconds")),
            "last success": when(r.get("last_success_at")),
            "last bytes": r.get("last_bytes") if r.get("last_bytes") is not None else "-",
            "last status": r.get("last_status") or "-",
            "schedule": r.get("schedule"),
        }
        for r in rows
    ]


def fmt_lag(seconds: int | None) -> str:
    if seconds is None:
        return "never synced"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def when(value: Any) -> str:
    if not value:
        return "-"
    return str(value)[:19].replace("T", " ") if not isinstance(value, datetime) else value.isoformat()[:19]
