"""The server update wizard's pre-flight offers a fix for each VM that would block maintenance
mode, before the job starts, and carries it out (issue 19, wizard step 2): against the real
stack and the real resolve-blockers edge function, as the signed-in operator.

* "leave its host out" removes the host from the job's hosts at once and runs the pre-flight
  again (the created job's params no longer name it);
* "power it off when its host's turn comes" is confirmed in the pre-flight and, when the
  job pauses for that VM, sent through resolve-blockers as the operator's decision (the job
  resumes when it was the last open blocker); a blocker of another VM is left to the operator.

The executor's side (claiming the job, pausing it for blockers) is played by SQL as the
database owner, as in tests/integration/test_console.py; the whole rolling update with a
real executor and the blocker wizard is tests/e2e/test_console_rolling_update.py."""

from __future__ import annotations

import pytest

from console.models.monitor import JobMonitor
from console.models.update_wizard import Step, UpdateWizard
from console.widgets.monitor import JobMonitorView
from console.widgets.update import UpdateWizardView
from tests.integration._functions_support import insert_blocker, q
from tests.integration.console_support import CATALOG, approved_window, claim, make_console_env


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    yield e
    e.close()


def test_preflight_fixes_blocking_vms_before_and_as_the_job_runs(ce):
    f = ce.fleet
    cluster = f.clusters[0]
    hosts = f.hosts[cluster]
    vm_on = {h: v for v, h in f.vms.items() if h in hosts}  # one USB-passthrough VM per host
    approved_window(ce, cluster)
    api = ce.api("operator")
    monitors: list[JobMonitor] = []

    def monitor(jid: str) -> JobMonitorView:
        m = JobMonitor(api, jid)
        m.refresh()
        monitors.append(m)
        return JobMonitorView(m, role="operator")

    wz = UpdateWizard(api)
    wz.load_inventory(f.site_a)
    view = UpdateWizardView(wz, monitor=monitor)
    wz.choose_cluster(cluster, catalog_url=CATALOG)
    view._preflight()
    rep = wz.report
    assert rep is not None and rep.ok and len(rep.vm_blockers) == 3
    # the fix is offered with the VMs by name, none blank
    assert view.vm_pick.value == rep.vm_blockers[0]["vm_id"] and view.vm_pick.label
    assert any(view.vm_pick in getattr(c, "children", ()) for c in view.body.children)

    # leave the third host out: asked first, "No" changes nothing
    third = hosts[2]
    view.vm_pick.value, view.vm_plan.value = vm_on[third], "skip_host"
    view.vm_apply.click()
    assert view.vm_confirm.layout.display is None and "Leave" in view.vm_confirm_text.value
    view.vm_no.click()
    assert "nothing changed" in view.vm_status.value and wz.options["host_ids"] == []
    view.vm_apply.click()
    view.vm_yes.click()
    assert "is left out of this update" in view.vm_status.value, view.vm_status.value
    assert wz.step == Step.PREFLIGHT and sorted(wz.options["host_ids"]) == sorted(hosts[:2])
    assert {v["host_id"] for v in wz.report.vm_blockers} == set(hosts[:2])
    assert len(wz.report.plan["tasks"]) == 2

    # power off the first host's VM when its turn comes
    first, second = hosts[0], hosts[1]
    view.vm_pick.value, view.vm_plan.value = vm_on[first], "power_off_vm"
    view.vm_apply.click()
    assert "Power off" in view.vm_confirm_text.value
    view.vm_yes.click()
    assert "will be powered off when the update reaches" in view.vm_status.value
    assert wz.vm_plans == {vm_on[first]: "power_off_vm"}

    view.typed.value = wz.cluster["name"]
    view.confirm.click()
    view.create.click()
    assert wz.step == Step.DONE, view.status.value
    jid = str(wz.result["job_id"])
    params = q(ce.conn, "select params from public.jobs where id = %s", jid)[0]["params"]
    assert sorted(params["host_ids"]) == sorted(hosts[:2])  # the left-out host is not in the job
    assert view.plan_status in view.body.children and monitors

    # the executor pauses the job for the first host's VM: the wizard decides it as planned
    claim(ce, jid)
    b1 = insert_blocker(ce.conn, jid, first, vm_on[first])
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'blockers' where id = %s", jid)
    monitors[0].refresh()  # what a Realtime UPDATE of the job does
    assert "power off" in view.plan_status.value and "the job resumed" in view.plan_status.value
    res = q(
        ce.conn,
        "select action::text, resolved_by::text, note from public.blocker_resolutions where blocker_id = %s",
        b1,
    )
    assert [(r["action"], r["resolved_by"]) for r in res] == [("power_off_vm", ce.user_ids["operator"])]
    assert q(ce.conn, "select status::text from public.jobs where id = %s", jid)[0]["status"] == "pending"

    # the second host's VM was not decided in advance: the job waits for the operator
    claim(ce, jid)
    b2 = insert_blocker(ce.conn, jid, second, vm_on[second])
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'blockers' where id = %s", jid)
    view.plan_status.value = ""
    monitors[0].refresh()
    assert view.plan_status.value == ""
    assert q(ce.conn, "select 1 from public.blocker_resolutions where blocker_id = %s", b2) == []
    assert q(ce.conn, "select status::text from public.jobs where id = %s", jid)[0]["status"] == "paused"


def test_preflight_fix_refusals_in_words(ce):
    f = ce.fleet
    cluster = f.clusters[1]
    wz = UpdateWizard(ce.api("operator"))
    wz.choose_cluster(cluster, host_ids=[f.hosts[cluster][0]], catalog_url=CATALOG)
    from console.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="run the pre-flight check first"):
        wz.plan_vm(next(iter(f.vms)), "power_off_vm")
    wz.run_preflight()
    vm = wz.report.vm_blockers[0]
    with pytest.raises(ValidationFailed, match="leaves no host to update"):
        wz.plan_vm(vm["vm_id"], "skip_host")
    with pytest.raises(ValidationFailed, match="unknown choice"):
        wz.plan_vm(vm["vm_id"], "reboot_it")
    other = next(v for v, h in f.vms.items() if h != vm["host_id"])
    with pytest.raises(ValidationFailed, match="not among the pre-flight's blocking VMs"):
        wz.plan_vm(other, "power_off_vm")
    assert wz.vm_plans == {} and wz.options["host_ids"] == [f.hosts[cluster][0]]
