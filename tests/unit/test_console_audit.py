"""The audit-log screen without a stack (console/models/audit.py, console/widgets/audit.py):
filters sent as REST filters and refused in words, actors by name, the chain check over the
rows read (links per lane and hashes recomputed) finding a broken link and an edited row,
and the screen registered for approvers and admins."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from console import screens
from console.errors import ValidationFailed
from console.models.audit import AuditModel, epoch_us, jsonb_text
from console.widgets.audit import AuditView

JOB = "22222222-2222-4222-8222-222222222222"
USER = "33333333-3333-4333-8333-333333333333"


def chain(n: int, lanes: int = 2) -> list[dict]:
    heads: dict[int, str] = {}
    rows = []
    for i in range(1, n + 1):
        lane = i % lanes
        r = {
            "id": i,
            "lane": lane,
            "occurred_at": f"2026-12-07T01:00:{i:02d}+00:00",
            "actor_kind": "user",
            "actor_id": USER,
            "actor_role": "authenticated",
            "action": "job.status",
            "table_name": "jobs",
            "row_id": JOB,
            "old_data": {"status": "queued"},
            "new_data": {"status": "running"},
            "note": None,
            "prev_hash": heads.get(lane, "0" * 64),
        }
        r["hash"] = AuditModel(None).recompute(r)
        heads[lane] = r["hash"]
        rows.append(r)
    return rows


class Query:
    def __init__(self, table: str) -> None:
        self.table, self.ops = table, []

    def __getattr__(self, name: str) -> Any:
        def op(*args: Any, **kw: Any) -> Query:
            self.ops.append((name, args))
            return self

        return op


class Client:
    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def table(self, name: str) -> Query:
        q = Query(name)
        self.api.queries.append(q)
        return q


class FakeApi:
    def __init__(self, rows: list[dict]) -> None:
        self.rows, self.queries = rows, []
        self.client = Client(self)

    def _rest(self, what: str, build: Any) -> list[dict]:
        build(self.client)
        return [dict(r) for r in sorted(self.rows, key=lambda r: -r["id"])]


class Names:
    def load_users(self, ids: Any) -> None:
        self.loaded = list(ids)

    def user(self, uid: Any) -> str:
        return "ops@example.org"


def test_entries_filter_and_name_actors() -> None:
    api = FakeApi(
        chain(4)
        + [
            {**chain(1)[0], "id": 9, "actor_kind": "executor", "actor_id": JOB},
            {**chain(1)[0], "id": 10, "actor_kind": "service", "actor_id": None},
        ]
    )
    rows = AuditModel(api, names=Names()).entries(
        table="jobs", action="job.status", job_id=JOB.upper(), limit=5
    )
    ops = api.queries[-1].ops
    assert ("eq", ("table_name", "jobs")) in ops and ("eq", ("action", "job.status")) in ops
    assert ("eq", ("row_id", JOB)) in ops and ("limit", (5,)) in ops and ("order", ("id",)) in ops
    actors = {r["id"]: r["actor"] for r in rows}
    assert (
        actors[1] == "ops@example.org" and actors[9] == "executor 22222222" and actors[10] == "service role"
    )
    assert rows[0]["when"] == "2026-12-07 01:00:01"


def test_bad_filters_are_refused_in_words() -> None:
    with pytest.raises(ValidationFailed) as exc:
        AuditModel(FakeApi([])).entries(table="jobs; drop", action="Job Status", job_id="2222", limit=0)
    text = " ".join(exc.value.problems)
    assert (
        "table:" in text
        and "action:" in text
        and "job: the whole job id" in text
        and "rows: 1 to 1000" in text
    )


def test_the_hash_is_audit_row_hash_in_python() -> None:
    # jsonb's text form: keys shorter (in UTF-8 bytes) first, ", " and ": ", strings escaped as Postgres escapes them
    assert (
        jsonb_text({"bb": 1, "a": [None, True, 'x"y\n'], "ä": 2.5})
        == '{"a": [null, true, "x\\"y\\n"], "bb": 1, "ä": 2.5}'
    )
    assert epoch_us("1970-01-01T00:00:01.000001+00:00") == 1_000_001
    assert epoch_us("2026-12-07T02:00:00+01:00") == epoch_us("2026-12-07T01:00:00Z")
    r = chain(1)[0]
    want = hashlib.sha256(jsonb_text(AuditModel.hash_args(r)).encode()).hexdigest()
    assert AuditModel(None).recompute(r) == want and len(want) == 64


def test_chain_intact_broken_link_and_edited_row() -> None:
    rows = chain(6)
    ok = AuditModel(FakeApi(rows)).chain_status(50)
    assert ok["state"] == "intact" and ok["checked"] == 6 and ok["lanes"] == 2 and not ok["problems"]
    assert "service role only" in ok["full_check"] and "links and hashes" in ok["scope"]

    relinked = [dict(r) for r in rows]
    relinked[3]["prev_hash"] = "f" * 64  # row 4: link broken (and its hash no longer fits either)
    bad = AuditModel(FakeApi(relinked)).chain_status(50)
    assert bad["state"] == "broken"
    assert any(p["id"] == 4 and "prev_hash" in p["reason"] for p in bad["problems"])

    edited = [dict(r) for r in rows]
    edited[4]["new_data"] = {"status": "succeeded"}  # row 5 changed, hash left alone
    bad = AuditModel(FakeApi(edited)).chain_status(50)
    assert [p["id"] for p in bad["problems"]] == [5] and "contents" in bad["problems"][0]["reason"]
    assert AuditModel(FakeApi([])).chain_status(10)["state"] == "empty"


def test_view_shows_rows_and_chain_and_screen_is_for_approvers() -> None:
    v = AuditView(AuditModel(FakeApi(chain(3)), names=Names()))
    v.load()
    assert (
        "3</b> entries" in v.head.value
        and "ops@example.org" in v.table.value
        and "job.status" in v.table.value
    )
    assert [o for o, _ in v.table_dd.options] == ["every table", "jobs"] and v.table_dd.value == ""
    v.check_chain()
    assert "chain intact" in v.chain.value and "python -m executor --verify-audit" in v.chain.value
    v.job.value = "not-a-uuid"
    v.apply.click()
    assert "job: the whole job id" in v.status.value
    s = screens.get("audit")
    assert s.min_role == "approver" and s.group == "Report"
    assert not s.allowed("operator") and s.allowed("approver") and s.allowed("admin")
