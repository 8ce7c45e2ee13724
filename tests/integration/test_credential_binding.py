"""A secret goes only where its sealer said (DESIGN.md §4, docs/security.md).

The attack: point a target that carries an admin-sealed credential at a host of one's own
(or relax its TLS trust), then have the executor use the credential there. Two layers:

* the database: an operator cannot change a target's address, TLS trust or credential
  binding (REST under RLS as an operator; policies/access.yaml ``bindings``);
* the executor: whoever changed the row (an admin without resealing, or a compromised
  control plane writing with the service key), it presents the secret only to the
  endpoints sealed inside the envelope, and refuses before it connects. A real TCP
  listener on loopback records every connection: nothing may reach it.

Everything real: the local stack, encrypt-credentials sealing as an admin, create-job as an
operator, a ``python -m executor`` process and the simulated iDRAC lab (DellEnv).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from typing import Any

import pytest
from postgrest.exceptions import APIError

from devstack.cli import add_user
from supabase import create_client

from ._handlers_dell import DellEnv


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection and the bytes it got."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections: list[bytearray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            got = bytearray()
            self.connections.append(got)  # recorded on accept, before a byte is read
            conn.settimeout(1)
            try:
                while chunk := conn.recv(65536):
                    got += chunk
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class World:
    def __init__(self, stack: Any) -> None:
        self.env = DellEnv(stack, bmcs=6)
        self.h = self.env.h
        self.listener = Listener()
        self.ca = self.env.tmp / "lab-ca.pem"
        self.ca.write_text(
            "-----BEGIN CERTIFICATE-----\nnot used: the executor refuses before any handshake\n"
            "-----END CERTIFICATE-----\n"
        )
        url, anon = self.h.env["SUPABASE_URL"], self.h.env["SUPABASE_ANON_KEY"]
        self.users = {}
        for role in ("operator", "admin"):
            email, pw = f"bind-{role}-{self.h.site_name}@lab.test", f"bind-{role}-pw-1"
            add_user(stack, email, role, pw)
            c = create_client(url, anon)
            c.auth.sign_in_with_password({"email": email, "password": pw})
            self.users[role] = c
        self.service = self.h.client  # the service key: what a compromised control plane holds

    def close(self) -> None:
        self.listener.close()
        self.env.close()

    def invoke(self, role: str, fn: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.users[role].functions.invoke(fn, {"body": body, "responseType": "json"})

    def seal(self, name: str, kind: str, username: str, secret: str, endpoints: list[dict[str, Any]]) -> str:
        res = self.invoke(
            "admin",
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": self.h.site_id,
                "name": f"{name}-{uuid.uuid4().hex[:6]}",
                "kind": kind,
                "username": username,
                "secret": secret,
                "endpoints": endpoints,
            },
        )
        return res["credential_set_id"]

    def run(self, job_type: str, params: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
        """Create the job as an operator through create-job and wait for its end."""
        created = self.invoke("operator", "create-job", {"type": job_type, "params": params})
        return self.h.wait_status(created["job_id"], ("completed", "failed"), timeout)

    def task(self, job_id: str, target_id: str) -> dict[str, Any]:
        return self.h.one(
            "select status, error from public.job_tasks where job_id = %s and target_id = %s",
            job_id,
            target_id,
        )


@pytest.fixture(scope="module")
def world(stack):
    w = World(stack)
    try:
        yield w
    finally:
        w.close()


def lab_endpoint(world: World, bmc: Any) -> dict[str, Any]:
    return {"url": world.env.lab.url(bmc.index), "tls": {"allow_plain_http": True}}


def refused(call) -> APIError:
    with pytest.raises(APIError) as exc:
        call()
    assert exc.value.code == "42501", exc.value
    return exc.value


# --- the database: operators cannot redirect a target ---------------------------------------------------
def test_an_operator_cannot_change_address_tls_or_credential_binding(world: World):
    cred = world.seal("idrac", "idrac", "root", "calvin", [{"url": "https://10.50.0.0:443"}])
    other = world.seal("idrac-other", "idrac", "root", "calvin", [{"url": "https://10.50.0.1:443"}])
    _, sid = world.env.take()
    world.users["admin"].table("servers").update({"credential_set_id": cred}).eq("id", sid).execute()
    vc = str(
        world.h.one(
            "insert into public.vcenters (site_id, name, address, credential_set_id, details) values "
            "(%s, %s, 'https://vc.lab.invalid', %s, %s) returning id",
            world.h.site_id,
            f"vc-{uuid.uuid4().hex[:6]}",
            cred,
            json.dumps({"tls": {"ca_bundle": str(world.ca)}}),
        )["id"]
    )
    ome = str(
        world.h.one(
            "insert into public.ome_instances (site_id, name, address, credential_set_id) values "
            "(%s, %s, 'https://ome.lab.invalid', %s) returning id",
            world.h.site_id,
            f"ome-{uuid.uuid4().hex[:6]}",
            cred,
        )["id"]
    )
    before = {
        t: world.h.one(f"select to_jsonb(x) as r from public.{t} x where id = %s", i)["r"]
        for t, i in (("servers", sid), ("vcenters", vc), ("ome_instances", ome))
    }
    op = world.users["operator"]
    evil = f"http://127.0.0.1:{world.listener.port}"
    for table, row, change in (
        ("servers", sid, {"idrac_address": evil}),
        ("servers", sid, {"details": {"tls": {"insecure": True}}}),
        ("servers", sid, {"details": {"tls": {"ca_bundle": "/tmp/attacker-ca.pem"}}}),
        ("servers", sid, {"credential_set_id": other}),
        ("servers", sid, {"credential_set_id": None}),
        ("vcenters", vc, {"address": evil}),
        ("vcenters", vc, {"details": {"tls": {"insecure": True}}}),
        ("vcenters", vc, {"credential_set_id": other}),
        ("ome_instances", ome, {"address": evil}),
        ("ome_instances", ome, {"credential_set_id": other}),
    ):
        err = refused(lambda t=table, r=row, c=change: op.table(t).update(c).eq("id", r).execute())
        assert "only an admin" in err.message, err.message
    # nor register a new target already bound to someone's credential
    refused(
        lambda: (
            op.table("servers")
            .insert(
                {
                    "site_id": world.h.site_id,
                    "name": "rogue",
                    "idrac_address": evil,
                    "credential_set_id": cred,
                }
            )
            .execute()
        )
    )
    refused(
        lambda: (
            op.table("vcenters")
            .insert({"site_id": world.h.site_id, "name": "rogue", "address": evil, "credential_set_id": cred})
            .execute()
        )
    )
    after = {
        t: world.h.one(f"select to_jsonb(x) as r from public.{t} x where id = %s", i)["r"]
        for t, i in (("servers", sid), ("vcenters", vc), ("ome_instances", ome))
    }
    assert after == before
    # the rest of the row stays the operators': a name, a model, other details
    op.table("servers").update({"name": f"renamed-{uuid.uuid4().hex[:6]}", "model": "PowerEdge R760"}).eq(
        "id", sid
    ).execute()
    op.table("servers").insert(
        {
            "site_id": world.h.site_id,
            "name": f"new-{uuid.uuid4().hex[:6]}",
            "idrac_address": f"10.50.1.{uuid.uuid4().int % 250}",
        }
    ).execute()
    # an admin may (a changed address then needs a reseal: see below)
    world.users["admin"].table("vcenters").update({"address": "https://vc2.lab.invalid"}).eq(
        "id", vc
    ).execute()
    assert world.listener.connections == []


# --- the executor: nothing is presented to an endpoint not sealed with the secret --------------------
def test_a_redirected_server_gets_nothing_even_from_the_service_role(world: World):
    bmc, sid = world.env.take()
    cred = world.seal("idrac", "idrac", "root", "calvin", [lab_endpoint(world, bmc)])
    world.users["admin"].table("servers").update({"credential_set_id": cred}).eq("id", sid).execute()
    # a compromised control plane (service key) moves the server to its own listener
    evil = f"http://127.0.0.1:{world.listener.port}"
    world.service.table("servers").update({"idrac_address": evil}).eq("id", sid).execute()
    job = world.run("scp_backup", {"server_ids": [sid]})
    assert job["status"] == "failed"
    assert job["error"].startswith("EndpointNotAllowed: "), job["error"]
    assert f"127.0.0.1:{world.listener.port}" in job["error"] and "nothing was sent" in job["error"]
    task = world.task(str(job["id"]), sid)
    assert task["status"] == "failed" and task["error"].startswith("EndpointNotAllowed: ")
    steps = world.h.steps(str(job["id"]))
    assert steps[-1]["details"].get("error_class") == "EndpointNotAllowed", steps[-1]["details"]
    assert world.listener.connections == []
    assert "calvin" not in json.dumps(job, default=str)


def test_relaxed_tls_on_the_sealed_address_gets_nothing(world: World):
    # sealed for the listener's address with a CA bundle: the admin's trust for that host
    cred = world.seal(
        "vc",
        "vcenter",
        "administrator@vsphere.local",
        "vc-secret-1",
        [{"url": f"https://127.0.0.1:{world.listener.port}", "tls": {"ca_bundle": str(world.ca)}}],
    )
    vc = str(
        world.h.one(
            "insert into public.vcenters (site_id, name, address, credential_set_id, details) values "
            "(%s, %s, %s, %s, %s) returning id",
            world.h.site_id,
            f"vc-{uuid.uuid4().hex[:6]}",
            f"https://127.0.0.1:{world.listener.port}",
            cred,
            json.dumps({"tls": {"ca_bundle": str(world.ca)}}),
        )["id"]
    )
    # the control plane turns certificate checks off (so that a man in the middle would do)
    world.service.table("vcenters").update({"details": {"tls": {"insecure": True}}}).eq("id", vc).execute()
    job = world.run("vcenter_sync", {"vcenter_id": vc})
    assert job["status"] == "failed" and job["error"].startswith("EndpointNotAllowed: "), job["error"]
    assert "(insecure)" in job["error"] and "sealed for this host" in job["error"]
    # or sends the vCenter elsewhere, with the trust it was sealed for
    world.service.table("vcenters").update(
        {"address": "https://127.0.0.2:443", "details": {"tls": {"ca_bundle": str(world.ca)}}}
    ).eq("id", vc).execute()
    job = world.run("vcenter_sync", {"vcenter_id": vc})
    assert job["status"] == "failed" and job["error"].startswith("EndpointNotAllowed: "), job["error"]
    assert world.listener.connections == []


def test_a_rebound_credential_is_not_presented_to_the_new_target(world: World):
    bmc, sid = world.env.take()  # bound to the lab's iDRAC credential, sealed for the lab's BMCs
    # the control plane binds the server to another credential (the vCenter's, sealed for its own address)
    vc_cred = world.seal(
        "vc", "vcenter", "administrator@vsphere.local", "vc-secret-2", [{"url": "https://vc.lab.invalid"}]
    )
    world.service.table("servers").update({"credential_set_id": vc_cred}).eq("id", sid).execute()
    job = world.run("scp_backup", {"server_ids": [sid]})
    assert job["status"] == "failed" and job["error"].startswith("EndpointNotAllowed: "), job["error"]
    assert (bmc.requests, bmc.sessions_created) == (0, 0)  # the BMC at the server's address was never asked


# --- the happy path, and the reseal a move needs -----------------------------------------------------
def test_sealed_endpoints_work_and_a_move_needs_a_reseal(world: World):
    a, sid = world.env.take()
    b, b_row = world.env.take()
    world.h.query("delete from public.servers where id = %s", b_row)  # b's address is free to move to
    cred = world.seal("idrac", "idrac", "root", "calvin", [lab_endpoint(world, a)])
    world.users["admin"].table("servers").update({"credential_set_id": cred}).eq("id", sid).execute()
    # the pre-flight (create-job dry run) shows where the job's credentials may go
    plan = world.invoke(
        "operator", "create-job", {"type": "scp_backup", "params": {"server_ids": [sid]}, "dry_run": True}
    )["plan"]
    [shown] = [c for c in plan["credentials"] if c["id"] == cred]
    assert shown["presentable"] and shown["endpoints"][0]["port"] == a.port
    assert shown["unverified_tls"] == [f"http://127.0.0.1:{a.port} (plain-http)"]
    job = world.run("scp_backup", {"server_ids": [sid]})
    assert job["status"] == "completed", job["error"]

    # an admin moves the server to b without resealing: refused, b is not asked
    world.users["admin"].table("servers").update({"idrac_address": world.env.lab.url(b.index)}).eq(
        "id", sid
    ).execute()
    job = world.run("scp_backup", {"server_ids": [sid]})
    assert job["status"] == "failed" and job["error"].startswith("EndpointNotAllowed: "), job["error"]
    assert (b.requests, b.sessions_created) == (0, 0)
    # the admin reseals naming the new endpoint: the job runs again
    world.invoke(
        "admin",
        "encrypt-credentials",
        {
            "action": "reseal",
            "credential_set_id": cred,
            "secret": "calvin",
            "endpoints": [lab_endpoint(world, b)],
        },
    )
    job = world.run("scp_backup", {"server_ids": [sid]})
    assert job["status"] == "completed", job["error"]
    assert world.listener.connections == []


def test_encrypt_credentials_wants_endpoints_and_refuses_plain_http_off_loopback(world: World):
    from supabase_functions.errors import FunctionsHttpError

    base = {
        "action": "seal",
        "site_id": world.h.site_id,
        "name": f"x-{uuid.uuid4().hex[:6]}",
        "kind": "idrac",
        "username": "root",
        "secret": "never-echoed-1",
    }
    for body, status in (
        (base, 400),
        ({**base, "endpoints": []}, 400),
        ({**base, "endpoints": [{"url": "http://10.0.0.9"}]}, 422),
        ({**base, "endpoints": [{"url": "https://x.lab", "tls": {"verify": False}}]}, 400),
    ):
        with pytest.raises(FunctionsHttpError) as exc:
            world.invoke("admin", "encrypt-credentials", body)
        assert exc.value.status == status, (body, exc.value.message)
        assert "never-echoed-1" not in exc.value.message
