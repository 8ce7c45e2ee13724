"""Blocker resolution wizard view: one decision row per blocker, bulk actions, save."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from console.api import DECISIONS
from console.models.blockers import DECISION_LABELS, BlockerWizard
from console.models.common import short_ts
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options


class BlockerWizardView(w.VBox):
    def __init__(self, wizard: BlockerWizard) -> None:
        self.wz = wizard
        self.status = Status()
        self.head = w.HTML()
        self.table = w.HTML()
        self.rows = w.VBox()
        self.bulk_decision = w.Dropdown(
            options=[(DECISION_LABELS[d], d) for d in DECISIONS], description="all"
        )
        self.bulk_kind = dropdown([("any", None)], description="of kind")
        self.bulk_go = w.Button(description="Apply to undecided")
        self.bulk_go.on_click(guarded(self.status, lambda _: self._bulk()))
        self.resume = w.Checkbox(value=True, description="resume the job when saved")
        self.abort_ok = w.Checkbox(value=False, description="yes, abort cancels the job")
        self.save = w.Button(description="Save decisions", button_style="warning")
        self.save.on_click(guarded(self.status, lambda _: self._save()))
        self.reload = w.Button(description="Reload", icon="refresh")
        self.reload.on_click(guarded(self.status, lambda _: self.wz.load()))
        wizard.on_change(self.render)
        super().__init__(
            [
                self.head,
                self.table,
                self.rows,
                w.HBox([self.bulk_decision, self.bulk_kind, self.bulk_go]),
                w.HBox([self.resume, self.abort_ok]),
                w.HBox([self.reload, self.save]),
                self.status,
            ]
        )
        self.render()

    def _bulk(self) -> None:
        n, skipped = self.wz.bulk(self.bulk_decision.value, kind=self.bulk_kind.value)
        (self.status.warn if skipped else self.status.ok)(
            f"{n} decided" + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
        )

    def _save(self) -> None:
        res = self.wz.save(resume=self.resume.value, confirm_abort=self.abort_ok.value)
        self.status.ok(
            f"{res.get('recorded')} decision(s) saved; job is {res.get('status')}"
            + (" and resumed" if res.get("resumed") else "")
        )

    def _row(self, r: dict) -> w.Widget:
        dd = w.Dropdown(
            options=[("— decide —", "")] + [(DECISION_LABELS[d], d) for d in DECISIONS],
            value=r["decision"],
            layout=w.Layout(width="320px"),
        )
        # the note goes with the decision; an override of the replication gate needs one (its reason)
        note = w.Text(
            value=r.get("note", ""),
            placeholder="note (a reason for an override)",
            layout=w.Layout(width="260px"),
        )

        def changed(ch: dict, bid: str = r["id"]) -> None:
            if ch["new"]:
                guarded(self.status, self.wz.decide)(bid, ch["new"], note.value)
            else:
                self.wz.clear(bid)

        def noted(ch: dict, bid: str = r["id"]) -> None:
            if dd.value:
                guarded(self.status, self.wz.decide)(bid, dd.value, ch["new"])

        dd.observe(changed, names="value")
        note.observe(noted, names="value")
        what = f"{r['vm']} on {r['host']}" if r["vm"] else r["host"] or r["description"]
        return w.HBox(
            [
                w.HTML(
                    f"<code>{html.escape(str(r['kind']))}</code> {html.escape(str(what))}",
                    layout=w.Layout(width="45%"),
                ),
                dd,
                note,
            ]
        )

    def render(self) -> None:
        wz = self.wz
        j = wz.job
        state = f"{j.get('status')}" + (f" ({j.get('pause_reason')})" if j.get("pause_reason") else "")
        self.head.value = (
            f"{STYLE}<h4>Blockers of job {wz.job_id[:8]} ({html.escape(str(j.get('type', '')))}) — "
            f"{html.escape(state)}</h4>"
            + (
                ""
                if wz.paused_for_blockers or not j
                else "<div class='rp-warn'>the job is not paused for blockers: decisions will be refused</div>"
            )
        )
        rows = wz.rows()
        self.table.value = html_table(
            rows,
            ["kind", "host", "vm", "description", "detected", "decision"],
            css="rp-blockers",
            empty="no open blockers",
        )
        self.rows.children = [self._row(r) for r in rows]
        kinds = sorted({r["kind"] for r in rows})
        set_options(self.bulk_kind, [("any", None)] + [(k, k) for k in kinds])


class BlockerInbox(w.VBox):
    """The blockers screen: the jobs waiting for blocker decisions (named by type, cluster
    and age, never by id alone), and the wizard of the one picked."""

    def __init__(self, console: Any, job_id: str | None = None) -> None:
        self.console = console
        self.status = Status()
        self.pick = dropdown([], description="job", layout=w.Layout(width="70%"))
        self.pick.add_class("rp-blocked-job-pick")
        self.reload = w.Button(description="Reload", icon="refresh")
        self.reload.on_click(guarded(self.status, lambda _: self.load()))
        self.area = w.VBox()
        self.wizard: BlockerWizardView | None = None
        self.pick.observe(lambda ch: guarded(self.status, self._open)(ch["new"]), names="value")
        super().__init__([w.HBox([self.pick, self.reload]), self.status, self.area])
        self.load(job_id)

    def load(self, job_id: str | None = None) -> None:
        con = self.console
        waiting = [j for j in con.api.jobs(statuses=["paused"]) if j.get("pause_reason") == "blockers"]
        names = con.names
        opts = [
            (
                f"{j['type']} of {names.name('cluster', j['cluster_id']) if j.get('cluster_id') else 'servers'}"
                f" — paused {short_ts(j.get('created_at'))} ({j['id'][:8]})",
                j["id"],
            )
            for j in waiting
        ]
        if job_id and job_id not in {v for _, v in opts}:
            opts.insert(0, (f"job {job_id[:8]}", job_id))
        if not opts:
            set_options(self.pick, [], placeholder="no job is waiting for blocker decisions")
            self.area.children = []
            return
        set_options(self.pick, opts, value=job_id)
        self._open(self.pick.value)

    def _open(self, job_id: str | None) -> None:
        if not job_id:
            self.area.children = []
            return
        if self.wizard is not None and self.wizard.wz.job_id == job_id:
            return
        self.wizard = self.console.blocker_wizard(job_id)
        self.area.children = [self.wizard]
