"""Test harness for the executor against the real local stack.

Executors run as real ``python -m executor`` processes (so they can be SIGKILLed), talking
to the stack's gateway with the service key like production. The harness itself reads the
database directly as ``postgres`` for assertions, and does the few things only an
operator or the clock would do: force a lease to expire, run lease recovery, force_resume.
Jobs are created with a service-role insert through REST (``create-job`` does not take
the ``selftest`` type, which is not an operator job). Executors run with
``RACKPILOT_ENABLE_SELFTEST=true``, the test-only flag that lets them take it; a selftest
job's files live in the executor's ``<state_dir>/selftest/``, which the harness links to
one shared folder (``Harness.selftest_dir``) so that executors taking a job over from one
another append to the same counter. Paths in selftest params are relative to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras

from devstack.proc import spawn
from supabase import create_client

ROOT = Path(__file__).resolve().parents[2]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ExecutorProc:
    def __init__(self, harness: Harness, name: str, **settings: Any):
        self.name = name
        self.dir = harness.tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.dir / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        if not (state / "selftest").is_symlink():
            (state / "selftest").symlink_to(harness.selftest_dir, target_is_directory=True)
        self.log = self.dir / "executor.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
        env.update(
            {
                "RACKPILOT_SUPABASE_URL": harness.env["SUPABASE_URL"],
                "RACKPILOT_SUPABASE_KEY": harness.env["SUPABASE_SERVICE_ROLE_KEY"],
                "RACKPILOT_SITE": harness.site_name,
                "RACKPILOT_EXECUTOR_NAME": name,
                "RACKPILOT_STATE_DIR": str(self.dir / "state"),
                "RACKPILOT_LOG_FILE": str(self.log),
                "RACKPILOT_LOG_LEVEL": "INFO",
                "RACKPILOT_POLL_INTERVAL": "0.5",
                "RACKPILOT_HEARTBEAT_INTERVAL": "1",
                "RACKPILOT_RECOVERY_INTERVAL": "0.5",
                "RACKPILOT_SHUTDOWN_GRACE": "5",
                "RACKPILOT_CONTROL_RETRY_MAX": "1",
                "RACKPILOT_NOTIFY_INTERVAL": "0.2",
                "RACKPILOT_NOTIFY_BACKOFF_INITIAL": "0.2",
                "RACKPILOT_ENABLE_SELFTEST": "true",  # test-only job type; off by default
            }
        )
        env.update({f"RACKPILOT_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.stdout = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - closed in wait()
        # dies with this test process even when it is killed (PR_SET_PDEATHSIG): a killed
        # run left executors polling a destroyed stack
        self.proc = spawn(
            [sys.executable, "-m", "executor"],
            new_session=False,
            env=env,
            cwd=ROOT,
            stdout=self.stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        harness.procs.append(self)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = 20) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"executor {self.name} exited {self.proc.returncode}:\n"
                    f"{(self.dir / 'stdout.log').read_text()[-2000:]}"
                )
            return needle in self.log_text()

        wait_until(seen, timeout, f"{needle!r} in {self.name}'s log")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.stdout.close()

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.stdout.close()
        return rc


class Harness:
    def __init__(self, stack: Any, tmp: Path):
        self.stack = stack
        self.env = stack.env()
        self.tmp = tmp
        #: every executor's <state_dir>/selftest links here; selftest params are relative to it
        self.selftest_dir = tmp / "selftest"
        self.selftest_dir.mkdir(mode=0o700, exist_ok=True)
        self.procs: list[ExecutorProc] = []
        self.site_name = f"exec-{uuid.uuid4().hex[:10]}"
        self.client = create_client(self.env["SUPABASE_URL"], self.env["SUPABASE_SERVICE_ROLE_KEY"])
        self.site_id = self.one("insert into public.sites (name) values (%s) returning id", self.site_name)[
            "id"
        ]

    def spawn(self, name: str, **settings: Any) -> ExecutorProc:
        return ExecutorProc(self, name, **settings)

    # database (test side only) ----------------------------------------------------------
    def _conn(self):
        conn = psycopg2.connect(self.env["SUPABASE_DB_URL"])
        conn.autocommit = True
        return conn

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        for attempt in range(50):  # Postgres may be restarting in the fault tests
            try:
                conn = self._conn()
                break
            except psycopg2.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(sql, args)
                return [dict(r) for r in cur.fetchall()] if cur.description else []
        finally:
            conn.close()

    def one(self, sql: str, *args: Any) -> dict[str, Any]:
        rows = self.query(sql, *args)
        assert len(rows) == 1, rows
        return rows[0]

    # jobs ---------------------------------------------------------------------------------
    def create_job(self, params: dict[str, Any], **cols: Any) -> str:
        """A selftest job, inserted with the service key through REST."""
        row = {"type": "selftest", "site_id": self.site_id, "params": params, **cols}
        return self.client.table("jobs").insert(row).execute().data[0]["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.one("select * from public.jobs where id = %s", job_id)

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        return self.query("select * from public.workflow_executions where job_id = %s order by seq", job_id)

    def wait_status(self, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (j := self.job(job_id))["status"] in statuses and j,
            timeout,
            f"job {job_id} to reach {statuses}",
            interval=0.1,
        )

    def expire_and_recover(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """What the clock and lease recovery do once an executor is gone."""
        self.query(
            "update public.jobs set lease_expires_at = now() - interval '1 second' "
            "where id = any(%s::uuid[]) and status = 'running'",
            job_ids,
        )
        # recovery takes every expired lease in the database: keep the rows of these jobs
        # (another test's leftover job may be recovered in the same call)
        wanted = {str(j) for j in job_ids}
        return [
            r
            for r in self.query("select * from public.recover_expired_leases()")
            if str(r["job_id"]) in wanted
        ]

    def force_resume(self, job_id: str, note: str) -> None:
        self.query("select public.force_resume(%s, %s)", job_id, note)

    def close(self) -> None:
        for p in self.procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
            if not p.stdout.closed:
                p.stdout.close()


def effects(counter: Path) -> list[tuple[str, str, str, int]]:
    """(event, step, job_id, pid) lines of a selftest side-effect counter."""
    if not counter.exists():
        return []
    out = []
    for line in counter.read_text().splitlines():
        event, step, job_id, pid = line.split()
        out.append((event, step, job_id, int(pid)))
    return out
