"""The job form view: type, targets from the inventory, typed params fields from the
executor's model (choices as selectors, numbers with their range), an approved window by
name, dry run, create."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import traitlets

from console.models.common import short_ts
from console.models.form_fields import FieldSpec, collect, entry_problem, field_specs
from console.models.job_form import FORM_JOB_TYPES, JobForm, target_fields, template
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options


def fields_help(job_type: str) -> str:
    """The params' fields with their choices, ranges and defaults, from the executor's model."""
    import typing
    from enum import Enum

    from executor.jobtypes import model_for

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


class ListEditor(w.VBox):
    """A list field as a list: each entry a row with its remove button, an input (a text box,
    or a selector of names) and Add. An entry is checked against the model's item type as it
    is added and refused in words on the line under it; the order is the order of adding
    (for credential sets: the order they are tried). ``value`` is the list."""

    value: traitlets.List[Any] = traitlets.List().tag(sync=False)

    def __init__(
        self,
        spec: FieldSpec,
        start: list[Any] | None = None,
        *,
        names: list[tuple[str, str]] | None = None,
        placeholder: str = "",
    ) -> None:
        self.spec = spec
        self.names = dict((v, k) for k, v in names) if names is not None else None
        self.status = Status()
        self.status.add_class("rp-list-status")
        if names is not None:
            self.entry: w.Widget = dropdown(
                names, placeholder="— choose —" if names else None, layout=w.Layout(width="300px")
            )
        else:
            self.entry = w.Text(placeholder=placeholder, layout=w.Layout(width="300px"))
        self.entry.add_class("rp-list-entry")
        self.add = w.Button(description="Add", icon="plus", layout=w.Layout(width="80px"))
        self.add.add_class("rp-list-add")
        self.add.on_click(lambda _: self._add())
        self.rows = w.VBox()
        self.rows.add_class("rp-list-rows")
        label = w.HTML(f"<b>{html.escape(spec.name)}</b>", layout=w.Layout(width="170px"))
        super().__init__([w.HBox([label, self.entry, self.add]), self.rows, self.status])
        self.add_class("rp-list-editor")
        self.add_class(f"rp-list-{spec.name}")
        self.observe(lambda ch: self._draw(), names="value")
        self.value = [str(x) for x in (start or [])]
        self._draw()

    def label(self, v: str) -> str:
        return self.names.get(v, f"unknown ({v[:8]})") if self.names is not None else v

    def _add(self) -> None:
        raw = self.entry.value
        if raw in (None, ""):
            self.status.warn(
                f"{self.spec.name}: "
                + ("choose one first" if self.names is not None else "type an entry first")
            )
            return
        text = str(raw).strip()
        why = None if self.names is not None else entry_problem(self.spec, text)
        if why is None and text in self.value:
            why = f"{self.spec.name}: {self.label(text)} is already in the list"
        if why is None and self.spec.max_items is not None and len(self.value) >= self.spec.max_items:
            why = f"{self.spec.name}: at most {self.spec.max_items} entries"
        if why:
            self.status.error(why)
            return
        self.value = [*self.value, text]
        if self.names is None:
            self.entry.value = ""
        self.status.ok(f"{self.label(text)} added")

    def remove(self, v: str) -> None:
        self.value = [x for x in self.value if x != v]
        self.status.ok(f"{self.label(v)} removed")

    def _draw(self) -> None:
        rows = []
        for i, v in enumerate(self.value, 1):
            rm = w.Button(description="remove", icon="times", layout=w.Layout(width="90px"))
            rm.add_class("rp-list-remove")
            rm.on_click(lambda _, v=v: self.remove(v))
            rows.append(
                w.HBox([w.HTML(f"<span class='rp-list-item'>{i}. {html.escape(self.label(v))}</span>"), rm])
            )
        self.rows.children = rows or [
            w.HTML(f"<i class='rp-list-empty'>none{' (required)' if self.spec.required else ''}</i>")
        ]


class NestedFields(w.VBox):
    """A nested selection (a firmware selection, an ESXi image) as its own group of typed
    fields; ``value`` is the group's values by field name (JobFormView collects them)."""

    value = traitlets.Dict().tag(sync=False)

    def __init__(self, spec: FieldSpec, build: Any, start: dict[str, Any] | None) -> None:
        self.spec = spec
        self.inputs: dict[str, w.Widget] = {}
        rows: list[w.Widget] = [
            w.HTML(f"<b>{html.escape(spec.name)}</b> <i>{html.escape(spec.description)}</i>")
        ]
        for c in spec.children:
            wdg, row = build(c, (start or {}).get(c.name, c.default))
            wdg.observe(lambda ch: self._update(), names="value")
            self.inputs[c.name] = wdg
            rows.append(row)
        super().__init__(rows, layout=w.Layout(border="1px solid #ddd", padding="4px", margin="2px 0"))
        self.add_class("rp-nested")
        self.add_class(f"rp-nested-{spec.name}")
        self._update()

    def _update(self) -> None:
        self.value = {n: wdg.value for n, wdg in self.inputs.items()}


class JobFormView(w.VBox):
    """The job form. With ``actions=False`` it is only the typed params of a job type (type,
    targets, fields), for a screen that saves params rather than creating a job (Schedules):
    ``params()`` answers them validated, or raises ValidationFailed in words."""

    def __init__(
        self, form: JobForm, *, job_types: Sequence[str] | None = None, actions: bool = True
    ) -> None:
        self.form = form
        self.status = Status()
        self.type = w.Dropdown(
            description="job type", options=list(job_types or FORM_JOB_TYPES), value=form.job_type
        )
        self.pickers = w.VBox()
        self.fields = w.VBox()
        self.fields.add_class("rp-job-fields")
        self._specs: list[FieldSpec] = []
        self._inputs: dict[str, w.Widget] = {}
        self.window = dropdown(
            [], description="window", placeholder="— no window (needed for high-risk types) —"
        )
        self.window.add_class("rp-job-window")
        if actions:
            self._load_windows()
        self.plan = w.HTML()
        self.dry = w.Button(description="Dry run", button_style="info")
        self.go = w.Button(description="Create job", button_style="danger")
        self.dry.on_click(guarded(self.status, lambda _: self._dry()))
        self.go.on_click(guarded(self.status, lambda _: self._create()))
        self.type.observe(lambda ch: guarded(self.status, self._retype)(ch["new"]), names="value")
        self.fields_help = w.HTML()
        self.window.observe(lambda ch: self._stale(), names="value")
        head = [self.type, self.pickers, self.fields, self.fields_help]
        super().__init__(
            head + [self.window, w.HBox([self.dry, self.go]), self.status, self.plan]
            if actions
            else [*head, self.status]
        )
        self._retype(form.job_type)

    def _retype(self, job_type: str) -> None:
        self.form.choose(job_type)
        self._build_fields(job_type)
        pickers = []
        self._pick: dict[str, w.Widget] = {}
        for name, (kind, many) in target_fields(job_type).items():
            opts = [(r["name"], r["id"]) for r in self.form.api.inventory(kind)]
            wdg = (
                w.SelectMultiple(description=name, options=opts, rows=min(8, max(2, len(opts))))
                if many
                else dropdown(opts, description=name, placeholder="— choose —")
            )
            self._pick[name] = wdg
            pickers.append(wdg)
        for p in pickers:
            p.observe(lambda ch: self._stale(), names="value")
        self.pickers.children = pickers
        self.fields_help.value = fields_help(job_type)
        self.plan.value = ""
        self.status.clear()

    def _load_windows(self) -> None:
        """Approved windows that have not ended, by title and time (never by id alone)."""
        try:
            rows = self.form.api.windows(statuses=["approved"])
        except Exception:  # noqa: BLE001 - the picker stays at "no window"; create-job decides
            rows = []
        opts = [
            (
                f"{r.get('title') or 'window'} — {short_ts(r.get('starts_at'))} to {short_ts(r.get('ends_at'))}",
                str(r["id"]),
            )
            for r in rows
        ]
        set_options(self.window, opts, placeholder="— no window (needed for high-risk types) —")

    def _field_widget(self, s: FieldSpec, start: Any) -> w.Widget:
        style = {"description_width": "170px"}
        layout = w.Layout(width="420px")
        if s.kind == "choice":
            ph = None if start in s.choices else ("— choose —" if s.required else "— default —")
            return dropdown(
                [(c, c) for c in s.choices],
                value=start,
                placeholder=ph,
                description=s.name,
                style=style,
                layout=layout,
            )
        if s.kind == "choices":
            return w.SelectMultiple(
                options=list(s.choices),
                value=tuple(v for v in (start or ()) if v in s.choices),
                rows=min(6, len(s.choices)),
                description=s.name,
                style=style,
                layout=layout,
            )
        if s.kind == "bool":
            return w.Checkbox(value=bool(start), description=s.name, style=style, indent=True)
        if s.kind == "int" and isinstance(start, int) and s.minimum is not None and s.maximum is not None:
            return w.BoundedIntText(
                value=start,
                min=int(s.minimum),
                max=int(s.maximum),
                description=s.name,
                style=style,
                layout=layout,
            )
        if s.kind == "ref":
            kind = s.choices[0]
            api = self.form.api
            table = {"catalog": "firmware_catalogs", "baseline": "firmware_baselines"}.get(kind)
            rows = (
                api.sites()
                if kind == "site"
                else api._rest(
                    f"{kind}s",
                    lambda c: c.table(table).select("id,name").order("name"),
                )
            )
            ph = "— choose —" if s.required else "— none —"
            return dropdown(
                [(r["name"], str(r["id"])) for r in rows],
                placeholder=ph,
                description=s.name,
                style=style,
                layout=layout,
            )
        if s.kind == "list":
            return ListEditor(
                s,
                start,
                placeholder="e.g. 10.0.0.0/24 or 10.0.0.10-10.0.0.20" if s.name == "ranges" else "one entry",
            )
        if s.kind == "credentials":
            return ListEditor(s, start, names=self._credential_names(s.choices[0]))
        if s.kind == "nested":
            return NestedFields(s, self._field_row, start if isinstance(start, dict) else None)
        if s.kind == "json":
            return w.Textarea(
                value="" if start in (None, "", [], {}) else json.dumps(start),
                placeholder="JSON" + (" (required)" if s.required else " (empty = default)"),
                description=s.name,
                style=style,
                layout=w.Layout(width="600px", height="60px"),
            )
        hint = s.range_words or ("required" if s.required else "empty = default")
        return w.Text(
            value="" if start is None else str(start),
            placeholder=hint,
            description=s.name,
            style=style,
            layout=layout,
        )

    def _credential_names(self, kind: str) -> list[tuple[str, str]]:
        """The credential sets of that kind, by name (and site when names repeat)."""
        api = self.form.api
        rows = api._rest(
            "credential sets",
            lambda c: (
                c.table("credential_sets").select("id,name,kind,site_id").eq("kind", kind).order("name")
            ),
        )
        sites = {str(x["id"]): x["name"] for x in api.sites()}
        dup = {r["name"] for r in rows if sum(x["name"] == r["name"] for x in rows) > 1}
        return [
            (
                r["name"] + (f" ({sites.get(str(r['site_id']), 'site?')})" if r["name"] in dup else ""),
                str(r["id"]),
            )
            for r in rows
        ]

    def _field_row(self, s: FieldSpec, start: Any) -> tuple[w.Widget, w.Widget]:
        wdg = self._field_widget(s, start)
        if s.kind in ("list", "credentials", "nested"):
            words = "; ".join(x for x in ("required" if s.required else "", s.description) if x)
            hint = w.HTML(f"<span class='rp-field-hint rp-info'>{html.escape(words)}</span>")
            return wdg, (w.VBox([wdg, hint]) if s.kind != "nested" else wdg)
        words = "; ".join(
            x
            for x in (
                ("one of " + ", ".join(s.choices)) if s.kind in ("choice", "choices") else "",
                s.range_words,
                "required" if s.required else "",
                s.description,
            )
            if x
        )
        return wdg, w.HBox([wdg, w.HTML(f"<span class='rp-field-hint rp-info'>{html.escape(words)}</span>")])

    def _build_fields(self, job_type: str) -> None:
        """One typed input per params field (targets have their pickers), with its allowed
        values and meaning beside it."""
        self._specs = field_specs(job_type)
        start = template(job_type)
        self._inputs = {}
        rows = []
        for s in self._specs:
            wdg, row = self._field_row(s, start.get(s.name, s.default))
            wdg.observe(lambda ch: self._stale(), names="value")
            self._inputs[s.name] = wdg
            rows.append(row)
        self.fields.children = rows

    def _stale(self) -> None:
        """Changed params invalidate the plan on screen (creation needs a new dry run anyway)."""
        if self.plan.value:
            self.plan.value = ""
            self.status.warn("the params changed: run the dry run again")

    def params(self) -> dict[str, Any]:
        """The picked targets and typed fields as params, validated by the executor's model."""
        targets = {
            n: (list(p.value) if isinstance(p.value, tuple) else [p.value] if p.value else [])
            for n, p in self._pick.items()
        }
        doc = collect(self._specs, {n: wdg.value for n, wdg in self._inputs.items()})
        return self.form.params(doc, targets)

    def _request(self) -> tuple[dict, dict]:
        params = self.params()
        fields = {"maintenance_window_id": self.window.value} if self.window.value else {}
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
        self.status.ok(
            f"{self.form.job_type.replace('_', ' ')} job {str(res['job_id'])[:8]} created ({res['status']}): "
            "follow it in Jobs or with console.job('" + str(res["job_id"])[:8] + "')"
        )
