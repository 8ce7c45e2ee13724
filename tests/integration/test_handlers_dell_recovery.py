"""A Dell handler's steps across an executor crash (SIGKILL), on the real stack: a firmware
update killed while it flashes is paused as executor_lost and never flashed again by the
next executor (DESIGN.md invariant 6); one killed while it only reads the server is
requeued and finished by the next executor."""

from __future__ import annotations

import time

import pytest

from tests.e2e.executor_harness import wait_until
from tests.integration._handlers_dell import PERSONALITIES, DellEnv


@pytest.fixture(scope="module", params=PERSONALITIES)
def env(stack, request):
    e = DellEnv(stack, bmcs=16, personality=request.param)
    try:
        yield e
    finally:
        e.close()


def flashes(b) -> int:
    return sum(1 for j in b.jobs.values() if j.job_type == "FirmwareUpdate")


def flash_ids(b) -> set[str]:
    return {j.id for j in b.jobs.values() if j.job_type == "FirmwareUpdate"}


def params(env: DellEnv, sid: str) -> dict:
    return {"server_ids": [sid], "firmware": {"catalog_url": env.files.url("repo/Catalog.xml")}}


def test_killed_mid_flash_pauses_and_is_never_flashed_again(env: DellEnv) -> None:
    b, sid = env.take(env.model, old=True)
    env.fake_backup(sid)
    b.inject(slow_seconds=0.05)  # a slower iDRAC: the kill lands inside the stage step
    job = env.create_job("firmware_update", params(env, sid), maintenance_window_id=env.window())

    def flashing_on_record() -> bool:
        # the iDRAC runs an update job this executor recorded in its saved progress (a kill
        # between the iDRAC's answer and that record: the next test)
        stage = env.steps(job).get("stage", {})
        recorded = (((stage.get("details") or {}).get("progress") or {}).get("servers") or {}).get(sid) or {}
        return (
            stage.get("status") == "running"
            and flashes(b) >= 1
            and any(x.get("job_id") for x in recorded.get("components", []))
        )

    wait_until(flashing_on_record, 60, "the stage step flashing, its first job on record")
    env.proc.kill9()
    started = flash_ids(b)
    assert b.own_sessions() <= 1  # a killed process cannot delete its session; the iDRAC expires it on idle
    assert {r["outcome"] for r in env.h.expire_and_recover([job])} == {"paused_executor_lost"}
    env.respawn("dell-b")
    time.sleep(2)  # the new executor claims nothing: the job waits for an operator
    j = env.h.job(job)
    assert (j["status"], j["pause_reason"]) == ("paused", "executor_lost")
    env.h.force_resume(job, "operator checked the iDRAC job queue by hand")
    failed = env.wait(job)
    assert failed["status"] == "failed" and "not resumable" in failed["error"]
    assert "stage" in failed["error"]
    assert flash_ids(b) <= started  # the interrupted flash never ran twice (no new update job) ...
    drop = env.steps(job)["drop_staged"]  # ... and what it had staged was taken out of the queue
    assert drop["status"] == "completed", drop
    assert sorted(drop["details"]["result"]["dropped"][f"srv{b.index:02d}-{env.h.site_name}"]) == sorted(
        started
    )
    b.tick()
    assert [j.id for j in b.jobs.values() if j.job_type == "FirmwareUpdate"] == []


def test_killed_while_reading_is_requeued_and_finished(env: DellEnv) -> None:
    b, sid = env.take(env.model, old=True)
    env.fake_backup(sid)
    b.inject(slow_seconds=0.3)  # the compliance step reads slowly: the kill lands inside it
    job = env.create_job("firmware_update", params(env, sid), maintenance_window_id=env.window())
    wait_until(
        lambda: env.steps(job).get("compliance", {}).get("status") == "running", 60, "compliance running"
    )
    env.proc.kill9()
    b.clear_faults()
    assert flashes(b) == 0
    assert {r["outcome"] for r in env.h.expire_and_recover([job])} == {"requeued"}
    env.respawn("dell-c")
    done = env.wait(job, timeout=90)
    assert done["status"] == "completed", done["error"]
    steps = env.steps(job)
    assert steps["compliance"]["details"]["attempt"] == 2 and steps["stage"]["details"]["attempt"] == 1
    assert flashes(b) == 4 and b.components[0].version == env.fw["159"][1]
    assert b.own_sessions() <= 1  # only the killed executor's session remains, until the iDRAC expires it


@pytest.mark.parametrize("transfer", ["multipart", "simple_update"])
def test_killed_before_the_update_answer_is_recorded_drops_that_job(env: DellEnv, transfer: str) -> None:
    """Save before you act: the iDRAC queued the second component's update job, its answer
    is held (lab fault hold_update_answer) and the executor is killed before any job id is
    on record. After force-resume the cleanup finds that job by the queue saved before the
    request and deletes it; update jobs queued before that request survive, though they
    name the very components being flashed."""
    b, sid = env.take(env.model, old=True)
    b.multipart_push = transfer == "multipart"
    env.fake_backup(sid)
    planted: list[str] = []
    created: list[str] = []

    def hooked(orig):
        # the lab's own update request, observed: after the first package's job is queued a
        # foreign tool queues update jobs (before the second request saves its snapshot), and
        # the answer to the second request is held
        def go(*args, **kwargs):
            job = orig(*args, **kwargs)
            created.append(job.id)
            if len(created) == 1:
                with b.lock:
                    for c in b.components:
                        j = b._new_job(f"Firmware Update: {c.name}", "FirmwareUpdate")
                        j.state, j.message, j.message_id = (
                            "Scheduled",
                            "Task successfully scheduled.",
                            "JCP001",
                        )
                        planted.append(j.id)
            elif len(created) == 2:
                b.inject(hold_update_answer=120.0)
            return job

        return go

    b.simple_update = hooked(b.simple_update)  # type: ignore[method-assign]
    b.push_update = hooked(b.push_update)  # type: ignore[method-assign]
    job = env.create_job("firmware_update", params(env, sid), maintenance_window_id=env.window())
    wait_until(lambda: len(created) >= 2, 90, "the second update job queued, its answer held")
    env.proc.kill9()
    b.clear_faults()  # the held answer goes out to a dead executor
    stage = env.steps(job)["stage"]
    recorded = (stage["details"].get("progress") or {}).get("servers", {}).get(sid, {})
    comps = recorded.get("components", [])
    # the kill landed in the window: the first job on record, the second not, its snapshot saved
    assert [x.get("job_id") for x in comps if x.get("job_id")] == created[:1]
    in_flight = [x for x in comps if "queued_before" in x]
    assert len(in_flight) == 1 and set(planted) <= set(in_flight[0]["queued_before"])
    assert created[1] not in in_flight[0]["queued_before"]
    assert {r["outcome"] for r in env.h.expire_and_recover([job])} == {"paused_executor_lost"}
    env.respawn(f"dell-d-{transfer}")
    env.h.force_resume(job, "operator checked the iDRAC job queue by hand")
    failed = env.wait(job)
    assert failed["status"] == "failed" and "not resumable" in failed["error"]
    drop = env.steps(job)["drop_staged"]
    assert drop["status"] == "completed", drop
    assert sorted(drop["details"]["result"]["dropped"][f"srv{b.index:02d}-{env.h.site_name}"]) == sorted(
        created
    )
    b.tick()
    assert sorted(flash_ids(b)) == sorted(planted)  # only the jobs queued before survive
    assert all(b.jobs[j].state == "Scheduled" for j in planted)
