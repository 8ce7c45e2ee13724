"""The local stack's schema against the repository's migrations.

``rackpilot dev up`` serves a stack only when its database holds exactly the repository's
migrations. This module says where a database stands and drives the real Supabase CLI to
get it there:

* **the repository** is ``supabase/migrations/<version>_<name>.sql``, in version order;
* **the database** records what the CLI applied in ``supabase_migrations.schema_migrations``;
* **the ledger** (``<state>/schema.json``) records, per applied version, the SHA-256 of the
  file as it was when applied, which checkout made the stack, and whether the stack's first
  migration run finished. The CLI keeps no checksum, so without the ledger a migration
  edited after it was applied would go unnoticed.

From those three, :func:`assess` tells one of: current; pending migrations (applied with
``supabase migration up``, each file in its own transaction, so a failed file leaves
nothing of itself behind); drift (a version the repository lacks, a file edited after it
was applied, or a pending file older than the newest applied one): refused, never
guessed; or an unfinished first run: redone from a clean database.

Why a generated CLI work directory
----------------------------------
The CLI decides that a ``--db-url`` is "the local Docker stack" when its host is
``127.0.0.1`` and its port equals ``[db] port`` of ``supabase/config.toml`` (54322, which
is also this stack's default port), and then talks to Docker instead of the URL. Rather
than depend on that guess, :func:`cli_workdir` builds a project folder for the CLI in the
stack's state folder: every entry of ``supabase/`` is a symlink to the repository's, except
``config.toml``, whose ``[db] port`` is rewritten to a port that is never this stack's.
The guess then always answers "remote", the URL is always used, and after every run the
result is checked against the repository (:func:`assess`) rather than trusted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIGRATION_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_.-]+)\.sql$")
LEDGER_NAME = "schema.json"


class MigrationFileError(ValueError):
    """A file in supabase/migrations does not follow ``<version>_<name>.sql``."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


def repository(migrations_dir: Path) -> list[Migration]:
    """The repository's migrations in version order (the order the CLI applies them)."""
    found: list[Migration] = []
    seen: dict[str, str] = {}
    for path in sorted(migrations_dir.glob("*.sql")):
        m = MIGRATION_FILE.match(path.name)
        if not m:
            raise MigrationFileError(f"{path}: a migration file must be named <version>_<name>.sql")
        version = m.group("version")
        if version in seen:
            raise MigrationFileError(f"{path}: version {version} is also used by {seen[version]}")
        seen[version] = path.name
        found.append(Migration(version, m.group("name"), path, hashlib.sha256(path.read_bytes()).hexdigest()))
    found.sort(key=lambda mig: mig.version)
    return found


# --- the ledger -----------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the stack knows about how its schema was made (``<state>/schema.json``)."""

    path: Path
    made_by: str | None = None  # the checkout (project root) whose migrations created the schema
    creating: str | None = None  # set while a from-scratch migration run is under way (ISO time)
    checksums: dict[str, str] = field(default_factory=dict)  # version -> sha256 at apply time

    @classmethod
    def load(cls, state_dir: Path) -> Ledger:
        path = state_dir / LEDGER_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        return cls(path, data.get("made_by"), data.get("creating"), dict(data.get("checksums") or {}))

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"made_by": self.made_by, "creating": self.creating, "checksums": self.checksums},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        os.replace(tmp, self.path)

    def begin_creation(self, project_root: Path) -> None:
        self.creating = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.made_by = str(project_root)
        self.checksums = {}
        self.save()

    def record(self, migrations: list[Migration], applied: set[str]) -> None:
        """Remember the checksum of every applied migration that has none yet."""
        for mig in migrations:
            if mig.version in applied:
                self.checksums.setdefault(mig.version, mig.sha256)
        for version in list(self.checksums):
            if version not in applied:
                del self.checksums[version]
        self.save()

    def finish_creation(self) -> None:
        self.creating = None
        self.save()


# --- where the database stands ----------------------------------------------------------------


@dataclass
class SchemaStatus:
    repository: list[Migration]
    applied: list[str]  # versions in supabase_migrations.schema_migrations, ascending
    has_history: bool  # the supabase_migrations schema exists
    public_tables: int
    creation_incomplete: bool  # a from-scratch run started and never finished
    pending: list[Migration] = field(default_factory=list)  # newer than everything applied
    out_of_order: list[Migration] = field(default_factory=list)  # not applied, older than the newest applied
    unknown: list[str] = field(default_factory=list)  # applied, not in the repository
    edited: list[Migration] = field(default_factory=list)  # applied, file changed since
    unverified: list[Migration] = field(default_factory=list)  # applied before the ledger knew them
    made_by: str | None = None
    this_checkout: bool = True

    @property
    def drift(self) -> bool:
        return bool(self.unknown or self.edited or self.out_of_order)

    @property
    def needs_creation(self) -> bool:
        """Nothing of the schema exists yet, or the first run never finished."""
        return self.creation_incomplete or (
            not self.applied and not self.has_history and self.public_tables == 0
        )

    @property
    def current(self) -> bool:
        return not (self.needs_creation or self.drift or self.pending)

    @property
    def version(self) -> str | None:
        return self.applied[-1] if self.applied else None

    def drift_message(self) -> str:
        lines = []
        if self.unknown:
            lines.append(
                "the database has migration(s) that this repository lacks: " + ", ".join(self.unknown)
            )
        if self.edited:
            lines.append(
                "migration file(s) edited after they were applied: "
                + ", ".join(f"supabase/migrations/{m.filename}" for m in self.edited)
            )
        if self.out_of_order:
            lines.append(
                "migration(s) older than the newest applied one (" + str(self.version) + ") were never "
                "applied: " + ", ".join(f"supabase/migrations/{m.filename}" for m in self.out_of_order)
            )
        return "; ".join(lines)

    def as_dict(self) -> dict[str, Any]:
        newest = self.repository[-1] if self.repository else None
        if self.needs_creation:
            state = (
                "not created"
                if not self.creation_incomplete
                else "creation failed (next dev up starts clean)"
            )
        elif self.drift:
            state = "drift"
        elif self.pending:
            state = "behind"
        else:
            state = "current"
        return {
            "state": state,
            "version": self.version,
            "repository_version": newest.version if newest else None,
            "applied": len(self.applied),
            "repository": len(self.repository),
            "pending": [m.filename for m in self.pending],
            "out_of_order": [m.filename for m in self.out_of_order],
            "unknown_versions": self.unknown,
            "edited": [m.filename for m in self.edited],
            "unverified": [m.filename for m in self.unverified],
            "made_by": self.made_by,
            "made_by_this_checkout": self.this_checkout,
        }


STATUS_SQL = """
select to_regclass('supabase_migrations.schema_migrations') is not null,
       (select count(*) from pg_tables where schemaname = 'public')
"""
APPLIED_SQL = "select version from supabase_migrations.schema_migrations order by version"


def read_database(conn: Any) -> tuple[bool, int, list[str]]:
    """(has history table, tables in public, applied versions) from a psycopg2 connection."""
    with conn.cursor() as cur:
        cur.execute(STATUS_SQL)
        has_history, tables = cur.fetchone()
        applied: list[str] = []
        if has_history:
            cur.execute(APPLIED_SQL)
            applied = [r[0] for r in cur.fetchall()]
    return bool(has_history), int(tables), applied


def assess(
    repo: list[Migration],
    has_history: bool,
    public_tables: int,
    applied: list[str],
    ledger: Ledger,
    project_root: Path,
) -> SchemaStatus:
    by_version = {m.version: m for m in repo}
    applied_set = set(applied)
    newest_applied = applied[-1] if applied else ""
    st = SchemaStatus(
        repo,
        applied,
        has_history,
        public_tables,
        creation_incomplete=ledger.creating is not None,
        made_by=ledger.made_by,
        this_checkout=ledger.made_by in (None, str(project_root)),
    )
    for mig in repo:
        if mig.version in applied_set:
            recorded = ledger.checksums.get(mig.version)
            if recorded is None:
                st.unverified.append(mig)
            elif recorded != mig.sha256:
                st.edited.append(mig)
        elif mig.version < newest_applied:
            st.out_of_order.append(mig)
        else:
            st.pending.append(mig)
    st.unknown = [v for v in applied if v not in by_version]
    return st


# --- the CLI's project folder ------------------------------------------------------------------

_DB_SECTION_PORT = re.compile(r"(?ms)^(\[db\]\s*\n(?:(?!^\[).)*?^port\s*=\s*)(\d+)")


def cli_workdir(project_root: Path, state_dir: Path, db_port: int) -> Path:
    """A project folder for the Supabase CLI whose ``[db] port`` is never ``db_port``.

    Every entry of ``<project>/supabase`` is linked, except ``config.toml``, which is copied
    with its ``[db] port`` replaced (see the module docstring for why).
    """
    src = project_root / "supabase"
    work = state_dir / "supabase-cli"
    dst = work / "supabase"
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name in ("config.toml", ".temp", ".branches"):
            continue
        link = dst / entry.name
        if link.is_symlink() and link.resolve() == entry.resolve():
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        link.symlink_to(entry)
    text = (src / "config.toml").read_text()
    decoy = db_port + 1 if db_port < 65535 else db_port - 1
    new, count = _DB_SECTION_PORT.subn(lambda m: f"{m.group(1)}{decoy}", text, count=1)
    if count == 0:
        new = text + f"\n[db]\nport = {decoy}\n"
    (dst / "config.toml").write_text(
        "# generated by rackpilot dev: [db] port differs from the stack's so that the CLI always uses --db-url\n"
        + new
    )
    return work


_APPLYING = re.compile(r"Applying migration (\S+\.sql)")


def failed_migration(cli_output: str) -> str | None:
    """The file the CLI was applying when it failed (the last 'Applying migration' line)."""
    found = _APPLYING.findall(cli_output)
    return found[-1] if found else None


def applied_files(cli_output: str) -> list[str]:
    return _APPLYING.findall(cli_output)
