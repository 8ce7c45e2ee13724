"""The audit log: append-only, hash-chained (in lanes), attributed, and verifiable.

Tampering is simulated the only way it can happen: as the database superuser with
ordinary triggers switched off (session_replication_role = replica), inside a transaction
that is rolled back, so the shared log stays intact.
"""

from __future__ import annotations

import json
import threading

import psycopg2
import pytest

from .pgutil import connect, create_user, private_site, register_executor


@pytest.fixture
def conn(db_url):
    c = connect(db_url)
    yield c
    c.close()


def verify(cur) -> tuple | None:
    cur.execute("select broken_id, reason from public.verify_audit_chain()")
    return cur.fetchone()


def test_chain_verifies_and_detects_tampering(db_url, conn):
    with private_site(db_url, "audit") as site, conn.cursor() as cur:
        cur.execute(
            "insert into public.jobs (type, site_id) select 'selftest', %s from generate_series(1, 3) "
            "returning id",
            (site,),
        )
        cur.execute(
            "select id from public.audit_log where table_name = 'jobs' and action = 'job.created' "
            "order by id desc limit 3"
        )
        victim, middle, _ = sorted(r[0] for r in cur.fetchall())
        assert verify(cur) is None

        tamper = connect(db_url, autocommit=False)
        try:
            with tamper.cursor() as t:
                t.execute("set local session_replication_role = replica")
                # 1. change a row's contents
                t.execute(
                    "update public.audit_log set new_data = new_data || '{\"priority\": 100}' where id = %s",
                    (victim,),
                )
                assert verify(t) == (victim, "hash does not match the row's contents")
                # 2. change it and recompute its own hash: the next row's link breaks
                t.execute(
                    """update public.audit_log a set hash = public.audit_row_hash(a.prev_hash, a.id, a.lane, a.occurred_at,
                                 a.actor_kind, a.actor_id, a.actor_role, a.action, a.table_name, a.row_id,
                                 a.old_data, a.new_data, a.note) where id = %s""",
                    (victim,),
                )
                cur_next = verify(t)
                assert cur_next is not None and cur_next[0] > victim
                assert cur_next[1] == "prev_hash does not match the previous row's hash in its lane"
                tamper.rollback()
                # 3. delete a row in the middle
                t.execute("set local session_replication_role = replica")
                t.execute("delete from public.audit_log where id = %s", (middle,))
                broken = verify(t)
                assert broken is not None and broken[0] > middle and broken[1].startswith("prev_hash")
        finally:
            tamper.rollback()
            tamper.close()
        assert verify(cur) is None  # nothing of the above survived


def test_audit_log_is_append_only_for_everyone(db_url):
    c = connect(db_url, autocommit=False)
    try:
        with c.cursor() as cur:
            cur.execute("select max(id) from public.audit_log")
            last = cur.fetchone()[0]
            assert last is not None
            for stmt in (
                "update public.audit_log set note = 'x' where id = %s",
                "delete from public.audit_log where id = %s",
            ):
                cur.execute("savepoint s")
                with pytest.raises(psycopg2.Error) as err:  # the database owner, triggers on
                    cur.execute(stmt, (last,))
                assert "audit_append_only:" in err.value.pgerror
                cur.execute("rollback to savepoint s")
            cur.execute("savepoint s")
            with pytest.raises(psycopg2.Error) as err:
                cur.execute("truncate public.audit_log")
            assert "audit_append_only:" in err.value.pgerror
            cur.execute("rollback to savepoint s")
            for stmt in (
                "update public.audit_log set note = 'x' where id = %s",
                "delete from public.audit_log where id = %s",
                "insert into public.audit_log (actor_kind, actor_role, action, prev_hash, hash) "
                "select 'service', 'service_role', 'forged', hash, hash from public.audit_log where id = %s",
            ):
                cur.execute("savepoint s")
                cur.execute("set local role service_role")
                cur.execute(
                    "select set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"role": "service_role"}),),
                )
                with pytest.raises(psycopg2.Error) as err:
                    cur.execute(stmt, (last,))
                assert err.value.pgcode == "42501", err.value.pgerror
                cur.execute("rollback to savepoint s")
    finally:
        c.rollback()
        c.close()


def test_changes_are_attributed_to_their_actor(db_url, conn):
    with private_site(db_url, "actor") as site, conn.cursor() as cur:
        operator = create_user(cur, "operator")
        admin = create_user(cur, "admin")
        try:
            ex = register_executor(cur, site, "ex")
            cur.execute(
                "insert into public.jobs (type, site_id, description) values "
                "('selftest', %(s)s, 'cancel-me'), ('selftest', %(s)s, 'run-me') returning id, description",
                {"s": site},
            )
            jobs = {d: str(i) for i, d in cur.fetchall()}

            # the operator cancels one job through RLS, as the REST layer would run it
            conn.autocommit = False
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": operator, "role": "authenticated"}),),
            )
            cur.execute("update public.jobs set status = 'cancelled' where id = %s", (jobs["cancel-me"],))
            assert cur.rowcount == 1
            conn.commit()
            conn.autocommit = True
            cur.execute("select job_id, lease_epoch from public.claim_jobs(%s, 5)", (ex,))
            ((job, epoch),) = cur.fetchall()
            assert str(job) == jobs["run-me"]
            cur.execute(
                "select public.pause_job(%s, %s, %s, 'blockers', %s::jsonb)",
                (ex, job, epoch, json.dumps([{"kind": "usb_passthrough", "description": "USB on vm-7"}])),
            )
            conn.autocommit = False
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": admin, "role": "authenticated"}),),
            )
            cur.execute("select public.force_resume(%s, 'vendor asked for a retry')", (job,))
            conn.rollback()  # open blockers: refused, nothing written
            conn.autocommit = True

            cur.execute(
                """select a.row_id, a.action, a.actor_kind, a.actor_id::text, a.new_data ->> 'status', a.note
                             from public.audit_log a
                            where a.table_name = 'jobs' and a.row_id = any (%s) order by a.id""",
                (list(jobs.values()),),
            )
            trail = cur.fetchall()
        except psycopg2.Error as exc:
            conn.rollback()
            conn.autocommit = True
            if "open_blockers:" not in (exc.pgerror or ""):
                raise
            cur.execute(
                """select a.row_id, a.action, a.actor_kind, a.actor_id::text, a.new_data ->> 'status', a.note
                             from public.audit_log a
                            where a.table_name = 'jobs' and a.row_id = any (%s) order by a.id""",
                (list(jobs.values()),),
            )
            trail = cur.fetchall()
        finally:
            conn.autocommit = True
            cur.execute("delete from auth.users where id in (%s, %s)", (operator, admin))

        cancel, run = jobs["cancel-me"], jobs["run-me"]
        assert (cancel, "job.status", "user", operator, "cancelled", None) in trail
        assert (run, "job.status", "executor", str(ex), "running", None) in trail
        assert (run, "job.status", "executor", str(ex), "paused", None) in trail
        assert not any(r[0] == run and r[4] == "pending" and r[1] == "job.status" for r in trail)


def test_force_resume_is_audited_with_the_admins_note(db_url, conn):
    with private_site(db_url, "force") as site, conn.cursor() as cur:
        admin = create_user(cur, "admin")
        try:
            ex = register_executor(cur, site, "ex")
            cur.execute(
                "insert into public.jobs (type, site_id) values ('selftest', %s) returning id", (site,)
            )
            job = cur.fetchone()[0]
            cur.execute("select lease_epoch from public.claim_jobs(%s, 1)", (ex,))
            epoch = cur.fetchone()[0]
            cur.execute(
                "select public.report_step(%s, %s, %s, 'flash', 0, 'Flash', 'running', false)",
                (ex, job, epoch),
            )
            cur.execute(
                "update public.jobs set lease_expires_at = now() - interval '1 second' where id = %s", (job,)
            )
            cur.execute("select outcome from public.recover_expired_leases() where job_id = %s", (job,))
            assert cur.fetchone()[0] == "paused_executor_lost"
            conn.autocommit = False
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": admin, "role": "authenticated"}),),
            )
            cur.execute(
                "select status from public.force_resume(%s, 'firmware verified on the iDRAC')", (job,)
            )
            assert cur.fetchone()[0] == "pending"
            conn.commit()
            conn.autocommit = True
            cur.execute(
                "select actor_kind, actor_id::text, note from public.audit_log where table_name = 'jobs' "
                "and row_id = %s and action = 'job.status' and new_data ->> 'status' = 'pending'",
                (str(job),),
            )
            assert cur.fetchall() == [("user", admin, "force_resume: firmware verified on the iDRAC")]
        finally:
            conn.autocommit = True
            cur.execute("delete from auth.users where id = %s", (admin,))


def test_credentials_are_audited_without_ciphertext(db_url, conn):
    with private_site(db_url, "credaudit") as site, conn.cursor() as cur:
        cur.execute(
            "insert into public.credential_sets (site_id, name, kind, username) "
            "values (%s, 'idrac', 'idrac', 'root') returning id",
            (site,),
        )
        cred = cur.fetchone()[0]
        cur.execute(
            "insert into public.credential_envelopes (credential_set_id, key_id, sealed_secret) "
            "values (%s, 'k1', 'sealed-envelope-one')",
            (cred,),
        )
        # a reseal (encrypt-credentials): the envelopes are replaced, one per current key
        cur.execute("delete from public.credential_envelopes where credential_set_id = %s", (cred,))
        cur.execute(
            "insert into public.credential_envelopes (credential_set_id, key_id, sealed_secret) "
            "values (%s, 'k2', 'sealed-envelope-two')",
            (cred,),
        )
        cur.execute(
            "select action, coalesce(new_data, old_data) from public.audit_log "
            "where table_name in ('credential_sets', 'credential_envelopes') "
            "and coalesce(new_data, old_data) @> jsonb_build_object('credential_set_id', %s::text) "
            "or (table_name = 'credential_sets' and row_id = %s) order by id",
            (str(cred), str(cred)),
        )
        rows = cur.fetchall()
        assert [(r[0], r[1].get("key_id")) for r in rows] == [
            ("credential_sets.insert", None),
            ("credential_envelopes.insert", "k1"),
            ("credential_envelopes.delete", "k1"),
            ("credential_envelopes.insert", "k2"),
        ]
        text = json.dumps([r[1] for r in rows])
        assert "sealed-envelope" not in text and "sealed_secret" not in text
        cur.execute("delete from public.credential_sets where id = %s", (cred,))


def test_concurrent_writers_keep_one_chain(db_url, conn):
    with private_site(db_url, "chain") as site, conn.cursor() as cur:
        cur.execute("select coalesce(max(id), 0) from public.audit_log")
        start_id = cur.fetchone()[0]
        errors: list[BaseException] = []

        def writer() -> None:
            c = connect(db_url)
            try:
                with c.cursor() as wc:
                    for _ in range(25):
                        wc.execute(
                            "insert into public.jobs (type, site_id) select 'selftest', %s "
                            "from generate_series(1, 4)",
                            (site,),
                        )
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                c.close()

        threads = [threading.Thread(target=writer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        cur.execute(
            "select count(*) from public.audit_log where id > %s and action = 'job.created' "
            "and new_data ->> 'site_id' = %s",
            (start_id, site),
        )
        assert cur.fetchone()[0] == 8 * 25 * 4
        assert verify(cur) is None
