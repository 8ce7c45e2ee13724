"""Blocker scan, cluster pre-checks and safety status over hand-built inventories (the
functions are pure; the lab tests cover the same kinds against a running vCenter)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from executor.targets.vsphere import VM, AffinityRule, Cluster, Datastore, Host, Inventory, VMDevice
from executor.targets.vsphere_blockers import (
    capacity,
    cluster_prechecks,
    cluster_safety,
    host_blockers,
    preflight_report,
    vm_blockers,
)

GIB = 1 << 30
HA_ON = {
    "enabled": True,
    "admission_control_enabled": True,
    "failover_level": 1,
    "host_monitoring": "enabled",
    "vm_monitoring": "vmMonitoringDisabled",
    "admission_control_policy": {"type": "failover_level", "failover_level": 1},
}
DRS_AUTO = {"enabled": True, "default_vm_behavior": "fullyAutomated", "vmotion_rate": 3,
            "enable_vm_behavior_overrides": True}  # fmt: skip


def host(i: int, vms: tuple[str, ...] = (), mem_gib: int = 64, **kw) -> Host:
    h = Host(
        moid=f"host-{i}", name=f"esx{i}", cluster="c1", connection_state="connected", in_maintenance=False,
        power_state="poweredOn", version="7.0.3", build="21930508", full_name="", memory_bytes=mem_gib * GIB,
        cpu_cores=32, vendor="Dell Inc.", model="PowerEdge R750", uuid="", service_tag=f"TAG{i}",
        bmc_address="", boot_time="", vms=vms, datastores=("ds-shared", f"ds-local-{i}"),
    )  # fmt: skip
    return replace(h, **kw)


def vm(name: str, on: int, mem_mb: int = 4096, devices: tuple[VMDevice, ...] = (), **kw) -> VM:
    v = VM(
        moid=f"vm-{name}", name=name, host=f"host-{on}", power_state="poweredOn", connection_state="connected",
        memory_mb=mem_mb, num_cpu=2, ft_state="notConfigured", template=False, instance_uuid="",
        datastores=("ds-shared",), devices=devices,
    )  # fmt: skip
    return replace(v, **kw)


def inventory(vms: list[VM], hosts: int = 3, mem_gib: int = 64, ha=HA_ON, drs=DRS_AUTO, rules=(), overrides=None,
              host_kw=None) -> Inventory:  # fmt: skip
    inv = Inventory(vcenter={})
    for v in vms:
        inv.vms[v.moid] = v
    for i in range(1, hosts + 1):
        on = tuple(v.moid for v in vms if v.host == f"host-{i}")
        inv.hosts[f"host-{i}"] = host(i, on, mem_gib, **((host_kw or {}).get(i, {})))
        inv.datastores[f"ds-local-{i}"] = Datastore(
            f"ds-local-{i}", f"esx{i}-local", "VMFS", False, (f"host-{i}",)
        )
    inv.datastores["ds-shared"] = Datastore("ds-shared", "shared", "VMFS", True, tuple(inv.hosts))
    inv.clusters["c1"] = Cluster("c1", "cluster1", "dc1", tuple(inv.hosts), dict(ha), dict(drs), tuple(rules),
                                 overrides or {})  # fmt: skip
    return inv


def kinds(inv: Inventory, name: str) -> list[tuple[str, str]]:
    return [(b.kind, b.severity) for b in vm_blockers(inv, inv.vm_by_name(name))]


DEVICE_CASES = {
    "usb": (VMDevice("usb", "USB 1", True, "host_device", detail="path:1/0/3"), "usb_passthrough"),
    "cd_host": (VMDevice("cdrom", "CD/DVD 1", True, "host_device"), "cdrom_connected"),
    "cd_client": (VMDevice("cdrom", "CD/DVD 1", True, "client_device"), "cdrom_connected"),
    "cd_local_iso": (
        VMDevice("cdrom", "CD/DVD 1", True, "iso", "[esx1-local] a.iso", "ds-local-1"),
        "cdrom_connected",
    ),
    "floppy": (VMDevice("floppy", "Floppy 1", True, "host_device"), "floppy_connected"),
    "vgpu": (VMDevice("vgpu", "PCI 0", True, "passthrough", detail="grid_t4-4q"), "vgpu"),
    "pci": (
        VMDevice("pci_passthrough", "PCI 1", True, "passthrough", detail="0000:3b:00.0"),
        "pci_passthrough",
    ),
}


@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_each_device_kind_blocks(case):
    dev, kind = DEVICE_CASES[case]
    inv = inventory([vm("x", 1, devices=(dev,))])
    assert kinds(inv, "x") == [(kind, "blocking")]


def test_ft_local_storage_and_harmless_devices():
    inv = inventory([
        vm("ft", 1, ft_state="running"),
        vm("local", 1, datastores=("ds-local-1",)),
        vm("calm", 1, devices=(
            VMDevice("cdrom", "CD/DVD 1", False, "host_device"),  # not connected
            VMDevice("usb_controller", "USB xHCI", True, ""),  # a controller alone moves fine
            VMDevice("cdrom", "CD/DVD 2", True, "iso", "[shared] os.iso", "ds-shared"),  # shared ISO moves
        )),
        vm("off", 1, power_state="poweredOff", devices=(DEVICE_CASES["usb"][0],)),
    ])  # fmt: skip
    assert kinds(inv, "ft") == [("fault_tolerance", "blocking")]
    assert kinds(inv, "local") == [("local_storage", "blocking")]
    assert kinds(inv, "calm") == [("cdrom_connected", "warning")]
    assert kinds(inv, "off") == []  # a powered-off VM stays registered; it blocks nothing
    assert {b.vm_name for b in host_blockers(inv, "host-1") if b.severity == "blocking"} == {"ft", "local"}


def test_affinity_rules_and_drs_overrides():
    pinned = AffinityRule("pin", True, True, ("vm-a",), ("host-1",), ())
    group = AffinityRule("group", True, True, ("vm-b",), ("host-1", "host-2"), ())
    should = AffinityRule("soft", True, False, ("vm-c",), ("host-1",), ())
    anti = AffinityRule("anti", True, True, ("vm-d",), (), ("host-2", "host-3"))
    disabled = AffinityRule("off", False, True, ("vm-e",), ("host-1",), ())
    vms = [vm(n, 1) for n in "abcdef"]
    inv = inventory(vms, rules=(pinned, group, should, anti, disabled), overrides={"vm-f": "manual"})
    assert kinds(inv, "a") == [("host_affinity", "blocking")]
    assert kinds(inv, "b") == []  # host-2 is in its group
    assert kinds(inv, "c") == [("host_affinity", "warning")]
    assert kinds(inv, "d") == [("host_affinity", "blocking")]
    assert kinds(inv, "e") == []
    assert kinds(inv, "f") == [("drs_override", "blocking")]
    # When host-2 is in maintenance, the group rule leaves vm-b nowhere to go.
    inv2 = inventory(vms, rules=(group,), host_kw={2: {"in_maintenance": True}})
    assert kinds(inv2, "b") == [("host_affinity", "blocking")]


def checks(inv: Inventory) -> dict[str, str]:
    return {c.name: c.status for c in cluster_prechecks(inv, inv.clusters["c1"])}


def test_cluster_prechecks():
    vms = [vm(f"v{i}", 1 + i % 3) for i in range(6)]
    assert checks(inventory(vms)) == {
        "drs": "ok", "ha_admission_control": "warning", "hosts_in_maintenance": "ok",
        "hosts_not_connected": "ok", "capacity": "ok",
    }  # fmt: skip
    assert checks(inventory(vms, drs={**DRS_AUTO, "default_vm_behavior": "manual"}))["drs"] == "blocking"
    assert checks(inventory(vms, drs={**DRS_AUTO, "enabled": False}))["drs"] == "blocking"
    assert checks(inventory(vms, ha={**HA_ON, "enabled": False}))["ha_admission_control"] == "ok"
    mm = checks(inventory(vms, host_kw={3: {"in_maintenance": True}}))
    assert mm["hosts_in_maintenance"] == "warning"
    assert (
        checks(inventory(vms, host_kw={2: {"connection_state": "notResponding"}}))["hosts_not_connected"]
        == "blocking"
    )


def test_capacity_counts_powered_on_memory():
    # Three 16 GiB hosts, 12 GiB used on each: the two others have 8 GiB for 12 GiB.
    vms = [vm(f"v{i}", 1 + i % 3, mem_mb=6144) for i in range(6)]
    inv = inventory(vms, mem_gib=16)
    cap = capacity(inv, inv.clusters["c1"])
    assert (cap["needed_mb"], cap["free_mb_on_others"], cap["fits"]) == (12288, 8192, False)
    assert checks(inv)["capacity"] == "blocking"
    # Powering one VM off per host frees enough.
    vms2 = [replace(v, power_state="poweredOff") if i < 3 else v for i, v in enumerate(vms)]
    inv2 = inventory(vms2, mem_gib=16)
    assert capacity(inv2, inv2.clusters["c1"])["fits"]


def test_cluster_safety_levels():
    vms = [vm(f"v{i}", 1 + i % 3) for i in range(6)]
    assert cluster_safety(inventory(vms), "c1") == {
        "status": "ok",
        "reasons": [],
        "active_hosts": 3,
        "hosts": 3,
    }
    assert cluster_safety(inventory(vms, ha={**HA_ON, "enabled": False}), "c1")["status"] == "degraded"
    down = cluster_safety(inventory(vms, host_kw={1: {"connection_state": "notResponding"}}), "c1")
    assert down["status"] == "degraded" and "hosts_not_responding" in down["reasons"]
    full = cluster_safety(
        inventory([vm(f"v{i}", 1 + i % 3, mem_mb=6144) for i in range(6)], mem_gib=16), "c1"
    )
    assert full["status"] == "unsafe" and full["reasons"] == ["insufficient_spare_capacity"]
    alone = cluster_safety(inventory(vms, hosts=1), "c1")
    assert alone["status"] == "unsafe"


def test_preflight_report_is_plain_data():
    vms = [vm("usb", 1, devices=(DEVICE_CASES["usb"][0],)), vm("ok", 2)]
    inv = inventory(vms)
    report = preflight_report(inv, "c1")
    assert json.loads(json.dumps(report)) == report
    assert report["blocking_count"] == 1 and not report["ok_to_proceed"]
    by_host = {h["host_name"]: h for h in report["hosts"]}
    assert [b["kind"] for b in by_host["esx1"]["blockers"]] == ["usb_passthrough"]
    assert by_host["esx2"]["blockers"] == []
    only2 = preflight_report(inv, "c1", hosts=["host-2"])
    assert only2["ok_to_proceed"] and [h["host"] for h in only2["hosts"]] == ["host-2"]
