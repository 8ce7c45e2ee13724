"""Replication's control-plane half on the real stack: the SQL scheduler creates exactly one
job per due pair however many callers race, and a real executor process runs the job over
the lab's sshd and zfs stand-in, records bytes, duration, lag and last success on the pair,
and never runs two syncs of one pair at once."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest

from devstack import proc
from devstack.lab.zfs_ssh import ZfsSshLab
from devstack.stack.users import add_user
from executor.handlers._replication_gate import current_lag
from executor.secrets import seal, unb64u
from supabase import create_client
from tests.e2e.executor_harness import Harness, wait_until
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL


@pytest.fixture()
def harness(stack):
    h = Harness(stack, Path(tempfile.mkdtemp(prefix="rackpilot-repl-")))
    yield h
    h.close()


def _pair(h: Harness, name: str, **cols) -> str:
    cols = {
        "source_host": "zfs1",
        "source_dataset": "tank/vm",
        "target_host": "zfs2",
        "target_dataset": f"backup/{name}",
        **cols,
    }
    keys = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    return str(
        h.one(
            f"insert into public.replication_pairs (site_id, name, {keys}) values (%s, %s, {marks}) "
            f"returning id",
            h.site_id,
            name,
            *cols.values(),
        )["id"]
    )


def _sealed_lab_credential(h: Harness, lab: ZfsSshLab) -> str:
    """The lab's SSH login sealed to the site's (first registered) executor key, as
    encrypt-credentials seals it: the private key and the pinned host keys."""
    key = h.query("select public_key, key_id from public.executors where site_id = %s", h.site_id)[0]
    secret = {
        "username": lab.username,
        "private_key": lab.client_key.read_text(),
        "host_keys": lab.host_keys(),
    }
    eps = [
        {"scheme": "ssh", "host": "127.0.0.1", "port": p, "tls": {"known_hosts": "sealed"}}
        for p in lab.ports.values()
    ]
    envelope = seal(unb64u(key["public_key"]), secret, endpoints=eps)
    return str(
        h.one(
            INSERT_SEALED_CREDENTIAL,
            h.site_id,
            "zfs-ssh",
            "ssh",
            lab.username,
            key["key_id"],
            json.dumps(envelope),
        )["id"]
    )


def _sync_job(h: Harness, pair: str, cred: str) -> str:
    """A replication_sync job of one pair with its task row, in one statement, as "sync now"
    (create-job) creates it: the scheduler sees the pair has an unfinished job."""
    return str(
        h.one(
            "with j as (insert into public.jobs (type, site_id, params, scope, credential_set_ids) values "
            "('replication_sync', %s, %s, %s, %s::uuid[]) returning id), "
            "t as (insert into public.job_tasks (job_id, target_kind, target_id, target_name, seq) "
            "select id, 'replication_pair', %s, 'p', 0 from j) select id from j",
            h.site_id,
            json.dumps({"replication_pair_ids": [pair]}),
            json.dumps({"targets": [{"kind": "replication_pair", "id": pair, "name": "p"}]}),
            [str(cred)],
            pair,
        )["id"]
    )


def test_the_schedule_creates_exactly_one_job_per_due_pair(harness):
    h = harness
    due = _pair(h, "due", schedule="@every 5m")
    due2 = _pair(h, "due2", schedule="@hourly")
    recent = _pair(h, "recent", schedule="@hourly")
    h.query(
        "update public.replication_pairs set last_attempt_at = now() - interval '10 minutes' where id = %s",
        recent,
    )
    _pair(h, "manual", schedule="manual")
    _pair(h, "off", schedule="@hourly", enabled=False)
    with pytest.raises(psycopg2.errors.CheckViolation):
        _pair(h, "bad", schedule="every hour")

    created: list = []

    def call() -> None:
        conn = psycopg2.connect(h.env["SUPABASE_DB_URL"])
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select job_id, pair_id from public.schedule_replication_jobs(%s)", (h.site_id,))
            created.extend(cur.fetchall())
        conn.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(str(p) for _, p in created) == sorted([due, due2])
    jobs = h.query(
        "select j.id, j.type, j.status, j.params, t.target_id from public.jobs j "
        "join public.job_tasks t on t.job_id = j.id where j.site_id = %s",
        h.site_id,
    )
    assert sorted(str(j["target_id"]) for j in jobs) == sorted([due, due2])
    assert all(j["type"] == "replication_sync" and j["status"] == "pending" for j in jobs)
    # a due pair whose job is still waiting gets no second one
    assert h.query("select * from public.schedule_replication_jobs(%s)", h.site_id) == []


def test_two_executors_schedule_exactly_one_job_per_due_pair(harness):
    """Two real executors of one site both run the replication schedule (every second): each
    due pair gets one job, not one per executor nor one per round - also after that job
    ended without syncing (here: no credential, so it fails). Witness pairs made due later
    prove that rounds kept running after those jobs ended."""
    h = harness
    common = dict(realtime_enabled="false", poll_interval=0.3, replication_poll_interval=1)
    execs = [h.spawn("sched-a", **common), h.spawn("sched-b", **common)]
    for ex in execs:
        ex.wait_log("registered", timeout=60)

    def jobs_of(pair: str) -> list[dict]:
        return h.query(
            "select j.id, j.status from public.jobs j join public.job_tasks t on t.job_id = j.id "
            "where t.target_kind = 'replication_pair' and t.target_id = %s",
            pair,
        )

    def ended(pair: str) -> bool:
        jobs = jobs_of(pair)
        return bool(jobs) and all(j["status"] in ("completed", "failed", "cancelled") for j in jobs)

    pairs = [_pair(h, f"due{i}", schedule="@every 5m") for i in range(3)]
    for p in pairs:
        wait_until(lambda p=p: ended(p), 60, "the due pair's job to be created and to end")
    for i in range(3):  # rounds after those jobs ended: each witness is scheduled in a later round
        w = _pair(h, f"witness{i}", schedule="@every 5m")
        wait_until(lambda w=w: ended(w), 60, f"witness {i}'s job")
        pairs.append(w)
    counts = {p: len(jobs_of(p)) for p in pairs}
    assert set(counts.values()) == {1}, counts
    assert all(ex.proc.poll() is None for ex in execs)


def _jobs_of(h: Harness, pair: str) -> list[dict]:
    return h.query(
        "select j.id, j.status, j.created_at, j.details from public.jobs j "
        "join public.job_tasks t on t.job_id = j.id "
        "where t.target_kind = 'replication_pair' and t.target_id = %s order by j.created_at",
        pair,
    )


def test_a_cancelled_scheduled_job_counts_as_the_attempt(harness, stack):
    """An operator cancels a scheduled job before it took the pair (job-control, as the
    operator): that run is skipped - the scheduler's next rounds make no new job for the pair
    - and the next one comes when the schedule says, one interval after the cancel. A real
    executor provides the rounds (every second); a witness pair made due after the cancel
    getting its job proves a round ran after it."""
    h = harness
    env = stack.env()
    email = f"operator-{uuid.uuid4().hex[:8]}@replication.test"
    add_user(stack, email, "operator", "replication-test-pw-1")
    operator = create_client(env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"])
    operator.auth.sign_in_with_password({"email": email, "password": "replication-test-pw-1"})

    # the executor's one job slot is held by a selftest job waiting at a gate that never
    # opens, so the scheduled jobs stay pending (nothing takes a pair) while the executor
    # keeps running the replication schedule
    gates = h.selftest_dir / "gates"
    gates.mkdir()
    holder = h.create_job(
        {"counter_file": "holder.txt", "gate_dir": gates.name, "gates": ["boundary:preflight"]}
    )
    ex = h.spawn("sched-cancel", realtime_enabled="false", max_concurrent_jobs=1, replication_poll_interval=1)
    ex.wait_log("registered", timeout=60)
    wait_until(lambda: (gates / f"{holder}.boundary:preflight.at").exists(), 60, "the slot to be held")

    interval = timedelta(seconds=30)  # room for the rounds below on a busy machine
    pair = _pair(h, "cancelled", schedule="@every 30s")
    [job] = wait_until(lambda: _jobs_of(h, pair), 60, "the due pair's scheduled job")
    assert job["status"] == "pending" and job["details"].get("scheduled") is True, job
    before = h.one("select last_attempt_at from public.replication_pairs where id = %s", pair)
    assert before["last_attempt_at"] is None  # nothing took the pair

    res = operator.functions.invoke(
        "job-control", {"body": {"action": "cancel", "job_id": str(job["id"])}, "responseType": "json"}
    )
    assert res["status"] == "cancelled" and res["requested"] is False, res
    cancelled_at = h.one("select now() as t")["t"]
    attempt = h.one("select last_attempt_at from public.replication_pairs where id = %s", pair)[
        "last_attempt_at"
    ]
    assert attempt is not None and attempt <= cancelled_at and cancelled_at - attempt < interval
    due_at = attempt + interval

    # rounds after the cancel: each witness is made due after it and gets its job in a round
    # that also saw the cancelled pair - which gets none
    for i in range(2):
        w = _pair(h, f"witness{i}", schedule="@every 30s")
        [wjob] = wait_until(lambda w=w: _jobs_of(h, w), 60, f"witness {i}'s job")
        assert wjob["created_at"] < due_at, "the round came after the pair was due again: inconclusive"
        assert [j["id"] for j in _jobs_of(h, pair)] == [job["id"]]

    # the next due time still makes one, not before it
    new = wait_until(
        lambda: [j for j in _jobs_of(h, pair) if j["id"] != job["id"]], 90, "the pair's next scheduled job"
    )
    assert len(new) == 1 and new[0]["created_at"] >= due_at, (new, due_at)
    assert new[0]["status"] == "pending" and new[0]["details"].get("scheduled") is True
    assert h.job(holder)["status"] == "running"  # the slot was held throughout: nothing was claimed

    # a cancelled "sync now" job (not scheduled) leaves the schedule alone
    manual = _pair(h, "manual-cancel", schedule="@hourly")
    h.query(
        "update public.replication_pairs set last_attempt_at = now() - interval '10 minutes' where id = %s",
        manual,
    )
    mark = h.one("select last_attempt_at from public.replication_pairs where id = %s", manual)[
        "last_attempt_at"
    ]
    now_job = h.one(
        "with j as (insert into public.jobs (type, site_id, params, scope) values "
        "('replication_sync', %s, %s, %s) returning id), "
        "t as (insert into public.job_tasks (job_id, target_kind, target_id, target_name, seq) "
        "select id, 'replication_pair', %s, 'm', 0 from j) select id from j",
        h.site_id,
        json.dumps({"replication_pair_ids": [manual]}),
        json.dumps({"targets": [{"kind": "replication_pair", "id": manual, "name": "m"}]}),
        manual,
    )["id"]
    res = operator.functions.invoke(
        "job-control", {"body": {"action": "cancel", "job_id": str(now_job)}, "responseType": "json"}
    )
    assert res["status"] == "cancelled", res
    assert (
        h.one("select last_attempt_at from public.replication_pairs where id = %s", manual)["last_attempt_at"]
        == mark
    )


def test_dataset_names_are_checked_by_the_schema_too(harness):
    for bad in ("tank/../etc", "tank/a b", "tank/a;reboot", "tank//a", "tank/$(x)"):
        with pytest.raises(psycopg2.errors.CheckViolation):
            _pair(harness, f"n{abs(hash(bad))}", source_dataset=bad)


def test_an_executor_syncs_a_scheduled_pair_and_never_two_at_once(harness):
    h = harness
    with ZfsSshLab(["src", "dst"]) as lab:
        lab.zfs("src", "create", "-p", "tank/vm")
        lab.zfs("dst", "create", "-p", "backup")
        lab.write("src", "tank/vm", "disk.img", os.urandom(300_000))
        ex = h.spawn("repl-a", realtime_enabled="false", poll_interval=0.3, max_concurrent_jobs=4)
        ex.wait_log("registered", timeout=60)
        cred = _sealed_lab_credential(h, lab)
        pair = _pair(
            h,
            "vm",
            source_host=lab.address("src"),
            target_host=lab.address("dst"),
            source_dataset="tank/vm",
            target_dataset="backup/vm",
            credential_set_id=cred,
            allow_full_send=True,
            schedule="@hourly",
            max_lag_seconds=600,
        )
        # a scheduler round: this one, or the executor's own if it came first (never both)
        h.query("select * from public.schedule_replication_jobs(%s)", h.site_id)
        [scheduled] = _jobs_of(h, pair)
        job_id = str(scheduled["id"])
        job = h.wait_status(job_id, ("completed", "failed"), 120)
        assert job["status"] == "completed", job["error"]
        p = h.one("select * from public.replication_pairs where id = %s", pair)
        assert p["last_status"] == "succeeded" and p["last_success_at"] is not None
        assert p["last_bytes"] > 300_000 and p["last_duration_ms"] > 0
        assert 0 <= p["lag_seconds"] <= 60 and p["last_synced_snapshot_at"] is not None
        assert p["last_snapshot"].startswith("backup/vm@rackpilot_")
        assert p["running_job_id"] is None  # given back
        runs = h.query("select * from public.replication_runs where pair_id = %s", pair)
        assert [(r["status"], r["kind"]) for r in runs] == [("succeeded", "full")]
        task = h.one("select * from public.job_tasks where job_id = %s", job_id)
        assert task["status"] == "completed"
        # not due again within the hour: the executor's own scheduler adds nothing
        assert h.query("select * from public.schedule_replication_jobs(%s)", h.site_id) == []

        # two jobs for one pair at once (a "sync now" while another runs): one syncs, one skips
        lab.write("src", "tank/vm", "more.img", os.urandom(3_000_000))
        h.query("update public.replication_pairs set bandwidth_limit_mbit = 8 where id = %s", pair)  # ~3 s
        ids = []
        for _ in range(2):
            ids.append(
                str(
                    h.one(
                        "insert into public.jobs (type, site_id, params, scope, credential_set_ids) values "
                        "('replication_sync', %s, %s, %s, %s::uuid[]) returning id",
                        h.site_id,
                        json.dumps({"replication_pair_ids": [pair]}),
                        json.dumps({"targets": [{"kind": "replication_pair", "id": pair, "name": "vm"}]}),
                        [str(cred)],
                    )["id"]
                )
            )
        for jid in ids:
            h.wait_status(jid, ("completed", "failed"), 120)
        tasks = [
            h.one("select status from public.job_tasks where job_id = %s and target_id = %s", jid, pair)[
                "status"
            ]
            for jid in ids
        ]
        assert sorted(tasks) == ["completed", "skipped"], tasks
        kinds = [
            r["kind"]
            for r in h.query(
                "select kind from public.replication_runs where pair_id = %s "
                "and status = 'succeeded' order by id",
                pair,
            )
        ]
        assert kinds == ["full", "incremental"]
        wait_until(
            lambda: (
                not h.one("select running_job_id from public.replication_pairs where id = %s", pair)[
                    "running_job_id"
                ]
            ),
            10,
            "the pair to be given back",
        )

        # lag is the age of the newest snapshot on the replica: measured from that snapshot's
        # creation (so a ~3 s stream counts in it), not from the end of the transfer
        newest = lab.snapshots("dst", "backup/vm")[-1]
        created = lab.state("dst")["datasets"]["backup/vm"]["snapshots"][newest]["creation"]
        inc = h.one("select * from public.replication_runs where pair_id = %s and kind = 'incremental'", pair)
        assert inc["snapshot"] == f"backup/vm@{newest}"
        assert inc["duration_ms"] >= 1500  # 3 MB at 8 Mbit/s
        span = inc["finished_at"].timestamp() - created
        assert inc["lag_seconds"] >= int(inc["duration_ms"] / 1000) - 1
        assert abs(inc["lag_seconds"] - span) <= 2, (inc["lag_seconds"], span)
        ok = h.one("select * from public.replication_pairs where id = %s", pair)
        assert ok["last_snapshot"] == inc["snapshot"] and ok["lag_seconds"] == inc["lag_seconds"]
        assert abs(ok["last_synced_snapshot_at"].timestamp() - created) < 1
        # a sync that fails leaves the replica's newest snapshot where it was: the pair keeps
        # its last synced snapshot, success and lag figures, and its current lag (the gate's
        # and the console's) keeps growing from that snapshot, not from the failure
        lab.write("src", "tank/vm", "late.img", os.urandom(300_000))
        lab.inject("src", "break_after", bytes=50_000, times=1)
        failed = h.wait_status(_sync_job(h, pair, cred), ("completed", "failed"), 120)
        assert failed["status"] == "failed" and "StreamBroken" in (failed["error"] or ""), failed["error"]
        after = h.one("select * from public.replication_pairs where id = %s", pair)
        assert after["last_status"] == "failed"
        for col in ("last_synced_snapshot_at", "last_success_at", "last_snapshot", "lag_seconds"):
            assert after[col] == ok[col], col
        assert lab.snapshots("dst", "backup/vm")[-1] == newest
        now = time.time()
        assert abs(current_lag(after, now) - (now - created)) < 1
        assert current_lag(after, now) > ok["lag_seconds"]


def _stream_children(root: int) -> dict[str, list[int]]:
    """The executor's replication children by role, from the process table."""
    found: dict[str, list[int]] = {"agent": [], "send": [], "receive": [], "other_ssh": []}
    for pid in proc.descendants([root]):
        argv = proc.cmdline(pid)
        if not argv:
            continue
        line = " ".join(argv)
        if os.path.basename(argv[0]) == "ssh-agent" or " ssh-agent " in f" {line} ":
            found["agent"].append(pid)
        elif os.path.basename(argv[0]) == "ssh" and "zfs receive" in line:
            found["receive"].append(pid)
        elif os.path.basename(argv[0]) == "ssh" and "zfs send" in line and "-n -P" not in line:
            found["send"].append(pid)
        elif os.path.basename(argv[0]) == "ssh":
            found["other_ssh"].append(pid)
    return found


def test_sigkill_of_the_executor_mid_stream_leaves_no_agent_and_no_ssh_client(harness):
    """The executor dies with SIGKILL while a sync streams: its ssh-agent, both ssh clients of
    the stream and its per-host connections must go with it (the kernel's parent-death
    signal, and for the setgid ssh-agent - whose exec clears that signal - the watch on
    the executor's end of a pipe); the receive is left resumable."""
    h = harness
    with ZfsSshLab(["src", "dst"]) as lab:
        lab.zfs("src", "create", "-p", "tank/vm")
        lab.zfs("dst", "create", "-p", "backup")
        lab.write("src", "tank/vm", "disk.img", os.urandom(4_000_000))
        ex = h.spawn("repl-k", realtime_enabled="false", poll_interval=0.3)
        ex.wait_log("registered", timeout=60)
        cred = _sealed_lab_credential(h, lab)
        pair = _pair(
            h,
            "vm",
            source_host=lab.address("src"),
            target_host=lab.address("dst"),
            target_dataset="backup/vm",
            credential_set_id=cred,
            allow_full_send=True,
            bandwidth_limit_mbit=2,  # 250 kB/s: 4 MB take ~16 s, the kill lands mid-stream
            schedule="manual",  # this test's job only
        )
        job_id = _sync_job(h, pair, cred)
        executor = ex.proc.pid

        def streaming() -> dict[str, list[int]] | None:
            if ex.proc.poll() is not None:
                raise AssertionError(f"executor exited: {(ex.dir / 'stdout.log').read_text()[-2000:]}")
            kids = _stream_children(executor)
            arrived = [p.stat().st_size for p in lab.root("dst").rglob("*.partial")]
            ok = kids["agent"] and kids["send"] and kids["receive"] and arrived and max(arrived) > 100_000
            return kids if ok else None

        kids = wait_until(streaming, 60, "the stream to run (agent, send and receive clients)")
        assert h.job(job_id)["status"] == "running"
        watched = {pid: proc.start_time(pid) for pid in proc.descendants([executor])}
        assert len(watched) >= 3, watched
        ex.kill9()

        def left() -> list[int]:
            return [p for p, t in watched.items() if proc.is_alive(p) and proc.start_time(p) == t]

        try:
            wait_until(lambda: not left(), 15, "every child of the killed executor to exit")
        except AssertionError:
            survivors = "\n".join(f"  {p}: {' '.join(proc.cmdline(p))[:160]}" for p in left())
            raise AssertionError(f"left running 15 s after the executor's SIGKILL:\n{survivors}") from None
        finally:
            proc.terminate(left(), 5)  # a failing run must not leak them
        assert set(kids["agent"]) | set(kids["send"]) | set(kids["receive"]) <= set(watched)
        # nothing names the dead executor's state folder any more (its job's ssh folder)
        assert not proc.processes(needle=str(ex.dir / "state"))
        # what arrived is kept (once the host's receive saw its stream end): the receive is
        # resumable, and nothing became a snapshot
        wait_until(lambda: "backup/vm" in lab.state("dst")["partials"], 15, "the receive to keep its partial")
        token = lab.zfs("dst", "get", "-H", "-p", "-o", "value", "receive_resume_token", "backup/vm").stdout
        assert token.strip() not in ("", "-")
        assert lab.snapshots("dst", "backup/vm") == []
        assert len(lab.snapshots("src", "tank/vm")) == 1  # the source's snapshot is kept
        # the dead executor's job folder (known_hosts, public key; the agent took its socket) is left
        left_dirs = list((ex.dir / "state" / "ssh").iterdir())
        assert left_dirs
        # an executor started again on that state folder: the job, recovered, resumes the stream
        # from its token, and the next stack sweeps the folder the dead one left
        again = h.spawn("repl-k", realtime_enabled="false", poll_interval=0.3)
        again.wait_log("registered", timeout=60)
        [rec] = h.expire_and_recover([job_id])
        job = h.wait_status(job_id, ("completed", "failed", "paused"), 120)
        if job["status"] == "paused":  # recovery asked for a decision: an operator resumes it
            h.force_resume(job_id, "resume the interrupted sync")
            job = h.wait_status(job_id, ("completed", "failed"), 120)
        assert job["status"] == "completed", (rec, job["error"])
        runs = h.query("select kind, status from public.replication_runs where pair_id = %s", pair)
        assert [(r["kind"], r["status"]) for r in runs] == [("resume", "succeeded")], (rec, runs)
        assert lab.read("dst", "backup/vm", "disk.img") == lab.read("src", "tank/vm", "disk.img")
        assert not any(d.exists() for d in left_dirs)


def _run_then_fail(h: Harness, job: str, error: str) -> None:
    """What the executor's claim and its failure do to the job's row (the state machine's
    pending -> running -> failed), without an executor."""
    executor = h.one(
        "insert into public.executors (site_id, name, public_key, key_id) "
        "values (%s, %s, %s, 'k-fail') returning id",
        h.site_id,
        f"fails-{job[:8]}",
        "-----BEGIN PUBLIC KEY-----" + "A" * 40,
    )["id"]
    h.query(
        "update public.jobs set status = 'running', claimed_by = %s, lease_expires_at = now() + interval '1 minute', "
        "started_at = now() where id = %s",
        executor,
        job,
    )
    h.query(
        "update public.jobs set status = 'failed', error = %s, claimed_by = null, lease_expires_at = null, "
        "finished_at = now() where id = %s",
        error,
        job,
    )


def test_a_scheduled_job_that_fails_before_taking_its_pair_counts_as_the_attempt(harness):
    """A scheduled job failing before it took its pair (say its sealed credential cannot be
    opened) counts as that occurrence's attempt: the scheduler does not make the pair a new
    job at every round, only when the schedule says (one interval after the failure). A
    sync-now job failing leaves the schedule alone."""
    h = harness
    pair = _pair(h, "fails", schedule="@every 30s")
    [made] = h.query("select job_id from public.schedule_replication_jobs(%s)", h.site_id)
    job = str(made["job_id"])
    assert (
        h.one("select last_attempt_at from public.replication_pairs where id = %s", pair)["last_attempt_at"]
        is None
    )
    _run_then_fail(h, job, "credential cannot be opened")
    failed_at = h.one("select finished_at from public.jobs where id = %s", job)["finished_at"]
    attempt = h.one("select last_attempt_at from public.replication_pairs where id = %s", pair)[
        "last_attempt_at"
    ]
    assert attempt is not None and attempt >= failed_at - timedelta(seconds=1)
    # the next rounds make nothing for it until its interval has passed
    assert h.query("select job_id from public.schedule_replication_jobs(%s)", h.site_id) == []
    h.query(
        "update public.replication_pairs set last_attempt_at = last_attempt_at - interval '31 seconds' "
        "where id = %s",
        pair,
    )
    [again] = h.query("select job_id, pair_id from public.schedule_replication_jobs(%s)", h.site_id)
    assert str(again["pair_id"]) == pair and str(again["job_id"]) != job

    # a failed sync-now job (not scheduled) does not touch the schedule
    manual = _pair(h, "manual-fails", schedule="@hourly")
    h.query(
        "update public.replication_pairs set last_attempt_at = now() - interval '10 minutes' where id = %s",
        manual,
    )
    mark = h.one("select last_attempt_at from public.replication_pairs where id = %s", manual)[
        "last_attempt_at"
    ]
    now_job = h.one(
        "with j as (insert into public.jobs (type, site_id, params, scope) values "
        "('replication_sync', %s, %s, %s) returning id), "
        "t as (insert into public.job_tasks (job_id, target_kind, target_id, target_name, seq) "
        "select id, 'replication_pair', %s, 'm', 0 from j) select id from j",
        h.site_id,
        json.dumps({"replication_pair_ids": [manual]}),
        json.dumps({"targets": [{"kind": "replication_pair", "id": manual, "name": "m"}]}),
        manual,
    )["id"]
    _run_then_fail(h, str(now_job), "x")
    assert (
        h.one("select last_attempt_at from public.replication_pairs where id = %s", manual)["last_attempt_at"]
        == mark
    )
