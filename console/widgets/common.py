"""Drawing helpers shared by the views: HTML tables, status messages, error display."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as w

from console.errors import ConsoleError, ValidationFailed

STYLE = """<style>
.rp-table{border-collapse:collapse;font-family:monospace;font-size:12px}
.rp-table th,.rp-table td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.rp-table th{background:#f2f2f2}
.rp-ok{color:#176317}.rp-warn{color:#8a5a00}.rp-block,.rp-error{color:#b00020}.rp-info{color:#1f4e8c}
</style>"""


def html_table(rows: Iterable[dict[str, Any]], columns: list[str], css: str = "",
               empty: str = "nothing to show", row_class: Callable[[dict[str, Any]], str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return f'<div class="rp-empty {css}">{html.escape(empty)}</div>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(f'<td class="rp-col-{html.escape(c)}">{html.escape("" if r.get(c) is None else str(r.get(c)))}'
                        "</td>" for c in columns)
        body.append(f'<tr class="rp-row {cls}" data-id="{html.escape(str(r.get("id", "")))}">{cells}</tr>')
    return f'{STYLE}<table class="rp-table {css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class Status(w.HTML):
    """One line of feedback under a form: success, warning or the control plane's refusal."""

    def ok(self, text: str) -> None:
        self.value = f'<span class="rp-ok">✔ {html.escape(text)}</span>{STYLE}'

    def warn(self, text: str) -> None:
        self.value = f'<span class="rp-warn">⚠ {html.escape(text)}</span>{STYLE}'

    def error(self, exc: BaseException | str) -> None:
        if isinstance(exc, ValidationFailed) and exc.problems:
            items = "".join(f"<li>{html.escape(p)}</li>" for p in exc.problems)
            self.value = f'<div class="rp-error">✖ not sent:<ul>{items}</ul></div>{STYLE}'
            return
        text = str(exc)
        if isinstance(exc, ConsoleError) and exc.code not in ("error", ""):
            text += f" [{exc.code}]"
        self.value = f'<span class="rp-error">✖ {html.escape(text)}</span>{STYLE}'

    def clear(self) -> None:
        self.value = ""


def guarded(status: Status, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a click handler: console errors become a red line, never a traceback."""
    def run(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except ConsoleError as exc:
            status.error(exc)
        return None
    return run
