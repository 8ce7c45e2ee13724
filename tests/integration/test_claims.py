"""Claiming, leases and fencing against the real database, with real concurrency.

Each test works under a site of its own and removes it afterwards. Lease expiry is
simulated by moving lease_expires_at into the past (as the database owner) instead of
waiting out real leases, which keeps the suite fast; recovery itself is the real function.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import uuid
from collections import Counter, defaultdict

import psycopg2
import pytest

from .pgutil import connect, create_user, private_site, register_executor

JOBS = 10_000
CLAIMERS = 8
BATCH = 50


@pytest.fixture
def conn(db_url):
    c = connect(db_url)
    yield c
    c.close()


def expire_leases(cur, site_id) -> None:
    cur.execute(
        "update public.jobs set lease_expires_at = now() - interval '1 second' "
        "where site_id = %s and status = 'running'",
        (site_id,),
    )


def recover(cur, site_id) -> dict[str, str]:
    cur.execute(
        "select r.job_id, r.outcome from public.recover_expired_leases() r "
        "join public.jobs j on j.id = r.job_id where j.site_id = %s",
        (site_id,),
    )
    return {str(j): o for j, o in cur.fetchall()}


def test_eight_claimers_take_ten_thousand_jobs_exactly_once(db_url, conn):
    with private_site(db_url, "claims") as site:
        with conn.cursor() as cur:
            executors = [register_executor(cur, site, f"ex-{i}") for i in range(CLAIMERS)]
            cur.execute(
                "insert into public.jobs (type, site_id, priority) "
                "select 'selftest', %s, (g %% 5)::smallint from generate_series(1, %s) g",
                (site, JOBS),
            )

        claimed: list[list[str]] = [[] for _ in range(CLAIMERS)]
        errors: list[BaseException] = []
        start = threading.Barrier(CLAIMERS)

        def claimer(i: int) -> None:
            c = connect(db_url)
            try:
                with c.cursor() as cur:
                    start.wait()
                    while True:
                        cur.execute("select job_id from public.claim_jobs(%s, %s)", (executors[i], BATCH))
                        rows = cur.fetchall()
                        claimed[i].extend(r[0] for r in rows)
                        if not rows:
                            # empty can mean "all remaining rows are locked by others": stop only
                            # when nothing is pending any more
                            cur.execute(
                                "select exists (select 1 from public.jobs where site_id = %s "
                                "and status = 'pending')",
                                (site,),
                            )
                            if not cur.fetchone()[0]:
                                return
            except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread
                errors.append(exc)
            finally:
                c.close()

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(CLAIMERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        everything = [j for per in claimed for j in per]
        assert len(everything) == JOBS
        assert len(set(everything)) == JOBS, "a job was handed out twice"
        assert sum(1 for per in claimed if per) >= 2, "the claimers did not actually overlap"
        with conn.cursor() as cur:
            cur.execute(
                "select status, lease_epoch, attempts, count(*) from public.jobs where site_id = %s "
                "group by 1, 2, 3",
                (site,),
            )
            assert cur.fetchall() == [("running", 1, 1, JOBS)]
            # each job is held by the executor that received it
            cur.execute("select claimed_by, count(*) from public.jobs where site_id = %s group by 1", (site,))
            held = {str(k): v for k, v in cur.fetchall()}
        assert held == {str(executors[i]): len(claimed[i]) for i in range(CLAIMERS) if claimed[i]}


def test_claim_order_schedule_and_job_types(db_url, conn):
    with private_site(db_url, "order") as site, conn.cursor() as cur:
        ex = register_executor(cur, site, "ex")
        only_sync = register_executor(cur, site, "sync-only", job_types=["vcenter_sync"])
        cur.execute(
            """insert into public.jobs (type, site_id, priority, scheduled_for, description) values
                       ('selftest', %(s)s, 10, now() - interval '1 minute', 'low'),
                       ('selftest', %(s)s, 90, now() - interval '1 minute', 'high'),
                       ('selftest', %(s)s, 90, now() + interval '1 hour', 'future'),
                       ('vcenter_sync', %(s)s, 50, now() - interval '2 minute', 'sync')""",
            {"s": site},
        )
        cur.execute(
            "select j.description from public.claim_jobs(%s, 10) c join public.jobs j on j.id = c.job_id",
            (only_sync,),
        )
        assert [r[0] for r in cur.fetchall()] == ["sync"]
        cur.execute(
            "select j.description from public.claim_jobs(%s, 10) c join public.jobs j on j.id = c.job_id",
            (ex,),
        )
        assert [r[0] for r in cur.fetchall()] == ["high", "low"]  # the future job waits
        with pytest.raises(psycopg2.Error) as bad:
            cur.execute("select * from public.claim_jobs(%s, 0)", (ex,))
        assert bad.value.pgcode == "22023" and "invalid_argument" in bad.value.pgerror
        with pytest.raises(psycopg2.Error) as unknown:
            cur.execute("select * from public.claim_jobs(%s, 1)", (str(uuid.uuid4()),))
        assert "unknown_executor:" in unknown.value.pgerror


def test_stale_epoch_write_is_refused(db_url, conn):
    with private_site(db_url, "fence") as site, conn.cursor() as cur:
        a = register_executor(cur, site, "a")
        b = register_executor(cur, site, "b")
        cur.execute("insert into public.jobs (type, site_id) values ('selftest', %s) returning id", (site,))
        job = cur.fetchone()[0]
        cur.execute("select lease_epoch from public.claim_jobs(%s, 1)", (a,))
        epoch_a = cur.fetchone()[0]
        cur.execute(
            "select status from public.report_step(%s, %s, %s, 'probe', 0, 'Probe', 'running', true)",
            (a, job, epoch_a),
        )
        assert cur.fetchone()[0] == "running"

        # a's lease runs out; the job goes back to pending and b takes it under a new epoch
        expire_leases(cur, site)
        assert recover(cur, site) == {job: "requeued"}
        cur.execute("select job_id, lease_epoch from public.claim_jobs(%s, 1)", (b,))
        got, epoch_b = cur.fetchone()
        assert got == job and epoch_b > epoch_a

        for call, args in [
            ("select public.report_step(%s, %s, %s, 'probe', 0, 'Probe', 'completed')", (a, job, epoch_a)),
            ("select public.finish_job(%s, %s, %s, 'completed')", (a, job, epoch_a)),
            (
                "select public.update_task(%s, %s, %s, 'server', gen_random_uuid(), 'running')",
                (a, job, epoch_a),
            ),
            ("select public.pause_job(%s, %s, %s, 'operator')", (a, job, epoch_a)),
            (
                "select public.finish_job(%s, %s, %s, 'completed')",
                (b, job, epoch_a),
            ),  # right executor, old epoch
            (
                "select public.finish_job(%s, %s, %s, 'completed')",
                (a, job, epoch_b),
            ),  # right epoch, wrong executor
        ]:
            with pytest.raises(psycopg2.Error) as err:
                cur.execute(call, args)
            assert err.value.pgcode == "P0001"
            assert err.value.pgerror.split("ERROR:")[1].strip().startswith("stale_epoch:"), err.value.pgerror
            assert err.value.diag.message_hint == "rackpilot.fenced"

        cur.execute(
            "select public.heartbeat(%s, %s::jsonb)", (a, f'[{{"job_id": "{job}", "epoch": {epoch_a}}}]')
        )
        beat = cur.fetchone()[0]
        assert beat["fenced"] == [job] and beat["renewed"] == []

        # nothing a wrote after losing the lease landed; b's writes do
        cur.execute("select status from public.workflow_executions where job_id = %s", (job,))
        assert cur.fetchone()[0] == "running"
        cur.execute(
            "select status, error from public.finish_job(%s, %s, %s, 'completed', '{\"ok\": true}')",
            (b, job, epoch_b),
        )
        assert cur.fetchone() == ("completed", None)
        with pytest.raises(psycopg2.Error) as done:
            cur.execute("select public.finish_job(%s, %s, %s, 'failed', null, 'late')", (b, job, epoch_b))
        assert "stale_epoch:" in done.value.pgerror  # a finished job is nobody's lease any more


def test_lease_expiry_routes_resumable_and_non_resumable_steps(db_url, conn):
    with private_site(db_url, "lease") as site, conn.cursor() as cur:
        ex = register_executor(cur, site, "ex")
        cur.execute(
            "insert into public.jobs (type, site_id, description) select 'selftest', %s, d "
            "from unnest(array['resumable', 'flash', 'between', 'fresh']) d returning id, description",
            (site,),
        )
        ids = {d: str(i) for i, d in cur.fetchall()}
        cur.execute("select job_id, lease_epoch from public.claim_jobs(%s, 10)", (ex,))
        epoch = {str(j): e for j, e in cur.fetchall()}
        assert set(epoch) == set(ids.values())

        def step(job, key, status, resumable, checkpoint=None):
            cur.execute(
                "select public.report_step(%s, %s, %s, %s, 0, %s, %s, %s, %s::jsonb)",
                (ex, job, epoch[job], key, key, status, resumable, checkpoint),
            )

        step(ids["resumable"], "wait-for-reboot", "running", True, '{"polls": 7}')
        step(ids["flash"], "apply-firmware", "running", False)
        step(ids["between"], "apply-firmware", "completed", False)  # done; the next step has not begun
        expire_leases(cur, site)
        outcome = recover(cur, site)
        assert outcome == {
            ids["resumable"]: "requeued",
            ids["flash"]: "paused_executor_lost",
            ids["between"]: "requeued",
            ids["fresh"]: "requeued",
        }
        cur.execute("select description, status, pause_reason from public.jobs where site_id = %s", (site,))
        state = {d: (s, r) for d, s, r in cur.fetchall()}
        assert state["flash"] == ("paused", "executor_lost")
        assert state["resumable"] == ("pending", None)

        # the requeued job comes back with its checkpoint
        cur.execute("select job_id, lease_epoch, attempts, resume_from from public.claim_jobs(%s, 10)", (ex,))
        again = {str(j): (e, a, r) for j, e, a, r in cur.fetchall()}
        assert set(again) == {ids["resumable"], ids["between"], ids["fresh"]}
        e2, attempts, resume = again[ids["resumable"]]
        assert attempts == 2 and e2 > epoch[ids["resumable"]]
        assert resume["step_key"] == "wait-for-reboot" and resume["checkpoint"] == {"polls": 7}
        assert again[ids["fresh"]][2] is None

        # the lost flash waits for an admin: an operator may not resume it, force_resume may
        operator = create_user(cur, "operator")
        admin = create_user(cur, "admin")
        try:
            conn.autocommit = False
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (f'{{"sub": "{operator}", "role": "authenticated"}}',),
            )
            with pytest.raises(psycopg2.Error) as denied:
                cur.execute("update public.jobs set status = 'pending' where id = %s", (ids["flash"],))
            assert "forbidden_transition:" in denied.value.pgerror
            conn.rollback()
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (f'{{"sub": "{admin}", "role": "authenticated"}}',),
            )
            cur.execute(
                "select status, lease_epoch from public.force_resume(%s, 'checked the iDRAC job queue')",
                (ids["flash"],),
            )
            assert cur.fetchone()[0] == "pending"
            conn.commit()
        finally:
            conn.autocommit = True
            cur.execute("delete from auth.users where id in (%s, %s)", (operator, admin))
        cur.execute("select job_id, resume_from from public.claim_jobs(%s, 1)", (ex,))
        job, resume = cur.fetchone()
        assert str(job) == ids["flash"] and resume["step_key"] == "apply-firmware"
        cur.execute("select resumable from public.workflow_executions where id = %s", (resume["step_id"],))
        assert cur.fetchone()[0] is True  # the admin vouched for re-running it


def test_attempts_are_bounded_by_the_policy(db_url, conn):
    with private_site(db_url, "attempts") as site, conn.cursor() as cur:
        ex = register_executor(cur, site, "ex")
        cur.execute("select max_attempts from public.safety_policies where job_type = 'selftest'")
        max_attempts = cur.fetchone()[0]
        cur.execute("insert into public.jobs (type, site_id) values ('selftest', %s) returning id", (site,))
        job = cur.fetchone()[0]
        outcomes = []
        for _ in range(max_attempts):
            cur.execute("select count(*) from public.claim_jobs(%s, 1)", (ex,))
            assert cur.fetchone()[0] == 1
            expire_leases(cur, site)
            outcomes.append(recover(cur, site)[job])
        assert outcomes == ["requeued"] * (max_attempts - 1) + ["paused_executor_lost"]


def test_per_cluster_concurrency_holds_under_concurrent_claims(db_url, conn):
    """8 claimers race over jobs on three clusters whose policy allows one active job each;
    the audit log (written in commit order) is replayed to find the peak per cluster."""
    with private_site(db_url, "cluster") as site, conn.cursor() as cur:
        cur.execute(
            "insert into public.vcenters (site_id, name, address) values (%s, 'vc', 'vc.test') returning id",
            (site,),
        )
        vc = cur.fetchone()[0]
        cur.execute(
            "insert into public.clusters (vcenter_id, site_id, name, moref) "
            "select %s, %s, 'c' || g, 'domain-c' || g from generate_series(1, 3) g returning id",
            (vc, site),
        )
        clusters = [r[0] for r in cur.fetchall()]
        cur.execute(
            "insert into public.jobs (type, site_id, cluster_id) "
            "select 'power_operation', %s, (%s::uuid[])[1 + g %% 3] from generate_series(1, 60) g",
            (site, clusters),
        )
        executors = [register_executor(cur, site, f"ex-{i}") for i in range(CLAIMERS)]
        cur.execute("select coalesce(max(id), 0) from public.audit_log")
        audit_from = cur.fetchone()[0]

        errors: list[BaseException] = []
        done = Counter()
        start = threading.Barrier(CLAIMERS)

        def claimer(i: int) -> None:
            c = connect(db_url)
            try:
                with c.cursor() as cc:
                    start.wait()
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        cc.execute(
                            "select job_id, lease_epoch from public.claim_jobs(%s, 4)", (executors[i],)
                        )
                        rows = cc.fetchall()
                        if not rows:
                            cc.execute(
                                "select count(*) from public.jobs where site_id = %s and status <> 'completed'",
                                (site,),
                            )
                            if cc.fetchone()[0] == 0:
                                return
                            time.sleep(0.001)  # every cluster is busy: let the holders finish
                            continue
                        for job, epoch in rows:
                            cc.execute(
                                "select public.finish_job(%s, %s, %s, 'completed')",
                                (executors[i], job, epoch),
                            )
                            done[i] += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                c.close()

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(CLAIMERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert sum(done.values()) == 60

        cur.execute(
            """select a.row_id, a.old_data ->> 'status', a.new_data ->> 'status', j.cluster_id
                         from public.audit_log a join public.jobs j on j.id::text = a.row_id
                        where a.id > %s and a.action = 'job.status' and j.site_id = %s order by a.id""",
            (audit_from, site),
        )
        active: dict[str, int] = defaultdict(int)
        peak: dict[str, int] = defaultdict(int)
        transitions = 0
        for _job, old, new, cluster in cur.fetchall():
            transitions += 1
            if new == "running":
                active[cluster] += 1
            elif old == "running":
                active[cluster] -= 1
            peak[cluster] = max(peak[cluster], active[cluster])
        assert transitions == 120
        assert peak and max(peak.values()) == 1, dict(peak)


def test_risky_jobs_need_an_approved_current_window(db_url, conn):
    with private_site(db_url, "window") as site, conn.cursor() as cur:
        ex = register_executor(cur, site, "ex")
        requester = create_user(cur, "operator")
        approver = create_user(cur, "approver")
        try:
            cur.execute(
                """insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by)
                           values (%(s)s, 'now', now() - interval '1 minute', now() + interval '1 hour', %(r)s),
                                  (%(s)s, 'later', now() + interval '1 day', now() + interval '2 days', %(r)s)
                           returning id""",
                {"s": site, "r": requester},
            )
            now_window, later_window = (r[0] for r in cur.fetchall())
            cur.execute(
                """insert into public.jobs (type, site_id, maintenance_window_id, description) values
                           ('firmware_update', %(s)s, null, 'no-window'),
                           ('firmware_update', %(s)s, %(now)s, 'now'),
                           ('firmware_update', %(s)s, %(later)s, 'later')""",
                {"s": site, "now": now_window, "later": later_window},
            )
            cur.execute("select count(*) from public.claim_jobs(%s, 10)", (ex,))
            assert cur.fetchone()[0] == 0  # nothing approved yet

            # the requester may not approve their own window (four eyes)
            with pytest.raises(psycopg2.Error) as four_eyes:
                cur.execute(
                    "update public.maintenance_windows set status = 'approved', approved_by = requested_by "
                    "where id = %s",
                    (now_window,),
                )
            assert "four_eyes:" in four_eyes.value.pgerror
            cur.execute(
                "update public.maintenance_windows set status = 'approved', approved_by = %s "
                "where id in (%s, %s)",
                (approver, now_window, later_window),
            )
            cur.execute(
                "select j.description, c.job_id, c.lease_epoch, c.window_ends_at > now() "
                "from public.claim_jobs(%s, 10) c join public.jobs j on j.id = c.job_id",
                (ex,),
            )
            rows = cur.fetchall()
            assert [(r[0], r[3]) for r in rows] == [("now", True)]
            _, job, epoch = rows[0][:3]
            lease = f'[{{"job_id": "{job}", "epoch": {epoch}}}]'
            cur.execute("select public.heartbeat(%s, %s::jsonb) -> 'window_closed'", (ex, lease))
            assert cur.fetchone()[0] == []
            # an approver cancels the window: the executor hears it on its next heartbeat
            cur.execute(
                "update public.maintenance_windows set status = 'cancelled' where id = %s", (now_window,)
            )
            cur.execute("select public.heartbeat(%s, %s::jsonb) -> 'window_closed'", (ex, lease))
            assert cur.fetchone()[0] == [str(job)]
            cur.execute("select public.pause_job(%s, %s, %s, 'window_closed')", (ex, job, epoch))
            cur.execute("select status, pause_reason from public.jobs where id = %s", (job,))
            assert cur.fetchone() == ("paused", "window_closed")
        finally:
            cur.execute("delete from auth.users where id in (%s, %s)", (requester, approver))


def test_executor_writes_under_a_valid_lease(db_url, conn):
    """The happy paths of the fenced RPCs, and their refusals of bad input."""
    with private_site(db_url, "rpcs") as site, conn.cursor() as cur:
        ex = register_executor(cur, site, "ex")
        cur.execute("insert into public.jobs (type, site_id) values ('scp_backup', %s) returning id", (site,))
        job = cur.fetchone()[0]
        cur.execute("select lease_epoch, lease_expires_at from public.claim_jobs(%s, 1)", (ex,))
        epoch, lease = cur.fetchone()

        cur.execute(
            "select public.heartbeat(%s, %s::jsonb)", (ex, f'[{{"job_id": "{job}", "epoch": {epoch}}}]')
        )
        assert cur.fetchone()[0]["renewed"] == [job]
        cur.execute("select lease_expires_at >= %s from public.jobs where id = %s", (lease, job))
        assert cur.fetchone()[0]
        with pytest.raises(psycopg2.Error) as bad:
            cur.execute("select public.heartbeat(%s, '{\"job_id\": 1}'::jsonb)", (ex,))
        assert bad.value.pgcode == "22023"

        server = str(uuid.uuid4())
        cur.execute(
            "select status, progress from public.update_task(%s, %s, %s, 'server', %s, 'running', 40)",
            (ex, job, epoch, server),
        )
        assert cur.fetchone() == ("running", 40)
        cur.execute(
            "select status, progress, finished_at is not null from public.update_task(%s, %s, %s, 'server', %s, "
            "'completed')",
            (ex, job, epoch, server),
        )
        assert cur.fetchone() == ("completed", 100, True)
        with pytest.raises(psycopg2.Error) as bad:
            cur.execute(
                "select public.update_task(%s, %s, %s, 'server', %s, 'running', 140)",
                (ex, job, epoch, server),
            )
        assert "invalid_argument:" in bad.value.pgerror

        payload = b"<SystemConfiguration Model='R650'/>"
        cur.execute(
            "select public.put_artifact(%s, %s, %s, 'scp_backup', %s, %s, 'application/xml')",
            (ex, job, epoch, base64.b64encode(payload).decode(), hashlib.sha256(payload).hexdigest()),
        )
        artifact = cur.fetchone()[0]
        cur.execute("select size_bytes, content from public.artifacts where id = %s", (artifact,))
        size, content = cur.fetchone()
        assert size == len(payload) and bytes(content) == payload
        with pytest.raises(psycopg2.Error) as bad:
            cur.execute(
                "select public.put_artifact(%s, %s, %s, 'scp_backup', %s, %s)",
                (ex, job, epoch, base64.b64encode(payload).decode(), "0" * 64),
            )
        assert "sha256 does not match" in bad.value.pgerror

        # a non-resumable step begun in an earlier run may not silently start again
        cur.execute(
            "select public.report_step(%s, %s, %s, 'a-flash', 0, 'Flash', 'running', false)", (ex, job, epoch)
        )
        cur.execute(
            "select public.report_step(%s, %s, %s, 'b-wait', 1, 'Wait', 'running', true)", (ex, job, epoch)
        )
        expire_leases(cur, site)
        assert recover(cur, site) == {job: "requeued"}  # the current step (b-wait) is resumable
        cur.execute("select lease_epoch from public.claim_jobs(%s, 1)", (ex,))
        epoch2 = cur.fetchone()[0]
        with pytest.raises(psycopg2.Error) as rerun:
            cur.execute(
                "select public.report_step(%s, %s, %s, 'a-flash', 0, 'Flash', 'running', false)",
                (ex, job, epoch2),
            )
        assert "not_resumable:" in rerun.value.pgerror
        cur.execute(
            "select public.report_step(%s, %s, %s, 'b-wait', 1, 'Wait', 'running', true)", (ex, job, epoch2)
        )

        with pytest.raises(psycopg2.Error) as bad:
            cur.execute("select public.finish_job(%s, %s, %s, 'failed')", (ex, job, epoch2))
        assert "needs an error" in bad.value.pgerror
        with pytest.raises(psycopg2.Error) as bad:
            cur.execute("select public.finish_job(%s, %s, %s, 'cancelled')", (ex, job, epoch2))
        assert "cancel was requested" in bad.value.pgerror
        cur.execute(
            "select status, finished_at is not null from public.finish_job(%s, %s, %s, 'completed')",
            (ex, job, epoch2),
        )
        assert cur.fetchone() == ("completed", True)
        cur.execute("delete from public.artifacts where id = %s", (artifact,))  # not removed with the site


def test_create_job_and_the_claim_take_one_cluster_lock(db_url, conn):
    """One declaration of the per-cluster lock key (issue 14): create-job spelled it
    'rackpilot:cluster:<id>' and the claim 'rackpilot.cluster:<id>', two locks that never
    excluded each other. Both now take public.cluster_lock_key(cluster): while a create-job
    transaction holds it, the claim passes over that cluster's jobs."""
    from pathlib import Path

    jobs_ts = (Path(__file__).resolve().parents[2] / "supabase/functions/_shared/jobs.ts").read_text()
    assert "public.cluster_lock_key(" in jobs_ts and "rackpilot:cluster:" not in jobs_ts
    with private_site(db_url, "lockkey") as site, conn.cursor() as cur:
        cur.execute(
            "insert into public.vcenters (site_id, name, address) values (%s, 'vc', 'vc.test') returning id",
            (site,),
        )
        vc = cur.fetchone()[0]
        cur.execute(
            "insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, 'c', 'domain-c1') "
            "returning id",
            (vc, site),
        )
        cluster = cur.fetchone()[0]
        cur.execute(
            "insert into public.jobs (type, site_id, cluster_id) values ('power_operation', %s, %s)",
            (site, cluster),
        )
        ex = register_executor(cur, site, "lock-ex")
        holder = connect(db_url)
        holder.autocommit = False
        try:
            with holder.cursor() as hc:  # what create-job does inside its transaction
                hc.execute("select pg_advisory_xact_lock(public.cluster_lock_key(%s))", (cluster,))
                cur.execute("select job_id from public.claim_jobs(%s, 5)", (ex,))
                assert cur.fetchall() == []
            holder.rollback()
        finally:
            holder.close()
        cur.execute("select job_id from public.claim_jobs(%s, 5)", (ex,))
        assert len(cur.fetchall()) == 1
