"""Pre-flight gates on the vSphere side of a host (see ``dell_health.py`` for the Dell side
and the gate vocabulary):

==========  ==================================================================================
gate        block / warn
==========  ==================================================================================
vcenter     block: the host is not connected to vCenter (disconnected, not responding), or
            it is already in maintenance mode (another tool or person has it out; the
            rollout would count it against the hosts out at once)
vsan        block: vSAN health red, or objects resyncing (a host taken out now could leave
            objects with no copy); warn: vSAN health yellow. Only on vSAN clusters.
==========  ==================================================================================

Before each host of a vSAN cluster the rollout waits (:func:`wait_vsan_idle`) until no
object resyncs and health is not red, up to a timeout; then the vsan gate blocks naming
what is still outstanding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .dell_health import BLOCK, OK, WARN, Gate
from .errors import TargetError


def vcenter_gate(host: Any) -> Gate:
    """``host``: a :class:`vsphere.Host` as the inventory read it."""
    if host.connection_state != "connected":
        return Gate("vcenter", BLOCK, f"host is {host.connection_state} in vCenter")
    if host.in_maintenance:
        return Gate(
            "vcenter",
            BLOCK,
            "host is already in maintenance mode (put there outside this job): bring it back or leave it out",
        )
    return Gate("vcenter", OK, "connected and serving VMs")


def _gib(b: int) -> str:
    return f"{b / 2**30:.1f} GiB"


def vsan_gate(client: Any, cluster: str) -> tuple[Gate, dict[str, Any]]:
    """The vsan gate of a vSAN cluster (health and resync) and what it read."""
    try:
        health = client.vsan_health(cluster)
        resync = client.vsan_resync(cluster)
    except TargetError as exc:
        return Gate("vsan", BLOCK, f"cannot read vSAN health: {exc}"), {}
    facts = {"health": health, "resync": resync}
    failing = "; ".join(health["failing"][:3])
    if health["overall"] == "red":
        return Gate("vsan", BLOCK, f"vSAN health red ({failing or 'no test named'})"), facts
    if resync["objects"] > 0:
        return Gate(
            "vsan",
            BLOCK,
            f"vSAN resync in progress: {resync['objects']} object(s), {_gib(resync['bytes'])} to sync"
            + (f", ETA {resync['eta_s']} s" if resync["eta_s"] else ""),
        ), facts
    if health["overall"] == "yellow":
        return Gate("vsan", WARN, f"vSAN health yellow ({failing or 'no test named'})"), facts
    return Gate("vsan", OK, f"vSAN health {health['overall'] or 'unknown'}, no resync"), facts


def wait_vsan_idle(
    client: Any,
    cluster: str,
    *,
    timeout: float,
    poll: float,
    on_wait: Callable[[Gate], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Gate, float]:
    """Wait until the vsan gate no longer blocks (resync done, health not red), for up to
    ``timeout`` seconds; returns the last gate and the seconds waited. The caller decides
    what a gate still blocking means."""
    start = time.monotonic()
    while True:
        gate, _ = vsan_gate(client, cluster)
        waited = time.monotonic() - start
        if gate.status != BLOCK or waited >= timeout:
            return gate, waited
        if on_wait is not None:
            on_wait(gate)
        sleep(min(poll, max(0.0, timeout - waited)))
