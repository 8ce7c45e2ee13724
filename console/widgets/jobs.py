"""Job list (with bulk actions and notifications) and live job detail (step timeline)."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as w

from console.models.jobs import JobBoard, JobDetail
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options

JOB_COLUMNS = ["job", "type", "status", "targets", "created", "description"]


class JobListView(w.VBox):
    def __init__(self, board: JobBoard, open_job: Callable[[str], w.Widget] | None = None) -> None:
        self.board = board
        self._open_job = open_job
        self.table = w.HTML()
        self.notices = w.HTML()
        self.status = Status()
        self.open_pick = dropdown(
            [], description="job", placeholder="— choose a job to follow —", layout=w.Layout(width="60%")
        )
        self.open_btn = w.Button(description="Open live monitor", icon="eye")
        self.open_status = Status()
        self.opened = w.VBox()
        self.open_btn.on_click(guarded(self.open_status, lambda _: self._open()))
        self.pick = w.SelectMultiple(description="jobs", rows=6, layout=w.Layout(width="60%"))
        self.action = w.Dropdown(
            options=["resume", "pause", "cancel", "retry"], value="resume", description="action"
        )
        self.go = w.Button(description="Apply to selected", button_style="warning")
        self.reload = w.Button(description="Reload", icon="refresh")
        self.go.on_click(guarded(self.status, self._bulk))
        self.reload.on_click(guarded(self.status, lambda _: self.board.refresh()))
        board.on_change(self.render)
        super().__init__(
            [
                w.HBox([self.reload]),
                self.table,
                self.notices,
                *([w.HBox([self.open_pick, self.open_btn]), self.open_status] if open_job else []),
                w.HTML("<b>Bulk actions</b>"),
                self.pick,
                w.HBox([self.action, self.go]),
                self.status,
                self.opened,
            ]
        )
        self.render()

    def _open(self) -> None:
        if not self.open_pick.value:
            self.open_status.warn("choose a job first")
            return
        assert self._open_job is not None
        self.opened.children = [self._open_job(self.open_pick.value)]
        self.open_status.clear()

    def render(self) -> None:
        rows = self.board.table()
        self.table.value = html_table(
            rows,
            JOB_COLUMNS,
            css="rp-jobs",
            empty="no jobs yet",
            row_class=lambda r: "rp-status-" + r["status"].split()[0],
        )
        self.pick.options = [(f"{r['job']} {r['type']} {r['status']}", r["id"]) for r in rows]
        set_options(
            self.open_pick,
            [(f"{r['job']} {r['type']} {r['targets']} — {r['status']}", r["id"]) for r in rows],
            placeholder="— choose a job to follow —",
        )
        recent = self.board.notices[-5:]
        self.notices.value = STYLE + "".join(
            f'<div class="rp-notice rp-{n.level}">{"🔔"} {html.escape(n.message)}</div>'
            for n in reversed(recent)
        )

    def _bulk(self, _btn: object) -> None:
        ids = list(self.pick.value)
        results = self.board.bulk(self.action.value, ids)
        bad = [f"{i[:8]}: {m}" for i, ok, m in results if not ok]
        good = sum(1 for _, ok, _ in results if ok)
        if bad:
            self.status.warn(f"{good} done, {len(bad)} refused — " + " | ".join(bad))
        else:
            self.status.ok(f"{good} job(s): {self.action.value} sent")
        self.board.refresh()


class JobDetailView(w.VBox):
    def __init__(self, detail: JobDetail) -> None:
        self.detail = detail
        self.header = w.HTML()
        self.progress = w.IntProgress(min=0, max=1, value=0, description="steps")
        self.timeline = w.HTML()
        self.tasks = w.HTML()
        self.blockers = w.HTML()
        self.status = Status()
        self.reason = w.Text(placeholder="reason (pause/cancel: optional)", layout=w.Layout(width="50%"))
        self.buttons = w.HBox()
        detail.on_change(self.render)
        super().__init__(
            [
                self.header,
                self.progress,
                w.HTML("<b>Steps</b>"),
                self.timeline,
                w.HTML("<b>Targets</b>"),
                self.tasks,
                self.blockers,
                self.buttons,
                self.reason,
                self.status,
            ]
        )
        self.render()

    def render(self) -> None:
        d, j = self.detail, self.detail.job
        reason = f" ({j.get('pause_reason')})" if j.get("pause_reason") else ""
        self.header.value = (
            f"{STYLE}<h4 class='rp-job-head'>{html.escape(str(j.get('type', '')))} "
            f"{html.escape(d.job_id[:8])}: <span class='rp-job-status'>"
            f"{html.escape(d.status + reason)}</span></h4>"
            + (f"<div class='rp-error'>{html.escape(str(j['error']))}</div>" if j.get("error") else "")
        )
        done, total = d.progress()
        self.progress.max, self.progress.value = max(total, 1), done
        self.timeline.value = html_table(
            d.timeline(),
            ["seq", "icon", "step", "status", "duration_s", "attempts", "error"],
            css="rp-steps",
            empty="no steps reported yet",
        )
        self.tasks.value = html_table(
            sorted(d.tasks.values(), key=lambda t: t.get("seq", 0)),
            ["target_kind", "target_name", "status", "progress", "error"],
            css="rp-tasks",
        )
        ob = d.open_blockers()
        notes = "".join(
            f'<div class="rp-notice rp-{n.level}">🔔 {html.escape(n.message)}</div>' for n in d.notices[-3:]
        )
        self.blockers.value = notes + (
            f"<div class='rp-warn'>⚠ {len(ob)} open blocker(s): use the blocker wizard "
            f"(console.blockers('{d.job_id}'))</div>"
            if ob
            else ""
        )
        btns = []
        for act in d.actions():
            if act == "force_resume":
                continue  # admin screen, with its own reason check
            b = w.Button(description=act, button_style="danger" if act == "cancel" else "")
            b.on_click(guarded(self.status, lambda _b, a=act: self._act(a)))
            btns.append(b)
        self.buttons.children = btns

    def _act(self, action: str) -> None:
        res = self.detail.api.job_control(action, self.detail.job_id, reason=self.reason.value or None)  # type: ignore[arg-type]
        self.status.ok(
            f"{action}: job is {res.get('status')}" + (" (requested)" if res.get("requested") else "")
        )
        self.detail.refresh()
