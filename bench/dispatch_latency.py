"""Dispatch latency: from a job's creation returning to its first step reported running.

Starts its own ephemeral local stack and one real executor process (``python -m executor``)
per phase, then creates JOBS ``selftest`` jobs one after another, spaced so that they never
queue behind each other:

- ``realtime``: the executor is woken by the Realtime change feed (its poll fallback stays
  at 5 s and rarely gets the chance);
- ``polling``: Realtime off, claims only every 5 s (``RACKPILOT_POLL_INTERVAL=5``).

Each job's first step ends it (``fail_at: preflight``): what is measured is dispatch, and
the later steps of one job must not compete with the next job's dispatch on a small host.
Jobs are created with a service-role insert through REST (``create-job`` does not take the
``selftest`` type). The first WARMUP jobs of each phase are not measured. "Creation returned" is the client's clock when the insert's response
arrived; "first step running" is the ``started_at`` the database stamped on the job's first
``workflow_executions`` row (same host, same clock). Prints ONE JSON line.

    .venv/bin/python bench/dispatch_latency.py [--jobs 200] [--spacing-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from supabase import create_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack.stack.stack import Stack, ephemeral_config  # noqa: E402

POLL_S = 5.0
WARMUP = 5  # jobs per phase not measured: first connections, first plans of the RPCs


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def query(dsn: str, sql: str, *args):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def run_phase(stack: Stack, tmp: Path, label: str, realtime: bool, jobs: int, spacing: float) -> list[float]:
    env_s = stack.env()
    site = f"bench-{label}"
    site_id = query(
        env_s["SUPABASE_DB_URL"], "insert into public.sites (name) values (%s) returning id::text", site
    )[0][0]
    d = tmp / label
    d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
    env.update(
        {
            "RACKPILOT_SUPABASE_URL": env_s["SUPABASE_URL"],
            "RACKPILOT_SUPABASE_KEY": env_s["SUPABASE_SERVICE_ROLE_KEY"],
            "RACKPILOT_SITE": site,
            "RACKPILOT_STATE_DIR": str(d / "state"),
            "RACKPILOT_LOG_FILE": str(d / "log"),
            "RACKPILOT_LOG_LEVEL": "WARNING",
            "RACKPILOT_POLL_INTERVAL": str(POLL_S),
            "RACKPILOT_REALTIME_ENABLED": "true" if realtime else "false",
            "RACKPILOT_NOTIFY_ENABLED": "false",
            "RACKPILOT_MAX_CONCURRENT_JOBS": "16",
            # the selftest job type runs only on an executor started for tests
            "RACKPILOT_ENABLE_SELFTEST": "true",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "executor"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        # registered (and, with Realtime, subscribed) before the clock starts
        while not query(
            env_s["SUPABASE_DB_URL"], "select 1 from public.executors where site_id = %s", site_id
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{label}: the executor did not register")
            time.sleep(0.1)
        time.sleep(2.0 if realtime else 0.5)
        client = create_client(env_s["SUPABASE_URL"], env_s["SUPABASE_SERVICE_ROLE_KEY"])
        created: dict[str, float] = {}
        for i in range(WARMUP + jobs):
            row = {
                "type": "selftest",
                "site_id": site_id,
                # the first step ends the job, so later steps never compete with the next dispatch
                "params": {"counter_file": f"c{i % 16}", "fail_at": "preflight"},
            }  # under <state_dir>/selftest
            job_id = client.table("jobs").insert(row).execute().data[0]["id"]
            if i >= WARMUP:
                created[job_id] = time.time()
            time.sleep(spacing)
        deadline = time.monotonic() + POLL_S * 3 + 30
        while True:
            rows = query(
                env_s["SUPABASE_DB_URL"],
                "select w.job_id::text, extract(epoch from min(w.started_at)) from public.workflow_executions "
                "w join public.jobs j on j.id = w.job_id where j.site_id = %s group by w.job_id",
                site_id,
            )
            rows = [r for r in rows if r[0] in created]
            if len(rows) == jobs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if len(rows) != jobs:
            raise RuntimeError(f"{label}: only {len(rows)} of {jobs} jobs started")
        return [(float(started) - created[job_id]) * 1000 for job_id, started in rows]
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--spacing-ms", type=float, default=100.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-bench-dispatch-"))
    os.chmod(tmp, 0o755)
    stack = Stack(ephemeral_config(tmp / "stack"))
    try:
        stack.up()
        rt = run_phase(stack, tmp, "realtime", True, args.jobs, args.spacing_ms / 1000)
        poll = run_phase(stack, tmp, "polling", False, args.jobs, args.spacing_ms / 1000)
    finally:
        stack.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "bench": "dispatch_latency",
        "jobs": args.jobs,
        "warmup_jobs": WARMUP,
        "create": "service_role_rest_insert",
        "measure": "creation returned -> first step running",
        "poll_interval_s": POLL_S,
        "realtime_p50_ms": round(pct(rt, 0.5), 1),
        "realtime_p99_ms": round(pct(rt, 0.99), 1),
        "polling_p50_ms": round(pct(poll, 0.5), 1),
        "polling_p99_ms": round(pct(poll, 0.99), 1),
    }
    out["ratio_p50"] = round(out["polling_p50_ms"] / max(out["realtime_p50_ms"], 0.1), 1)
    out["ratio_p99"] = round(out["polling_p99_ms"] / max(out["realtime_p99_ms"], 0.1), 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
