"""Pre-flight checks for taking vSphere hosts into maintenance: pure functions over an
`Inventory` (no I/O), returning plain data that can be stored as an artifact and shown to
operators.

- `vm_blockers(inv, vm)`: why a VM would keep its host from entering maintenance:
  USB passthrough, connected CD-ROM/floppy backed by a host or client device or by an
  image on host-local storage, Fault Tolerance, vGPU/PCI passthrough, files on host-local
  datastores, mandatory host-affinity rules that leave it nowhere to go, and per-VM DRS
  overrides that stop DRS from moving it.
- `cluster_prechecks(inv, cluster)`: DRS mode, HA admission control, hosts already out
  (maintenance, not responding), capacity to absorb one host's VMs.
- `preflight_report(inv, cluster)`: both, per host, as one report.
- `cluster_safety(inv, cluster)`: ok / degraded / unsafe with the reasons.

Capacity is counted in memory, the resource that limits evacuations in practice: the
powered-on VMs' configured memory against the hosts' physical memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .vsphere import VM, Cluster, Host, Inventory, VMDevice

BLOCKING = "blocking"
WARNING = "warning"
OK = "ok"

# Every blocker kind the scan can report, for handlers and UIs that list them.
BLOCKER_KINDS = (
    "usb_passthrough",
    "cdrom_connected",
    "floppy_connected",
    "fault_tolerance",
    "vgpu",
    "pci_passthrough",
    "local_storage",
    "host_affinity",
    "drs_override",
)


@dataclass(frozen=True)
class Blocker:
    kind: str
    severity: str  # blocking | warning
    vm: str  # moid
    vm_name: str
    host: str  # moid
    host_name: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warning | blocking
    detail: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_local(inv: Inventory, ds_moid: str) -> bool:
    ds = inv.datastores.get(ds_moid)
    if ds is None:
        return False
    return not ds.shared


def _hostname(inv: Inventory, moid: str | None) -> str:
    h = inv.hosts.get(moid or "")
    return h.name if h else ""


def _candidate_hosts(inv: Inventory, cluster: Cluster, vm_host: str) -> list[Host]:
    """Hosts a VM could be evacuated to: active hosts of the cluster other than its own."""
    return [inv.hosts[h] for h in cluster.hosts if h in inv.hosts and h != vm_host and inv.hosts[h].active]


# a reason a VM blocks: (kind, detail, severity)
_Reason = tuple[str, str, str]


def vm_blockers(inv: Inventory, vm: VM) -> list[Blocker]:
    """Reasons this VM would keep its host from entering maintenance mode. A powered-off
    VM blocks nothing (it stays registered to the host), so it gets no blockers."""
    if not vm.powered_on or vm.host is None:
        return []
    host = inv.hosts.get(vm.host)
    if host is None:
        return []
    reasons = [r for d in vm.devices if (r := _device_reason(inv, d)) is not None]
    if vm.ft_state not in ("", "notConfigured"):
        reasons.append(("fault_tolerance", f"Fault Tolerance is {vm.ft_state}", BLOCKING))
    local = sorted(
        {inv.datastores[ds].name for ds in vm.datastores if ds in inv.datastores and _is_local(inv, ds)}
    )
    if local:
        reasons.append(("local_storage", f"files on host-local datastore(s) {', '.join(local)}", BLOCKING))
    cluster = inv.clusters.get(host.cluster or "")
    if cluster is not None:
        reasons += _cluster_reasons(inv, cluster, vm, host)
    return [
        Blocker(kind, severity, vm.moid, vm.name, host.moid, host.name, detail)
        for kind, detail, severity in reasons
    ]


def _device_reason(inv: Inventory, d: VMDevice) -> _Reason | None:
    """Why this virtual device keeps the VM on its host, or None."""
    if d.kind == "usb" and d.backing in ("host_device", "passthrough"):
        return ("usb_passthrough", f"{d.label}: host USB device {d.detail}".strip(), BLOCKING)
    if d.kind in ("cdrom", "floppy") and d.connected:
        return _media_reason(inv, d)
    if d.kind == "vgpu":
        return ("vgpu", f"{d.label}: vGPU profile {d.detail}", BLOCKING)
    if d.kind == "pci_passthrough":
        return ("pci_passthrough", f"{d.label}: DirectPath I/O device {d.detail}".strip(), BLOCKING)
    return None


def _media_reason(inv: Inventory, d: VMDevice) -> _Reason | None:
    """A connected CD-ROM or floppy: what it is connected to decides whether it blocks."""
    kind = "cdrom_connected" if d.kind == "cdrom" else "floppy_connected"
    if d.backing == "host_device":
        return (kind, f"{d.label} connected to the host device {d.detail}".strip(), BLOCKING)
    if d.backing == "client_device":
        return (kind, f"{d.label} connected to a client device", BLOCKING)
    if d.backing in ("iso", "image"):
        if d.datastore and _is_local(inv, d.datastore):
            return (kind, f"{d.label} has {d.path} mounted from host-local storage", BLOCKING)
        # Shared-storage images move with the VM; flag them so operators can tidy up.
        return (kind, f"{d.label} has {d.path} mounted (shared storage, can move)", WARNING)
    return None


def _cluster_reasons(inv: Inventory, cluster: Cluster, vm: VM, host: Host) -> list[_Reason]:
    """The cluster's DRS override for the VM and its VM-host rules that leave it nowhere to go."""
    out: list[_Reason] = []
    override = cluster.drs_vm_overrides.get(vm.moid)
    if cluster.drs.get("enabled") and override and override != "fullyAutomated":
        out.append(
            ("drs_override", f"DRS automation for this VM is {override}; DRS will not move it", BLOCKING)
        )
    candidates = _candidate_hosts(inv, cluster, host.moid)
    for rule in cluster.rules:
        if not rule.enabled or vm.moid not in rule.vms:
            continue
        allowed = [
            h
            for h in candidates
            if (not rule.affine_hosts or h.moid in rule.affine_hosts) and h.moid not in rule.anti_affine_hosts
        ]
        if not allowed:
            out.append(
                (
                    "host_affinity",
                    f"rule {rule.name!r} leaves no other active host it may run on",
                    BLOCKING if rule.mandatory else WARNING,
                )
            )
    return out


def host_blockers(inv: Inventory, host: str) -> list[Blocker]:
    h = inv.hosts[host]
    out: list[Blocker] = []
    for vm in h.vms:
        if vm in inv.vms:
            out.extend(vm_blockers(inv, inv.vms[vm]))
    return out


def _host_demand_mb(inv: Inventory, host: Host) -> int:
    return sum(inv.vms[v].memory_mb for v in host.vms if v in inv.vms and inv.vms[v].powered_on)


def capacity(inv: Inventory, cluster: Cluster, host: str | None = None) -> dict[str, Any]:
    """Can the other active hosts absorb `host`'s powered-on VMs (default: the busiest
    host)? Memory in MiB."""
    active = [inv.hosts[h] for h in cluster.hosts if h in inv.hosts and inv.hosts[h].active]
    if host is None:
        busiest = max(active, key=lambda h: _host_demand_mb(inv, h), default=None)
        host = busiest.moid if busiest else None
    leaving = inv.hosts.get(host or "")
    need = _host_demand_mb(inv, leaving) if leaving else 0
    others = [h for h in active if h.moid != host]
    free = sum(max(0, h.memory_bytes // (1 << 20) - _host_demand_mb(inv, h)) for h in others)
    return {
        "host": host,
        "host_name": leaving.name if leaving else "",
        "needed_mb": need,
        "free_mb_on_others": free,
        "other_active_hosts": len(others),
        "fits": bool(others) and free >= need,
    }


def cluster_prechecks(inv: Inventory, cluster: Cluster) -> list[Check]:
    return [
        _drs_check(cluster),
        _ha_check(inv, cluster),
        *_host_state_checks(inv, cluster),
        _capacity_check(inv, cluster),
    ]


def _drs_check(cluster: Cluster) -> Check:
    """Maintenance mode evacuates VMs by itself only with DRS fully automated."""
    drs = cluster.drs
    if cluster.drs_fully_automated:
        return Check("drs", OK, "DRS is fully automated", dict(drs))
    if drs.get("enabled"):
        return Check(
            "drs",
            BLOCKING,
            f"DRS is {drs.get('default_vm_behavior')}: maintenance mode will not evacuate VMs by itself",
            dict(drs),
        )
    return Check("drs", BLOCKING, "DRS is disabled: maintenance mode cannot evacuate VMs", dict(drs))


def _ha_check(inv: Inventory, cluster: Cluster) -> Check:
    """HA admission control may refuse maintenance mode unless relaxed."""
    ha = cluster.ha
    if ha.get("enabled") and ha.get("admission_control_enabled"):
        policy = ha.get("admission_control_policy") or {}
        level = policy.get("failover_level") or ha.get("failover_level") or 0
        active = sum(1 for h in cluster.hosts if h in inv.hosts and inv.hosts[h].active)
        return Check(
            "ha_admission_control",
            WARNING,
            f"HA admission control reserves capacity for {level} host failure(s) "
            f"with {active} active host(s); it can refuse maintenance unless relaxed",
            {"policy": policy, "failover_level": level, "active_hosts": active},
        )
    state = "HA is disabled" if not ha.get("enabled") else "HA admission control is disabled"
    return Check("ha_admission_control", OK, state, {"policy": ha.get("admission_control_policy")})


def _host_state_checks(inv: Inventory, cluster: Cluster) -> list[Check]:
    """Hosts already in maintenance (a warning) and hosts not connected (blocking)."""
    members = [inv.hosts[h] for h in cluster.hosts if h in inv.hosts]
    in_mm = sorted(h.name for h in members if h.in_maintenance)
    down = sorted(h.name for h in members if h.connection_state != "connected")
    return [
        Check(
            "hosts_in_maintenance",
            WARNING if in_mm else OK,
            f"already in maintenance: {', '.join(in_mm)}" if in_mm else "no host is in maintenance",
            {"hosts": in_mm},
        ),
        Check(
            "hosts_not_connected",
            BLOCKING if down else OK,
            f"not connected: {', '.join(down)}" if down else "every host is connected",
            {"hosts": down},
        ),
    ]


def _capacity_check(inv: Inventory, cluster: Cluster) -> Check:
    """The busiest host's running VMs fit on the other hosts."""
    cap = capacity(inv, cluster)
    return Check(
        "capacity",
        OK if cap["fits"] else BLOCKING,
        (
            f"the other hosts have {cap['free_mb_on_others']} MiB free for the "
            f"{cap['needed_mb']} MiB on {cap['host_name'] or 'the busiest host'}"
        ),
        cap,
    )


def preflight_report(inv: Inventory, cluster: str, hosts: list[str] | None = None) -> dict[str, Any]:
    """One pre-flight report for a cluster (optionally limited to some hosts), as plain
    data. `ok_to_proceed` is false while any check or VM blocker is blocking."""
    c = inv.clusters[cluster]
    selected = [h for h in (hosts or list(c.hosts)) if h in inv.hosts]
    checks = [x.to_dict() for x in cluster_prechecks(inv, c)]
    per_host = []
    blocking = sum(1 for x in checks if x["status"] == BLOCKING)
    for h in selected:
        found = [b.to_dict() for b in host_blockers(inv, h)]
        blocking += sum(1 for b in found if b["severity"] == BLOCKING)
        host = inv.hosts[h]
        per_host.append(
            {
                "host": h,
                "host_name": host.name,
                "version": host.version,
                "build": host.build,
                "connection_state": host.connection_state,
                "in_maintenance": host.in_maintenance,
                "capacity": capacity(inv, c, h),
                "blockers": found,
            }
        )
    return {
        "cluster": c.moid,
        "cluster_name": c.name,
        "datacenter": c.datacenter,
        "checks": checks,
        "hosts": per_host,
        "blocking_count": blocking,
        "ok_to_proceed": blocking == 0,
        "safety": cluster_safety(inv, cluster),
    }


def cluster_safety(inv: Inventory, cluster: str) -> dict[str, Any]:
    """ok: HA on, every host active, room for one host's VMs. degraded: HA off or some
    host out (maintenance, not responding, disconnected). unsafe: no room left to absorb
    one host's VMs, or no active host at all."""
    c = inv.clusters[cluster]
    reasons: list[str] = []
    hosts = [inv.hosts[h] for h in c.hosts if h in inv.hosts]
    active = [h for h in hosts if h.active]
    unsafe = False
    if not active:
        reasons.append("no_active_host")
        unsafe = True
    else:
        cap = capacity(inv, c)
        if not cap["fits"]:
            reasons.append("insufficient_spare_capacity")
            unsafe = True
    if not c.ha_enabled:
        reasons.append("ha_disabled")
    if any(h.in_maintenance for h in hosts):
        reasons.append("hosts_in_maintenance")
    if any(h.connection_state != "connected" for h in hosts):
        reasons.append("hosts_not_responding")
    status = "unsafe" if unsafe else ("degraded" if reasons else "ok")
    return {
        "status": status,
        "reasons": reasons,
        "active_hosts": len(active),
        "hosts": len(hosts),
    }


__all__ = [
    "BLOCKER_KINDS", "Blocker", "Check", "vm_blockers", "host_blockers", "capacity",
    "cluster_prechecks", "preflight_report", "cluster_safety",
]  # fmt: skip
