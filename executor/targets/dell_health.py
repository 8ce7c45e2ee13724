"""Pre-flight gates of a Dell host, as vLCM, OMIVV and OpenManage Enterprise check them
before they touch a server: each gate is a named check with status ``ok``, ``warn`` or
``block`` and a reason, and the worst status of a host's gates is its verdict.

Gates here (through the Redfish client's public methods only):

=================  ==========================================================================
gate               block / warn
=================  ==========================================================================
reachability       block: the iDRAC does not answer or refuses the credentials
lifecycle          block: the Lifecycle Controller (Dell's DellLCService
                   GetRemoteServicesAPIStatus) is not Ready within ``lc_wait`` seconds;
                   an update would be refused (SYS518) or queue behind another tool's work
job_queue          block: an iDRAC job is running or new (another tool is working on the
                   server); warn: jobs scheduled for the next reboot (the rollout clears
                   them before staging) or jobs that failed earlier (their message shown)
catalog            block: the firmware catalog cannot be fetched or parsed; warn: older than
                   ``max_age_days``
=================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .dell import FAILED
from .errors import AuthenticationFailed, LifecycleControllerNotReady, TargetError

OK, WARN, BLOCK = "ok", "warn", "block"
_RANK = {OK: 0, WARN: 1, BLOCK: 2}


@dataclass(frozen=True)
class Gate:
    name: str
    status: str  # ok | warn | block
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def worst(gates: list[Gate]) -> str:
    """The verdict of a set of gates: the worst status among them (ok when there are none)."""
    return max((g.status for g in gates), key=_RANK.__getitem__, default=OK)


def blocking(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if g.status == BLOCK]


def lifecycle_gate(client: Any, *, lc_wait: float) -> Gate:
    """Lifecycle Controller readiness; a controller between two of its own jobs gets
    ``lc_wait`` seconds to become Ready before it blocks."""
    dell = client.require_dell("pre-flight: Lifecycle Controller")
    st = dell.lc_status()
    if not st.ready:
        try:
            st = dell.wait_lc_ready(operation="pre-flight: Lifecycle Controller", timeout=lc_wait)
        except LifecycleControllerNotReady:
            st = dell.lc_status()
            return Gate(
                "lifecycle",
                BLOCK,
                f"Lifecycle Controller not ready after {lc_wait:g} s "
                f"(LCStatus {st.lc_status}, RTStatus {st.rt_status}, server {st.server_status})",
            )
    return Gate("lifecycle", OK, f"Lifecycle Controller ready (server {st.server_status})")


def job_queue_gate(client: Any) -> Gate:
    """The iDRAC job queue: running or new jobs block, scheduled or failed ones warn."""
    jobs = client.require_dell("pre-flight: job queue").jobs()
    busy = [j for j in jobs if not j.finished and j.state != "Scheduled"]
    if busy:
        return Gate(
            "job_queue",
            BLOCK,
            "iDRAC job(s) in progress: "
            + ", ".join(f"{j.id} {j.name or j.job_type} {j.state} {j.percent}%" for j in busy[:5]),
        )
    scheduled = [j for j in jobs if j.state == "Scheduled"]
    failed = [j for j in jobs if j.state in FAILED]
    why = []
    if scheduled:
        why.append(
            f"{len(scheduled)} job(s) scheduled for the next reboot ("
            + ", ".join(f"{j.id} {j.name or j.job_type}" for j in scheduled[:5])
            + "), cleared before staging"
        )
    if failed:
        why.append(
            f"{len(failed)} failed job(s): "
            + "; ".join(f"{j.id} {j.name or j.job_type}: {j.message or j.state}" for j in failed[:5])
        )
    if why:
        return Gate("job_queue", WARN, "; ".join(why))
    return Gate("job_queue", OK, f"job queue idle ({len(jobs)} finished job(s))")


def idrac_gates(connect: Callable[[], Any], *, lc_wait: float) -> tuple[list[Gate], Any]:
    """Every iDRAC gate of one host. ``connect`` returns an open Redfish client (raising a
    target error when it cannot); returns the gates and the client (None when unreachable)."""
    try:
        client = connect()
    except AuthenticationFailed as exc:
        return [Gate("reachability", BLOCK, f"iDRAC refuses the credentials: {exc}")], None
    except TargetError as exc:
        return [Gate("reachability", BLOCK, f"iDRAC unreachable: {exc}")], None
    gates = [Gate("reachability", OK, "iDRAC answers with the sealed credentials")]
    for check in (lambda: lifecycle_gate(client, lc_wait=lc_wait), lambda: job_queue_gate(client)):
        try:
            gates.append(check())
        except TargetError as exc:
            name = "lifecycle" if not any(g.name == "lifecycle" for g in gates) else "job_queue"
            gates.append(Gate(name, BLOCK, f"cannot read it: {exc}"))
    return gates, client


def catalog_gate(fetch: Callable[[], Any], *, max_age_days: float | None = None) -> tuple[Gate, Any]:
    """Catalog reachable and parsed. ``fetch`` returns a :class:`Catalog` or raises; returns
    the gate and the catalog (None when it blocks)."""
    try:
        catalog = fetch()
    except Exception as exc:  # noqa: BLE001 - every failure to fetch or parse is this gate's reason
        return Gate("catalog", BLOCK, str(exc)), None
    age = catalog.age_days()
    what = f"catalog {catalog.version or '?'} reachable, {len(catalog.packages)} package(s)"
    if max_age_days is not None and age is not None and age > max_age_days:
        return Gate("catalog", WARN, f"{what}, {age:.0f} days old (more than {max_age_days:g})"), catalog
    return Gate("catalog", OK, what + (f", {age:.0f} days old" if age is not None else "")), catalog


# ---- what will change -----------------------------------------------------------------------------
# A component row, whatever reported it (the catalog compliance of the pre-flight, the
# console's v_firmware_compliance): component, installed, target, status, criticality, reboot.
# status: update | current | newer_than_catalog | not_in_catalog | not_selected
_STATUS_WORDS = {
    "current": "at the catalog version",
    "newer_than_catalog": "newer than the catalog",
    "not_in_catalog": "not in the catalog",
    "not_selected": "outdated but not selected by the job",
}


def what_will_change(host: str, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """Per host: the changes (one row per component: installed -> target, criticality, reboot)
    and, when there is none, why the host is already compliant (None when nothing is known)."""
    changes = [
        {
            "host": host,
            "component": r.get("component"),
            "installed": r.get("installed"),
            "target": r.get("target"),
            "criticality": r.get("criticality") or "",
            "reboot": bool(r.get("reboot")),
        }
        for r in rows
        if r.get("status") == "update"
    ]
    if changes or not rows:
        return changes, None
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    parts = [
        f"{n} component(s) {_STATUS_WORDS.get(s, s)}"
        for s, n in sorted(counts.items(), key=lambda x: x[0] != "current")
    ]
    return [], "already compliant: " + ", ".join(parts)


def catalog_rows(rows: list[dict[str, Any]], selected: list[str] | None = None) -> list[dict[str, Any]]:
    """Component rows from a catalog compliance report (``ComplianceReport.as_rows``); an
    outdated component the job's ``components`` does not select is ``not_selected``."""
    wanted = {x.lower() for x in selected or []}
    out = []
    for r in rows:
        status = r.get("status")
        if (
            status == "update"
            and wanted
            and str(r.get("component_id")) not in wanted
            and str(r.get("name") or "").lower() not in wanted
        ):
            status = "not_selected"
        out.append(
            {
                "component": r.get("name") or r.get("component_id"),
                "installed": r.get("current"),
                "target": r.get("target"),
                "status": status,
                "criticality": r.get("criticality"),
                "reboot": r.get("reboot_required"),
            }
        )
    return out


# ---- N+1 capacity ---------------------------------------------------------------------------------
def _gib(mb: float) -> str:
    return f"{mb / 1024:.0f} GiB"


def capacity_bound(
    host_memory_mb: dict[str, int],
    running_vm_mb: int,
    ha: dict[str, Any] | None,
) -> tuple[int, Gate]:
    """How many hosts may be out at once so that the hosts left hold the running VMs' memory
    plus HA's failover capacity (N+1), assuming the largest hosts go out first; returns the
    bound and the ``capacity`` gate that explains it.

    HA's failover capacity counts when admission control is on (the rolling update lifts it
    while it runs, but a host failing meanwhile must still find room): a failover level F
    (hosts, or dedicated failover hosts) keeps the F largest remaining hosts free; a
    percentage keeps that share of the remaining memory free. A cluster too small to keep
    that reserve with one host out (two hosts, failover level 1) may still go one host at a
    time when the others hold the VMs: the gate warns that HA cannot restart VMs of a second
    failed host meanwhile. When the others cannot even hold the VMs, it blocks."""
    sizes = sorted(host_memory_mb.values(), reverse=True)
    n = len(sizes)
    ha = ha or {}
    policy = ha.get("admission_control_policy") or {}
    reserve_hosts, reserve_pct, ha_words = 0, 0.0, "HA admission control off: no failover capacity reserved"
    if ha.get("enabled") and ha.get("admission_control_enabled"):
        if policy.get("type") == "resources_percent":
            reserve_pct = float(policy.get("memory_percent") or 0)
            ha_words = f"HA admission control keeps {reserve_pct:g} % of the remaining memory free"
        else:
            reserve_hosts = int(policy.get("failover_level") or ha.get("failover_level") or 1)
            ha_words = f"HA admission control keeps {reserve_hosts} host(s) of failover capacity"

    def usable(k: int, reserve: bool = True) -> float:  # memory for VMs on the hosts left, the k largest out
        left = sizes[k:]
        if not reserve:
            return float(sum(left))
        return sum(left[reserve_hosts:]) * (1 - reserve_pct / 100) if len(left) > reserve_hosts else 0.0

    bound = 0
    for k in range(1, n):
        if usable(k) < running_vm_mb:
            break
        bound = k
    vms = f"N+1: running VMs use {_gib(running_vm_mb)} on {n} host(s) ({_gib(sum(sizes))}); {ha_words}"
    if bound:
        return bound, Gate(
            "capacity",
            OK,
            f"{vms}; with the {bound} largest out the rest hold "
            f"{_gib(usable(bound))} for VMs: at most {bound} host(s) out at once",
        )
    if n > 1 and usable(1, reserve=False) >= running_vm_mb:
        return 1, Gate(
            "capacity",
            WARN,
            f"{vms}; with one host out the other {n - 1} hold the VMs "
            f"({_gib(usable(1, reserve=False))}) but not HA's failover capacity: one host at a time, "
            "and a second host failing meanwhile may leave VMs not restarted",
        )
    return 0, Gate(
        "capacity",
        BLOCK,
        f"{vms}; with one host out the other {max(n - 1, 0)} hold "
        f"{_gib(usable(1, reserve=False))}: not even one host can go out",
    )
