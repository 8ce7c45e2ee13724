"""A private Postgres 15 cluster for the local stack (loopback only, logical WAL).

Runs Debian's PostgreSQL 15 binaries on a data directory inside the stack's state
folder. initdb refuses to run as root, so when invoked as root the cluster is owned and
run by an unprivileged system account (``postgres`` from Debian's package).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .config import HOST, StackConfig
from .secrets import StackSecrets

PG_BIN = Path(os.environ.get("RACKPILOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
PLATFORM_SQL = Path(__file__).with_name("platform.sql")
START_TIMEOUT_S = 60  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT_S = 30  # seconds pg_ctl waits for a fast shutdown before an immediate one


class PostgresError(RuntimeError):
    """The local cluster could not be created, started or bootstrapped."""


def _run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresError("running as root and no unprivileged 'postgres' account exists")


class PostgresCluster:
    def __init__(self, cfg: StackConfig, secrets: StackSecrets):
        self.cfg = cfg
        self.secrets = secrets
        self.user = _run_as_user()

    # --- helpers ---------------------------------------------------------------------
    def _cmd(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(argv, **kw)

    @property
    def datadir(self) -> Path:
        """The data directory. When the state folder is not reachable by the unprivileged
        account (a private home, say), the data lives under /var/tmp and the state folder
        holds a symlink to it."""
        return self.cfg.pgdata

    def dsn(self, user: str = "postgres", password: str | None = None, database: str = "postgres") -> str:
        if password is None:
            password = {
                "postgres": self.secrets.postgres_password,
                "authenticator": self.secrets.authenticator_password,
            }[user]
        return f"postgresql://{user}:{password}@{HOST}:{self.cfg.db_port}/{database}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": HOST,
            "PGPORT": str(self.cfg.db_port),
            "PGUSER": "postgres",
            "PGPASSWORD": self.secrets.postgres_password,
            "PGDATABASE": "postgres",
        }

    def psql(self, *args: str, sql: str | None = None, check: bool = True) -> str:
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *args]
        if sql is not None:
            argv += ["-c", sql]
        res = subprocess.run(argv, env=self.env(), capture_output=True, text=True)
        if check and res.returncode != 0:
            raise PostgresError(f"psql failed: {res.stderr.strip()}")
        return res.stdout

    # --- lifecycle -------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def _prepare_datadir(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        target = self.datadir
        if self.user is None:
            target.mkdir(mode=0o700, exist_ok=True)
            return
        # The unprivileged account must be able to reach the data directory.
        probe = self._cmd(["test", "-w", str(self.cfg.state_dir)])
        if probe.returncode != 0:
            digest = hashlib.sha256(str(self.cfg.state_dir).encode()).hexdigest()[:12]
            real = Path("/var/tmp") / f"rackpilot-pgdata-{digest}"
            if real.exists():
                shutil.rmtree(real)
            real.mkdir(mode=0o700)
            shutil.chown(real, self.user, self.user)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(real)
        else:
            target.mkdir(mode=0o700, exist_ok=True)
            shutil.chown(target, self.user, self.user)

    def init(self) -> None:
        if self.initialised():
            return
        self._prepare_datadir()
        # The password file must be readable by the account that runs initdb, and only by it:
        # a private temporary file owned by that account (the state folder may be out of its reach).
        fd, name = tempfile.mkstemp(prefix="rackpilot-pw-")
        pwfile = Path(name)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.secrets.postgres_password + "\n")
        if self.user:
            shutil.chown(pwfile, self.user, self.user)
        try:
            res = self._cmd(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.datadir.resolve()),
                    "-U",
                    "postgres",
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise PostgresError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        conf = self.datadir / "postgresql.conf"
        extra = f"""
# --- rackpilot local stack ---
listen_addresses = '{HOST}'
port = {self.cfg.db_port}
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
max_slot_wal_keep_size = '1GB'
max_connections = 300
shared_buffers = '256MB'
# a disposable development cluster: durability traded for speed (never for data you keep)
fsync = off
synchronous_commit = off
# logical decoding only sees flushed WAL: with async commits the WAL writer's period bounds
# Realtime's commit-to-client latency (default 200ms), so flush often (cheap with fsync off)
wal_writer_delay = '5ms'
full_page_writes = off
log_min_messages = warning
log_min_error_statement = panic
"""
        if self.user:
            self._cmd(["sh", "-c", f"cat >> '{conf.resolve()}'"], input=extra, check=True)
        else:
            with conf.open("a") as fh:
                fh.write(extra)

    def running(self) -> bool:
        res = self._cmd([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir.resolve()), "status"])
        return res.returncode == 0

    def start(self) -> None:
        if self.running():
            return
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        logfile = self.datadir.resolve() / "server.log"
        # pg_ctl daemonizes the postmaster (and runuser changes its uid), so no parent-death
        # signal can reach it: an owner that wants it gone with itself holds a watchdog
        # (Stack.hold). The marker in its environment tells whose it is (devstack.proc).
        res = self._cmd(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir.resolve()),
                "-l",
                str(logfile),
                "-o",
                f"-p {self.cfg.db_port}",
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            env={**os.environ, "RACKPILOT_PROC_OWNER": f"postgres:{self.cfg.state_dir}"},
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            tail = ""
            if logfile.exists():
                tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-10:])
            raise PostgresError(f"postgres did not start: {res.stderr.strip()}\n{tail}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            res = subprocess.run(["pg_isready", "-h", HOST, "-p", str(self.cfg.db_port), "-q"])
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresError("postgres is not accepting connections")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``: connections are cut, nothing is lost);
        when that does not finish in STOP_TIMEOUT_S, ``immediate``."""
        if not self.initialised() or not self.running():
            return
        res = self._cmd(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir.resolve()),
                "-m",
                mode,
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
                "stop",
            ],
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0 and mode != "immediate" and self.running():
            self._cmd(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir.resolve()), "-m", "immediate", "-w", "stop"],
                stdin=subprocess.DEVNULL,
            )
        if self.running():
            raise PostgresError(f"postgres did not stop: {res.stderr.strip()}")

    def restart(self) -> None:
        # -l as in start(): without it the new postmaster keeps our capture pipe open and
        # subprocess.run() would wait for its EOF forever.
        logfile = self.datadir.resolve() / "server.log"
        self._cmd(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir.resolve()),
                "-l",
                str(logfile),
                "-m",
                "fast",
                "-w",
                "-o",
                f"-p {self.cfg.db_port}",
                "restart",
            ]
        )
        self.wait_ready()

    def destroy(self) -> None:
        self.stop("immediate")
        target = self.datadir
        if target.is_symlink():
            real = target.resolve()
            target.unlink()
            shutil.rmtree(real, ignore_errors=True)
        elif target.exists():
            shutil.rmtree(target, ignore_errors=True)

    # --- platform --------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Apply the Supabase platform layer (idempotent) and set role passwords."""
        self.psql("-f", str(PLATFORM_SQL))
        self.psql(sql=f"alter role authenticator with login password '{self.secrets.authenticator_password}'")
        self.psql(sql=f"alter role supabase_admin with login password '{self.secrets.postgres_password}'")
