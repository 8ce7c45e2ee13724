"""The executor end to end on the real stack: Realtime pickup, streamed steps, sealed
credentials, notifications to a real SMTP server (aiosmtpd) and a webhook receiver
(pytest-httpserver), control-plane faults, and a scan of every log for the test secret.

Jobs are created with a service-role insert through REST: ``create-job`` validates
operator job types and does not take ``selftest``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from executor.secrets import seal, unb64u
from tests.e2e.executor_harness import Harness, effects, wait_until
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL

SECRET = "Tr0ub4dor&3-e2e-secret"
STEPS = ["preflight", "disable_guard", "apply_a", "wait_ready", "apply_b", "verify", "restore_guard"]
LOGS: list[Path] = []  # every log written in this module, scanned by the last test


@pytest.fixture
def harness(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-exec-"))
    h = Harness(stack, tmp)
    try:
        yield h
    finally:
        h.close()
        for p in h.procs:
            for f in (p.log, p.dir / "stdout.log"):
                if f.exists():
                    keep = Path(tempfile.gettempdir()) / f"rackpilot-exec-log-{p.name}-{os.getpid()}-{f.name}"
                    shutil.copy(f, keep)
                    LOGS.append(keep)
        if not os.environ.get("RACKPILOT_TEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    box.port = port
    try:
        yield box
    finally:
        ctl.stop()


def metrics_after(h: Harness, name: str, since) -> dict:
    """The first metrics report of executor ``name`` whose snapshot was surely taken after
    ``since`` (a database time). Metrics are a periodic heartbeat snapshot, taken just before
    the report is sent, so the first report stored after ``since`` may still hold a snapshot
    from before it; the heartbeat sends one report at a time, so the next report's snapshot
    was taken after that first one was stored."""

    def stored_at():
        return h.one(
            "select metrics_at from public.executors where name = %s and site_id = %s", name, h.site_id
        )["metrics_at"]

    first = wait_until(
        lambda: (t := stored_at()) is not None and t > since and t, 30, f"{name} metrics after {since}"
    )
    wait_until(lambda: stored_at() > first, 30, f"{name}'s next metrics report")
    return h.one("select metrics from public.executors where name = %s and site_id = %s", name, h.site_id)[
        "metrics"
    ]


def test_job_end_to_end_via_realtime_with_credentials_and_notifications(harness, smtp, httpserver):
    h = harness
    httpserver.expect_request("/teams", method="POST").respond_with_data("1", status=200)
    httpserver.expect_request("/broken", method="POST").respond_with_data("nope", status=500)
    events = "{job_started,job_completed,job_slow}"
    h.query(
        "insert into public.notification_settings (site_id, name, channel, target, events) values "
        "(%s, 'teams', 'teams', %s, %s::public.notification_event[]),"
        "(%s, 'mail', 'email', 'ops@example.test', %s::public.notification_event[]),"
        "(%s, 'broken', 'teams', %s, '{job_completed}')",
        h.site_id,
        httpserver.url_for("/teams"),
        events,
        h.site_id,
        events,
        h.site_id,
        httpserver.url_for("/broken"),
    )
    policy = h.tmp / "safety.yaml"
    policy.write_text(
        "job_types:\n  selftest:\n    timeouts: {step: 60}\n"
        "    step_timeouts:\n      wait_ready: {expected: 0.3}\n"
    )
    common = {
        "poll_interval": 30,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "policy_path": str(policy),
        "notify_max_attempts": 2,
    }
    # two executors: either may run the job, and both drain the outbox. They hold one site
    # key (B gets a copy of A's key file), so one sealed envelope serves both.
    a = h.spawn("e2e-a", **common)
    a.wait_log("realtime subscribed")
    (h.tmp / "e2e-b" / "state").mkdir(parents=True, mode=0o700)
    shutil.copy(
        h.tmp / "e2e-a" / "state" / "executor_key.pem", h.tmp / "e2e-b" / "state" / "executor_key.pem"
    )
    b = h.spawn("e2e-b", **common)
    b.wait_log("realtime subscribed")

    # an operator's credential, sealed to the registered key as encrypt-credentials does
    key = h.one(
        "select public_key, key_id from public.executors where site_id = %s and name = 'e2e-a'", h.site_id
    )
    envelope = seal(unb64u(key["public_key"]), {"password": SECRET})
    assert envelope["kid"] == key["key_id"]
    cred_id = h.one(
        INSERT_SEALED_CREDENTIAL,
        h.site_id,
        "idrac-root",
        "idrac",
        "root",
        key["key_id"],
        json.dumps(envelope),
    )["id"]

    counter = h.selftest_dir / "e2e.counter"
    t0 = time.time()
    job_id = h.create_job(
        {"counter_file": counter.name, "credential_id": str(cred_id), "wait_ticks": 20, "tick_seconds": 0.05},
        credential_set_ids=[str(cred_id)],
    )
    job = h.wait_status(job_id, ("completed", "failed"), timeout=20)
    assert job["status"] == "completed", job["error"]
    # picked up through Realtime: the poll fallback would not look for another 30 s
    first = h.one("select min(started_at) as t from public.workflow_executions where job_id = %s", job_id)[
        "t"
    ]
    assert first.timestamp() - t0 < 3.0
    steps = h.steps(job_id)
    assert [s["step_key"] for s in steps] == STEPS
    assert all(s["status"] == "completed" and s["started_at"] <= s["finished_at"] for s in steps)
    assert [s["resumable"] for s in steps] == [True, True, False, True, False, True, True]
    assert steps[-2]["checkpoint"]["applied"] == ["a", "b"]
    assert [e[:2] for e in effects(counter) if e[0] == "apply"] == [
        ("apply", "apply_a"),
        ("apply", "apply_b"),
    ]
    # The executor that ran the steps: only it logs "step completed" for the job (the other
    # may log the job id too, when its notifier drains the job's notifications).
    runners = [
        p
        for p in (a, b)
        if any('"step completed"' in line and job_id in line for line in p.log_text().splitlines())
    ]
    assert len(runners) == 1, [p.name for p in runners]
    runner = runners[0]
    assert "opened credential for root with password ***" in runner.log_text()

    # notifications: started, slow, completed - once each, to Teams and by mail
    def teams_events():
        return [
            json.loads(req.get_data())["attachments"][0]["content"]["body"][0]["text"]
            for req, _ in httpserver.log
            if req.path == "/teams"
        ]

    def mails():
        return [m for m in smtp.messages if m["To"] == "ops@example.test" and job_id[:8] in m["Subject"]]

    wait_until(lambda: len(teams_events()) >= 3 and len(mails()) >= 3, 20, "notifications")
    time.sleep(0.5)  # a duplicate send would show up here
    titles = sorted(t.split(":")[0] for t in teams_events())
    assert titles == [
        "[rackpilot] Job completed",
        "[rackpilot] Job running longer than usual",
        "[rackpilot] Job started",
    ], titles
    assert sorted(m["Subject"].split(":")[0] for m in mails()) == titles
    # the broken webhook is retried with backoff, then the message is dead
    wait_until(
        lambda: h.query(
            "select 1 from public.notification_outbox o join public.notification_settings s "
            "on s.id = o.setting_id where s.site_id = %s and s.name = 'broken' "
            "and o.status = 'dead'",
            h.site_id,
        ),
        20,
        "broken webhook dead",
    )
    broken = h.one(
        "select o.attempts, o.last_error from public.notification_outbox o join "
        "public.notification_settings s on s.id = o.setting_id where s.site_id = %s "
        "and s.name = 'broken'",
        h.site_id,
    )
    assert broken["attempts"] == 2 and "HTTP 500" in broken["last_error"]
    assert sum(1 for req, _ in httpserver.log if req.path == "/broken") == 2
    sent = h.query(
        "select o.status, count(*) as n from public.notification_outbox o join "
        "public.notification_settings s on s.id = o.setting_id where o.job_id = %s and s.site_id = %s "
        "group by o.status",
        job_id,
        h.site_id,
    )
    assert {r["status"]: r["n"] for r in sent} == {"sent": 6, "dead": 1}
    metrics = metrics_after(h, runner.name, job["finished_at"])
    assert metrics["steps_completed"] >= 7 and "api_p95_ms" in metrics
    assert a.terminate() == 0 and b.terminate() == 0


def test_control_plane_faults_lose_no_step_report(harness):
    """Postgres restarts mid-job, then the gateway is down for 10 s; the job completes with
    every step report in place and each non-resumable step run once."""
    h = harness
    a = h.spawn("faults-a")
    a.wait_log("registered")
    counter = h.selftest_dir / "faults.counter"
    job_id = h.create_job({"counter_file": counter.name, "step_seconds": 1.0})
    wait_until(
        lambda: any(s["step_key"] == "disable_guard" and s["status"] == "running" for s in h.steps(job_id)),
        20,
        "disable_guard running",
    )
    h.stack.pg.restart()
    wait_until(
        lambda: any(s["step_key"] == "wait_ready" and s["status"] == "running" for s in h.steps(job_id)),
        30,
        "wait_ready running after the Postgres restart",
    )
    h.stack.stop_gateway()
    try:
        time.sleep(10)
    finally:
        h.stack.start_gateway()
    job = h.wait_status(job_id, ("completed", "failed", "paused"), timeout=40)
    assert job["status"] == "completed", job
    steps = h.steps(job_id)
    assert [s["step_key"] for s in steps] == STEPS
    assert all(s["status"] == "completed" and s["finished_at"] is not None for s in steps)
    assert job["lease_epoch"] == 1  # never lost its lease
    assert sorted(s for e, s, _, _ in effects(counter) if e == "apply") == ["apply_a", "apply_b"]
    assert "retrying" in a.log_text()  # the faults really were seen
    wait_until(lambda: a.log_text().count("realtime subscribed") >= 2, 30, "Realtime to be re-subscribed")
    assert a.terminate() == 0


def test_sigterm_hands_the_job_back_at_a_safe_point(harness):
    h = harness
    a = h.spawn("term-a", shutdown_grace=10)
    a.wait_log("registered")
    counter = h.selftest_dir / "term.counter"
    job_id = h.create_job({"counter_file": counter.name, "step_seconds": 0.5})
    wait_until(
        lambda: any(s["step_key"] == "apply_a" and s["status"] == "running" for s in h.steps(job_id)),
        20,
        "apply_a running",
    )
    assert a.terminate() == 0
    job = h.job(job_id)
    assert job["status"] == "pending" and job["claimed_by"] is None  # released, not abandoned
    steps = {s["step_key"]: s["status"] for s in h.steps(job_id)}
    assert steps["apply_a"] == "completed" and "wait_ready" not in steps
    b = h.spawn("term-b")
    assert h.wait_status(job_id, ("completed",), timeout=30)["status"] == "completed"
    assert sorted(s for e, s, _, _ in effects(counter) if e == "apply") == ["apply_a", "apply_b"]
    assert b.terminate() == 0


@pytest.mark.parametrize("request_kind", ["cancel", "pause"])
def test_operator_cancel_and_pause_are_honoured_at_a_safe_point(harness, request_kind):
    h = harness
    gates = h.selftest_dir / "gates"
    gates.mkdir()
    counter = h.selftest_dir / "op.counter"
    a = h.spawn(f"op-{request_kind}")
    a.wait_log("registered")
    job_id = h.create_job({"counter_file": counter.name, "gate_dir": gates.name, "gates": ["inside:apply_a"]})
    wait_until(lambda: (gates / f"{job_id}.inside:apply_a.at").exists(), 20, "apply_a in flight")
    column = {"cancel": "cancel_requested_at", "pause": "pause_requested_at"}[request_kind]
    h.query(f"update public.jobs set {column} = now() where id = %s", job_id)
    time.sleep(0.5)  # the request arrives mid-step: the step is never cut short
    (gates / f"{job_id}.inside:apply_a.go").write_text("")
    job = h.wait_status(job_id, ("cancelled", "paused"), timeout=20)
    steps = {s["step_key"]: s["status"] for s in h.steps(job_id)}
    assert steps["apply_a"] == "completed"
    fx = [(e, s) for e, s, _, _ in effects(counter)]
    assert ("apply", "apply_b") not in fx
    if request_kind == "cancel":
        assert job["status"] == "cancelled"
        assert steps["wait_ready"] == "skipped" and steps["restore_guard"] == "completed"
        assert fx[-1] == ("cleanup", "restore_guard")
    else:
        assert job["status"] == "paused" and job["pause_reason"] == "operator"
        assert "wait_ready" not in steps and ("cleanup", "restore_guard") not in fx
    assert a.terminate() == 0


def test_blockers_pause_the_job_and_it_resumes_after_resolution(harness):
    h = harness
    a = h.spawn("blk-a")
    a.wait_log("registered")
    counter = h.selftest_dir / "blk.counter"
    job_id = h.create_job({"counter_file": counter.name, "block_at": "apply_b"})
    job = h.wait_status(job_id, ("paused",), timeout=20)
    assert job["pause_reason"] == "blockers"
    blockers = h.query(
        "select id, kind, description, status from public.job_blockers where job_id = %s", job_id
    )
    assert [(b["kind"], b["status"]) for b in blockers] == [("other", "open")]
    assert "blocked at apply_b" in blockers[0]["description"]
    steps = {s["step_key"]: s["status"] for s in h.steps(job_id)}
    assert steps["apply_b"] == "pending" and "restore_guard" not in steps  # no cleanup while paused
    # the operator decides, then resumes the job
    h.query(
        "insert into public.blocker_resolutions (blocker_id, action, note) values (%s, 'acknowledge', 'ok')",
        blockers[0]["id"],
    )
    h.query("update public.jobs set status = 'pending' where id = %s", job_id)
    assert h.wait_status(job_id, ("completed",), timeout=20)["status"] == "completed"
    assert sorted(s for e, s, _, _ in effects(counter) if e == "apply") == ["apply_a", "apply_b"]
    assert a.terminate() == 0


def test_zz_no_test_secret_in_any_log(stack):
    """Runs last in this module: every executor log and the stack's own logs."""
    files = [*LOGS, *Path(stack.cfg.log_dir).glob("*.log"), stack.pg.datadir / "server.log"]
    assert any("e2e-a" in f.name for f in LOGS), "the end-to-end test did not run"
    try:
        for f in files:
            if f.exists():
                assert SECRET not in f.read_text(errors="replace"), f
    finally:
        for f in LOGS:
            f.unlink(missing_ok=True)
