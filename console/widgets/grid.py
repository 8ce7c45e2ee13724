"""A real data grid for the console's big tables (ipydatagrid): every column sorts and filters
from its header menu, columns resize, and thousands of rows scroll without drawing thousands
of HTML rows. The console's own search box narrows the rows across every column.

ipydatagrid draws on a canvas, so tests check the rows on the Python side (``RowsGrid.rows``)
and the grid's container class in the browser (``rp-grid`` plus the table's class)."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from console.widgets.common import html_table

ROW_PX = 24  # height of one grid row (px)
MAX_VISIBLE_ROWS = 16  # the grid grows to this many rows, then scrolls
CHAR_PX = 8  # width of one character of the grid's font (px)


def search_rows(rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """The rows any of whose values contains ``query`` (case-insensitive); all when empty."""
    q = query.strip().lower()
    return [r for r in rows if any(q in str(v).lower() for v in r.values())] if q else list(rows)


class RowsGrid(w.VBox):
    """Rows of dicts in an ipydatagrid DataGrid with the given columns; an empty list shows
    ``empty`` in words instead of an empty grid. ``highlight`` maps a column to the values
    whose cells are drawn on a warning background (None: any non-empty value)."""

    def __init__(
        self,
        columns: list[str],
        *,
        css: str,
        empty: str = "nothing to show",
        highlight: dict[str, list[str] | None] | None = None,
    ) -> None:
        self.columns = columns
        self.css = css
        self.empty = empty
        self.highlight = highlight or {}
        self.rows: list[dict[str, Any]] = []
        self.grid: Any = None
        self.note = w.HTML()
        super().__init__([])
        self.add_class("rp-grid-box")

    def _frame(self, rows: list[dict[str, Any]]):
        import pandas as pd

        return pd.DataFrame(
            [{c: ("" if r.get(c) is None else r.get(c)) for c in self.columns} for r in rows],
            columns=self.columns,
        )

    def _renderers(self) -> dict[str, Any]:
        from ipydatagrid import TextRenderer, VegaExpr

        out = {}
        for col, values in self.highlight.items():
            if col not in self.columns:
                continue
            cond = (
                "cell.value != ''" if values is None else " || ".join(f"cell.value == {v!r}" for v in values)
            )
            out[col] = TextRenderer(background_color=VegaExpr(f"({cond}) ? '#fde7c4' : 'white'"))
        return out

    def _widths(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        """Each column as wide as its longest value or its header (names are never cut off),
        within CHAR_PX * 48."""
        out = {}
        for c in self.columns:
            longest = max([len(c), *(len(str(r.get(c) or "")) for r in rows)])
            out[c] = min(longest, 48) * CHAR_PX + 28  # + room for the header's filter button
        return out

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows = list(rows)
        if not self.rows:
            self.note.value = html_table([], self.columns, css=self.css, empty=self.empty)
            self.children = [self.note]
            return
        from ipydatagrid import DataGrid

        df = self._frame(self.rows)
        height = f"{ROW_PX * (min(len(self.rows), MAX_VISIBLE_ROWS) + 1) + 8}px"
        widths = self._widths(self.rows)
        if self.grid is None:
            self.grid = DataGrid(
                df,
                base_row_size=ROW_PX,
                base_column_size=110,
                column_widths=widths,
                selection_mode="cell",
                header_visibility="column",
                renderers=self._renderers(),
                layout=w.Layout(height=height, width="100%"),
            )
            self.grid.add_class("rp-grid")
            self.grid.add_class(self.css)
        else:
            self.grid.data = df
            self.grid.column_widths = widths
            self.grid.layout.height = height
        self.children = [self.grid]
