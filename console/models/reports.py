"""Reports over the reporting views, and the fleet/inventory browser, exportable."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from console.api import REPORT_VIEWS, Api, Row
from console.models.common import Observable

REPORT_TITLES = {
    "v_job_stats_by_type": "Success rate and duration by job type",
    "v_job_stats_by_week": "Jobs per week and type",
    "v_job_stats_by_user": "Jobs per user",
    "v_host_history": "What was done to each host/server",
    "v_open_blockers": "Open blockers",
    "v_executor_health": "Executor health",
    "v_firmware_compliance": "Firmware compliance against the catalogs",
}


def to_csv(rows: list[Row]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v, default=str) if isinstance(v, dict | list) else v) for k, v in r.items()})
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


class ReportModel(Observable):
    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self.view = REPORT_VIEWS[0]
        self.rows: list[Row] = []

    def load(self, view: str | None = None, **filters: str) -> list[Row]:
        self.view = view or self.view
        self.rows = self.api.report(self.view, filters=filters or None)
        self.changed()
        return self.rows

    def csv(self) -> str:
        return to_csv(self.rows)

    def json(self) -> str:
        return to_json(self.rows)

    def export(self, path: str | Path, fmt: str | None = None) -> Path:
        return export_rows(self.rows, path, fmt)


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
        else:
            self.clusters, self.hosts, self.servers, self.compliance = [], [], [], []
        self.changed()

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
            verdict = ("no inventory" if not cnt else "outdated" if cnt["outdated"] else
                       "compliant" if cnt["compliant"] and not cnt["unknown"] else "partly unknown")
            out.append({"server": s["name"], "model": s.get("model") or "", "service_tag": s.get("service_tag") or "",
                        "power": s.get("power_state"), "health": s.get("health"),
                        "host": h["name"] if h else "", "cluster": cluster_name.get(h.get("cluster_id"), "") if h else "",
                        "firmware": verdict, "outdated": cnt["outdated"], "urgent": cnt["urgent"]})
        return out

    def cluster_rows(self) -> list[dict[str, Any]]:
        out = []
        for c in self.clusters:
            hs = [h for h in self.hosts if h.get("cluster_id") == c["id"]]
            out.append({"cluster": c["name"], "hosts": len(hs), "in_maintenance": sum(bool(h.get("in_maintenance"))
                                                                                      for h in hs),
                        "ha": c.get("ha_enabled"), "drs": c.get("drs_automation") or c.get("drs_enabled")})
        return out
