"""Reports over the reporting views, and the fleet/inventory browser, exportable."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from console.api import REPORT_VIEWS, Api, Row
from console.models.common import Observable, short_id, short_ts
from console.models.names import Names
from executor.host_maintenance import maintenance_span

REPORT_TITLES = {
    "v_job_stats_by_type": "Success rate and duration by job type",
    "v_job_stats_by_week": "Jobs per week and type",
    "v_job_stats_by_user": "Jobs per user",
    "v_host_history": "What was done to each host/server",
    "v_open_blockers": "Open blockers",
    "v_executor_health": "Executor health",
    "v_firmware_compliance": "Firmware compliance against the catalogs",
    "v_firmware_compliance_history": "Firmware compliance over time",
    "replication_lag": "Replication lag per pair",
}
# the replication pairs' lag is not a reporting view: it is read as the Replication screen
# reads it (console.models.replication) and drawn by that screen's plot
REPLICATION_LAG = "replication_lag"
REPORTS: tuple[str, ...] = (*REPORT_VIEWS, REPLICATION_LAG)


def to_csv(rows: list[Row]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(
            {k: (json.dumps(v, default=str) if isinstance(v, dict | list) else v) for k, v in r.items()}
        )
    return buf.getvalue()


def to_json(rows: list[Row]) -> str:
    return json.dumps(rows, indent=2, default=str)


def export_rows(rows: list[Row], path: str | Path, fmt: str | None = None) -> Path:
    p = Path(path)
    fmt = fmt or p.suffix.lstrip(".") or "csv"
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}: csv or json")
    p.write_text(to_csv(rows) if fmt == "csv" else to_json(rows))
    return p


def _display_cell(k: str, v: Any, nm: Names | None) -> tuple[str, Any]:
    """A report cell as the table shows it: a user or site by name, another id as a short
    id, a timestamp shortened, anything else as it is."""
    if k in ("user_id", "created_by"):
        return ("user" if k == "user_id" else "created by"), nm.user(v) if nm else short_id(v)
    if k == "site_id":
        return "site", nm.name("site", v) if nm else short_id(v)
    if k.endswith("_id") or k == "id":
        return (k.removesuffix("_id") if k != "id" else "id"), short_id(v)
    if isinstance(v, str) and len(v) >= 19 and v[4:5] == "-" and v[10:11] == "T":
        return k, short_ts(v)
    return k, v


# id columns the tables show as names (the raw rows, with ids, still go to the CSV export)
HIDE_WHEN_NAMED = {
    "target_id": "target_name",
    "server_id": "server_name",
    "executor_id": "name",
    "host_id": "host_name",
    "vm_id": "vm_name",
    "site_id": "site_name",
    "blocker_id": "description",
}


class ReportModel(Observable):
    def __init__(self, api: Api, names: Names | None = None) -> None:
        super().__init__()
        self.api = api
        self.names = names
        self.view = REPORT_VIEWS[0]
        self.rows: list[Row] = []
        # replication_lag: the lag series per pair id (ReplicationModel.lag_series)
        self.lag: dict[str, dict[str, list[Any]]] = {}
        # v_host_history: each host's recorded stays in maintenance (maintenance_stays)
        self.stays: list[Row] = []

    def display_rows(self) -> list[Row]:
        """The rows as the table shows them: users by name, ids only where nothing names
        the thing (then as a short id)."""
        if self.view == REPLICATION_LAG:
            from console.models.replication import pair_rows

            return pair_rows(self.rows)
        nm = self.names
        if nm is not None:
            nm.load_users([r.get(k) for r in self.rows for k in ("user_id", "created_by") if r.get(k)])
        return [
            dict(
                _display_cell(k, v, nm)
                for k, v in r.items()
                if not (k in HIDE_WHEN_NAMED and HIDE_WHEN_NAMED[k] in r)
            )
            for r in self.rows
        ]

    def chart(self) -> dict[str, Any] | None:
        """What the view's chart draws: {kind: bar|line|stacked, labels|xs, series, title, unit}."""
        if not self.rows:
            return None
        draw = _CHARTS.get(self.view)
        return draw(self) if draw else None

    # the chart of each view that has one (_CHARTS), drawn from the loaded rows
    def _stats_by_type_chart(self) -> dict[str, Any]:
        rs = sorted(self.rows, key=lambda r: str(r.get("type")))
        return {
            "kind": "bar",
            "labels": [r["type"] for r in rs],
            "title": "success rate per job type",
            "unit": "%",
            "y_max": 100.0,
            "series": {
                "success %": [
                    100 * float(r["success_rate"]) if r.get("success_rate") is not None else None for r in rs
                ]
            },
            "second": {
                "kind": "bar",
                "labels": [r["type"] for r in rs],
                "title": "duration per job type",
                "unit": "s",
                "series": {
                    "average": [r.get("avg_duration_s") for r in rs],
                    "p95": [r.get("p95_duration_s") for r in rs],
                },
            },
        }

    def _stats_by_week_chart(self) -> dict[str, Any]:
        rows = self.rows
        weeks = sorted({str(r["week"])[:10] for r in rows})
        types = sorted({str(r["type"]) for r in rows})
        by = {(str(r["week"])[:10], str(r["type"])): r for r in rows}
        return {
            "kind": "line",
            "xs": weeks,
            "title": "success rate per week",
            "unit": "%",
            "series": {
                t: [
                    100 * float(by[(wk, t)]["success_rate"])
                    if (wk, t) in by and by[(wk, t)].get("success_rate") is not None
                    else None
                    for wk in weeks
                ]
                for t in types
            },
        }

    def _stats_by_user_chart(self) -> dict[str, Any]:
        rows = self.rows
        labels = [self.names.user(r["user_id"]) if self.names else short_id(r["user_id"]) for r in rows]
        return {
            "kind": "stacked",
            "labels": labels,
            "title": "jobs per user",
            "series": {
                "completed": [r.get("completed") for r in rows],
                "failed": [r.get("failed") for r in rows],
            },
        }

    def _executor_health_chart(self) -> dict[str, Any]:
        rows = self.rows
        names = [r.get("name") for r in rows]
        # seconds and a count do not share an axis: one chart each
        return {
            "kind": "bar",
            "labels": names,
            "title": "executor heartbeat age",
            "unit": "s",
            "series": {"heartbeat age": [r.get("heartbeat_age_s") for r in rows]},
            "second": {
                "kind": "bar",
                "labels": names,
                "title": "running jobs per executor",
                "series": {"running jobs": [r.get("running_jobs") for r in rows]},
            },
        }

    def _replication_lag_chart(self) -> dict[str, Any]:
        return {
            "kind": "lag",
            "pairs": [
                {
                    "name": r["name"],
                    "series": self.lag.get(str(r["id"])) or {},
                    "max_lag_seconds": r.get("max_lag_seconds"),
                }
                for r in sorted(self.rows, key=lambda r: str(r["name"]))
            ],
        }

    def _compliance_chart(self) -> dict[str, Any]:
        rows = self.rows
        servers = sorted({str(r.get("server_name")) for r in rows})
        cnt: dict[tuple[str, str], int] = Counter(
            (str(r.get("server_name")), str(r.get("compliance"))) for r in rows
        )
        return {
            "kind": "stacked",
            "labels": servers,
            "title": "firmware components per server",
            "series": {
                c: [cnt.get((s, c), 0) for s in servers] for c in ("compliant", "outdated", "unknown")
            },
        }

    def load(self, view: str | None = None, **filters: str) -> list[Row]:
        self.view = view or self.view
        if self.view == REPLICATION_LAG:
            from console.models.replication import ReplicationModel

            rm = ReplicationModel(self.api)
            self.rows = rm.pairs(filters.get("site_id"))
            self.lag = {str(r["id"]): rm.lag_series(str(r["id"])) for r in self.rows}
        else:
            self.rows = self.api.report(self.view, filters=filters or None)
            self.stays = maintenance_stays(self.api) if self.view == "v_host_history" else []
        self.changed()
        return self.rows

    def csv(self) -> str:
        return to_csv(self.rows)

    def json(self) -> str:
        return to_json(self.rows)

    def export(self, path: str | Path, fmt: str | None = None) -> Path:
        return export_rows(self.rows, path, fmt)


def maintenance_stays(api: Api, limit: int = 500) -> list[Row]:
    """Each host's stays in maintenance as the rolling updates recorded them on the host's
    task (``executor/host_maintenance.py``: entered when the job asked vCenter for maintenance,
    exited when vCenter confirmed the host back): {host, job_id, entered, exited (None while
    still in maintenance)}, newest first, from the newest ``limit`` host tasks. Only the
    recorded timestamps are read (the details are fetched whole: JSON paths in a select are
    not PostgREST-portable to the local stack)."""
    rows = api._rest(
        "time in maintenance",
        lambda c: (
            c.table("job_tasks")
            .select("target_id,target_name,job_id,details")
            .eq("target_kind", "host")
            .order("started_at", desc=True, nullsfirst=False)
            .limit(limit)
        ),
    )
    out = []
    for r in rows:
        span = maintenance_span(r.get("details"))
        if span is not None:
            out.append(
                {
                    "host": str(r.get("target_name") or short_id(r.get("target_id"))),
                    "job_id": r.get("job_id"),
                    "entered": span[0],
                    "exited": span[1],
                }
            )
    return out


def maintenance_chart(stays: list[Row], now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Time in maintenance per host (minutes, summed over the recorded stays); a host still in
    maintenance counts up to now, in its own series."""
    if not stays:
        return None
    now = now or dt.datetime.now(dt.UTC)
    done: dict[str, float] = defaultdict(float)
    ongoing: dict[str, float] = defaultdict(float)
    for s in stays:
        if s["exited"] is not None:
            done[s["host"]] += (s["exited"] - s["entered"]).total_seconds() / 60
        else:
            ongoing[s["host"]] += max(0.0, (now - s["entered"]).total_seconds() / 60)
    hosts = sorted(set(done) | set(ongoing))
    series = {"in maintenance (entered to exited)": [round(done.get(h, 0.0), 2) for h in hosts]}
    if ongoing:
        series["still in maintenance (so far)"] = [round(ongoing.get(h, 0.0), 2) for h in hosts]
    return {
        "kind": "stacked",
        "labels": hosts,
        "title": "time in maintenance per host",
        "unit": " min",
        "series": series,
    }


def compliance_over_time(rows: list[Row]) -> dict[str, Any] | None:
    """Servers compliant and not compliant after each inventory or compliance run (the
    snapshots of v_firmware_compliance_history, one per server per run), oldest run first."""
    runs: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        # a run is its job; a snapshot whose job was deleted stands alone at its minute
        runs[str(r.get("job_id") or str(r.get("recorded_at"))[:16])].append(r)
    if not runs:
        return None
    order = sorted(runs, key=lambda k: min(str(r.get("recorded_at")) for r in runs[k]))

    def label(k: str) -> str:
        t = min(str(r.get("recorded_at")) for r in runs[k])
        # month-day and hour, as the replication lag plot labels its x axis (10 characters)
        return f"{t[5:10]} {t[11:13]}h" if len(t) >= 13 else t

    return {
        "kind": "line",
        "xs": [label(k) for k in order],
        "title": "servers compliant after each inventory / compliance run",
        "unit": "",
        "series": {
            "compliant": [sum(1 for r in runs[k] if r.get("compliant")) for k in order],
            "not compliant": [sum(1 for r in runs[k] if not r.get("compliant")) for k in order],
        },
        "second": {
            "kind": "stacked",
            "labels": [label(k) for k in order],
            "title": "servers per verdict after each run",
            "series": {
                verdict: [sum(1 for r in runs[k] if r.get("verdict") == verdict) for k in order]
                for verdict in ("compliant", "outdated", "partly unknown", "no inventory")
            },
        },
    }


class FleetModel(Observable):
    """Sites, clusters, hosts and servers, with each server's firmware compliance."""

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self.sites: list[Row] = []
        self.clusters: list[Row] = []
        self.hosts: list[Row] = []
        self.servers: list[Row] = []
        self.compliance: list[Row] = []
        self.catalogs: list[Row] = []
        self.site_id: str | None = None

    def load(self, site_id: str | None = None) -> None:
        self.sites = self.api.sites()
        self.site_id = site_id or (self.sites[0]["id"] if self.sites else None)
        if self.site_id:
            self.clusters = self.api.clusters(self.site_id)
            cids = {c["id"] for c in self.clusters}
            self.hosts = [h for h in self.api.hosts() if h.get("cluster_id") in cids]
            self.servers = self.api.servers(self.site_id)
            self.compliance = self.api.report("v_firmware_compliance", filters={"site_id": self.site_id})
            sid = self.site_id
            self.catalogs = self.api._rest(
                "firmware catalogs",
                lambda c: (
                    c.table("firmware_catalogs")
                    .select("id,name,url,version,fetched_at")
                    .eq("site_id", sid)
                    .order("name")
                ),
            )
        else:
            self.clusters, self.hosts, self.servers, self.compliance, self.catalogs = [], [], [], [], []
        self.changed()

    @staticmethod
    def inventory_notes(server: Row) -> str:
        """What the last inventory said about a server beyond its facts: the error of a
        failed read, else the warnings of a good one (missing or unknown components, parts
        the BMC did not serve, an unsupported generation), in the inventory's words."""
        d = server.get("details") or {}
        if d.get("inventory_error"):
            return f"inventory failed: {d['inventory_error']}"
        warnings = [str(w) for w in d.get("inventory_warnings") or []]
        return "; ".join(warnings)

    def server_rows(self) -> list[dict[str, Any]]:
        by_server: dict[str, Counter] = defaultdict(Counter)
        for c in self.compliance:
            by_server[c["server_id"]][c.get("compliance") or "unknown"] += 1
            if c.get("compliance") == "outdated" and c.get("criticality") == "urgent":
                by_server[c["server_id"]]["urgent"] += 1
        host_of = {h.get("server_id"): h for h in self.hosts if h.get("server_id")}
        cluster_name = {c["id"]: c["name"] for c in self.clusters}
        out = []
        for s in self.servers:
            cnt = by_server.get(s["id"], Counter())
            h = host_of.get(s["id"])
            verdict = (
                "no inventory"
                if not cnt
                else "outdated"
                if cnt["outdated"]
                else "compliant"
                if cnt["compliant"] and not cnt["unknown"]
                else "partly unknown"
            )
            out.append(
                {
                    "server": s["name"],
                    "model": s.get("model") or "",
                    "service_tag": s.get("service_tag") or "",
                    "power": s.get("power_state"),
                    "health": s.get("health"),
                    "host": h["name"] if h else "",
                    "cluster": cluster_name.get(h.get("cluster_id"), "") if h else "",
                    "firmware": verdict,
                    "outdated": cnt["outdated"],
                    "urgent": cnt["urgent"],
                    "last inventory": short_ts(s.get("last_seen_at")) or "never",
                    "inventory notes": self.inventory_notes(s),
                }
            )
        return out

    def cluster_rows(self) -> list[dict[str, Any]]:
        out = []
        for c in self.clusters:
            hs = [h for h in self.hosts if h.get("cluster_id") == c["id"]]
            out.append(
                {
                    "cluster": c["name"],
                    "hosts": len(hs),
                    "in_maintenance": sum(bool(h.get("in_maintenance")) for h in hs),
                    "ha": c.get("ha_enabled"),
                    "drs": c.get("drs_automation") or c.get("drs_enabled"),
                }
            )
        return out


# the chart each report view draws (ReportModel.chart); a view not named here draws none
_CHARTS: dict[str, Callable[[ReportModel], dict[str, Any] | None]] = {
    "v_job_stats_by_type": ReportModel._stats_by_type_chart,
    "v_job_stats_by_week": ReportModel._stats_by_week_chart,
    "v_job_stats_by_user": ReportModel._stats_by_user_chart,
    "v_host_history": lambda m: maintenance_chart(m.stays),
    "v_executor_health": ReportModel._executor_health_chart,
    "v_firmware_compliance_history": lambda m: compliance_over_time(m.rows),
    REPLICATION_LAG: ReportModel._replication_lag_chart,
    "v_firmware_compliance": ReportModel._compliance_chart,
}
