"""The audit log for approvers and admins: recent entries with actor names, filtered by
table, action or job, and what can be said about the hash chain from the console.

Who may check what (policies/access.yaml): approvers and admins read ``audit_log``;
``verify_audit_chain()`` (every lane, every row) and ``audit_row_hash`` are granted to the
service role only (20261128010600_access.sql), so no signed-in user can call
either, and the console does not ask for a wider grant. What a reader can do is check the
rows they read: each row's ``prev_hash`` against the hash of the previous row of its lane,
and each row's ``hash`` recomputed here from its contents exactly as ``audit_row_hash``
computes it (sha256 of the jsonb text of an array of the fields). The screen says which
check it ran; the whole chain is verified with the service key (``python -m executor
--verify-audit`` on an executor host).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from console.api import Api, Row
from console.errors import ValidationFailed
from console.models.common import parse_ts, short_id, short_ts

ENTRY_COLUMNS = "id,lane,occurred_at,actor_kind,actor_id,actor_role,action,table_name,row_id,note"
CHAIN_COLUMNS = (
    "id,lane,occurred_at,actor_kind,actor_id,actor_role,action,table_name,row_id,old_data,new_data,"
    "note,prev_hash,hash"
)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NAME_RE = re.compile(r"^[a-z0-9_.]{1,80}$")
MAX_LIMIT = 1000
FULL_CHECK = (
    "verify_audit_chain() checks every row of every lane; it is granted to the service role only, "
    "so it runs with the service key: python -m executor --verify-audit on an executor host"
)


def epoch_us(value: Any) -> int:
    """extract(epoch from ts) * 1000000 as bigint, with integer arithmetic (no float rounding)."""
    d = parse_ts(value)
    if d is None:
        raise ValueError(f"not a timestamp: {value!r}")
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def jsonb_text(v: Any) -> str:
    """Postgres' text form of a jsonb value: ", " and ": " separators, object keys shorter
    first then bytewise, strings escaped as json.dumps(ensure_ascii=False) escapes them."""
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(v[k])}" for k in keys) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(jsonb_text(x) for x in v) + "]"
    if v is None or isinstance(v, bool | int | str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return repr(v)  # numeric text as Python reads it back; 1.50 stored would read as 1.5
    return json.dumps(str(v), ensure_ascii=False)


def check_filters(table: str | None, action: str | None, job_id: str | None, limit: int) -> list[str]:
    problems = []
    if table and not NAME_RE.match(table):
        problems.append("table: a table name (lower case letters, digits, _)")
    if action and not NAME_RE.match(action):
        problems.append("action: an action such as job.status (lower case letters, digits, _ and .)")
    if job_id and not UUID_RE.match(job_id.strip().lower()):
        problems.append("job: the whole job id (36 characters), as the job monitor shows it in the tooltip")
    if not 1 <= int(limit) <= MAX_LIMIT:
        problems.append(f"rows: 1 to {MAX_LIMIT}")
    return problems


class AuditModel:
    def __init__(self, api: Api, names: Any = None) -> None:
        self.api = api
        self.names = names

    # -- entries -------------------------------------------------------------------------
    def entries(
        self,
        *,
        table: str | None = None,
        action: str | None = None,
        job_id: str | None = None,
        limit: int = 100,
    ) -> list[Row]:
        """The newest entries matching every filter given, newest first, each with ``actor``
        (a name) and ``when``. ``job_id`` finds the job's own rows (table jobs)."""
        table, action, job_id = (table or "").strip(), (action or "").strip(), (job_id or "").strip().lower()
        problems = check_filters(table, action, job_id, limit)
        if problems:
            raise ValidationFailed("the filters are not valid: " + "; ".join(problems), problems)

        def q(c):
            b = c.table("audit_log").select(ENTRY_COLUMNS)
            if table:
                b = b.eq("table_name", table)
            if action:
                b = b.eq("action", action)
            if job_id:
                b = b.eq("table_name", "jobs").eq("row_id", job_id)
            return b.order("id", desc=True).limit(int(limit))

        rows = self.api._rest("audit log", q)
        if self.names is not None:
            self.names.load_users(r["actor_id"] for r in rows if r.get("actor_kind") == "user")
        for r in rows:
            r["actor"] = self.actor(r)
            r["when"] = short_ts(r.get("occurred_at"))
        return rows

    def actor(self, r: Row) -> str:
        kind, aid = r.get("actor_kind"), r.get("actor_id")
        if kind == "user" and aid:
            return self.names.user(aid) if self.names is not None else f"user {short_id(aid)}"
        if kind == "executor":
            return f"executor {short_id(aid)}" if aid else "executor"
        if kind == "service":
            return "service role"
        return f"database ({r.get('actor_role') or 'system'})"

    def choices(self, limit: int = 500) -> dict[str, list[str]]:
        """Tables and actions seen in the newest ``limit`` rows, for the filter dropdowns."""
        rows = self.api._rest(
            "audit log",
            lambda c: c.table("audit_log").select("table_name,action").order("id", desc=True).limit(limit),
        )
        return {
            "tables": sorted({r["table_name"] for r in rows if r.get("table_name")}),
            "actions": sorted({r["action"] for r in rows if r.get("action")}),
        }

    # -- the hash chain --------------------------------------------------------------------
    @staticmethod
    def hash_args(r: Row) -> list[Any]:
        """The fields audit_row_hash chains, in its order (occurred_at as epoch microseconds)."""
        return [
            r["prev_hash"],
            int(r["id"]),
            int(r["lane"]),
            epoch_us(r["occurred_at"]),
            r["actor_kind"],
            r.get("actor_id"),
            r["actor_role"],
            r["action"],
            r.get("table_name"),
            r.get("row_id"),
            r.get("old_data"),
            r.get("new_data"),
            r.get("note"),
        ]

    def recompute(self, r: Row) -> str:
        return hashlib.sha256(jsonb_text(self.hash_args(r)).encode()).hexdigest()

    def chain_status(self, window: int = 200, *, recompute: bool = True) -> Row:
        """Check the newest ``window`` rows: links within each lane and (``recompute``) each
        row's hash against its contents. Returns {state, checked, lanes, problems, scope,
        full_check}; state is intact, broken or empty."""
        if not 1 <= int(window) <= MAX_LIMIT:
            raise ValidationFailed(f"window: 1 to {MAX_LIMIT} rows", [f"window: 1 to {MAX_LIMIT} rows"])
        rows = self.api._rest(
            "audit log",
            lambda c: c.table("audit_log").select(CHAIN_COLUMNS).order("id", desc=True).limit(int(window)),
        )
        problems: list[Row] = []
        by_lane: dict[int, list[Row]] = {}
        for r in sorted(rows, key=lambda r: int(r["id"])):
            by_lane.setdefault(int(r["lane"]), []).append(r)
        for lane_rows in by_lane.values():
            for prev, cur in zip(lane_rows, lane_rows[1:], strict=False):
                if (
                    cur["prev_hash"] != prev["hash"]
                ):  # the window is the newest N rows by id: nothing of the lane lies between
                    problems.append(
                        {
                            "id": cur["id"],
                            "lane": cur["lane"],
                            "reason": f"its prev_hash does not match the hash of row {prev['id']}, "
                            "the previous row of its lane",
                        }
                    )
        if recompute:
            for r in rows:
                if self.recompute(r) != r["hash"]:
                    problems.append(
                        {"id": r["id"], "lane": r["lane"], "reason": "its hash does not match its contents"}
                    )
        problems.sort(key=lambda p: int(p["id"]))
        state = "empty" if not rows else ("broken" if problems else "intact")
        ids = [int(r["id"]) for r in rows]
        scope = (
            (
                f"the newest {len(rows)} row(s) (ids {min(ids)}..{max(ids)}) in {len(by_lane)} lane(s): links"
                + (" and hashes" if recompute else "")
                + " checked from the console"
            )
            if rows
            else "no rows to check"
        )
        return {
            "state": state,
            "checked": len(rows),
            "lanes": len(by_lane),
            "problems": problems,
            "scope": scope,
            "full_check": FULL_CHECK,
        }

    def verify_full(self) -> list[Row]:
        """verify_audit_chain() as the signed-in user: refused (403) for every API role."""
        return self.api._rest("audit chain", lambda c: c.rpc("verify_audit_chain", {}))
