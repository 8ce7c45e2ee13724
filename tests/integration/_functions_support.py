"""Shared set-up for the edge function integration tests (tests/integration/test_functions_*.py).

A small fleet is written straight into Postgres as the superuser, the way the executor's
sync jobs would fill it: two sites; at site A one vCenter with two clusters of three ESXi
hosts each (every host on a Dell server), a standalone server and a replication pair; at
site B one server. Users of every application role sign in through Auth and call the
functions with supabase-py, exactly as the notebooks do.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg2
import psycopg2.extras
from supabase import Client, create_client
from supabase_functions.errors import FunctionsHttpError

from devstack.cli import add_user

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
    vms: dict[str, str] = field(default_factory=dict)  # vm id -> host id


def db(stack) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    return conn


def q(conn, sql: str, *args: Any) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, args)
        return [dict(r) for r in cur.fetchall()] if cur.description else []


def seed_fleet(conn, tag: str) -> Fleet:
    """A fresh fleet whose names carry ``tag`` (tests of one session share a database)."""
    def one(sql: str, *args: Any) -> str:
        return str(q(conn, sql + " returning id", *args)[0]["id"])

    site_a = one("insert into public.sites (name) values (%s)", f"site-a-{tag}")
    site_b = one("insert into public.sites (name) values (%s)", f"site-b-{tag}")
    vc = one("insert into public.vcenters (site_id, name, address) values (%s, %s, %s)", site_a, f"vc-{tag}",
             f"vc-{tag}.example")
    clusters, hosts, host_servers, vms = [], {}, {}, {}
    for c in range(2):
        cid = one("insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, %s, %s)",
                  vc, site_a, f"cl{c}-{tag}", f"domain-c{c}")
        clusters.append(cid)
        hosts[cid] = []
        for h in range(3):
            sid = one("insert into public.servers (site_id, name, idrac_address) values (%s, %s, %s)",
                      site_a, f"srv-{c}{h}-{tag}", f"10.{c}.{h}.1-{tag}")
            hid = one("insert into public.esxi_hosts (vcenter_id, cluster_id, server_id, name, moref) "
                      "values (%s, %s, %s, %s, %s)", vc, cid, sid, f"esx-{c}{h}-{tag}", f"host-{c}{h}")
            hosts[cid].append(hid)
            host_servers[hid] = sid
            vm = one("insert into public.vms (vcenter_id, host_id, name, moref, has_usb_passthrough) "
                     "values (%s, %s, %s, %s, true)", vc, hid, f"vm-{c}{h}-{tag}", f"vm-{c}{h}")
            vms[vm] = hid
    standalone = one("insert into public.servers (site_id, name, idrac_address) values (%s, %s, %s)",
                     site_a, f"srv-solo-{tag}", f"10.9.9.9-{tag}")
    server_b = one("insert into public.servers (site_id, name, idrac_address) values (%s, %s, %s)",
                   site_b, f"srv-b-{tag}", f"10.8.8.8-{tag}")
    pair = one("insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
               "target_dataset) values (%s, %s, 'zfs1', 'tank/vm', 'zfs2', 'backup/vm')", site_a, f"rep-{tag}")
    return Fleet(site_a, site_b, vc, clusters, hosts, host_servers, standalone, server_b, pair, vms)


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

    def call(self, name: str, body: Any, token: str | None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
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


def counts(conn) -> dict[str, int]:
    """Rows in every table a function may write: the 'nothing written' oracle."""
    tables = ["jobs", "job_tasks", "maintenance_windows", "blocker_resolutions", "credential_sets",
              "notification_settings", "audit_log"]
    extra = q(conn, "select to_regclass('public.credential_envelopes') is not null as ok")[0]["ok"]
    if extra:
        tables.append("credential_envelopes")
    return {t: q(conn, f"select count(*)::int as n from public.{t}")[0]["n"] for t in tables}


def new_tag() -> str:
    return uuid.uuid4().hex[:8]
