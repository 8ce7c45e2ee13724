"""Reports (reporting views, exportable) and the fleet browser with firmware compliance."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from console.api import REPORT_VIEWS
from console.models.reports import REPORT_TITLES, FleetModel, ReportModel
from console.widgets.common import STYLE, Status, guarded, html_table


class ReportsView(w.VBox):
    def __init__(self, model: ReportModel, export_dir: str | Path = ".") -> None:
        self.model = model
        self.export_dir = Path(export_dir)
        self.status = Status()
        self.view = w.Dropdown(description="report", options=[(REPORT_TITLES[v], v) for v in REPORT_VIEWS])
        self.load = w.Button(description="Load")
        self.load.on_click(guarded(self.status, lambda _: self.model.load(self.view.value)))
        self.csv = w.Button(description="Export CSV")
        self.json = w.Button(description="Export JSON")
        self.csv.on_click(guarded(self.status, lambda _: self._export("csv")))
        self.json.on_click(guarded(self.status, lambda _: self._export("json")))
        self.table = w.HTML()
        model.on_change(self.render)
        super().__init__([w.HBox([self.view, self.load, self.csv, self.json]), self.table, self.status])

    def _export(self, fmt: str) -> None:
        try:
            p = self.model.export(self.export_dir / f"{self.model.view}.{fmt}", fmt)
        except OSError as exc:
            self.status.error(f"could not write the export: {exc.strerror}")
            return
        self.status.ok(f"{len(self.model.rows)} row(s) written to {p}")

    def render(self) -> None:
        rows = self.model.rows
        cols = list(rows[0].keys()) if rows else []
        self.table.value = STYLE + html_table(rows[:200], cols, css=f"rp-report rp-{self.model.view}",
                                              empty="no rows") + (f"<i>first 200 of {len(rows)}</i>"
                                                                  if len(rows) > 200 else "")


class FleetView(w.VBox):
    def __init__(self, model: FleetModel) -> None:
        self.model = model
        self.status = Status()
        self.site = w.Dropdown(description="site", options=[(s["name"], s["id"]) for s in model.sites],
                               value=model.site_id)
        self.site.observe(lambda ch: guarded(self.status, self.model.load)(ch["new"]), names="value")
        self.clusters = w.HTML()
        self.servers = w.HTML()
        model.on_change(self.render)
        super().__init__([self.site, w.HTML("<b>Clusters</b>"), self.clusters,
                          w.HTML("<b>Servers and firmware compliance</b>"), self.servers, self.status])
        self.render()

    def render(self) -> None:
        self.clusters.value = html_table(self.model.cluster_rows(), ["cluster", "hosts", "in_maintenance", "ha", "drs"],
                                         css="rp-clusters", empty="no clusters at this site")
        self.servers.value = html_table(self.model.server_rows(),
                                        ["server", "model", "service_tag", "power", "health", "host", "cluster",
                                         "firmware", "outdated", "urgent"], css="rp-servers",
                                        empty="no servers at this site",
                                        row_class=lambda r: "rp-warn" if r["firmware"] == "outdated" else "")
