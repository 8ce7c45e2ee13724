"""Shared pieces of the vCenter handlers (``vcenter_sync``, ``rolling_cluster_update``,
``esxi_upgrade``): inventory rows read through the step context, vCenter sessions
(:func:`vcenter_session`) and iDRAC endpoints built from them and their sealed credentials,
and the inventory payload of a sync.

Reaching targets
----------------
A vCenter's TLS choice lives in ``vcenters.details.tls`` and a server's iDRAC in
``servers.details.tls`` (the Dell handlers' convention; see ``_dell.py``), never silent:
``{"ca_bundle": path}``, ``{"insecure": true}``, ``{"allow_plain_http": true}`` (loopback lab
only), or nothing for HTTPS verified against the system trust store. Target waits are the
production defaults divided by ``RACKPILOT_TARGET_TIME_SCALE`` (default 1), the executor-side
knob for a time-scaled lab.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..binding import Credential
from ..steps import HandlerError, StepContext
from ..targets.endpoint import Endpoint, Timeouts
from ..targets.errors import TargetError
from ..targets.vsphere import Inventory, VSphereClient, VSphereTimeouts
from ..targets.vsphere_blockers import cluster_safety
from ..vocabulary import TaskTargetKind
from . import _dell

log = logging.getLogger("rackpilot.executor.vsphere")


class VSphereHandlerError(HandlerError):
    """Root of the vCenter handlers' failures (the job fails after its cleanup)."""


class InventoryMissing(VSphereHandlerError):
    """A row the job refers to (vCenter, cluster, host, server, credential) is not there."""


class FailureBudgetExhausted(VSphereHandlerError):
    """More hosts failed than the job's failure budget allows: the rollout stopped."""


# --- reaching targets ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetProfile:
    time_scale: float = 1.0

    @classmethod
    def load(cls) -> TargetProfile:
        return cls(_dell.time_scale())

    @staticmethod
    def vcenter_endpoint(vcenter: dict[str, Any], cred: Credential) -> Endpoint:
        """The vCenter's endpoint with its credential, when the credential's sealed endpoints
        name its address and TLS trust (:class:`EndpointNotAllowed` otherwise)."""
        tls = (vcenter.get("details") or {}).get("tls") or {}
        if not isinstance(tls, dict):
            raise VSphereHandlerError(f"vCenter {vcenter['name']}: details.tls must be an object")
        address = str(vcenter["address"])
        url = address if "://" in address else f"https://{address}"
        try:
            ep = Endpoint(
                url,
                cred.username,
                "",
                ca_bundle=tls.get("ca_bundle"),
                insecure=bool(tls.get("insecure")),
                name=vcenter["name"],
            )
            return _dell.present(cred, ep)
        except (TargetError, _dell.DellHandlerError) as exc:
            raise VSphereHandlerError(f"vCenter {vcenter['name']}: {exc}") from None

    @staticmethod
    def idrac_endpoint(server: dict[str, Any], cred: Credential) -> Endpoint:
        try:
            return _dell.endpoint_for(server, cred)
        except (TargetError, _dell.DellHandlerError) as exc:
            raise VSphereHandlerError(f"server {server['name']}: {exc}") from None

    @staticmethod
    def dell_timeouts() -> Timeouts:
        return _dell.target_timeouts()

    def vsphere_timeouts(self) -> VSphereTimeouts:
        t = VSphereTimeouts()
        if self.time_scale == 1:
            return t
        c = t.compressed(self.time_scale)
        # loopback SOAP round trips still take real milliseconds on a loaded machine
        return replace(c, connect=max(c.connect, 10.0), task=max(c.task, 10.0), poll=max(c.poll, 0.02))

    def seconds(self, real_world_seconds: float) -> float:
        """A real-world duration (an evacuation budget, say) on the targets' clock."""
        return real_world_seconds / self.time_scale


# --- control plane (through the step context) -----------------------------------------------------
async def one(ctx: StepContext, table: str, columns: str, what: str, **filters: Any) -> dict[str, Any]:
    """The first row of ``table`` that matches, or :class:`InventoryMissing` naming ``what``."""
    rows = await ctx.select(table, columns, **filters)
    if not rows:
        raise InventoryMissing(f"{what} does not exist (any more); run vcenter_sync or fix the job")
    return rows[0]


VCENTER_COLUMNS = "id,name,address,credential_set_id,site_id,details"
HOST = TaskTargetKind.HOST  # the kind of the vCenter handlers' tasks


async def vcenter_row(ctx: StepContext, vcenter_id: str, *, what: str | None = None) -> dict[str, Any]:
    """The ``vcenters`` row a job works on (``what`` names it in the error if it is gone)."""
    return await one(ctx, "vcenters", VCENTER_COLUMNS, what or f"vCenter {vcenter_id}", id=str(vcenter_id))


async def credential(ctx: StepContext, credential_id: str | None, what: str) -> Credential:
    """The opened credential of ``what``; its secret is released only to the endpoints sealed
    with it (see :mod:`executor.binding`)."""
    if not credential_id:
        raise InventoryMissing(f"{what} has no credential set")
    cred = await ctx.credentials(str(credential_id))
    if not cred.username:
        raise VSphereHandlerError(f"the credential of {what} has no username")
    return cred


@asynccontextmanager
async def vcenter_session(
    ctx: StepContext, vcenter: dict[str, Any], profile: TargetProfile | None = None
) -> AsyncIterator[VSphereClient]:
    """A client connected to ``vcenter`` with its sealed credential for the block, closed on
    every exit (``profile``: the targets' time scale, read from the settings by default)."""
    profile = profile or TargetProfile.load()
    cred = await credential(ctx, vcenter.get("credential_set_id"), f"vCenter {vcenter['name']}")
    client = VSphereClient(profile.vcenter_endpoint(vcenter, cred), profile.vsphere_timeouts())
    await asyncio.to_thread(client.connect)
    try:
        yield client
    finally:
        await asyncio.to_thread(client.close)


# --- inventory payload ---------------------------------------------------------------------------
_POWER = {"poweredOn": "on", "poweredOff": "off", "suspended": "off", "standBy": "off"}
_CONNECTION = {"connected": "connected", "disconnected": "disconnected", "notResponding": "not_responding"}
SAFETY = {"ok": "safe", "degraded": "degraded", "unsafe": "unsafe"}


def _local(inv: Inventory, ds: str) -> bool:
    d = inv.datastores.get(ds)
    return d is not None and not d.shared


def _cluster_row(c: Any) -> dict[str, Any]:
    behavior = c.drs.get("default_vm_behavior") or ("fullyAutomated" if c.drs.get("enabled") else "")
    return {
        "moref": c.moid,
        "name": c.name,
        "ha_enabled": c.ha_enabled,
        "ha_admission_control": bool(c.ha.get("admission_control_enabled")),
        "drs_enabled": bool(c.drs.get("enabled")),
        "drs_automation": behavior if c.drs.get("enabled") else None,
        "details": {
            "datacenter": c.datacenter,
            "ha": c.ha,
            "drs": c.drs,
            "rules": [
                {
                    "name": r.name,
                    "enabled": r.enabled,
                    "mandatory": r.mandatory,
                    "vms": list(r.vms),
                    "affine_hosts": list(r.affine_hosts),
                }
                for r in c.rules
            ],
        },
    }


def _safety_row(inv: Inventory, c: Any) -> dict[str, Any]:
    s = cluster_safety(inv, c.moid)
    members = [inv.hosts[h] for h in c.hosts if h in inv.hosts]
    return {
        "cluster_moref": c.moid,
        "status": SAFETY[s["status"]],
        "hosts_total": len(members),
        "hosts_in_maintenance": sum(1 for h in members if h.in_maintenance),
        "hosts_disconnected": sum(1 for h in members if h.connection_state != "connected"),
        "ha_enabled": c.ha_enabled,
        "drs_enabled": bool(c.drs.get("enabled")),
        "details": {"reasons": s["reasons"], "active_hosts": s["active_hosts"]},
    }


def _host_row(h: Any) -> dict[str, Any]:
    return {
        "moref": h.moid,
        "name": h.name,
        "cluster_moref": h.cluster,
        "esxi_version": h.version,
        "esxi_build": h.build,
        "connection_state": _CONNECTION.get(h.connection_state, "unknown"),
        "in_maintenance": h.in_maintenance,
        "power_state": _POWER.get(h.power_state, "unknown"),
        "service_tag": (h.service_tag or "").upper(),
        "bmc_address": h.bmc_address or "",
    }


def _vm_row(inv: Inventory, v: Any) -> dict[str, Any]:
    """A VM's row; its details list its devices, but not its disks on shared datastores."""
    devices = [d for d in v.devices if not (d.kind == "disk" and not _local(inv, d.datastore))]
    return {
        "moref": v.moid,
        "name": v.name,
        "host_moref": v.host,
        "power_state": _POWER.get(v.power_state, "unknown"),
        "has_usb_passthrough": any(
            d.kind == "usb" and d.backing in ("host_device", "passthrough") for d in v.devices
        ),
        "has_pci_passthrough": any(d.kind == "pci_passthrough" for d in v.devices),
        "has_vgpu": any(d.kind == "vgpu" for d in v.devices),
        "ft_enabled": v.ft_state not in ("", "notConfigured"),
        "cdrom_connected": any(d.kind in ("cdrom", "floppy") and d.connected for d in v.devices),
        "on_local_storage": any(_local(inv, ds) for ds in v.datastores),
        "details": {
            "memory_mb": v.memory_mb,
            "num_cpu": v.num_cpu,
            "ft_state": v.ft_state,
            "devices": [
                {
                    "kind": d.kind,
                    "label": d.label,
                    "connected": d.connected,
                    "backing": d.backing,
                    "path": d.path,
                }
                for d in devices
            ],
        },
    }


def inventory_payload(inv: Inventory, include_vms: bool = True) -> dict[str, Any]:
    """What ``vsphere_sync_inventory`` stores: plain rows keyed by moref (templates left out)."""
    return {
        "version": inv.vcenter.get("version"),
        "include_vms": include_vms,
        "clusters": [_cluster_row(c) for c in inv.clusters.values()],
        "hosts": [_host_row(h) for h in inv.hosts.values()],
        "vms": [_vm_row(inv, v) for v in inv.vms.values() if not v.template] if include_vms else [],
        "safety": [_safety_row(inv, c) for c in inv.clusters.values()],
    }


VM_CHUNK = 1000  # VMs per request: well under the REST layer's 1 MiB body limit
# Bumped whenever a VM row's shape or meaning changes, so every stored hash is stale then.
VM_HASH_FORMAT = b"rackpilot.vm.1\n"


def vm_hash(row: dict[str, Any]) -> str:
    """The content hash stored with a VM row (``vms.sync_hash``): equal hashes, equal rows."""
    blob = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.blake2b(VM_HASH_FORMAT + blob, digest_size=16).hexdigest()


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("clusters", "hosts", "vms"):
        t = total.setdefault(key, {"seen": 0, "changed": 0, "missing": 0})
        p = part.get(key) or {}
        for k in ("seen", "changed", "missing"):
            t[k] = max(t[k], p.get(k, 0)) if k == "seen" else t[k] + p.get(k, 0)
        if key == "hosts" and "linked" in p:
            t["linked"] = p["linked"]
    total["safety_changes"] = [*total.get("safety_changes", []), *(part.get("safety_changes") or [])]
    total["pruned"] = bool(part.get("pruned"))


async def sync_inventory(
    ctx: StepContext,
    vcenter: dict[str, Any],
    inv: Inventory,
    *,
    include_vms: bool = True,
    prune: bool = False,
) -> dict[str, Any]:
    """Store ``inv`` for ``vcenter``. One request holds the clusters, hosts, safety statuses
    and a content hash of every VM; the database stores the first three, marks the VMs not
    listed, and answers which VMs it holds with another hash (or not at all). Only those are
    sent, in chunks: a re-sync of an unchanged vCenter is one request that writes no VM.
    Every request is idempotent; returns the summed counts."""

    def build() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        payload = inventory_payload(inv, include_vms)
        rows = {}
        for v in payload["vms"]:
            v["sync_hash"] = vm_hash(v)
            rows[v["moref"]] = v
        return payload, rows

    payload, rows = await asyncio.to_thread(build)

    async def send(part: dict[str, Any]) -> dict[str, Any]:
        return await ctx.rpc(
            "vsphere_sync_inventory", {"p_vcenter_id": vcenter["id"], "p_inventory": part, "p_prune": prune}
        )

    total: dict[str, Any] = {}
    first: dict[str, Any] = {
        "version": payload["version"],
        "clusters": payload["clusters"],
        "hosts": payload["hosts"],
        "safety": payload["safety"],
    }
    if include_vms:
        first["vm_hashes"] = {m: v["sync_hash"] for m, v in rows.items()}
    answer = await send(first)
    _add(total, answer)
    stale = [rows[m] for m in answer.get("vms_stale") or [] if m in rows]
    for i in range(0, len(stale), VM_CHUNK):
        _add(total, await send({"vms": stale[i : i + VM_CHUNK]}))
    total["vms_sent"] = len(stale)
    total["requests"] = 1 + (len(stale) + VM_CHUNK - 1) // VM_CHUNK
    return total
