"""The rolling update wizard view: one panel per step of ``UpdateWizard``."""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as w

from console.models.update_wizard import Step, UpdateWizard
from console.widgets.common import STYLE, Status, guarded, html_table
from executor.jobparams import BlockerDefault


class UpdateWizardView(w.VBox):
    def __init__(self, wizard: UpdateWizard) -> None:
        self.wz = wizard
        self.status = Status()
        self.title = w.HTML()
        # step 1
        self.cluster = w.Dropdown(description="cluster", options=[])
        self.next1 = w.Button(description="Next: options")
        self.next1.on_click(guarded(self.status, lambda _: self._choose()))
        # step 2
        self.catalog = w.Text(description="catalog URL", placeholder="https://…/Catalog.xml", layout=w.Layout(width="70%"))
        self.components = w.Text(description="components", placeholder="empty = all (e.g. BIOS, iDRAC)")
        self.hosts = w.SelectMultiple(description="hosts", rows=5)
        self.parallel = w.BoundedIntText(value=1, min=1, max=16, description="parallel")
        self.budget = w.BoundedIntText(value=0, min=0, max=64, description="fail budget")
        self.blocker_default = w.Dropdown(options=[b.value for b in BlockerDefault], description="blockers")
        self.stage = w.Checkbox(value=True, description="stage firmware before reboot")
        self.esxi_version = w.Text(description="ESXi version", placeholder="optional, e.g. 8.0.3")
        self.esxi_depot = w.Text(description="ESXi depot", placeholder="optional depot URL")
        self.window = w.Dropdown(description="window", options=[])
        self.description = w.Text(description="note")
        self.next2 = w.Button(description="Next: pre-flight (dry run)", button_style="info")
        self.next2.on_click(guarded(self.status, lambda _: self._preflight()))
        # step 3/4
        self.report = w.HTML()
        self.typed = w.Text(description="type cluster", placeholder="cluster name to confirm")
        self.confirm = w.Button(description="Confirm", button_style="warning")
        self.confirm.on_click(guarded(self.status, lambda _: self._confirm()))
        self.create = w.Button(description="Start update", button_style="danger")
        self.create.on_click(guarded(self.status, lambda _: self._create()))
        self.export = w.Button(description="Export report", icon="download")
        self.export.on_click(guarded(self.status, lambda _: self._export()))
        self.back = w.Button(description="Back")
        self.back.on_click(guarded(self.status, lambda _: self.wz.back()))
        self.body = w.VBox()
        wizard.on_change(self.render)
        super().__init__([self.title, self.body, self.status])
        self.render()

    def _choose(self) -> None:
        self.wz.choose_cluster(self.cluster.value)
        self.status.clear()

    def _options(self) -> dict:
        return {"catalog_url": self.catalog.value, "components": self.components.value,
                "host_ids": list(self.hosts.value), "max_parallel_hosts": self.parallel.value,
                "failure_budget": self.budget.value, "blocker_default": self.blocker_default.value,
                "stage_firmware": self.stage.value, "esxi_target_version": self.esxi_version.value,
                "esxi_depot_url": self.esxi_depot.value, "maintenance_window_id": self.window.value,
                "description": self.description.value}

    def _preflight(self) -> None:
        self.wz.set_options(**self._options())
        rep = self.wz.run_preflight()
        (self.status.ok if rep.ok else self.status.warn)(
            "pre-flight passed: confirm to go on" if rep.ok else "pre-flight found blocking problems")

    def _export(self) -> None:
        """JSON, CSV and Markdown side by side, in RACKPILOT_CONSOLE_EXPORT_DIR or the notebook's folder."""
        rep = self.wz.report
        if rep is None:
            self.status.warn("run the pre-flight step first")
            return
        base = Path(os.environ.get("RACKPILOT_CONSOLE_EXPORT_DIR", ".")) / f"preflight-{rep.cluster.get('name')}"
        try:
            paths = [rep.export(base.with_suffix(f".{fmt}"), fmt) for fmt in ("json", "csv", "md")]
        except OSError as exc:
            self.status.error(f"could not write the report: {exc.strerror}")
            return
        self.status.ok("pre-flight report written: " + ", ".join(str(p) for p in paths))

    def _confirm(self) -> None:
        self.wz.confirm(self.typed.value)
        self.status.ok("confirmed: press Start update")

    def _create(self) -> None:
        res = self.wz.create()
        self.status.ok(f"job {res['job_id']} created ({res['status']})")

    def render(self) -> None:
        wz = self.wz
        self.title.value = f"{STYLE}<h4>Rolling update — step: {html.escape(wz.step.value)}</h4>"
        if wz.step == Step.CLUSTER:
            self.cluster.options = [(c["name"], c["id"]) for c in wz.clusters]
            self.body.children = [self.cluster, self.next1]
        elif wz.step == Step.OPTIONS:
            self.hosts.options = [(h["name"], h["id"]) for h in wz.hosts]
            self.window.options = [("none", None)] + [
                (f"{x['title']} {x['starts_at'][:16]}→{x['ends_at'][:16]}", x["id"]) for x in wz.windows]
            self.window.value = wz.options.get("maintenance_window_id")
            self.body.children = [w.HTML(f"cluster <b>{html.escape(wz.cluster['name'])}</b>, "  # type: ignore[index]
                                         f"{len(wz.hosts)} host(s)"),
                                  self.catalog, self.components, self.hosts, w.HBox([self.parallel, self.budget]),
                                  self.blocker_default, self.stage, w.HBox([self.esxi_version, self.esxi_depot]),
                                  self.window, self.description, w.HBox([self.back, self.next2])]
        elif wz.step in (Step.PREFLIGHT, Step.CONFIRM):
            rep = wz.report
            assert rep is not None
            checks = [{"check": c.name, "status": c.status, "detail": c.detail} for c in rep.checks]
            self.report.value = (html_table(checks, ["check", "status", "detail"], css="rp-preflight",
                                            row_class=lambda r: "rp-" + r["status"])
                                 + html_table(rep.vm_blockers, ["vm", "host", "reasons"], css="rp-vmblockers",
                                              empty="no VM blockers"))
            tail = [self.typed, self.confirm] if wz.step == Step.PREFLIGHT else [self.create]
            self.body.children = [self.report, w.HBox([self.back, self.export, *tail])]
        else:
            self.body.children = [w.HTML(f"created job <code>{html.escape(str((wz.result or {}).get('job_id')))}"
                                         "</code>: follow it with console.job(job_id)")]
