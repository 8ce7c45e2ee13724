"""Fleet intake screens (issue 18): discovery results, the BMC call log, schedules and firmware
catalogs. Models in ``console/models/intake.py``; registered in ``console/screens.py``."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from console.models.common import short_id
from console.models.intake import (
    CallLogModel,
    CatalogsModel,
    DiscoveryModel,
    ScheduleParamsForm,
    SchedulesModel,
)
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options

_YES_NO: dict[object, str] = {True: "yes", False: "no"}  # a boolean column; "-" when it is null


def _when(v: Any) -> str:
    return str(v or "-")[:19].replace("T", " ")


def _lines(text: str) -> list[str]:
    return [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]


class DiscoveryView(w.VBox):
    """Scans of the site, what each found per address (skip reasons in words), and a new scan
    (a dry run first: it lists what would be added)."""

    def __init__(
        self, model: DiscoveryModel, site_id: str | None = None, credential_sets: list[dict] | None = None
    ):
        self.model, self.site_id = model, site_id
        self.status = Status()
        self.scan_pick = dropdown([], placeholder="no scan yet", description="scan")
        self.tally = w.HTML()
        self.table = w.HTML()
        # list editors: each entry checked in words as it is added (the job form's editor, on
        # discovery_scan's own field types); credential sets by name, in the order tried
        from console.models.form_fields import field_specs
        from console.widgets.job_form import ListEditor

        specs = {f.name: f for f in field_specs("discovery_scan")}
        self.ranges = ListEditor(specs["ranges"], placeholder="10.0.0.0/24 or 10.0.0.5-10.0.0.40")
        self.hosts = ListEditor(specs["hosts"], placeholder="an address or host name")
        creds = [
            (str(c.get("name")), str(c["id"])) for c in (credential_sets or []) if c.get("kind") == "idrac"
        ]
        self.creds = ListEditor(specs["credential_set_ids"], names=creds)
        self.dry = w.Button(description="Dry run")
        self.go = w.Button(description="Scan and register", button_style="primary")
        self.refresh = w.Button(description="Refresh")
        self.refresh.on_click(guarded(self.status, lambda _: self.load()))
        self.dry.on_click(guarded(self.status, lambda _: self._scan(True)))
        self.go.on_click(guarded(self.status, lambda _: self._scan(False)))
        self.scan_pick.observe(lambda ch: guarded(self.status, lambda: self.show(ch["new"]))(), names="value")
        super().__init__(
            [
                w.HBox([self.refresh, self.scan_pick]),
                self.tally,
                self.table,
                w.HTML("<b>New scan</b>"),
                self.ranges,
                self.hosts,
                self.creds,
                w.HBox([self.dry, self.go]),
                self.status,
            ]
        )

    def load(self) -> None:
        scans = self.model.scans(self.site_id)
        set_options(
            self.scan_pick,
            [
                (
                    f"{_when(s['created_at'])} · {s['status']}"
                    + (" · dry run" if (s.get("params") or {}).get("dry_run") else ""),
                    str(s["id"]),
                )
                for s in scans
            ],
            value=str(scans[0]["id"]) if scans else None,
            placeholder="no scan yet",
        )
        if scans:
            self.show(str(scans[0]["id"]))

    def show(self, job_id: str | None) -> None:
        if not job_id:
            return
        rows = self.model.results(job_id)
        tally = self.model.tally(rows)
        self.tally.value = STYLE + " · ".join(f"{html.escape(k)}: {v}" for k, v in tally.items())
        cols = [
            "address",
            "outcome",
            "why",
            "service_tag",
            "model",
            "idrac_generation",
            "firmware_version",
            "message",
        ]
        self.table.value = html_table(
            rows, cols, css="rp-discovery", empty="no addresses recorded for this scan"
        )

    def _scan(self, dry_run: bool) -> None:
        if not self.site_id:
            self.status.warn("open the screen for a site: con.screen('discovery', site_id=...)")
            return
        res = self.model.scan(
            site_id=self.site_id,
            ranges=list(self.ranges.value),
            hosts=list(self.hosts.value),
            credential_set_ids=list(self.creds.value),
            dry_run=dry_run,
        )
        self.status.ok(f"scan {short_id(res.get('job_id'))} created" + (" (dry run)" if dry_run else ""))


class CallLogView(w.VBox):
    """The BMC call log of a job (or the site): method, path, status, time, Dell MessageId."""

    def __init__(self, model: CallLogModel, job_id: str | None = None, site_id: str | None = None) -> None:
        self.model, self.job_id, self.site_id = model, job_id, site_id
        self.status = Status()
        self.job = w.Text(description="job id", value=job_id or "", placeholder="all jobs of the site")
        self.failed = w.Checkbox(description="failed calls only", value=False)
        self.refresh = w.Button(description="Show")
        self.head = w.HTML()
        self.table = w.HTML()
        self.refresh.on_click(guarded(self.status, lambda _: self.load()))
        super().__init__([w.HBox([self.job, self.failed, self.refresh]), self.head, self.table, self.status])

    def load(self) -> None:
        rows = self.model.calls(
            job_id=self.job.value.strip() or None, site_id=self.site_id, failed_only=self.failed.value
        )
        s = self.model.summary(rows)
        self.head.value = f"{s['calls']} call(s), {s['failed']} failed, {s['targets']} BMC(s)" + (
            f", p95 {s['p95_ms']} ms" if s["p95_ms"] is not None else ""
        )
        shown = [{**r, "at": _when(r.get("at")), "job": short_id(r.get("job_id"))} for r in rows]
        self.table.value = html_table(
            shown,
            ["at", "job", "step", "target", "method", "path", "status", "duration_ms", "message_id", "error"],
            css="rp-bmc-calls",
            empty="no calls recorded",
            row_class=lambda r: "rp-failed" if r.get("failed") else "",
        )


class SchedulesView(w.VBox):
    """Schedules with their next occurrence and last outcome; runs of one; a new schedule."""

    def __init__(self, model: SchedulesModel, site_id: str | None = None, job_types: list[str] | None = None):
        self.model, self.site_id = model, site_id
        self.status = Status()
        self.table = w.HTML()
        # the site a new schedule belongs to, by name (the app frame opens the screen for no
        # site in particular); the table names each schedule's site too
        self.sites = {str(r["id"]): str(r["name"]) for r in model.api.sites()}
        self.site = dropdown(
            sorted(((n, i) for i, n in self.sites.items()), key=lambda x: x[0]),
            value=site_id,
            placeholder="— site —",
            description="site",
        )
        self.site.add_class("rp-schedule-site")
        self.pick = dropdown([], placeholder="no schedule", description="schedule")
        self.runs = w.HTML()
        self.enable = w.Button(description="Enable")
        self.disable = w.Button(description="Disable")
        self.refresh = w.Button(description="Refresh")
        types = job_types or ["inventory_refresh", "firmware_compliance", "vcenter_sync", "catalog_refresh"]
        self.name = w.Text(description="name")
        # the job's params as the job screen types them (the executor's model: targets by name,
        # choices as selectors, numbers with their range), checked in words on Save
        from console.widgets.job_form import JobFormView

        self.form = JobFormView(ScheduleParamsForm(model.api, types), job_types=types, actions=False)
        self.form.add_class("rp-schedule-params")
        self.job_type = self.form.type
        self.recurrence = w.Text(
            description="recurrence", placeholder="0 3 * * * or RRULE:FREQ=DAILY;BYHOUR=3"
        )
        self.tz = w.Text(description="time zone", value="UTC")
        self.missed = dropdown(
            [("skip missed runs", "skip"), ("run once after a miss", "run_once")],
            value="skip",
            description="missed",
        )
        self.save = w.Button(description="Save schedule", button_style="primary")
        self.refresh.on_click(guarded(self.status, lambda _: self.load()))
        self.enable.on_click(guarded(self.status, lambda _: self._enabled(True)))
        self.disable.on_click(guarded(self.status, lambda _: self._enabled(False)))
        self.save.on_click(guarded(self.status, lambda _: self._save()))
        self.pick.observe(lambda ch: guarded(self.status, lambda: self._runs(ch["new"]))(), names="value")
        super().__init__(
            [
                self.refresh,
                self.table,
                w.HBox([self.pick, self.enable, self.disable]),
                self.runs,
                w.HTML("<b>New schedule</b>"),
                w.HBox([self.site, self.name, self.recurrence]),
                w.HBox([self.tz, self.missed]),
                self.form,
                self.save,
                self.status,
            ]
        )

    def load(self) -> None:
        rows = self.model.schedules(self.site_id)
        shown = [
            {
                **r,
                "next": _when(r.get("next_run_at")),
                "last": _when(r.get("last_run_at")),
                "on": "yes" if r.get("enabled") else "no",
                "site": self.sites.get(str(r.get("site_id")), short_id(r.get("site_id"))),
            }
            for r in rows
        ]
        self.table.value = html_table(
            shown,
            [
                "site",
                "name",
                "job_type",
                "recurrence",
                "timezone",
                "on",
                "next",
                "last",
                "last_status",
                "last_error",
                "jobs_created",
            ],
            css="rp-schedules",
            empty="no schedules",
        )
        set_options(
            self.pick, [(str(r["name"]), str(r["schedule_id"])) for r in rows], placeholder="no schedule"
        )

    def _runs(self, schedule_id: str | None) -> None:
        if not schedule_id:
            return
        rows = [
            {**r, "occurrence": _when(r.get("occurrence_at")), "job": short_id(r.get("job_id"))}
            for r in self.model.runs(schedule_id)
        ]
        self.runs.value = html_table(
            rows,
            ["occurrence", "status", "job", "code", "error"],
            css="rp-schedule-runs",
            empty="not fired yet",
        )

    def _enabled(self, on: bool) -> None:
        if self.pick.value:
            self.model.set_enabled(self.pick.value, on)
            self.status.ok("enabled (the schedule's jobs now run with your authority)" if on else "disabled")
            self.load()

    def _save(self) -> None:
        if not self.site.value:
            self.status.warn("site: choose the site the schedule belongs to")
            return
        self.model.save(
            site_id=self.site.value,
            name=self.name.value,
            job_type=self.job_type.value,
            params=self.form.params(),
            recurrence=self.recurrence.value,
            timezone=self.tz.value,
            missed_policy=self.missed.value,
        )
        self.status.ok("saved")
        self.load()


class CatalogsView(w.VBox):
    """Registered catalogs with their last refresh in words; refresh; register; baselines."""

    def __init__(self, model: CatalogsModel, site_id: str | None = None) -> None:
        self.model, self.site_id = model, site_id
        self.status = Status()
        self.table = w.HTML()
        self.baselines = w.HTML()
        self.pick = dropdown([], placeholder="no catalog", description="catalog")
        self.refresh_job = w.Button(description="Refresh catalog", button_style="primary")
        self.reload = w.Button(description="Reload")
        self.name = w.Text(description="name")
        self.url = w.Text(description="URL", placeholder="https://downloads.dell.com/catalog/Catalog.xml.gz")
        self.pin = w.Text(description="SHA-256 pin", placeholder="optional")
        self.verify = w.Checkbox(description="verify TLS", value=True)
        self.add = w.Button(description="Register catalog")
        self.bl_name = w.Text(description="baseline")
        self.bl_components = w.Text(description="components", placeholder="BIOS, iDRAC (empty: all)")
        self.bl_add = w.Button(description="Add baseline")
        self.reload.on_click(guarded(self.status, lambda _: self.load()))
        self.refresh_job.on_click(guarded(self.status, lambda _: self._refresh()))
        self.add.on_click(guarded(self.status, lambda _: self._register()))
        self.bl_add.on_click(guarded(self.status, lambda _: self._baseline()))
        super().__init__(
            [
                self.reload,
                self.table,
                w.HBox([self.pick, self.refresh_job]),
                self.baselines,
                w.HTML("<b>Register a catalog</b>"),
                w.HBox([self.name, self.url]),
                w.HBox([self.pin, self.verify, self.add]),
                w.HTML("<b>Baseline of the chosen catalog</b>"),
                w.HBox([self.bl_name, self.bl_components, self.bl_add]),
                self.status,
            ]
        )

    def load(self) -> None:
        rows = self.model.catalogs(self.site_id)
        shown = [
            {
                **r,
                "fetched": _when(r.get("fetched_at")),
                "dated": _when(r.get("catalog_date")),
                "gz": _YES_NO.get(r.get("compressed"), "-"),
                "problem": r.get("last_error") or "",
            }
            for r in rows
        ]
        self.table.value = html_table(
            shown,
            [
                "name",
                "url",
                "state",
                "component_count",
                "dated",
                "fetched",
                "gz",
                "signature_status",
                "problem",
            ],
            css="rp-catalogs",
            empty="no catalogs registered",
            row_class=lambda r: "rp-warn" if r.get("last_status") in ("moved", "stale", "failed") else "",
        )
        set_options(self.pick, [(str(r["name"]), str(r["id"])) for r in rows], placeholder="no catalog")
        names = {str(r["id"]): str(r["name"]) for r in rows}
        bl = [
            {
                **b,
                "catalog": names.get(str(b["catalog_id"]), short_id(b["catalog_id"])),
                "components": ", ".join(b.get("components") or []) or "all",
            }
            for b in self.model.baselines(self.site_id)
        ]
        self.baselines.value = html_table(
            bl, ["name", "catalog", "components", "description"], css="rp-baselines", empty="no baselines"
        )

    def _refresh(self) -> None:
        if self.pick.value:
            res = self.model.refresh(self.pick.value)
            self.status.ok(f"refresh job {short_id(res.get('job_id'))} created")

    def _register(self) -> None:
        if not self.site_id:
            self.status.warn("open the screen for a site: con.screen('catalogs', site_id=...)")
            return
        self.model.register(
            site_id=self.site_id,
            name=self.name.value,
            url=self.url.value.strip(),
            tls_verify=self.verify.value,
            expected_sha256=self.pin.value.strip() or None,
        )
        self.status.ok("registered; refresh it to load its packages")
        self.load()

    def _baseline(self) -> None:
        if not (self.site_id and self.pick.value):
            self.status.warn("choose a catalog first")
            return
        self.model.add_baseline(
            site_id=self.site_id,
            catalog_id=self.pick.value,
            name=self.bl_name.value,
            components=_lines(self.bl_components.value),
        )
        self.status.ok("baseline added")
        self.load()
