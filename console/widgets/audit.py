"""Audit log view: recent entries with actor names, filters by table, action and job, and
the hash-chain status as far as the console can check it (and how to check the rest)."""

from __future__ import annotations

import html

import ipywidgets as w

from console.models.audit import AuditModel
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options

COLUMNS = ["id", "when", "actor", "action", "table_name", "row_id", "note"]


def chain_html(res: dict) -> str:
    state = res["state"]
    cls = {"intact": "rp-ok", "broken": "rp-error"}.get(state, "rp-info")
    head = {"intact": "✔ chain intact", "broken": "✖ chain broken", "empty": "no audit rows"}[state]
    items = "".join(
        f"<li>row {html.escape(str(p['id']))} (lane {html.escape(str(p['lane']))}): "
        f"{html.escape(p['reason'])}</li>"
        for p in res["problems"]
    )
    return (
        f'{STYLE}<div class="rp-audit-chain"><b class="{cls}">{head}</b>: {html.escape(res["scope"])}'
        f"{'<ul>' + items + '</ul>' if items else ''}"
        f'<div class="rp-info">whole chain: {html.escape(res["full_check"])}</div></div>'
    )


class AuditView(w.VBox):
    def __init__(self, model: AuditModel, job_id: str | None = None) -> None:
        self.model = model
        self.status = Status()
        self.chain_status = Status()
        self.table_dd = dropdown([("every table", "")], value="", description="table")
        self.action_dd = dropdown([("every action", "")], value="", description="action")
        self.job = w.Text(value=job_id or "", description="job", placeholder="whole job id")
        self.limit = w.BoundedIntText(value=100, min=1, max=1000, description="rows")
        self.apply = w.Button(description="Show", button_style="primary")
        self.check = w.Button(description="Check chain")
        self.head = w.HTML()
        self.table = w.HTML()
        self.chain = w.HTML()
        self.apply.on_click(guarded(self.status, lambda _: self.load()))
        self.check.on_click(guarded(self.chain_status, lambda _: self.check_chain()))
        super().__init__(
            [
                w.HBox([self.table_dd, self.action_dd]),
                w.HBox([self.job, self.limit, self.apply]),
                self.status,
                self.head,
                self.table,
                w.HBox([self.check]),
                self.chain_status,
                self.chain,
            ]
        )

    def load(self) -> None:
        ch = self.model.choices()
        set_options(self.table_dd, [("every table", "")] + [(t, t) for t in ch["tables"]])
        set_options(self.action_dd, [("every action", "")] + [(a, a) for a in ch["actions"]])
        rows = self.model.entries(
            table=self.table_dd.value,
            action=self.action_dd.value,
            job_id=self.job.value,
            limit=self.limit.value,
        )
        shown = [{**r, "row_id": (r.get("row_id") or "")[:8]} for r in rows]
        self.head.value = f"<b>{len(rows)}</b> entr{'y' if len(rows) == 1 else 'ies'}, newest first"
        self.table.value = html_table(shown, COLUMNS, css="rp-audit", empty="no audit entries match")
        self.status.clear()

    def check_chain(self) -> None:
        res = self.model.chain_status(200)
        self.chain.value = chain_html(res)
        self.chain_status.clear()
