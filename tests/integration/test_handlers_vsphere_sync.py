"""``vcenter_sync`` through a real executor process on the real local stack, against a
simulated vCenter of 10 clusters x 16 hosts x 20 VMs per host (3,200 VMs) whose hosts sit
on simulated iDRACs: correct, idempotent, vanished objects marked then pruned, hosts linked
to servers by service tag or BMC address, safety status changes recorded and notified."""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyVmomi import vim

from devstack.lab.datacentre import DataCentre
from executor.targets.endpoint import Endpoint
from executor.targets.vsphere import VSphereClient, VSphereTimeouts
from tests.e2e.executor_harness import Harness

CLUSTERS, HOSTS, VMS_PER_HOST = 10, 16, 20
SPECIAL = [
    {"name": "dev-usb", "host": 0, "devices": ["usb_passthrough"]},
    {"name": "dev-ft", "host": 1, "devices": ["ft"]},
    {"name": "dev-cd", "host": 2, "devices": ["cdrom_host_device"]},
    {"name": "dev-local", "host": 3, "devices": ["local_disk"]},
    {"name": "dev-gpu", "host": 4, "devices": ["vgpu"]},
    {"name": "dev-pci", "host": 5, "devices": ["pci_passthrough"]},
]


@contextmanager
def lab_world(stack, n_clusters: int, hosts: int, vms_per_host: int):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-sync-"))
    clusters = [
        {
            "name": f"c{i:02d}",
            "hosts": hosts,
            "vms_per_host": vms_per_host,
            "host_memory_mb": 1048576,
            "vm_memory_mb": 2048,
            **({"vms": SPECIAL} if i == 0 else {}),
        }
        for i in range(n_clusters)
    ]
    dc = DataCentre(clusters, time_scale=400, outdated=False)
    h = Harness(stack, tmp)
    try:
        dc.start()
        ex = h.spawn("sync-a", target_time_scale=100, realtime_enabled="false", poll_interval=0.3)
        ex.wait_log("registered", timeout=30)
        key = h.one("select public_key, key_id from public.executors where site_id = %s", h.site_id)
        reg = dc.register(h.query, h.site_id, key["public_key"], key["key_id"])
        # half the servers are known by BMC address only (no service tag recorded)
        odd = [str(s) for name, s in reg["servers"].items() if int(name[-2:]) % 2 == 1]
        h.query("update public.servers set service_tag = null where id = any(%s::uuid[])", odd)
        h.query(
            "insert into public.notification_settings (site_id, name, channel, target, events) values "
            "(%s, 'safety', 'webhook', 'http://127.0.0.1:9/hook', '{cluster_safety_changed}')",
            h.site_id,
        )
        yield h, dc, reg
    finally:
        h.close()
        dc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def sync(h: Harness, reg: dict, **params) -> dict:
    row = {
        "type": "vcenter_sync",
        "site_id": h.site_id,
        "params": {"vcenter_id": str(reg["vcenter_id"]), **params},
        "credential_set_ids": [str(c) for c in reg["credential_set_ids"]],
    }
    job_id = h.client.table("jobs").insert(row).execute().data[0]["id"]
    job = h.wait_status(job_id, ("completed", "failed"), timeout=120)
    assert job["status"] == "completed", job["error"]
    return {s["step_key"]: s["details"].get("result") for s in h.steps(job_id)}


def snapshot(h: Harness, vc: str) -> dict:
    return {
        t: h.query(f"select * from public.{t} where vcenter_id = %s order by moref", vc)
        for t in ("clusters", "esxi_hosts", "vms")
    }


@pytest.mark.slow  # ~15-20 s per full read of 3,200 VMs from the simulator on a loaded 2-core machine
def test_sync_of_3200_vms_is_correct_and_idempotent(stack):
    with lab_world(stack, CLUSTERS, HOSTS, VMS_PER_HOST) as (h, dc, reg):
        check_correct_and_idempotent(h, dc, reg, CLUSTERS, HOSTS, VMS_PER_HOST)


def test_sync_tracks_changes_vanished_objects_and_safety(stack):
    with lab_world(stack, 2, 8, 2) as (h, dc, reg):
        check_correct_and_idempotent(h, dc, reg, 2, 8, 2)
        check_changes(h, dc, reg)


def check_correct_and_idempotent(
    h: Harness, dc: DataCentre, reg: dict, n_clusters: int, hosts: int, vms_per_host: int
) -> None:
    vc = str(reg["vcenter_id"])
    t0 = time.monotonic()
    first = sync(h, reg)
    elapsed = time.monotonic() - t0
    store = first["store_inventory"]
    n_vms = n_clusters * hosts * vms_per_host + len(SPECIAL)
    read = first["read_inventory"]
    assert read["vms"] == n_vms
    # the read's own CPU time and its wait for a CPU fit in its wall time
    assert (
        0 < read["read_cpu_s"]
        and read["read_cpu_s"] + read.get("read_cpu_wait_s", 0) <= read["read_s"] + 0.02
    )
    assert store["clusters"] == {"seen": n_clusters, "changed": n_clusters, "missing": 0}
    assert store["hosts"]["changed"] == n_clusters * hosts and store["hosts"]["linked"] == n_clusters * hosts
    assert store["vms"]["changed"] == n_vms
    counts = h.one(
        "select (select count(*) from public.clusters where vcenter_id = %s) as c, "
        "(select count(*) from public.esxi_hosts where vcenter_id = %s) as h, "
        "(select count(*) from public.vms where vcenter_id = %s) as v",
        vc,
        vc,
        vc,
    )
    assert counts == {"c": n_clusters, "h": n_clusters * hosts, "v": n_vms}
    # every host linked to the server under it: by service tag, or by BMC address
    links = h.query(
        "select h.name, s.name as server from public.esxi_hosts h join public.servers s "
        "on s.id = h.server_id where h.vcenter_id = %s",
        vc,
    )
    assert len(links) == n_clusters * hosts and all(r["server"] == f"{r['name']}-srv" for r in links)
    flags = {
        r["name"]: r
        for r in h.query("select * from public.vms where name like 'dev-%%' and vcenter_id = %s", vc)
    }
    assert flags["dev-usb"]["has_usb_passthrough"] and flags["dev-ft"]["ft_enabled"]
    assert flags["dev-cd"]["cdrom_connected"] and flags["dev-local"]["on_local_storage"]
    assert flags["dev-gpu"]["has_vgpu"] and flags["dev-pci"]["has_pci_passthrough"]
    plain = h.one("select * from public.vms where name = 'c01-vm0001' and vcenter_id = %s", vc)
    assert not any(
        plain[k] for k in ("has_usb_passthrough", "ft_enabled", "cdrom_connected", "on_local_storage")
    )
    c00 = h.one("select * from public.clusters where name = 'c00' and vcenter_id = %s", vc)
    assert c00["drs_enabled"] and c00["drs_automation"] == "fullyAutomated"
    safety = h.query(
        "select status::text from public.cluster_safety_status s join public.clusters c "
        "on c.id = s.cluster_id where c.vcenter_id = %s",
        vc,
    )
    assert len(safety) == n_clusters and {r["status"] for r in safety} <= {"safe", "degraded"}
    print(
        f"first sync of {n_vms} VMs took {elapsed:.1f}s (read {first['read_inventory']['read_s']}s, "
        f"store {store['store_s']}s)"
    )

    assert store["vms_sent"] == n_vms and all(r["sync_hash"] for r in h.query(
        "select sync_hash from public.vms where vcenter_id = %s", vc))  # fmt: skip

    # idempotent: nothing changes, nothing is rewritten, and no VM is even sent again
    before = snapshot(h, vc)
    again = sync(h, reg)["store_inventory"]
    assert (again["clusters"]["changed"], again["hosts"]["changed"], again["vms"]["changed"]) == (0, 0, 0)
    assert again["safety_changes"] == []
    assert (again["vms_sent"], again["requests"], again["vms"]["seen"]) == (0, 1, n_vms)
    after = snapshot(h, vc)
    for table in before:
        assert [{k: v for k, v in r.items() if k != "last_sync_at"} for r in before[table]] == [
            {k: v for k, v in r.items() if k != "last_sync_at"} for r in after[table]
        ], table


def stored_vms(h: Harness, vc: str) -> dict[str, tuple]:
    """name -> (host moref, power state) of the VMs the control plane holds as present."""
    rows = h.query(
        "select v.name, h.moref as host, v.power_state::text as power from public.vms v "
        "left join public.esxi_hosts h on h.id = v.host_id where v.vcenter_id = %s and v.missing_since is null",
        vc,
    )
    return {r["name"]: (r["host"], r["power"]) for r in rows}


def vcenter_vms(c: VSphereClient) -> dict[str, tuple]:
    """name -> (host moref, power state) as the vCenter reports them now."""
    power = {"poweredOn": "on", "poweredOff": "off", "suspended": "off"}
    return {v.name: (v.host, power.get(v.power_state, "unknown")) for v in c.inventory().vms.values()}


def check_changes(h: Harness, dc: DataCentre, reg: dict) -> None:
    vc = str(reg["vcenter_id"])
    # a host goes into maintenance: the safety status changes once, and subscribers are told
    dc.vcenter._control("POST", "/hosts/c01-esx04/maintenance", {"enabled": "true"})
    vcl = dc.vcenter
    ep = Endpoint(f"https://{vcl.host}:{vcl.port}", vcl.username, vcl.password, ca_bundle=str(vcl.ca_file))
    with VSphereClient(ep, VSphereTimeouts(poll=0.02)) as c:
        victim = c.inventory().vm_by_name("c01-vm0003")
        c.power_off_vm(victim.moid)
        task = c._obj(vim.VirtualMachine, victim.moid).Destroy_Task()
        c.wait_for_task(task, operation="destroy VM")
        # a VM changes state; another is "corrected" by hand in the control plane (its
        # vCenter values did not change, so only the lost hash can bring it back)
        c.power_off_vm(c.inventory().vm_by_name("c00-vm0002").moid)
        h.query(
            "update public.vms set power_state = 'unknown' where name = 'c00-vm0001' and vcenter_id = %s", vc
        )
        assert h.one("select sync_hash from public.vms where name = 'c00-vm0001' and vcenter_id = %s",
                     vc)["sync_hash"] is None  # fmt: skip
        before = stored_vms(h, vc)
        want = vcenter_vms(c)
    third = sync(h, reg)["store_inventory"]
    # the destroyed VM is marked gone; the host in maintenance changed
    assert third["hosts"]["changed"] == 1 and third["vms"]["missing"] == 1
    # exactly the VMs that differ are sent and rewritten, and the store now equals the vCenter
    differ = {n for n, v in want.items() if before.get(n) != v}
    assert {"c00-vm0001", "c00-vm0002"} <= differ, differ
    assert third["vms_sent"] == third["vms"]["changed"] == len(differ)
    assert stored_vms(h, vc) == want
    assert [(x["previous"], x["status"]) for x in third["safety_changes"]] == [("safe", "degraded")]
    assert h.one(
        "select missing_since is not null as gone from public.vms where name = 'c01-vm0003' "
        "and vcenter_id = %s",
        vc,
    )["gone"]
    out = h.query(
        "select payload from public.notification_outbox where event_kind = 'cluster_safety_changed' "
        "and payload->>'site_id' = %s",
        h.site_id,
    )
    assert len(out) == 1 and out[0]["payload"]["status"] == "degraded"
    assert "hosts_in_maintenance" in out[0]["payload"]["reasons"]
    # prune: the vanished VM's row goes
    pruned = sync(h, reg, prune_missing=True)["store_inventory"]
    assert pruned["vms"]["missing"] == 1 and pruned["pruned"] is True
    assert not h.query("select 1 from public.vms where name = 'c01-vm0003' and vcenter_id = %s", vc)
    dc.vcenter._control("POST", "/hosts/c01-esx04/maintenance", {"enabled": "false"})
