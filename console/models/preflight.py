"""The pre-flight report of a rolling update: one page per cluster, before anything changes.

It gathers what operators check by hand (cluster HA/DRS settings, hosts already in
maintenance or not responding, VMs whose devices keep a host from entering maintenance
mode, firmware compliance of the hosts' servers, executor health at the site, other jobs
on the cluster) and ends with the control plane's own dry run of the job, which applies
every safety rule. Exportable as JSON, CSV and Markdown.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from console.api import Api, Row
from console.errors import ConsoleError
from executor.targets.dell_health import what_will_change

VM_DEVICE_FACTS = {
    "has_usb_passthrough": "USB passthrough",
    "has_pci_passthrough": "PCI passthrough",
    "has_vgpu": "vGPU",
    "ft_enabled": "Fault Tolerance",
    "cdrom_connected": "connected CD-ROM/ISO",
    "on_local_storage": "local storage",
}


@dataclass
class Check:
    name: str
    status: str  # ok | warn | block
    detail: str


@dataclass
class PreflightReport:
    cluster: Row
    generated_at: str
    hosts: list[Row] = field(default_factory=list)
    vm_blockers: list[Row] = field(default_factory=list)
    firmware: list[Row] = field(default_factory=list)
    executors: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    plan: Row | None = None
    params: Row = field(default_factory=dict)
    # what will change: one row per host and component to update (installed -> target)
    changes: list[Row] = field(default_factory=list)
    # per host: connection, maintenance, power, health, inventory, and the verdict
    host_gates: list[Row] = field(default_factory=list)
    compliant_hosts: list[str] = field(default_factory=list)
    # host -> why it will be skipped ("already compliant: 7 component(s) at the catalog version")
    compliant_reasons: dict[str, str] = field(default_factory=dict)
    hosts_out_bound: int | None = None
    nothing_to_do: bool = False
    # the executor's gates per host (iDRAC, hardware, events, vCenter) and the vSAN and
    # capacity gates, as the newest pre-flight of this cluster found them: rows of
    # {host, gate, status, reason}, with the job and time they came from
    executor_gates: list[Row] = field(default_factory=list)
    executor_gates_from: Row | None = None

    @property
    def ok(self) -> bool:
        return not self.blocking()

    def blocking(self) -> list[Check]:
        return [c for c in self.checks if c.status == "block"]

    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True, default=str)

    def to_csv(self) -> str:
        """One table: section, item, status, detail (checks, hosts, VM blockers, firmware)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["section", "item", "status", "detail"])
        for c in self.checks:
            w.writerow(["check", c.name, c.status, c.detail])
        for h in self.hosts:
            w.writerow(
                [
                    "host",
                    h.get("name"),
                    h.get("connection_state"),
                    "in maintenance" if h.get("in_maintenance") else "serving",
                ]
            )
        for v in self.vm_blockers:
            w.writerow(["vm_blocker", v["vm"], v["host"], "; ".join(v["reasons"])])
        for g in self.executor_gates:
            w.writerow(["gate", f"{g['host']}/{g['gate']}", g["status"], g["reason"]])
        for f in self.firmware:
            w.writerow(
                [
                    "firmware",
                    f"{f.get('server_name')}/{f.get('component')}",
                    f.get("compliance"),
                    f"{f.get('installed_version')} -> {f.get('target_version') or '?'}"
                    f" ({f.get('criticality') or 'n/a'}{', reboot' if f.get('reboot_required') else ''})",
                ]
            )
        return buf.getvalue()

    def to_markdown(self) -> str:
        c = self.cluster
        lines = [
            f"# Pre-flight: cluster {c.get('name')}",
            "",
            f"generated {self.generated_at}; verdict: **{'ready' if self.ok else 'blocked'}**",
            "",
            "| check | status | detail |",
            "|---|---|---|",
        ]
        lines += [f"| {k.name} | {k.status} | {k.detail} |" for k in self.checks]
        if self.vm_blockers:
            lines += ["", "## VMs that block maintenance mode", "", "| VM | host | why |", "|---|---|---|"]
            lines += [f"| {v['vm']} | {v['host']} | {', '.join(v['reasons'])} |" for v in self.vm_blockers]
        out = [f for f in self.firmware if f.get("compliance") == "outdated"]
        if out:
            lines += [
                "",
                "## Firmware to apply",
                "",
                "| server | component | installed | target | criticality |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {f.get('server_name')} | {f.get('component')} | {f.get('installed_version')} | "
                f"{f.get('target_version')} | {f.get('criticality')} |"
                for f in out
            ]
        if self.executor_gates and self.executor_gates_from:
            src = self.executor_gates_from
            lines += [
                "",
                f"## Gates at the last pre-flight (job {src.get('job_id')}, {src.get('at')})",
                "",
                "| host | gate | status | reason |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {g['host']} | {g['gate']} | {g['status']} | {g['reason']} |" for g in self.executor_gates
            ]
        if self.compliant_reasons:
            lines += ["", "## Already compliant (skipped)", "", "| host | why |", "|---|---|"]
            lines += [f"| {h} | {why} |" for h, why in self.compliant_reasons.items()]
        return "\n".join(lines) + "\n"

    def export(self, path: str | Path, fmt: str | None = None) -> Path:
        p = Path(path)
        fmt = fmt or p.suffix.lstrip(".") or "json"
        text = {"json": self.to_json, "csv": self.to_csv, "md": self.to_markdown}.get(fmt)
        if text is None:
            raise ValueError(f"unknown export format {fmt!r}: json, csv or md")
        p.write_text(text())
        return p


def build_preflight(
    api: Api, cluster: Row, hosts: list[Row], params: Row, options: Row, request_fields: Row
) -> PreflightReport:
    """The pre-flight report: each section's checks in the order an operator reads them,
    ending with the control plane's dry run of the job."""
    now = dt.datetime.now(dt.UTC)
    rep = PreflightReport(cluster=cluster, generated_at=now.isoformat(timespec="seconds"), params=params)
    chosen = set(params.get("host_ids") or []) or {h["id"] for h in hosts}
    hosts = [h for h in hosts if h["id"] in chosen]
    rep.hosts = hosts
    rep.checks += cluster_checks(cluster)
    rep.checks += host_checks(hosts)
    rep.vm_blockers = vm_blockers(api, hosts)
    rep.checks.append(vm_blockers_check(rep.vm_blockers, options))
    rep.firmware = firmware_rows(api, hosts, params)
    rep.checks.append(firmware_check(rep.firmware))
    # what will change, per host and component; health gates per host
    preview_changes(
        rep, api, hosts, names_by_server={h["server_id"]: h["name"] for h in hosts if h.get("server_id")}
    )
    rep.hosts_out_bound = hosts_out_bound(api, params)
    if rep.hosts_out_bound is not None:
        rep.checks.append(hosts_out_check(rep.hosts_out_bound, params))
    # the executor's own gates, as the newest pre-flight of this cluster found them
    rep.checks.append(
        executor_gates(rep, api.last_preflight_report(cluster["id"]) if cluster.get("id") else None)
    )
    rep.executors = [e for e in api.executors() if e.get("site_id") == cluster.get("site_id")]
    rep.checks.append(executor_check(rep.executors))
    rep.checks += dry_run_checks(rep, api, params, request_fields)
    return rep


def cluster_checks(cluster: Row) -> list[Check]:
    """The cluster's HA admission control and DRS settings."""
    if cluster.get("ha_admission_control"):
        ha = Check(
            "ha_admission_control",
            "warn",
            "HA admission control is on: it may refuse maintenance mode "
            "when capacity is tight (the job disables HA while it runs)",
        )
    else:
        ha = Check("ha_admission_control", "ok", "HA admission control off or unknown")
    drs = cluster.get("drs_automation")
    if cluster.get("drs_enabled") is False or (drs and drs != "fullyAutomated"):
        drs_check = Check(
            "drs",
            "warn",
            f"DRS is {'off' if cluster.get('drs_enabled') is False else drs}: VMs will not "
            "be evacuated automatically",
        )
    else:
        drs_check = Check("drs", "ok", f"DRS {drs or 'state unknown'}")
    return [ha, drs_check]


def host_checks(hosts: list[Row]) -> list[Check]:
    """Hosts to update at all, hosts already in maintenance, hosts vCenter does not reach."""
    checks = [] if hosts else [Check("hosts", "block", "the cluster has no hosts to update")]
    in_mm = [h["name"] for h in hosts if h.get("in_maintenance")]
    bad = [f"{h['name']} ({h.get('connection_state')})" for h in hosts if not _reachable(h)]
    checks.append(
        Check(
            "hosts_in_maintenance",
            "warn" if in_mm else "ok",
            f"already in maintenance: {', '.join(in_mm)}" if in_mm else f"{len(hosts)} host(s) serving",
        )
    )
    checks.append(
        Check(
            "host_connection",
            "warn" if bad else "ok",
            f"not connected: {', '.join(bad)}" if bad else "all hosts connected or not yet synced",
        )
    )
    return checks


def _reachable(host: Row) -> bool:
    """vCenter reaches the host, or has not said yet."""
    return host.get("connection_state") in ("connected", "unknown", None)


def vm_blockers(api: Api, hosts: list[Row]) -> list[Row]:
    """The powered-on VMs on ``hosts`` whose devices keep their host from entering maintenance."""
    names = {h["id"]: h["name"] for h in hosts}
    found = []
    for vm in api.vms_on_hosts(sorted(names)):
        reasons = [label for col, label in VM_DEVICE_FACTS.items() if vm.get(col)]
        if reasons and vm.get("power_state") != "off":
            found.append(
                {
                    "vm": vm["name"],
                    "vm_id": vm["id"],
                    "host": names.get(vm.get("host_id"), "?"),
                    "host_id": vm.get("host_id"),
                    "reasons": reasons,
                    "fix": vm_fix(vm),
                    "fix_now": vm_fix_now(vm),
                }
            )
    return found


# what the job does with VMs that cannot move, per blocker policy (options.blocker_default)
_BLOCKER_POLICY_OUTCOME = {
    "ask": "the job will pause for your decisions",
    "power_off_vm": "they will be powered off and on",
    "skip_host": "their hosts will be skipped",
}


def vm_blockers_check(blockers: list[Row], options: Row) -> Check:
    if not blockers:
        return Check("vm_blockers", "ok", "no VM device blocks maintenance mode")
    policy = options.get("blocker_default", "ask")
    what = _BLOCKER_POLICY_OUTCOME.get(policy, policy)
    return Check("vm_blockers", "warn", f"{len(blockers)} VM(s) cannot be moved: {what}")


def firmware_rows(api: Api, hosts: list[Row], params: Row) -> list[Row]:
    """The firmware compliance of the hosts' servers (the dry run of the firmware step),
    limited to the job's components when it names some."""
    server_ids = sorted({h["server_id"] for h in hosts if h.get("server_id")})
    if not server_ids:
        return []
    rows = api._rest(
        "firmware compliance",
        lambda c: (
            c.table("v_firmware_compliance")
            .select("*")
            .in_("server_id", server_ids)
            .order("server_name")
            .order("component")
        ),
    )
    wanted = set(params.get("firmware", {}).get("components") or [])
    return [r for r in rows if not wanted or r.get("component") in wanted]


def firmware_check(firmware: list[Row]) -> Check:
    outdated = [f for f in firmware if f.get("compliance") == "outdated"]
    urgent = [f for f in outdated if f.get("criticality") == "urgent"]
    if not firmware:
        return Check(
            "firmware", "warn", "no firmware inventory for these servers yet (run inventory_refresh)"
        )
    if not outdated:
        return Check(
            "firmware", "warn", "every component is already at the catalog version: nothing to update"
        )
    return Check(
        "firmware",
        "ok",
        f"{len(outdated)} component(s) to update" + (f", {len(urgent)} urgent" if urgent else ""),
    )


def hosts_out_check(bound: int, params: Row) -> Check:
    return Check(
        "hosts_out",
        "ok",
        f"at most {bound} host(s) out of service at once "
        f"(hosts at once {params.get('max_parallel_hosts', 1)}, capped by the safety policy)",
    )


def executor_check(executors: list[Row]) -> Check:
    """A healthy executor at the site, or the job waits."""
    healthy = [e for e in executors if e.get("health") == "healthy"]
    if healthy:
        return Check("executor", "ok", f"{len(healthy)} healthy executor(s) at the site")
    return Check("executor", "warn", "no healthy executor at the site: the job will wait until one runs")


def dry_run_checks(rep: PreflightReport, api: Api, params: Row, request_fields: Row) -> list[Check]:
    """The control plane's dry run: every safety rule, with the real targets; then where the
    job's credentials may be presented. Sets ``rep.plan``."""
    try:
        res = api.create_job("rolling_cluster_update", params, dry_run=True, **request_fields)
        rep.plan = res.get("plan")
        plan = rep.plan or {}
        return [
            Check(
                "dry_run",
                "warn" if rep.nothing_to_do else "ok",
                f"accepted by the control plane: {dry_run_work(rep, len(plan.get('tasks') or []))}; "
                f"risk {plan.get('risk')}, scheduled {plan.get('scheduled_for')}",
            ),
            credentials_check(rep.plan or {}),
        ]
    except ConsoleError as exc:
        return [Check("dry_run", "block", f"{exc.message} [{exc.code}]")]


def dry_run_work(rep: PreflightReport, n: int) -> str:
    """What the job would do with its ``n`` planned hosts, in words."""
    if rep.nothing_to_do:
        return (
            f"nothing to do: all {n} host(s) are at the catalog version as last inventoried; the job would "
            "only re-check each host against the catalog and skip it"
        )
    if rep.changes:
        return f"{n} host(s) checked, {len({c['host'] for c in rep.changes})} to update"
    return f"{n} host(s) checked against the catalog"


def preview_changes(
    rep: PreflightReport, api: Api, hosts: list[Row], names_by_server: dict[str, str]
) -> None:
    """Fill ``changes``, ``compliant_hosts``, ``host_gates`` and ``nothing_to_do`` from the
    compliance rows already in ``rep.firmware`` and the hosts' servers."""
    by_server: dict[str, list[Row]] = {}
    for f in rep.firmware:
        by_server.setdefault(str(f.get("server_id")), []).append(f)
    servers = {s["id"]: s for s in api.servers(ids=sorted(names_by_server))} if names_by_server else {}
    for h in hosts:
        sid = h.get("server_id")
        rows = by_server.get(str(sid), []) if sid else []
        # the same words as the executor's pre-flight report (executor/targets/dell_health.py)
        changes, why_compliant = what_will_change(h["name"], [compliance_row(f) for f in rows])
        rep.changes += changes
        if why_compliant:
            rep.compliant_hosts.append(h["name"])
            rep.compliant_reasons[h["name"]] = why_compliant
        rep.host_gates.append(host_gate(h, servers.get(sid, {}) if sid else {}, rows, why_compliant))
    inventoried = [g for g in rep.host_gates if g["verdict"] != _NO_INVENTORY]
    rep.nothing_to_do = bool(hosts) and len(inventoried) == len(hosts) and not rep.changes


_NO_INVENTORY = "unknown: refresh inventory"
# what holds a host back, checked in this order: (gate, why or None) from the host, its
# server and the server's compliance rows; a block outranks a warn
_HOST_GATE_RULES: tuple[tuple[str, Callable[[Row, Row, list[Row]], str | None]], ...] = (
    ("block", lambda h, srv, rows: None if h.get("server_id") else "not linked to a Dell server"),
    ("block", lambda h, srv, rows: None if _reachable(h) else f"vCenter says {h.get('connection_state')}"),
    ("warn", lambda h, srv, rows: "already in maintenance" if h.get("in_maintenance") else None),
    (
        "warn",
        lambda h, srv, rows: (
            None if srv.get("health") in (None, "ok", "unknown") else f"server health {srv.get('health')}"
        ),
    ),
    ("warn", lambda h, srv, rows: "no firmware inventory yet" if h.get("server_id") and not rows else None),
)


def host_gate(h: Row, srv: Row, rows: list[Row], why_compliant: str | None) -> Row:
    """One host's row of the pre-flight: connection, maintenance, power, health, updates,
    the verdict, and the gate (ok, warn or block) with why."""
    outdated = [f for f in rows if f.get("compliance") == "outdated"]
    why = [why_compliant] if why_compliant else []
    gates = set()
    for gate, rule in _HOST_GATE_RULES:
        reason = rule(h, srv, rows)
        if reason:
            why.append(reason)
            gates.add(gate)
    if rows and not outdated:
        verdict = "will be skipped: already compliant"
    else:
        verdict = f"{len(outdated)} update(s)" if outdated else _NO_INVENTORY
    return {
        "host": h["name"],
        "server": srv.get("name") or "",
        "connection": h.get("connection_state") or "unknown",
        "maintenance": "yes" if h.get("in_maintenance") else "no",
        "power": srv.get("power_state") or "unknown",
        "health": srv.get("health") or "unknown",
        "updates": len(outdated),
        "verdict": verdict,
        "gate": "block" if "block" in gates else "warn" if gates else "ok",
        "why": "; ".join(why),
    }


def executor_gates(rep: PreflightReport, last: Row | None) -> Check:
    """Fill ``executor_gates`` from a stored pre-flight report (the gates that need the iDRAC
    and the vSAN service run in the job's pre-flight only) and say what it found; what it
    found is as old as that report, and the new job checks every gate again."""
    if not last:
        return Check(
            "executor_gates",
            "ok",
            "no earlier pre-flight of this cluster: the job's pre-flight checks every gate "
            "(iDRAC, hardware, events, vCenter, vSAN, capacity) before it changes anything",
        )
    rep.executor_gates_from = {"job_id": last.get("job_id"), "at": last.get("at")}
    for host, h in sorted((last.get("gates") or {}).items()):
        for g in h.get("gates") or []:
            rep.executor_gates.append(
                {"host": host, "gate": g.get("name"), "status": g.get("status"), "reason": g.get("reason")}
            )
    for name in ("vsan", "capacity"):
        g = last.get(name)
        if isinstance(g, dict) and g.get("status"):
            rep.executor_gates.append(
                {"host": "(cluster)", "gate": name, "status": g["status"], "reason": g.get("reason") or ""}
            )
    bad = [g for g in rep.executor_gates if g["status"] == "block"]
    warn = [g for g in rep.executor_gates if g["status"] == "warn"]
    when = f"the last pre-flight ({last.get('at')})"
    if bad:
        return Check(
            "executor_gates",
            "warn",
            f"{when} was blocked by: "
            + "; ".join(f"{g['host']}: {g['gate']} ({g['reason']})" for g in bad[:5])
            + " - the job checks again and refuses if it still holds",
        )
    if warn:
        return Check(
            "executor_gates",
            "ok",
            f"{when} passed with warnings: " + "; ".join(f"{g['host']}: {g['gate']}" for g in warn[:5]),
        )
    return Check("executor_gates", "ok", f"{when} passed every gate; the job checks them again")


_COMPLIANCE_STATUS = {"outdated": "update", "compliant": "current", "unknown": "not_in_catalog"}


def compliance_row(f: Row) -> Row:
    """A v_firmware_compliance row in the pre-flight's component shape (dell_health)."""
    return {
        "component": f.get("component"),
        "installed": f.get("installed_version"),
        "target": f.get("target_version"),
        "status": _COMPLIANCE_STATUS.get(f.get("compliance") or "", "unknown"),
        "criticality": f.get("criticality"),
        "reboot": f.get("reboot_required"),
    }


VM_FIXES = {
    "cdrom_connected": "disconnect its CD-ROM/ISO",
    "has_usb_passthrough": "remove its USB passthrough device",
    "has_pci_passthrough": "remove its PCI passthrough device",
    "has_vgpu": "power it off (vGPU VMs cannot move)",
    "ft_enabled": "turn Fault Tolerance off",
    "on_local_storage": "move it to shared storage",
}


def vm_fix(vm: Row) -> str:
    """What the operator can do before the job starts so the VM no longer blocks; else the
    blocker policy decides (ask: the job pauses for a decision; power off; skip the host)."""
    fixes = [text for col, text in VM_FIXES.items() if vm.get(col)]
    return (
        " and ".join(fixes) + ", or power it off now" if fixes else "power it off now"
    ) + "; otherwise the blocker policy applies"


# the fixes the pre-flight can carry out at once, as a vm_operation job (its action -> words)
VM_FIX_NOW = {
    "disconnect_media": "disconnect its CD-ROM/floppy media now",
    "shutdown_guest": "shut its guest OS down now",
    "power_off": "power it off now",
}


def vm_fix_now(vm: Row) -> list[str]:
    """The vm_operation actions that clear the VM's blocker: disconnecting its media when
    that is its only blocker; shutting it down or powering it off always (a powered-off VM
    blocks nothing)."""
    blockers = [col for col in VM_DEVICE_FACTS if vm.get(col)]
    return (["disconnect_media"] if blockers == ["cdrom_connected"] else []) + ["shutdown_guest", "power_off"]


def hosts_out_bound(api: Api, params: Row) -> int | None:
    """How many hosts the job takes out of service at once: the hosts-at-once option,
    capped by the safety policy (the executor computes the same, rolling_update._max_out)."""
    try:
        pol = {p["job_type"]: p for p in api.safety_policies()}.get("rolling_cluster_update") or {}
    except ConsoleError:
        pol = {}
    cap = pol.get("max_hosts_out_per_cluster")
    want = int(params.get("max_parallel_hosts") or 1)
    return max(1, min(want, int(cap))) if cap else want


def credentials_check(plan: Row) -> Check:
    """Where the job's credentials may be presented, as their admin sealed them: unverified
    TLS (an admin's explicit "insecure", plain HTTP, unchecked SSH host keys) is a warning,
    a credential sealed without endpoints (the executor presents it nowhere) blocks."""
    creds = plan.get("credentials") or []
    nowhere = [c["name"] for c in creds if not c.get("presentable")]
    if nowhere:
        return Check(
            "credentials",
            "block",
            f"sealed without endpoints, so the executor will not present them: "
            f"{', '.join(nowhere)} (an admin reseals them naming their endpoints)",
        )
    weak = [f"{c['name']}: {e}" for c in creds for e in c.get("unverified_tls") or []]
    if weak:
        return Check(
            "credentials",
            "warn",
            f"sealed by an admin for unverified TLS: {'; '.join(weak[:5])}"
            + (f" and {len(weak) - 5} more" if len(weak) > 5 else ""),
        )
    return Check(
        "credentials",
        "ok",
        f"{len(creds)} credential set(s), each presented only to its sealed, verified endpoints",
    )
