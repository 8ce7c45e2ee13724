"""The simulated vCenter (devstack/lab/vcsim) driven through rackpilot's pyvmomi client.

One lab per module: a DRS cluster for evacuation and HA settings, a cluster with one VM
per blocker kind (each on its own host, plus spare hosts), and a cluster without DRS.
"""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

from devstack.lab.vcenter import ControlError, StartError, VcsimLab
from executor.targets.endpoint import Endpoint
from executor.targets.errors import AuthenticationFailed, JobStuck, TLSConfigurationError
from executor.targets.vsphere import (
    InvalidTargetState,
    MaintenanceTimeout,
    TaskFailed,
    VSphereClient,
    VSphereTimeouts,
)
from executor.targets.vsphere_blockers import cluster_safety, host_blockers, preflight_report

# Blocker kind reported by the scan for each lab device kind.
BLOCKER_HOSTS = {
    "usb_passthrough": "usb_passthrough",
    "cdrom_host_device": "cdrom_connected",
    "cdrom_local_iso": "cdrom_connected",
    "floppy_connected": "floppy_connected",
    "ft": "fault_tolerance",
    "vgpu": "vgpu",
    "pci_passthrough": "pci_passthrough",
    "local_disk": "local_storage",
}
N_BLOCKER_HOSTS = len(BLOCKER_HOSTS) + 1  # + one host whose VM is pinned by an affinity rule
NO_HA = {"enabled": False, "admission_control": False}

SPEC = {
    "migrate_ms": 5,
    "clusters": [
        {
            "name": "prod",
            "hosts": 4,
            "vms_per_host": 2,
            "host_memory_mb": 16384,
            "vm_memory_mb": 2048,
            "ha": {"enabled": True, "admission_control": True, "failover_level": 1},
        },
        {
            "name": "blk",
            "hosts": N_BLOCKER_HOSTS + 2,
            "vms_per_host": 1,
            "host_memory_mb": 65536,
            "vm_memory_mb": 1024,
            "ha": NO_HA,
            "vms": [
                {"name": f"vm-{kind}", "host": i, "devices": [kind]} for i, kind in enumerate(BLOCKER_HOSTS)
            ]
            + [{"name": "vm-pinned", "host": len(BLOCKER_HOSTS)}],
            "rules": [
                {"name": "pin", "vms": ["vm-pinned"], "hosts": [len(BLOCKER_HOSTS)], "mandatory": True}
            ],
        },
        {"name": "nodrs", "hosts": 2, "vms_per_host": 1, "drs": {"enabled": False}, "ha": NO_HA},
    ],
}
HARDWARE = {"prod-esx01": {"service_tag": "7XK2P93", "bmc_address": "https://127.0.0.1:18443"}}
FAST = VSphereTimeouts(connect=10, task=30, stall=30, host_reconnect=30, poll=0.05)


@pytest.fixture(scope="module")
def lab():
    with VcsimLab.from_spec(SPEC, hardware=HARDWARE) as lab:
        yield lab


def endpoint(lab: VcsimLab, **kw) -> Endpoint:
    opts = {"ca_bundle": str(lab.ca_file)}
    opts.update(kw)
    return Endpoint(
        url=f"https://{lab.host}:{lab.port}", username=lab.username, password=lab.password, **opts
    )


@pytest.fixture(scope="module")
def client(lab):
    with VSphereClient(endpoint(lab), FAST) as c:
        yield c


def test_inventory_is_complete(lab, client):
    inv = client.inventory()
    n_blk = N_BLOCKER_HOSTS + 2
    assert len(inv.clusters) == 3
    assert len(inv.hosts) == 4 + n_blk + 2 == lab.hosts_count
    assert len(inv.vms) == 8 + (n_blk + len(BLOCKER_HOSTS) + 1) + 2 == lab.vms_count
    prod = inv.cluster_by_name("prod")
    assert prod.datacenter == "dc1"
    assert prod.ha["enabled"] and prod.ha["admission_control_enabled"]
    assert prod.ha["admission_control_policy"] == {"type": "failover_level", "failover_level": 1}
    assert prod.drs_fully_automated
    assert not inv.cluster_by_name("nodrs").drs["enabled"]
    h1 = inv.host_by_name("prod-esx01")
    assert (h1.service_tag, h1.bmc_address) == ("7XK2P93", "https://127.0.0.1:18443")
    assert (h1.version, h1.build, h1.connection_state, h1.in_maintenance) == (
        "7.0.3",
        "21930508",
        "connected",
        False,
    )
    assert h1.memory_bytes == 16384 << 20 and h1.vendor == "Dell Inc."
    assert inv.host_by_name("prod-esx02").service_tag.startswith("SIM")  # unmapped hosts get a default tag
    # Every VM is listed by exactly the host it runs on, and sits in that host's cluster.
    for vm in inv.vms.values():
        host = inv.hosts[vm.host]
        assert vm.moid in host.vms
        assert sum(vm.moid in h.vms for h in inv.hosts.values()) == 1
        assert host.cluster in inv.clusters
    usb = inv.vm_by_name("vm-usb_passthrough")
    assert {d.kind for d in usb.devices} >= {"usb", "usb_controller", "cdrom", "disk"}
    gpu = next(d for d in inv.vm_by_name("vm-vgpu").devices if d.kind == "vgpu")
    assert gpu.detail == "grid_t4-4q"
    iso = next(d for d in inv.vm_by_name("vm-cdrom_local_iso").devices if d.kind == "cdrom")
    assert iso.connected and iso.backing == "iso" and not inv.datastores[iso.datastore].shared
    assert inv.vm_by_name("vm-ft").ft_state == "running"
    assert inv.cluster_by_name("blk").rules[0].mandatory
    assert cluster_safety(inv, prod.moid)["status"] == "ok"
    # The streamed device reader agrees with pyvmomi's own deserialisation, fact for fact.
    with VSphereClient(endpoint(lab), FAST, fast_devices=False) as slow:
        assert slow.inventory().vms == inv.vms


def test_tls_and_credentials_are_checked(lab, tmp_path):
    # A per-target CA bundle anywhere on disk is what verifies the lab's certificate.
    bundle = tmp_path / "vcenter-ca.pem"
    bundle.write_bytes(lab.ca_file.read_bytes())
    with VSphereClient(endpoint(lab, ca_bundle=str(bundle)), FAST) as c:
        assert c.inventory().vcenter["api_version"]
    # No CA bundle: the lab's self-signed certificate is not in the system store.
    with pytest.raises(TLSConfigurationError):
        VSphereClient(endpoint(lab, ca_bundle=None), FAST).connect()
    # Insecure must be asked for, and then works.
    with VSphereClient(endpoint(lab, ca_bundle=None, insecure=True), FAST) as c:
        assert c.host(c.inventory().host_by_name("prod-esx01").moid).name == "prod-esx01"
    bad = Endpoint(url=f"https://{lab.host}:{lab.port}", username=lab.username, password="wrong",
                   ca_bundle=str(lab.ca_file))  # fmt: skip
    with pytest.raises(AuthenticationFailed):
        VSphereClient(bad, FAST).connect()


def test_maintenance_evacuates_under_drs_and_exits(client):
    inv = client.inventory()
    prod = inv.cluster_by_name("prod")
    host = inv.host_by_name("prod-esx02")
    moved = set(host.vms)
    assert moved
    # HA admission control (1 host failure) allows one host out of four here.
    progress: list[int | None] = []
    client.enter_maintenance(host.moid, timeout=10, on_progress=lambda p, s: progress.append(p))
    after = client.inventory()
    h = after.hosts[host.moid]
    assert h.in_maintenance and not h.vms
    for vm in moved:
        assert after.vms[vm].host != host.moid and after.vms[vm].powered_on
        assert vm in after.hosts[after.vms[vm].host].vms
    assert sum(len(after.hosts[x].vms) for x in prod.hosts) == 8
    assert cluster_safety(after, prod.moid)["reasons"] == ["hosts_in_maintenance"]
    client.enter_maintenance(host.moid, timeout=5)  # idempotent
    client.exit_maintenance(host.moid)
    assert not client.host(host.moid).in_maintenance


def test_each_blocker_keeps_maintenance_from_completing(client):
    inv = client.inventory()
    blk = inv.cluster_by_name("blk")
    targets = {}
    for i, kind in enumerate([*BLOCKER_HOSTS, "pinned"]):
        host = inv.host_by_name(f"blk-esx{i + 1:02d}")
        expected = BLOCKER_HOSTS.get(kind, "host_affinity")
        found = [b for b in host_blockers(inv, host.moid) if b.severity == "blocking"]
        assert [(b.kind, b.vm_name) for b in found] == [(expected, f"vm-{kind}")], kind
        targets[host.moid] = (kind, f"vm-{kind}")
    report = preflight_report(inv, blk.moid)
    assert not report["ok_to_proceed"]
    assert {c["name"]: c["status"] for c in report["checks"]}["drs"] == "ok"

    def enter(moid: str):
        try:
            client.enter_maintenance(moid, timeout=1)
        except MaintenanceTimeout as e:
            return e.stuck_vms
        return None

    started = time.monotonic()
    with cf.ThreadPoolExecutor(len(targets)) as pool:
        results = dict(zip(targets, pool.map(enter, targets), strict=True))
    assert time.monotonic() - started < 15
    after = client.inventory()
    for moid, (kind, vm_name) in targets.items():
        assert results[moid] == [vm_name], kind  # the movable VM left, the blocked one stayed
        assert not after.hosts[moid].in_maintenance
        assert [after.vms[v].name for v in after.hosts[moid].vms] == [vm_name]

    # Resolving the blocker lets the host go: power the USB VM off, then retry.
    usb_host = next(m for m, (k, _) in targets.items() if k == "usb_passthrough")
    client.power_off_vm(after.vm_by_name("vm-usb_passthrough").moid)
    client.enter_maintenance(usb_host, timeout=5)
    assert client.host(usb_host).in_maintenance
    client.exit_maintenance(usb_host)
    client.power_on_vm(after.vm_by_name("vm-usb_passthrough").moid)


def test_without_drs_maintenance_fails_with_invalid_state(client):
    inv = client.inventory()
    host = inv.host_by_name("nodrs-esx01")
    with pytest.raises(InvalidTargetState) as err:
        client.enter_maintenance(host.moid, timeout=5)
    assert err.value.fault == "InvalidState"
    assert not client.host(host.moid).in_maintenance
    report = preflight_report(inv, inv.cluster_by_name("nodrs").moid)
    assert {c["name"]: c["status"] for c in report["checks"]}["drs"] == "blocking"


def test_ha_settings_change_and_restore_exactly(client):
    prod = client.inventory().cluster_by_name("prod")
    recorded = client.read_cluster_settings(prod.moid)
    changed = client.apply_cluster_settings(
        prod.moid, ha={"admission_control_enabled": False}, drs={"default_vm_behavior": "partiallyAutomated"}
    )
    assert changed["ha"]["admission_control_enabled"] is False and changed["ha"]["enabled"] is True
    assert changed["drs"]["default_vm_behavior"] == "partiallyAutomated"
    client.apply_cluster_settings(prod.moid, ha={"enabled": False})
    off = client.inventory().cluster_by_name("prod")
    assert not off.ha_enabled
    assert cluster_safety(client.inventory(), prod.moid)["reasons"] == ["ha_disabled"]
    restored = client.restore_cluster_settings(prod.moid, recorded)
    assert restored == recorded == client.read_cluster_settings(prod.moid)
    with pytest.raises(ValueError):
        client.apply_cluster_settings(prod.moid, ha={"bogus": 1})
    assert client.read_cluster_settings(prod.moid) == recorded


def test_reboot_hook_takes_host_away_and_back(lab, client):
    inv = client.inventory()
    host = inv.host_by_name("prod-esx04")
    client.enter_maintenance(host.moid, timeout=10)
    before = client.host(host.moid)
    lab.reboot_host("prod-esx04", seconds=1.0, version="8.0.2", build="22380479")
    down = client.host(host.moid)
    assert down.connection_state == "notResponding" and down.build == "21930508"
    back = client.wait_for_host(host.moid, timeout=10, booted_after=before.boot_time)
    assert back.connection_state == "connected" and back.in_maintenance
    assert (back.version, back.build) == ("8.0.2", "22380479")
    assert lab.lab_host("prod-esx04")["reboots"] == 1
    client.exit_maintenance(host.moid)
    with pytest.raises(ControlError):
        lab.reboot_host("no-such-host", seconds=1)
    with pytest.raises(ControlError):
        lab.reboot_host("prod-esx04", seconds=-1)


def test_relocation_keeps_host_vm_lists_right(client):
    inv = client.inventory()
    vm = inv.vm_by_name("prod-vm0001")
    src = vm.host
    dst = next(h for h in inv.cluster_by_name("prod").hosts if h != src)
    client.migrate_vm(vm.moid, dst)
    after = client.inventory()
    assert after.vms[vm.moid].host == dst
    assert vm.moid in after.hosts[dst].vms and vm.moid not in after.hosts[src].vms
    client.migrate_vm(vm.moid, src)
    assert client.inventory().vms[vm.moid].host == src


def test_stalled_evacuation_is_told_from_slow_and_cancelled(client):
    from pyVmomi import vim

    inv = client.inventory()
    host = inv.host_by_name("blk-esx05")  # its FT VM never moves
    task = client._obj(vim.HostSystem, host.moid).EnterMaintenanceMode_Task(timeout=60)
    seen: list[int | None] = []
    started = time.monotonic()
    with pytest.raises(JobStuck):
        client.wait_for_task(
            task, operation="enter maintenance", stall=1.0, on_progress=lambda p, s: seen.append(p)
        )
    assert time.monotonic() - started < 10  # gave up on the stall, long before vCenter's 60 s
    deadline = time.monotonic() + 5
    while str(task.info.state) not in ("success", "error") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(task.info.state) == "error" and type(task.info.error).__name__.endswith("RequestCanceled")
    assert not client.host(host.moid).in_maintenance
    with pytest.raises(TaskFailed):
        client.wait_for_task(task, operation="enter maintenance")


def test_bad_lab_config_is_refused_clearly():
    bad = {
        "clusters": [
            {"name": "x", "hosts": 2, "vms": [{"name": "v", "host": 0, "devices": ["usb_passthru"]}]}
        ]
    }
    lab = VcsimLab.from_spec(bad)
    with pytest.raises(StartError, match='unknown device kind "usb_passthru"'):
        lab.start()
    assert not lab.running and not lab.workdir.exists()
    with pytest.raises(StartError, match="unknown host"):
        VcsimLab.from_spec({"clusters": [{"name": "x", "hosts": 1}]}, hardware={"nope": {}}).start()
