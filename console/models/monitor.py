"""The live job monitor: per-host phases as a growing timeline, a progress figure per host
and for the job, a log with timestamps, errors in words, and the actions the role allows.

It is a ``JobDetail`` (job, tasks, steps and blockers, loaded in one embedded request and
kept current from Realtime changes) that also remembers each host's phase changes: the
executor writes a host's current phase into its task (``details.phase``, one of
``HostPhase`` in executor/handlers/rolling_update.py: backup, stage, maintenance, apply,
wait_host, exit_maintenance, done|failed, ...), and every change arrives as
a task UPDATE, so the monitor records when each phase began. Phases that happened before
the monitor was opened are known only by their task's start and end: those hosts show one
bar for the time so far (the log says so).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from console.api import Api, Row
from console.models.common import parse_ts, short_id
from console.models.jobs import JobDetail, change_parts
from console.models.names import Names
from console.roles import ROLES

# the executor's phase keys (executor/handlers/rolling_update.py HostPhase) in order, with
# their words (tests/unit/test_rolling_update_units.py holds the two together)
PHASES: dict[str, str] = {
    "queued": "waiting for its turn",
    "vsan_wait": "wait for vSAN resync",
    "backup": "SCP backup",
    "backed_up": "backed up, waiting for its turn",
    "stage": "stage firmware",
    "staged": "staged, waiting for its turn",
    "rescan": "rescan VMs",
    "maintenance": "enter maintenance, evacuate",
    "apply": "apply firmware, reboot",
    "settle": "wait for the iDRAC to settle",
    "wait_host": "boot, verify",
    "exit_maintenance": "exit maintenance",
    "done": "done",
    "failed": "failed",
    "skipped": "skipped",
    "cancelled": "cancelled",
}
PHASE_COLOURS = {
    "queued": "#bbbbbb",
    "vsan_wait": "#bbbbbb",
    "backup": "#6c8ebf",
    "backed_up": "#a9c4eb",
    "stage": "#82b366",
    "staged": "#b9e0a5",
    "rescan": "#82b366",
    "maintenance": "#d6b656",
    "apply": "#b85450",
    "settle": "#b85450",
    "wait_host": "#9673a6",
    "exit_maintenance": "#d79b00",
    "done": "#2e7d32",
    "failed": "#b00020",
    "pending": "#bbbbbb",
    "skipped": "#999999",
    "cancelled": "#777777",
    "running": "#1f4e8c",
    "completed": "#2e7d32",
}
ACTION_ROLES = {
    "pause": "operator",
    "resume": "operator",
    "cancel": "operator",
    "retry": "operator",
    "force_resume": "admin",
}


@dataclass
class Segment:
    phase: str
    start: dt.datetime
    end: dt.datetime | None = None


@dataclass
class LogLine:
    at: dt.datetime
    level: str  # info | ok | warn | error
    text: str


@dataclass
class HostTrack:
    segments: list[Segment] = field(default_factory=list)
    phase: str = ""


def may(role: str | None, action: str) -> bool:
    need = ACTION_ROLES.get(action, "admin")
    return role in ROLES and ROLES.index(role) >= ROLES.index(need)


def task_reason(t: Row) -> str:
    """Why a task is where it is, in words: a skip's reason, a failure's error, the updates
    it will apply."""
    d = t.get("details") or {}
    st = t.get("status")
    if st == "skipped":
        return str(d.get("reason") or "skipped (no reason recorded)")
    if st == "failed":
        return str(t.get("error") or "failed (no error recorded)")
    if st == "cancelled":
        return str(d.get("reason") or "cancelled")
    if st == "pending" and d.get("updates"):
        return "will apply: " + ", ".join(map(str, d["updates"]))
    if st == "completed" and d.get("versions"):
        v = d["versions"]
        if isinstance(v, dict):
            return "now: " + ", ".join(f"{k} {x}" for k, x in list(v.items())[:6])
    return ""


class JobMonitor(JobDetail):
    def __init__(self, api: Api, job_id: str, *, names: Names | None = None) -> None:
        super().__init__(api, job_id)
        self.names = names
        self.tracks: dict[str, HostTrack] = {}
        self.log: list[LogLine] = []
        self.live_updates = 0

    # -- loading ---------------------------------------------------------------------------
    def refresh(self) -> None:
        super().refresh()  # one embedded request; calls changed() at its end
        now = dt.datetime.now(dt.UTC)
        self.tracks = {}
        for t in self.tasks.values():
            self._seed(t, now)
        if not self.log:
            self._log("info", f"monitor opened: {self.title()} is {self.status_text()}")
        self.changed()

    def _seed(self, t: Row, now: dt.datetime) -> None:
        tr = self.tracks.setdefault(t["id"], HostTrack())
        phase = self._phase_of(t)
        start = parse_ts(t.get("started_at"))
        if start is None:
            tr.phase = phase
            return
        end = parse_ts(t.get("finished_at"))
        tr.segments = [Segment(phase, start, end if end else None)]
        tr.phase = phase

    @staticmethod
    def _phase_of(t: Row) -> str:
        st = str(t.get("status") or "pending")
        if st in ("completed", "failed", "skipped", "cancelled", "pending"):
            return {"completed": "done"}.get(st, st)
        return str((t.get("details") or {}).get("phase") or "running")

    # -- live --------------------------------------------------------------------------------
    def apply(self, change: dict[str, Any]) -> bool:
        table, kind, record, old = change_parts(change)
        before = (
            dict(self.tasks.get(record.get("id") or old.get("id") or "", {}))
            if table == "job_tasks"
            else None
        )
        step_before = (
            dict(self.steps.get(record.get("id") or "", {})) if table == "workflow_executions" else None
        )
        job_before = dict(self.job) if table == "jobs" else None
        if not super().apply(change):
            return False
        self.live_updates += 1
        at = parse_ts(record.get("updated_at")) or dt.datetime.now(dt.UTC)
        if table == "job_tasks" and kind != "DELETE":
            self._task_changed(before or {}, self.tasks[record["id"]], at)
        elif table == "workflow_executions" and kind != "DELETE":
            self._step_changed(step_before or {}, self.steps[record["id"]], at)
        elif table == "jobs" and job_before is not None:
            self._job_changed(job_before, at)
        elif table == "job_blockers" and kind == "INSERT":
            self._log("warn", f"blocker: {record.get('description') or record.get('kind')}", at)
        self.changed()
        return True

    def _step_changed(self, before: Row, s: Row, at: dt.datetime) -> None:
        if before.get("status") != s.get("status"):
            name = s.get("name") or s.get("step_key")
            level = {"failed": "error", "completed": "ok"}.get(str(s.get("status")), "info")
            self._log(
                level,
                f"step {name}: {s.get('status')}" + (f" — {s['error']}" if s.get("error") else ""),
                at,
            )

    def _job_changed(self, before: Row, at: dt.datetime) -> None:
        j = self.job
        if before.get("status") != j.get("status") or before.get("pause_reason") != j.get("pause_reason"):
            level = {"failed": "error", "completed": "ok", "paused": "warn", "cancelled": "warn"}.get(
                self.status, "info"
            )
            self._log(level, f"job {self.status_text()}" + (f": {j['error']}" if j.get("error") else ""), at)

    def _task_changed(self, before: Row, t: Row, at: dt.datetime) -> None:
        tr = self.tracks.setdefault(t["id"], HostTrack())
        phase = self._phase_of(t)
        if phase == tr.phase and before:
            return
        if phase == "pending":
            tr.phase = phase
            return
        if tr.segments and tr.segments[-1].end is None:
            tr.segments[-1].end = at
        if phase not in ("pending",):
            end = at if phase in ("done", "failed", "skipped", "cancelled") else None
            tr.segments.append(Segment(phase, at, end))
        tr.phase = phase
        name = t.get("target_name") or short_id(t.get("target_id"))
        level = {"failed": "error", "done": "ok", "skipped": "warn", "cancelled": "warn"}.get(phase, "info")
        why = task_reason(t) if phase in ("failed", "skipped", "cancelled") else ""
        self._log(level, f"{name}: {PHASES.get(phase, phase)}" + (f" — {why}" if why else ""), at)

    def _log(self, level: str, text: str, at: dt.datetime | None = None) -> None:
        self.log.append(LogLine(at or dt.datetime.now(dt.UTC), level, text))
        del self.log[:-500]

    # -- what the view shows -------------------------------------------------------------------
    def title(self) -> str:
        j = self.job
        where = ""
        if self.names is not None and j.get("cluster_id"):
            where = f" of {self.names.name('cluster', j['cluster_id'])}"
        return f"{j.get('type', 'job')}{where} ({short_id(self.job_id)})"

    def status_text(self) -> str:
        j = self.job
        return str(j.get("status", "")) + (f" ({j['pause_reason']})" if j.get("pause_reason") else "")

    def host_rows(self) -> list[dict[str, Any]]:
        out = []
        for t in sorted(self.tasks.values(), key=lambda r: (r.get("seq", 0), r.get("target_name", ""))):
            phase = self._phase_of(t)
            out.append(
                {
                    "id": t["id"],
                    "host": t.get("target_name") or short_id(t.get("target_id")),
                    "status": str(t.get("status")),
                    "phase": PHASES.get(phase, phase),
                    "progress": int(t.get("progress") or 0),
                    "why": task_reason(t),
                }
            )
        return out

    def job_progress(self) -> int:
        """Percent: the mean progress of the hosts that will be worked on (skipped hosts
        count as done), or the share of finished steps when the job has no host tasks."""
        tasks = list(self.tasks.values())
        if tasks:
            vals = [
                100
                if t.get("status") in ("completed", "skipped", "cancelled", "failed")
                else int(t.get("progress") or 0)
                for t in tasks
            ]
            return round(sum(vals) / len(vals))
        done, total = self.progress()
        return round(100 * done / total) if total else (100 if self.status in ("completed",) else 0)

    def gantt(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Bars for the timeline chart: one row per host, one bar per phase."""
        now = now or dt.datetime.now(dt.UTC)
        rows = []
        for t in sorted(self.tasks.values(), key=lambda r: (r.get("seq", 0), r.get("target_name", ""))):
            tr = self.tracks.get(t["id"], HostTrack())
            bars = [{"phase": s.phase, "start": s.start, "end": s.end or now} for s in tr.segments]
            rows.append(
                {
                    "label": t.get("target_name") or short_id(t.get("target_id")),
                    "bars": bars,
                    "status": t.get("status"),
                }
            )
        return rows

    def allowed_actions(self, role: str | None) -> list[str]:
        return [a for a in self.actions() if may(role, a)]

    def control(self, action: str, reason: str | None = None) -> Row:
        res = self.api.job_control(action, self.job_id, reason=reason or None)  # type: ignore[arg-type]
        self._log(
            "info",
            f"{action} sent: job is {res.get('status')}" + (" (requested)" if res.get("requested") else ""),
        )
        self.refresh()
        return res
