"""devstack.stack.migrations: reading the repository, judging a database, the CLI's folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from devstack.stack import migrations as m


def write(d: Path, name: str, sql: str = "select 1;\n") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(sql)
    return p


def test_repository_is_in_version_order_and_refuses_bad_names(tmp_path):
    d = tmp_path / "migrations"
    write(d, "20260102000000_b.sql")
    write(d, "20260101000000_a.sql")
    assert [x.version for x in m.repository(d)] == ["20260101000000", "20260102000000"]
    write(d, "notes.sql")
    with pytest.raises(m.MigrationFileError, match="notes.sql"):
        m.repository(d)


def test_assess_tells_pending_edited_unknown_and_out_of_order(tmp_path):
    d = tmp_path / "migrations"
    a = write(d, "20260101000000_a.sql")
    write(d, "20260102000000_b.sql")
    write(d, "20260104000000_d.sql")
    ledger = m.Ledger(tmp_path / "schema.json")
    repo = m.repository(d)
    ledger.record(repo, {"20260101000000"})

    st = m.assess(repo, True, 3, ["20260101000000"], ledger, tmp_path)
    assert [x.filename for x in st.pending] == ["20260102000000_b.sql", "20260104000000_d.sql"]
    assert not st.drift and not st.current and st.as_dict()["state"] == "behind"

    a.write_text("select 2;\n")
    repo = m.repository(d)
    st = m.assess(repo, True, 3, ["20260101000000", "20260103000000", "20260104000000"], ledger, tmp_path)
    assert [x.filename for x in st.edited] == ["20260101000000_a.sql"]
    assert st.unknown == ["20260103000000"]
    assert [x.filename for x in st.out_of_order] == ["20260102000000_b.sql"]
    assert st.drift and "edited after" in st.drift_message() and "20260103000000" in st.drift_message()


def test_an_empty_database_or_an_unfinished_first_run_needs_creation(tmp_path):
    d = tmp_path / "migrations"
    write(d, "20260101000000_a.sql")
    ledger = m.Ledger(tmp_path / "schema.json")
    repo = m.repository(d)
    assert m.assess(repo, False, 0, [], ledger, tmp_path).needs_creation
    ledger.begin_creation(tmp_path)
    st = m.assess(repo, True, 5, ["20260101000000"], m.Ledger.load(tmp_path), tmp_path)
    assert st.needs_creation and "creation failed" in st.as_dict()["state"]
    # tables but no history: not ours to create over
    assert not m.assess(repo, False, 4, [], m.Ledger(tmp_path / "other.json"), tmp_path).needs_creation


def test_cli_workdir_never_shares_the_stacks_db_port(tmp_path):
    root = tmp_path / "proj"
    write(root / "supabase" / "migrations", "20260101000000_a.sql")
    write(root / "supabase", "seed.sql")
    write(root / "supabase", "config.toml", 'project_id = "x"\n[api]\nport = 54321\n\n[db]\nport = 54322\n')
    work = m.cli_workdir(root, tmp_path / "state", 54322)
    cfg = tomllib.loads((work / "supabase" / "config.toml").read_text())
    assert cfg["db"]["port"] != 54322 and cfg["api"]["port"] == 54321
    assert (work / "supabase" / "migrations").resolve() == (root / "supabase" / "migrations").resolve()
    assert (work / "supabase" / "seed.sql").is_symlink()


def test_failed_migration_is_the_last_one_being_applied():
    out = "Applying migration 1_a.sql...\nApplying migration 2_b.sql...\nERROR: division by zero\n"
    assert m.failed_migration(out) == "2_b.sql"
    assert m.applied_files(out) == ["1_a.sql", "2_b.sql"]
