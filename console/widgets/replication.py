"""Replication view: pairs with lag, last success and bytes; the lag of one pair over time;
"sync now" (and its dry run)."""

from __future__ import annotations

import html

import ipywidgets as w

from console.models.replication import ReplicationModel, fmt_lag, when
from console.widgets.common import STYLE, Status, guarded, html_table


def lag_svg(series: dict, width: int = 520, height: int = 120) -> str:
    """An SVG line of lag (s) after each sync: no plotting library needed in the kernel."""
    ys = series.get("lag_s") or []
    if not ys:
        return "<i>no successful sync yet</i>"
    top = max(max(ys), 1)
    n = len(ys)
    pts = " ".join(f"{(i / max(n - 1, 1)) * (width - 10) + 5:.1f},{height - 5 - (y / top) * (height - 10):.1f}"
                   for i, y in enumerate(ys))
    return (f'<svg class="rp-lag-plot" width="{width}" height="{height}" role="img" '
            f'aria-label="lag over time"><polyline fill="none" stroke="#c0392b" stroke-width="2" points="{pts}"/>'
            f'<text x="5" y="12" font-size="10">max {html.escape(fmt_lag(int(top)))}</text></svg>')


class ReplicationView(w.VBox):
    def __init__(self, model: ReplicationModel, site_id: str | None = None) -> None:
        self.model = model
        self.site_id = site_id
        self.status = Status()
        self.table = w.HTML()
        self.plot = w.HTML()
        self.pair = w.Dropdown(description="pair", options=[("-", "")], value="")
        self.refresh = w.Button(description="Refresh")
        self.sync = w.Button(description="Sync now", button_style="primary")
        self.dry = w.Button(description="Dry run")
        self.refresh.on_click(guarded(self.status, lambda _: self.load()))
        self.sync.on_click(guarded(self.status, lambda _: self._sync(False)))
        self.dry.on_click(guarded(self.status, lambda _: self._sync(True)))
        self.pair.observe(lambda ch: self._plot(), names="value")
        super().__init__([w.HBox([self.refresh, self.pair, self.sync, self.dry]), self.table, self.plot,
                          self.status])

    def load(self) -> None:
        rows = self.model.pairs(self.site_id)
        shown = [{"pair": r["name"], "source": f"{r['source_host']}:{r['source_dataset']}",
                  "replica": f"{r['target_host']}:{r['target_dataset']}",
                  "lag": fmt_lag(r["current_lag_seconds"]) + (" (behind policy)" if r["lagging"] else ""),
                  "allowed lag": fmt_lag(r.get("max_lag_seconds")), "last success": when(r.get("last_success_at")),
                  "last bytes": r.get("last_bytes") if r.get("last_bytes") is not None else "-",
                  "last status": r.get("last_status") or "-", "schedule": r.get("schedule")} for r in rows]
        self.table.value = STYLE + html_table(shown, list(shown[0]) if shown else [], css="rp-replication",
                                              empty="no replication pairs")
        self.pair.options = [("-", "")] + [(r["name"], str(r["id"])) for r in rows]
        self.pair.index = 1 if rows else 0

    def _plot(self) -> None:
        self.plot.value = lag_svg(self.model.lag_series(self.pair.value)) if self.pair.value else ""

    def _sync(self, dry_run: bool) -> None:
        if not self.pair.value:
            self.status.error("choose a pair first")
            return
        res = self.model.sync_now(self.pair.value, dry_run=dry_run)
        self.status.ok(f"dry run planned: {res.get('plan')}" if dry_run else f"job {res.get('job_id')} created")
