"""The replication gate on real jobs: an operator's ``power_operation``, ``firmware_update``
or ``virtual_media_mount`` with ``boot_once`` (created through ``create-job``, run by a real
executor process against the simulated iDRAC lab) that would take down a storage server
whose replication pair lags beyond its policy pauses before its first change with a
``replication_lag`` blocker naming the pair and its lag; ``acknowledge`` needs a reason, and
with one the job resumes and does its work; ``recheck`` runs the gate again; ``abort``
cancels with the server untouched. A pair within its policy does not block, nor does
powering on or mounting media. (``esxi_upgrade``: the gate is in
tests/integration/test_handlers_vsphere_esxi.py.)

The gate itself (which pairs, which hosts, overrides) is unit-tested in
tests/unit/test_replication_gate.py; see docs/replication.md.
"""

from __future__ import annotations

import uuid

import pytest
from supabase_functions.errors import FunctionsHttpError

from devstack.cli import add_user
from supabase import create_client
from tests.e2e.executor_harness import wait_until
from tests.integration._handlers_dell import DellEnv

PASSWORD = "gate-test-pw-1"


@pytest.fixture(scope="module")
def env(stack):
    e = DellEnv(stack, bmcs=12)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(scope="module")
def operator(env):
    email = f"gate-op-{uuid.uuid4().hex[:8]}@replication.test"
    add_user(env.h.stack, email, "operator", PASSWORD)
    client = create_client(env.h.env["SUPABASE_URL"], env.h.env["SUPABASE_ANON_KEY"])
    client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    return client


def invoke(client, name: str, body: dict) -> tuple[int, dict]:
    try:
        return 200, client.functions.invoke(name, {"body": body, "responseType": "json"})
    except FunctionsHttpError as exc:
        return exc.status, {"error": exc.message}


def pair(env: DellEnv, name: str, source_server: str, *, lag_s: int, max_lag_s: int = 3600) -> str:
    return str(
        env.h.one(
            "insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
            "target_dataset, source_server_id, max_lag_seconds, schedule, last_synced_snapshot_at) "
            "values (%s, %s, 'zfs1', %s, 'zfs2', %s, %s, %s, 'manual', now() - make_interval(secs => %s)) returning id",
            env.h.site_id,
            name,
            f"tank/{name}",
            f"backup/{name}",
            source_server,
            max_lag_s,
            lag_s,
        )["id"]
    )


def test_a_power_off_pauses_on_a_lagging_pair_and_resumes_after_an_override_with_a_reason(env, operator):
    b, sid = env.take()
    b.power_state = "On"
    name = f"gate-{uuid.uuid4().hex[:6]}"
    pid = pair(env, name, sid, lag_s=3 * 3600)

    status, res = invoke(
        operator,
        "create-job",
        {"type": "power_operation", "params": {"server_ids": [sid], "action": "force_off"}},
    )
    assert status == 200, res
    job = env.wait(res["job_id"])
    assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
    assert b.power_state == "On"  # paused before the server was touched
    [blk] = env.h.query(
        "select id, kind::text as kind, description, server_id::text as server_id, details "
        "from public.job_blockers where job_id = %s",
        job["id"],
    )
    assert blk["kind"] == "replication_lag" and blk["server_id"] == sid
    assert name in blk["description"] and "3.0 h" in blk["description"], blk["description"]
    assert blk["details"]["pair_id"] == pid and 3 * 3600 <= blk["details"]["lag_seconds"] < 3 * 3600 + 600
    assert blk["details"]["max_lag_seconds"] == 3600

    # an override needs a reason: refused without one, nothing written
    status, res = invoke(
        operator,
        "resolve-blockers",
        {"job_id": job["id"], "decisions": [{"blocker_id": str(blk["id"]), "decision": "acknowledge"}]},
    )
    assert status == 409, res
    assert env.h.job(job["id"])["status"] == "paused"

    reason = "replica verified by hand; the array is being retired"
    status, res = invoke(
        operator,
        "resolve-blockers",
        {
            "job_id": job["id"],
            "decisions": [{"blocker_id": str(blk["id"]), "decision": "acknowledge", "note": reason}],
        },
    )
    assert status == 200 and res["resumed"] is True, res
    job = env.wait(job["id"])
    assert job["status"] == "completed", job
    wait_until(lambda: b.power_state == "Off", 10, "the BMC to be off")
    [r] = env.h.query(
        "select action::text as action, note from public.blocker_resolutions where blocker_id = %s", blk["id"]
    )
    assert r == {"action": "acknowledge", "note": reason}


def test_a_pair_within_its_policy_and_a_power_on_do_not_block(env, operator):
    b, sid = env.take()
    b.power_state = "On"
    pair(env, f"fresh-{uuid.uuid4().hex[:6]}", sid, lag_s=60)
    status, res = invoke(
        operator,
        "create-job",
        {"type": "power_operation", "params": {"server_ids": [sid], "action": "force_off"}},
    )
    assert status == 200, res
    assert env.wait(res["job_id"])["status"] == "completed"
    # powering on takes nothing down: a lagging pair does not hold it back
    pair(env, f"stale-{uuid.uuid4().hex[:6]}", sid, lag_s=5 * 3600)
    status, res = invoke(
        operator, "create-job", {"type": "power_operation", "params": {"server_ids": [sid], "action": "on"}}
    )
    assert status == 200, res
    assert env.wait(res["job_id"])["status"] == "completed"
    assert b.power_state == "On"


def test_recheck_after_a_sync_lets_the_job_go_and_a_pair_still_behind_pauses_it_again(env, operator):
    b, sid = env.take()
    b.power_state = "On"
    pid = pair(env, f"wait-{uuid.uuid4().hex[:6]}", sid, lag_s=2 * 3600)
    status, res = invoke(
        operator,
        "create-job",
        {"type": "power_operation", "params": {"server_ids": [sid], "action": "power_cycle"}},
    )
    assert status == 200, res
    job_id = res["job_id"]

    def open_blocker() -> dict:
        job = env.wait(job_id)
        assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
        [blk] = env.h.query(
            "select id, details from public.job_blockers where job_id = %s and status = 'open'", job_id
        )
        assert blk["details"]["pair_id"] == pid
        return blk

    def recheck(blk: dict) -> None:
        status, res = invoke(
            operator,
            "resolve-blockers",
            {"job_id": job_id, "decisions": [{"blocker_id": str(blk["id"]), "decision": "recheck"}]},
        )
        assert status == 200 and res["resumed"] is True, res
        wait_until(lambda: env.h.job(job_id)["status"] != "paused", 30, "the job to resume")

    first = open_blocker()
    recheck(first)  # nothing changed: the gate pauses the job again, with a new blocker
    second = open_blocker()
    assert second["id"] != first["id"] and b.boot_count == 0
    # the pair catches up (what a sync now records on it), then the operator rechecks
    env.h.query(
        "update public.replication_pairs set last_synced_snapshot_at = now() - interval '1 minute' "
        "where id = %s",
        pid,
    )
    boots = b.boot_count
    recheck(second)
    job = env.wait(job_id)
    assert job["status"] == "completed", (
        job["error"],
        env.h.query(
            "select step_key, status, error from public.workflow_executions where job_id = %s order by seq",
            job_id,
        ),
    )
    assert b.boot_count == boots + 1
    # a recheck is for the replication gate only: refused on other blockers (tests/integration/
    # test_functions_behaviour.py covers those); here, an unknown decision is refused outright
    status, _ = invoke(
        operator,
        "resolve-blockers",
        {"job_id": job_id, "decisions": [{"blocker_id": str(second["id"]), "decision": "wait"}]},
    )
    assert status == 400


def test_a_firmware_update_that_reboots_pauses_before_its_first_change(env, operator):
    b, sid = env.take("PowerEdge R640", old=True)
    env.fake_backup(sid)
    before = [c.version for c in b.components]
    boots = b.boot_count
    pair(env, f"fw-{uuid.uuid4().hex[:6]}", sid, lag_s=4 * 3600)
    params = {"server_ids": [sid], "firmware": {"catalog_url": env.files.url("repo/Catalog.xml")}}
    status, res = invoke(
        operator,
        "create-job",
        {"type": "firmware_update", "params": params, "maintenance_window_id": env.window()},
    )
    assert status == 200, res
    job_id = res["job_id"]
    job = env.wait(job_id, timeout=90)
    assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
    steps = env.steps(job_id)
    assert (
        steps["compliance"]["status"] == "pending" and "stage" not in steps
    )  # nothing staged, nothing flashed
    [blk] = env.h.query("select id, description, host_id from public.job_blockers where job_id = %s", job_id)
    assert "4.0 h" in blk["description"] and blk["host_id"] is None  # a server without an ESXi host
    # skip_host needs a host: refused; abort cancels the job, the server untouched
    status, res = invoke(
        operator,
        "resolve-blockers",
        {"job_id": job_id, "decisions": [{"blocker_id": str(blk["id"]), "decision": "skip_host"}]},
    )
    assert status == 409, res
    status, res = invoke(
        operator,
        "resolve-blockers",
        {"job_id": job_id, "decisions": [{"blocker_id": str(blk["id"]), "decision": "abort"}]},
    )
    assert status == 200, res
    assert env.wait(job_id)["status"] == "cancelled"
    assert [c.version for c in b.components] == before and b.boot_count == boots


def test_a_virtual_media_boot_once_is_gated_and_a_plain_mount_is_not(env, operator):
    b, sid = env.take()
    b.power_state = "On"
    pair(env, f"vm-{uuid.uuid4().hex[:6]}", sid, lag_s=3 * 3600)
    url = env.files.url("iso/installer.iso")
    # mounting alone takes nothing down
    status, res = invoke(
        operator,
        "create-job",
        {"type": "virtual_media_mount", "params": {"server_ids": [sid], "image_url": url}},
    )
    assert status == 200, res
    assert env.wait(res["job_id"])["status"] == "completed"
    boots = b.boot_count
    status, res = invoke(
        operator,
        "create-job",
        {"type": "virtual_media_mount", "params": {"server_ids": [sid], "image_url": url, "boot_once": True}},
    )
    assert status == 200, res
    job = env.wait(res["job_id"])
    assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
    assert b.boot_count == boots
    [blk] = env.h.query(
        "select id from public.job_blockers where job_id = %s and kind = 'replication_lag'", job["id"]
    )
    status, res = invoke(
        operator,
        "resolve-blockers",
        {
            "job_id": job["id"],
            "decisions": [
                {"blocker_id": str(blk["id"]), "decision": "acknowledge", "note": "installer must boot now"}
            ],
        },
    )
    assert status == 200 and res["resumed"] is True, res
    assert env.wait(job["id"])["status"] == "completed"
    assert b.boot_count == boots + 1 and b.boot_log[-1] == "VirtualCD"
