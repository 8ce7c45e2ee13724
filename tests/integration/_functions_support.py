"""Shared set-up for the edge function integration tests (tests/integration/test_functions_*.py).

A small fleet is written straight into Postgres as the superuser, the way the executor's
sync jobs would fill it: two sites; at site A one vCenter with two clusters of three ESXi
hosts each (every host on a Dell server), a standalone server and a replication pair; at
site B one server. Users of every application role sign in through Auth and call the
functions with supabase-py, exactly as the notebooks do.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg2
import psycopg2.extras
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from supabase_functions.errors import FunctionsHttpError

from devstack.cli import add_user
from executor.secrets import KeyPair
from supabase import Client, create_client

ROLES = ("viewer", "operator", "approver", "admin")
PASSWORD = "functions-test-pw-1"


@dataclass
class Fleet:
    site_a: str
    site_b: str
    vcenter: str
    clusters: list[str]
    hosts: dict[str, list[str]]  # cluster id -> host ids
    host_servers: dict[str, str]  # host id -> server id
    standalone_server: str
    server_b: str
    replication_pair: str
    executor: str
    executor_key: KeyPair
    vms: dict[str, str] = field(default_factory=dict)  # vm id -> host id


def db(stack) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    return conn


def q(conn, sql: str, *args: Any) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, args[0] if len(args) == 1 and isinstance(args[0], dict) else args)
        return [dict(r) for r in cur.fetchall()] if cur.description else []


def seed_fleet(conn, tag: str) -> Fleet:
    """A fresh fleet whose names carry ``tag`` (tests of one session share a database)."""

    def one(sql: str, *args: Any) -> str:
        return str(q(conn, sql + " returning id", *args)[0]["id"])

    site_a = one("insert into public.sites (name) values (%s)", f"site-a-{tag}")
    site_b = one("insert into public.sites (name) values (%s)", f"site-b-{tag}")
    vc = one(
        "insert into public.vcenters (site_id, name, address) values (%s, %s, %s)",
        site_a,
        f"vc-{tag}",
        f"vc-{tag}.example",
    )
    clusters, hosts, host_servers, vms = [], {}, {}, {}
    for c in range(2):
        cid = one(
            "insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, %s, %s)",
            vc,
            site_a,
            f"cl{c}-{tag}",
            f"domain-c{c}",
        )
        clusters.append(cid)
        hosts[cid] = []
        for h in range(3):
            sid = one(
                "insert into public.servers (site_id, name, idrac_address) values (%s, %s, %s)",
                site_a,
                f"srv-{c}{h}-{tag}",
                f"10.{c}.{h}.1-{tag}",
            )
            hid = one(
                "insert into public.esxi_hosts (vcenter_id, cluster_id, server_id, name, moref) "
                "values (%s, %s, %s, %s, %s)",
                vc,
                cid,
                sid,
                f"esx-{c}{h}-{tag}",
                f"host-{c}{h}",
            )
            hosts[cid].append(hid)
            host_servers[hid] = sid
            vm = one(
                "insert into public.vms (vcenter_id, host_id, name, moref, has_usb_passthrough) "
                "values (%s, %s, %s, %s, true)",
                vc,
                hid,
                f"vm-{c}{h}-{tag}",
                f"vm-{c}{h}",
            )
            vms[vm] = hid
    standalone = one(
        "insert into public.servers (site_id, name, idrac_address) values (%s, %s, %s)",
        site_a,
        f"srv-solo-{tag}",
        f"10.9.9.9-{tag}",
    )
    server_b = one(
        "insert into public.servers (site_id, name, idrac_address) values (%s, %s, %s)",
        site_b,
        f"srv-b-{tag}",
        f"10.8.8.8-{tag}",
    )
    pair = one(
        "insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
        "target_dataset) values (%s, %s, 'zfs1', 'tank/vm', 'zfs2', 'backup/vm')",
        site_a,
        f"rep-{tag}",
    )
    key = KeyPair(X25519PrivateKey.generate())
    executor = one(
        "insert into public.executors (site_id, name, public_key, key_id) values (%s, %s, %s, %s)",
        site_a,
        f"exec-{tag}",
        key.public_b64,
        key.kid,
    )
    return Fleet(
        site_a, site_b, vc, clusters, hosts, host_servers, standalone, server_b, pair, executor, key, vms
    )


_slots = itertools.count(1)


def window_slot(hours: float = 1.0) -> tuple[str, str]:
    """A future time range no other call of this process gets (windows must not overlap)."""
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=2, hours=3 * next(_slots))
    return start.isoformat(), (start + dt.timedelta(hours=hours)).isoformat()


def insert_window(
    conn,
    site: str,
    requested_by: str,
    status: str = "requested",
    cluster: str | None = None,
    starts: str | None = None,
    ends: str | None = None,
    approved_by: str | None = None,
) -> str:
    """A maintenance window written directly (as the database owner, so no user context)."""
    if starts is None:
        starts, ends = window_slot()
    wid = str(
        q(
            conn,
            "insert into public.maintenance_windows (site_id, cluster_id, title, starts_at, ends_at, "
            "requested_by) values (%s, %s, 'w', %s, %s, %s) returning id",
            site,
            cluster,
            starts,
            ends,
            requested_by,
        )[0]["id"]
    )
    if status != "requested":
        q(
            conn,
            "update public.maintenance_windows set status = %s, approved_by = %s where id = %s",
            status,
            approved_by,
            wid,
        )
    return wid


def insert_job(
    conn,
    fleet: Fleet,
    status: str = "pending",
    pause_reason: str | None = None,
    server: str | None = None,
    lease_s: int = 60,
) -> str:
    """A job in a given state, driven there through the legal transitions as the executor would."""
    server = server or fleet.standalone_server
    scope = json.dumps({"targets": [{"kind": "server", "id": server, "name": "s"}]})
    jid = str(
        q(
            conn,
            "insert into public.jobs (type, site_id, params, scope) values ('scp_backup', %s, %s, %s) "
            "returning id",
            fleet.site_a,
            json.dumps({"server_ids": [server]}),
            scope,
        )[0]["id"]
    )
    q(
        conn,
        "insert into public.job_tasks (job_id, target_kind, target_id) values (%s, 'server', %s)",
        jid,
        server,
    )
    if status == "pending":
        return jid
    q(
        conn,
        "update public.jobs set status = 'running', claimed_by = %s, lease_expires_at = now() + make_interval(secs => %s),"
        " attempts = 1, started_at = now() where id = %s",
        fleet.executor,
        lease_s,
        jid,
    )
    if status == "paused":
        q(
            conn,
            "update public.jobs set status = 'paused', pause_reason = %s where id = %s",
            pause_reason or "operator",
            jid,
        )
    elif status == "failed":
        q(conn, "update public.jobs set status = 'failed', error = 'lab failure' where id = %s", jid)
    elif status == "completed":
        q(conn, "update public.jobs set status = 'completed' where id = %s", jid)
    return jid


def insert_blocker(conn, job: str, host: str | None, vm: str | None, kind: str = "usb_passthrough") -> str:
    return str(
        q(
            conn,
            "insert into public.job_blockers (job_id, kind, host_id, vm_id, description) "
            "values (%s, %s, %s, %s, 'blocks maintenance mode') returning id",
            job,
            kind,
            host,
            vm,
        )[0]["id"]
    )


@dataclass
class Caller:
    role: str
    email: str
    user_id: str
    client: Client
    token: str


def sign_in_users(stack, tag: str) -> dict[str, Caller]:
    env = stack.env()
    out: dict[str, Caller] = {}
    for role in (*ROLES, "approver2"):
        app_role = "approver" if role == "approver2" else role
        email = f"{role}-{tag}@functions.test"
        uid = add_user(stack, email, app_role, PASSWORD)
        client = create_client(env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"])
        session = client.auth.sign_in_with_password({"email": email, "password": PASSWORD}).session
        out[role] = Caller(role, email, uid, client, session.access_token)
    return out


def invoke(caller: Caller, name: str, body: Any) -> tuple[int, dict]:
    """Call a function through supabase-py; returns (status, JSON body)."""
    try:
        data = caller.client.functions.invoke(name, {"body": body, "responseType": "json"})
        return 200, data
    except FunctionsHttpError as exc:
        return exc.status, {"error": exc.message}


class Raw:
    """The same calls over one kept-alive httpx connection, when the test needs the status
    code and the whole error body (supabase-py keeps only the message)."""

    def __init__(self, stack):
        env = stack.env()
        self.base = env["SUPABASE_URL"] + "/functions/v1/"
        self.anon = env["SUPABASE_ANON_KEY"]
        self.http = httpx.Client(timeout=30)

    def call(
        self,
        name: str,
        body: Any,
        token: str | None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict]:
        h = {"apikey": self.anon, "content-type": "application/json"}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        h.update(headers or {})
        content = raw if raw is not None else json.dumps(body).encode()
        r = self.http.post(self.base + name, content=content, headers=h)
        try:
            data = r.json()
        except ValueError:
            data = {"_text": r.text}
        return r.status_code, data

    def close(self) -> None:
        self.http.close()


def counts(env: FnEnv) -> dict[str, int]:
    """Rows this test's fleet and users have in every table a function may write: the
    'nothing written' oracle. Scoped to the test's own sites and users, so that other
    suites sharing the database (an executor's heartbeats, say) cannot disturb it."""
    f = env.fleet
    sites = [f.site_a, f.site_b]
    users = [c.user_id for c in env.users.values()]
    row = q(
        env.conn,
        """
        select (select count(*) from public.jobs where site_id = any(%(s)s::uuid[]))::int as jobs,
               (select count(*) from public.job_tasks t join public.jobs j on j.id = t.job_id
                 where j.site_id = any(%(s)s::uuid[]))::int as job_tasks,
               (select count(*) from public.maintenance_windows where site_id = any(%(s)s::uuid[]))::int as windows,
               (select coalesce(sum(hashtext(status::text)), 0) from public.maintenance_window_series
                 where site_id = any(%(s)s::uuid[]))::bigint as window_series,
               (select count(*) from public.blocker_resolutions r join public.jobs j on j.id = r.job_id
                 where j.site_id = any(%(s)s::uuid[]))::int as blocker_resolutions,
               (select count(*) from public.credential_sets where site_id = any(%(s)s::uuid[]))::int as credential_sets,
               (select count(*) from public.credential_envelopes e join public.credential_sets c
                    on c.id = e.credential_set_id where c.site_id = any(%(s)s::uuid[]))::int as credential_envelopes,
               (select count(*) from public.notification_settings where created_by = any(%(u)s::uuid[])
                    or name like %(tag)s)::int as notification_settings,
               (select count(*) from public.audit_log where actor_id = any(%(u)s::uuid[]))::int as audit_log,
               (select count(*) from public.job_schedules where site_id = any(%(s)s::uuid[]))::int as job_schedules,
               (select coalesce(sum(hashtext(status::text || coalesce(cancel_requested_at::text, '')
                        || coalesce(pause_requested_at::text, ''))), 0) from public.jobs
                 where site_id = any(%(s)s::uuid[]))::bigint as job_states""",
        {"s": sites, "u": users, "tag": f"%{env.tag}%"},
    )
    return row[0]


def new_tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class FnEnv:
    stack: Any
    conn: Any
    fleet: Fleet
    users: dict[str, Caller]
    raw: Raw
    tag: str


def make_env(stack) -> FnEnv:
    conn = db(stack)
    tag = new_tag()
    return FnEnv(stack, conn, seed_fleet(conn, tag), sign_in_users(stack, tag), Raw(stack), tag)


def close_env(env: FnEnv) -> None:
    env.raw.close()
    env.conn.close()
