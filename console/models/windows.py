"""Maintenance windows: request one, and approve or reject with four eyes.

The four-eyes rule lives in the control plane (function and database); the console makes
it visible: each window says who may decide it and, for the signed-in user, why not.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from console.api import Api, Row
from console.errors import ValidationFailed
from console.models.common import Observable, parse_ts, short_id, short_ts
from console.models.names import Names
from console.session import Session

MAX_WINDOW = dt.timedelta(days=7)
APPROVER_ROLES = ("approver", "admin")


class WindowBoard(Observable):
    def __init__(self, api: Api, session: Session, names: Names | None = None) -> None:
        super().__init__()
        self.api = api
        self.session = session
        self.names = names
        self.windows: list[Row] = []
        self.site_id: str | None = None

    def load(self, site_id: str | None = None, statuses: list[str] | None = None) -> list[Row]:
        self.site_id = site_id
        self.windows = self.api.windows(site_id=site_id, statuses=statuses)
        if self.names is not None:
            self.names.load_users(
                [x for w in self.windows for x in (w.get("requested_by"), w.get("approved_by"))]
            )
            self.names.load("cluster", [w.get("cluster_id") for w in self.windows])
            self.names.load("site", [w.get("site_id") for w in self.windows])
        self.changed()
        return self.windows

    def decide_hint(self, w: Row) -> str | None:
        """Why the signed-in user cannot approve/reject ``w`` (None = they can)."""
        if w.get("status") != "requested":
            return f"already {w.get('status')}"
        if self.session.role not in APPROVER_ROLES:
            return f"approvers decide windows; your role is {self.session.role or 'none'}"
        if w.get("requested_by") == self.session.user_id:
            return "you requested this window: another approver must decide it (four eyes)"
        return None

    def rows(self) -> list[dict[str, Any]]:
        me = self.session.user_id
        nm = self.names
        out = []
        for w in self.windows:
            hint = self.decide_hint(w)
            site = nm.name("site", w.get("site_id")) if nm and w.get("site_id") else "site"
            if w.get("cluster_id"):
                scope = f"cluster {nm.name('cluster', w['cluster_id']) if nm else short_id(w['cluster_id'])}"
            else:
                scope = f"all of {site}" if nm else "whole site"
            out.append(
                {
                    "id": w["id"],
                    "window": short_id(w["id"]),
                    "title": w.get("title", ""),
                    "status": w.get("status"),
                    "starts": short_ts(w.get("starts_at")),
                    "ends": short_ts(w.get("ends_at")),
                    "scope": scope,
                    "requested_by": self._who(w.get("requested_by"), me),
                    "approved_by": self._who(w.get("approved_by"), me),
                    "can_decide": hint is None,
                    "why_not": hint or "",
                }
            )
        return out

    def _who(self, uid: Any, me: Any) -> str:
        if not uid:
            return ""
        if uid == me:
            return "you"
        return self.names.user(uid) if self.names is not None else short_id(uid)

    @staticmethod
    def check_request(
        title: str, starts_at: Any, ends_at: Any, now: dt.datetime | None = None
    ) -> tuple[str, str]:
        """Validated (starts, ends) ISO strings; raises ValidationFailed listing every problem."""
        now = now or dt.datetime.now(dt.UTC)
        problems = []
        if not (title or "").strip():
            problems.append("title: give the window a title")
        elif len(title) > 200:
            problems.append("title: at most 200 characters")
        s, e = parse_ts(starts_at), parse_ts(ends_at)
        if s is None:
            problems.append("starts_at: an ISO 8601 time such as 2026-12-01T22:00:00Z")
        if e is None:
            problems.append("ends_at: an ISO 8601 time such as 2026-12-02T02:00:00Z")
        if s and e:
            if e <= s:
                problems.append("ends_at must be after starts_at")
            elif e - s > MAX_WINDOW:
                problems.append("a window lasts at most 7 days")
            if s <= now:
                problems.append("starts_at must be in the future")
        if problems:
            raise ValidationFailed("the window request is not valid: " + "; ".join(problems), problems)
        assert s and e
        return s.isoformat(), e.isoformat()

    def request(
        self,
        *,
        site_id: str,
        title: str,
        starts_at: Any,
        ends_at: Any,
        cluster_id: str | None = None,
        reason: str = "",
    ) -> Row:
        if not site_id:
            raise ValidationFailed("choose a site", ["site_id: required"])
        s, e = self.check_request(title, starts_at, ends_at)
        res = self.api.create_window(
            site_id=site_id,
            title=title.strip(),
            starts_at=s,
            ends_at=e,
            cluster_id=cluster_id or None,
            reason=reason,
        )
        self.load(self.site_id)
        return res

    def approve(self, window_id: str, note: str = "") -> Row:
        return self._decide("approve", window_id, note)

    def reject(self, window_id: str, note: str) -> Row:
        if not (note or "").strip():
            raise ValidationFailed("say why the window is rejected", ["note: required for a rejection"])
        return self._decide("reject", window_id, note)

    def cancel(self, window_id: str, note: str = "") -> Row:
        return self._decide("cancel", window_id, note)

    def _decide(self, action: str, window_id: str, note: str) -> Row:
        res = self.api.decide_window(action, window_id, note)  # type: ignore[arg-type]
        self.load(self.site_id)
        return res
