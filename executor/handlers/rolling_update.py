"""``rolling_cluster_update``: update the firmware of every host of a vCenter cluster, a few
hosts at a time, without ever taking the cluster down, and leave the cluster as it was.

Steps (priority order):

=========================  =========  ========================================================
step                       resumable  what it does
=========================  =========  ========================================================
preflight                  yes        vCenter and every iDRAC reachable, inventory synced,
                                      firmware compliance against the catalog per host
                                      (early exit when nothing needs updating), gates per
                                      host (targets/dell_health.py: reachability, Lifecycle
                                      Controller, job queue, PSU, thermal, storage, memory,
                                      SEL/LC events; vsphere_health.py: vCenter state of
                                      every host, vSAN health and resync; the catalog and
                                      its SHA-256 pin), the safety policy's ``gates``
                                      deciding which block, readiness per host, what will change
                                      per host and component and why compliant hosts are
                                      skipped, the N+1 capacity bound on the hosts out at
                                      once (HA admission control considered); one pre-flight
                                      report per cluster stored as an artifact; refuses,
                                      naming the gate, before anything changes
blocker_scan               yes        VMs that cannot move off planned hosts; pauses the job
                                      with exactly those blockers, and after the resume
                                      applies the operator's decisions (power a VM off and
                                      back on around its host, skip a host)
record_cluster_settings    yes        HA and DRS settings recorded exactly (checkpoint)
relax_cluster_settings     yes        HA admission control off (HA itself stays on to protect
                                      VMs), DRS fully automated, so evacuation can proceed
rollout                    yes*       per wave of hosts (wave size: the job's
                                      ``max_parallel_hosts`` capped by the safety policy's
                                      ``max_hosts_out_per_cluster`` and the N+1 bound; 1 on
                                      vSAN, each host after vSAN resync went idle): SCP backup
                                      stored, firmware staged while the host still serves VMs,
                                      resolved VMs powered off, maintenance mode (retried,
                                      vSAN object action) with an evacuation budget
                                      proportional to the host's VM memory, one reboot that
                                      applies the staged firmware, iDRAC and ESXi back, versions
                                      verified, maintenance exited, VMs powered back on
restore_cluster_settings   yes        HA/DRS exactly as recorded, verified by reading back
cleanup (cleanup step)     -          on every exit path (success, failure, cancel, after crash
                                      recovery): settings restored, hosts this job put into
                                      maintenance taken out once they respond, VMs it powered
                                      off powered on, firmware staged on a host interrupted
                                      before its reboot removed
=========================  =========  ========================================================

\\* ``rollout`` is resumable because it resumes from its saved per-host phase and never
repeats a flash: a host found in phase ``apply`` after a crash is not flashed again - the
executor waits for the iDRAC's own jobs and the host to come back and verifies the versions.

Why the blocker scan runs before HA is touched (the seed relaxes HA first): a job paused
for an operator's decision then leaves the cluster exactly as it found it, however long the
decision takes.

The failure budget: a failed host (evacuation timeout, firmware job failure, versions not
as promised, host not back) is recorded on its task and taken out of maintenance when it
responds; once more hosts failed than ``failure_budget`` (a count or a percentage of the
hosts to update) allows, the rollout stops and the job fails (cleanup still runs).
docs/rollout-safety.md describes the gates, vSAN, the budget and the retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from dataclasses import asdict
from typing import Any

from ..binding import Credential
from ..host_maintenance import stamp_entered, stamp_exited
from ..jobparams import BlockerDefault, RollingClusterUpdateParams
from ..steps import (
    Blocker,
    BlockersFound,
    JobCancelled,
    JobHandler,
    PauseRequested,
    ShutdownRequested,
    StepContext,
    StepError,
    cleanup_step,
    step,
)
from ..targets.bmc_settle import SettleOptions, settle
from ..targets.catalog import Catalog, UpdatePackage
from ..targets.dell import FAILED, IDRAC_COMPONENT_ID
from ..targets.dell_health import (
    BLOCK,
    Gate,
    apply_policy,
    capacity_bound,
    catalog_gate,
    catalog_rows,
    gate_policy,
    idrac_gates,
    readiness_score,
    what_will_change,
    worst,
)
from ..targets.errors import JobFailed, TargetError, VerificationFailed
from ..targets.redfish import RedfishClient
from ..targets.vsphere import VSphereClient
from ..targets.vsphere_blockers import BLOCKING, host_blockers, preflight_report
from ..targets.vsphere_health import vcenter_gate, vsan_gate, wait_vsan_idle
from ..vocabulary import TaskStatus
from . import register
from ._replication_gate import replication_lag_blockers
from ._vsphere import (
    HOST,
    FailureBudgetExhausted,
    InventoryMissing,
    TargetProfile,
    VSphereHandlerError,
    credential,
    one,
    sync_inventory,
    vcenter_row,
    vcenter_session,
)

log = logging.getLogger("rackpilot.executor.rolling_update")

# Blocker kinds of the scan that the data model names directly; the others are 'other'.
DB_BLOCKER_KINDS = {
    "usb_passthrough",
    "pci_passthrough",
    "vgpu",
    "fault_tolerance",
    "cdrom_connected",
    "local_storage",
}
# Evacuation budget: a floor plus time per GiB of powered-on VM memory (vMotion copies
# memory; ~1 GiB per 10-15 s on a 10 GbE vMotion network), capped by vmotion_timeout_s.
EVACUATION_FLOOR_S = 60.0
EVACUATION_S_PER_GIB = 15.0


class CatalogUnavailable(VSphereHandlerError):
    """The firmware catalog could not be fetched or parsed."""


class PreflightBlocked(VSphereHandlerError):
    """A pre-flight gate blocks a host the rollout would update (the gate named)."""


class HostFailed(VSphereHandlerError):
    """One host's update failed; counted against the failure budget."""


class VsanNotIdle(VSphereHandlerError):
    """vSAN still resyncing or red before a host: the rollout stops (the vsan gate named)."""


def _kind(scan_kind: str) -> str:
    return scan_kind if scan_kind in DB_BLOCKER_KINDS else "other"


def _packages(rows: list[dict[str, Any]]) -> list[UpdatePackage]:
    return [UpdatePackage(**r) for r in rows]


def evacuation_budget_s(memory_mb: int, cap_s: float) -> float:
    """Evacuation budget (real-world seconds) for a host with ``memory_mb`` of running VMs."""
    return min(cap_s, EVACUATION_FLOOR_S + EVACUATION_S_PER_GIB * memory_mb / 1024)


# --- per-host work against the targets (blocking; run in a thread) --------------------------------
def clear_unfinished(c: RedfishClient) -> bool:
    """Clear the iDRAC job queue when it holds unfinished jobs (staged, or still downloading
    and about to be staged); True if it did. Only for a host this job has not rebooted to
    apply: the pre-flight's job_queue gate let no foreign job run there."""
    dell = c.require_dell("unstage firmware")
    if any(not j.finished for j in dell.jobs()):
        dell.clear_job_queue()
        return True
    return False


# Phases of a host in which its staged firmware has not been applied yet: a job that ends
# there (interrupted, cancelled) must not leave it to apply at some later, unplanned reboot.
BEFORE_APPLY = frozenset({"backup", "stage", "rescan", "maintenance"})


class HostWork:
    """The target side of one host's update; every method is blocking."""

    def __init__(
        self, profile: TargetProfile, vc: VSphereClient, host: dict[str, Any], idrac_cred: Credential
    ):
        self.profile = profile
        self.vc = vc
        self.host = host
        self.cred = idrac_cred  # released only to the endpoints sealed with it
        self._client: RedfishClient | None = None

    def redfish(self) -> Any:
        """The host's one Redfish session (field rule: keep one session per BMC and reuse
        it); sushy logs in again by itself after an iDRAC restart dropped it."""
        if self._client is None:
            ep = self.profile.idrac_endpoint(self.host["server"], self.cred)
            self._client = RedfishClient(ep, self.profile.dell_timeouts()).__enter__()
        return contextlib.nullcontext(self._client)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.__exit__(None, None, None)

    def scp_backup(self) -> bytes:
        with self.redfish() as c:
            return c.require_dell("SCP backup").export_scp().text.encode()

    def stage(self, packages: list[UpdatePackage]) -> list[str]:
        with self.redfish() as c:
            return self._stage(c, packages)

    @staticmethod
    def _stage(c: RedfishClient, packages: list[UpdatePackage]) -> list[str]:
        """Stage reboot-required packages (job Scheduled, applied at the next boot) and apply
        the ones the iDRAC applies by itself now: all while the host still serves VMs."""
        staged: list[str] = []
        dell = c.require_dell("stage firmware")
        if any(not j.finished for j in dell.jobs()):
            dell.clear_job_queue()  # stale or half-staged entries from an earlier attempt
        inventory = c.firmware_inventory()
        current = {fc.component_id: fc.version for fc in inventory}
        push_uri = None
        todo = [p for p in packages if current.get(p.component_id) != p.target_version]
        if todo:
            push_uri = dell.multipart_push_uri()
        # reboot-required first: the iDRAC's own package, applied now, restarts the iDRAC
        # last, so the inventory read above stays the one the earlier packages target
        for p in sorted(todo, key=lambda p: not p.reboot_required):
            # pushed when the iDRAC advertises a MultipartHttpPushUri, else SimpleUpdate;
            # iDRAC10 gets the device in Targets (PLDM devices are updated only so)
            jid, _ = dell.stage_package(
                p.image_uri,
                component_id=p.component_id,
                reboot_required=p.reboot_required,
                inventory=inventory,
                push_uri=push_uri,
            )
            stop = frozenset({"Scheduled"}) if p.reboot_required else frozenset()
            job = dell.wait_job(jid, stop_at=stop, operation=f"stage {p.name or p.component_id}")
            if job.state == "Scheduled":
                staged.append(jid)
            elif p.component_id == IDRAC_COMPONENT_ID or "idrac" in (p.name or "").lower():
                # Quirk: new iDRAC firmware restarts the iDRAC right after its job completes.
                dell.wait_idrac_back(operation=f"apply {p.name}", expect_down=True)
            else:
                dell.wait_lc_ready(operation=f"apply {p.name}")
        return staged

    def unstage(self) -> None:
        """Remove staged jobs that never ran: they would apply at the host's next reboot."""
        with self.redfish() as c:
            dell = c.require_dell("unstage firmware")
            if any(j.state == "Scheduled" for j in dell.jobs()):
                dell.clear_job_queue()

    def boot_time(self) -> str:
        return self.vc.host(self.host["moref"]).boot_time

    def reboot_apply(self, staged: list[str]) -> dict[str, Any]:
        """One reboot applies every staged job; wait for each and for the LC, then for the
        BMC to settle. Returns where the time went (real seconds) and the settle's polls."""
        t0 = time.monotonic()
        with self.redfish() as c:
            dell = c.require_dell("apply firmware")
            c.power("graceful_restart" if c.power_state() == "On" else "on")
            for jid in staged:
                dell.wait_job(jid, operation="apply staged firmware")
            t_jobs = time.monotonic()
            dell.wait_lc_ready(operation="firmware applied")
        t_lc = time.monotonic()
        settled = self.settle_bmc()
        return {
            "jobs_s": round(t_jobs - t0, 3),
            "lc_s": round(t_lc - t_jobs, 3),
            "settle_s": round(time.monotonic() - t_lc, 3),
            "settle_polls": settled["polls"],
        }

    def settle_bmc(self) -> dict[str, Any]:
        """Wait until the iDRAC answered well N times in a row (LC ready, no job running):
        after a reboot or flash, and after a crash in the middle of one (bmc_settle)."""

        def connect() -> RedfishClient:
            with self.redfish() as c:  # raises while the iDRAC refuses a session
                return c

        res = settle(
            connect, SettleOptions.from_env(self.profile.time_scale), what=f"iDRAC of {self.host['name']}"
        )
        return {"polls": res.polls, "unreachable_polls": res.unreachable_polls, "seconds": res.seconds}

    def apply_in_maintenance(self, packages: list[UpdatePackage]) -> None:
        """Naive path: download, stage and apply everything while the host is out."""
        with self.redfish() as c:
            report = c.require_dell("firmware update").update_firmware(packages)
            report.raise_for_failures(c.target)

    def settle_after_interruption(self) -> dict[str, Any]:
        """Resume after an executor crash in the middle of an apply: let the iDRAC finish
        what it was doing (its jobs run without us), never start anything new. The iDRAC may
        still be rebooting: it is judged only once it has settled (N good answers in a row,
        LC ready, no job running), never on its first refusal."""
        settled = self.settle_bmc()
        with self.redfish() as c:
            failed = [j for j in c.require_dell("resume firmware apply").jobs() if j.state in FAILED]
            if failed:
                raise JobFailed(
                    f"firmware job {failed[0].id} ended {failed[0].state}: {failed[0].message}",
                    job_id=failed[0].id,
                    state=failed[0].state,
                    target=c.target,
                    operation="resume firmware apply",
                )
        return settled

    def wait_esxi(self, booted_after: str | None) -> None:
        self.vc.wait_for_host(self.host["moref"], booted_after=booted_after)

    def verify(self, packages: list[UpdatePackage]) -> dict[str, str]:
        with self.redfish() as c:
            after = {fc.component_id: fc.version for fc in c.firmware_inventory()}
        wrong = {
            p.name or p.component_id: f"{after.get(p.component_id)} (wanted {p.target_version})"
            for p in packages
            if after.get(p.component_id) != p.target_version
        }
        if wrong:
            raise VerificationFailed(
                f"{self.host['name']}: versions after the update: "
                + ", ".join(f"{k} {v}" for k, v in wrong.items())
            )
        return {p.component_id: after[p.component_id] for p in packages}

    def running_vms(self, morefs: list[str]) -> list[str]:
        return [m for m in morefs if self.vc.vm_power_state(m) == "poweredOn"]


@register
class RollingClusterUpdateHandler(JobHandler):
    job_type = "rolling_cluster_update"

    def validate(self, job: dict[str, Any]) -> None:
        try:
            params = RollingClusterUpdateParams.model_validate(job.get("params") or {})
        except ValueError as exc:
            raise StepError(f"invalid rolling_cluster_update params: {exc}") from None
        if params.esxi is not None:
            raise StepError(
                "an ESXi upgrade in the same reboot is not supported yet; run esxi_upgrade "
                "after the firmware rollout"
            )

    # helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _params(ctx: StepContext) -> RollingClusterUpdateParams:
        return RollingClusterUpdateParams.model_validate(ctx.params)

    async def _vcenter(self, ctx: StepContext) -> tuple[dict[str, Any], dict[str, Any]]:
        params = self._params(ctx)
        cluster = await one(
            ctx,
            "clusters",
            "id,name,moref,vcenter_id,site_id",
            f"cluster {params.cluster_id}",
            id=str(params.cluster_id),
        )
        vc = await vcenter_row(ctx, cluster["vcenter_id"], what=f"vCenter of cluster {cluster['name']}")
        return cluster, vc

    def _gates_policy(self, ctx: StepContext) -> dict[str, str]:
        """Which gates block (policies/safety.yaml, the job type's ``gates``)."""
        jt = (ctx.engine.policy.data.get("job_types") or {}).get(self.job_type) or {}
        try:
            return gate_policy(jt.get("gates"))
        except ValueError as exc:
            raise StepError(str(exc)) from None

    def _max_out(self, ctx: StepContext) -> int:
        if ctx.checkpoint.get("vsan"):
            return 1  # vSAN: one host at a time whatever the policy says (FTT=1 keeps one copy)
        jt = (ctx.engine.policy.data.get("job_types") or {}).get(self.job_type) or {}
        policy_max = int(jt.get("max_hosts_out_per_cluster") or 1)
        # the N+1 capacity bound the pre-flight computed (never above the policy)
        capacity = int(ctx.checkpoint.get("capacity_bound") or policy_max)
        return max(1, min(self._params(ctx).max_parallel_hosts, policy_max, capacity))

    # steps -----------------------------------------------------------------------------------------
    @step(100, resumable=True)
    async def preflight(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        profile = TargetProfile.load()
        cluster, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc, profile) as client:
            inv = await asyncio.to_thread(client.inventory)
        if cluster["moref"] not in inv.clusters:
            raise InventoryMissing(
                f"cluster {cluster['name']} ({cluster['moref']}) is not in vCenter {vc['name']}"
            )
        await sync_inventory(ctx, vc, inv)
        c = inv.clusters[cluster["moref"]]
        if not c.drs.get("enabled"):
            raise VSphereHandlerError(
                f"DRS is disabled on cluster {c.name}: maintenance mode cannot evacuate VMs; enable DRS first"
            )
        rows = await ctx.select(
            "esxi_hosts",
            "id,name,moref,server_id,cluster_id,in_maintenance,connection_state",
            cluster_id=cluster["id"],
        )
        by_id = {str(r["id"]): r for r in rows}
        if params.host_ids:
            missing = [str(h) for h in params.host_ids if str(h) not in by_id]
            if missing:
                raise InventoryMissing(f"host(s) {', '.join(missing)} are not in cluster {c.name}")
            hosts = [by_id[str(h)] for h in params.host_ids]
        else:
            hosts = sorted(rows, key=lambda r: r["name"])
        policy = self._gates_policy(ctx)
        ctx.checkpoint["vsan"] = bool(c.vsan_enabled)
        # Hosts already out of service count against the policy: the vcenter gate of every
        # host of the cluster (a host out that the job would not update still counts).
        vc_gates = {
            r["name"]: apply_policy([vcenter_gate(inv.hosts[r["moref"]])], policy)[0]
            for r in rows
            if r["moref"] in inv.hosts
        }
        cat_gate, catalog = await asyncio.to_thread(
            catalog_gate,
            lambda: self._catalog(params.firmware.stored_catalog_url(), raw=True),
            sha256=params.firmware.catalog_sha256,
        )
        [cat_gate] = apply_policy([cat_gate], policy)
        if catalog is None:
            raise CatalogUnavailable(f"pre-flight gate catalog blocks: {cat_gate.reason}")
        repo = params.firmware.stored_catalog_url().rsplit("/", 1)[0]
        plan, report_hosts, blocked, changes, compliant = [], {}, [], [], {}
        for seq, h in enumerate(hosts):
            if not h.get("server_id"):
                raise InventoryMissing(
                    f"host {h['name']} is not linked to a Dell server (service tag or BMC address); "
                    "register the server and run vcenter_sync"
                )
            server = await one(
                ctx,
                "servers",
                "id,name,idrac_address,credential_set_id,details",
                f"server of {h['name']}",
                id=h["server_id"],
            )
            cred = await credential(ctx, server.get("credential_set_id"), f"iDRAC of {h['name']}")
            entry = {
                "id": str(h["id"]),
                "name": h["name"],
                "moref": h["moref"],
                "server_id": str(server["id"]),
                "server": {k: server[k] for k in ("id", "name", "idrac_address", "details")},
                "credential_set_id": server["credential_set_id"],
                "seq": seq,
            }
            packages, facts = await asyncio.to_thread(
                self._compliance,
                profile,
                entry,
                cred,
                catalog,
                repo,
                params.firmware.components,
                params.event_days,
                policy,
            )
            vg = vc_gates.get(h["name"])
            if vg is not None:
                facts["gates"].append(vg.as_dict())
                gs = [Gate(**g) for g in facts["gates"]]
                facts["verdict"], facts["readiness"] = worst(gs), readiness_score(gs)
            report_hosts[h["name"]] = facts
            host_changes, why_compliant = what_will_change(
                h["name"], catalog_rows(facts.get("components") or [], params.firmware.components)
            )
            changes += host_changes
            if packages or facts["verdict"] == BLOCK and not facts.get("components"):
                blocked += [
                    f"{h['name']}: {g['name']} ({g['reason']})"
                    for g in facts["gates"]
                    if g["status"] == BLOCK
                ]
            memory = sum(
                inv.vms[v].memory_mb
                for v in inv.hosts[h["moref"]].vms
                if v in inv.vms and inv.vms[v].powered_on
            )
            entry["vm_memory_mb"] = memory
            if packages:
                entry["packages"] = [asdict(p) for p in packages]
                plan.append(entry)
                await ctx.update_task(
                    HOST,
                    entry,
                    TaskStatus.PENDING,
                    seq=seq,
                    details={
                        "updates": [p.name or p.component_id for p in packages],
                        "readiness": facts["verdict"],
                        "gates": facts["gates"],
                    },
                )
            elif facts.get("components") is not None:
                compliant[h["name"]] = why_compliant or "already compliant"
                await ctx.update_task(
                    HOST, entry, TaskStatus.SKIPPED, seq=seq, details={"reason": compliant[h["name"]]}
                )
        report = preflight_report(inv, c.moid, [h["moref"] for h in hosts])
        report["firmware"] = report_hosts
        report["catalog"] = {
            "url": params.firmware.catalog_url,
            "version": catalog.version,
            "age_days": catalog.age_days(),
            "gate": cat_gate.as_dict(),
        }
        report["gates"] = {
            name: {"verdict": f["verdict"], "readiness": f.get("readiness"), "gates": f["gates"]}
            for name, f in report_hosts.items()
        }
        report["gate_policy"] = policy  # which gates block (policies/safety.yaml)
        # a host out of service that the job would not update still counts against the hosts out
        blocked += [
            f"{name}: vcenter ({g.reason})"
            for name, g in vc_gates.items()
            if g.status == BLOCK and f"{name}: vcenter ({g.reason})" not in blocked
        ]
        if c.vsan_enabled:
            async with vcenter_session(ctx, vc, profile) as client:
                vs_gate, vs_facts = await asyncio.to_thread(vsan_gate, client, c.moid)
            [vs_gate] = apply_policy([vs_gate], policy)
            report["vsan"] = {
                **vs_facts,
                **vs_gate.as_dict(),
                "object_action": params.vsan_object_action,
                "hosts_at_once": 1,
            }
            if vs_gate.status == BLOCK:
                blocked.append(f"{c.name}: vsan ({vs_gate.reason})")
        report["plan"] = [h["name"] for h in plan]
        report["changes"] = changes  # what will change, per host and component
        report["already_compliant"] = compliant  # host -> why it is skipped
        # N+1: the hosts left must hold the running VMs plus HA's failover capacity.
        members = [inv.hosts[m] for m in c.hosts if m in inv.hosts]
        bound, cap_gate = capacity_bound(
            {x.name: x.memory_bytes // 2**20 for x in members},
            sum(
                inv.vms[v].memory_mb for x in members for v in x.vms if v in inv.vms and inv.vms[v].powered_on
            ),
            c.ha,
        )
        [cap_gate] = apply_policy([cap_gate], policy)
        ctx.checkpoint["capacity_bound"] = bound
        report["capacity"] = {
            "bound": bound,
            "hosts_at_once": min(bound, self._max_out(ctx)),
            **cap_gate.as_dict(),
        }
        if plan and cap_gate.status == BLOCK:
            blocked.append(f"{c.name}: capacity ({cap_gate.reason})")
        report["blocked"] = blocked
        artifact = (
            await ctx.put_artifact(
                "preflight_report",
                json.dumps(report, indent=1, default=str).encode(),
                content_type="application/json",
            )
        )["artifact_id"]
        if blocked:
            # Nothing has changed yet: refuse with the gates named (the report stays stored).
            raise PreflightBlocked("pre-flight gate(s) block: " + "; ".join(blocked))
        ctx.checkpoint.update({"plan": plan, "nothing_to_do": not plan, "preflight_artifact": artifact})
        return {
            "hosts": len(hosts),
            "to_update": [h["name"] for h in plan],
            "nothing_to_do": not plan,
            "preflight_artifact": artifact,
            "hosts_at_once": report["capacity"]["hosts_at_once"],
            "capacity": cap_gate.reason,
        }

    @staticmethod
    def _catalog(url: str, raw: bool = False) -> Any:
        """The catalog at ``url`` (with ``raw``: the catalog and the bytes it came from)."""
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - http(s) checked by the params model
                data = resp.read()
        except OSError as exc:
            raise CatalogUnavailable(f"cannot fetch the firmware catalog {url}: {exc}") from None
        try:
            catalog = Catalog.from_bytes(data, url)
        except TargetError as exc:
            raise CatalogUnavailable(str(exc)) from None
        return (catalog, data) if raw else catalog

    @staticmethod
    def _compliance(
        profile: TargetProfile,
        host: dict[str, Any],
        cred: Credential,
        catalog: Catalog,
        repo: str,
        components: list[str],
        event_days: float = 7,
        policy: dict[str, str] | None = None,
    ) -> tuple[list[UpdatePackage], dict[str, Any]]:
        ep = profile.idrac_endpoint(host["server"], cred)
        t = profile.dell_timeouts()
        # A Lifecycle Controller between two of its own jobs gets a third of its ready budget.
        gates, c = idrac_gates(RedfishClient(ep, t).__enter__, lc_wait=t.lc_ready / 3, event_days=event_days)
        gates = apply_policy(gates, policy or {})
        if c is None:
            return [], {
                "gates": [g.as_dict() for g in gates],
                "verdict": worst(gates),
                "readiness": readiness_score(gates),
            }
        try:
            info = c.system_info()
            report = catalog.compliance(
                model=info.model, system_id=info.system_id, components=c.firmware_inventory()
            )
            dell = c.require_dell("pre-flight")
            readiness = dell.readiness()
        except TargetError as exc:
            gates.append(Gate("inventory", BLOCK, f"cannot read the firmware inventory: {exc}"))
            return [], {
                "gates": [g.as_dict() for g in gates],
                "verdict": worst(gates),
                "readiness": readiness_score(gates),
            }
        finally:
            c.__exit__(None, None, None)
        packages = report.update_packages(catalog.base_location, repo)
        if components:
            wanted = {x.lower() for x in components}
            packages = [
                p for p in packages if p.component_id in components or (p.name or "").lower() in wanted
            ]
        return packages, {
            "model": info.model,
            "components": report.as_rows(),
            "idrac": readiness,
            "gates": [g.as_dict() for g in gates],
            "verdict": worst(gates),
            "readiness": readiness_score(gates),
        }

    @step(90, resumable=True)
    async def blocker_scan(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.checkpoint.get("nothing_to_do"):
            return {"skipped": "nothing to update"}
        params = self._params(ctx)
        _, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            inv = await asyncio.to_thread(client.inventory)
        plan = ctx.checkpoint["plan"]
        # The operator's decisions on earlier pauses of this job.
        blockers = await ctx.select("job_blockers", "id,kind,host_id,vm_id,details,status", job_id=ctx.job_id)
        decisions = {
            str(r["blocker_id"]): r["action"]
            for r in await ctx.select("blocker_resolutions", "blocker_id,action", job_id=ctx.job_id)
        }
        skip: set[str] = set(ctx.checkpoint.get("skip") or [])
        power_off: dict[str, list[str]] = {
            k: list(v) for k, v in (ctx.checkpoint.get("power_off") or {}).items()
        }
        for row in blockers:
            action = decisions.get(str(row["id"]))
            details = row.get("details") or {}
            if action == "skip_host" and row.get("host_id"):
                skip.add(str(row["host_id"]))
            elif action == "power_off_vm" and details.get("vm_moref") and details.get("host_id"):
                vms = power_off.setdefault(str(details["host_id"]), [])
                if details["vm_moref"] not in vms:
                    vms.append(details["vm_moref"])
        vm_ids = {r["moref"]: str(r["id"]) for r in await ctx.select("vms", "id,moref", vcenter_id=vc["id"])}
        found: list[Blocker] = []
        for h in plan:
            if h["id"] in skip or h["moref"] not in inv.hosts:
                continue
            for b in host_blockers(inv, h["moref"]):
                if b.severity != BLOCKING or b.vm in power_off.get(h["id"], []):
                    continue
                if params.blocker_default == BlockerDefault.POWER_OFF_VM:
                    power_off.setdefault(h["id"], []).append(b.vm)
                    continue
                if params.blocker_default == BlockerDefault.SKIP_HOST:
                    skip.add(h["id"])
                    break
                found.append(
                    Blocker(
                        kind=_kind(b.kind),
                        target=b.vm_name,
                        message=f"{b.vm_name} on {b.host_name}: {b.detail}",
                        details={
                            "host_id": h["id"],
                            "vm_id": vm_ids.get(b.vm),
                            "vm_moref": b.vm,
                            "host_moref": b.host,
                            "host_name": b.host_name,
                            "vm_name": b.vm_name,
                            "scan_kind": b.kind,
                        },
                    )
                )
        # storage hosts whose replication is behind policy (executor/handlers/_replication_gate.py)
        found += await replication_lag_blockers(
            ctx, [h for h in plan if h["id"] not in skip], blockers, decisions
        )
        ctx.checkpoint["skip"] = sorted(skip)
        ctx.checkpoint["power_off"] = power_off
        if found:
            # Invariant: no host enters maintenance before its blockers are resolved.
            raise BlockersFound(found)
        for h in plan:
            if h["id"] in skip:
                await ctx.update_task(HOST, h, TaskStatus.SKIPPED, details={"reason": "skip_host decision"})
        return {
            "skipped_hosts": [h["name"] for h in plan if h["id"] in skip],
            "power_off_vms": sum(len(v) for v in power_off.values()),
        }

    @step(80, resumable=True)
    async def record_cluster_settings(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.checkpoint.get("nothing_to_do") or ctx.checkpoint.get("recorded_settings"):
            return {"recorded": bool(ctx.checkpoint.get("recorded_settings"))}
        cluster, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            recorded = await asyncio.to_thread(client.read_cluster_settings, cluster["moref"])
        ctx.checkpoint["recorded_settings"] = recorded
        return {"recorded": recorded}

    @step(70, resumable=True)
    async def relax_cluster_settings(self, ctx: StepContext) -> dict[str, Any]:
        recorded = ctx.checkpoint.get("recorded_settings")
        if ctx.checkpoint.get("nothing_to_do") or not recorded:
            return {"changed": {}}
        ha, drs = {}, {}
        if recorded["ha"].get("enabled") and recorded["ha"].get("admission_control_enabled"):
            # HA stays on (it restarts VMs if another host fails meanwhile); only the capacity
            # reservation that would refuse maintenance mode is lifted.
            ha["admission_control_enabled"] = False
        if recorded["drs"].get("enabled") and recorded["drs"].get("default_vm_behavior") not in (
            "fullyAutomated",
            "",
        ):
            drs["default_vm_behavior"] = "fullyAutomated"
        if not ha and not drs:
            return {"changed": {}}
        cluster, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            await asyncio.to_thread(
                lambda: client.apply_cluster_settings(cluster["moref"], ha=ha or None, drs=drs or None)
            )
        return {"changed": {"ha": ha, "drs": drs}}

    @step(50, resumable=True)
    async def rollout(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.checkpoint.get("nothing_to_do"):
            return {"updated": [], "failed": []}
        params = self._params(ctx)
        progress: dict[str, Any] = dict(ctx.saved_progress or {})
        progress.setdefault("done", [])
        progress.setdefault("failed", [])
        progress.setdefault("phase", {})
        skip = set(ctx.checkpoint.get("skip") or [])
        todo = [
            h
            for h in ctx.checkpoint["plan"]
            if h["id"] not in skip and h["id"] not in progress["done"] and h["id"] not in progress["failed"]
        ]
        wave_size = self._max_out(ctx)
        profile = TargetProfile.load()
        _, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc, profile) as client:
            for start in range(0, len(todo), wave_size):
                wave = todo[start : start + wave_size]
                # Safe point: no host of this job is out of service here.
                if ctx.cancel_requested:
                    for h in todo[start:]:
                        await ctx.update_task(
                            HOST, h, TaskStatus.CANCELLED, details={"reason": "job cancelled"}
                        )
                    raise JobCancelled("cancel requested")
                if ctx.pause_requested or ctx.draining:
                    # resumes from the saved progress: finished hosts are not touched again
                    await ctx.save_progress(progress)
                    if ctx.pause_requested:
                        raise PauseRequested("paused by operator between hosts")
                    raise ShutdownRequested("executor stopping; handing the job back between hosts")
                if ctx.checkpoint.get("vsan") and not any(h["id"] in progress["phase"] for h in wave):
                    await self._vsan_idle(ctx, params, profile, client, wave[0], todo[start:])
                results = await asyncio.gather(
                    *(self._host(ctx, params, profile, client, h, progress) for h in wave),
                    return_exceptions=True,
                )
                for h, res in zip(wave, results, strict=True):
                    if isinstance(res, BaseException) and not isinstance(res, Exception):
                        raise res
                    if isinstance(res, Exception):
                        progress["failed"].append(h["id"])
                    else:
                        progress["done"].append(h["id"])
                    progress["phase"].pop(h["id"], None)
                await ctx.save_progress(progress)
                allowed = params.failure_budget_hosts(len(ctx.checkpoint["plan"]))
                if len(progress["failed"]) > allowed:
                    rest = todo[start + len(wave) :]
                    for h in rest:
                        await ctx.update_task(
                            HOST, h, TaskStatus.SKIPPED, details={"reason": "rollout stopped: failure budget"}
                        )
                    names = [h["name"] for h in ctx.checkpoint["plan"] if h["id"] in progress["failed"]]
                    budget = (
                        f"{allowed} ({params.failure_budget} of {len(ctx.checkpoint['plan'])} host(s))"
                        if isinstance(params.failure_budget, str)
                        else f"{allowed}"
                    )
                    raise FailureBudgetExhausted(
                        f"{len(progress['failed'])} host(s) failed ({', '.join(names)}), failure budget is "
                        f"{budget}: rollout stopped with {len(rest)} host(s) not updated"
                    )
        host_names = {h["id"]: h["name"] for h in ctx.checkpoint["plan"]}
        return {
            "updated": [host_names[i] for i in progress["done"]],
            "failed": [host_names[i] for i in progress["failed"]],
        }

    async def _vsan_idle(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        rest: list[dict[str, Any]],
    ) -> None:
        """Before each host of a vSAN cluster: resync idle and health not red (the vsan gate),
        waiting up to ``vsan_resync_timeout_s``; a gate still blocking stops the rollout."""
        cluster, _ = await self._vcenter(ctx)
        loop = asyncio.get_running_loop()
        blocked_polls = 0

        def waiting(g: Gate) -> None:
            nonlocal blocked_polls
            blocked_polls += 1
            asyncio.run_coroutine_threadsafe(
                ctx.update_task(
                    HOST, host, TaskStatus.PENDING, details={"phase": "vsan_wait", "vsan": g.reason}
                ),
                loop,
            )

        gate, waited = await asyncio.to_thread(
            wait_vsan_idle,
            vc,
            cluster["moref"],
            timeout=profile.seconds(params.vsan_resync_timeout_s),
            poll=profile.seconds(15),
            on_wait=waiting,
        )
        [gate] = apply_policy([gate], self._gates_policy(ctx))
        await ctx.update_task(
            HOST,
            host,
            TaskStatus.PENDING,
            details={
                "phase": "queued",
                "vsan": gate.reason,
                "vsan_wait_s": round(waited * profile.time_scale, 1),
                "vsan_blocked_polls": blocked_polls,  # polls that found resync or red health
            },
        )
        if gate.status == BLOCK:
            for h in rest:
                await ctx.update_task(
                    HOST, h, TaskStatus.SKIPPED, details={"reason": f"rollout stopped: vsan ({gate.reason})"}
                )
            raise VsanNotIdle(
                f"gate vsan blocks before {host['name']} after {params.vsan_resync_timeout_s} s: {gate.reason}"
            )

    async def _enter_maintenance(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        budget: float,
        details: dict[str, Any],
        vsan: bool,
    ) -> None:
        """Maintenance mode, tried 1 + ``maintenance_retries`` times ``maintenance_retry_delay_s``
        apart (vSAN hosts with ``vsan_object_action``); the tries are counted on the task.
        Each try's vCenter task id is on the job's task before the wait: a cleanup after this
        process died cancels that evacuation before it brings the host back."""
        tries = 1 + params.maintenance_retries
        loop = asyncio.get_running_loop()

        def started(task_id: str) -> None:
            details["maintenance_task"] = task_id
            asyncio.run_coroutine_threadsafe(
                ctx.update_task(HOST, host, TaskStatus.RUNNING, details={**details, "phase": "maintenance"}),
                loop,
            ).result()

        for attempt in range(1, tries + 1):
            details["maintenance_attempts"] = attempt
            try:
                await asyncio.to_thread(
                    lambda: vc.enter_maintenance(
                        host["moref"],
                        profile.seconds(budget),
                        vsan_mode=params.vsan_object_action if vsan else None,
                        on_task=started,
                    )
                )
                return
            except TargetError as exc:
                if attempt == tries:
                    raise
                log.warning(
                    "host %s: maintenance mode try %d of %d failed (%s); again in %d s",
                    host["name"], attempt, tries, exc, params.maintenance_retry_delay_s,
                )  # fmt: skip
                details.setdefault("maintenance_errors", []).append(str(exc)[:300])
                await asyncio.sleep(profile.seconds(params.maintenance_retry_delay_s))

    async def _host(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        progress: dict[str, Any],
    ) -> dict[str, Any]:
        """One host, phase by phase; the phase is saved before each irreversible action."""
        packages = _packages(host["packages"])
        cred = await credential(ctx, host.get("credential_set_id"), f"iDRAC of {host['name']}")
        work = HostWork(profile, vc, host, cred)
        resumed_phase = progress["phase"].get(host["id"])
        power_off = list((ctx.checkpoint.get("power_off") or {}).get(host["id"], []))
        # After a crash the task remembers what this job already did to the host.
        details: dict[str, Any] = await self._task_details(ctx, host) if resumed_phase else {}
        earlier_off = list(details.get("powered_off_vms") or [])
        # real seconds per phase of this run (bench/rolling_update.py reads them)
        phase_s: dict[str, float] = details.setdefault("phase_s", {})
        clock: list[Any] = [None, time.monotonic()]

        def lap(name: str | None) -> None:
            now = time.monotonic()
            if clock[0] is not None:
                phase_s[clock[0]] = round(phase_s.get(clock[0], 0.0) + now - clock[1], 3)
            clock[:] = [name, now]

        async def phase(name: str, pct: int, save: bool = True) -> None:
            lap(name)
            # the step's saved phase matters only from maintenance on (what a resume must know)
            progress["phase"][host["id"]] = name
            if save:
                await ctx.save_progress(progress)
            # (a resumed host's details, read back from its task, hold the phase it had then)
            await ctx.update_task(
                HOST, host, TaskStatus.RUNNING, progress=pct, details={**details, "phase": name}
            )

        try:
            if resumed_phase != "apply":
                await phase("backup", 5, save=False)
                # Invariant: no firmware is applied without a fresh SCP backup stored for it.
                scp = await asyncio.to_thread(work.scp_backup)
                stored = await ctx.put_artifact(
                    "scp_backup", scp, content_type="application/json", server_id=host["server_id"]
                )
                details["scp_artifact"] = stored["artifact_id"]
                await phase("stage" if params.stage_firmware else "rescan", 15, save=False)
                # The rescan runs alongside the staging (vCenter, not the iDRAC): a VM that
                # gained a blocker since the scan fails the host instead of entering maintenance.
                staged, inv = await asyncio.gather(
                    asyncio.to_thread(work.stage, packages)
                    if params.stage_firmware
                    else asyncio.sleep(0, []),
                    asyncio.to_thread(vc.inventory),
                )
                details["staged_jobs"] = staged
                late = [
                    b
                    for b in host_blockers(inv, host["moref"])
                    if b.severity == BLOCKING and b.vm not in power_off
                ]
                if late:
                    raise HostFailed(
                        f"{host['name']}: new blocker(s) since the scan: "
                        + "; ".join(f"{b.vm_name}: {b.detail}" for b in late)
                    )
                running = await asyncio.to_thread(work.running_vms, power_off)
                details["powered_off_vms"] = sorted(set(running) | set(earlier_off))
                details["maintenance_by_job"] = True
                stamp_entered(details)  # the host leaves service here (executor/host_maintenance.py)
                await phase("maintenance", 30)
                for vm in running:
                    await asyncio.to_thread(vc.power_off_vm, vm)
                memory = sum(
                    inv.vms[v].memory_mb
                    for v in inv.hosts[host["moref"]].vms
                    if v in inv.vms and inv.vms[v].powered_on and v not in running
                )
                budget = evacuation_budget_s(memory, params.vmotion_timeout_s)
                details["evacuation_budget_s"] = round(budget, 1)
                await self._enter_maintenance(
                    ctx, params, profile, vc, host, budget, details, bool(ctx.checkpoint.get("vsan"))
                )
                boot_before: str | None = await asyncio.to_thread(work.boot_time)
                details["boot_before"] = boot_before
                await phase("apply", 50)
                if params.stage_firmware:
                    details["apply_timing"] = await asyncio.to_thread(work.reboot_apply, staged)
                else:
                    await asyncio.to_thread(work.apply_in_maintenance, packages)
            else:
                # Crash recovery inside the apply: never flash again; let it finish and check.
                details["resumed_after_interruption"] = True
                boot_before = details.get("boot_before")
                # shown on the task only: the saved phase stays apply (never flash again)
                await ctx.update_task(
                    HOST, host, TaskStatus.RUNNING, progress=60, details={**details, "phase": "settle"}
                )
                details["bmc_settle"] = await asyncio.to_thread(work.settle_after_interruption)
            await phase("wait_host", 75)
            await asyncio.to_thread(work.wait_esxi, boot_before)
            versions = await asyncio.to_thread(work.verify, packages)
            details["versions"] = versions
            await phase("exit_maintenance", 90)
            await asyncio.to_thread(vc.exit_maintenance, host["moref"])
            stamp_exited(details)
            for vm in details.get("powered_off_vms") or []:
                await asyncio.to_thread(vc.power_on_vm, vm)
            details["maintenance_by_job"] = False
            lap(None)
            await ctx.update_task(
                HOST, host, TaskStatus.COMPLETED, progress=100, details={**details, "phase": "done"}
            )
            return details
        except (asyncio.CancelledError, JobCancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - one host's failure is counted, not fatal by itself
            error = str(exc)[:2000] or type(exc).__name__
            log.warning("host %s failed: %s", host["name"], error)
            if details.get("staged_jobs") and progress["phase"].get(host["id"]) != "apply":
                try:
                    await asyncio.to_thread(work.unstage)
                    details["unstaged"] = True
                except Exception as unstage:  # noqa: BLE001 - reported on the task
                    details["unstage_error"] = str(unstage)[:500]
            try:
                left_out = await asyncio.to_thread(
                    self._bring_back, vc, host, details.get("powered_off_vms") or [], details
                )
                details["maintenance_by_job"] = left_out
                if not left_out:
                    stamp_exited(details)
            except Exception as back:  # noqa: BLE001 - the cleanup step tries again
                details["bring_back_error"] = str(back)[:500]
            await ctx.update_task(
                HOST, host, TaskStatus.FAILED, error=error, details={**details, "phase": "failed"}
            )
            raise
        finally:
            await asyncio.to_thread(work.close)

    async def _not_rebooted(self, ctx: StepContext, host: dict[str, Any], boot_before: str | None) -> bool:
        """True when vCenter shows the host connected and still on the boot it had before
        the apply phase (so the reboot that applies staged firmware never came)."""
        if not boot_before:
            return False
        _, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            try:
                now = await asyncio.to_thread(client.host, host["moref"])
            except TargetError:
                return False
        return now.connection_state == "connected" and now.boot_time == boot_before

    @staticmethod
    def _unstage_left(profile: TargetProfile, host: dict[str, Any], cred: Credential) -> None:
        ep = profile.idrac_endpoint(host["server"], cred)
        with RedfishClient(ep, profile.dell_timeouts()) as c:
            clear_unfinished(c)

    @staticmethod
    def _bring_back(vc: VSphereClient, host: dict[str, Any], vms: list[str], details: dict[str, Any]) -> bool:
        """Take a failed host out of maintenance once it responds and power the VMs this job
        powered off back on; True if the host stays in maintenance (it did not come back in
        time, or vCenter still reports it in maintenance after the exit), so the task keeps
        ``maintenance_by_job`` and the cleanup step tries again. Read back, never assumed.
        First an evacuation still under way for the host (the task id in ``details``, or
        vCenter's recent tasks of the host: its starter may have died mid-wait) is cancelled
        and awaited, else it would put the host into maintenance after the exit; what became
        of it goes into ``details["maintenance_task_ended"]``."""
        moref = host["moref"]
        try:
            ended = vc.end_maintenance_tasks(
                moref, [details["maintenance_task"]] if details.get("maintenance_task") else []
            )
            if ended:
                details["maintenance_task_ended"] = ended
            h = vc.host(moref)
            if h.connection_state != "connected":
                vc.wait_for_host(moref)
            vc.exit_maintenance(moref)
        except TargetError as exc:
            log.warning("host %s not brought back yet: %s", host.get("name") or moref, exc)
            return True
        if vc.host(moref).in_maintenance:
            return True
        for vm in vms:
            vc.power_on_vm(vm)
        return False

    @staticmethod
    async def _task_details(ctx: StepContext, host: dict[str, Any]) -> dict[str, Any]:
        rows = await ctx.select(
            "job_tasks", "details", job_id=ctx.job_id, target_kind="host", target_id=host["id"]
        )
        return dict(rows[0].get("details") or {}) if rows else {}

    @step(30, resumable=True)
    async def restore_cluster_settings(self, ctx: StepContext) -> dict[str, Any]:
        return await self._restore(ctx)

    async def _restore(self, ctx: StepContext) -> dict[str, Any]:
        recorded = ctx.checkpoint.get("recorded_settings")
        if not recorded:
            return {"restored": False}
        cluster, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            after = await asyncio.to_thread(client.restore_cluster_settings, cluster["moref"], recorded)
        return {
            "restored": True,
            "ha_enabled": after["ha"]["enabled"],
            "admission_control_enabled": after["ha"]["admission_control_enabled"],
        }

    # owed from the first change it undoes: a job paused on blockers has changed nothing yet
    @cleanup_step(10, only_if_started="relax_cluster_settings")
    async def cleanup(self, ctx: StepContext) -> dict[str, Any]:
        """Every exit path: settings as recorded, no host of ours left in maintenance."""
        out: dict[str, Any] = {"hosts_brought_back": []}
        tasks = await ctx.select(
            "job_tasks",
            "target_id,target_name,details,status,error",
            job_id=ctx.job_id,
            target_kind="host",
        )
        ours = [t for t in tasks if (t.get("details") or {}).get("maintenance_by_job")]
        errors = []
        # firmware staged (or still downloading) on a host interrupted before its reboot (a
        # crash, a cancel from executor_lost): the failure path of the rollout unstages it, an
        # interruption skips that
        plan = {h["id"]: h for h in ctx.checkpoint.get("plan") or []}
        out["unstaged"] = []
        for t in tasks:
            d = t.get("details") or {}
            h = plan.get(str(t["target_id"]))
            if h is None or d.get("unstaged") or t["status"] in ("completed", "skipped", "pending"):
                continue
            if d.get("phase") not in BEFORE_APPLY and not (
                # interrupted in apply before its reboot: the host still runs the boot it had
                d.get("phase") == "apply" and await self._not_rebooted(ctx, h, d.get("boot_before"))
            ):
                continue
            try:
                cred = await credential(ctx, h.get("credential_set_id"), f"iDRAC of {h['name']}")
                await asyncio.to_thread(self._unstage_left, TargetProfile.load(), h, cred)
                await ctx.update_task(
                    HOST,
                    {"id": t["target_id"]},
                    TaskStatus(t["status"]) if t["status"] != "running" else TaskStatus.FAILED,
                    details={"unstaged": True},
                    error=t.get("error")
                    if t["status"] != "running"
                    else "interrupted; its staged firmware removed by the cleanup",
                )
                out["unstaged"].append(h["name"])
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                errors.append(f"{h['name']}: staged firmware not removed: {exc}")
        if ours:
            _, vc = await self._vcenter(ctx)
            async with vcenter_session(ctx, vc) as client:
                for t in ours:
                    d = t.get("details") or {}
                    rows = await ctx.select("esxi_hosts", "id,name,moref", id=t["target_id"])
                    if not rows:
                        continue
                    try:
                        if await asyncio.to_thread(
                            self._bring_back, client, rows[0], d.get("powered_off_vms") or [], d
                        ):
                            errors.append(f"{rows[0]['name']}: still in maintenance mode")
                            continue
                        if d.get("maintenance_task_ended"):
                            out.setdefault("maintenance_tasks_ended", {})[rows[0]["name"]] = d[
                                "maintenance_task_ended"
                            ]
                        await ctx.update_task(
                            HOST,
                            {"id": t["target_id"]},
                            TaskStatus(t["status"]) if t["status"] != "running" else TaskStatus.FAILED,
                            details={
                                "maintenance_by_job": False,
                                **{k: d[k] for k in ("maintenance_task_ended",) if k in d},
                            },
                            error=t.get("error")
                            if t["status"] != "running"
                            else "interrupted; brought back out of maintenance by the cleanup",
                        )
                        out["hosts_brought_back"].append(rows[0]["name"])
                    except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                        errors.append(f"{rows[0]['name']}: {exc}")
        out.update(await self._restore(ctx))
        if errors:
            raise VSphereHandlerError("cleanup could not bring back: " + "; ".join(errors))
        return out
