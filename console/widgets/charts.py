"""Charts as inline SVG in an HTML widget: a phase timeline (Gantt), bars and lines.

SVG drawn in the kernel needs no JavaScript extension, renders the same in JupyterLab,
Voilà, nbconvert output and a saved notebook, and redraws cheaply on every Realtime change.
Every chart carries a class (``rp-chart`` plus its kind) and an aria-label, so tests and
screen readers find it; every value is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt_dur(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"


def gantt_svg(
    rows: Sequence[dict[str, Any]],
    colours: dict[str, str],
    labels: dict[str, str] | None = None,
    *,
    width: int = 860,
    row_h: int = 22,
    title: str = "phases per host",
) -> str:
    """rows: [{label, bars: [{phase, start, end}]}]; the time axis spans every bar."""
    labels = labels or {}
    starts = [b["start"] for r in rows for b in r["bars"]]
    ends = [b["end"] for r in rows for b in r["bars"]]
    left, top = 130, 24
    height = top + row_h * max(len(rows), 1) + 34
    out = [
        f'<svg class="rp-chart rp-gantt" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">'
    ]
    if not starts:
        out.append(f'<text x="{left}" y="{top + 14}" fill="#666">no host has started yet</text></svg>')
        return "".join(out)
    t0, t1 = min(starts), max(ends)
    span = max((t1 - t0).total_seconds(), 1.0)
    scale = (width - left - 10) / span
    for i, r in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text x="4" y="{y + 15}" class="rp-gantt-label">{_e(str(r["label"])[:20])}</text>')
        out.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y + row_h - 1}" y2="{y + row_h - 1}" stroke="#eee"/>'
        )
        for b in r["bars"]:
            x = left + (b["start"] - t0).total_seconds() * scale
            wdt = max((b["end"] - b["start"]).total_seconds() * scale, 2.0)
            dur = (b["end"] - b["start"]).total_seconds()
            name = labels.get(b["phase"], b["phase"])
            out.append(
                f'<rect class="rp-bar rp-phase-{_e(b["phase"])}" x="{x:.1f}" y="{y + 3}" width="{wdt:.1f}" '
                f'height="{row_h - 7}" fill="{colours.get(b["phase"], "#888")}" rx="2">'
                f"<title>{_e(r['label'])}: {_e(name)} {_e(_fmt_dur(dur))}</title></rect>"
            )
            if wdt > 60:
                out.append(
                    f'<text x="{x + 3:.1f}" y="{y + 15}" fill="#fff">{_e(name[: int(wdt / 6)])}</text>'
                )
    axis_y = top + row_h * len(rows) + 12
    for k in range(5):
        x = left + k * (width - left - 10) / 4
        out.append(
            f'<text x="{x:.1f}" y="{axis_y}" fill="#555" text-anchor="middle">'
            f"+{_e(_fmt_dur(span * k / 4))}</text>"
        )
    out.append(
        f'<text x="{left}" y="{axis_y + 14}" fill="#555">from '
        f"{_e(t0.astimezone(dt.UTC).strftime('%H:%M:%S'))} UTC</text>"
    )
    seen = []
    for r in rows:
        for b in r["bars"]:
            if b["phase"] not in seen:
                seen.append(b["phase"])
    x = left + 150
    for p in seen:
        out.append(
            f'<rect x="{x}" y="{axis_y + 5}" width="10" height="10" fill="{colours.get(p, "#888")}"/>'
            f'<text x="{x + 13}" y="{axis_y + 14}">{_e(labels.get(p, p))}</text>'
        )
        x += 18 + 6 * len(labels.get(p, p))
    out.append("</svg>")
    return "".join(out)


def bar_svg(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 220,
    stacked: bool = False,
    y_max: float | None = None,
) -> str:
    """Grouped (or stacked) bars: one group per label, one colour per series."""
    n = max(len(labels), 1)
    names = list(series)
    vals = [[float(v or 0) for v in series[s]] for s in names]
    top_v = (
        y_max
        if y_max is not None
        else max(
            [sum(col) for col in zip(*vals, strict=False)]
            if stacked and vals
            else [max(v, default=0) for v in vals] or [0],
            default=0,
        )
    )
    top_v = top_v or 1.0
    left, bottom, top = 48, 40, 22
    ph = height - bottom - top
    gw = (width - left - 10) / n
    out = _frame("bars", title, width, height, left) + _y_grid(left, width, top, ph, top_v, unit)
    for i, lab in enumerate(labels):
        gx = left + i * gw
        base: float = top + ph
        for j, s in enumerate(names):
            v = vals[j][i] if i < len(vals[j]) else 0
            h = v / top_v * ph
            if stacked:
                x, bw = gx + gw * 0.15, gw * 0.7
                y = base - h
                base = y
            else:
                bw = gw * 0.7 / max(len(names), 1)
                x, y = gx + gw * 0.15 + j * bw, top + ph - h
            out.append(
                f'<rect class="rp-bar" x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{_e(lab)} {_e(s)}: {_e(_num(v))}{_e(unit)}'
                "</title></rect>"
            )
        out.append(
            f'<text x="{gx + gw / 2:.1f}" y="{top + ph + 14}" text-anchor="middle">{_e(str(lab)[:14])}</text>'
        )
    return "".join(out + _legend(names, left, height) + ["</svg>"])


def line_svg(
    xs: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 200,
) -> str:
    """Lines over ordered x labels (weeks, days): one colour per series; gaps for None."""
    names = list(series)
    allv = [float(v) for s in names for v in series[s] if v is not None]
    top_v = max(allv, default=0) or 1.0
    left, bottom, top = 48, 40, 22
    ph, pw = height - bottom - top, width - left - 10
    n = max(len(xs) - 1, 1)
    out = _frame("lines", title, width, height, left) + _y_grid(left, width, top, ph, top_v, unit)
    for j, s in enumerate(names):
        pts = [
            (left + i * pw / n, top + ph - float(v) / top_v * ph)
            for i, v in enumerate(series[s])
            if v is not None
        ]
        if not pts:
            continue
        colour = PALETTE[j % len(PALETTE)]
        out.append(
            f'<polyline class="rp-line" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>'
        )
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
    step = max(1, len(xs) // 8)
    for i in range(0, len(xs), step):
        out.append(
            f'<text x="{left + i * pw / n:.1f}" y="{top + ph + 14}" text-anchor="middle">'
            f"{_e(str(xs[i])[:10])}</text>"
        )
    return "".join(out + _legend(names, left, height) + ["</svg>"])


def _frame(kind: str, title: str, width: int, height: int, left: int) -> list[str]:
    """The opening of a bar or line chart: its svg element, labelled, and its title."""
    return [
        f'<svg class="rp-chart rp-{kind}" width="{width}" height="{height}" role="img" aria-label="{_e(title)}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="14" font-weight="bold">{_e(title)}</text>',
    ]


def _y_grid(left: int, width: int, top: int, ph: float, top_v: float, unit: str) -> list[str]:
    """Five horizontal grid lines from 0 to ``top_v``, each with its value."""
    out = []
    for k in range(5):
        y = top + ph - k * ph / 4
        out.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{_e(_num(top_v * k / 4))}{_e(unit)}</text>"
        )
    return out


def _legend(names: Sequence[str], left: int, height: int) -> list[str]:
    """One colour swatch and name per series, along the bottom."""
    out = []
    x = left
    for j, s in enumerate(names):
        out.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
            f'<text x="{x + 13}" y="{height - 5}">{_e(s)}</text>'
        )
        x += 24 + 6 * len(s)
    return out


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2f}".rstrip("0").rstrip(".")
