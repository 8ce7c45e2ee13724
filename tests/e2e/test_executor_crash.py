"""Crash matrix and fencing, against the real stack with real executor processes.

Crash matrix: one selftest job per crash point - the safe point before each of its seven
steps (six main steps and the cleanup step) and inside each of them, after its side effect -
all held at their point in executor A at once, then A is killed with SIGKILL. Lease
recovery then requeues a job whose current step is resumable (or that sits between steps)
and pauses the others as executor_lost; executor B finishes the requeued ones, and after an
operator's force_resume it fails the executor_lost ones without re-running their
interrupted step, running the cleanup step. The side-effect counter proves that no
non-resumable step ever ran twice and that cleanup ran after recovery.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.executor_harness import Harness, effects, wait_until

MAIN = ["preflight", "disable_guard", "apply_a", "wait_ready", "apply_b", "verify"]
NON_RESUMABLE = {"apply_a", "apply_b"}
STEPS = [*MAIN, "restore_guard"]
POINTS = [f"{kind}:{step}" for step in STEPS for kind in ("boundary", "inside")]


@pytest.fixture
def harness(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-exec-"))
    h = Harness(stack, tmp)
    try:
        yield h
    finally:
        h.close()
        if not os.environ.get("RACKPILOT_TEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def test_crash_matrix_kill9_at_every_boundary_and_inside_every_step(harness):
    h = harness
    gates = h.selftest_dir / "gates"
    gates.mkdir()
    a = h.spawn("exec-a", max_concurrent_jobs=len(POINTS) + 2)
    a.wait_log("registered")
    jobs: dict[str, str] = {}
    for point in POINTS:
        counter = h.selftest_dir / f"{point.replace(':', '_')}.counter"
        jobs[point] = h.create_job(
            {
                "counter_file": counter.name,
                "gate_dir": gates.name,
                "gates": [point],
                "wait_ticks": 3,
                "tick_seconds": 0.02,
            }
        )
    # every job is held exactly at its crash point
    wait_until(lambda: all((gates / f"{jobs[p]}.{p}.at").exists() for p in POINTS), 60, "all crash points")
    a.kill9()

    recovered = {str(r["job_id"]): r["outcome"] for r in h.expire_and_recover(list(jobs.values()))}
    assert set(recovered) == set(jobs.values())
    for point, job_id in jobs.items():
        kind, step = point.split(":")
        lost = kind == "inside" and step in NON_RESUMABLE
        assert recovered[job_id] == ("paused_executor_lost" if lost else "requeued"), point

    b = h.spawn("exec-b", max_concurrent_jobs=len(POINTS) + 2)
    b.wait_log("registered")
    requeued = [j for p, j in jobs.items() if recovered[j] == "requeued"]
    for job_id in requeued:
        h.wait_status(job_id, ("completed",), timeout=60)
    lost = [j for j in jobs.values() if recovered[j] == "paused_executor_lost"]
    for job_id in lost:
        assert h.job(job_id)["status"] == "paused" and h.job(job_id)["pause_reason"] == "executor_lost"
        h.force_resume(job_id, "crash matrix: operator checked the target")
    for job_id in lost:
        job = h.wait_status(job_id, ("failed",), timeout=60)
        assert "not resumable" in job["error"]

    a_pid, b_pid = a.proc.pid, b.proc.pid
    for point, job_id in jobs.items():
        kind, step = point.split(":")
        counter = h.selftest_dir / f"{point.replace(':', '_')}.counter"
        fx = effects(counter)
        applied = [(s, pid) for e, s, _, pid in fx if e == "apply"]
        # invariant 6: no non-resumable step ever ran twice
        for s in NON_RESUMABLE:
            assert sum(1 for x, _ in applied if x == s) <= 1, (point, fx)
        cleanups = [pid for e, _, _, pid in fx if e == "cleanup"]
        assert cleanups and cleanups[-1] == b_pid, (point, fx)  # cleanup ran after recovery, by B
        steps = {r["step_key"]: r for r in h.steps(job_id)}
        if recovered[job_id] == "requeued":
            assert all(steps[s]["status"] == "completed" for s in STEPS), point
            # both non-resumable steps ran exactly once in all
            assert sorted(x for x, _ in applied) == ["apply_a", "apply_b"], (point, fx)
            if kind == "inside" and step != "restore_guard":
                # the interrupted resumable step ran again, in B
                assert [pid for e, s, _, pid in fx if s == step] == [a_pid, b_pid], (point, fx)
        else:
            assert steps[step]["status"] == "failed" and steps[step]["attempts"] == 1, point
            assert [pid for x, pid in applied if x == step] == [a_pid], (point, fx)
            assert "verify" not in steps or steps["verify"]["status"] != "completed"
        assert counter.with_name(counter.name + ".state").read_text() == "guard=on\n", point
    assert b.terminate() == 0


@pytest.mark.parametrize("route", ["realtime", "refused_write"])
def test_fenced_executor_stops_and_writes_nothing(harness, route):
    """A holds a job mid-step when its lease is forced to expire and B takes the job over.

    A is frozen (SIGSTOP, like a long VM or GC pause) while its lease expires and B
    finishes the job, then thawed.
    ``realtime``: A learns of the new epoch from the jobs change feed.
    ``refused_write``: A has no Realtime and renews rarely, so it learns only when its next
    write is refused for a stale epoch. Either way it stops and writes nothing more.
    """
    h = harness
    gates = h.selftest_dir / "gates"
    gates.mkdir()
    counter = h.selftest_dir / "fence.counter"
    a = h.spawn(
        "fence-a",
        heartbeat_interval=9,
        recovery_interval=60,
        max_concurrent_jobs=1,
        realtime_enabled=str(route == "realtime").lower(),
    )
    a.wait_log("registered")
    job_id = h.create_job(
        {
            "counter_file": counter.name,
            "gate_dir": gates.name,
            "gates": ["inside:wait_ready"],
            "wait_ticks": 3,
            "tick_seconds": 0.05,
        }
    )
    wait_until(lambda: (gates / f"{job_id}.inside:wait_ready.at").exists(), 30, "A inside wait_ready")
    epoch_a = h.job(job_id)["lease_epoch"]
    a.proc.send_signal(signal.SIGSTOP)
    # the lease is forced to expire while A still holds the job: recovery requeues it
    assert [r["outcome"] for r in h.expire_and_recover([job_id])] == ["requeued"]
    b = h.spawn("fence-b")
    b.wait_log("registered")
    done = h.wait_status(job_id, ("completed",), timeout=30)
    assert done["lease_epoch"] > epoch_a
    snapshot = (h.job(job_id), h.steps(job_id))

    # A wakes up inside its step and tries to go on
    (gates / f"{job_id}.inside:wait_ready.go").write_text("")
    a.proc.send_signal(signal.SIGCONT)
    a.wait_log("job fenced", timeout=20)
    reason = {"realtime": "lease epoch is now", "refused_write": "stale_epoch"}[route]
    assert reason in a.log_text()
    time.sleep(1.5)
    assert (h.job(job_id), h.steps(job_id)) == snapshot  # A wrote nothing
    fx = effects(counter)
    a_effects = [(e, s) for e, s, _, pid in fx if pid == a.proc.pid]
    assert ("apply", "apply_b") not in a_effects and ("cleanup", "restore_guard") not in a_effects
    assert [s for e, s, _, _ in fx if e == "apply"] == ["apply_a", "apply_b"]
    assert a.terminate() == 0 and b.terminate() == 0


def test_cancel_from_executor_lost_runs_the_cleanup_first(harness):
    """Invariant 2 on the cancel-from-executor_lost path (issue 14): A is killed inside the
    non-resumable apply_a, after disable_guard turned the guard off (HA/DRS relaxed, in a
    rolling update). The job pauses as executor_lost; an operator cancels it. SQL refuses it
    the terminal state while it owes its cleanup and hands it back; B runs the cleanup only
    (apply_a is not run again) and finishes it as cancelled, with the guard on again."""
    h = harness
    gates = h.selftest_dir / "gates"
    gates.mkdir()
    counter = h.selftest_dir / "lost-cancel.counter"
    a = h.spawn("lost-a")
    a.wait_log("registered")
    job_id = h.create_job({"counter_file": counter.name, "gate_dir": gates.name, "gates": ["inside:apply_a"]})
    wait_until(lambda: (gates / f"{job_id}.inside:apply_a.at").exists(), 30, "A inside apply_a")
    assert h.job(job_id)["cleanup_owed_since"] is not None  # owed since disable_guard
    with pytest.raises(Exception, match="cleanup_owed"):  # finish_job's update, without the cleanup
        h.query("update public.jobs set status = 'failed', error = 'x' where id = %s", job_id)
    a.kill9()
    assert [r["outcome"] for r in h.expire_and_recover([job_id])] == ["paused_executor_lost"]

    # no terminal state while the cleanup is owed: a cancel hands the job back instead
    h.query("update public.jobs set status = 'cancelled' where id = %s", job_id)
    job = h.job(job_id)
    assert job["status"] == "pending" and job["cancel_requested_at"] is not None, job
    assert counter.with_name(counter.name + ".state").read_text() == "guard=off\n"

    b = h.spawn("lost-b")
    b.wait_log("registered")
    job = h.wait_status(job_id, ("cancelled", "failed", "paused"), timeout=30)
    assert job["status"] == "cancelled" and job["cleanup_owed_since"] is None, job
    assert counter.with_name(counter.name + ".state").read_text() == "guard=on\n"
    fx = effects(counter)
    assert [s for e, s, _, _ in fx if e == "apply"] == ["apply_a"]  # never again
    assert [pid for e, _, _, pid in fx if e == "cleanup"] == [b.proc.pid]
    steps = {r["step_key"]: r for r in h.steps(job_id)}
    assert steps["restore_guard"]["status"] == "completed" and steps["apply_a"]["status"] == "skipped"
    assert b.terminate() == 0


def test_abandon_cleanup_is_the_only_other_way_out(harness):
    h = harness
    gates = h.selftest_dir / "gates"
    gates.mkdir()
    counter = h.selftest_dir / "abandon.counter"
    a = h.spawn("abandon-a")
    a.wait_log("registered")
    job_id = h.create_job({"counter_file": counter.name, "gate_dir": gates.name, "gates": ["inside:apply_a"]})
    wait_until(lambda: (gates / f"{job_id}.inside:apply_a.at").exists(), 30, "A inside apply_a")
    a.kill9()
    h.expire_and_recover([job_id])
    with pytest.raises(Exception, match="written by set_cleanup_owed"):
        h.query("update public.jobs set cleanup_owed_since = null where id = %s", job_id)
    with pytest.raises(Exception, match="reason are required"):
        h.query("select public.abandon_cleanup(%s, ' ')", job_id)
    h.query("select public.abandon_cleanup(%s, 'vCenter decommissioned; HA restored by hand')", job_id)
    job = h.job(job_id)
    assert job["status"] == "cancelled" and job["details"]["cleanup_abandoned"]["reason"].startswith(
        "vCenter"
    )
    audit = h.query(
        "select note from public.audit_log where table_name = 'jobs' and row_id = %s and note like 'abandon_cleanup:%%'",
        job_id,
    )
    assert audit, "abandon_cleanup is audited with its reason"
