"""Replication view: pairs with lag, last success and bytes; the lag of one pair over time;
"sync now" (and its dry run)."""

from __future__ import annotations

import ipywidgets as w

from console.models.replication import ReplicationModel, fmt_lag, pair_rows
from console.widgets.charts import line_svg
from console.widgets.common import STYLE, Status, guarded, html_table

# the plot's unit follows the largest value shown: (threshold s, divisor, unit)
_UNITS = ((2 * 86400, 86400, " d"), (2 * 3600, 3600, " h"), (120, 60, " min"), (0, 1, " s"))


def lag_svg(series: dict, max_lag_seconds: int | None = None, *, width: int = 640, height: int = 200) -> str:
    """The lag after each sync over time, with the pair's allowed lag as a second line, drawn
    by the console's chart module (console/widgets/charts.py: inline SVG, escaped, labelled)."""
    ys = series.get("lag_s") or []
    if not ys:
        return "<i>no successful sync yet</i>"
    top = max([*ys, max_lag_seconds or 0])
    _, div, unit = next(u for u in _UNITS if top >= u[0])
    lines: dict[str, list[float | None]] = {"lag": [y / div for y in ys]}
    if max_lag_seconds:
        lines["allowed lag"] = [max_lag_seconds / div] * len(ys)
    # the chart's x labels are 10 characters at most: month-day and hour ("12-06 14h")
    xs = [
        f"{str(x)[5:10]} {str(x)[11:13]}h" if len(str(x)) >= 13 else str(x)
        for x in series.get("x") or [""] * len(ys)
    ]
    svg = line_svg(
        xs,
        lines,
        title=f"lag after each sync (now at most {fmt_lag(int(max(ys)))})",
        unit=unit,
        width=width,
        height=height,
    )
    return svg.replace('class="rp-chart rp-lines"', 'class="rp-chart rp-lines rp-lag-plot"', 1)


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
        super().__init__(
            [w.HBox([self.refresh, self.pair, self.sync, self.dry]), self.table, self.plot, self.status]
        )

    def load(self) -> None:
        rows = self.model.pairs(self.site_id)
        shown = pair_rows(rows)
        self.table.value = STYLE + html_table(
            shown, list(shown[0]) if shown else [], css="rp-replication", empty="no replication pairs"
        )
        self.rows = {str(r["id"]): r for r in rows}
        self.pair.options = [("-", "")] + [(r["name"], str(r["id"])) for r in rows]
        self.pair.index = 1 if rows else 0

    def _plot(self) -> None:
        if not self.pair.value:
            self.plot.value = ""
            return
        allowed = (getattr(self, "rows", {}).get(self.pair.value) or {}).get("max_lag_seconds")
        self.plot.value = lag_svg(self.model.lag_series(self.pair.value), allowed)

    def _sync(self, dry_run: bool) -> None:
        if not self.pair.value:
            self.status.error("choose a pair first")
            return
        res = self.model.sync_now(self.pair.value, dry_run=dry_run)
        self.status.ok(
            f"dry run planned: {res.get('plan')}" if dry_run else f"job {res.get('job_id')} created"
        )
