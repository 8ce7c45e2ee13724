"""The executor's control-plane client and its runtime RPCs, against the real stack
(real Postgres behind the real REST layer, through supabase-py with the service key)."""

from __future__ import annotations

import asyncio
import uuid

import psycopg2
import psycopg2.extras
import pytest

from executor.config import ExecutorSettings
from executor.control import ControlPlane, Rejected, StaleEpoch
from executor.runner import Executor, LeasedJob
from executor.secrets import load_or_create


def q(db_url: str, sql: str, *args):
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, args)
            return [dict(r) for r in cur.fetchall()] if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def site(db_url):
    name = f"ctl-{uuid.uuid4().hex[:10]}"
    site_id = q(db_url, "insert into public.sites (name) values (%s) returning id", name)[0]["id"]
    return name, str(site_id)


def make_executor(
    supabase_env, site_name: str, name: str, tmp_path, enable_selftest: bool = True
) -> Executor:
    # these tests drive selftest jobs: the executor takes them only with the test-only flag
    s = ExecutorSettings(
        supabase_url=supabase_env["SUPABASE_URL"],
        supabase_key=supabase_env["SUPABASE_SERVICE_ROLE_KEY"],
        site=site_name,
        executor_name=name,
        state_dir=tmp_path / name,
        control_retry_max=0.5,
        enable_selftest=enable_selftest,
    )
    keys, _ = load_or_create(s.key_path)
    return Executor(s, keys, control=ControlPlane(s))


async def test_register_is_idempotent_and_writes_are_fenced_after_release(
    supabase_env, db_url, site, tmp_path
):
    ex = make_executor(supabase_env, site[0], "ctl-a", tmp_path)
    await ex.register()
    first = ex.executor_id
    await ex.register()
    assert ex.executor_id == first and ex.site_id == site[1]
    row = q(db_url, "select public_key, key_id, job_types from public.executors where id = %s", first)[0]
    assert (
        row["key_id"] == ex.keys.kid
        and row["public_key"] == ex.keys.public_b64
        and "selftest" in row["job_types"]
    )

    job_id = q(
        db_url,
        "insert into public.jobs (type, site_id, params) values ('selftest', %s, '{}') returning id",
        site[1],
    )[0]["id"]
    claimed = await ex.control.call("claim_jobs", {"p_executor_id": ex.executor_id, "p_max": 5})
    assert [str(c["job_id"]) for c in claimed] == [str(job_id)]
    session = LeasedJob(ex, claimed[0])
    await session.report_step(
        index=0, name="preflight", status="running", resumable=True, details={"attempt": 1}
    )
    await session.release()
    assert q(db_url, "select status from public.jobs where id = %s", job_id)[0]["status"] == "pending"
    # the released lease is dead: the next write is refused and the session is fenced
    late = LeasedJob(ex, dict(claimed[0]))
    with pytest.raises(StaleEpoch):
        await late.report_step(index=0, name="preflight", status="completed", resumable=True, details={})
    assert late.fenced
    # a bad argument is a permanent refusal with the database's own words, not a retry loop
    with pytest.raises(Rejected, match="invalid_argument"):
        await ex.control.call("report_executor_metrics", {"p_executor_id": ex.executor_id, "p_metrics": [1]})
    await ex.control.close()


async def test_an_executor_without_the_selftest_flag_neither_advertises_nor_claims_selftest(
    supabase_env, db_url, site, tmp_path
):
    ex = make_executor(supabase_env, site[0], "ctl-noself", tmp_path, enable_selftest=False)
    assert "selftest" not in ex.job_types
    await ex.register()
    row = q(db_url, "select job_types from public.executors where id = %s", ex.executor_id)[0]
    assert "selftest" not in row["job_types"] and "firmware_update" in row["job_types"]
    job_id = q(
        db_url,
        "insert into public.jobs (type, site_id, params) values ('selftest', %s, %s) returning id",
        site[1],
        '{"counter_file": "/etc/rackpilot-selftest-probe"}',
    )[0]["id"]
    assert await ex.control.call("claim_jobs", {"p_executor_id": ex.executor_id, "p_max": 5}) == []
    assert q(db_url, "select status from public.jobs where id = %s", job_id)[0]["status"] == "pending"
    # and were one handed to it anyway, it fails the job without running a step
    q(db_url, "update public.executors set job_types = null where id = %s", ex.executor_id)
    claimed = await ex.control.call("claim_jobs", {"p_executor_id": ex.executor_id, "p_max": 5})
    assert [str(c["job_id"]) for c in claimed] == [str(job_id)]
    await ex._run_job(LeasedJob(ex, claimed[0]))
    job = q(db_url, "select status, error from public.jobs where id = %s", job_id)[0]
    assert job["status"] == "failed" and "does not take job type 'selftest'" in job["error"]
    assert (
        q(db_url, "select count(*) as n from public.workflow_executions where job_id = %s", job_id)[0]["n"]
        == 0
    )
    await ex.control.close()


async def test_outbox_claims_are_exclusive_leased_and_token_checked(supabase_env, db_url, site, tmp_path):
    a = make_executor(supabase_env, site[0], "ctl-out-a", tmp_path)
    b = make_executor(supabase_env, site[0], "ctl-out-b", tmp_path)
    await a.register()
    await b.register()
    job_id = q(
        db_url,
        "insert into public.jobs (type, site_id, params) values ('selftest', %s, '{}') returning id",
        site[1],
    )[0]["id"]
    setting = q(
        db_url,
        "insert into public.notification_settings (site_id, name, channel, target, events) values "
        "(%s, 't', 'teams', 'https://example.invalid/hook', '{job_started}') returning id",
        site[1],
    )[0]["id"]
    mine = {
        q(
            db_url,
            "insert into public.notification_outbox (setting_id, event_kind, payload, job_id) "
            "values (%s, 'job_started', '{}', %s) returning id",
            setting,
            job_id,
        )[0]["id"]
        for _ in range(40)
    }

    async def claim(ex: Executor, lease: int = 60):
        return (
            await ex.control.call(
                "executor_claim_notifications",
                {"p_executor_id": ex.executor_id, "p_max": 15, "p_lease_seconds": lease},
            )
            or []
        )

    got = await asyncio.gather(claim(a), claim(b), claim(a), claim(b))
    # messages about no job go out from any site: other tests' leftovers may come along
    got = [[r for r in rows if r["id"] in mine] for rows in got]
    ids = [r["id"] for rows in got for r in rows]
    assert len(ids) == len(set(ids)) == 40 and set(ids) == mine  # every row handed out once
    assert all(
        r["channel"] == "teams" and r["destination"] == "https://example.invalid/hook"
        for rows in got
        for r in rows
    )

    # The four claims race: which of them got 15, 10 or 0 rows depends on arrival order.
    claimed = [r for rows in got for r in rows]
    row = claimed[0]
    done = await a.control.call(
        "executor_complete_notification", {"p_id": row["id"], "p_claim_token": "stale", "p_error": None}
    )
    assert done is None  # a stale claim token changes nothing
    done = await a.control.call(
        "executor_complete_notification",
        {"p_id": row["id"], "p_claim_token": row["claim_token"], "p_error": None},
    )
    assert done == "sent"
    # a sender that dies mid-send: once its lease runs out another executor takes the row again
    other = claimed[1]
    q(
        db_url,
        "update public.notification_outbox set lease_expires_at = now() - interval '1 second' where id = %s",
        other["id"],
    )
    again = [r for r in await claim(a) if r["id"] in mine]
    assert [r["id"] for r in again] == [other["id"]] and again[0]["attempts"] == 2
    dead = await a.control.call(
        "executor_complete_notification",
        {
            "p_id": other["id"],
            "p_claim_token": again[0]["claim_token"],
            "p_error": "HTTP 500",
            "p_retry_in_seconds": 0,
            "p_max_attempts": 2,
        },
    )
    assert dead == "dead"
    # another site's executor never sees this site's job messages
    other_site = f"ctl-{uuid.uuid4().hex[:10]}"
    q(db_url, "insert into public.sites (name) values (%s)", other_site)
    c = make_executor(supabase_env, other_site, "ctl-out-c", tmp_path)
    await c.register()
    q(
        db_url,
        "update public.notification_outbox set lease_expires_at = now() - interval '1 second' "
        "where job_id = %s and status = 'pending'",
        job_id,
    )
    assert [r for r in await claim(c) if r["id"] in mine] == []
    for ex in (a, b, c):
        await ex.control.close()


async def test_lease_recovery_runs_on_one_executor_at_a_time(supabase_env, db_url, site, tmp_path):
    ex = make_executor(supabase_env, site[0], "ctl-rec", tmp_path)
    await ex.register()
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:  # another executor is in the middle of a recovery pass
            # psycopg2 opens a transaction here; the lock lives until the rollback below
            cur.execute(
                "select pg_advisory_xact_lock(hashtextextended('rackpilot.recover_expired_leases', 0))"
            )
            job_id = q(
                db_url,
                "insert into public.jobs (type, site_id, params) values ('selftest', %s, '{}') returning id",
                site[1],
            )[0]["id"]
            await ex.control.call("claim_jobs", {"p_executor_id": ex.executor_id, "p_max": 1})
            q(
                db_url,
                "update public.jobs set lease_expires_at = now() - interval '1 second' where id = %s",
                job_id,
            )
            assert await ex.control.call("executor_recover_leases", {"p_executor_id": ex.executor_id}) == []
            conn.rollback()
    finally:
        conn.close()
    res = await ex.control.call("executor_recover_leases", {"p_executor_id": ex.executor_id})
    assert any(str(r["job_id"]) == str(job_id) and r["outcome"] == "requeued" for r in res), res
    await ex.control.close()
