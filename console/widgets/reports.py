"""Reports (reporting views, exportable) and the fleet browser with firmware compliance."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w

from console.models.common import short_ts
from console.models.reports import REPORT_TITLES, REPORTS, FleetModel, ReportModel
from console.widgets.charts import bar_svg, line_svg
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options
from console.widgets.grid import RowsGrid

SERVER_COLUMNS = [
    "server",
    "model",
    "service_tag",
    "power",
    "health",
    "host",
    "cluster",
    "firmware",
    "outdated",
    "urgent",
    "last inventory",
    "inventory notes",
]


def draw_chart(spec: dict | None) -> str:
    if not spec:
        return ""
    out = []
    while spec:
        if spec["kind"] == "lag":  # the Replication screen's plot, one per pair
            from console.widgets.replication import lag_svg

            out += [
                f"<div class='rp-lag-pair'><b>{html.escape(str(p['name']))}</b>"
                + lag_svg(p["series"], p.get("max_lag_seconds"))
                + "</div>"
                for p in spec["pairs"]
            ] or ["<i>no replication pairs</i>"]
        elif spec["kind"] == "line":
            out.append(line_svg(spec["xs"], spec["series"], title=spec["title"], unit=spec.get("unit", "")))
        else:
            out.append(
                bar_svg(
                    spec["labels"],
                    spec["series"],
                    title=spec["title"],
                    unit=spec.get("unit", ""),
                    stacked=spec["kind"] == "stacked",
                    y_max=spec.get("y_max"),
                )
            )
        spec = spec.get("second")
    return "<div class='rp-charts'>" + "".join(out) + "</div>"


class ReportsView(w.VBox):
    def __init__(self, model: ReportModel, export_dir: str | Path = ".") -> None:
        self.model = model
        self.export_dir = Path(export_dir)
        self.status = Status()
        self.view = dropdown([(REPORT_TITLES[v], v) for v in REPORTS], description="report")
        self.load = w.Button(description="Reload", icon="refresh")
        self.load.on_click(guarded(self.status, lambda _: self.model.load(self.view.value)))
        # picking another report loads it (with its chart) at once
        self.view.observe(lambda ch: guarded(self.status, self.model.load)(ch["new"]), names="value")
        self.csv = w.Button(description="Export CSV")
        self.json = w.Button(description="Export JSON")
        self.csv.on_click(guarded(self.status, lambda _: self._export("csv")))
        self.json.on_click(guarded(self.status, lambda _: self._export("json")))
        self.table = w.HTML()
        self.chart = w.HTML()
        model.on_change(self.render)
        super().__init__(
            [w.HBox([self.view, self.load, self.csv, self.json]), self.status, self.chart, self.table]
        )

    def _export(self, fmt: str) -> None:
        try:
            p = self.model.export(self.export_dir / f"{self.model.view}.{fmt}", fmt)
        except OSError as exc:
            self.status.error(f"could not write the export: {exc.strerror}")
            return
        self.status.ok(f"{len(self.model.rows)} row(s) written to {p}")

    def render(self) -> None:
        self.chart.value = draw_chart(self.model.chart())
        rows = self.model.display_rows()
        cols = list(rows[0].keys()) if rows else []
        self.table.value = (
            STYLE
            + html_table(rows[:200], cols, css=f"rp-report rp-{self.model.view}", empty="no rows")
            + (f"<i>first 200 of {len(rows)}</i>" if len(rows) > 200 else "")
        )


class FleetView(w.VBox):
    def __init__(self, model: FleetModel) -> None:
        self.model = model
        self.status = Status()
        self.site = dropdown(
            [(s["name"], s["id"]) for s in model.sites], value=model.site_id, description="site"
        )
        self.site.add_class("rp-fleet-site")
        self.site.observe(lambda ch: guarded(self.status, self.model.load)(ch["new"]), names="value")
        self.clusters = w.HTML()
        self.servers = RowsGrid(
            SERVER_COLUMNS,
            css="rp-servers",
            empty="no servers match",
            # outdated firmware, and whatever the last inventory said beyond the facts
            highlight={"firmware": ["outdated"], "inventory notes": None},
        )
        self.catalogs = w.HTML()
        self.search = w.Text(
            placeholder="filter: server, model, host, cluster, firmware…", description="search"
        )
        self.search.observe(lambda ch: self.render(), names="value")
        self.sort = dropdown([(c, c) for c in SERVER_COLUMNS], value="server", description="sort by")
        self.sort.observe(lambda ch: self.render(), names="value")
        self.refresh_inv = w.Button(description="Refresh inventory", icon="refresh", button_style="info")
        self.check = w.Button(description="Check compliance", icon="check")
        self.catalog_for_check = dropdown(
            [], description="catalog", placeholder="— catalog to check against —"
        )
        self.action_status = Status()
        self.refresh_inv.on_click(guarded(self.action_status, lambda _: self._job("inventory_refresh")))
        self.check.on_click(guarded(self.action_status, lambda _: self._job("firmware_compliance")))
        self.cat_name = w.Text(description="name", placeholder="e.g. dell-2026-12")
        self.cat_url = w.Text(
            description="URL",
            placeholder="https://downloads.dell.com/catalog/Catalog.xml.gz",
            layout=w.Layout(width="60%"),
        )
        self.cat_add = w.Button(description="Add catalog", icon="plus")
        self.cat_status = Status()
        self.cat_add.on_click(guarded(self.cat_status, lambda _: self._add_catalog()))
        model.on_change(self.render)
        super().__init__(
            [
                self.site,
                w.HBox([self.refresh_inv, self.catalog_for_check, self.check]),
                self.action_status,
                w.HTML("<b>Clusters</b>"),
                self.clusters,
                w.HTML("<b>Servers and firmware compliance</b>"),
                w.HBox([self.search, self.sort]),
                self.servers,
                w.HTML("<b>Dell catalogs of the site</b>"),
                self.catalogs,
                w.HBox([self.cat_name, self.cat_url, self.cat_add]),
                self.cat_status,
                self.status,
            ]
        )
        self.render()

    def _job(self, job_type: str) -> None:
        sid = self.model.site_id
        if not sid:
            self.action_status.warn("choose a site first")
            return
        params: dict = {"site_id": sid}
        if job_type == "firmware_compliance":
            if not self.catalog_for_check.value:
                self.action_status.warn("choose the catalog to check against (or add one below)")
                return
            params["catalog_url"] = self.catalog_for_check.value
        res = self.model.api.create_job(job_type, params, description="from the inventory screen")
        self.action_status.ok(
            f"{job_type.replace('_', ' ')} job {str(res['job_id'])[:8]} created: follow it in "
            "Jobs; this table updates when it finishes (Reload)"
        )

    def _add_catalog(self) -> None:
        from console.errors import ValidationFailed

        name, url = self.cat_name.value.strip(), self.cat_url.value.strip()
        problems = ([] if name else ["name: give the catalog a name"]) + (
            []
            if url.startswith(("https://", "http://"))
            else ["URL: an http(s) URL of a Dell Catalog.xml(.gz)"]
        )
        if not self.model.site_id:
            problems.append("site: choose a site")
        if problems:
            raise ValidationFailed("the catalog is not complete", problems)
        self.model.api._rest(
            "add catalog",
            lambda c: c.table("firmware_catalogs").insert(
                {"site_id": self.model.site_id, "name": name, "url": url}
            ),
        )
        self.cat_status.ok(f"catalog {name!r} added: the next compliance check reads it")
        self.model.load(self.model.site_id)

    def render(self) -> None:
        self.clusters.value = html_table(
            self.model.cluster_rows(),
            ["cluster", "hosts", "in_maintenance", "ha", "drs"],
            css="rp-clusters",
            empty="no clusters at this site",
        )
        rows = self.model.server_rows()
        q = self.search.value.strip().lower()
        if q:
            rows = [r for r in rows if any(q in str(v).lower() for v in r.values())]
        key = self.sort.value or "server"
        rows.sort(
            key=lambda r: (
                r.get(key) is None,
                str(r.get(key)) if not isinstance(r.get(key), int) else f"{r[key]:09d}",
            ),
            reverse=key in ("outdated", "urgent"),
        )
        self.servers.set_rows(rows)  # a data grid: its headers sort and filter too
        cats = self.model.catalogs
        self.catalogs.value = html_table(
            [
                {
                    "catalog": c["name"],
                    "url": c["url"],
                    "version": c.get("version") or "not fetched yet",
                    "last fetched": short_ts(c.get("fetched_at")) or "never",
                }
                for c in cats
            ],
            ["catalog", "url", "version", "last fetched"],
            css="rp-catalogs",
            empty="no catalogs: add one below",
        )
        set_options(
            self.catalog_for_check,
            [(c["name"], c["url"]) for c in cats],
            placeholder="— catalog to check against —",
        )
