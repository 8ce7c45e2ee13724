"""When a host was in maintenance, as a rolling update records it on the host's task.

One declaration for the writer (``executor/handlers/rolling_update.py``) and the readers (the
console's "time in maintenance per host" chart, ``console/models/reports.py``): the task's
``details.maintenance_at`` holds

* ``entered``: when the job asked vCenter to put the host into maintenance (from then on the
  host takes no VMs and its VMs are evacuated: it is out of service);
* ``exited``: when vCenter confirmed the host out of maintenance again (after the update, or
  when a failed host was brought back); absent while the host is still in maintenance.

Both are UTC ISO 8601 strings. A host entering maintenance again in the same job (a resume
after an interruption) keeps its first ``entered``: the host never left service in between.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

KEY = "maintenance_at"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def stamp_entered(details: dict[str, Any], at: str | None = None) -> None:
    """Record that the host is being put into maintenance (unless it already was, and has
    not left since)."""
    rec = details.get(KEY)
    if isinstance(rec, dict) and rec.get("entered") and not rec.get("exited"):
        return
    details[KEY] = {"entered": at or _now()}


def stamp_exited(details: dict[str, Any], at: str | None = None) -> None:
    """Record that vCenter reported the host out of maintenance (only after an entry)."""
    rec = details.get(KEY)
    if isinstance(rec, dict) and rec.get("entered") and not rec.get("exited"):
        details[KEY] = {**rec, "exited": at or _now()}


def _ts(v: Any) -> dt.datetime | None:
    if not isinstance(v, str):
        return None
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def maintenance_span(details: Any) -> tuple[dt.datetime, dt.datetime | None] | None:
    """(entered, exited or None while still in maintenance) from a host task's details, or
    None when the task records no entry into maintenance."""
    rec = details.get(KEY) if isinstance(details, dict) else None
    if not isinstance(rec, dict):
        return None
    entered = _ts(rec.get("entered"))
    if entered is None:
        return None
    exited = _ts(rec.get("exited"))
    return entered, (exited if exited is not None and exited >= entered else None)
