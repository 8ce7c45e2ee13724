"""Jobs come only through create-job, and SQL hands out no risky job outside an approved,
current maintenance window however the row got there (DESIGN §4, §5.5; issue 12).

Through the real stack: REST as signed-in users (supabase-py), the service role, the
functions, and the claim RPC the executor calls.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg2
import pytest
from postgrest.exceptions import APIError

from supabase import create_client
from tests.integration._functions_support import FnEnv, close_env, insert_window, make_env, q


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def refused_by_rest(fn) -> APIError:
    with pytest.raises(APIError) as err:
        fn()
    assert err.value.code == "42501", err.value
    return err.value


def test_users_cannot_insert_jobs_through_rest(env: FnEnv):
    """The hole: an operator's POST /rest/v1/jobs with any type and params skipped every
    check of create-job. Now no role may insert; nothing is written."""
    f = env.fleet
    rows = [
        {"type": "firmware_update", "site_id": f.site_a, "params": {"anything": "goes"}},
        {"type": "selftest", "site_id": f.site_a, "params": {"counter_file": "/etc/passwd"}},
    ]
    before = q(env.conn, "select count(*)::int as n from public.jobs where site_id = %s", f.site_a)[0]["n"]
    for role in ("viewer", "operator", "approver", "admin"):
        client = env.users[role].client
        for row in rows:
            refused_by_rest(lambda row=row, client=client: client.table("jobs").insert(row).execute())
        # nor through the function that writes for create-job
        refused_by_rest(
            lambda client=client: client.rpc(
                "functions_create_job",
                {
                    "p_type": "scp_backup",
                    "p_site_id": f.site_a,
                    "p_cluster_id": None,
                    "p_params": {},
                    "p_scope": {"targets": [{"kind": "server", "id": f.standalone_server}]},
                    "p_priority": 50,
                    "p_description": "",
                    "p_scheduled_for": None,
                    "p_maintenance_window_id": None,
                    "p_credential_set_ids": [],
                },
            ).execute()
        )
    assert (
        q(env.conn, "select count(*)::int as n from public.jobs where site_id = %s", f.site_a)[0]["n"]
        == before
    )
    # create-job itself still creates jobs, with their tasks, stamped with the operator
    status, data = env.raw.call(
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [f.standalone_server]}},
        env.users["operator"].token,
    )
    assert status == 201, data
    row = q(
        env.conn,
        "select j.created_by::text, count(t.id)::int as tasks from public.jobs j "
        "join public.job_tasks t on t.job_id = j.id where j.id = %s group by 1",
        data["job_id"],
    )[0]
    assert row == {"created_by": env.users["operator"].user_id, "tasks": 1}


def test_users_cannot_change_a_job_outside_the_state_machine(env: FnEnv):
    """UPDATE stays for cancel/pause/resume/reschedule; type, params, scope, site, cluster,
    credentials and executor-side state are not the users' to write."""
    f = env.fleet
    status, data = env.raw.call(
        "create-job",
        {"type": "scp_backup", "params": {"server_ids": [f.standalone_server]}},
        env.users["operator"].token,
    )
    assert status == 201, data
    job = data["job_id"]
    client = env.users["admin"].client
    for change in (
        {"type": "firmware_update"},
        {"params": {"server_ids": []}},
        {"scope": {}},
        {"site_id": f.site_b},
        {"credential_set_ids": []},
        {"status": "running"},
        {"lease_epoch": 7},
    ):
        with pytest.raises(APIError) as err:
            client.table("jobs").update(change).eq("id", job).execute()
        assert err.value.code in ("42501", "P0001"), (change, err.value)
    # a window of another site cannot be attached
    other = insert_window(env.conn, f.site_b, env.users["operator"].user_id)
    with pytest.raises(APIError, match="does not cover"):
        client.table("jobs").update({"maintenance_window_id": other}).eq("id", job).execute()
    # the legal change still works
    client.table("jobs").update({"priority": 60}).eq("id", job).execute()
    assert q(env.conn, "select priority from public.jobs where id = %s", job)[0]["priority"] == 60


def test_viewer_cannot_probe_credential_ids(env: FnEnv):
    """credentials_in_site answered true/false to any signed-in user: whether a credential id
    exists in a site. No API role may call it now."""
    cred = q(
        env.conn,
        "insert into public.credential_sets (site_id, name, kind, username) "
        "values (%s, %s, 'idrac', 'root') returning id",
        env.fleet.site_a,
        f"probe-{env.tag}",
    )[0]["id"]
    for role in ("viewer", "operator", "admin"):
        for ids in ([str(cred)], [str(uuid.uuid4())]):
            err = refused_by_rest(
                lambda ids=ids, role=role: (
                    env.users[role]
                    .client.rpc("credentials_in_site", {"p_ids": ids, "p_site": env.fleet.site_a})
                    .execute()
                )
            )
            assert "true" not in str(err.message).lower() and "false" not in str(err.message).lower()


@pytest.mark.parametrize(
    "raw,key",
    [
        (b'{"type": "scp_backup", "params": {"server_ids": []}, "__proto__": {"admin": true}}', "__proto__"),
        (b'{"type": "scp_backup", "params": {"__proto__": {"admin": true}, "server_ids": []}}', "__proto__"),
        (
            b'{"type": "scp_backup", "params": {"server_ids": [], "constructor": {"prototype": 1}}}',
            "constructor",
        ),
    ],
)
def test_create_job_answers_prototype_keys_with_400_naming_the_key(env: FnEnv, raw: bytes, key: str):
    status, data = env.raw.call("create-job", None, env.users["operator"].token, raw=raw)
    assert (status, data.get("code")) == (400, "forbidden_key"), data
    assert json.dumps(key) in data["error"] and data["details"]["key"] == key


# --- the claim --------------------------------------------------------------------------------
@pytest.fixture
def site(env: FnEnv):
    """A site of its own (so the claims see only this test's jobs): a vCenter, two
    clusters, an active executor."""
    c = env.conn
    tag = uuid.uuid4().hex[:8]
    site = q(c, "insert into public.sites (name) values (%s) returning id", f"claim-{tag}")[0]["id"]
    vc = q(
        c,
        "insert into public.vcenters (site_id, name, address) values (%s, %s, %s) returning id",
        site,
        f"vc-{tag}",
        f"vc-{tag}.test",
    )[0]["id"]
    clusters = [
        q(
            c,
            "insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, %s, %s) "
            "returning id",
            vc,
            site,
            f"cl{i}-{tag}",
            f"domain-{i}",
        )[0]["id"]
        for i in range(2)
    ]
    ex = q(
        c,
        "insert into public.executors (site_id, name, public_key, key_id) values (%s, %s, %s, 'k') returning id",
        site,
        f"ex-{tag}",
        "P" * 40,
    )[0]["id"]
    return {"id": str(site), "clusters": [str(x) for x in clusters], "executor": str(ex)}


def window(
    env: FnEnv,
    site: str,
    status: str,
    cluster: str | None = None,
    *,
    starts: dt.timedelta,
    ends: dt.timedelta,
) -> str:
    return insert_window(
        env.conn,
        site,
        env.users["operator"].user_id,
        status,
        cluster,
        (dt.datetime.now(dt.UTC) + starts).isoformat(),
        (dt.datetime.now(dt.UTC) + ends).isoformat(),
        env.users["approver"].user_id if status == "approved" else None,
    )


def test_a_risky_job_written_by_the_service_role_is_not_claimed_outside_an_approved_current_window(env, site):
    """However the row got there (here: the service role through REST, which bypasses RLS),
    claim_jobs hands out a risky job only inside an approved, current window of its site and
    cluster. The others stay pending, and everyone can see why in v_job_waits."""
    s, (c0, c1) = site["id"], site["clusters"]
    hour = dt.timedelta(hours=1)
    windows = {
        "window_not_approved": window(env, s, "requested", c0, starts=-hour, ends=hour),
        "window_wrong_scope": window(env, s, "approved", c1, starts=-hour, ends=hour),
        "window_not_started": window(env, s, "approved", c0, starts=hour, ends=2 * hour),
        "ok": window(env, s, "approved", c0, starts=-hour, ends=hour),
    }
    service = create_client(env.stack.env()["SUPABASE_URL"], env.stack.env()["SUPABASE_SERVICE_ROLE_KEY"])

    def insert(description: str, window_id: str | None, job_type: str = "firmware_update") -> str:
        row = {
            "type": job_type,
            "site_id": s,
            "cluster_id": c0,
            "params": {},
            "description": description,
            "maintenance_window_id": window_id,
        }
        return service.table("jobs").insert(row).execute().data[0]["id"]

    windows["window_over"] = window(env, s, "approved", c0, starts=-2 * hour, ends=-hour)
    jobs = {"window_required": insert("none", None), **{k: insert(k, w) for k, w in windows.items()}}

    claimed = q(
        env.conn,
        "select job_id::text, window_ends_at is not null as w from public.claim_jobs(%s, 10)",
        site["executor"],
    )
    assert claimed == [{"job_id": jobs["ok"], "w": True}]
    states = {
        r["id"]: r["status"]
        for r in q(env.conn, "select id::text, status::text from public.jobs where site_id = %s", s)
    }
    assert {k: states[v] for k, v in jobs.items()} == {
        "window_required": "pending",
        "window_not_approved": "pending",
        "window_wrong_scope": "pending",
        "window_not_started": "pending",
        "window_over": "pending",
        "ok": "running",
    }

    # an operator (any signed-in user) sees why each one waits
    rows = (
        env.users["viewer"]
        .client.table("v_job_waits")
        .select("job_id,waiting_for,reason")
        .eq("site_id", s)
        .execute()
        .data
    )
    waits = {r["job_id"]: (r["waiting_for"], r["reason"]) for r in rows}
    for expected, job in jobs.items():
        if expected == "ok":
            assert job not in waits  # running, not pending
            continue
        assert waits[job][0] == expected, (expected, waits[job])
        assert waits[job][1]
    assert (
        "risk" in waits[jobs["window_required"]][1] and "requested" in waits[jobs["window_not_approved"]][1]
    )
    # a low-risk job needs no window: nothing on its side holds it
    low = (
        service.table("jobs")
        .insert({"type": "scp_backup", "site_id": s, "params": {}})
        .execute()
        .data[0]["id"]
    )
    assert env.users["viewer"].client.table("v_job_waits").select("waiting_for").eq(
        "job_id", low
    ).execute().data == [{"waiting_for": None}]


def test_the_claim_rechecks_the_window_even_if_the_candidate_query_lets_a_risky_job_through(env, site):
    """Defence in depth: with claim_candidates replaced (in a rolled-back transaction) by one
    that ignores windows, claim_jobs still refuses the risky job and hands out the low one."""
    s, (c0, _) = site["id"], site["clusters"]
    conn = psycopg2.connect(env.stack.pg.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "insert into public.jobs (type, site_id, cluster_id, description) values "
                "('rolling_cluster_update', %s, %s, 'risky'), ('vcenter_sync', %s, null, 'low') "
                "returning id, description",
                (s, c0, s),
            )
            ids = {d: str(i) for i, d in cur.fetchall()}
            cur.execute("""
                create or replace function public.claim_candidates(p_site_id uuid, p_job_types public.job_type[],
                    p_window_types public.job_type[], p_capped_types public.job_type[], p_max integer)
                returns table (id uuid, cluster_id uuid, type public.job_type)
                language sql set search_path = '' as $$
                  select j.id, j.cluster_id, j.type from public.jobs j
                   where j.status = 'pending' and j.site_id = p_site_id
                   order by j.priority desc, j.id limit p_max for update of j skip locked
                $$""")
            cur.execute("select job_id::text from public.claim_jobs(%s, 10)", (site["executor"],))
            assert [r[0] for r in cur.fetchall()] == [ids["low"]]
            cur.execute("select status::text from public.jobs where id = %s", (ids["risky"],))
            assert cur.fetchone()[0] == "pending"
    finally:
        conn.rollback()
        conn.close()
