"""The job form view: type, targets from the inventory, params as JSON, dry run, create."""

from __future__ import annotations

import html
import json

import ipywidgets as w

from console.models.job_form import FORM_JOB_TYPES, JobForm, target_fields, template
from console.widgets.common import STYLE, Status, guarded, html_table


class JobFormView(w.VBox):
    def __init__(self, form: JobForm) -> None:
        self.form = form
        self.status = Status()
        self.type = w.Dropdown(description="job type", options=list(FORM_JOB_TYPES), value=form.job_type)
        self.pickers = w.VBox()
        self.params = w.Textarea(description="params", layout=w.Layout(width="80%", height="160px"))
        self.window = w.Text(description="window id", placeholder="needed for high-risk types")
        self.plan = w.HTML()
        self.dry = w.Button(description="Dry run", button_style="info")
        self.go = w.Button(description="Create job", button_style="danger")
        self.dry.on_click(guarded(self.status, lambda _: self._dry()))
        self.go.on_click(guarded(self.status, lambda _: self._create()))
        self.type.observe(lambda ch: guarded(self.status, self._retype)(ch["new"]), names="value")
        super().__init__([self.type, self.pickers, self.params, self.window, w.HBox([self.dry, self.go]),
                          self.plan, self.status])
        self._retype(form.job_type)

    def _retype(self, job_type: str) -> None:
        self.form.choose(job_type)
        self.params.value = json.dumps(template(job_type), indent=2)
        pickers = []
        self._pick: dict[str, w.Widget] = {}
        for name, (kind, many) in target_fields(job_type).items():
            opts = [(r["name"], r["id"]) for r in self.form.api.inventory(kind)]
            wdg = (w.SelectMultiple(description=name, options=opts, rows=min(8, max(2, len(opts))))
                   if many else w.Dropdown(description=name, options=opts))
            self._pick[name] = wdg
            pickers.append(wdg)
        self.pickers.children = pickers
        self.plan.value = ""
        self.status.clear()

    def _request(self) -> tuple[dict, dict]:
        targets = {n: (list(p.value) if isinstance(p.value, tuple) else [p.value] if p.value else [])
                   for n, p in self._pick.items()}
        params = self.form.params(self.params.value, targets)
        fields = {"maintenance_window_id": self.window.value.strip()} if self.window.value.strip() else {}
        return params, fields

    def _dry(self) -> None:
        params, fields = self._request()
        res = self.form.dry_run(params, **fields)
        plan = res["plan"]
        self.plan.value = (f"{STYLE}<div>risk <b>{html.escape(plan['risk'])}</b>, scheduled "
                           f"{html.escape(plan['scheduled_for'])}</div>"
                           + html_table(plan["tasks"], ["seq", "target_kind", "target_name"], css="rp-plan"))
        self.status.ok("dry run passed: nothing was written; Create job to submit")

    def _create(self) -> None:
        params, fields = self._request()
        res = self.form.create(params, **fields)
        self.status.ok(f"job {res['job_id']} created ({res['status']})")
