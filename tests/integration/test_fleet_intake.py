"""A fleet in, and on record (issue 18): discovery by IP range with credential sets, the BMC
call log, inventory/compliance/discovery as create-job jobs, and create-job refusing a job
type no live executor of the site takes.

Everything real: the local stack, create-job and encrypt-credentials as signed-in users, a
real executor process, and simulated iDRACs - for discovery each on its own loopback address
(devstack/lab/discovery.py), one port, the way a scan of a range sees a rack.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from typing import Any

import pytest
from postgrest.exceptions import APIError

from devstack.cli import add_user
from devstack.lab.discovery import AddressLab, LabThread
from supabase import create_client
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

    def save_schedule(self, role: str, template: dict[str, Any]) -> dict[str, Any]:
        """A schedule saved through the schedules function (the only way to write one)."""
        status, body = self.refusal(role, "schedules", {"action": "save", **template})
        assert status in (200, 201), (status, body)
        return body["schedule"]

    def refusal(self, role: str, fn: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import httpx

        token = self.users[role].auth.get_session().access_token
        r = httpx.post(
            f"{self.h.env['SUPABASE_URL']}/functions/v1/{fn}",
            json=body,
            timeout=30,
            headers={"Authorization": f"Bearer {token}", "apikey": self.h.env["SUPABASE_ANON_KEY"]},
        )
        return r.status_code, r.json()

    def seal(self, name: str, user_pw: tuple[str, str], endpoints: list[dict[str, Any]]) -> str:
        res = self.invoke(
            "admin",
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": self.h.site_id,
                "name": f"{name}-{uuid.uuid4().hex[:6]}",
                "kind": "idrac",
                "username": user_pw[0],
                "secret": user_pw[1],
                "endpoints": endpoints,
            },
        )
        return res["credential_set_id"]

    def create(self, job_type: str, params: dict[str, Any], **extra: Any) -> str:
        return self.invoke("operator", "create-job", {"type": job_type, "params": params, **extra})["job_id"]

    def run(
        self, job_type: str, params: dict[str, Any], timeout: float = 120, **extra: Any
    ) -> dict[str, Any]:
        return self.h.wait_status(
            self.create(job_type, params, **extra), ("completed", "failed", "paused"), timeout
        )

    def results(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {
            r["address"]: r
            for r in self.h.query("select * from public.discovery_results where job_id = %s", job_id)
        }

    def site_servers(self) -> dict[str, dict[str, Any]]:
        return {
            r["idrac_address"]: r
            for r in self.h.query(
                "select id, name, idrac_address, service_tag, model, idrac_version, credential_set_id, details, "
                "created_at from public.servers where site_id = %s and idrac_address like %s",
                self.h.site_id,
                f"http://{self.net}.%",
            )
        }


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
    sealed_net = [
        {"scheme": "http", "host": f"{net}.0/26", "port": lab.port, "tls": {"allow_plain_http": True}}
    ]
    wrong = world.seal("disc-wrong", ("admin", "not-it"), sealed_net)
    good = world.seal("disc-good", GOOD, sealed_net)
    params = {
        "site_id": world.h.site_id,
        "ranges": [f"{net}.1-{net}.80"],
        "hosts": [f"{net}.1"],
        "credential_set_ids": [wrong, good],
        "port": lab.port,
        "scheme": "http",
        "max_parallel": 16,
    }

    dry = world.run("discovery_scan", {**params, "dry_run": True})
    assert dry["status"] == "completed", dry["error"]
    assert world.site_servers() == {}
    expect_skips = {
        "wrong_credentials": 4,
        "duplicate_service_tag": 0,
        "credential_not_allowed": 3,
        "not_redfish": 3,
        "no_answer": 80 - 50 - 3,
    }
    res = world.results(dry["id"])
    assert len(res) == 80
    by = _tally(res)
    # a dry run does not register, so .45-.47 only duplicate a tag that is not stored yet
    assert by == {"would_register": 43, **{k: v for k, v in expect_skips.items() if v}}, by

    job = world.run("discovery_scan", params)
    assert job["status"] == "completed", job["error"]
    res = world.results(job["id"])
    assert _tally(res) == {
        "registered": 40,
        "wrong_credentials": 4,
        "duplicate_service_tag": 3,
        "credential_not_allowed": 3,
        "not_redfish": 3,
        "no_answer": 27,
    }
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
    assert _tally(world.results(again["id"])) == {
        "unchanged": 40,
        "wrong_credentials": 4,
        "duplicate_service_tag": 3,
        "credential_not_allowed": 3,
        "not_redfish": 3,
        "no_answer": 27,
    }
    assert world.site_servers() == servers  # a second scan changes nothing
    # one session per BMC at most, every one deleted; nothing presented outside the envelope
    assert all(b.peak_sessions <= 1 for b in lab.bmcs)
    assert lab.sessions_open() == 0
    assert all(lab.at[f"{net}.{i}"].sessions_created == 0 for i in (70, 71, 72))
    step = {s["step_key"]: s for s in world.h.steps(again["id"])}["scan"]
    out = step["details"]["result"]
    assert (
        out["sessions_opened"] == out["sessions_closed"] == 43
    )  # the duplicates are logged in to read their tag


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
    assert (
        world.h.one("select last_seen_at from public.servers where id = %s", sid)["last_seen_at"] is not None
    )
    comp = world.run(
        "firmware_compliance", {"catalog_url": world.env.files.url("repo/Catalog.xml"), "server_ids": [sid]}
    )
    assert comp["status"] == "completed", comp["error"]

    # a site whose only executor takes vcenter_sync jobs, and a site with none at all
    other = world.h.one(
        "insert into public.sites (name) values (%s) returning id", f"x-{uuid.uuid4().hex[:8]}"
    )["id"]
    world.h.query(
        "insert into public.executors (site_id, name, public_key, key_id, job_types) values "
        "(%s, 'vc-only', %s, 'k1', '{vcenter_sync}')",
        other,
        "x" * 44,
    )
    bare = world.h.one(
        "insert into public.sites (name) values (%s) returning id", f"y-{uuid.uuid4().hex[:8]}"
    )["id"]
    for site, code in ((other, "no_executor_for_type"), (bare, "no_executor_for_type")):
        status, body = world.refusal(
            "operator", "create-job", {"type": "inventory_refresh", "params": {"site_id": site}}
        )
        assert (status, body["code"]) == (422, code), body
        assert "inventory_refresh" in body["error"]
    # an executor that stopped heart-beating long ago counts as lost
    world.h.query(
        "update public.executors set job_types = null, last_heartbeat_at = now() - interval '1 hour' "
        "where site_id = %s",
        other,
    )
    status, body = world.refusal(
        "operator", "create-job", {"type": "inventory_refresh", "params": {"site_id": other}}
    )
    assert (status, body["code"]) == (422, "no_healthy_executor"), body
    # a viewer may not create any of them; x-credential sets must be idrac sets of the site
    status, body = world.refusal(
        "viewer", "create-job", {"type": "inventory_refresh", "params": {"site_id": world.h.site_id}}
    )
    assert status == 403, body
    status, body = world.refusal(
        "operator",
        "create-job",
        {
            "type": "discovery_scan",
            "params": {
                "site_id": world.h.site_id,
                "hosts": ["127.0.0.1"],
                "credential_set_ids": [str(uuid.uuid4())],
            },
        },
    )
    assert (status, body["code"]) == (422, "credential_not_usable"), body


# --- the BMC call log ----------------------------------------------------------------------------------
def test_every_bmc_call_of_a_firmware_update_is_on_record_without_secrets(world: World) -> None:
    b, sid = world.env.take("PowerEdge R640", old=True)
    win = world.env.window()
    with b.lock:
        b.requests = 0
    job = world.env.run(
        "firmware_update",
        {"server_ids": [sid], "firmware": {"catalog_url": world.env.files.url("repo/Catalog.xml")}},
        maintenance_window_id=win,
        timeout=120,
    )
    assert job["status"] == "completed", job["error"]
    calls = wait_until(
        lambda: (lambda rows: rows if len(rows) >= b.requests else None)(
            world.h.query("select * from public.bmc_calls where job_id = %s order by at, id", job["id"])
        ),
        30,
        "the call log to hold every call",
    )
    # the lab counts the requests it answered; a request the BMC dropped (an iDRAC restarting
    # after its own update) is on record too, with its transport error and no status
    answered = [c for c in calls if c["status"] is not None]
    assert len(answered) == b.requests, [
        (c["method"], c["path"], c["status"], c["error"])
        for c in calls
        if c["status"] is None or c["status"] >= 400
    ]
    assert all(c["error"] for c in calls if c["status"] is None)
    assert {c["target"] for c in calls} == {f"srv{b.index:02d}-{world.h.site_name}"} or all(
        str(b.port) in c["target"] or c["target"].startswith("srv") for c in calls
    )
    methods = {(c["method"], c["path"]) for c in calls}
    assert ("POST", "/redfish/v1/SessionService/Sessions") in methods
    assert any(m == "DELETE" and p.startswith("/redfish/v1/SessionService/Sessions/") for m, p in methods)
    assert all(c["step"] for c in calls) and {c["step"] for c in calls} >= {"compliance", "stage", "verify"}
    text = repr(calls)
    assert "calvin" not in text and "X-Auth-Token" not in text
    login = next(c for c in calls if c["method"] == "POST" and c["path"].endswith("/Sessions"))
    assert login["request_body"] is None and login["status"] == 201
    # operators read it through the view; viewers do not
    assert len(
        world.users["operator"].table("v_bmc_calls").select("id").eq("job_id", job["id"]).execute().data
    ) == len(calls)
    assert world.users["viewer"].table("bmc_calls").select("id").eq("job_id", job["id"]).execute().data == []


# --- schedules -----------------------------------------------------------------------------------------
def fire(world: World) -> list[dict[str, Any]]:
    """POST schedules/fire with the service key, as an executor's loop does."""
    import httpx

    key = world.h.env["SUPABASE_SERVICE_ROLE_KEY"]
    r = httpx.post(
        f"{world.h.env['SUPABASE_URL']}/functions/v1/schedules",
        timeout=60,
        json={"action": "fire", "site_id": world.h.site_id},
        headers={"Authorization": f"Bearer {key}", "apikey": key},
    )
    assert r.status_code == 200, r.text
    return r.json()["fired"]


def test_recurrence_parsing_and_time_zones(world: World) -> None:
    q = "select public.schedule_next_run(%s, %s, %s::timestamptz) as t"
    nxt = lambda rec, tz, after: world.h.one(q, rec, tz, after)["t"].isoformat()  # noqa: E731
    assert nxt("0 2 * * *", "UTC", "2026-03-01T03:00:00Z") == "2026-03-02T02:00:00+00:00"
    # 02:30 Berlin on the night clocks go forward does not exist: Postgres moves it on
    assert nxt("30 1 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z") == "2026-03-29T00:30:00+00:00"
    assert (
        nxt("RRULE:FREQ=WEEKLY;BYDAY=SA;BYHOUR=4;BYMINUTE=15", "UTC", "2026-03-02T00:00:00Z")
        == "2026-03-07T04:15:00+00:00"
    )
    assert nxt("*/20 * * * *", "UTC", "2026-03-02T00:41:00Z") == "2026-03-02T01:00:00+00:00"
    assert nxt("@hourly", "America/New_York", "2026-03-02T00:41:00Z") == "2026-03-02T01:00:00+00:00"
    assert nxt("0 0 13 * 5", "UTC", "2026-03-01T00:00:00Z") == "2026-03-06T00:00:00+00:00"  # day 13 OR Friday
    for bad in ("61 * * * *", "* * *", "RRULE:FREQ=DAILY;INTERVAL=2", "RRULE:FREQ=YEARLY"):
        status, body = world.refusal(
            "operator",
            "schedules",
            {
                "action": "save",
                "site_id": world.h.site_id,
                "name": f"bad-{uuid.uuid4().hex[:6]}",
                "job_type": "inventory_refresh",
                "params": {"site_id": world.h.site_id},
                "recurrence": bad,
            },
        )
        assert (status, body["code"]) == (400, "invalid_argument"), (bad, body)
        assert "time zone" not in body["error"], body  # the recurrence's own words
    status, body = world.refusal(
        "operator",
        "schedules",
        {
            "action": "save",
            "site_id": world.h.site_id,
            "name": f"badtz-{uuid.uuid4().hex[:6]}",
            "job_type": "inventory_refresh",
            "params": {"site_id": world.h.site_id},
            "recurrence": "@daily",
            "timezone": "Mars/Olympus_Mons",
        },
    )
    assert (status, body["code"]) == (400, "invalid_argument") and "time zone" in body["error"], body


def test_a_due_schedule_creates_exactly_one_job_per_occurrence_through_create_job(world: World) -> None:
    """Two executors' loops and a burst of direct fire calls race for one occurrence; one job
    comes out, created by create-job's code as the schedule's owner. A second occurrence while
    that job runs is skipped; a missed one follows the policy; an owner without the operator
    role creates nothing."""
    import concurrent.futures as cf

    op = world.users["operator"]
    _, sid = world.env.take()
    name = f"inv-{uuid.uuid4().hex[:6]}"
    row = world.save_schedule(
        "operator",
        {
            "site_id": world.h.site_id,
            "name": name,
            "job_type": "inventory_refresh",
            "params": {"server_ids": [sid], "max_parallel": 1},
            "recurrence": "0 3 * * *",
            "timezone": "Europe/Berlin",
        },
    )
    operator_id = world.h.one("select owner_id from public.job_schedules where id = %s", row["id"])[
        "owner_id"
    ]
    assert operator_id is not None and row["next_run_at"] is not None
    due = "update public.job_schedules set next_run_at = now() - interval '2 seconds' where id = %s"
    world.h.query(due, row["id"])
    with cf.ThreadPoolExecutor(6) as pool:  # the site's executor fires on its own loop as well
        results = [f for fs in pool.map(lambda _: fire(world), range(6)) for f in fs]
    created = [f for f in results if f["schedule_id"] == row["id"]]
    assert [f["status"] for f in created] in (["created"], []), results
    [job] = world.h.query("select * from public.jobs where scope ->> 'schedule_id' = %s", row["id"])
    assert job["type"] == "inventory_refresh" and str(job["created_by"]) == str(operator_id)
    assert (
        job["scope"]["schedule_id"] == row["id"]
        and str(job["credential_set_ids"]) == "{" + world.env.cred + "}"
    )
    runs = world.h.query("select * from public.schedule_runs where schedule_id = %s", row["id"])
    assert len(runs) == 1 and runs[0]["status"] == "created"

    world.h.wait_status(job["id"], ("completed",), 60)
    # the next occurrence while the schedule's last job is still unfinished (one waiting for
    # its time, here): skipped, nothing created
    waiting = world.h.one(
        "insert into public.jobs (type, site_id, params, scope, scheduled_for) values "
        "('inventory_refresh', %s, %s, '{}', now() + interval '1 day') returning id",
        world.h.site_id,
        json.dumps({"server_ids": [sid]}),
    )["id"]
    world.h.query("update public.job_schedules set last_job_id = %s where id = %s", waiting, row["id"])
    world.h.query(due, row["id"])
    f = fired(world, row["id"], 2)
    assert f["status"] == "skipped_running" and "still pending" in f["error"]
    world.h.query(
        "update public.jobs set status = 'cancelled', cancel_requested_at = now() where id = %s", waiting
    )

    # missed by an hour: skip records it and creates nothing; run_once creates one job
    world.h.query(
        "update public.job_schedules set next_run_at = now() - interval '1 hour' where id = %s", row["id"]
    )
    f = fired(world, row["id"], 3)
    assert f["status"] == "missed" and f["job_id"] is None
    after = world.h.one("select next_run_at from public.job_schedules where id = %s", row["id"])[
        "next_run_at"
    ]
    assert after.timestamp() > time_now(world)
    op.table("job_schedules").update({"missed_policy": "run_once"}).eq("id", row["id"]).execute()
    world.h.query(
        "update public.job_schedules set next_run_at = now() - interval '1 hour' where id = %s", row["id"]
    )
    f = fired(world, row["id"], 4)
    assert f["status"] == "created"
    world.h.wait_status(f["job_id"], ("completed",), 60)

    # the owner loses the operator role: the occurrence fails with create-job's refusal
    world.h.query("update public.user_roles set role = 'viewer' where user_id = %s", operator_id)
    try:
        world.h.query(due, row["id"])
        f = fired(world, row["id"], 5)
        assert (f["status"], f["code"]) == ("failed", "forbidden"), f
    finally:
        world.h.query("update public.user_roles set role = 'operator' where user_id = %s", operator_id)
    # users cannot fire schedules themselves, nor forge the owner
    status, body = world.refusal("operator", "schedules", {"action": "fire"})
    assert status in (401, 403), body
    with pytest.raises(APIError):  # the owner is set by a trigger, never by the caller
        op.table("job_schedules").update({"owner_id": str(uuid.uuid4())}).eq("id", row["id"]).execute()


def test_the_executors_fire_schedules_on_their_own(world: World) -> None:
    """The executor's loop (RACKPILOT_SCHEDULE_FIRE_INTERVAL) fires a due schedule; with two
    executors of the site running, the occurrence still makes one job."""
    world.env.respawn("dell-2")
    _, sid = world.env.take()
    row = world.save_schedule(
        "operator",
        {
            "site_id": world.h.site_id,
            "name": f"loop-{uuid.uuid4().hex[:6]}",
            "job_type": "inventory_refresh",
            "params": {"server_ids": [sid]},
            "recurrence": "@daily",
        },
    )
    world.h.query("update public.job_schedules set next_run_at = now() where id = %s", row["id"])
    runs = wait_until(
        lambda: world.h.query("select * from public.schedule_runs where schedule_id = %s", row["id"]),
        60,
        "an executor to fire the schedule",
        interval=0.5,
    )
    assert [r["status"] for r in runs] == ["created"]
    world.h.wait_status(runs[0]["job_id"], ("completed",), 60)
    assert len(world.h.query("select 1 from public.schedule_runs where schedule_id = %s", row["id"])) == 1


def fired(world: World, schedule_id: str, n: int) -> dict[str, Any]:
    """The schedule's n-th run, once it exists (fired by this call or an executor's loop)."""
    fire(world)
    runs = wait_until(
        lambda: (lambda r: r if len(r) >= n else None)(
            world.h.query(
                "select * from public.schedule_runs where schedule_id = %s order by id", schedule_id
            )
        ),
        30,
        f"run {n}",
    )
    assert len(runs) == n, runs
    return runs[-1]


def time_now(world: World) -> float:
    return world.h.one("select extract(epoch from now())::float8 as t")["t"]


# --- recurring maintenance windows (20261207120000_window_series.sql) ------------------------------------
def test_recurring_window_occurrences_need_a_second_person_and_gate_a_risky_scheduled_job(
    world: World,
) -> None:
    """A window series materialises its occurrences as maintenance windows; each is approved
    by someone other than the requester (or the whole series is); a risky scheduled job takes
    its occurrence's window and the claim does not hand it out before the window opens."""
    import datetime as dt

    import psycopg2

    op, admin = world.users["operator"], world.users["admin"]
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3, minutes=7)
    series = (
        op.table("maintenance_window_series")
        .insert(
            {
                "site_id": world.h.site_id,
                "title": "nightly patching",
                "recurrence": f"{at.minute} {at.hour} * * *",
                "duration_minutes": 60,
                "horizon_days": 3,
            }
        )
        .execute()
        .data[0]
    )

    def occ():
        return world.h.query(
            "select * from public.maintenance_windows where series_id = %s order by starts_at",
            series["id"],
        )

    first, second = occ()[:2]
    operator_id = str(series["requested_by"])
    assert len(occ()) == 3 and {o["status"] for o in occ()} == {"requested"}
    assert str(first["requested_by"]) == operator_id and first["occurrence_at"] == first["starts_at"]
    assert (first["ends_at"] - first["starts_at"]).total_seconds() == 3600
    with pytest.raises(Exception) as exc:
        op.table("maintenance_window_series").insert(
            {
                "site_id": world.h.site_id,
                "title": "bad",
                "recurrence": "RRULE:FREQ=YEARLY",
                "duration_minutes": 5,
            }
        ).execute()
    assert "invalid_argument" in str(exc.value)

    # per occurrence, four eyes: an operator may not approve, an approver other than the requester may
    status, body = world.refusal(
        "operator", "maintenance-windows", {"action": "approve", "window_id": str(first["id"])}
    )
    assert status == 403, body
    res = world.invoke("admin", "maintenance-windows", {"action": "approve", "window_id": str(first["id"])})
    assert res["status"] == "approved" and str(res["approved_by"]) != operator_id
    # nobody approves their own series
    own = (
        admin.table("maintenance_window_series")
        .insert(
            {
                "site_id": world.h.site_id,
                "title": "own",
                "recurrence": "0 12 * * 0",
                "duration_minutes": 5,
                "horizon_days": 1,
            }
        )
        .execute()
        .data[0]
    )
    with pytest.raises(Exception) as exc:
        admin.table("maintenance_window_series").update({"status": "approved"}).eq("id", own["id"]).execute()
    assert "four_eyes" in str(exc.value)
    admin.table("maintenance_window_series").update({"status": "cancelled"}).eq("id", own["id"]).execute()

    # a risky (firmware_update) schedule on the series: its job takes the approved occurrence
    _, sid = world.env.take()
    sched = world.save_schedule(
        "operator",
        {
            "site_id": world.h.site_id,
            "name": f"fw-{uuid.uuid4().hex[:6]}",
            "job_type": "firmware_update",
            "params": {
                "server_ids": [sid],
                "dry_run": True,
                "firmware": {"catalog_url": "https://downloads.example.test/Catalog.xml"},
            },
            "recurrence": "@daily",
            "window_series_id": series["id"],
        },
    )
    due = "update public.job_schedules set next_run_at = now() - interval '2 seconds' where id = %s"
    world.h.query(due, sched["id"])
    f = fired(world, sched["id"], 1)
    assert f["status"] == "created", f
    job = world.h.job(str(f["job_id"]))
    assert str(job["maintenance_window_id"]) == str(first["id"]) and job["status"] == "pending"
    assert job["scheduled_for"] == first["starts_at"]

    def wait():
        return world.h.one("select waiting_for from public.v_job_waits where job_id = %s", job["id"])[
            "waiting_for"
        ]

    assert wait() == "scheduled"
    # its time has come but its window has not: the claim's re-check holds it back
    world.h.query("update public.jobs set scheduled_for = now() where id = %s", job["id"])
    assert wait() == "window_not_started"
    executor_id = world.h.one(
        "select id from public.executors where site_id = %s and name = 'dell'", world.h.site_id
    )["id"]
    conn = psycopg2.connect(world.h.env["SUPABASE_DB_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("select job_id from public.claim_jobs(%s, 50)", (executor_id,))
            assert str(job["id"]) not in {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.rollback()
        conn.close()
    world.h.query(
        "update public.jobs set status = 'cancelled', cancel_requested_at = now() where id = %s", job["id"]
    )

    # the next occurrence ahead is not approved: create-job's refusal, recorded, no job
    world.invoke("admin", "maintenance-windows", {"action": "cancel", "window_id": str(first["id"])})
    world.h.query(due, sched["id"])
    f = fired(world, sched["id"], 2)
    assert (f["status"], f["code"], f["job_id"]) == ("failed", "window_not_approved", None), f

    # the approver approves the series: its open occurrences are approved in its name
    admin.table("maintenance_window_series").update({"status": "approved"}).eq("id", series["id"]).execute()
    rest = [o for o in occ() if o["id"] != first["id"]]
    assert {o["status"] for o in rest} == {"approved"}
    assert {str(o["approved_by"]) for o in rest} == {str(res["approved_by"])}
    world.h.query(due, sched["id"])
    f = fired(world, sched["id"], 3)
    assert f["status"] == "created" and str(world.h.job(str(f["job_id"]))["maintenance_window_id"]) == str(
        second["id"]
    )
    world.h.query(
        "update public.jobs set status = 'cancelled', cancel_requested_at = now() where id = %s", f["job_id"]
    )

    # cancelling the series cancels what has not started
    op.table("maintenance_window_series").update({"status": "cancelled"}).eq("id", series["id"]).execute()
    assert {o["status"] for o in occ()} == {"cancelled"}


# --- firmware catalogs as data (20261207120100_firmware_catalogs_managed.sql) ----------------------------
def test_catalog_refresh_loads_plain_gzipped_and_moved_catalogs_and_jobs_name_a_catalog(world: World) -> None:
    """catalog_refresh jobs load a registered catalog's packages and say what they found:
    gzip told by content, a redirect reported as moved, an old catalog as stale, a wrong pin
    or a missing file as failed (the last good packages stay). Jobs then name a catalog or a
    baseline and create-job fills in the URL and the components."""
    import gzip

    from devstack.lab.idrac.http import Response
    from devstack.lab.idrac.testing import FileServer
    from tests.integration._handlers_dell import FIXTURE

    raw = FIXTURE.read_bytes()
    files = FileServer({"/c/Catalog.xml": raw, "/c/Catalog.xml.gz": gzip.compress(raw)})
    plain_handle = files._handle

    async def handle(req: Any) -> Any:  # Dell moved its catalogs: the old path redirects
        if req.path == "/old/Catalog.xml":
            return Response(301, b"", {"Location": files.url("/c/Catalog.xml")})
        return await plain_handle(req)

    files._handle = handle  # type: ignore[method-assign]
    op = world.users["operator"]
    with files:

        def register_catalog(path: str, **extra: Any) -> str:
            return (
                op.table("firmware_catalogs")
                .insert(
                    {
                        "site_id": world.h.site_id,
                        "name": f"cat-{uuid.uuid4().hex[:6]}",
                        "url": files.url(path),
                        "last_status": "ok",
                        "component_count": 99,
                        **extra,
                    }
                )
                .execute()
                .data[0]["id"]
            )

        def refresh(cid: str, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            job = world.run("catalog_refresh", {"catalog_id": cid, **params}, timeout=60)
            return job, world.h.one("select * from public.firmware_catalogs where id = %s", cid)

        gz = register_catalog("/c/Catalog.xml.gz")
        row = world.h.one(
            "select last_status, component_count from public.firmware_catalogs where id = %s", gz
        )
        assert (row["last_status"], row["component_count"]) == ("never", None)  # results are the executor's
        job, row = refresh(gz)
        n = len(__import__("executor.targets.catalog", fromlist=["Catalog"]).Catalog.from_bytes(raw).packages)
        assert job["status"] == "completed", job
        assert (row["last_status"], row["compressed"], row["component_count"], row["signature_status"]) == (
            "ok",
            True,
            n,
            "unverified",
        )
        assert row["catalog_date"] is not None and row["last_job_id"] is not None and len(row["sha256"]) == 64
        pkgs = world.h.one("select count(*) as n from public.firmware_packages where catalog_id = %s", gz)[
            "n"
        ]
        assert 0 < pkgs <= n

        moved = register_catalog("/old/Catalog.xml")
        job, row = refresh(moved)
        assert job["status"] == "completed" and row["last_status"] == "moved" and row["compressed"] is False
        assert row["moved_to"] == files.url("/c/Catalog.xml") and "update its URL" in row["last_error"]

        job, row = refresh(register_catalog("/c/Catalog.xml"), stale_after_days=1)
        assert row["last_status"] == "stale" and "days old" in row["last_error"]

        pinned = register_catalog("/c/Catalog.xml", expected_sha256="0" * 64)
        job, row = refresh(pinned)
        assert job["status"] == "failed" and (row["last_status"], row["signature_status"]) == (
            "failed",
            "pinned_mismatch",
        )
        op.table("firmware_catalogs").update({"url": files.url("/gone/Catalog.xml")}).eq("id", gz).execute()
        job, row = refresh(gz)
        assert (
            job["status"] == "failed" and row["last_status"] == "failed" and "HTTP 404" in row["last_error"]
        )
        assert (
            world.h.one("select count(*) as n from public.firmware_packages where catalog_id = %s", gz)["n"]
            == pkgs
        )
        op.table("firmware_catalogs").update({"url": files.url("/c/Catalog.xml.gz")}).eq("id", gz).execute()

    # jobs name a catalog or a baseline, not a URL typed by hand
    _, sid = world.env.take()
    base = (
        op.table("firmware_baselines")
        .insert(
            {
                "site_id": world.h.site_id,
                "catalog_id": gz,
                "name": f"bl-{uuid.uuid4().hex[:6]}",
                "components": ["BIOS"],
            }
        )
        .execute()
        .data[0]
    )
    plan = world.invoke(
        "operator",
        "create-job",
        {
            "type": "firmware_update",
            "dry_run": True,
            "maintenance_window_id": world.env.window(),
            "params": {"server_ids": [sid], "dry_run": True, "firmware": {"baseline_id": base["id"]}},
        },
    )["plan"]
    assert plan["params"]["firmware"]["catalog_url"] == files.url("/c/Catalog.xml.gz")
    assert plan["params"]["firmware"]["components"] == ["BIOS"]
    assert plan["params"]["firmware"].get("catalog_sha256") is None  # that catalog has no pin
    # a pinned catalog's SHA-256 goes with its URL (the rolling update's catalog gate checks it)
    plan = world.invoke(
        "operator",
        "create-job",
        {
            "type": "firmware_update",
            "dry_run": True,
            "maintenance_window_id": world.env.window(),
            "params": {"server_ids": [sid], "dry_run": True, "firmware": {"catalog_id": pinned}},
        },
    )["plan"]
    assert plan["params"]["firmware"]["catalog_sha256"] == "0" * 64
    plan = world.invoke(
        "operator",
        "create-job",
        {"type": "firmware_compliance", "dry_run": True, "params": {"server_ids": [sid], "catalog_id": gz}},
    )["plan"]
    assert plan["params"]["catalog_url"] == files.url("/c/Catalog.xml.gz")
    for body, code in (
        ({"server_ids": [sid], "dry_run": True, "firmware": {}}, "catalog_required"),
        (
            {"server_ids": [sid], "dry_run": True, "firmware": {"catalog_id": str(uuid.uuid4())}},
            "catalog_not_found",
        ),
    ):
        status, answer = world.refusal(
            "operator",
            "create-job",
            {
                "type": "firmware_update",
                "dry_run": True,
                "maintenance_window_id": world.env.window(),
                "params": body,
            },
        )
        assert status in (400, 422) and answer["code"] == code, answer


# --- recurring windows through the maintenance-windows function ----------------------------------------
def test_window_series_through_the_function_per_occurrence_or_the_whole_series(world: World) -> None:
    """create_series answers the materialised occurrences; an occurrence is decided on its
    own (four eyes), or the approver approves the series and every open occurrence is
    approved in their name; bad input writes nothing; cancel_series cancels what has not
    started."""
    import datetime as dt

    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5, minutes=11)
    site = world.h.one(
        "insert into public.sites (name) values (%s) returning id", f"ser-{uuid.uuid4().hex[:8]}"
    )["id"]
    n_series = "select count(*) as n from public.maintenance_window_series where site_id = %s"
    for bad, code in (
        ({"recurrence": "RRULE:FREQ=YEARLY"}, "invalid_argument"),
        ({"timezone": "Mars/Olympus_Mons"}, "invalid_argument"),
        ({"duration_minutes": 0}, "invalid_request"),
    ):
        body = {
            "action": "create_series",
            "site_id": site,
            "title": "bad",
            "recurrence": "0 2 * * *",
            "duration_minutes": 30,
            **bad,
        }
        status, answer = world.refusal("operator", "maintenance-windows", body)
        assert status == 400 and answer["code"] == code, answer
        assert "Traceback" not in answer["error"] and "select" not in answer["error"].lower()
    assert world.h.one(n_series, site)["n"] == 0

    made = world.invoke(
        "operator",
        "maintenance-windows",
        {
            "action": "create_series",
            "site_id": site,
            "title": "nightly patching",
            "reason": "monthly firmware",
            "recurrence": f"{at.minute} {at.hour} * * *",
            "timezone": "UTC",
            "duration_minutes": 45,
            "horizon_days": 4,
        },
    )
    occ = made["occurrences"]
    assert made["status"] == "requested" and len(occ) == 4 and {o["status"] for o in occ} == {"requested"}
    first, second = occ[0]["window_id"], occ[1]["window_id"]
    starts = [dt.datetime.fromisoformat(o["starts_at"]) for o in occ]
    assert [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)] == [86400.0] * 3
    assert (dt.datetime.fromisoformat(occ[0]["ends_at"]) - starts[0]).total_seconds() == 45 * 60

    # per occurrence: the requester may not approve, an operator may not, an approver may
    status, answer = world.refusal(
        "operator", "maintenance-windows", {"action": "approve", "window_id": first}
    )
    assert status == 403, answer
    res = world.invoke("admin", "maintenance-windows", {"action": "approve", "window_id": first})
    assert res["status"] == "approved" and res["series_id"] == made["series_id"]
    res = world.invoke(
        "admin", "maintenance-windows", {"action": "reject", "window_id": second, "note": "the DC move"}
    )
    assert res["status"] == "rejected"

    # the series: an operator may not approve it, nor the requester, nor twice
    sid = made["series_id"]
    status, answer = world.refusal(
        "operator", "maintenance-windows", {"action": "approve_series", "series_id": sid}
    )
    assert status == 403, answer
    own = world.invoke(
        "admin",
        "maintenance-windows",
        {
            "action": "create_series",
            "site_id": site,
            "title": "own",
            "recurrence": "0 12 * * 0",
            "duration_minutes": 5,
            "horizon_days": 1,
        },
    )
    status, answer = world.refusal(
        "admin", "maintenance-windows", {"action": "approve_series", "series_id": own["series_id"]}
    )
    assert (status, answer["code"]) == (403, "four_eyes"), answer
    status, answer = world.refusal(
        "admin", "maintenance-windows", {"action": "approve_series", "series_id": str(uuid.uuid4())}
    )
    assert (status, answer["code"]) == (404, "series_not_found"), answer

    res = world.invoke(
        "admin", "maintenance-windows", {"action": "approve_series", "series_id": sid, "note": "ok"}
    )
    by_id = {o["window_id"]: o for o in res["occurrences"]}
    assert res["status"] == "approved" and res["approved_by"] is not None
    # the rejected occurrence stays rejected; the others are approved in the approver's name
    assert by_id[second]["status"] == "rejected"
    assert {o["status"] for w, o in by_id.items() if w != second} == {"approved"}
    assert {o["approved_by"] for w, o in by_id.items() if w != second} == {res["approved_by"]}
    status, answer = world.refusal(
        "admin", "maintenance-windows", {"action": "approve_series", "series_id": sid}
    )
    assert (status, answer["code"]) == (409, "series_not_requested"), answer

    # a viewer may not cancel; the requester may, and nothing that has not started is left
    status, answer = world.refusal(
        "viewer", "maintenance-windows", {"action": "cancel_series", "series_id": sid}
    )
    assert status == 403, answer
    res = world.invoke("operator", "maintenance-windows", {"action": "cancel_series", "series_id": sid})
    assert res["status"] == "cancelled"
    assert {o["status"] for o in res["occurrences"] if o["window_id"] != second} == {"cancelled"}
    status, answer = world.refusal(
        "operator", "maintenance-windows", {"action": "cancel_series", "series_id": sid}
    )
    assert (status, answer["code"]) == (409, "series_not_active"), answer


# --- default schedules and the site's default catalog (20261206200200_job_schedules.sql) --------------
def test_a_new_site_and_vcenter_get_their_default_schedules_and_compliance_follows_the_default_catalog(
    world: World,
) -> None:
    op = world.users["operator"]
    admin = world.users["admin"]
    name = f"def-{uuid.uuid4().hex[:8]}"
    site = admin.table("sites").insert({"name": name, "timezone": "Europe/Berlin"}).execute().data[0]["id"]
    vc = (
        op.table("vcenters")
        .insert({"site_id": site, "name": "vc (hall A)", "address": f"vc-{name}.lab.test"})
        .execute()
        .data[0]["id"]
    )

    def scheds() -> dict[str, dict[str, Any]]:
        return {
            r["name"]: r for r in world.h.query("select * from public.job_schedules where site_id = %s", site)
        }

    s = scheds()
    assert set(s) == {"nightly inventory", "nightly compliance", "hourly sync vc -hall A-"}, set(s)
    assert {(r["job_type"], r["recurrence"], r["timezone"]) for r in s.values()} == {
        ("inventory_refresh", "0 1 * * *", "Europe/Berlin"),
        ("firmware_compliance", "0 3 * * *", "Europe/Berlin"),
        ("vcenter_sync", "@hourly", "UTC"),
    }
    # disabled and nobody's until an operator enables them; no catalog typed into them
    assert all(not r["enabled"] and r["owner_id"] is None and r["next_run_at"] is None for r in s.values())
    assert s["nightly compliance"]["params"] == {"site_id": site}
    assert s["hourly sync vc -hall A-"]["params"] == {"vcenter_id": vc}
    # a second vCenter gets its own; nothing is made twice
    op.table("vcenters").insert({"site_id": site, "name": "vc2", "address": f"vc2-{name}.lab.test"}).execute()
    assert len(scheds()) == 4
    assert world.h.one("select public.ensure_default_schedules(%s) as n", site)["n"] == 0

    # an executor of the site takes compliance (a row only: the jobs stay pending)
    world.h.query(
        "insert into public.executors (site_id, name, public_key, key_id, job_types, last_heartbeat_at) values "
        "(%s, 'cmp', %s, 'k1', '{firmware_compliance}', now())",
        site,
        "x" * 44,
    )
    cid = s["nightly compliance"]["id"]
    op.table("job_schedules").update({"enabled": True}).eq("id", cid).execute()
    row = world.h.one("select owner_id, next_run_at from public.job_schedules where id = %s", cid)
    operator_id = world.users["operator"].auth.get_user().user.id
    assert str(row["owner_id"]) == operator_id and row["next_run_at"] is not None

    def fire_site() -> dict[str, Any]:
        import httpx

        world.h.query(
            "update public.job_schedules set next_run_at = now() - interval '2 seconds' where id = %s", cid
        )
        key = world.h.env["SUPABASE_SERVICE_ROLE_KEY"]
        r = httpx.post(
            f"{world.h.env['SUPABASE_URL']}/functions/v1/schedules",
            timeout=60,
            json={"action": "fire", "site_id": site},
            headers={"Authorization": f"Bearer {key}", "apikey": key},
        )
        assert r.status_code == 200, r.text
        [f] = [f for f in r.json()["fired"] if f["schedule_id"] == cid]
        return f

    # no default catalog: the run fails with create-job's refusal, in words, and makes no job
    f = fire_site()
    assert (f["status"], f["code"]) == ("failed", "catalog_required"), f
    assert "default catalog" in f["error"]
    v = world.h.one("select last_status, last_error from public.v_schedules where schedule_id = %s", cid)
    assert v["last_status"] == "failed" and "default" in v["last_error"]

    def catalog(url: str, default: bool) -> str:
        return (
            op.table("firmware_catalogs")
            .insert({"site_id": site, "name": f"c-{uuid.uuid4().hex[:6]}", "url": url, "is_default": default})
            .execute()
            .data[0]["id"]
        )

    a = catalog("https://repo.lab.test/a/Catalog.xml.gz", True)
    b = catalog("https://repo.lab.test/b/Catalog.xml", False)
    f = fire_site()
    assert f["status"] == "created", f
    job = world.h.job(f["job_id"])
    assert (job["params"]["catalog_id"], job["params"]["catalog_url"]) == (
        a,
        "https://repo.lab.test/a/Catalog.xml.gz",
    )
    world.h.query(
        "update public.jobs set status = 'cancelled', cancel_requested_at = now() where id = %s", f["job_id"]
    )

    # marking another catalog the default moves the nightly check, without editing the schedule
    op.table("firmware_catalogs").update({"is_default": True}).eq("id", b).execute()
    defaults = world.h.query(
        "select id from public.firmware_catalogs where site_id = %s and is_default", site
    )
    assert [str(r["id"]) for r in defaults] == [b]
    f = fire_site()
    assert f["status"] == "created", f
    assert world.h.job(f["job_id"])["params"]["catalog_url"] == "https://repo.lab.test/b/Catalog.xml"
    world.h.query(
        "update public.jobs set status = 'cancelled', cancel_requested_at = now() where id = %s", f["job_id"]
    )
    # a viewer may not move the default
    try:
        world.users["viewer"].table("firmware_catalogs").update({"is_default": True}).eq("id", a).execute()
    except APIError:
        pass  # refused outright or no row visible for update: either way nothing changes
    assert (
        world.h.one("select is_default from public.firmware_catalogs where id = %s", a)["is_default"] is False
    )


# --- an executor restart at the wrong moment (the module's executors are replaced by two new ones) ----------------
def test_an_occurrence_cut_off_mid_fire_by_an_executor_restart_still_makes_exactly_one_job(
    world: World,
) -> None:
    """The executors' own loop fires a due occurrence; while that fire's transaction is held
    between creating the job and recording the run (a test connection holds the run's
    unique key), every executor of the site is SIGKILLed and the fire's database session
    dies with them. Nothing of it stays (no job, no run, still due); two new executors
    then fire it, and exactly one job comes out."""
    import datetime as dt

    import psycopg2

    _, sid = world.env.take()
    sched = world.save_schedule(
        "operator",
        {
            "site_id": world.h.site_id,
            "name": f"restart-{uuid.uuid4().hex[:6]}",
            "job_type": "inventory_refresh",
            "params": {"server_ids": [sid]},
            "recurrence": "@daily",
        },
    )
    occurrence = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=5)
    jobs_of = "select id from public.jobs where scope ->> 'schedule_id' = %s"
    runs_of = "select * from public.schedule_runs where schedule_id = %s"
    blocker = psycopg2.connect(world.h.env["SUPABASE_DB_URL"])
    try:
        with blocker.cursor() as cur:  # holds (schedule, occurrence) in schedule_runs, uncommitted
            cur.execute(
                "insert into public.schedule_runs (schedule_id, occurrence_at, status, code) "
                "values (%s, %s, 'failed', 'test_hold')",
                (sched["id"], occurrence),
            )
        world.h.query(
            "update public.job_schedules set next_run_at = %s where id = %s", occurrence, sched["id"]
        )
        # an executor's loop fires it: create-job's insert is done, the run's record waits on us
        waiting = wait_until(
            lambda: world.h.query(
                "select a.pid from pg_stat_activity a where a.wait_event_type = 'Lock' "
                "and a.query ilike %s and pg_blocking_pids(a.pid) @> array[%s]",
                "%schedule_record_run%",
                blocker.info.backend_pid,
            ),
            60,
            "an executor's fire to wait on the held occurrence",
            interval=0.1,
        )
        for p in world.h.procs:  # the restart: every executor of the site dies at this moment ...
            if p.proc.poll() is None:
                p.kill9()
        for w in waiting:  # ... and the fire's session with it
            world.h.query("select pg_terminate_backend(%s)", w["pid"])
    finally:
        blocker.rollback()
        blocker.close()
    assert world.h.query(jobs_of, sched["id"]) == [] and world.h.query(runs_of, sched["id"]) == []
    assert (
        world.h.one("select next_run_at from public.job_schedules where id = %s", sched["id"])["next_run_at"]
        == occurrence
    )

    # the executors come back (two of them): the occurrence is fired once
    world.env.respawn("dell-3")
    world.env.respawn("dell-4")
    runs = wait_until(
        lambda: world.h.query(runs_of, sched["id"]), 90, "a restarted executor to fire", interval=0.5
    )
    assert [(r["status"], r["occurrence_at"]) for r in runs] == [("created", occurrence)]
    for _ in range(3):  # more fire calls on top of both executors' loops change nothing
        fire(world)
    assert len(world.h.query(runs_of, sched["id"])) == 1
    [job] = world.h.query(jobs_of, sched["id"])
    assert str(job["id"]) == str(runs[0]["job_id"])
    world.h.wait_status(str(job["id"]), ("completed",), 90)


# --- Dell catalog signatures (20261207120100_firmware_catalogs_managed.sql) -----------------------------
def test_catalog_refresh_verifies_the_sign_file_against_the_catalogs_signing_key(world: World) -> None:
    """A catalog with a signing key loads only with a good <URL>.sign by that key (found
    beside where a redirect led); an altered catalog, another key's signature or no .sign
    fails the refresh, says why, and keeps the last good packages. Keys and signatures are
    made at run time by GnuPG; the executor verifies with gpgv."""
    import gzip

    from devstack.lab.idrac.http import Response
    from devstack.lab.idrac.testing import FileServer
    from tests.integration._handlers_dell import FIXTURE
    from tests.unit.test_catalog_signature import Signer

    dell, other = Signer("dell-test"), Signer("someone-else")
    try:
        gz = gzip.compress(FIXTURE.read_bytes())
        altered = gzip.compress(FIXTURE.read_bytes().replace(b"</Manifest>", b"<!-- --></Manifest>"))
        files = FileServer(
            {
                "/s/Catalog.xml.gz": gz,
                "/s/Catalog.xml.gz.sign": dell.sign(gz),
                "/t/Catalog.xml.gz": altered,
                "/t/Catalog.xml.gz.sign": dell.sign(gz),
                "/o/Catalog.xml.gz": gz,
                "/o/Catalog.xml.gz.sign": other.sign(gz),
                "/n/Catalog.xml.gz": gz,
            }
        )
        plain_handle = files._handle

        async def handle(req: Any) -> Any:
            if req.path == "/old/Catalog.xml.gz":
                return Response(302, b"", {"Location": files.url("/s/Catalog.xml.gz")})
            return await plain_handle(req)

        files._handle = handle  # type: ignore[method-assign]
        op = world.users["operator"]
        with files:

            def refresh(path: str, key: str | None = dell.public) -> tuple[dict[str, Any], dict[str, Any]]:
                cid = (
                    op.table("firmware_catalogs")
                    .insert(
                        {
                            "site_id": world.h.site_id,
                            "name": f"sig-{uuid.uuid4().hex[:6]}",
                            "url": files.url(path),
                            "signing_key": key,
                        }
                    )
                    .execute()
                    .data[0]["id"]
                )
                job = world.run("catalog_refresh", {"catalog_id": cid}, timeout=60)
                return job, world.h.one("select * from public.firmware_catalogs where id = %s", cid)

            job, row = refresh("/s/Catalog.xml.gz")
            assert job["status"] == "completed", job["error"]
            assert (row["last_status"], row["signature_status"]) == ("ok", "signed_ok")
            step = {s["step_key"]: s for s in world.h.steps(job["id"])}["refresh"]
            assert len(step["details"]["result"]["signed_by"]) == 40
            good = row["id"]
            pkgs = "select count(*) as n from public.firmware_packages where catalog_id = %s"
            loaded = world.h.one(pkgs, good)["n"]
            assert loaded > 0

            job, row = refresh("/old/Catalog.xml.gz")  # moved: the .sign beside the new place
            assert (job["status"], row["last_status"], row["signature_status"]) == (
                "completed",
                "moved",
                "signed_ok",
            )

            for path, status, words in (
                ("/t/Catalog.xml.gz", "signature_bad", "bad signature"),
                ("/o/Catalog.xml.gz", "signature_bad", "not the catalog's signing key"),
                ("/n/Catalog.xml.gz", "signature_missing", "no signature at"),
            ):
                job, row = refresh(path)
                assert job["status"] == "failed", (path, row)
                assert (row["last_status"], row["signature_status"]) == ("failed", status), (path, row)
                assert words in row["last_error"], row["last_error"]
                assert world.h.one(pkgs, row["id"])["n"] == 0

            # no key: not checked, as before
            job, row = refresh("/n/Catalog.xml.gz", key=None)
            assert (job["status"], row["signature_status"]) == ("completed", "unverified")

            # the good catalog's file is swapped for an altered one: refused, its packages stay
            op.table("firmware_catalogs").update({"url": files.url("/t/Catalog.xml.gz")}).eq(
                "id", good
            ).execute()
            job = world.run("catalog_refresh", {"catalog_id": good}, timeout=60)
            row = world.h.one("select * from public.firmware_catalogs where id = %s", good)
            assert (job["status"], row["signature_status"]) == ("failed", "signature_bad")
            assert world.h.one(pkgs, good)["n"] == loaded
            # a key that is not one is refused by the database
            with pytest.raises(APIError):
                op.table("firmware_catalogs").update({"signing_key": "not a key"}).eq("id", good).execute()
    finally:
        dell.close()
        other.close()


# --- the call log's retention (sites.bmc_call_retention_days) -------------------------------------------
def test_the_call_log_keeps_what_the_sites_retention_says(world: World) -> None:
    """An admin sets the site's retention (an operator may not); the next batch an executor
    records prunes the site's calls older than that and keeps the rest."""
    site = world.h.site_id
    world.users["operator"].table("sites").update({"bmc_call_retention_days": 1}).eq("id", site).execute()
    assert world.h.one("select bmc_call_retention_days as d from public.sites where id = %s", site)["d"] == 30
    world.users["admin"].table("sites").update({"bmc_call_retention_days": 7}).eq("id", site).execute()
    assert world.h.one("select bmc_call_retention_days as d from public.sites where id = %s", site)["d"] == 7
    with pytest.raises(APIError):  # 1 to 3650 days
        world.users["admin"].table("sites").update({"bmc_call_retention_days": 0}).eq("id", site).execute()
    _, sid = world.env.take()
    job = world.run("inventory_refresh", {"server_ids": [sid]})["id"]  # the calls belong to a job of the site
    ex = world.h.one(
        "select id from public.executors where site_id = %s and status = 'active' "
        "order by last_heartbeat_at desc nulls last limit 1",
        site,
    )["id"]
    tag = uuid.uuid4().hex[:8]
    old, kept = (
        world.h.one(
            "insert into public.bmc_calls (job_id, site_id, step, target, protocol, method, path, status, "
            "duration_ms, at) values (%s, %s, 'retention', %s, 'redfish', 'GET', '/redfish/v1', 200, 5, "
            "now() - make_interval(days => %s)) returning id",
            job,
            site,
            f"{tag}-{days}",
            days,
        )["id"]
        for days in (8, 6)
    )
    call = {
        "job_id": str(job),
        "step": "retention",
        "target": f"{tag}-now",
        "method": "GET",
        "path": "/redfish/v1",
        "status": 200,
        "duration_ms": 3,
    }
    record = "select public.executor_record_bmc_calls(%s, %s::jsonb) as n"
    assert world.h.one(record, ex, json.dumps([call]))["n"] == 1
    left = world.h.query("select id, target from public.bmc_calls where target like %s", f"{tag}-%")
    assert {r["target"] for r in left} == {f"{tag}-6", f"{tag}-now"}
    assert old not in {r["id"] for r in left} and kept in {r["id"] for r in left}
    world.users["admin"].table("sites").update({"bmc_call_retention_days": 30}).eq("id", site).execute()
