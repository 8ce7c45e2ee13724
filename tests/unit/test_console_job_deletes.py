"""The job-detail view drops deleted child rows by ``id``: a DELETE on an RLS table carries
only the primary key in ``old_record`` (Supabase's rule, kept by the local stack), so
``job_id`` is never there to match on."""

from __future__ import annotations

from console.models.jobs import JobDetail


def change(table: str, kind: str, record: dict, old: dict | None = None) -> dict:
    return {"data": {"table": table, "type": kind, "record": record, "old_record": old or {}}}


def test_deleted_child_rows_are_dropped_by_id():
    d = JobDetail(None, "j")  # type: ignore[arg-type]  # apply() never calls the API
    seen: list[int] = []
    d.on_change(lambda: seen.append(1))
    for table, rid in (("workflow_executions", "s1"), ("job_tasks", "t1"), ("job_blockers", "b1")):
        assert d.apply(change(table, "INSERT", {"id": rid, "job_id": "j", "status": "pending"}))
    assert d.apply(change("job_tasks", "INSERT", {"id": "t2", "job_id": "j", "status": "pending"}))

    for table, rid in (("workflow_executions", "s1"), ("job_tasks", "t1"), ("job_blockers", "b1")):
        assert d.apply(change(table, "DELETE", {}, {"id": rid}))  # only the key, as delivered
    assert d.steps == {} and d.blockers == {} and list(d.tasks) == ["t2"]
    assert len(seen) == 7

    # a deleted row of another job (an id we never held) changes nothing
    assert not d.apply(change("job_tasks", "DELETE", {}, {"id": "elsewhere"}))
    assert list(d.tasks) == ["t2"] and len(seen) == 7
