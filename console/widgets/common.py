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


def html_table(
    rows: Iterable[dict[str, Any]],
    columns: list[str],
    css: str = "",
    empty: str = "nothing to show",
    row_class: Callable[[dict[str, Any]], str] | None = None,
) -> str:
    rows = list(rows)
    if not rows:
        return f'<div class="rp-empty {css}">{html.escape(empty)}</div>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(
            f'<td class="rp-col-{html.escape(c)}">{html.escape("" if r.get(c) is None else str(r.get(c)))}'
            "</td>"
            for c in columns
        )
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


PLACEHOLDER = "— choose —"
NOTHING = "— nothing to choose yet —"  # what an empty selector shows instead of a blank box


def set_options(
    dd: w.Dropdown, options: list[tuple[str, Any]], *, value: Any = None, placeholder: str | None = None
) -> None:
    """Give a Dropdown new options and always a valid selection.

    ipywidgets 8 quirk: a Dropdown whose options are set after creation keeps value, index
    and label None, and the browser shows a blank select. So the selection is set every time:
    ``value`` when it is among the options, else the current value when it still is, else
    the first option. With ``placeholder`` an explicit "choose" entry (value None) leads the
    list and is the default, so nothing is picked silently. Without options and without a
    placeholder the selector says ``NOTHING`` (value None) rather than showing a blank box."""
    opts = list(options)
    if placeholder is not None:
        opts = [(placeholder, None), *opts]
    elif not opts:
        opts = [(NOTHING, None)]
    values = [v for _, v in opts]
    keep = dd.value if dd.value in values else None
    dd.options = opts
    if value is not None and value in values:
        dd.value = value
    elif keep is not None:
        dd.value = keep
    else:
        dd.index = 0


def dropdown(
    options: list[tuple[str, Any]] | None = None,
    *,
    value: Any = None,
    placeholder: str | None = None,
    **kw: Any,
) -> w.Dropdown:
    """A Dropdown created with its options and a valid initial selection (see ``set_options``)."""
    dd = w.Dropdown(**kw)
    set_options(dd, options or [], value=value, placeholder=placeholder)
    return dd


def short_id_html(value: Any) -> str:
    """A UUID shown as a copyable short id: 8 characters, the whole id in the tooltip and
    selected on click."""
    full = html.escape(str(value or ""))
    return f'<code class="rp-id" title="{full}" style="user-select:all">{full[:8]}</code>' if full else ""


def guarded(status: Status, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a click handler: console errors become a red line, never a traceback."""

    def run(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except ConsoleError as exc:
            status.error(exc)
        return None

    return run
