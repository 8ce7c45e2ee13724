"""Maintenance windows view: request, and approve/reject with the four-eyes rule shown."""

from __future__ import annotations

import datetime as dt

import ipywidgets as w

from console.models.windows import WindowBoard
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options


class WindowsView(w.VBox):
    def __init__(self, board: WindowBoard, sites: list[dict], clusters: list[dict]) -> None:
        self.board = board
        self.status = Status()  # the Request form's line
        self.decide_status = Status()  # the Approve/Reject/Cancel line, right under those buttons
        self.table = w.HTML()
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        self.site = dropdown([(s["name"], s["id"]) for s in sites], description="site")
        self.cluster = dropdown(
            [("whole site", None)] + [(c["name"], c["id"]) for c in clusters], description="cluster"
        )
        self.title = w.Text(description="title")
        self.starts = w.Text(description="starts (UTC)", value=start.isoformat())
        self.ends = w.Text(description="ends (UTC)", value=(start + dt.timedelta(hours=4)).isoformat())
        self.reason = w.Textarea(description="reason")
        self.request_btn = w.Button(description="Request window", button_style="info")
        self.request_btn.on_click(guarded(self.status, lambda _: self._request()))
        self.pick = dropdown(
            [], description="window", placeholder="— choose a window —", layout=w.Layout(width="60%")
        )
        self.pick.add_class("rp-window-decide-pick")
        self.note = w.Text(description="note", placeholder="required to reject")
        self.approve = w.Button(description="Approve", button_style="success")
        self.reject = w.Button(description="Reject", button_style="danger")
        self.cancel = w.Button(description="Cancel window")
        self.approve.on_click(guarded(self.decide_status, lambda _: self._decide("approve")))
        self.reject.on_click(guarded(self.decide_status, lambda _: self._decide("reject")))
        self.cancel.on_click(guarded(self.decide_status, lambda _: self._decide("cancel")))
        board.on_change(self.render)
        super().__init__(
            [
                w.HTML(
                    f"{STYLE}<div class='rp-info rp-four-eyes'>four eyes: an approver other than the requester "
                    "decides each window (who you are is in the header above)</div>"
                ),
                self.table,
                w.HTML("<b>Decide</b>"),
                self.pick,
                self.note,
                w.HBox([self.approve, self.reject, self.cancel]),
                self.decide_status,
                w.HTML("<b>Request</b>"),
                self.site,
                self.cluster,
                self.title,
                w.HBox([self.starts, self.ends]),
                self.reason,
                self.request_btn,
                self.status,
            ]
        )
        self.render()

    def _request(self) -> None:
        res = self.board.request(
            site_id=self.site.value,
            cluster_id=self.cluster.value,
            title=self.title.value,
            starts_at=self.starts.value,
            ends_at=self.ends.value,
            reason=self.reason.value,
        )
        self.status.ok(f"window {res['window_id'][:8]} requested: another approver must approve it")

    def _decide(self, action: str) -> None:
        wid = self.pick.value
        if not wid:
            self.decide_status.warn("choose a window first")
            return
        title = next((r["title"] for r in self.board.rows() if r["id"] == wid), wid[:8])
        res = getattr(self.board, action)(wid, self.note.value)
        self.decide_status.ok(f"window {title!r} is now {res.get('status')}")

    def render(self) -> None:
        rows = self.board.rows()
        self.table.value = html_table(
            rows,
            [
                "window",
                "title",
                "status",
                "scope",
                "starts",
                "ends",
                "requested_by",
                "approved_by",
                "why_not",
            ],
            css="rp-windows",
            empty="no windows",
        )
        set_options(
            self.pick,
            [
                (f"{r['title']} — {r['scope']}, {r['starts']} → {r['ends']} ({r['status']})", r["id"])
                for r in rows
            ],
            placeholder="— choose a window —",
        )
