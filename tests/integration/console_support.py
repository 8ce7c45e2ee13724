"""Set-up shared by the console's integration, notebook and browser tests: a small fleet
(from the functions tests' seeding), users of every role signed in through the console,
and helpers that act as the executor would (direct SQL as the database owner)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from console.api import Api
from console.session import ConsoleConfig, Session, sign_in
from devstack.cli import add_user
from tests.integration._functions_support import Fleet, db, new_tag, q, seed_fleet

PASSWORD = "console-test-pw-1"
ROLES = ("viewer", "operator", "approver", "approver2", "admin")
CATALOG = "https://downloads.example.com/Catalog.xml.gz"


@dataclass
class ConsoleEnv:
    conn: Any
    fleet: Fleet
    tag: str
    config: ConsoleConfig
    emails: dict[str, str]
    sessions: dict[str, Session]
    user_ids: dict[str, str]

    def api(self, role: str) -> Api:
        return Api(self.sessions[role])

    def close(self) -> None:
        """Sign every role's session out and close the database connection."""
        for s in self.sessions.values():
            s.sign_out()
        self.conn.close()


def make_console_env(stack) -> ConsoleEnv:
    conn = db(stack)
    tag = new_tag()
    fleet = seed_fleet(conn, tag)
    env = stack.env()
    config = ConsoleConfig(env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"])
    emails, sessions, uids = {}, {}, {}
    for role in ROLES:
        email = f"{role}-{tag}@console.test"
        uids[role] = add_user(stack, email, "approver" if role == "approver2" else role, PASSWORD)
        emails[role] = email
        sessions[role] = sign_in(config, email, PASSWORD)
    return ConsoleEnv(conn, fleet, tag, config, emails, sessions, uids)


def approved_window(ce: ConsoleEnv, cluster: str | None = None, hours: float = 3.0) -> str:
    """A window open now, requested by the operator and approved by an approver."""
    starts = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ends = starts + dt.timedelta(hours=hours)
    wid = str(
        q(
            ce.conn,
            "insert into public.maintenance_windows (site_id, cluster_id, title, starts_at, ends_at, "
            "requested_by) values (%s, %s, 'console test', %s, %s, %s) returning id",
            ce.fleet.site_a,
            cluster,
            starts,
            ends,
            ce.user_ids["operator"],
        )[0]["id"]
    )
    q(
        ce.conn,
        "update public.maintenance_windows set status = 'approved', approved_by = %s where id = %s",
        ce.user_ids["approver"],
        wid,
    )
    return wid


def claim(ce: ConsoleEnv, job_id: str) -> None:
    """Move a pending job to running as the executor would after a claim."""
    q(
        ce.conn,
        "update public.jobs set status = 'running', claimed_by = %s, lease_expires_at = now() + interval '60 s',"
        " attempts = attempts + 1, started_at = coalesce(started_at, now()) where id = %s",
        ce.fleet.executor,
        job_id,
    )


def add_step(ce: ConsoleEnv, job_id: str, seq: int, key: str, name: str, status: str = "running") -> str:
    return str(
        q(
            ce.conn,
            "insert into public.workflow_executions (job_id, seq, step_key, name, status, started_at) "
            "values (%s, %s, %s, %s, %s, now()) returning id",
            job_id,
            seq,
            key,
            name,
            status,
        )[0]["id"]
    )


def scp_job(ce: ConsoleEnv, server: str | None = None) -> str:
    server = server or ce.fleet.standalone_server
    res = ce.api("operator").create_job(
        "scp_backup", {"server_ids": [server]}, description=f"console {ce.tag}"
    )
    return str(res["job_id"])


def job_row(ce: ConsoleEnv, job_id: str) -> dict:
    return q(ce.conn, "select * from public.jobs where id = %s", job_id)[0]


def jobs_count(ce: ConsoleEnv) -> int:
    return int(
        q(ce.conn, "select count(*) as n from public.jobs where site_id = %s", ce.fleet.site_a)[0]["n"]
    )


def as_json(x: Any) -> str:
    return json.dumps(x, default=str)


def report_history(ce: ConsoleEnv) -> str:
    """What the Reports' history charts draw: one inventory_refresh run as the executor ends
    it (the standalone server read at a BIOS older than the site's catalog, so the database
    records it outdated), and three syncs of the replication pair with their lag. Returns
    the inventory job's id."""
    solo = ce.fleet.standalone_server
    cat = q(
        ce.conn,
        "insert into public.firmware_catalogs (site_id, name, url) values (%s, %s, %s) returning id",
        ce.fleet.site_a,
        f"history-{ce.tag}",
        CATALOG,
    )[0]["id"]
    q(
        ce.conn,
        "insert into public.firmware_packages (catalog_id, component, version, path, criticality) "
        "values (%s, 'BIOS', '2.20.1', 'bios.exe', 'urgent')",
        cat,
    )
    job = str(
        q(
            ce.conn,
            "insert into public.jobs (type, site_id, params, created_by) "
            "values ('inventory_refresh', %s, %s::jsonb, %s) returning id",
            ce.fleet.site_a,
            json.dumps({"server_ids": [str(solo)]}),
            ce.user_ids["operator"],
        )[0]["id"]
    )
    claim(ce, job)
    q(ce.conn, "delete from public.server_firmware where server_id = %s", solo)
    q(
        ce.conn,
        "insert into public.server_firmware (server_id, component, version) values (%s, 'BIOS', '2.19.1')",
        solo,
    )
    q(ce.conn, "update public.servers set last_seen_at = now() where id = %s", solo)
    q(ce.conn, "update public.jobs set status = 'completed', finished_at = now() where id = %s", job)
    for hours_ago, lag in ((5, 600), (4, 1800), (3, 5400)):
        q(
            ce.conn,
            "insert into public.replication_runs (pair_id, site_id, status, kind, bytes, lag_seconds, "
            "finished_at) values (%s, %s, 'succeeded', 'incremental', 4096, %s, "
            "now() - make_interval(hours => %s))",
            ce.fleet.replication_pair,
            ce.fleet.site_a,
            lag,
            hours_ago,
        )
    return job
