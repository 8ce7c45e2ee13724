"""The edge functions' behaviour through the local stack: what each action writes, and
the specific 4xx (that writes nothing) for each kind of bad request."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from executor.jobtypes import parse_params
from tests.integration._functions_support import (
    FnEnv,
    Raw,
    close_env,
    counts,
    insert_blocker,
    insert_job,
    insert_window,
    invoke,
    make_env,
    q,
    window_slot,
)
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL

CATALOG = {"catalog_url": "https://downloads.example.com/Catalog.xml.gz"}
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def refused(env: FnEnv, fn: str, body, role: str, status: int, code: str, raw: bytes | None = None) -> dict:
    """Call, expect ``status``/``code`` with the error shape, and that nothing was written."""
    before = counts(env)
    got, data = env.raw.call(fn, body, env.users[role].token, raw=raw)
    assert (got, data.get("code")) == (status, code), data
    assert set(data) == {"error", "code", "details"} and data["error"], data
    assert "Traceback" not in json.dumps(data) and "select " not in json.dumps(data).lower()
    assert counts(env) == before, f"{fn} {code} wrote rows"
    return data


def ok(env: FnEnv, fn: str, body, role: str = "operator") -> dict:
    status, data = invoke(env.users[role], fn, body)
    assert status == 200, data
    return data


def approved_window(env: FnEnv, cluster: str | None = None) -> str:
    """A current window, approved by one approver after another user requested it."""
    starts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    ends = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    return insert_window(
        env.conn,
        env.fleet.site_a,
        env.users["viewer"].user_id,
        "approved",
        cluster,
        starts,
        ends,
        env.users["approver"].user_id,
    )


def esxi_credentials(env: FnEnv, names: tuple[str, ...]) -> list[str]:
    """Make site A's credential sets of kind esxi exactly ``names`` (written as the database
    owner, as an admin's encrypt-credentials call would leave them); returns their ids."""
    q(env.conn, "delete from public.credential_sets where site_id = %s and kind = 'esxi'", env.fleet.site_a)
    return [
        str(
            q(
                env.conn,
                INSERT_SEALED_CREDENTIAL,
                env.fleet.site_a,
                n,
                "esxi",
                "root",
                env.fleet.executor_key.kid,
                "sealed-" + "x" * 32,
            )[0]["id"]
        )
        for n in names
    ]


# --- create-job -------------------------------------------------------------------------------


def test_every_job_type_is_created_with_its_tasks(env: FnEnv):
    f = env.fleet
    c0, c1 = f.clusters
    window = approved_window(env)
    [esxi_ssh] = esxi_credentials(env, ("esxi-ssh",))
    requests = {
        "rolling_cluster_update": {"cluster_id": c0, "firmware": CATALOG},
        "firmware_update": {"server_ids": [f.host_servers[f.hosts[c1][0]]], "firmware": CATALOG},
        "esxi_upgrade": {
            "host_ids": [f.hosts[c1][1]],
            "image": {"target_version": "8.0.3", "depot_url": "https://d/x.zip"},
        },
        "power_operation": {"server_ids": [f.standalone_server], "action": "on"},
        "virtual_media_mount": {"server_ids": [f.standalone_server], "image_url": "http://10.0.0.5/esxi.iso"},
        "scp_backup": {"server_ids": [f.standalone_server, f.host_servers[f.hosts[c0][2]]]},
        "vcenter_sync": {"vcenter_id": f.vcenter},
        "replication_sync": {"replication_pair_ids": [f.replication_pair]},
    }
    for job_type, params in requests.items():
        body = {"type": job_type, "params": params}
        if job_type in ("rolling_cluster_update", "firmware_update", "esxi_upgrade"):
            body["maintenance_window_id"] = window
        res = ok(env, "create-job", body)
        job = q(
            env.conn,
            "select type::text, status::text, site_id::text, cluster_id::text, params, scope, created_by::text, "
            "maintenance_window_id::text from public.jobs where id = %s",
            res["job_id"],
        )[0]
        tasks = q(
            env.conn,
            "select target_kind::text, target_id::text, seq from public.job_tasks where job_id = %s "
            "order by seq",
            res["job_id"],
        )
        assert job["status"] == "pending" and job["site_id"] == f.site_a
        assert job["created_by"] == env.users["operator"].user_id
        parse_params(job_type, job["params"])
        assert (
            [t["target_id"] for t in tasks]
            == [t["id"] for t in job["scope"]["targets"]]
            == [t["target_id"] for t in res["plan"]["tasks"]]
        )
        assert [t["seq"] for t in tasks] == list(range(len(tasks)))
        if job_type == "rolling_cluster_update":
            assert (
                len(tasks) == 3 and {t["target_kind"] for t in tasks} == {"host"} and job["cluster_id"] == c0
            )
            assert job["params"]["max_parallel_hosts"] == 1 and job["params"]["blocker_default"] == "ask"
            assert job["maintenance_window_id"] == window
        creds = q(
            env.conn,
            "select c.kind::text from public.jobs j, unnest(j.credential_set_ids) i(id) "
            "join public.credential_sets c on c.id = i.id where j.id = %s",
            res["job_id"],
        )
        if job_type == "esxi_upgrade":
            assert job["cluster_id"] == c1
            # the executor logs in to the hosts over SSH with the site's esxi set
            assert esxi_ssh in res["plan"]["credential_set_ids"]
            assert [c["kind"] for c in creds] == ["esxi"]
        else:
            assert "esxi" not in {c["kind"] for c in creds}, job_type


def test_esxi_upgrade_carries_the_sites_one_esxi_credential_set(env: FnEnv):
    f = env.fleet
    c1 = f.clusters[1]
    window = approved_window(env)
    body = {
        "type": "esxi_upgrade",
        "maintenance_window_id": window,
        "params": {
            "host_ids": [f.hosts[c1][2]],
            "image": {"target_version": "8.0.3", "depot_url": "https://d/x.zip"},
        },
    }
    try:
        esxi_credentials(env, ())
        d = refused(env, "create-job", body, "operator", 422, "no_esxi_credentials")
        assert d["details"] == {"site_id": f.site_a, "kind": "esxi"}
        refused(env, "create-job", {**body, "dry_run": True}, "operator", 422, "no_esxi_credentials")
        two = esxi_credentials(env, ("esxi-new", "esxi-old"))
        d = refused(env, "create-job", body, "operator", 422, "ambiguous_esxi_credentials")
        assert sorted(c["id"] for c in d["details"]["credential_sets"]) == sorted(two)
        assert "sealed" not in json.dumps(d)  # metadata only, never the envelope
        # a credential set of another kind or another site is not taken for the SSH login
        [mine] = esxi_credentials(env, ("esxi-ssh",))
        q(
            env.conn,
            "insert into public.credential_sets (site_id, name, kind, username) "
            "values (%s, 'b-esxi', 'esxi', 'root'), (%s, 'a-ssh', 'ssh', 'root')",
            f.site_b,
            f.site_a,
        )
        res = ok(env, "create-job", body)
        assert res["status"] == "pending"
        stored = q(
            env.conn, "select credential_set_ids::text[] as ids from public.jobs where id = %s", res["job_id"]
        )[0]
        assert mine in stored["ids"] and mine in res["plan"]["credential_set_ids"]
        kinds = q(
            env.conn,
            "select c.site_id::text, c.kind::text from public.credential_sets c where c.id = any(%s::uuid[])",
            stored["ids"],
        )
        assert {k["site_id"] for k in kinds} == {f.site_a} and [k["kind"] for k in kinds].count("esxi") == 1
        ok(env, "job-control", {"action": "cancel", "job_id": res["job_id"]})
    finally:
        esxi_credentials(env, ("esxi-ssh",))
        q(
            env.conn,
            "delete from public.credential_sets where name in ('b-esxi', 'a-ssh') and site_id in (%s, %s)",
            f.site_a,
            f.site_b,
        )


def test_dry_run_returns_the_plan_and_writes_nothing(env: FnEnv):
    before = counts(env)
    res = ok(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [env.fleet.standalone_server]}, "dry_run": True},
    )
    assert res["dry_run"] is True and res["plan"]["risk"] == "low" and len(res["plan"]["tasks"]) == 1
    assert res["plan"]["params"]["components"] == ["ALL"]
    assert counts(env) == before


def test_create_job_refusals(env: FnEnv):
    f = env.fleet
    c0, c1 = f.clusters
    srv = f.standalone_server
    refused(env, "create-job", None, "operator", 400, "invalid_json", raw=b'{"type": "scp_backup", ')
    refused(env, "create-job", None, "operator", 400, "invalid_body", raw=b"[]")
    refused(env, "create-job", {"type": "format_disks", "params": {}}, "operator", 400, "unknown_job_type")
    refused(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": "all"}},
        "operator",
        400,
        "invalid_params",
    )
    refused(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [srv]}, "priority": "high"},
        "operator",
        400,
        "invalid_request",
    )
    refused(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [srv]}, "pad": "x" * 70_000},
        "operator",
        413,
        "payload_too_large",
    )
    missing = str(uuid.uuid4())
    d = refused(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [srv, missing]}},
        "operator",
        422,
        "target_not_found",
    )
    assert d["details"]["missing"] == [{"kind": "server", "id": missing}]
    refused(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [srv, f.server_b]}},
        "operator",
        422,
        "targets_span_sites",
    )
    refused(
        env,
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [srv]}, "site_id": f.site_b},
        "operator",
        422,
        "site_mismatch",
    )
    refused(
        env,
        "create-job",
        {
            "type": "scp_backup",
            "params": {"server_ids": [srv]},
            "scheduled_for": (NOW - dt.timedelta(hours=1)).isoformat(),
        },
        "operator",
        400,
        "schedule_in_past",
    )
    refused(
        env, "create-job", {"type": "scp_backup", "params": {"server_ids": [srv]}}, "viewer", 403, "forbidden"
    )
    # safety policy
    rolling = {"type": "rolling_cluster_update", "params": {"cluster_id": c1, "firmware": CATALOG}}
    refused(env, "create-job", rolling, "operator", 409, "window_required")
    requested = insert_window(env.conn, f.site_a, env.users["viewer"].user_id, cluster=c1)
    refused(
        env,
        "create-job",
        {**rolling, "maintenance_window_id": requested},
        "operator",
        409,
        "window_not_approved",
    )
    other_cluster = approved_window(env, cluster=c0)
    refused(
        env,
        "create-job",
        {**rolling, "maintenance_window_id": other_cluster},
        "operator",
        409,
        "window_wrong_scope",
    )
    window = approved_window(env, cluster=c1)
    refused(
        env,
        "create-job",
        {
            "type": "rolling_cluster_update",
            "maintenance_window_id": window,
            "params": {"cluster_id": c1, "firmware": CATALOG, "max_parallel_hosts": 2},
        },
        "operator",
        422,
        "cluster_limit",
    )
    refused(
        env,
        "create-job",
        {
            "type": "rolling_cluster_update",
            "maintenance_window_id": window,
            "params": {"cluster_id": c1, "firmware": CATALOG, "host_ids": [f.hosts[c0][0]]},
        },
        "operator",
        422,
        "host_not_in_cluster",
    )
    refused(
        env,
        "create-job",
        {
            "type": "power_operation",
            "params": {
                "server_ids": [f.host_servers[f.hosts[c0][0]], f.host_servers[f.hosts[c1][0]]],
                "action": "force_off",
            },
        },
        "operator",
        422,
        "targets_span_clusters",
    )
    ok(env, "create-job", {**rolling, "maintenance_window_id": window})
    refused(
        env,
        "create-job",
        {**rolling, "maintenance_window_id": window},
        "operator",
        409,
        "rolling_update_in_progress",
    )


def test_hosts_out_at_once_follow_each_types_planning_hint(env: FnEnv):
    """planJob counts the hosts a job has out at once by its type's hosts_out hint
    (job-schemas.json, from executor/jobtypes.py), against max_hosts_out_per_cluster (1):
    power_operation takes every targeted host of the cluster out, but none to power on;
    firmware_update as many as max_parallel."""
    f = env.fleet
    c0 = f.clusters[0]
    two = [f.host_servers[h] for h in f.hosts[c0][:2]]
    force_off = {"type": "power_operation", "params": {"server_ids": two, "action": "force_off"}}
    d = refused(env, "create-job", force_off, "operator", 422, "cluster_limit")
    assert d["details"]["violations"][0]["details"] == {"requested": 2, "limit": 1}
    power_on = ok(
        env, "create-job", {**force_off, "params": {"server_ids": two, "action": "on"}, "dry_run": True}
    )
    assert [t["target_id"] for t in power_on["plan"]["tasks"]] == two
    window = approved_window(env, cluster=c0)
    flash = {
        "type": "firmware_update",
        "maintenance_window_id": window,
        "params": {"server_ids": two, "firmware": CATALOG, "max_parallel": 2},
    }
    d = refused(env, "create-job", flash, "operator", 422, "cluster_limit")
    assert d["details"]["violations"][0]["details"] == {"requested": 2, "limit": 1}
    one_at_a_time = ok(
        env, "create-job", {**flash, "params": {**flash["params"], "max_parallel": 1}, "dry_run": True}
    )
    assert one_at_a_time["plan"]["cluster_id"] == c0 and one_at_a_time["plan"]["requires_window"] is True


def test_the_job_write_path_is_not_an_rpc_for_users(env: FnEnv):
    """create-job's one write (public.functions_create_job) is for the service role: an
    operator who calls it directly, or inserts into jobs, is refused; with the operator's
    claims under the service role (what create-job does after its checks) it still checks
    the role, the test-only type and the window of a risky type."""
    op, viewer = env.users["operator"], env.users["viewer"]
    scope = json.dumps({"targets": [{"kind": "server", "id": env.fleet.standalone_server, "name": "s"}]})
    args = ("scp_backup", env.fleet.site_a, None, "{}", scope, 50, "", None, None, [])
    call = (
        "select public.functions_create_job(%s::public.job_type, %s, %s, %s::jsonb, %s::jsonb, %s::smallint, %s, "
        "%s, %s, %s::uuid[])"
    )

    def attempt(role: str, uid: str, sql: str, params: tuple):
        conn = psycopg2.connect(env.stack.pg.dsn())
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                    (role, json.dumps({"sub": uid, "role": "authenticated"})),
                )
                cur.execute(sql, params)
                return cur.fetchone()
        finally:
            conn.close()

    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        attempt("authenticated", op.user_id, call, args)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        attempt(
            "authenticated",
            op.user_id,
            "insert into public.jobs (type, site_id) values ('scp_backup', %s) returning id",
            (env.fleet.site_a,),
        )
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="forbidden"):
        attempt("service_role", viewer.user_id, call, args)
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match="selftest"):
        attempt("service_role", op.user_id, call, ("selftest", *args[1:]))
    with pytest.raises(psycopg2.errors.RaiseException, match="window_required"):
        attempt("service_role", op.user_id, call, ("firmware_update", *args[1:]))
    (job,) = attempt("service_role", op.user_id, call, args)
    row = q(
        env.conn,
        "select j.created_by::text, j.status::text, count(t.id)::int as tasks from public.jobs j "
        "join public.job_tasks t on t.job_id = j.id where j.id = %s group by 1, 2",
        job,
    )[0]
    assert row == {"created_by": op.user_id, "status": "pending", "tasks": 1}
    audit = q(
        env.conn,
        "select actor_kind, actor_id::text from public.audit_log where table_name = 'jobs' "
        "and row_id = %s and action = 'job.created'",
        str(job),
    )
    assert audit == [{"actor_kind": "user", "actor_id": op.user_id}]


# --- job-control --------------------------------------------------------------------------------


def test_job_control_actions(env: FnEnv):
    f, c = env.fleet, env.conn
    running = insert_job(c, f, "running")
    assert ok(env, "job-control", {"action": "pause", "job_id": running})["requested"] is True
    assert q(c, "select pause_requested_at is not null as p from public.jobs where id = %s", running)[0]["p"]
    refused(env, "job-control", {"action": "pause", "job_id": running}, "operator", 409, "already_requested")
    res = ok(env, "job-control", {"action": "cancel", "job_id": running})
    assert res == {"job_id": running, "action": "cancel", "status": "running", "requested": True}
    row = q(c, "select status::text, cancel_requested_by::text from public.jobs where id = %s", running)[0]
    assert row == {"status": "running", "cancel_requested_by": env.users["operator"].user_id}

    pending = insert_job(c, f, "pending")
    assert ok(env, "job-control", {"action": "cancel", "job_id": pending})["status"] == "cancelled"
    refused(env, "job-control", {"action": "cancel", "job_id": pending}, "operator", 409, "already_finished")
    paused = insert_job(c, f, "paused", "operator")
    assert ok(env, "job-control", {"action": "resume", "job_id": paused})["status"] == "pending"
    refused(
        env,
        "job-control",
        {"action": "resume", "job_id": str(uuid.uuid4())},
        "operator",
        404,
        "job_not_found",
    )

    lost = insert_job(c, f, "paused", "executor_lost")
    refused(env, "job-control", {"action": "resume", "job_id": lost}, "operator", 409, "needs_force_resume")
    refused(env, "job-control", {"action": "force_resume", "job_id": lost}, "admin", 400, "reason_required")
    refused(
        env,
        "job-control",
        {"action": "force_resume", "job_id": lost, "reason": "checked"},
        "approver",
        403,
        "forbidden",
    )
    epoch = q(c, "select lease_epoch from public.jobs where id = %s", lost)[0]["lease_epoch"]
    res = ok(
        env,
        "job-control",
        {"action": "force_resume", "job_id": lost, "reason": "executor host rebuilt"},
        "admin",
    )
    assert res["status"] == "pending"
    assert q(c, "select lease_epoch from public.jobs where id = %s", lost)[0]["lease_epoch"] == epoch + 1
    audit = q(
        c,
        "select actor_id::text, note from public.audit_log where table_name = 'jobs' and row_id = %s "
        "order by id desc limit 1",
        lost,
    )[0]
    assert audit == {"actor_id": env.users["admin"].user_id, "note": "force_resume: executor host rebuilt"}
    stuck = insert_job(c, f, "running", lease_s=-30)
    assert (
        ok(
            env,
            "job-control",
            {"action": "force_resume", "job_id": stuck, "reason": "lease expired"},
            "admin",
        )["status"]
        == "pending"
    )

    failed = insert_job(c, f, "failed")
    status, res = invoke(env.users["operator"], "job-control", {"action": "retry", "job_id": failed})
    assert status == 200 and res["retry_of"] == failed and res["job_id"] != failed
    new = q(c, "select status::text, scope, params from public.jobs where id = %s", res["job_id"])[0]
    assert new["status"] == "pending" and new["scope"]["retry_of"] == failed
    assert (
        q(c, "select count(*)::int as n from public.job_tasks where job_id = %s", res["job_id"])[0]["n"] == 1
    )
    refused(
        env,
        "job-control",
        {"action": "retry", "job_id": insert_job(c, f, "completed")},
        "operator",
        409,
        "not_failed",
    )


# --- resolve-blockers ----------------------------------------------------------------------------


def test_resolve_blockers(env: FnEnv):
    f, c = env.fleet, env.conn
    host = f.hosts[f.clusters[0]][0]
    vm = next(v for v, h in f.vms.items() if h == host)
    job = insert_job(c, f, "paused", "blockers")
    b1, b2 = insert_blocker(c, job, host, vm), insert_blocker(c, job, host, vm, "cdrom_connected")
    other = insert_blocker(c, insert_job(c, f, "paused", "blockers"), host, vm)
    refused(
        env,
        "resolve-blockers",
        {"job_id": job, "decisions": [{"blocker_id": other, "decision": "skip_host"}]},
        "operator",
        422,
        "blocker_not_found",
    )
    refused(
        env,
        "resolve-blockers",
        {"job_id": job, "decisions": [{"blocker_id": b1, "decision": "skip_host"}], "resume": True},
        "operator",
        409,
        "unresolved_blockers",
    )
    refused(
        env,
        "resolve-blockers",
        {"job_id": job, "decisions": [{"blocker_id": b1, "decision": "skip_host"}]},
        "viewer",
        403,
        "forbidden",
    )
    refused(
        env,
        "resolve-blockers",
        {"job_id": insert_job(c, f, "running"), "decisions": [{"blocker_id": b1, "decision": "skip_host"}]},
        "operator",
        409,
        "job_not_paused_for_blockers",
    )

    res = ok(
        env,
        "resolve-blockers",
        {
            "job_id": job,
            "decisions": [{"blocker_id": b1, "decision": "power_off_vm", "note": "test VM, fine to stop"}],
        },
    )
    assert res["resumed"] is False and res["open_blockers"] == [b2] and res["status"] == "paused"
    refused(
        env,
        "resolve-blockers",
        {"job_id": job, "decisions": [{"blocker_id": b1, "decision": "skip_host"}]},
        "operator",
        409,
        "blocker_resolved",
    )
    # the VM moved away since the scan: powering it off is a decision on stale facts
    q(c, "update public.vms set host_id = %s where id = %s", f.hosts[f.clusters[0]][1], vm)
    refused(
        env,
        "resolve-blockers",
        {"job_id": job, "decisions": [{"blocker_id": b2, "decision": "power_off_vm"}]},
        "operator",
        409,
        "stale_blocker",
    )
    res = ok(
        env,
        "resolve-blockers",
        {"job_id": job, "decisions": [{"blocker_id": b2, "decision": "migrate_manually_done"}]},
    )
    assert res["resumed"] is True and res["status"] == "pending"
    rows = q(
        c,
        "select action::text, resolved_by::text from public.blocker_resolutions where job_id = %s order by action",
        job,
    )
    assert rows == [
        {"action": "migrate_manually_done", "resolved_by": env.users["operator"].user_id},
        {"action": "power_off_vm", "resolved_by": env.users["operator"].user_id},
    ]

    doomed = insert_job(c, f, "paused", "blockers")
    b3, _ = (
        insert_blocker(c, doomed, host, None, "ha_admission_control"),
        insert_blocker(c, doomed, host, None),
    )
    res = ok(
        env, "resolve-blockers", {"job_id": doomed, "decisions": [{"blocker_id": b3, "decision": "abort"}]}
    )
    assert res["status"] == "cancelled"


# --- maintenance-windows -----------------------------------------------------------------------


def test_maintenance_windows_four_eyes_overlap_and_audit(env: FnEnv):
    f, c, u = env.fleet, env.conn, env.users
    starts, ends = window_slot(2)
    body = {
        "action": "create",
        "site_id": f.site_a,
        "cluster_id": f.clusters[0],
        "title": "BIOS 2.19",
        "reason": "security fix",
        "starts_at": starts,
        "ends_at": ends,
    }
    res = ok(env, "maintenance-windows", body)
    wid = res["window_id"]
    assert res["status"] == "requested" and res["requested_by"] == u["operator"].user_id
    refused(env, "maintenance-windows", body, "operator", 409, "window_overlap")
    refused(
        env,
        "maintenance-windows",
        {**body, "cluster_id": None, "title": "site-wide"},
        "operator",
        409,
        "window_overlap",
    )
    refused(
        env,
        "maintenance-windows",
        {
            **body,
            "starts_at": (NOW - dt.timedelta(hours=3)).isoformat(),
            "ends_at": (NOW - dt.timedelta(hours=1)).isoformat(),
        },
        "operator",
        400,
        "window_in_past",
    )
    refused(env, "maintenance-windows", {**body, "ends_at": starts}, "operator", 400, "window_inverted")
    refused(
        env,
        "maintenance-windows",
        {**body, "site_id": f.site_b, "cluster_id": f.clusters[0]},
        "operator",
        422,
        "cluster_wrong_site",
    )
    refused(env, "maintenance-windows", {"action": "approve", "window_id": wid}, "operator", 403, "forbidden")

    # four eyes: an approver cannot approve their own request
    s2, e2 = window_slot()
    own = ok(env, "maintenance-windows", {**body, "starts_at": s2, "ends_at": e2}, "approver")["window_id"]
    refused(env, "maintenance-windows", {"action": "approve", "window_id": own}, "approver", 403, "four_eyes")
    assert (
        ok(env, "maintenance-windows", {"action": "approve", "window_id": own}, "approver2")["status"]
        == "approved"
    )

    res = ok(env, "maintenance-windows", {"action": "approve", "window_id": wid, "note": "ok"}, "approver")
    assert res["status"] == "approved" and res["approved_by"] == u["approver"].user_id
    audit = q(
        c,
        "select actor_id::text, new_data from public.audit_log where table_name = 'maintenance_windows' "
        "and row_id = %s and action = 'maintenance_windows.update' order by id desc limit 1",
        wid,
    )[0]
    assert audit["actor_id"] == u["approver"].user_id and audit["new_data"]["status"] == "approved"
    refused(
        env,
        "maintenance-windows",
        {"action": "approve", "window_id": wid},
        "approver2",
        409,
        "window_not_requested",
    )
    # another operator may not cancel it; the requester may
    third = insert_window(c, f.site_a, u["approver"].user_id)
    refused(
        env, "maintenance-windows", {"action": "cancel", "window_id": third}, "operator", 403, "forbidden"
    )
    assert ok(env, "maintenance-windows", {"action": "cancel", "window_id": wid})["status"] == "cancelled"
    refused(
        env,
        "maintenance-windows",
        {"action": "cancel", "window_id": wid},
        "operator",
        409,
        "window_not_active",
    )
    assert (
        ok(env, "maintenance-windows", {"action": "reject", "window_id": third, "note": "no"}, "admin")[
            "status"
        ]
        == "rejected"
    )

    past = insert_window(
        c,
        f.site_a,
        u["operator"].user_id,
        starts=(NOW - dt.timedelta(hours=3)).isoformat(),
        ends=(NOW - dt.timedelta(hours=2)).isoformat(),
    )
    refused(
        env, "maintenance-windows", {"action": "approve", "window_id": past}, "approver", 409, "window_over"
    )
    refused(
        env,
        "maintenance-windows",
        {"action": "approve", "window_id": str(uuid.uuid4())},
        "approver",
        404,
        "window_not_found",
    )


# --- notification-settings ---------------------------------------------------------------------


def test_notification_settings(env: FnEnv):
    teams = {
        "name": f"teams-{env.tag}",
        "channel": "teams",
        "site_id": env.fleet.site_a,
        "target": "https://contoso.webhook.office.com/webhookb2/abc/IncomingWebhook/def",
        "events": ["job_failed", "job_paused", "window_requested"],
    }
    mail = {
        "name": f"mail-{env.tag}",
        "channel": "email",
        "target": "oncall@example.com",
        "events": ["job_completed"],
        "job_types": ["firmware_update", "rolling_cluster_update"],
    }
    saved = ok(env, "notification-settings", {"action": "upsert", "settings": [teams, mail]}, "admin")[
        "settings"
    ]
    assert [s["name"] for s in saved] == [teams["name"], mail["name"]]
    listed = ok(env, "notification-settings", {"action": "list", "site_id": env.fleet.site_a}, "admin")[
        "settings"
    ]
    assert {s["name"] for s in listed} >= {teams["name"], mail["name"]}
    updated = ok(
        env,
        "notification-settings",
        {"action": "upsert", "settings": [{**mail, "id": saved[1]["id"], "enabled": False}]},
        "admin",
    )["settings"][0]
    assert updated["enabled"] is False and updated["id"] == saved[1]["id"]
    d = refused(
        env,
        "notification-settings",
        {
            "action": "upsert",
            "settings": [{**teams, "target": "http://insecure.example/hook", "events": ["job_exploded"]}],
        },
        "admin",
        400,
        "invalid_setting",
    )
    assert {i["path"] for i in d["details"]["issues"]} == {"/settings/0/target", "/settings/0/events/0"}
    refused(
        env,
        "notification-settings",
        {"action": "upsert", "settings": [{**mail, "target": "not-an-address"}]},
        "admin",
        400,
        "invalid_setting",
    )
    refused(
        env,
        "notification-settings",
        {"action": "delete", "ids": [saved[0]["id"], str(uuid.uuid4())]},
        "admin",
        404,
        "setting_not_found",
    )
    assert (
        ok(env, "notification-settings", {"action": "delete", "ids": [saved[0]["id"]]}, "admin")["deleted"]
        == 1
    )


def test_concurrent_requests_cannot_both_pass_a_limit(env: FnEnv):
    """The checks and the insert share a transaction and an advisory lock per cluster (jobs)
    or site (windows): of simultaneous conflicting requests exactly one succeeds."""
    f = env.fleet
    cluster = f.clusters[1]
    window = approved_window(env, cluster=cluster)
    # the cluster must be free of rolling updates for this test
    q(
        env.conn,
        "update public.jobs set status = 'cancelled', cancel_requested_at = now() "
        "where cluster_id = %s and status = 'pending'",
        cluster,
    )
    rolling = {
        "type": "rolling_cluster_update",
        "maintenance_window_id": window,
        "params": {"cluster_id": cluster, "firmware": CATALOG},
    }
    starts, ends = window_slot()
    win = {"action": "create", "site_id": f.site_a, "title": "race", "starts_at": starts, "ends_at": ends}
    token = env.users["operator"].token
    clients = [Raw(env.stack) for _ in range(4)]  # one connection each, so the calls overlap
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            jobs = list(pool.map(lambda r: r.call("create-job", rolling, token), clients))
            wins = list(pool.map(lambda r: r.call("maintenance-windows", win, token), clients))
    finally:
        for r in clients:
            r.close()
    assert sorted(s for s, _ in jobs) == [201, 409, 409, 409], jobs
    assert {d.get("code") for s, d in jobs if s == 409} == {"rolling_update_in_progress"}
    assert sorted(s for s, _ in wins) == [201, 409, 409, 409], wins
    assert {d.get("code") for s, d in wins if s == 409} == {"window_overlap"}
