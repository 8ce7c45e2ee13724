"""Small helpers shared by the models: change notification and row formatting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any


class Observable:
    """Views register ``on_change`` callbacks; models call ``changed()`` after each update."""

    def __init__(self) -> None:
        self._observers: list[Callable[[], Any]] = []

    def on_change(self, fn: Callable[[], Any]) -> None:
        self._observers.append(fn)

    def changed(self) -> None:
        for fn in list(self._observers):
            fn()


def parse_ts(value: Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    s = str(value).replace("Z", "+00:00")
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def short_ts(value: Any) -> str:
    d = parse_ts(value)
    return d.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if d else ""


def duration_s(start: Any, end: Any, now: dt.datetime | None = None) -> float | None:
    a = parse_ts(start)
    if a is None:
        return None
    b = parse_ts(end) or now
    return None if b is None else round((b - a).total_seconds(), 1)


def short_id(value: Any) -> str:
    return str(value or "")[:8]
