"""Rollout safety end to end (issue 14): every per-host health gate failing one at a time, vSAN
clusters, the safety policy deciding which gates block, the failure budget as a percentage
and maintenance mode retried. Real executor processes on the real local stack drive the
linked lab (simulated iDRACs with hardware health faults, the vCenter simulator with vSAN
modelled in its lab layer: devstack/lab/vcsim/vsan.go says what is simulated).

The executor runs with a copy of policies/safety.yaml that allows 4 hosts out per cluster
(the shipped policy allows 1), so "one host at a time on vSAN" is the vSAN rule's doing; its
gates are the shipped ones (all block) until the policy test restarts it with psu: warn.

Scenario matrix (each ends with the safety invariants, DESIGN §5):

==================  ==============================================  ============================
scenario            what happens                                    expected outcome
==================  ==============================================  ============================
gate: reachability  hw-esx02's iDRAC does not answer                 failed in preflight naming
gate: psu           PS2 failed, redundancy lost                      "hw-esx02: <gate> (";
gate: thermal       inlet at 48 °C (critical 47)                     nothing touched, the gates
gate: storage       virtual disk degraded                            stored in the pre-flight
gate: memory        DIMM A1 Critical                                 report (verdict, readiness)
gate: events        a Critical SEL entry yesterday
gate: vcenter       hw-esx02 already in maintenance mode
gate: vsan          vSAN health red on a vSAN cluster                failed in preflight naming
                                                                     "vsr: vsan ("
vSAN one at a time  4-host vSAN cluster, max_parallel_hosts 4,       completed; the lab saw at
                    policy 4, N+1 bound > 1; each host's exit        most 1 host out, every entry
                    starts a resync                                  ensureObjectAccessibility
                                                                     with no resync outstanding
vSAN refusal (lab)  one vsf host out, objects resyncing: a second     VsanFault, host stays in;
                    host enters with ensureObjectAccessibility       goes in once resync is done
vSAN not idle       the resync after host 1 outlasts                 host 1 done, rollout stopped
                    vsan_resync_timeout_s                            naming vsan, rest skipped,
                                                                     HA/DRS restored
budget 25 %         1 of 4 hosts fails its firmware job              1 failed, 3 completed
maintenance retry   each host needs 3+ tries to evacuate             completed, the tries recorded
cancel from         killed while the first host's firmware           cancelled after the cleanup
executor_lost       downloads to be staged, on its last attempt;     only: HA/DRS as recorded,
                    paused executor_lost; cancelled                  nothing rebooted, nothing
                                                                     left in the iDRAC queue
killed while        killed while vCenter evacuates the first host     cancelled after the cleanup
evacuating;         (its EnterMaintenanceMode task running);         only, which cancelled that
cancelled           paused executor_lost; cancelled                  task: it ended, the host is
                                                                     out of maintenance
staged ahead,       the next host staged while the first is          cancelled / failed; the
then cancel /       updated; a cancel, or (budget 0) the first       staged firmware removed, the
a failure           host's versions not as promised                  host never rebooted or out
N+1 bound           5 hosts, max_parallel_hosts 4, policy 4; the      completed two hosts at a
                    VMs plus HA's reserve allow 2 out                time (peak 2); the bound
                                                                     explained in the report
policy decides      PS2 failed: refused under psu: block, then       refused, then completed with
                    (executor restarted) psu: warn                   the psu warning reported
==================  ==============================================  ============================
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.lab.datacentre import DataCentre
from devstack.lab.idrac.health import add_event, clear_health, set_health
from executor.targets.vsphere import TaskFailed
from tests.e2e import test_rolling_update as ru
from tests.e2e.executor_harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024
CLUSTERS = [
    ru._cluster("hw", 2, 1),
    ru._cluster("vs", 4, 2, vsan={"enabled": True, "resync_after_exit_ms": 1500, "resync_objects": 12}),
    ru._cluster("vsr", 3, 1, vsan={"enabled": True, "resync_after_exit_ms": 20000, "resync_objects": 30}),
    # the lab's vSAN refusal itself, driven by hand (no job); 4 hosts, so that HA admission
    # control lets a second host go once the resync is done
    ru._cluster("vsf", 4, 1, vsan={"enabled": True}),
    ru._cluster("pct", 4, 1),
    # 2 x 512 GiB VMs per host at 2 ms/GiB: each vMotion (~1.03 s) outlasts the 1 s the lab
    # gives a 60 s budget here, so every try moves one VM and times out; the try after the
    # last VM left enters (the first host on its third try, later ones hold moved VMs too)
    ru._cluster("rty", 3, 2, vm_memory_mb=512 * GIB, host_memory_mb=3 * GIB * GIB),
    ru._cluster("pol", 2, 1),
    ru._cluster("lost", 3, 1),
    # 16 TiB VMs at 2 ms/GiB: each vMotion takes ~33 s, so a host's evacuation is still under
    # way when its executor is killed and when the next one's cleanup runs
    ru._cluster("evac", 3, 2, vm_memory_mb=16 * GIB * GIB, host_memory_mb=128 * GIB * GIB),
    # the next host is staged while the current one is updated (stage_ahead, the default)
    ru._cluster("ahead", 3, 1),
    ru._cluster("ahf", 3, 1),
    # 5 x 1 TiB hosts running 10 x 150 GiB of VMs, HA keeping one host free: with the 2 largest
    # out the 2 left that are not HA's reserve hold 2 TiB >= 1.5 TiB; with 3 out, 1 TiB < 1.5
    ru._cluster("npo", 5, 2, vm_memory_mb=150 * GIB, host_memory_mb=GIB * GIB),
]


def policy_file(tmp: Path, name: str, **gates: str) -> Path:
    data = yaml.safe_load((ROOT / "policies" / "safety.yaml").read_text())
    jt = data["job_types"]["rolling_cluster_update"]
    jt["max_hosts_out_per_cluster"] = 4
    jt["gates"].update(gates)
    p = tmp / name
    p.write_text(yaml.safe_dump(data))
    return p


class SafetyWorld(ru.World):
    def __init__(self, stack: Any, tmp: Path):
        self.tmp = tmp
        self.policy = policy_file(tmp, "policy-a.yaml")
        self.dc = DataCentre(
            CLUSTERS, time_scale=ru.LAB_SCALE, timing=ru.TIMING, migrate_ms=5, migrate_ms_per_gb=2
        )
        self.dc.start()
        try:
            self._setup(stack, tmp)
        except BaseException:
            self.close()
            raise

    def spawn(self, name: str) -> Any:
        state = self.tmp / name / "state"
        if hasattr(self, "executor"):
            state.mkdir(parents=True, mode=0o700)
            shutil.copy(self.tmp / "ru-a" / "state" / "executor_key.pem", state / "executor_key.pem")
            (state / "executor_key.pem").chmod(0o600)
        ex = self.h.spawn(
            name,
            target_time_scale=ru.LAB_SCALE / 4,
            max_concurrent_jobs=4,
            realtime_enabled="false",
            poll_interval=0.3,
            bmc_settle_interval_s=10,
            policy_path=str(self.policy),
        )
        ex.wait_log("registered", timeout=30)
        return ex

    def report(self, job_id: str) -> dict[str, Any]:
        art = self.h.query(
            "select content from public.artifacts where job_id = %s and kind = 'preflight_report'", job_id
        )
        return json.loads(bytes(art[0]["content"]))


@pytest.fixture(scope="module")
def world(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-rs-"))
    w = SafetyWorld(stack, tmp)
    try:
        yield w
    finally:
        w.close()
        if not os.environ.get("RACKPILOT_TEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def untouched(w: SafetyWorld, cluster: str) -> bool:
    return all(w.dc.bmc(h).boot_count == 0 and not w.dc.bmc(h).flashes for h in w.hosts_of(cluster))


def lab_maintenance(w: SafetyWorld, host: str, on: bool) -> None:
    w.dc.vcenter._control("POST", f"/hosts/{host}/maintenance", {"enabled": "true" if on else "false"})


HW_CASES = [
    ("reachability", lambda w, b: b.inject(unreachable=True), "iDRAC unreachable"),
    ("psu", lambda w, b: set_health(b, psu_failed=1), "PSU Redundancy lost"),
    ("thermal", lambda w, b: set_health(b, inlet_c=48.0), "48.0 °C (critical at 47 °C)"),
    ("storage", lambda w, b: set_health(b, vdisk="Degraded"), "Degraded"),
    ("memory", lambda w, b: set_health(b, memory="Critical"), "DIMM.Socket.A1 Critical"),
    (
        "events",
        lambda w, b: add_event(
            b, "Critical", "CPU 2 machine check error detected.", days_ago=1, message_id="CPU0001"
        ),
        "CPU0001",
    ),
    ("vcenter", lambda w, b: lab_maintenance(w, "hw-esx02", True), "already in maintenance"),
]


@pytest.mark.parametrize(("gate", "fault", "words"), HW_CASES, ids=[c[0] for c in HW_CASES])
def test_each_gate_failing_refuses_naming_it(world, gate, fault, words):
    w = world
    before = w.settings("hw")
    bmc = w.dc.bmc("hw-esx02")
    fault(w, bmc)
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("hw")
            job = ru.finish(w, job_id)
    finally:
        bmc.clear_faults()
        clear_health(bmc)
        if gate == "vcenter":
            lab_maintenance(w, "hw-esx02", False)
    assert job["status"] == "failed" and f"hw-esx02: {gate} (" in job["error"] and words in job["error"], job
    assert [r["step_key"] for r in w.h.steps(job_id)][:1] == ["preflight"] and untouched(w, "hw")
    rep = w.report(job_id)
    mine = {g["name"]: g for g in rep["gates"]["hw-esx02"]["gates"]}
    assert rep["gates"]["hw-esx02"]["verdict"] == "block" and mine[gate]["status"] == "block"
    assert rep["gates"]["hw-esx02"]["readiness"] == 0 and rep["gates"]["hw-esx01"]["readiness"] == 100
    assert rep["gate_policy"][gate] == "block"
    w.check(job_id, "hw", before, s)


def test_vsan_health_red_refuses_naming_the_vsan_gate(world):
    w = world
    before = w.settings("vsr")
    w.dc.vcenter.set_vsan("vsr", health="red", test="vSAN object health")
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("vsr")
            job = ru.finish(w, job_id)
    finally:
        w.dc.vcenter.set_vsan("vsr", health="green")
    assert (
        job["status"] == "failed"
        and "vsr: vsan (vSAN health red (Data: vSAN object health red))" in job["error"]
    )
    assert untouched(w, "vsr") and w.report(job_id)["vsan"]["status"] == "block"
    w.check(job_id, "vsr", before, s)


def test_vsan_cluster_goes_one_host_at_a_time_with_resync_idle_before_each(world):
    w = world
    before = w.settings("vs")
    with ru.sampler(w) as s:
        job_id = w.rolling("vs", max_parallel_hosts=4)
        job = ru.finish(w, job_id, timeout=240)
    assert job["status"] == "completed", job["error"]
    rep = w.report(job_id)
    # without vSAN the policy (4) and the N+1 bound would let more than one host go at once
    assert rep["capacity"]["bound"] > 1 and rep["capacity"]["hosts_at_once"] == 1
    assert rep["vsan"]["status"] == "ok" and rep["vsan"]["object_action"] == "ensureObjectAccessibility"
    lab = w.dc.vcenter.vsan("vs")
    assert lab["max_hosts_out"] == 1 and s.peaks.get("vs", 0) == 1
    assert [e["host"] for e in lab["entries"]] == w.hosts_of("vs")
    assert all(e["object_action"] == "ensureObjectAccessibility" for e in lab["entries"])
    assert all(e["resync_objects"] == 0 and e["hosts_out"] == 1 for e in lab["entries"]), lab["entries"]
    # the lab refuses what vSAN refuses (test_the_lab_vsan_refuses_...): the rollout provoked none
    assert not [e for e in lab["entries"] if e["refused"]], lab["entries"]
    tasks = w.tasks(job_id)
    assert all(t["status"] == "completed" for t in tasks.values())
    # every host after the first waited for the resync its predecessor's exit started
    waits = [tasks[h]["details"]["vsan_blocked_polls"] for h in w.hosts_of("vs")]
    assert waits[0] == 0 and all(x > 0 for x in waits[1:]), waits
    w.check(job_id, "vs", before, s)


def test_the_n_plus_one_bound_limits_parallelism_to_its_computed_value(world):
    """max_parallel_hosts 4 and a policy of 4, but the N+1 bound is 2: the rollout goes two
    hosts at a time (never three), and the pre-flight explains the bound."""
    w = world
    before = w.settings("npo")
    # the database's policy row (what create-job and the invariant checks read) as the
    # executor's copy of safety.yaml here: 4 hosts out per cluster
    sql = "update public.safety_policies set max_hosts_out_per_cluster = %s where job_type = 'rolling_cluster_update'"
    [shipped] = w.h.query(
        "select max_hosts_out_per_cluster from public.safety_policies where job_type = 'rolling_cluster_update'"
    )
    w.h.query(sql, 4)
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("npo", max_parallel_hosts=4)
            job = ru.finish(w, job_id, timeout=240)
        assert job["status"] == "completed", job["error"]
        w.check(job_id, "npo", before, s)
    finally:
        w.h.query(sql, shipped["max_hosts_out_per_cluster"])
    cap = w.report(job_id)["capacity"]
    assert cap["bound"] == 2 and cap["hosts_at_once"] == 2, cap
    assert "at most 2 host(s) out at once" in json.dumps(cap), cap
    assert s.peaks.get("npo", 0) == 2, s.peaks  # the bound reached, never passed
    tasks = w.tasks(job_id)
    assert all(t["status"] == "completed" for t in tasks.values()) and len(tasks) == 5


def test_the_lab_vsan_refuses_a_second_host_out_while_objects_resync(world):
    """The refusal the one-at-a-time test relies on the rollout never provoking: with one host
    of a vSAN cluster out and objects still resyncing, a second host's maintenance entry with
    ensureObjectAccessibility fails with a VsanFault (some objects would have no copy left)
    and the host stays in service; the same entry goes through once the resync is done."""
    w = world
    out, second = w.hosts_of("vsf")[:2]
    moid = w.dc.vcenter.lab_host(second)["moid"]
    lab_maintenance(w, out, True)
    try:
        w.dc.vcenter.set_vsan("vsf", resync_objects=7, resync_bytes=7 << 28)  # stays until changed
        with w.vsphere() as c:
            with pytest.raises(TaskFailed) as refused:
                c.enter_maintenance(moid, 60, vsan_mode="ensureObjectAccessibility")
            assert refused.value.fault == "VsanFault"
            assert not w.dc.vcenter.lab_host(second)["in_maintenance"]
            lab = w.dc.vcenter.vsan("vsf")
            assert lab["entries"][-1] == {
                "host": second,
                "object_action": "ensureObjectAccessibility",
                "resync_objects": 7,
                "hosts_out": 2,
                "health": "green",
                "refused": True,
            }
            assert lab["max_hosts_out"] < 2  # a refused entry took nobody out
            w.dc.vcenter.set_vsan("vsf", resync_objects=0)
            c.enter_maintenance(moid, 60, vsan_mode="ensureObjectAccessibility")
            assert w.dc.vcenter.lab_host(second)["in_maintenance"]
            assert w.dc.vcenter.vsan("vsf")["entries"][-1]["refused"] is False
            c.exit_maintenance(moid)
    finally:
        lab_maintenance(w, out, False)
    assert not [h for h in w.dc.vcenter.lab_hosts() if h["cluster"] == "vsf" and h["in_maintenance"]]


def test_vsan_resync_not_idle_stops_the_rollout_naming_the_gate(world):
    w = world
    before = w.settings("vsr")
    with ru.sampler(w) as s:
        job_id = w.rolling("vsr", vsan_resync_timeout_s=60)
        job = ru.finish(w, job_id, timeout=180)
    assert job["status"] == "failed" and "gate vsan blocks before vsr-esx02" in job["error"], job
    assert "vSAN resync in progress" in job["error"]
    tasks = w.tasks(job_id)
    assert [tasks[h]["status"] for h in w.hosts_of("vsr")] == ["completed", "skipped", "skipped"]
    assert "rollout stopped: vsan" in tasks["vsr-esx03"]["details"]["reason"]
    assert not w.dc.bmc("vsr-esx02").flashes and w.dc.vcenter.vsan("vsr")["max_hosts_out"] == 1
    w.check(job_id, "vsr", before, s)


def test_failure_budget_as_a_percentage(world):
    w = world
    before = w.settings("pct")
    w.dc.bmc("pct-esx02").inject(job_outcome="fail")
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("pct", failure_budget="25%")
            job = ru.finish(w, job_id, timeout=240)
    finally:
        w.dc.bmc("pct-esx02").clear_faults()
    tasks = w.tasks(job_id)
    # 25 % of 4 hosts: one failure is tolerated, the rollout goes on to the end
    assert [tasks[h]["status"] for h in w.hosts_of("pct")] == [
        "completed",
        "failed",
        "completed",
        "completed",
    ]
    assert job["status"] in ("completed", "failed") and "failure budget" not in (job["error"] or "")
    w.check(job_id, "pct", before, s)


def test_maintenance_mode_entry_is_retried(world):
    w = world
    before = w.settings("rty")
    with ru.sampler(w) as s:
        job_id = w.rolling("rty", vmotion_timeout_s=60, maintenance_retries=10, maintenance_retry_delay_s=30)
        job = ru.finish(w, job_id, timeout=240)
    assert job["status"] == "completed", job["error"]
    tasks = w.tasks(job_id)
    for h in w.hosts_of("rty"):
        d = tasks[h]["details"]
        # one VM moves per try (each vMotion outlasts the evacuation budget), so a host with
        # n VMs on it enters on try n + 1; every failed try is on the task in vCenter's words
        assert (
            3 <= d["maintenance_attempts"] <= 11
            and len(d["maintenance_errors"]) == d["maintenance_attempts"] - 1
        )
        assert all("did not enter maintenance" in e for e in d["maintenance_errors"]), d
    w.check(job_id, "rty", before, s)


def test_cancel_from_executor_lost_runs_the_cleanup_and_restores_ha_drs(world):
    """Killed on its last attempt while the first host's firmware downloads to be staged (the
    lab's download made slow there, so the kill lands before any reboot): recovery pauses the
    job as executor_lost; the operator cancels it; SQL hands it back because it owes its
    cleanup, and the next executor runs the cleanup only: HA/DRS as recorded, no host out,
    and nothing left in the iDRAC's queue to be staged and applied at some later reboot."""
    w = world
    before = w.settings("lost")
    bmc = w.dc.bmc("lost-esx01")
    timing = bmc.timing
    bmc.timing = dataclasses.replace(timing, fw_download=4000.0)  # 10 s here
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("lost")
            wait_until(
                lambda: (t := w.tasks(job_id).get("lost-esx01")) and t["details"].get("phase") == "stage",
                90,
                "lost-esx01 staging",
            )
            wait_until(lambda: any(not j.finished for j in bmc.jobs.values()), 30, "a download under way")
            assert w.settings("lost") != before  # HA admission control lifted while the job runs
            w.executor.kill9()
            w.h.query("update public.jobs set attempts = 3 where id = %s", job_id)  # its last attempt
            assert [r["outcome"] for r in w.h.expire_and_recover([job_id])] == ["paused_executor_lost"]
            w.h.query("update public.jobs set status = 'cancelled' where id = %s", job_id)
            job = w.h.job(job_id)
            assert job["status"] == "pending" and job["cancel_requested_at"] is not None, job
            w.executor = w.spawn("ru-lost")
            job = ru.finish(w, job_id)
    finally:
        bmc.timing = timing
    assert job["status"] == "cancelled" and job["cleanup_owed_since"] is None, job
    steps = {r["step_key"]: r for r in w.h.steps(job_id)}
    assert steps["cleanup"]["status"] == "completed"
    assert (steps["rollout"]["details"] or {}).get("attempt", 1) == 1  # the rollout was not run again
    assert w.settings("lost") == before and not w.dc.vcenter.lab_host("lost-esx01")["in_maintenance"]
    assert all(w.dc.bmc(h).boot_count == 0 for h in w.hosts_of("lost"))
    # firmware staged there would apply at the next reboot, planned or not: none is left
    assert not [j for j in bmc.jobs.values() if not j.finished], (bmc.jobs, w.tasks(job_id))
    assert w.tasks(job_id)["lost-esx01"]["details"]["unstaged"] is True
    w.check(job_id, "lost", before, s)


def test_cancel_while_vcenter_evacuates_cancels_the_evacuation_before_bringing_back(world):
    """Killed while vCenter is still evacuating the first host (its EnterMaintenanceMode task
    running, the task's id already on the job's task), then cancelled from executor_lost: the
    cleanup cancels that task and waits for it to end before it takes the host out of
    maintenance. Without that the host was "brought back" while not yet in maintenance, and
    the evacuation then finished and left it in maintenance after the job had ended."""
    w = world
    before = w.settings("evac")
    host = "evac-esx01"
    moid = w.dc.vcenter.lab_host(host)["moid"]
    with ru.sampler(w) as s:
        job_id = w.rolling("evac", vmotion_timeout_s=14400)  # 144 s for vCenter here
        wait_until(
            lambda: (t := w.tasks(job_id).get(host)) and t["details"].get("maintenance_task"),
            120,
            f"{host}'s evacuation started",
        )
        task_id = w.tasks(job_id)[host]["details"]["maintenance_task"]
        with w.vsphere() as c:
            assert c.maintenance_tasks(moid, [task_id]) == [task_id]  # still evacuating
        w.executor.kill9()
        w.h.query("update public.jobs set attempts = 3 where id = %s", job_id)  # its last attempt
        assert [r["outcome"] for r in w.h.expire_and_recover([job_id])] == ["paused_executor_lost"]
        w.h.query("update public.jobs set status = 'cancelled' where id = %s", job_id)
        w.executor = w.spawn("ru-evac")
        job = ru.finish(w, job_id)
    assert job["status"] == "cancelled" and job["cleanup_owed_since"] is None, job
    steps = {r["step_key"]: r for r in w.h.steps(job_id)}
    assert steps["cleanup"]["status"] == "completed", steps["cleanup"]
    with w.vsphere() as c:
        assert c.maintenance_tasks(moid, [task_id]) == []  # nothing left to put it in later
    assert not w.dc.vcenter.lab_host(host)["in_maintenance"]
    ended = [{"task": task_id, "outcome": "cancelled"}]
    assert steps["cleanup"]["details"]["result"]["maintenance_tasks_ended"] == {host: ended}, steps["cleanup"]
    assert w.tasks(job_id)[host]["details"]["maintenance_task_ended"] == ended
    assert all(w.dc.bmc(h).boot_count == 0 for h in w.hosts_of("evac"))
    w.check(job_id, "evac", before, s)


def test_a_cancel_after_the_next_host_was_staged_ahead_removes_its_firmware(world):
    """The next host is backed up and staged while the current
    one is updated (the current host's reboot made long here, so the next one is staged well
    before it ends). A cancel then reaches the safe point with firmware staged on a host that
    never had its turn: it is removed, the host ends cancelled and was never rebooted or out
    of service, and the host after it was not touched."""
    w = world
    before = w.settings("ahead")
    first, nxt, last = w.hosts_of("ahead")
    bmc = w.dc.bmc(first)
    timing = bmc.timing
    bmc.timing = dataclasses.replace(timing, post=4000.0)  # 10 s here
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("ahead")
            wait_until(
                lambda: (t := w.tasks(job_id).get(nxt)) and t["details"].get("phase") == "staged",
                90,
                f"{nxt} staged ahead of its turn",
            )
            # (the current host is still being updated: its turn began before the staging)
            assert w.tasks(job_id)[first]["details"]["phase"] in ("maintenance", "apply"), w.tasks(job_id)
            assert [j for j in w.dc.bmc(nxt).jobs.values() if j.state == "Scheduled"]  # really staged
            w.h.query("update public.jobs set cancel_requested_at = now() where id = %s", job_id)
            job = ru.finish(w, job_id)
    finally:
        bmc.timing = timing
    assert job["status"] == "cancelled", job
    tasks = w.tasks(job_id)
    assert [tasks[h]["status"] for h in (first, nxt, last)] == ["completed", "cancelled", "cancelled"]
    assert tasks[nxt]["details"]["unstaged"] is True and tasks[nxt]["details"]["phase"] == "cancelled"
    assert not [j for j in w.dc.bmc(nxt).jobs.values() if not j.finished], w.dc.bmc(nxt).jobs
    assert w.dc.bmc(nxt).boot_count == 0  # (staged before the cancel: checked while it waited)
    assert not tasks[nxt]["details"].get("maintenance_at")  # never out of service
    assert not w.dc.bmc(last).flashes and w.dc.bmc(last).boot_count == 0
    assert w.dc.bmc(first).boot_count == 1
    w.check(job_id, "ahead", before, s)


def test_a_failure_after_the_next_host_was_staged_ahead_removes_its_firmware(world):
    """Budget 0, and the current host fails after its reboot (versions not as promised) while
    the next host has firmware staged ahead of its turn: the rollout stops, the staged
    firmware is removed, and that host ends skipped, never rebooted or out of service."""
    w = world
    before = w.settings("ahf")
    first, nxt, last = w.hosts_of("ahf")
    bmc = w.dc.bmc(first)
    timing = bmc.timing
    bmc.timing = dataclasses.replace(timing, post=4000.0)  # 10 s here: the next host is staged meanwhile
    bmc.inject(wrong_firmware_version=True)
    try:
        with ru.sampler(w) as s:
            job_id = w.rolling("ahf", failure_budget=0)
            wait_until(
                lambda: (t := w.tasks(job_id).get(nxt)) and t["details"].get("phase") == "staged",
                90,
                f"{nxt} staged ahead of its turn",
            )
            assert [j for j in w.dc.bmc(nxt).jobs.values() if j.state == "Scheduled"]  # really staged
            job = ru.finish(w, job_id)
    finally:
        bmc.timing = timing
        bmc.clear_faults()
    assert job["status"] == "failed" and "failure budget is 0" in job["error"], job
    tasks = w.tasks(job_id)
    assert [tasks[h]["status"] for h in (first, nxt, last)] == ["failed", "skipped", "skipped"], tasks
    assert tasks[nxt]["details"]["unstaged"] is True and tasks[nxt]["details"]["phase"] == "skipped"
    assert not [j for j in w.dc.bmc(nxt).jobs.values() if not j.finished], w.dc.bmc(nxt).jobs
    assert w.dc.bmc(nxt).boot_count == 0 and not tasks[nxt]["details"].get("maintenance_at")
    assert not w.dc.bmc(last).flashes and w.dc.bmc(last).boot_count == 0
    w.check(job_id, "ahf", before, s)


def test_zz_the_safety_policy_decides_which_gates_block(world):
    """Same fault, same cluster: refused under the policy's psu: block; after the executor
    restarts with psu: warn, the job goes through and reports the warning."""
    w = world
    before = w.settings("pol")
    bmc = w.dc.bmc("pol-esx02")
    set_health(bmc, psu_failed=1)
    try:
        with ru.sampler(w) as s:
            refused = w.rolling("pol")
            job = ru.finish(w, refused)
        assert job["status"] == "failed" and "pol-esx02: psu (" in job["error"] and untouched(w, "pol")
        w.check(refused, "pol", before, s)
        assert w.executor.terminate() == 0
        w.policy = policy_file(w.tmp, "policy-b.yaml", psu="warn")
        w.executor = w.spawn("ru-b")
        with ru.sampler(w) as s:
            job_id = w.rolling("pol")
            job = ru.finish(w, job_id, timeout=240)
    finally:
        clear_health(bmc)
    assert job["status"] == "completed", job["error"]
    rep = w.report(job_id)
    psu = next(g for g in rep["gates"]["pol-esx02"]["gates"] if g["name"] == "psu")
    assert rep["gate_policy"]["psu"] == "warn" and psu["status"] == "warn"
    assert "warn only: safety policy" in psu["reason"] and rep["gates"]["pol-esx02"]["readiness"] == 90
    wait_until(lambda: all(t["status"] == "completed" for t in w.tasks(job_id).values()), 10, "tasks done")
    w.check(job_id, "pol", before, s)
