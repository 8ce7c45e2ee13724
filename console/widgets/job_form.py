"""The job form view: type, targets from the inventory, params as JSON, dry run, create."""

from __future__ import annotations

import html
import json

import ipywidgets as w

from console.models.job_form import FORM_JOB_TYPES, JobForm, target_fields, template
from console.widgets.common import STYLE, Status, guarded, html_table


def fields_help(job_type: str) -> str:
    """The params' fields with their choices, ranges and defaults, from the executor's model."""
    import typing
    from enum import Enum

    from executor.jobparams import model_for

    rows = []
    for name, f in model_for(job_type).model_fields.items():
        if name in target_fields(job_type):
            continue
        ann, choices = f.annotation, []
        for a in (ann, *typing.get_args(ann)):
            if typing.get_origin(a) is typing.Literal:
                choices = [str(x) for x in typing.get_args(a)]
            elif isinstance(a, type) and issubclass(a, Enum):
                choices = [str(x.value) for x in a]
        limits = [str(m) for m in f.metadata if type(m).__name__ in ("Ge", "Le", "Gt", "Lt")]
        what = (
            ("one of " + ", ".join(choices))
            if choices
            else " ".join(s.replace("Ge(ge=", "≥ ").replace("Le(le=", "≤ ").rstrip(")") for s in limits)
        )
        dflt = "" if f.is_required() else f.get_default(call_default_factory=True)
        rows.append(
            f"<tr><td><code>{html.escape(name)}</code>{' *' if f.is_required() else ''}</td>"
            f"<td>{html.escape(what)}</td><td>{html.escape(str(getattr(dflt, 'value', dflt)))}</td>"
            f"<td>{html.escape(f.description or '')}</td></tr>"
        )
    return (
        f"{STYLE}<details class='rp-fields'><summary>fields of {html.escape(job_type)} (* required)</summary>"
        "<table class='rp-table'><tr><th>field</th><th>allowed</th><th>default</th><th>meaning</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )


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
        self.fields_help = w.HTML()
        self.params.observe(lambda ch: self._stale(), names="value")
        self.window.observe(lambda ch: self._stale(), names="value")
        super().__init__(
            [
                self.type,
                self.pickers,
                self.fields_help,
                self.params,
                self.window,
                w.HBox([self.dry, self.go]),
                self.status,
                self.plan,
            ]
        )
        self._retype(form.job_type)

    def _retype(self, job_type: str) -> None:
        self.form.choose(job_type)
        self.params.value = json.dumps(template(job_type), indent=2)
        pickers = []
        self._pick: dict[str, w.Widget] = {}
        for name, (kind, many) in target_fields(job_type).items():
            opts = [(r["name"], r["id"]) for r in self.form.api.inventory(kind)]
            wdg = (
                w.SelectMultiple(description=name, options=opts, rows=min(8, max(2, len(opts))))
                if many
                else w.Dropdown(description=name, options=opts)
            )
            self._pick[name] = wdg
            pickers.append(wdg)
        for p in pickers:
            p.observe(lambda ch: self._stale(), names="value")
        self.pickers.children = pickers
        self.fields_help.value = fields_help(job_type)
        self.plan.value = ""
        self.status.clear()

    def _stale(self) -> None:
        """Changed params invalidate the plan on screen (creation needs a new dry run anyway)."""
        if self.plan.value:
            self.plan.value = ""
            self.status.warn("the params changed: run the dry run again")

    def _request(self) -> tuple[dict, dict]:
        targets = {
            n: (list(p.value) if isinstance(p.value, tuple) else [p.value] if p.value else [])
            for n, p in self._pick.items()
        }
        params = self.form.params(self.params.value, targets)
        fields = {"maintenance_window_id": self.window.value.strip()} if self.window.value.strip() else {}
        return params, fields

    def _dry(self) -> None:
        params, fields = self._request()
        res = self.form.dry_run(params, **fields)
        plan = res["plan"]
        self.plan.value = (
            f"{STYLE}<div>risk <b>{html.escape(plan['risk'])}</b>, scheduled "
            f"{html.escape(plan['scheduled_for'])}</div>"
            + html_table(plan["tasks"], ["seq", "target_kind", "target_name"], css="rp-plan")
        )
        self.status.ok("dry run passed: nothing was written; Create job to submit")

    def _create(self) -> None:
        params, fields = self._request()
        res = self.form.create(params, **fields)
        self.status.ok(f"job {res['job_id']} created ({res['status']})")
