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
psu                block: a power supply Critical or its redundancy lost (Chassis Power);
                   warn: a supply or the redundancy in Warning
thermal            block: a temperature at or above its critical threshold, or a fan Critical
                   (Chassis Thermal); warn: above the non-critical threshold
storage            block: a virtual disk not OK (degraded, failed) or in an operation such as a
                   rebuild, or a drive reporting predicted failure; warn: a drive in Warning
memory             block: a DIMM Critical; warn: a DIMM in Warning (correctable-error storm)
events             block: a Critical entry in the SEL or the Lifecycle Controller log within
                   the last ``event_days`` days; warn: Warning entries in that time
catalog            block: the firmware catalog cannot be fetched or parsed, or its SHA-256 is
                   not the pinned one; warn: older than ``max_age_days``, or no pin to verify
=================  ==========================================================================

The vSphere side (vcenter: connection state and hosts already in maintenance; vsan: vSAN
health and resync) is in ``vsphere_health.py``; capacity (N+1) is below. Which gates may
block is the safety policy's call (``policies/safety.yaml``, ``gates`` of the job type):
:func:`apply_policy` turns a blocking finding of a gate the policy marks ``warn`` into a
warning that says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from .dell import FAILED
from .errors import AuthenticationFailed, LifecycleControllerNotReady, TargetError

OK, WARN, BLOCK = "ok", "warn", "block"
_RANK = {OK: 0, WARN: 1, BLOCK: 2}
# Every gate a rolling update runs, in report order: the one list the safety policy's
# ``gates`` must name (a test holds policies/safety.yaml to it).
GATES = (
    "reachability",
    "lifecycle",
    "job_queue",
    "psu",
    "thermal",
    "storage",
    "memory",
    "events",
    "catalog",
    "vcenter",
    "vsan",
    "capacity",
)
# Readiness score per host: 100 with every gate ok, minus these per finding (0 at worst).
_PENALTY = {OK: 0, WARN: 10, BLOCK: 100}


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


def readiness_score(gates: list[Gate]) -> int:
    """0..100: 100 when every gate is ok, 10 less per warning, 0 when any gate blocks."""
    return max(0, 100 - sum(_PENALTY[g.status] for g in gates))


def gate_policy(policy: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``gates`` section of a job type's safety policy, checked: every gate of
    :data:`GATES` named once with ``block`` or ``warn`` (a gate left out blocks)."""
    policy = dict(policy or {})
    unknown = sorted(set(policy) - set(GATES))
    if unknown:
        raise ValueError(
            f"safety policy gates: unknown gate(s) {', '.join(unknown)}; known: {', '.join(GATES)}"
        )
    bad = sorted(k for k, v in policy.items() if v not in (BLOCK, WARN))
    if bad:
        raise ValueError(f"safety policy gates: {', '.join(bad)} must be block or warn")
    return {g: policy.get(g, BLOCK) for g in GATES}


def apply_policy(gates: list[Gate], policy: Mapping[str, str]) -> list[Gate]:
    """A blocking finding of a gate the policy marks ``warn`` becomes a warning (said so)."""
    return [
        replace(g, status=WARN, reason=f"{g.reason} (warn only: safety policy)")
        if g.status == BLOCK and policy.get(g.name, BLOCK) == WARN
        else g
        for g in gates
    ]


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


# ---- hardware health (standard Redfish resources, read through the client's get_json) ------------
def _get(client: Any, path: str, what: str) -> dict[str, Any]:
    return client.get_json(path, f"pre-flight: {what}")[1]


def _link(doc: dict[str, Any], key: str) -> str | None:
    v = doc.get(key)
    return v.get("@odata.id") if isinstance(v, dict) else None


def _health(x: dict[str, Any]) -> str:
    return str((x.get("Status") or {}).get("Health") or "OK")


def _chassis(client: Any) -> dict[str, Any]:
    col = _get(client, "/redfish/v1/Chassis", "chassis")
    first = (col.get("Members") or [{}])[0].get("@odata.id")
    if not first:
        raise TargetError("no chassis listed", target=getattr(client, "target", ""), operation="pre-flight")
    return _get(client, first, "chassis")


def psu_gate(client: Any, chassis: dict[str, Any]) -> Gate:
    path = _link(chassis, "Power")
    if not path:
        return Gate("psu", WARN, "the chassis lists no Power resource: PSU redundancy unknown")
    doc = _get(client, path, "power supplies")
    psus = doc.get("PowerSupplies") or []
    red = doc.get("Redundancy") or []
    crit = [p.get("Name") or p.get("MemberId") for p in psus if _health(p) == "Critical"]
    lost = [r.get("Name") or "redundancy" for r in red if _health(r) != "OK"]
    if crit or any(_health(r) == "Critical" for r in red):
        why = ([f"{', '.join(map(str, crit))} Critical"] if crit else []) + (
            [f"{', '.join(map(str, lost))} lost"] if lost else []
        )
        return Gate("psu", BLOCK, "power: " + "; ".join(why))
    warn = [p.get("Name") for p in psus if _health(p) == "Warning"] + lost
    if warn:
        return Gate("psu", WARN, "power: " + ", ".join(map(str, warn)) + " in Warning")
    return Gate("psu", OK, f"{len(psus)} power supplies OK, redundancy {'OK' if red else 'not reported'}")


Finding = tuple[str, str] | None  # (BLOCK or WARN, what was found), or None: nothing to say


def _verdict(name: str, findings: list[Finding], ok: str) -> Gate:
    """The gate ``name`` from its findings: BLOCK naming every finding (the blocking ones
    first), WARN naming the warnings, else OK with ``ok``."""
    block = [f[1] for f in findings if f and f[0] == BLOCK]
    warn = [f[1] for f in findings if f and f[0] == WARN]
    if block:
        return Gate(name, BLOCK, f"{name}: " + "; ".join(block + warn))
    if warn:
        return Gate(name, WARN, f"{name}: " + "; ".join(warn))
    return Gate(name, OK, ok)


def _temperature(t: dict[str, Any]) -> Finding:
    r, crit, nc = t.get("ReadingCelsius"), t.get("UpperThresholdCritical"), t.get("UpperThresholdNonCritical")
    name = t.get("Name") or t.get("MemberId")
    if _health(t) == "Critical" or (r is not None and crit is not None and r >= crit):
        return BLOCK, f"{name} {r} °C (critical at {crit} °C)"
    if _health(t) == "Warning" or (r is not None and nc is not None and r >= nc):
        return WARN, f"{name} {r} °C (non-critical at {nc} °C)"
    return None


def _fan(f: dict[str, Any]) -> Finding:
    name = f.get("Name") or f.get("MemberId")
    if _health(f) == "Critical":
        return BLOCK, f"{name} Critical ({f.get('Reading')} {f.get('ReadingUnits') or ''})".strip()
    if _health(f) == "Warning":
        return WARN, f"{name} Warning"
    return None


def thermal_gate(client: Any, chassis: dict[str, Any]) -> Gate:
    path = _link(chassis, "Thermal")
    if not path:
        return Gate("thermal", WARN, "the chassis lists no Thermal resource: temperatures unknown")
    doc = _get(client, path, "thermal")
    findings = [_temperature(t) for t in doc.get("Temperatures") or []]
    findings += [_fan(f) for f in doc.get("Fans") or []]
    return _verdict("thermal", findings, "temperatures and fans OK")


def _virtual_disk(vol: dict[str, Any]) -> Finding:
    """A virtual disk not OK, or with an operation under way (rebuild, background init), blocks."""
    ops = [
        f"{o.get('OperationName')} {o.get('PercentageComplete', '?')}%" for o in vol.get("Operations") or []
    ]
    raid = ((vol.get("Oem") or {}).get("Dell") or {}).get("DellVirtualDisk", {}).get("RaidStatus")
    if _health(vol) != "OK" or ops:
        return BLOCK, f"virtual disk {vol.get('Id')} {raid or _health(vol)}" + (
            f" ({', '.join(ops)})" if ops else ""
        )
    return None


def _drive(drv: dict[str, Any]) -> Finding:
    if drv.get("FailurePredicted"):
        return BLOCK, f"drive {drv.get('Id')} predicts failure"
    if _health(drv) == "Critical":
        return BLOCK, f"drive {drv.get('Id')} Critical"
    if _health(drv) == "Warning":
        return WARN, f"drive {drv.get('Id')} Warning"
    return None


def storage_gate(client: Any, system: dict[str, Any]) -> Gate:
    path = _link(system, "Storage")
    if not path:
        return Gate("storage", WARN, "the system lists no Storage resource: virtual disks unknown")
    findings: list[Finding] = []  # per controller: its virtual disks, then its drives
    volumes = drives = 0
    for m in _get(client, path, "storage").get("Members") or []:
        ctl = _get(client, m["@odata.id"], "storage controller")
        vpath = _link(ctl, "Volumes")
        for v in (_get(client, vpath, "virtual disks").get("Members") or []) if vpath else []:
            findings.append(_virtual_disk(_get(client, v["@odata.id"], "virtual disk")))
            volumes += 1
        for d in ctl.get("Drives") or []:
            findings.append(_drive(_get(client, d["@odata.id"], "drive")))
            drives += 1
    return _verdict("storage", findings, f"{volumes} virtual disk(s) and {drives} drive(s) OK")


def _dimm(dimm: dict[str, Any]) -> Finding:
    if _health(dimm) == "Critical":
        return BLOCK, f"{dimm.get('Id')} Critical"
    if _health(dimm) == "Warning":
        return WARN, f"{dimm.get('Id')} Warning (correctable errors)"
    return None


def memory_gate(client: Any, system: dict[str, Any]) -> Gate:
    path = _link(system, "Memory")
    if not path:
        return Gate("memory", WARN, "the system lists no Memory resource")
    findings = [
        _dimm(_get(client, m["@odata.id"], "DIMM")) for m in _get(client, path, "memory").get("Members") or []
    ]
    return _verdict("memory", findings, f"{len(findings)} DIMM(s) OK")


def events_gate(client: Any, manager: dict[str, Any], *, days: float, now: dt.datetime | None = None) -> Gate:
    """Critical SEL and Lifecycle Controller log entries of the last ``days`` days."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=days)
    path = _link(manager, "LogServices")
    if not path:
        return Gate("events", WARN, "the iDRAC lists no log services: SEL and LC log not checked")
    crit, warn = [], []
    for m in _get(client, path, "log services").get("Members") or []:
        svc = m["@odata.id"].rstrip("/").rsplit("/", 1)[-1]
        if svc not in ("Sel", "Lclog"):
            continue
        for e in _get(client, m["@odata.id"] + "/Entries", f"{svc} entries").get("Members") or []:
            try:
                created = dt.datetime.fromisoformat(str(e.get("Created")).replace("Z", "+00:00"))
            except ValueError:
                continue
            if created.tzinfo is None:
                created = created.replace(tzinfo=dt.UTC)
            if created < since:
                continue
            what = f"{svc} {created:%Y-%m-%d} {e.get('MessageId') or ''} {e.get('Message') or ''}".replace(
                "  ", " "
            )
            if e.get("Severity") == "Critical":
                crit.append(what.strip())
            elif e.get("Severity") == "Warning":
                warn.append(what.strip())
    if crit:
        return Gate(
            "events",
            BLOCK,
            f"{len(crit)} critical event(s) in the last {days:g} days: " + "; ".join(crit[:3]),
        )
    if warn:
        return Gate(
            "events", WARN, f"{len(warn)} warning event(s) in the last {days:g} days: " + "; ".join(warn[:3])
        )
    return Gate("events", OK, f"no critical SEL/LC event in the last {days:g} days")


def hardware_gates(client: Any, *, event_days: float) -> list[Gate]:
    """psu, thermal, storage, memory and events; a gate whose resource cannot be read blocks."""
    out: list[Gate] = []
    try:
        chassis = _chassis(client)
    except TargetError as exc:
        chassis = None
        out += [Gate(n, BLOCK, f"cannot read the chassis: {exc}") for n in ("psu", "thermal")]
    try:
        system = _get(client, "/redfish/v1/Systems/System.Embedded.1", "system")
    except TargetError as exc:
        system = None
        out += [Gate(n, BLOCK, f"cannot read the system: {exc}") for n in ("storage", "memory")]
    checks: list[tuple[str, Callable[[], Gate]]] = []
    if chassis is not None:
        checks += [
            ("psu", lambda: psu_gate(client, chassis)),
            ("thermal", lambda: thermal_gate(client, chassis)),
        ]
    if system is not None:
        checks += [
            ("storage", lambda: storage_gate(client, system)),
            ("memory", lambda: memory_gate(client, system)),
        ]

    def events() -> Gate:
        return events_gate(
            client, _get(client, "/redfish/v1/Managers/iDRAC.Embedded.1", "manager"), days=event_days
        )

    checks.append(("events", events))
    for name, check in checks:
        try:
            out.append(check())
        except TargetError as exc:
            out.append(Gate(name, BLOCK, f"cannot read it: {exc}"))
    return sorted(out, key=lambda g: GATES.index(g.name))


def idrac_gates(
    connect: Callable[[], Any], *, lc_wait: float, event_days: float | None = None
) -> tuple[list[Gate], Any]:
    """Every iDRAC gate of one host. ``connect`` returns an open Redfish client (raising a
    target error when it cannot); returns the gates and the client (None when unreachable).
    With ``event_days`` the hardware gates run too (psu, thermal, storage, memory, events)."""
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
    if event_days is not None:
        gates += hardware_gates(client, event_days=event_days)
    return gates, client


def catalog_gate(
    fetch: Callable[[], Any], *, max_age_days: float | None = None, sha256: str | None = None
) -> tuple[Gate, Any]:
    """Catalog reachable, parsed and verified. ``fetch`` returns a :class:`Catalog` (or a
    ``(catalog, bytes)`` pair, to check ``sha256`` against) or raises; returns the gate and
    the catalog (None when it blocks)."""
    try:
        got = fetch()
    except Exception as exc:  # noqa: BLE001 - every failure to fetch or parse is this gate's reason
        return Gate("catalog", BLOCK, str(exc)), None
    catalog, data = got if isinstance(got, tuple) else (got, None)
    if sha256 and data is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            return Gate(
                "catalog", BLOCK, f"catalog SHA-256 {actual} is not the pinned {sha256.lower()}"
            ), None
    age = catalog.age_days()
    what = f"catalog {catalog.version or '?'} reachable, {len(catalog.packages)} package(s)"
    if sha256 and data is not None:
        what += ", SHA-256 verified"
    elif data is not None:
        return Gate("catalog", WARN, f"{what}; not verified: no SHA-256 pin (give catalog_sha256)"), catalog
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
