"""A fleet in, and on record (issue 18): discovery by IP range with credential sets, the BMC
call log, inventory/compliance/discovery as create-job jobs, and create-job refusing a job
type no live executor of the site takes.

Everything real: the local stack, create-job and encrypt-credentials as signed-in users, a
real executor process, and simulated iDRACs - for discovery each on its own loopback address
(devstack/lab/discovery.py), one port, the way a scan of a range sees a rack.
"""

from __future__ import annotations

import random
import string
import uuid
from typing import Any

import pytest
from supabase import create_client

from devstack.cli import add_user
from devstack.lab.discovery import AddressLab, LabThread
from tests.e2e.executor_harness import wait_until
from tests.integration._handlers_dell import DellEnv

pytestmark = pytest.mark.timeout(600)

GOOD, OTHER = ("root", "calvin"), ("root", "other-password")


class World:
    def __init__(self, stack: Any) -> None:
        self.env = DellEnv(stack, bmcs=8)
        self.h = self.env.h
        url, anon = self.h.env["SUPABASE_URL"], self.h.env["SUPABASE_ANON_KEY"]
        self.users = {}
        for role in ("viewer", "operator", "admin"):
            email, pw = f"intake-{role}-{self.h.site_name}@lab.test", f"intake-{role}-pw-1"
            add_user(stack, email, role, pw)
            c = create_client(url, anon)
            c.auth.sign_in_with_password({"email": email, "password": pw})
            self.users[role] = c
        # a /24 of loopback addresses of its own (parallel runs pick others)
        self.net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
        self.tag = "".join(random.choices(string.ascii_uppercase, k=3))
        self.alab = AddressLab(self.net, time_scale=400.0)
        self.lt = LabThread(self.alab)
        self.lab_started = False

    def start_lab(self) -> None:
        if not self.lab_started:
            self.lt.start()
            self.lab_started = True

    def close(self) -> None:
        try:
            if self.lab_started:
                self.lt.stop()
        finally:
            self.env.close()

    def invoke(self, role: str, fn: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.users[role].functions.invoke(fn, {"body": body, "responseType": "json"})

    def refusal(self, role: str, fn: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import httpx

        token = self.users[role].auth.get_session().access_token
        r = httpx.post(f"{self.h.env['SUPABASE_URL']}/functions/v1/{fn}", json=body, timeout=30,
                       headers={"Authorization": f"Bearer {token}", "apikey": self.h.env["SUPABASE_ANON_KEY"]})
        return r.status_code, r.json()

    def seal(self, name: str, user_pw: tuple[str, str], endpoints: list[dict[str, Any]]) -> str:
        res = self.invoke("admin", "encrypt-credentials", {
            "action": "seal", "site_id": self.h.site_id, "name": f"{name}-{uuid.uuid4().hex[:6]}", "kind": "idrac",
            "username": user_pw[0], "secret": user_pw[1], "endpoints": endpoints})
        return res["credential_set_id"]

    def create(self, job_type: str, params: dict[str, Any], **extra: Any) -> str:
        return self.invoke("operator", "create-job", {"type": job_type, "params": params, **extra})["job_id"]

    def run(self, job_type: str, params: dict[str, Any], timeout: float = 120, **extra: Any) -> dict[str, Any]:
        return self.h.wait_status(self.create(job_type, params, **extra), ("completed", "failed", "paused"), timeout)

    def results(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {r["address"]: r for r in self.h.query("select * from public.discovery_results where job_id = %s",
                                                      job_id)}

    def site_servers(self) -> dict[str, dict[str, Any]]:
        return {r["idrac_address"]: r for r in self.h.query(
            "select id, name, idrac_address, service_tag, model, idrac_version, credential_set_id, details, "
            "created_at from public.servers where site_id = %s and idrac_address like %s",
            self.h.site_id, f"http://{self.net}.%")}


@pytest.fixture(scope="module")
def world(stack):
    w = World(stack)
    try:
        yield w
    finally:
        w.close()


# --- discovery -----------------------------------------------------------------------------------------
def test_discovery_of_a_range_registers_exactly_the_reachable_idracs_and_says_why_not(world: World) -> None:
    """50 iDRACs in a /24 scan: 40 answer to the scan's second credential set, 4 refuse both,
    3 repeat another one's service tag, 3 sit outside every set's sealed network; 3 web servers
    that are not Redfish; the rest of the range answers nothing. A dry run first, then the
    scan, then the same scan again."""
    lab, net = world.alab, world.net
    for i in range(1, 41):
        lab.add_idrac(i, service_tag=f"{world.tag}{i:03d}")
    for i in range(41, 45):
        lab.add_idrac(i, password=OTHER[1], service_tag=f"{world.tag}{i:03d}")
    for i in range(45, 48):
        lab.add_idrac(i, service_tag=f"{world.tag}{i - 44:03d}")  # the tags of .1, .2, .3
    for i in range(70, 73):
        lab.add_idrac(i, service_tag=f"{world.tag}{i:03d}")  # outside the sealed /26
    for i in range(51, 54):
        lab.add_web(i)
    world.start_lab()
    assert len(lab.bmcs) == 50
    # a CIDR endpoint is given in canonical form (a URL cannot carry a network)
    sealed_net = [{"scheme": "http", "host": f"{net}.0/26", "port": lab.port, "tls": {"allow_plain_http": True}}]
    wrong = world.seal("disc-wrong", ("admin", "not-it"), sealed_net)
    good = world.seal("disc-good", GOOD, sealed_net)
    params = {"site_id": world.h.site_id, "ranges": [f"{net}.1-{net}.80"], "hosts": [f"{net}.1"],
              "credential_set_ids": [wrong, good], "port": lab.port, "scheme": "http", "max_parallel": 16}

    dry = world.run("discovery_scan", {**params, "dry_run": True})
    assert dry["status"] == "completed", dry["error"]
    assert world.site_servers() == {}
    expect_skips = {"wrong_credentials": 4, "duplicate_service_tag": 0, "credential_not_allowed": 3,
                    "not_redfish": 3, "no_answer": 80 - 50 - 3}
    res = world.results(dry["id"])
    assert len(res) == 80
    by = _tally(res)
    # a dry run does not register, so .45-.47 only duplicate a tag that is not stored yet
    assert by == {"would_register": 43, **{k: v for k, v in expect_skips.items() if v}}, by

    job = world.run("discovery_scan", params)
    assert job["status"] == "completed", job["error"]
    res = world.results(job["id"])
    assert _tally(res) == {"registered": 40, "wrong_credentials": 4, "duplicate_service_tag": 3,
                           "credential_not_allowed": 3, "not_redfish": 3, "no_answer": 27}
    for i in (45, 46, 47):
        r = res[f"{net}.{i}"]
        assert r["reason"] == "duplicate_service_tag" and f"{world.tag}{i - 44:03d}" in r["message"]
    assert res[f"{net}.41"]["details"]["refused"] == [wrong, good]
    assert res[f"{net}.70"]["credential_set_id"] is None
    servers = world.site_servers()
    assert len(servers) == 40
    one = servers[f"http://{net}.1:{lab.port}"]
    assert one["service_tag"] == f"{world.tag}001" and one["credential_set_id"] == good
    assert one["details"]["tls"] == {"allow_plain_http": True} and one["model"].startswith("PowerEdge")
    assert one["idrac_version"] and one["details"]["idrac_generation"].startswith("iDRAC9")
    # the site task of the scan is closed with its summary
    task = world.h.one("select status, result from public.job_tasks where job_id = %s", job["id"])
    assert task["status"] == "completed"

    again = world.run("discovery_scan", params)
    assert again["status"] == "completed", again["error"]
    assert _tally(world.results(again["id"])) == {"unchanged": 40, "wrong_credentials": 4, "duplicate_service_tag": 3,
                                                  "credential_not_allowed": 3, "not_redfish": 3, "no_answer": 27}
    assert world.site_servers() == servers  # a second scan changes nothing
    # one session per BMC at most, every one deleted; nothing presented outside the envelope
    assert all(b.peak_sessions <= 1 for b in lab.bmcs)
    assert lab.sessions_open() == 0
    assert all(lab.at[f"{net}.{i}"].sessions_created == 0 for i in (70, 71, 72))
    step = {s["step_key"]: s for s in world.h.steps(again["id"])}["scan"]
    out = step["details"]["result"]
    assert out["sessions_opened"] == out["sessions_closed"] == 43  # the duplicates are logged in to read their tag


def _tally(res: dict[str, dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in res.values():
        k = r["reason"] or r["outcome"]
        out[k] = out.get(k, 0) + 1
    return out


# --- create-job: the fleet job types, and what cannot run ----------------------------------------------
def test_create_job_takes_inventory_and_compliance_and_refuses_what_no_executor_runs(world: World) -> None:
    _, sid = world.env.take()
    job = world.run("inventory_refresh", {"server_ids": [sid], "max_parallel": 2})
    assert job["status"] == "completed", job["error"]
    assert world.h.one("select last_seen_at from public.servers where id = %s", sid)["last_seen_at"] is not None
    comp = world.run("firmware_compliance", {"catalog_url": world.env.files.url("repo/Catalog.xml"),
                                             "server_ids": [sid]})
    assert comp["status"] == "completed", comp["error"]

    # a site whose only executor takes vcenter_sync jobs, and a site with none at all
    other = world.h.one("insert into public.sites (name) values (%s) returning id", f"x-{uuid.uuid4().hex[:8]}")["id"]
    world.h.query("insert into public.executors (site_id, name, public_key, key_id, job_types) values "
                  "(%s, 'vc-only', %s, 'k1', '{vcenter_sync}')", other, "x" * 44)
    bare = world.h.one("insert into public.sites (name) values (%s) returning id", f"y-{uuid.uuid4().hex[:8]}")["id"]
    for site, code in ((other, "no_executor_for_type"), (bare, "no_executor_for_type")):
        status, body = world.refusal("operator", "create-job", {"type": "inventory_refresh",
                                                                "params": {"site_id": site}})
        assert (status, body["code"]) == (422, code), body
        assert "inventory_refresh" in body["error"]
    # an executor that stopped heart-beating long ago counts as lost
    world.h.query("update public.executors set job_types = null, last_heartbeat_at = now() - interval '1 hour' "
                  "where site_id = %s", other)
    status, body = world.refusal("operator", "create-job", {"type": "inventory_refresh", "params": {"site_id": other}})
    assert (status, body["code"]) == (422, "no_healthy_executor"), body
    # a viewer may not create any of them; x-credential sets must be idrac sets of the site
    status, body = world.refusal("viewer", "create-job", {"type": "inventory_refresh",
                                                          "params": {"site_id": world.h.site_id}})
    assert status == 403, body
    status, body = world.refusal("operator", "create-job", {"type": "discovery_scan", "params": {
        "site_id": world.h.site_id, "hosts": ["127.0.0.1"], "credential_set_ids": [str(uuid.uuid4())]}})
    assert (status, body["code"]) == (422, "credential_not_usable"), body


# --- the BMC call log ----------------------------------------------------------------------------------
def test_every_bmc_call_of_a_firmware_update_is_on_record_without_secrets(world: World) -> None:
    b, sid = world.env.take("PowerEdge R640", old=True)
    win = world.env.window()
    with b.lock:
        b.requests = 0
    job = world.env.run("firmware_update", {"server_ids": [sid], "firmware": {
        "catalog_url": world.env.files.url("repo/Catalog.xml")}}, maintenance_window_id=win, timeout=120)
    assert job["status"] == "completed", job["error"]
    calls = wait_until(lambda: (lambda rows: rows if len(rows) >= b.requests else None)(
        world.h.query("select * from public.bmc_calls where job_id = %s order by at, id", job["id"])),
        30, "the call log to hold every call")
    # the lab counts the requests it answered; a request the BMC dropped (an iDRAC restarting
    # after its own update) is on record too, with its transport error and no status
    answered = [c for c in calls if c["status"] is not None]
    assert len(answered) == b.requests, [(c["method"], c["path"], c["status"], c["error"]) for c in calls
                                         if c["status"] is None or c["status"] >= 400]
    assert all(c["error"] for c in calls if c["status"] is None)
    assert {c["target"] for c in calls} == {f"srv{b.index:02d}-{world.h.site_name}"} or \
        all(str(b.port) in c["target"] or c["target"].startswith("srv") for c in calls)
    methods = {(c["method"], c["path"]) for c in calls}
    assert ("POST", "/redfish/v1/SessionService/Sessions") in methods
    assert any(m == "DELETE" and p.startswith("/redfish/v1/SessionService/Sessions/") for m, p in methods)
    assert all(c["step"] for c in calls) and {c["step"] for c in calls} >= {"compliance", "stage", "verify"}
    text = repr(calls)
    assert "calvin" not in text and "X-Auth-Token" not in text
    login = next(c for c in calls if c["method"] == "POST" and c["path"].endswith("/Sessions"))
    assert login["request_body"] is None and login["status"] == 201
    # operators read it through the view; viewers do not
    assert len(world.users["operator"].table("v_bmc_calls").select("id").eq("job_id", job["id"]).execute().data) \
        == len(calls)
    assert world.users["viewer"].table("bmc_calls").select("id").eq("job_id", job["id"]).execute().data == []
