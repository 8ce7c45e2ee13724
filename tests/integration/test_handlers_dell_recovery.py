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
    e = DellEnv(stack, bmcs=8, personality=request.param)
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
        # between the iDRAC's answer and that record leaves a job it cannot know of; see
        # docs/rollout-safety.md)
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
