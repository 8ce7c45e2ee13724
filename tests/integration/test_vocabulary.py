"""executor/vocabulary.py holds to the Postgres enums it mirrors (issue 13, item 3).

Reads ``pg_enum`` of the migrated stack database: a value SQL has and the StrEnum lacks,
one the StrEnum has and SQL lacks, or the same values in another order fail, naming the
enum and the value.
"""

from __future__ import annotations

from executor import vocabulary
from tests.integration.pgutil import connect


def pg_enum_values(db_url: str) -> dict[str, list[str]]:
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                select t.typname, e.enumlabel
                  from pg_enum e join pg_type t on t.oid = e.enumtypid
                  join pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'public' and t.typname = any(%s)
                 order by t.typname, e.enumsortorder""",
                (list(vocabulary.SQL_ENUMS),),
            )
            out: dict[str, list[str]] = {}
            for typname, label in cur.fetchall():
                out.setdefault(typname, []).append(label)
            return out
    finally:
        conn.close()


def drift(sql: dict[str, list[str]]) -> list[str]:
    problems = []
    for name, enum in vocabulary.SQL_ENUMS.items():
        if name not in sql:
            problems.append(f"public.{name}: no such enum in the database")
            continue
        ours, before = [m.value for m in enum], len(problems)
        for v in sql[name]:
            if v not in ours:
                problems.append(f"public.{name}: {v!r} is in SQL but not in vocabulary.{enum.__name__}")
        for v in ours:
            if v not in sql[name]:
                problems.append(f"public.{name}: {v!r} is in vocabulary.{enum.__name__} but not in SQL")
        if len(problems) == before and ours != sql[name]:
            problems.append(
                f"public.{name}: order differs: SQL {sql[name]} vs vocabulary.{enum.__name__} {ours}"
            )
    return problems


def test_vocabulary_matches_pg_enum(db_url):
    assert drift(pg_enum_values(db_url)) == []


def test_drift_is_named():
    """The check itself: a value missing on either side is reported with enum and value."""
    sql = {name: [m.value for m in enum] for name, enum in vocabulary.SQL_ENUMS.items()}
    assert drift(sql) == []
    sql["pause_reason"] = [*sql["pause_reason"], "maintenance_overrun"]
    sql["task_status"] = [v for v in sql["task_status"] if v != "skipped"]
    assert drift(sql) == [
        "public.task_status: 'skipped' is in vocabulary.TaskStatus but not in SQL",
        "public.pause_reason: 'maintenance_overrun' is in SQL but not in vocabulary.PauseReason",
    ]


def test_creatable_job_types_are_the_vocabulary_minus_test_only():
    from executor.handlers import TEST_ONLY_TYPES
    from executor.jobtypes import CREATABLE

    assert set(TEST_ONLY_TYPES) == set(vocabulary.TEST_ONLY_JOB_TYPES)
    assert [t.value for t in CREATABLE] == [
        t.value for t in vocabulary.JobType if t not in vocabulary.TEST_ONLY_JOB_TYPES
    ]


def test_run_outcomes_that_write_a_job_status_are_job_statuses():
    """RunOutcome is the executor's own word for how a run ended; the outcomes that leave
    the job in a state are that state's JobStatus value, the others none."""
    wrote = {o for o in vocabulary.RunOutcome if o.value in {s.value for s in vocabulary.JobStatus}}
    assert {o.value for o in wrote} == {"completed", "failed", "cancelled", "paused"}
    assert set(vocabulary.RunOutcome) - wrote == {
        vocabulary.RunOutcome.FENCED,
        vocabulary.RunOutcome.RELEASED,
        vocabulary.RunOutcome.INTERRUPTED,
        vocabulary.RunOutcome.ERROR,
    }


def test_the_health_report_docs_list_every_run_outcome():
    """docs/executor.md names the keys of the health report's ``outcomes``: RunOutcome's values."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "executor.md").read_text()
    line = next(row for row in doc.splitlines() if row.startswith("| `outcomes` |"))
    listed = re.findall(r"`([a-z_]+)`", line.split("since start:")[1].split("(")[0])
    assert listed == [o.value for o in vocabulary.RunOutcome]
