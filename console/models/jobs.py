"""The job list and the live job detail (step timeline), updated from Realtime changes.

Both models take Realtime ``postgres_changes`` payloads as supabase-py delivers them
(``{"data": {"table", "type", "record", "old_record", ...}}``) through ``apply``; ``live``
feeds them. A change is applied to the rows in memory, so a view redraws without a REST
round trip; ``refresh`` re-reads everything (after a reconnect, say).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from console.api import Api, JobAction, Row
from console.errors import ConsoleError, ValidationFailed
from console.models.common import Observable, duration_s, parse_ts, short_id, short_ts

TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("pending", "running", "paused")
STATUS_ICON = {
    "pending": "⏳",
    "running": "▶",
    "paused": "⏸",
    "completed": "✔",
    "failed": "✖",
    "cancelled": "⊘",
    "skipped": "↷",
}


def change_parts(change: dict[str, Any]) -> tuple[str, str, Row, Row]:
    """(table, type, record, old_record) of a Realtime postgres_changes payload."""
    data = change.get("data", change)
    kind = data.get("type", data.get("eventType", ""))
    kind = getattr(kind, "value", kind)  # realtime-py hands an enum; tests and replays may use plain strings
    return (
        str(data.get("table", "")),
        str(kind).upper(),
        data.get("record") or {},
        data.get("old_record") or {},
    )


@dataclass
class Notice:
    """A job event worth telling the operator about (completion, failure, a pause)."""

    job_id: str
    job_type: str
    status: str
    message: str
    level: str  # success | error | warning | info
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def notice_for(record: Row, old: Row) -> Notice | None:
    new_status, old_status = record.get("status"), old.get("status")
    if not new_status or new_status == old_status:
        return None
    jid, jt = str(record.get("id")), str(record.get("type", "job"))
    name = f"{jt} {short_id(jid)}"
    if new_status == "completed":
        return Notice(jid, jt, new_status, f"{name} completed successfully", "success")
    if new_status == "failed":
        return Notice(
            jid, jt, new_status, f"{name} failed: {record.get('error') or 'no error text'}", "error"
        )
    if new_status == "cancelled":
        return Notice(jid, jt, new_status, f"{name} was cancelled", "warning")
    if new_status == "paused":
        reason = record.get("pause_reason") or "unknown"
        hint = {
            "blockers": "open the blocker wizard to decide",
            "executor_lost": "an admin may force-resume it",
            "operator": "resume it when ready",
            "window_closed": "it resumes in the next window",
        }.get(reason, "")
        return Notice(
            jid, jt, new_status, f"{name} paused ({reason}){': ' + hint if hint else ''}", "warning"
        )
    if new_status == "running" and old_status == "pending":
        return Notice(jid, jt, new_status, f"{name} started", "info")
    return None


class JobBoard(Observable):
    """The newest jobs the user may see, with bulk actions and notifications."""

    def __init__(self, api: Api, *, limit: int = 50, statuses: list[str] | None = None) -> None:
        super().__init__()
        self.api = api
        self.limit = limit
        self.statuses = statuses
        self.jobs: dict[str, Row] = {}
        self.notices: list[Notice] = []

    def refresh(self) -> None:
        rows = self.api.jobs(limit=self.limit, statuses=self.statuses)
        self.jobs = {r["id"]: r for r in rows}
        self.changed()

    def apply(self, change: dict[str, Any]) -> bool:
        table, kind, record, old = change_parts(change)
        if table != "jobs":
            return False
        if kind == "DELETE":
            gone = old.get("id")
            if gone in self.jobs:
                del self.jobs[gone]
                self.changed()
                return True
            return False
        jid = record.get("id")
        if not jid:
            return False
        if self.statuses and record.get("status") not in self.statuses:
            self.jobs.pop(jid, None)
        else:
            self.jobs[jid] = {**self.jobs.get(jid, {}), **record}
            self._trim()
        n = notice_for(record, old if kind == "UPDATE" else {})
        if n is not None:
            self.notices.append(n)
        self.changed()
        return True

    def _trim(self) -> None:
        if len(self.jobs) > self.limit:
            for r in self.rows()[self.limit :]:
                self.jobs.pop(r["id"], None)

    def rows(self) -> list[Row]:
        return sorted(
            self.jobs.values(),
            key=lambda r: (
                parse_ts(r.get("created_at")) or dt.datetime.min.replace(tzinfo=dt.UTC),
                r.get("id", ""),
            ),
            reverse=True,
        )

    def table(self) -> list[dict[str, str]]:
        """Display rows: what the job list widget shows, in order."""
        out = []
        for r in self.rows():
            status = str(r.get("status", ""))
            if r.get("pause_reason"):
                status += f" ({r['pause_reason']})"
            targets = (r.get("scope") or {}).get("targets") or []
            out.append(
                {
                    "id": str(r.get("id")),
                    "job": short_id(r.get("id")),
                    "type": str(r.get("type", "")),
                    "status": status,
                    "targets": ", ".join(t.get("name") or short_id(t.get("id")) for t in targets[:4])
                    + (f" +{len(targets) - 4}" if len(targets) > 4 else ""),
                    "created": short_ts(r.get("created_at")),
                    "description": str(r.get("description") or ""),
                }
            )
        return out

    def bulk(
        self, action: JobAction, job_ids: list[str], *, reason: str | None = None
    ) -> list[tuple[str, bool, str]]:
        """Apply one action to many jobs (bulk resume after a window, say); each job's
        outcome is reported on its own, and one refusal does not stop the others."""
        if not job_ids:
            raise ValidationFailed("select at least one job", ["no jobs selected"])
        out: list[tuple[str, bool, str]] = []
        for jid in job_ids:
            try:
                res = self.api.job_control(action, jid, reason=reason)
                out.append(
                    (
                        jid,
                        True,
                        f"{action}: now {res.get('status')}"
                        + (" (requested)" if res.get("requested") else ""),
                    )
                )
            except ConsoleError as exc:
                out.append((jid, False, str(exc)))
        return out


class JobDetail(Observable):
    """One job: its row, tasks, step timeline and blockers, live."""

    def __init__(self, api: Api, job_id: str) -> None:
        super().__init__()
        self.api = api
        self.job_id = job_id
        self.job: Row = {}
        self.tasks: dict[str, Row] = {}
        self.steps: dict[str, Row] = {}
        self.blockers: dict[str, Row] = {}
        self.notices: list[Notice] = []

    def refresh(self) -> None:
        """Job, tasks, steps and blockers in one request (resource embedding)."""
        row = dict(self.api.job_full(self.job_id))
        self.tasks = {r["id"]: r for r in row.pop("job_tasks", None) or []}
        self.steps = {r["id"]: r for r in row.pop("workflow_executions", None) or []}
        self.blockers = {r["id"]: r for r in row.pop("job_blockers", None) or []}
        self.job = row
        self.changed()

    def apply(self, change: dict[str, Any]) -> bool:
        table, kind, record, old = change_parts(change)
        rec = record or old
        if table == "jobs":
            if rec.get("id") != self.job_id:
                return False
            if kind != "DELETE":
                n = notice_for(record, old if kind == "UPDATE" else {})
                self.job = {**self.job, **record}
                if n is not None:
                    self.notices.append(n)
        else:
            target = {
                "workflow_executions": self.steps,
                "job_tasks": self.tasks,
                "job_blockers": self.blockers,
            }.get(table)
            if target is None:
                return False
            if kind == "DELETE":
                # a DELETE on an RLS table carries only the primary key in old_record (as on
                # Supabase): the row is ours if its id is one we hold
                if rec.get("id") not in target:
                    return False
                del target[rec["id"]]
            else:
                if rec.get("job_id") != self.job_id:
                    return False
                target[record["id"]] = {**target.get(record["id"], {}), **record}
        self.changed()
        return True

    @property
    def status(self) -> str:
        return str(self.job.get("status", ""))

    def timeline(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Steps in order with an icon, duration and error: the live step timeline."""
        now = now or dt.datetime.now(dt.UTC)
        out = []
        for s in sorted(self.steps.values(), key=lambda r: (r.get("seq", 0), r.get("step_key", ""))):
            st = str(s.get("status", ""))
            out.append(
                {
                    "seq": s.get("seq"),
                    "step": s.get("name") or s.get("step_key"),
                    "key": s.get("step_key"),
                    "status": st,
                    "icon": STATUS_ICON.get(st, "·"),
                    "duration_s": duration_s(
                        s.get("started_at"), s.get("finished_at"), now if st == "running" else None
                    ),
                    "error": s.get("error") or "",
                    "attempts": s.get("attempts", 0),
                }
            )
        return out

    def progress(self) -> tuple[int, int]:
        """(finished steps, all steps)."""
        done = sum(1 for s in self.steps.values() if s.get("status") in ("completed", "skipped", "failed"))
        return done, len(self.steps)

    def open_blockers(self) -> list[Row]:
        return [b for b in self.blockers.values() if b.get("status") == "open"]

    def actions(self) -> list[str]:
        """The job-control actions that make sense for the job's current state."""
        st, reason = self.status, self.job.get("pause_reason")
        if st == "pending":
            return ["cancel"]
        if st == "running":
            return ["pause", "cancel"]
        if st == "paused":
            acts = ["cancel"]
            if reason == "executor_lost":
                acts.append("force_resume")
            elif reason != "blockers" or not self.open_blockers():
                acts.append("resume")
            return acts
        if st == "failed":
            return ["retry"]
        return []
