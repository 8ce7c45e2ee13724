"""The whole local stack: Postgres + platform bootstrap + migrations + the gateway process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .config import HOST, StackConfig
from .postgres import PostgresCluster, PostgresError
from .secrets import StackSecrets

GATEWAY_START_TIMEOUT_S = 60  # seconds to wait for /health after starting the gateway
GATEWAY_STOP_TIMEOUT_S = 15  # seconds between SIGTERM and SIGKILL for the gateway


class StackError(RuntimeError):
    """The local stack could not be brought up, reset or taken down."""


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
        exe = self.cfg.project_root / "node_modules" / ".bin" / "supabase"
        if not exe.exists():
            raise StackError("the Supabase CLI is not installed: run scripts/setup.sh (make setup)")
        res = subprocess.run([str(exe), *args], cwd=self.cfg.project_root, env=self.cli_env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            out = (res.stderr or res.stdout).strip().replace(self.secrets.postgres_password, "***")
            raise StackError(f"supabase {' '.join(args[:2])} failed:\n{out}")
        return res

    @property
    def cli_db_url(self) -> str:
        return self.pg.dsn() + "?sslmode=disable"

    # --- lifecycle ---------------------------------------------------------------------
    def up(self, reset: bool = False) -> None:
        fresh = not self.pg.initialised()
        try:
            self.pg.init()
            self.pg.start()
            self.pg.bootstrap()
        except PostgresError as exc:
            raise StackError(str(exc)) from exc
        if fresh or reset:
            self.migrate()
        self.start_gateway()

    def migrate(self) -> None:
        """Apply migrations and seed with the real Supabase CLI (``db reset``)."""
        self.supabase_cli("db", "reset", "--db-url", self.cli_db_url, "--yes")
        self.pg.psql(sql="notify pgrst, 'reload schema'")

    def reset(self) -> None:
        if not self.pg.running():
            raise StackError("the stack is not running: rackpilot dev up")
        self.pg.bootstrap()
        self.migrate()

    def down(self) -> None:
        self.stop_gateway()
        self.pg.stop()

    def destroy(self) -> None:
        self.stop_gateway()
        self.pg.destroy()

    # --- gateway -----------------------------------------------------------------------
    def gateway_pid(self) -> int | None:
        try:
            pid = int(self.cfg.gateway_pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

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
        logf = open(self.cfg.log_dir / "gateway.log", "ab")
        env = {**os.environ, **self.cfg.to_env(), "DENO_DIR": str(self.cfg.project_root / ".cache" / "deno")}
        proc = subprocess.Popen([sys.executable, "-m", "devstack.stack.gateway"], env=env,
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.cfg.project_root)
        logf.close()
        self.cfg.gateway_pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"the gateway exited with {proc.returncode}; see {self.cfg.log_dir / 'gateway.log'}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise StackError(f"the gateway did not become healthy in {GATEWAY_START_TIMEOUT_S}s")

    def stop_gateway(self) -> None:
        pid = self.gateway_pid()
        if pid is None:
            self.cfg.gateway_pidfile.unlink(missing_ok=True)
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + GATEWAY_STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                # reap if it is our child
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cfg.gateway_pidfile.unlink(missing_ok=True)

    def status(self) -> dict:
        return {
            "state_dir": str(self.cfg.state_dir),
            "postgres": "running" if self.pg.initialised() and self.pg.running() else "stopped",
            "postgres_port": self.cfg.db_port,
            "gateway": "healthy" if self.healthy() else ("running" if self.gateway_pid() else "stopped"),
            "api_url": self.cfg.api_url,
        }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def ephemeral_config(state_dir: Path) -> StackConfig:
    """A config on free ports in its own folder, for tests and benchmarks."""
    env = dict(os.environ)
    env.update({"RACKPILOT_STACK_DIR": str(state_dir), "RACKPILOT_API_PORT": str(free_port()),
                "RACKPILOT_DB_PORT": str(free_port())})
    return StackConfig.from_env(env)
