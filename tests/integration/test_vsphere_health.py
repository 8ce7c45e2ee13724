"""The vSphere side of the pre-flight gates (executor/targets/vsphere_health.py) against the
simulated vCenter: the vcenter gate (host not responding, host already in maintenance) and
the vsan gate (health red or yellow, objects resyncing) through the vSAN Management SDK
endpoint the lab serves, and the wait for an idle vSAN before a host.

What is simulated (devstack/lab/vcsim/vsan.go): govmomi's simulator has no vSAN, so the lab
answers VsanQueryVcClusterHealthSummary and QuerySyncingVsanObjectsSummary on /vsanHealth
from lab state that the tests set (and that a host leaving maintenance creates: a resync
that drains over resync_after_exit_ms); the client calls them through pyVmomi exactly as it
would a real vCenter, with the vim session's cookie."""

from __future__ import annotations

import pytest

from devstack.lab.vcenter import VcsimLab
from executor.targets.dell_health import BLOCK, OK, WARN
from executor.targets.endpoint import Endpoint
from executor.targets.errors import RequestRejected
from executor.targets.vsphere import VSphereClient, VSphereTimeouts
from executor.targets.vsphere_health import vcenter_gate, vsan_gate, wait_vsan_idle

SPEC = {
    "clusters": [
        {"name": "vs", "hosts": 3, "vms_per_host": 1, "vsan": {"enabled": True, "resync_after_exit_ms": 600}},
        {"name": "plain", "hosts": 2, "vms_per_host": 1},
    ]
}


@pytest.fixture(scope="module")
def lab():
    with VcsimLab.from_spec(SPEC) as lab:
        yield lab


@pytest.fixture
def vc(lab):
    lab.set_vsan("vs", health="green", resync_objects=0)
    ep = Endpoint(lab.url, lab.username, lab.password, ca_bundle=str(lab.ca_file))
    with VSphereClient(ep, VSphereTimeouts(poll=0.02)) as c:
        yield c


def test_vcenter_gate_blocks_a_host_not_responding_or_already_in_maintenance(lab, vc) -> None:
    inv = vc.inventory()
    h = inv.host_by_name("plain-esx01")
    assert vcenter_gate(h).status == OK
    lab._control("POST", "/hosts/plain-esx01/maintenance", {"enabled": "true"})
    try:
        g = vcenter_gate(vc.host(h.moid))
        assert g.status == BLOCK and "already in maintenance" in g.reason
    finally:
        lab._control("POST", "/hosts/plain-esx01/maintenance", {"enabled": "false"})
    lab.power_host("plain-esx02", on=False)
    try:
        g = vcenter_gate(vc.host(inv.host_by_name("plain-esx02").moid))
        assert g.status == BLOCK and "notResponding" in g.reason
    finally:
        lab.power_host("plain-esx02", on=True)
        lab.wait_host("plain-esx02", "connected")


def test_vsan_is_read_through_the_vsan_sdk_endpoint(lab, vc) -> None:
    inv = vc.inventory()
    vs, plain = inv.cluster_by_name("vs"), inv.cluster_by_name("plain")
    assert vs.vsan_enabled and not plain.vsan_enabled
    g, facts = vsan_gate(vc, vs.moid)
    assert g.status == OK and facts["resync"]["objects"] == 0 and facts["health"]["overall"] == "green"
    lab.set_vsan("vs", health="red", test="vSAN object health")
    g, _ = vsan_gate(vc, vs.moid)
    assert g.status == BLOCK and "vSAN health red (Data: vSAN object health red)" in g.reason
    lab.set_vsan("vs", health="yellow", test="Disk capacity")
    assert vsan_gate(vc, vs.moid)[0].status == WARN
    lab.set_vsan("vs", health="green", resync_objects=9, resync_bytes=3 * 2**30)
    g, _ = vsan_gate(vc, vs.moid)
    assert g.status == BLOCK and "resync in progress: 9 object(s), 3.0 GiB" in g.reason
    with pytest.raises(RequestRejected, match="vSAN is not enabled"):
        vc.vsan_health(plain.moid)
    g, _ = vsan_gate(vc, plain.moid)
    assert g.status == BLOCK and "cannot read vSAN health" in g.reason


def test_a_host_leaving_maintenance_starts_a_resync_that_the_wait_sees_drain(lab, vc) -> None:
    inv = vc.inventory()
    vs = inv.cluster_by_name("vs")
    host = vs.hosts[0]
    vc.enter_maintenance(host, 30, vsan_mode="ensureObjectAccessibility")
    vc.exit_maintenance(host)
    g, _ = vsan_gate(vc, vs.moid)
    assert g.status == BLOCK and "resync in progress" in g.reason
    seen: list[str] = []
    g, waited = wait_vsan_idle(vc, vs.moid, timeout=20, poll=0.05, on_wait=lambda x: seen.append(x.reason))
    assert g.status == OK and seen and waited > 0
    entry = lab.vsan("vs")["entries"][-1]
    assert entry["object_action"] == "ensureObjectAccessibility" and entry["hosts_out"] == 1


def test_the_wait_gives_up_at_its_timeout_with_the_gate_still_blocking(lab, vc) -> None:
    vs = vc.inventory().cluster_by_name("vs")
    lab.set_vsan("vs", resync_objects=4, resync_bytes=2**30)  # not draining
    g, waited = wait_vsan_idle(vc, vs.moid, timeout=0.3, poll=0.05)
    assert g.status == BLOCK and "4 object(s)" in g.reason and 0.3 <= waited < 5
