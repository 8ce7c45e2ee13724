"""The whole local stack: Postgres + platform bootstrap + migrations + the gateway process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from .. import proc
from . import migrations
from .config import HOST, PROJECT_ROOT, StackConfig
from .postgres import PostgresCluster, PostgresError
from .secrets import StackSecrets

GATEWAY_START_TIMEOUT_S = 60  # seconds to wait for /health after starting the gateway
TEST_IP_RATE_LIMIT = 100_000  # per-IP auth grants per 5 minutes on test and benchmark stacks (requests)
GATEWAY_STOP_TIMEOUT_S = 15  # seconds between SIGTERM and SIGKILL for the gateway


class StackError(RuntimeError):
    """The local stack could not be brought up, reset or taken down."""


class SchemaDriftError(StackError):
    """The database holds migrations the repository does not (or edited ones): refused."""


class Stack:
    def __init__(self, cfg: StackConfig | None = None):
        self.cfg = cfg or StackConfig.from_env()
        self.secrets = StackSecrets.load_or_create(self.cfg.secrets_file)
        self.pg = PostgresCluster(self.cfg, self.secrets)

    # --- environment -------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """What the official clients and edge functions need, as Supabase names it."""
        return {
            "SUPABASE_URL": self.cfg.api_url,
            "SUPABASE_ANON_KEY": self.secrets.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.secrets.service_role_key,
            "SUPABASE_DB_URL": self.pg.dsn(),
        }

    def has_function(self, name: str) -> bool:
        return (self.cfg.project_root / "supabase" / "functions" / name / "index.ts").exists()

    @property
    def cli_env(self) -> dict[str, str]:
        home = self.cfg.state_dir / "cli-home"  # the CLI writes telemetry under ~/.supabase
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "HOME": str(home), "SUPABASE_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"}

    def supabase_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the pinned Supabase CLI on this stack's generated project folder
        (:func:`devstack.stack.migrations.cli_workdir` says why it is not the repository's)."""
        exe = PROJECT_ROOT / "node_modules" / ".bin" / "supabase"
        if not exe.exists():
            raise StackError("the Supabase CLI is not installed: run scripts/setup.sh (make setup)")
        workdir = migrations.cli_workdir(self.cfg.project_root, self.cfg.state_dir, self.cfg.db_port)
        res = subprocess.run(
            [str(exe), "--workdir", str(workdir), *args],
            cwd=workdir,
            env=self.cli_env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise StackError(f"supabase {' '.join(args[:2])} failed:\n{self._cli_output(res)}")
        return res

    def _cli_output(self, res: subprocess.CompletedProcess, tail: int = 12) -> str:
        """What the CLI said, for an error message: its progress lines ("Applying migration",
        the reset prompt) left out, the last ``tail`` lines kept, the password masked."""
        lines = [
            ln
            for ln in (res.stdout + "\n" + res.stderr).splitlines()
            if ln.strip()
            and not ln.startswith(
                (
                    "Applying migration",
                    "Do you want to",
                    "Resetting ",
                    "Connecting to ",
                    "Seeding ",
                    "Initialising ",
                )
            )
        ]
        return "\n".join(lines[-tail:]).replace(self.secrets.postgres_password, "***")

    @property
    def cli_db_url(self) -> str:
        return self.pg.dsn() + "?sslmode=disable"

    # --- lifecycle ---------------------------------------------------------------------
    def up(self, reset: bool = False) -> list[str]:
        """Start Postgres, bring its schema to the repository's migrations, start the
        gateway. Returns the migration files applied by this call. Nothing is served while
        the schema differs from the repository: a failure here (or a SIGKILL mid-way, through
        a watchdog) stops the Postgres and gateway this call started, and raises."""
        with self._starting():
            try:
                self.pg.init()
                self.pg.start()
                self.pg.bootstrap()
                applied = self.migrate() if reset else self.converge()
            except PostgresError as exc:
                raise StackError(str(exc)) from exc
            self.start_gateway()
        return applied

    # --- schema ------------------------------------------------------------------------
    def schema_status(self) -> migrations.SchemaStatus:
        """Where the running database stands against ``supabase/migrations``."""
        import psycopg2

        repo = migrations.repository(self.migrations_dir)
        conn = psycopg2.connect(self.pg.dsn())
        try:
            has_history, tables, applied = migrations.read_database(conn)
        finally:
            conn.close()
        return migrations.assess(
            repo,
            has_history,
            tables,
            applied,
            migrations.Ledger.load(self.cfg.state_dir),
            self.cfg.project_root,
        )

    @property
    def migrations_dir(self) -> Path:
        return self.cfg.project_root / "supabase" / "migrations"

    def converge(self) -> list[str]:
        """Apply pending migrations without touching data; create the schema from scratch
        when it was never made or its first run failed; refuse drift."""
        status = self.schema_status()
        if status.needs_creation:
            return self.migrate()
        if status.drift:
            raise SchemaDriftError(
                f"the database schema has drifted from supabase/migrations: {status.drift_message()}. "
                "rackpilot will not guess which is right: `rackpilot dev reset` re-creates the schema from the "
                "repository (it deletes the stack's data)"
            )
        ledger = migrations.Ledger.load(self.cfg.state_dir)
        if status.unverified:  # applied before this stack kept checksums: trust them from now on
            ledger.record(status.repository, set(status.applied))
        if not status.pending:
            return []
        res = self.supabase_cli("migration", "up", "--db-url", self.cli_db_url, check=False)
        applied_now = migrations.applied_files(res.stdout + res.stderr)
        after = self.schema_status()
        ledger.record(after.repository, set(after.applied))
        if res.returncode != 0:
            failed = migrations.failed_migration(res.stdout + res.stderr)
            raise StackError(
                f"migration supabase/migrations/{failed} failed; it was rolled back (each migration runs in its "
                "own transaction) and the stack is not served. Fix the file and run `rackpilot dev up` again.\n"
                + self._cli_output(res)
            )
        self._verify(after)
        self.pg.psql(sql="notify pgrst, 'reload schema'")
        return applied_now

    def migrate(self) -> list[str]:
        """Create the schema from the repository: ``supabase db reset`` (migrations and
        seed, on a clean database). An interrupted or failed run is redone from scratch by
        the next ``dev up``."""
        ledger = migrations.Ledger.load(self.cfg.state_dir)
        ledger.begin_creation(self.cfg.project_root)
        res = self.supabase_cli("db", "reset", "--db-url", self.cli_db_url, "--yes", check=False)
        if res.returncode != 0:
            failed = migrations.failed_migration(res.stdout + res.stderr)
            where = f"migration supabase/migrations/{failed}" if failed else "supabase db reset"
            raise StackError(
                f"{where} failed, so the schema was not created and the stack is not served. Fix it and run "
                "`rackpilot dev up` again: it starts from a clean database.\n" + self._cli_output(res)
            )
        status = self.schema_status()
        ledger.record(status.repository, set(status.applied))
        self._verify(status)
        ledger.finish_creation()
        self.pg.psql(sql="notify pgrst, 'reload schema'")
        return migrations.applied_files(res.stdout + res.stderr)

    def _verify(self, status: migrations.SchemaStatus) -> None:
        """The CLI's exit code is not trusted alone: the history must equal the repository."""
        repo = [m.version for m in status.repository]
        if status.applied != repo or status.drift:
            missing = sorted(set(repo) - set(status.applied))
            extra = sorted(set(status.applied) - set(repo))
            raise StackError(
                f"after migrating, the database's migration history differs from supabase/migrations "
                f"(missing {missing or 'none'}, extra {extra or 'none'}); the stack is not served"
            )

    def reset(self) -> list[str]:
        if not self.pg.running():
            raise StackError("the stack is not running: rackpilot dev up")
        self.pg.bootstrap()
        return self.migrate()

    def down(self) -> None:
        """Stop the gateway with everything it started (also what a SIGKILLed gateway left
        behind) and Postgres. The data stays."""
        self._abort_start(postgres=True, gateway=True, quiet=False)

    def destroy(self) -> None:
        self.stop_gateway()
        self.pg.destroy()

    # --- processes (see devstack.proc) ---------------------------------------------------
    @property
    def gateway_owner(self) -> str:
        """The owner marker of the gateway and of everything it starts (its functions router)."""
        return f"gateway:{self.cfg.state_dir}"

    def hold(self) -> proc.Watchdog:
        """Tie this stack to the calling process: should it die before ``release()`` on the
        returned watchdog - an exception, Ctrl-C, SIGKILL alike - the watchdog stops the
        gateway (with its functions router) and Postgres. For owners that start a stack for
        themselves (the demo, a test session). ``rackpilot dev up`` leaves the stack running on
        purpose and holds nothing. Release only after ``down()``: a failed ``down()`` is then
        retried by the watchdog when the owner exits."""
        return self._watchdog(postgres=True, gateway=True)

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """Wrap a start (``up()``): when it raises - a failed migration, Ctrl-C - stop the
        Postgres and gateway it started (not ones that were running before), and re-raise; when
        the process dies mid-way (SIGKILL), a watchdog does the same."""
        pg = not (self.pg.initialised() and self.pg.running())
        gateway = self.gateway_pid() is None
        guard = self._watchdog(postgres=pg, gateway=gateway) if pg or gateway else None
        try:
            yield
        except BaseException:
            self._abort_start(postgres=pg, gateway=gateway)
            raise
        finally:
            if guard is not None:
                guard.release()

    def _abort_start(self, postgres: bool = True, gateway: bool = True, quiet: bool = True) -> None:
        """Stop the gateway (and its router) and/or Postgres. ``quiet``: never raise (after a
        failed start, that failure is the one to report)."""
        try:
            if gateway:
                self.stop_gateway()
        except Exception:
            if not quiet:
                raise
        finally:
            try:
                if postgres:
                    self.pg.stop()
            except Exception:
                if not quiet:
                    raise

    def _watchdog(self, postgres: bool, gateway: bool) -> proc.Watchdog:
        code = (
            "from devstack.stack.stack import Stack; "
            f"Stack()._abort_start(postgres={postgres}, gateway={gateway}, quiet=False)"
        )
        return proc.Watchdog(
            [sys.executable, "-c", code],
            env={**os.environ, **self.cfg.to_env()},
            cwd=self.cfg.project_root,
            log=self.cfg.log_dir / "watchdog.log",
        )

    # --- gateway -----------------------------------------------------------------------
    def gateway_pid(self) -> int | None:
        """The running gateway's pid. The pid file may outlive its process and name a recycled
        pid: only a live process carrying this stack's gateway marker counts (or, started by
        an older devstack, the gateway module with this stack's state folder)."""
        try:
            pid = int(self.cfg.gateway_pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not proc.is_alive(pid):
            return None
        env = proc.environ(pid)
        if env.get(proc.OWNER_ENV) == self.gateway_owner:
            return pid
        if "devstack.stack.gateway" in proc.cmdline(pid) and env.get("RACKPILOT_STACK_DIR") == str(
            self.cfg.state_dir
        ):
            return pid
        return None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.cfg.api_url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start_gateway(self) -> None:
        if self.gateway_pid() and self.healthy():
            return
        self.stop_gateway()
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.cfg.to_env(), "DENO_DIR": str(self.cfg.project_root / ".cache" / "deno")}
        # A daemon: it outlives `rackpilot dev up`, so no parent-death signal (an owner that
        # wants it gone with itself holds a watchdog, see hold()). It leads its own process
        # group, and it and its children carry the gateway marker: stop_gateway() finds them all.
        with open(self.cfg.log_dir / "gateway.log", "ab") as logf:
            gw = proc.spawn(
                [sys.executable, "-m", "devstack.stack.gateway"],
                die_with_parent=False,
                owner=self.gateway_owner,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cfg.project_root,
            )
        self.cfg.gateway_pidfile.write_text(str(gw.pid))
        try:
            deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
            while time.monotonic() < deadline:
                if gw.poll() is not None:
                    raise StackError(
                        f"the gateway exited with {gw.returncode}; see {self.cfg.log_dir / 'gateway.log'}"
                    )
                if self.healthy():
                    return
                time.sleep(0.1)
            raise StackError(f"the gateway did not become healthy in {GATEWAY_START_TIMEOUT_S}s")
        except BaseException:
            self.stop_gateway()  # what this call started, router included
            raise

    def stop_gateway(self) -> None:
        """Stop the gateway and everything it started: SIGTERM to its process group (its
        lifespan shutdown stops the functions router), SIGKILL after GATEWAY_STOP_TIMEOUT_S;
        then whatever still carries the gateway marker - a router whose gateway was
        SIGKILLed and so never stopped it, whatever its pid file says."""
        pid = self.gateway_pid()
        if pid is not None:
            proc.stop_group(pid, GATEWAY_STOP_TIMEOUT_S)
        proc.stop_owned(self.gateway_owner, GATEWAY_STOP_TIMEOUT_S)
        self.cfg.gateway_pidfile.unlink(missing_ok=True)

    def status(self) -> dict:
        running = self.pg.initialised() and self.pg.running()
        out = {
            "state_dir": str(self.cfg.state_dir),
            "postgres": "running" if running else "stopped",
            "postgres_port": self.cfg.db_port,
            "gateway": "healthy" if self.healthy() else ("running" if self.gateway_pid() else "stopped"),
            "api_url": self.cfg.api_url,
        }
        if running:
            try:
                out["schema"] = self.schema_status().as_dict()
            except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
                out["schema"] = {"state": "unknown", "error": str(exc).splitlines()[0]}
        else:
            ledger = migrations.Ledger.load(self.cfg.state_dir)
            repo = migrations.repository(self.migrations_dir)
            out["schema"] = {
                "state": "creation failed (next dev up starts clean)"
                if ledger.creating
                else "unknown (postgres is stopped)",
                "repository_version": repo[-1].version if repo else None,
                "made_by": ledger.made_by,
                "made_by_this_checkout": ledger.made_by in (None, str(self.cfg.project_root)),
            }
        return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def ephemeral_config(state_dir: Path) -> StackConfig:
    """A config on free ports in its own folder, for tests and benchmarks. Every simulated
    user there signs in from 127.0.0.1, so the per-IP auth rate limits are raised (the
    per-address failed sign-in limit stays as configured)."""
    env = dict(os.environ)
    env.update(
        {
            "RACKPILOT_STACK_DIR": str(state_dir),
            "RACKPILOT_API_PORT": str(free_port()),
            "RACKPILOT_DB_PORT": str(free_port()),
        }
    )
    env.setdefault("RACKPILOT_AUTH_SIGN_IN_LIMIT", str(TEST_IP_RATE_LIMIT))
    env.setdefault("RACKPILOT_AUTH_REFRESH_LIMIT", str(TEST_IP_RATE_LIMIT))
    return StackConfig.from_env(env)
