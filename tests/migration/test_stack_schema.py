"""`rackpilot dev up` serves only a schema that is the repository's.

Each test runs the real command line (`python -m devstack.cli dev ...`) on a throwaway copy
of the project whose `supabase/migrations` it may break, extend or edit, with its own state
folder and free ports. The copy's `config.toml` sets `[db] port` to the stack's own port:
the case in which the Supabase CLI would take the `--db-url` for its Docker stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from devstack.stack.config import PROJECT_ROOT
from devstack.stack.stack import free_port

UP_LINE = "rackpilot local stack is up"
FAILING_SQL = "create table public.schema_probe (id int primary key);\nselect 1/0;\n"
FIXED_SQL = "create table public.schema_probe (id int primary key);\n"


class Project:
    """A copy of the project whose supabase/migrations belongs to the test."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / ".state"
        self.migrations = root / "supabase" / "migrations"
        self.api_port, self.db_port = free_port(), free_port()
        root.mkdir(parents=True)
        for entry in PROJECT_ROOT.iterdir():
            if entry.name in ("supabase", ".devstack", ".git"):
                continue
            (root / entry.name).symlink_to(entry)
        sb = root / "supabase"
        sb.mkdir()
        for entry in (PROJECT_ROOT / "supabase").iterdir():
            if entry.name in ("migrations", "config.toml", ".temp", ".branches"):
                continue
            (sb / entry.name).symlink_to(entry)
        shutil.copytree(PROJECT_ROOT / "supabase" / "migrations", self.migrations)
        # the Supabase CLI's trap: [db] port equal to the port of the database it is given
        text = (PROJECT_ROOT / "supabase" / "config.toml").read_text()
        (sb / "config.toml").write_text(text.replace("[db]\nport = 54322", f"[db]\nport = {self.db_port}"))
        assert f"port = {self.db_port}" in (sb / "config.toml").read_text()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
        env.update(
            {
                "RACKPILOT_PROJECT_ROOT": str(self.root),
                "RACKPILOT_STACK_DIR": str(self.state),
                "RACKPILOT_API_PORT": str(self.api_port),
                "RACKPILOT_DB_PORT": str(self.db_port),
            }
        )
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "devstack.cli", "dev", *args],
            env=self.env(),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def status(self) -> dict:
        res = self.cli("status")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["schema"]

    def dsn(self) -> str:
        secrets = json.loads((self.state / "secrets.json").read_text())
        return f"postgresql://postgres:{secrets['postgres_password']}@127.0.0.1:{self.db_port}/postgres"

    def query(self, sql: str) -> list[tuple]:
        conn = psycopg2.connect(self.dsn())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def add(self, version: str, name: str, sql: str) -> Path:
        path = self.migrations / f"{version}_{name}.sql"
        path.write_text(sql)
        return path


@pytest.fixture
def project(tmp_path: Path):
    proj = Project(tmp_path / "proj")
    try:
        yield proj
    finally:
        proj.cli("destroy")


def repo_tables() -> int:
    return len(list((PROJECT_ROOT / "supabase" / "migrations").glob("*.sql")))


def test_failed_first_migration_is_not_served_and_the_next_up_starts_clean(project):
    bad = project.add("29990101000000", "schema_probe", FAILING_SQL)

    first = project.cli("up")
    assert first.returncode != 0
    assert UP_LINE not in first.stderr + first.stdout
    assert f"supabase/migrations/{bad.name} failed" in first.stderr
    assert "Docker" not in first.stderr  # the CLI used the URL, not its own stack
    # the Postgres that the failed `dev up` started was stopped again
    assert json.loads(project.cli("status").stdout)["postgres"] == "stopped"

    # a second try with the file still broken: still refused, still no "up"
    again = project.cli("up")
    assert again.returncode != 0 and UP_LINE not in again.stderr
    assert project.cli("up").returncode != 0

    bad.write_text(FIXED_SQL)
    fixed = project.cli("up")
    assert fixed.returncode == 0, fixed.stderr
    assert UP_LINE in fixed.stderr
    applied = project.query("select version from supabase_migrations.schema_migrations order by version")
    assert [v for (v,) in applied][-1] == "29990101000000"
    assert len(applied) == repo_tables() + 1
    for table in ("jobs", "servers", "audit_log", "schema_probe"):
        assert project.query(f"select to_regclass('public.{table}') is not null") == [(True,)], table
    status = project.status()
    assert status["state"] == "current" and status["pending"] == [] and status["made_by_this_checkout"]


def test_a_migration_added_later_is_applied_and_data_survives(project):
    assert project.cli("up").returncode == 0
    site = project.query("insert into public.sites (name) values ('kept-site') returning id")[0][0]
    project.cli("down")

    newer = project.add("29990102000000", "schema_probe", FIXED_SQL)
    status_stopped = project.cli("status")
    assert status_stopped.returncode == 0
    res = project.cli("up")
    assert res.returncode == 0, res.stderr
    assert f"applied 1 migration(s): {newer.name}" in res.stderr
    assert UP_LINE in res.stderr
    assert project.query(f"select name from public.sites where id = '{site}'") == [("kept-site",)]
    assert project.query("select to_regclass('public.schema_probe') is not null") == [(True,)]

    # pending is reported by `dev status` before `dev up` applies it
    newest = project.add(
        "29990103000000", "schema_probe_b", "alter table public.schema_probe add column x int;\n"
    )
    status = project.status()
    assert status["state"] == "behind" and status["pending"] == [newest.name]
    assert project.cli("up").returncode == 0
    assert project.status()["state"] == "current"


def test_a_failed_upgrade_migration_is_rolled_back_named_and_retried(project):
    assert project.cli("up").returncode == 0
    project.query("insert into public.sites (name) values ('kept-site')")
    bad = project.add("29990104000000", "schema_probe", FAILING_SQL)
    res = project.cli("up")
    assert res.returncode != 0 and UP_LINE not in res.stderr
    assert f"supabase/migrations/{bad.name} failed" in res.stderr and "rolled back" in res.stderr
    # nothing of the failed file stays behind
    project.cli("up")  # still failing; Postgres is left as it was before (running)
    assert project.query("select to_regclass('public.schema_probe')") == [(None,)]
    assert project.status()["pending"] == [bad.name]
    bad.write_text(FIXED_SQL)
    assert project.cli("up").returncode == 0
    assert project.query("select count(*) from public.sites where name = 'kept-site'") == [(1,)]


def test_drift_is_refused_and_named(project):
    assert project.cli("up").returncode == 0
    files = sorted(project.migrations.glob("*.sql"))

    # an applied migration edited afterwards
    edited = files[-1]
    original = edited.read_text()
    edited.write_text(original + "\n-- edited after it was applied\n")
    res = project.cli("up")
    assert res.returncode != 0 and UP_LINE not in res.stderr
    assert f"supabase/migrations/{edited.name}" in res.stderr and "edited after" in res.stderr
    assert "rackpilot dev reset" in res.stderr
    status = project.status()
    assert status["state"] == "drift" and status["edited"] == [edited.name]
    edited.write_text(original)

    # a version the repository lacks
    removed = files[-1]
    content = removed.read_text()
    removed.unlink()
    res = project.cli("up")
    assert res.returncode != 0 and UP_LINE not in res.stderr
    version = removed.name.split("_", 1)[0]
    assert version in res.stderr and "lacks" in res.stderr
    assert project.status()["unknown_versions"] == [version]
    removed.write_text(content)

    # a pending file older than the newest applied one
    older = project.add("20000101000000", "too_old", FIXED_SQL)
    res = project.cli("up")
    assert res.returncode != 0 and older.name in res.stderr
    assert project.status()["out_of_order"] == [older.name]
    older.unlink()

    # back in line: served again, and `dev reset` re-creates from the repository
    assert project.cli("up").returncode == 0
    assert project.status()["state"] == "current"
