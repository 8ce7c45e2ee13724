"""``vm_operation`` end to end: created through the real create-job function by a signed-in
operator (the console's API, as the update wizard's pre-flight does), run by a real executor
process against the simulated vCenter (pyvmomi against the vcsim lab), the VM's inventory row
refreshed, and the pre-flight's VM blockers cleared, from the wizard's model and its buttons. Idempotent runs say they changed
nothing; the lab itself confirms what changed (power state, CD-ROM and floppy connected and
connect-at-power-on both off). create-job refuses a VM that does not exist, a VM of another
site, and viewers, with nothing written."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from console.api import Api
from console.errors import ConsoleError, ValidationFailed
from console.models.monitor import JobMonitor
from console.models.preflight import vm_blockers
from console.models.update_wizard import Step, UpdateWizard
from console.session import ConsoleConfig, sign_in
from console.widgets.monitor import JobMonitorView
from console.widgets.update import UpdateWizardView
from devstack.cli import add_user
from devstack.lab.datacentre import DataCentre
from executor.targets.endpoint import Endpoint
from executor.targets.vsphere import VSphereClient, VSphereTimeouts
from tests.e2e.executor_harness import Harness, wait_until

PASSWORD = "vm-operation-pw-1"
CLUSTER = {
    "name": "vo",
    "hosts": 2,
    "vms_per_host": 1,
    "host_memory_mb": 262144,
    "vm_memory_mb": 2048,
    "vms": [
        {"name": "vo-media", "host": 0, "devices": ["cdrom_host_device", "floppy_connected"]},
        {"name": "vo-iso", "host": 1, "devices": ["cdrom_local_iso"]},
        {"name": "vo-usb", "host": 1, "devices": ["usb_passthrough"]},
        {"name": "vo-pci", "host": 0, "devices": ["pci_passthrough"]},
        {"name": "vo-ft", "host": 1, "devices": ["ft"]},  # left blocking: the viewer's check
        {"name": "vo-gpu", "host": 0, "devices": ["vgpu"]},
        {"name": "vo-notools", "host": 1, "devices": ["vgpu"], "tools": False},  # VMware Tools not running
    ],
}
FAST = VSphereTimeouts(connect=10, task=20, stall=20, host_reconnect=30, poll=0.05)
JOB_TIMEOUT_S = 90  # one VM operation and a re-read of the small lab, on a loaded 2-core machine (s)


class World:
    def __init__(self, stack: Any, tmp: Path) -> None:
        self.dc = DataCentre([CLUSTER], time_scale=400, outdated=False)
        self.h: Harness | None = None
        self.sessions: list[Any] = []
        self.dc.start()
        try:
            self.h = h = Harness(stack, tmp)
            ex = h.spawn("vmop-a", target_time_scale=100, realtime_enabled="false", poll_interval=0.3)
            ex.wait_log("registered", timeout=30)
            key = h.one("select public_key, key_id from public.executors where site_id = %s", h.site_id)
            self.reg = self.dc.register(h.query, h.site_id, key["public_key"], key["key_id"])
            sync = (
                h.client.table("jobs")
                .insert(
                    {
                        "type": "vcenter_sync",
                        "site_id": h.site_id,
                        "params": {"vcenter_id": str(self.reg["vcenter_id"])},
                        "credential_set_ids": [str(c) for c in self.reg["credential_set_ids"]],
                    }
                )
                .execute()
                .data[0]["id"]
            )
            job = h.wait_status(sync, ("completed", "failed"), timeout=JOB_TIMEOUT_S)
            assert job["status"] == "completed", job["error"]
            env = stack.env()
            config = ConsoleConfig(env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"])
            self.api: dict[str, Api] = {}
            for role in ("operator", "viewer"):
                email = f"{role}-{uuid.uuid4().hex[:8]}@vm-operation.test"
                add_user(stack, email, role, PASSWORD)
                session = sign_in(config, email, PASSWORD)
                self.sessions.append(session)
                self.api[role] = Api(session)
        except BaseException:
            self.close()
            raise

    def vm(self, name: str) -> dict[str, Any]:
        assert self.h is not None
        return self.h.one(
            "select m.* from public.vms m where m.vcenter_id = %s and m.name = %s",
            self.reg["vcenter_id"],
            name,
        )

    def hosts(self) -> list[dict[str, Any]]:
        assert self.h is not None
        return self.h.query(
            "select id::text, name from public.esxi_hosts where vcenter_id = %s order by name",
            self.reg["vcenter_id"],
        )

    def lab_devices(self, moref: str) -> dict[str, tuple[bool, bool]]:
        """What the simulated vCenter holds: (connected, connect at power-on) per CD-ROM/floppy."""
        lab = self.dc.vcenter
        assert lab is not None
        ep = Endpoint(
            url=f"https://{lab.host}:{lab.port}",
            username=lab.username,
            password=lab.password,
            ca_bundle=str(lab.ca_file),
        )
        with VSphereClient(ep, FAST) as c:
            vm = vim.VirtualMachine(moref, c._stub())
            return {
                d.deviceInfo.label: (bool(d.connectable.connected), bool(d.connectable.startConnected))
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualCdrom | vim.vm.device.VirtualFloppy)
            }

    def lab_power(self, moref: str) -> str:
        lab = self.dc.vcenter
        assert lab is not None
        ep = Endpoint(
            url=f"https://{lab.host}:{lab.port}",
            username=lab.username,
            password=lab.password,
            ca_bundle=str(lab.ca_file),
        )
        with VSphereClient(ep, FAST) as c:
            return c.vm_power_state(moref)

    def run(self, vm_id: str, action: str) -> dict[str, Any]:
        """Create the job as the operator through create-job, wait for its end; its job row,
        its step results and its one task."""
        assert self.h is not None
        res = self.api["operator"].create_job("vm_operation", {"vm_ids": [vm_id], "action": action})
        jid = str(res["job_id"])
        job = self.h.wait_status(jid, ("completed", "failed", "cancelled"), timeout=JOB_TIMEOUT_S)
        steps = {s["step_key"]: s["details"].get("result") for s in self.h.steps(jid)}
        tasks = self.h.query("select * from public.job_tasks where job_id = %s", jid)
        return {"job": job, "steps": steps, "tasks": tasks}

    def close(self) -> None:
        for s in self.sessions:
            s.sign_out()
        if self.h is not None:
            self.h.close()
        self.dc.stop()


@pytest.fixture(scope="module")
def world(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-vmop-"))
    w = World(stack, tmp)
    try:
        yield w
    finally:
        w.close()
        shutil.rmtree(tmp, ignore_errors=True)


def blocking(w: World) -> set[str]:
    """The VM names the pre-flight lists as blocking, read as the operator."""
    return {b["vm"] for b in vm_blockers(w.api["operator"], w.hosts())}


def test_disconnect_media_clears_the_blocker_and_is_idempotent(world):
    w = world
    vm = w.vm("vo-media")
    assert vm["cdrom_connected"] and vm["power_state"] == "on"
    assert {"vo-media", "vo-iso", "vo-usb"} <= blocking(w)
    offered = {b["vm"]: b["fix_now"] for b in vm_blockers(w.api["operator"], w.hosts())}
    assert offered["vo-media"] == ["disconnect_media", "shutdown_guest", "power_off"]
    # disconnecting media would not clear USB passthrough
    assert offered["vo-usb"] == ["shutdown_guest", "power_off"]

    out = w.run(vm["id"], "disconnect_media")
    assert out["job"]["status"] == "completed", out["job"]["error"]
    [task] = out["tasks"]
    assert (task["target_kind"], str(task["target_id"]), task["status"]) == ("vm", str(vm["id"]), "completed")
    assert task["result"]["changed"] is True and len(task["result"]["devices"]) == 2
    # the lab: both devices disconnected and no longer connected at power-on; the VM still runs
    assert set(w.lab_devices(vm["moref"]).values()) == {(False, False)}
    assert w.lab_power(vm["moref"]) == "poweredOn"
    # the inventory row the pre-flight reads is refreshed, and the pre-flight clears
    assert w.vm("vo-media")["cdrom_connected"] is False
    assert out["steps"]["refresh_inventory"]["vms"] == [
        {"name": "vo-media", "power_state": "on", "cdrom_connected": False}
    ]
    assert "vo-media" not in blocking(w) and {"vo-iso", "vo-usb"} <= blocking(w)

    again = w.run(vm["id"], "disconnect_media")
    assert again["job"]["status"] == "completed", again["job"]["error"]
    assert again["tasks"][0]["result"]["changed"] is False
    assert again["tasks"][0]["result"]["message"] == "no CD-ROM or floppy was connected"


def test_power_off_clears_the_blocker_and_is_idempotent(world):
    w = world
    vm = w.vm("vo-usb")
    assert vm["power_state"] == "on" and "vo-usb" in blocking(w)
    out = w.run(vm["id"], "power_off")
    assert out["job"]["status"] == "completed", out["job"]["error"]
    assert out["tasks"][0]["result"]["message"] == "powered off"
    assert w.lab_power(vm["moref"]) == "poweredOff"
    assert w.vm("vo-usb")["power_state"] == "off"
    assert "vo-usb" not in blocking(w)

    again = w.run(vm["id"], "power_off")
    assert again["job"]["status"] == "completed", again["job"]["error"]
    assert (again["tasks"][0]["result"]["changed"], again["tasks"][0]["result"]["message"]) == (
        False,
        "already powered off",
    )


def test_shutdown_guest_stops_the_vm_and_is_idempotent(world):
    w = world
    vm = w.vm("vo-gpu")
    assert vm["power_state"] == "on" and "vo-gpu" in blocking(w)
    out = w.run(vm["id"], "shutdown_guest")
    assert out["job"]["status"] == "completed", out["job"]["error"]
    assert out["tasks"][0]["result"]["message"] == "guest shut down; powered off"
    assert w.lab_power(vm["moref"]) == "poweredOff"
    assert w.vm("vo-gpu")["power_state"] == "off" and "vo-gpu" not in blocking(w)
    again = w.run(vm["id"], "shutdown_guest")
    assert again["job"]["status"] == "completed", again["job"]["error"]
    assert (again["tasks"][0]["result"]["changed"], again["tasks"][0]["result"]["message"]) == (
        False,
        "already powered off",
    )


def test_shutdown_guest_without_vmware_tools_fails_in_words_and_changes_nothing(world):
    # vCenter refuses ShutdownGuest when Tools do not run in the guest (the lab does as well)
    w = world
    vm = w.vm("vo-notools")
    out = w.run(vm["id"], "shutdown_guest")
    assert out["job"]["status"] == "failed"
    [task] = out["tasks"]
    assert task["status"] == "failed"
    for text in (task["error"], out["job"]["error"]):
        assert "VMware Tools is not running" in text and "power the VM off instead" in text, text
    assert "vo-notools" in out["job"]["error"]
    # the VM runs on, its row is still refreshed (the inventory step ran), and it still blocks
    assert w.lab_power(vm["moref"]) == "poweredOn"
    assert out["steps"]["apply"] == {"action": "shutdown_guest", "changed": 0, "unchanged": 0, "failed": 1}
    assert w.vm("vo-notools")["power_state"] == "on" and "vo-notools" in blocking(w)


def test_create_job_refuses_bad_vms_and_viewers_with_nothing_written(world):
    w = world
    h = w.h
    assert h is not None
    # a second site with a vCenter and a VM of its own
    other = h.one(
        "insert into public.sites (name) values (%s) returning id::text", f"vmop-b-{uuid.uuid4().hex[:8]}"
    )
    vc_b = h.one(
        "insert into public.vcenters (site_id, name, address) values (%s, 'vc-b', 'https://192.0.2.10') "
        "returning id::text",
        other["id"],
    )
    vm_b = h.one(
        "insert into public.vms (vcenter_id, name, moref) values (%s, 'b-vm', 'vm-900') returning id::text",
        vc_b["id"],
    )["id"]
    ours = str(w.vm("vo-iso")["id"])

    def jobs() -> int:
        return h.one(
            "select count(*)::int as n from public.jobs where site_id = any(%s::uuid[]) and type = 'vm_operation'",
            [h.site_id, other["id"]],
        )["n"]

    before = jobs()
    op = w.api["operator"]
    cases = [
        ({"vm_ids": [str(uuid.uuid4())], "action": "power_off"}, {}, "target_not_found"),
        ({"vm_ids": [ours, vm_b], "action": "power_off"}, {}, "targets_span_sites"),
        ({"vm_ids": [vm_b], "action": "power_off"}, {"site_id": str(h.site_id)}, "site_mismatch"),
        ({"vm_ids": [ours], "action": "delete"}, {}, "invalid_params"),
    ]
    for params, extra, code in cases:
        with pytest.raises(ConsoleError) as info:
            op.create_job("vm_operation", params, **extra)
        assert info.value.code == code, (params, info.value.code, info.value.message)
    with pytest.raises(ConsoleError) as info:
        w.api["viewer"].create_job("vm_operation", {"vm_ids": [ours], "action": "power_off"})
    assert info.value.status == 403, (info.value.code, info.value.message)
    assert jobs() == before
    # nothing touched either: the VM of this site still runs with its ISO connected
    row = w.vm("vo-iso")
    assert (row["power_state"], row["cdrom_connected"]) == ("on", True)


def test_the_update_wizard_fixes_a_blocking_vm_now_and_runs_the_pre_flight_again(world):
    """The wizard's pre-flight (console model) offers the fixes a VM's blockers allow, creates
    the job through create-job, follows it and runs the pre-flight again when it completes."""
    w = world
    h = w.h
    assert h is not None
    wz = UpdateWizard(w.api["operator"])
    wz.load_inventory(h.site_id)
    cluster = h.one("select id::text from public.clusters where vcenter_id = %s", w.reg["vcenter_id"])["id"]
    wz.choose_cluster(cluster, catalog_url=w.dc.catalog_url)
    rep = wz.run_preflight()
    by_name = {b["vm"]: b for b in rep.vm_blockers}
    iso = by_name["vo-iso"]
    assert iso["fix_now"] == ["disconnect_media", "shutdown_guest", "power_off"]
    with pytest.raises(ValidationFailed, match="would not clear its blocker"):
        wz.fix_vm_now(iso["vm_id"], "reboot")
    with pytest.raises(ValidationFailed, match="would not clear its blocker"):
        wz.fix_vm_now(by_name["vo-pci"]["vm_id"], "disconnect_media")
    n_jobs = h.one("select count(*)::int as n from public.jobs where site_id = %s", h.site_id)["n"]
    said = wz.fix_vm_now(iso["vm_id"], "disconnect_media")
    assert said.startswith("vo-iso: disconnect its CD-ROM/floppy media - job ") and "runs again" in said
    assert (
        h.one("select count(*)::int as n from public.jobs where site_id = %s", h.site_id)["n"] == n_jobs + 1
    )
    with pytest.raises(ValidationFailed, match="already under way"):
        wz.fix_vm_now(iso["vm_id"], "disconnect_media")

    said_later: list[str] = []
    wait_until(
        lambda: (
            said_later.extend(wz.vm_fix_progress()) or wz.vm_fix_jobs[iso["vm_id"]]["status"] == "completed"
        ),
        JOB_TIMEOUT_S,
        "the wizard to see its fix job completed",
        interval=0.3,
    )
    assert "vo-iso: disconnect its CD-ROM/floppy media - done" in said_later
    assert said_later[-1] == "the pre-flight ran again"
    assert wz.report is not None and "vo-iso" not in {b["vm"] for b in wz.report.vm_blockers}
    assert set(w.lab_devices(w.vm("vo-iso")["moref"]).values()) == {(False, False)}


def test_the_wizard_buttons_power_off_now_confirmed_and_followed_live(world):
    """The pre-flight's "Power off now" button (the widget), asked first, "No" changing nothing;
    "Yes" creates the job, its monitor follows it, and the pre-flight runs again when it
    completes. "Disconnect media now" is offered only where it clears the VM's blocker, and
    neither button for a viewer."""
    w = world
    h = w.h
    assert h is not None
    api = w.api["operator"]
    monitors: list[JobMonitor] = []

    def monitor(jid: str) -> JobMonitorView:
        m = JobMonitor(api, jid)
        m.refresh()
        monitors.append(m)
        return JobMonitorView(m, role="operator")

    cluster = h.one("select id::text from public.clusters where vcenter_id = %s", w.reg["vcenter_id"])["id"]
    wz = UpdateWizard(api)
    wz.load_inventory(h.site_id)
    view = UpdateWizardView(wz, monitor=monitor)
    wz.choose_cluster(cluster, catalog_url=w.dc.catalog_url)
    view._preflight()
    assert wz.report is not None
    pci = next(b for b in wz.report.vm_blockers if b["vm"] == "vo-pci")
    view.vm_pick.value = pci["vm_id"]
    assert view.vm_off_now.layout.display is None and view.vm_shutdown_now.layout.display is None
    assert view.vm_media_now.layout.display == "none"
    assert any(view.vm_off_now in getattr(c, "children", ()) for c in view.body.children)

    def jobs() -> int:
        return h.one("select count(*)::int as n from public.jobs where site_id = %s", h.site_id)["n"]

    before = jobs()
    view.vm_off_now.click()
    assert view.vm_confirm.layout.display is None and "Power off vo-pci now?" in view.vm_confirm_text.value
    view.vm_no.click()
    assert "nothing changed" in view.vm_status.value and jobs() == before
    view.vm_off_now.click()
    view.vm_yes.click()
    assert wz.vm_fix_jobs[pci["vm_id"]]["job_id"][:8] in view.vm_status.value, view.vm_status.value
    assert jobs() == before + 1
    assert monitors and view.vm_fix_monitor is not None
    assert any(view.vm_fix_monitor is c for c in view.body.children)

    def fixed() -> bool:
        monitors[-1].refresh()  # what a Realtime UPDATE of the job does
        return wz.vm_fix_jobs[pci["vm_id"]]["status"] == "completed"

    wait_until(fixed, JOB_TIMEOUT_S, "the fix job to complete in the wizard's monitor", interval=0.3)
    assert "vo-pci: power it off - done; the pre-flight ran again" in view.vm_status.value, (
        view.vm_status.value
    )
    assert "vo-pci" not in {b["vm"] for b in wz.report.vm_blockers}
    assert not any(view.vm_fix_monitor is c for c in view.body.children)  # completed: closed
    assert w.lab_power(w.vm("vo-pci")["moref"]) == "poweredOff"

    # a viewer sees neither button (and create-job refuses them anyway: the refusal test)
    wzv = UpdateWizard(w.api["viewer"])
    assert wzv.may_fix_now is False and wz.may_fix_now is True
    wzv.cluster, wzv.hosts, wzv.report, wzv.step = wz.cluster, wz.hosts, wz.report, Step.PREFLIGHT
    vv = UpdateWizardView(wzv)
    ft = next(b for b in wz.report.vm_blockers if b["vm"] == "vo-ft")
    assert ft["fix_now"] == ["shutdown_guest", "power_off"]
    vv.vm_pick.value = ft["vm_id"]
    assert {b.layout.display for b in (vv.vm_off_now, vv.vm_media_now, vv.vm_shutdown_now)} == {"none"}
