"""Migrations apply from empty with the real Supabase CLI, lint clean, and the database's
copy of policies/safety.yaml matches the file.

The from-empty run uses a scratch database in the test stack's cluster (platform
bootstrap, then `supabase db reset --db-url` against it, then `supabase db lint`), so the
shared database other suites are using is never reset underneath them.
"""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest

from devstack.policies import SAFETY_COLUMNS, load_safety
from devstack.stack.postgres import PLATFORM_SQL


@pytest.fixture
def scratch_db(stack):
    name = f"rp_migrate_{uuid.uuid4().hex[:8]}"
    stack.pg.psql(sql=f"create database {name}")
    try:
        stack.pg.psql("-d", name, "-f", str(PLATFORM_SQL))
        yield name, stack.pg.dsn(database=name)
    finally:
        stack.pg.psql(sql=f"drop database if exists {name} with (force)")


def test_migrations_apply_from_empty_and_lint_clean(stack, scratch_db):
    name, dsn = scratch_db
    stack.supabase_cli("db", "reset", "--db-url", dsn + "?sslmode=disable", "--yes")

    lint = stack.supabase_cli(
        "db", "lint", "--db-url", dsn + "?sslmode=disable", "--level", "warning", check=False
    )
    assert lint.returncode == 0, lint.stderr
    out = lint.stdout.strip()
    issues = json.loads(out) if out.startswith("[") else []
    errors = [(f["function"], i["message"]) for f in issues for i in f["issues"] if i["level"] == "error"]
    assert errors == [], errors

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from supabase_migrations.schema_migrations")
            applied = cur.fetchone()[0]
            migrations = sorted((stack.cfg.project_root / "supabase" / "migrations").glob("*.sql"))
            assert applied == len(migrations)
            cur.execute("select name from public.sites")
            assert [r[0] for r in cur.fetchall()] == ["demo"]  # the seed ran
            cur.execute(
                "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'public' and c.relkind = 'r' and not c.relrowsecurity"
            )
            assert cur.fetchall() == [], "every table in public has RLS enabled"
            cur.execute(
                "select tablename from pg_publication_tables where pubname = 'supabase_realtime' "
                "and schemaname = 'public' order by 1"
            )
            assert {r[0] for r in cur.fetchall()} >= {
                "jobs",
                "job_tasks",
                "workflow_executions",
                "job_blockers",
            }
    finally:
        conn.close()


def test_safety_policy_table_matches_yaml(db_url):
    """policies/safety.yaml and public.safety_policies must not drift: claim_jobs reads the
    table, people read the file."""
    expected = {p.job_type: p.row() for p in load_safety().values()}
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"select {', '.join(SAFETY_COLUMNS)} from public.safety_policies")
            actual = {r[0]: tuple(r) for r in cur.fetchall()}
            cur.execute("select unnest(enum_range(null::public.job_type))::text")
            job_types = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    assert job_types == set(expected), "every job type has a safety policy in safety.yaml"
    assert actual == expected
