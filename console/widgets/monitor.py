"""The live job monitor view: header, job progress, per-host progress with phase and
reason, the phase timeline chart, the log, and the actions the role allows (pause,
resume, cancel, force-resume with its audited reason), each answering on its own line, and
for roles that may read it the job's BMC call log (every Redfish/OME call, no bodies)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from console.models.monitor import PHASE_COLOURS, PHASES, JobMonitor
from console.widgets.charts import gantt_svg
from console.widgets.common import STYLE, Status, guarded, short_id_html

LEVEL_CSS = {"ok": "rp-ok", "warn": "rp-warn", "error": "rp-error", "info": "rp-info"}
BAR_STYLE = {
    "completed": "success",
    "failed": "danger",
    "skipped": "",
    "cancelled": "warning",
    "running": "info",
}


class JobMonitorView(w.VBox):
    def __init__(
        self,
        monitor: JobMonitor,
        *,
        role: str | None = None,
        open_blockers: Callable[[], Any] | None = None,
        open_calls: Callable[[], Any] | None = None,
    ) -> None:
        self.m = monitor
        self.role = role
        self._open_blockers = open_blockers
        self._open_calls = open_calls
        self.header = w.HTML()
        self.job_bar = w.IntProgress(min=0, max=100, value=0, description="job", layout=w.Layout(width="60%"))
        self.job_pct = w.HTML()
        self.hosts = w.VBox()
        self.hosts.add_class("rp-monitor-hosts")
        self.chart = w.HTML()
        self.log_html = w.HTML()
        self.status = Status()
        self.reason = w.Text(
            placeholder="reason (required to force-resume; optional otherwise)", layout=w.Layout(width="45%")
        )
        self.buttons = w.HBox()
        self.blocker_area = w.VBox()
        self.reload = w.Button(description="Reload", icon="refresh")
        self.reload.on_click(guarded(self.status, lambda _: self.m.refresh()))
        # the job's BMC calls, on demand (given only to roles that may read the call log)
        self.calls_area = w.VBox()
        self.calls_button = w.Button(description="BMC calls", icon="list", layout=w.Layout(display="none"))
        self.calls_button.add_class("rp-monitor-calls")
        if open_calls is not None:
            self.calls_button.layout.display = None
            self.calls_button.on_click(guarded(self.status, lambda _: self._show_calls()))
        self._host_widgets: dict[str, tuple[w.HTML, w.IntProgress, w.HTML]] = {}
        monitor.on_change(self.render)
        super().__init__(
            [
                self.header,
                w.HBox([self.job_bar, self.job_pct]),
                w.HTML("<b>Hosts</b>"),
                self.hosts,
                w.HTML("<b>Timeline</b>"),
                self.chart,
                self.blocker_area,
                w.HBox([self.reload, self.calls_button]),
                self.buttons,
                self.reason,
                self.status,
                w.HTML("<b>Log</b>"),
                self.log_html,
                self.calls_area,
            ]
        )
        self.add_class("rp-monitor")
        self.render()

    # -- drawing ---------------------------------------------------------------------------
    def render(self) -> None:
        m, j = self.m, self.m.job
        status = m.status
        self.header.value = (
            f"{STYLE}<h4 class='rp-monitor-head'>{html.escape(m.title())}: "
            f"<span class='rp-job-status rp-status-{html.escape(status)}'>"
            f"{html.escape(m.status_text())}</span> {short_id_html(m.job_id)}</h4>"
            + (f"<div class='rp-error'>✖ {html.escape(str(j['error']))}</div>" if j.get("error") else "")
        )
        pct = m.job_progress()
        self.job_bar.value = pct
        self.job_bar.bar_style = BAR_STYLE.get(status, "info" if status == "running" else "")
        self.job_pct.value = f"<span class='rp-job-pct'>{pct}%</span>"
        self._render_hosts()
        rows = m.gantt()
        self.chart.value = (
            gantt_svg(rows, PHASE_COLOURS, PHASES) if rows else ("<i>this job has no per-host tasks</i>")
        )
        self.log_html.value = (
            STYLE + "<div class='rp-log' style='font-family:monospace;font-size:12px;"
            "max-height:220px;overflow:auto'>"
            + "".join(
                f"<div class='rp-log-line {LEVEL_CSS.get(x.level, '')}'>{x.at.strftime('%H:%M:%S')} "
                f"{html.escape(x.text)}</div>"
                for x in reversed(m.log[-200:])
            )
            + "</div>"
        )
        self._render_actions()

    def _render_hosts(self) -> None:
        rows = self.m.host_rows()
        kids = []
        for r in rows:
            name, bar, why = self._host_widgets.get(r["id"]) or (
                w.HTML(layout=w.Layout(width="180px")),
                w.IntProgress(min=0, max=100, layout=w.Layout(width="220px")),
                w.HTML(layout=w.Layout(width="auto")),
            )
            self._host_widgets[r["id"]] = (name, bar, why)
            name.value = (
                f"<b class='rp-host-name'>{html.escape(r['host'])}</b> "
                f"<span class='rp-host-status rp-status-{html.escape(r['status'])}'>"
                f"{html.escape(r['status'])}</span>"
            )
            bar.value = 100 if r["status"] in ("completed",) else r["progress"]
            bar.bar_style = BAR_STYLE.get(r["status"], "")
            cls = (
                "rp-error"
                if r["status"] == "failed"
                else "rp-warn"
                if r["status"] in ("skipped", "cancelled")
                else "rp-info"
            )
            text = r["phase"] if r["status"] == "running" else ""
            if r["why"]:
                text = (text + " — " if text else "") + r["why"]
            why.value = f"<span class='rp-host-why {cls}'>{html.escape(text)}</span>"
            row = w.HBox([name, bar, why])
            row.add_class("rp-host-row")
            kids.append(row)
        self.hosts.children = kids or [
            w.HTML("<i>no hosts yet: the pre-flight step creates one task per host</i>")
        ]

    def _render_actions(self) -> None:
        btns = []
        for act in self.m.allowed_actions(self.role):
            b = w.Button(
                description=act.replace("_", "-"),
                button_style="danger" if act in ("cancel", "force_resume") else "",
            )
            b.add_class(f"rp-act-{act}")
            b.on_click(guarded(self.status, lambda _b, a=act: self._act(a)))
            btns.append(b)
        self.buttons.children = btns
        ob = self.m.open_blockers()
        if ob and self._open_blockers is not None:
            go = w.Button(
                description=f"Decide {len(ob)} blocker(s)", button_style="warning", icon="hand-paper-o"
            )
            go.on_click(guarded(self.status, lambda _: self._show_blockers()))
            self.blocker_area.children = [go]
        elif not ob:
            self.blocker_area.children = []

    def _show_blockers(self) -> None:
        assert self._open_blockers is not None
        self.blocker_area.children = [self._open_blockers()]

    def _show_calls(self) -> None:
        assert self._open_calls is not None
        self.calls_area.children = [w.HTML("<b>BMC calls</b>"), self._open_calls()]

    def _act(self, action: str) -> None:
        if action == "force_resume" and len(self.reason.value.strip()) < 10:
            self.status.error(
                "force-resume needs a reason of at least 10 characters: it goes to the audit log"
            )
            return
        res = self.m.control(action, self.reason.value.strip() or None)
        self.status.ok(
            f"{action.replace('_', '-')}: job is {res.get('status')}"
            + (" (requested: the executor acts at the next safe point)" if res.get("requested") else "")
        )
