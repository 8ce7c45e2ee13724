"""The blocker resolution wizard: review what keeps hosts from entering maintenance mode,
decide per blocker (or in bulk), save the decisions and resume the job.

Decisions are the ``resolve-blockers`` function's vocabulary. They are checked here
against the facts the wizard loaded (a host skip needs a blocker naming a host, a VM
decision needs a VM), so an obviously wrong choice is refused before anything is sent;
the function checks again against the live state and refuses stale decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from console.api import DECISIONS, Api, Row
from console.errors import ValidationFailed
from console.models.common import Observable, short_ts

DECISION_LABELS = {
    "power_off_vm": "power off the VM (back on after the host)",
    "migrate_manually_done": "I moved the VM myself",
    "skip_host": "skip this host",
    "abort": "abort the job",
    "recheck": "check the replication again (after waiting or a sync now)",
    "acknowledge": "override the replication lag (reason required)",
}
REPLICATION_DECISIONS = ("recheck", "acknowledge")


@dataclass
class Choice:
    decision: str
    note: str = ""


class BlockerWizard(Observable):
    def __init__(self, api: Api, job_id: str) -> None:
        super().__init__()
        self.api = api
        self.job_id = job_id
        self.job: Row = {}
        self.blockers: list[Row] = []
        self.host_names: dict[str, str] = {}
        self.vm_names: dict[str, str] = {}
        self.choices: dict[str, Choice] = {}
        self.last_result: Row | None = None

    def load(self) -> None:
        self.job = self.api.job(self.job_id)
        self.blockers = self.api.job_blockers(self.job_id, open_only=True)
        host_ids = sorted({b["host_id"] for b in self.blockers if b.get("host_id")})
        vm_ids = sorted({b["vm_id"] for b in self.blockers if b.get("vm_id")})
        if host_ids:
            self.host_names = {
                h["id"]: h["name"]
                for h in self.api._rest(
                    "hosts", lambda c: c.table("esxi_hosts").select("id,name").in_("id", host_ids)
                )
            }
        self.vm_names = {v["id"]: v["name"] for v in self.api.vms(vm_ids)}
        open_ids = {b["id"] for b in self.blockers}
        self.choices = {k: v for k, v in self.choices.items() if k in open_ids}
        self.changed()

    @property
    def paused_for_blockers(self) -> bool:
        return self.job.get("status") == "paused" and self.job.get("pause_reason") == "blockers"

    def _blocker(self, blocker_id: str) -> Row:
        for b in self.blockers:
            if b["id"] == blocker_id:
                return b
        raise ValidationFailed(
            f"blocker {blocker_id} is not an open blocker of this job (reload?)", ["unknown blocker"]
        )

    def problem(self, blocker: Row, decision: str) -> str | None:
        """Why ``decision`` cannot apply to ``blocker`` (None = it can)."""
        if decision not in DECISIONS:
            return f"unknown decision {decision!r}; choose one of {', '.join(DECISIONS)}"
        if decision == "skip_host" and not blocker.get("host_id"):
            return "skip_host needs a blocker that names a host"
        if decision in ("power_off_vm", "migrate_manually_done") and not blocker.get("vm_id"):
            return f"{decision} needs a blocker that names a VM"
        if decision in REPLICATION_DECISIONS and blocker.get("kind") != "replication_lag":
            return f"{decision} is for replication lag blockers only"
        return None

    @staticmethod
    def note_problem(decision: str, note: str) -> str | None:
        if len(note) > 2000:
            return "a note has at most 2000 characters"
        if decision == "acknowledge" and not note.strip():
            return "an override needs a reason: write it in the note"
        return None

    def decide(self, blocker_id: str, decision: str, note: str = "") -> None:
        b = self._blocker(blocker_id)
        why = self.problem(b, decision) or self.note_problem(decision, note)
        if why:
            raise ValidationFailed(why, [why])
        self.choices[blocker_id] = Choice(decision, note)
        self.changed()

    def clear(self, blocker_id: str) -> None:
        self.choices.pop(blocker_id, None)
        self.changed()

    def bulk(
        self,
        decision: str,
        *,
        kind: str | None = None,
        host_id: str | None = None,
        only_undecided: bool = True,
        note: str = "",
    ) -> tuple[int, list[str]]:
        """Apply one decision to every matching blocker; returns (applied, skipped reasons)."""
        applied, skipped = 0, []
        for b in self.blockers:
            if kind and b.get("kind") != kind or host_id and b.get("host_id") != host_id:
                continue
            if only_undecided and b["id"] in self.choices:
                continue
            why = self.problem(b, decision) or self.note_problem(decision, note)
            if why:
                skipped.append(f"{self.label(b)}: {why}")
                continue
            self.choices[b["id"]] = Choice(decision, note)
            applied += 1
        self.changed()
        return applied, skipped

    def label(self, b: Row) -> str:
        vm = self.vm_names.get(b.get("vm_id") or "", "")
        host = self.host_names.get(b.get("host_id") or "", "")
        return f"{b.get('kind')} {vm or ''}{' on ' + host if host else ''}".strip()

    def undecided(self) -> list[Row]:
        return [b for b in self.blockers if b["id"] not in self.choices]

    @property
    def complete(self) -> bool:
        return bool(self.blockers) and not self.undecided()

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "id": b["id"],
                "kind": b.get("kind"),
                "host": self.host_names.get(b.get("host_id") or "", ""),
                "vm": self.vm_names.get(b.get("vm_id") or "", ""),
                "description": b.get("description", ""),
                "detected": short_ts(b.get("detected_at")),
                "decision": self.choices[b["id"]].decision if b["id"] in self.choices else "",
                "note": self.choices[b["id"]].note if b["id"] in self.choices else "",
            }
            for b in self.blockers
        ]

    def save(self, *, resume: bool = True, confirm_abort: bool = False) -> Row:
        """Send the decisions. With ``resume`` every open blocker must have one (the job goes
        back to pending); without it, partial decisions are recorded and the job stays paused."""
        if not self.choices:
            raise ValidationFailed("decide at least one blocker first", ["no decisions"])
        if resume and not self.complete:
            n = len(self.undecided())
            raise ValidationFailed(
                f"{n} blocker(s) still need a decision before the job can resume (or save without resuming)",
                [f"{n} undecided"],
            )
        if any(c.decision == "abort" for c in self.choices.values()) and not confirm_abort:
            raise ValidationFailed(
                "an 'abort' decision cancels the whole job: confirm it explicitly", ["abort not confirmed"]
            )
        decisions = [
            {"blocker_id": bid, "decision": c.decision, **({"note": c.note} if c.note else {})}
            for bid, c in self.choices.items()
        ]
        res = self.api.resolve_blockers(self.job_id, decisions, resume=True if resume else None)
        self.last_result = res
        self.choices.clear()
        self.load()
        return res
