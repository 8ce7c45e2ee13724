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
repeats a flash: a host found in phase ``apply`` (or later) after a crash is not flashed
again - the executor waits for the BMC to settle and the host to come back and verifies the
versions. The phases are :class:`HostPhase`; what the job did to each host is one
:class:`HostCheckpoint`, kept in one store (the step's saved progress, saved before each
irreversible action) that the resume and the cleanup read; the host's task shows a copy.
While a wave is updated the next waves are prepared: their SCP backups (one after the
other, at most two waves ahead), and, unless ``stage_ahead`` is false or the cluster has
vSAN, the next wave's staging; a rollout that stops first removes what it staged
(docs/rollout-safety.md).

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
import contextvars
import functools
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..binding import Credential
from ..host_maintenance import KEY, stamp_entered, stamp_exited
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
from ..vocabulary import JobType, TaskStatus
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
T = TypeVar("T")

# Blocker kinds of the scan that the data model names directly; the others are 'other'.
DB_BLOCKER_KINDS = {
    "usb_passthrough",
    "pci_passthrough",
    "vgpu",
    "fault_tolerance",
    "cdrom_connected",
    "local_storage",
}
# Hosts whose iDRACs the pre-flight reads at once (compliance and gates).
PREFLIGHT_HOSTS_AT_ONCE = 4
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

    skip_reason = "rollout stopped: vsan"  # what the hosts not updated say


def _kind(scan_kind: str) -> str:
    return scan_kind if scan_kind in DB_BLOCKER_KINDS else "other"


def _packages(rows: list[dict[str, Any]]) -> list[UpdatePackage]:
    return [UpdatePackage(**r) for r in rows]


def evacuation_budget_s(memory_mb: int, cap_s: float) -> float:
    """Evacuation budget (real-world seconds) for a host with ``memory_mb`` of running VMs."""
    return min(cap_s, EVACUATION_FLOOR_S + EVACUATION_S_PER_GIB * memory_mb / 1024)


def _decided(
    checkpoint: dict[str, Any], blockers: list[dict[str, Any]], decisions: dict[str, str]
) -> tuple[set[str], dict[str, list[str]]]:
    """The hosts to skip and the VMs to power off (host id -> VM morefs): those saved in the
    checkpoint, plus the operator's decisions on the blockers of earlier pauses."""
    skip: set[str] = set(checkpoint.get("skip") or [])
    power_off: dict[str, list[str]] = {k: list(v) for k, v in (checkpoint.get("power_off") or {}).items()}
    for row in blockers:
        action = decisions.get(str(row["id"]))
        details = row.get("details") or {}
        if action == "skip_host" and row.get("host_id"):
            skip.add(str(row["host_id"]))
        elif action == "power_off_vm" and details.get("vm_moref") and details.get("host_id"):
            vms = power_off.setdefault(str(details["host_id"]), [])
            if details["vm_moref"] not in vms:
                vms.append(details["vm_moref"])
    return skip, power_off


def _vm_blockers(
    default: BlockerDefault,
    inv: Any,
    h: dict[str, Any],
    vm_ids: dict[str, str],
    skip: set[str],
    power_off: dict[str, list[str]],
) -> list[Blocker]:
    """The VMs that keep planned host ``h`` from leaving service, for the operator to decide
    on; under the job's blocker default, the decision is taken here instead (the VM added to
    ``power_off``, or the host to ``skip``)."""
    found: list[Blocker] = []
    for b in host_blockers(inv, h["moref"]):
        if b.severity != BLOCKING or b.vm in power_off.get(h["id"], []):
            continue
        if default == BlockerDefault.POWER_OFF_VM:
            power_off.setdefault(h["id"], []).append(b.vm)
            continue
        if default == BlockerDefault.SKIP_HOST:
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
    return found


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


class HostPhase(StrEnum):
    """Where one host is in the rollout, in order. The rollout step's saved progress holds it
    (:class:`RolloutProgress`, the one store a resume and the cleanup read); the host's task
    shows it as ``details.phase`` for the console's timeline (console/models/monitor.py)."""

    QUEUED = "queued"  # waiting for its turn (task pending)
    VSAN_WAIT = "vsan_wait"  # vSAN resync or health not idle yet before it (task pending)
    BACKUP = "backup"  # SCP export being stored
    BACKED_UP = "backed_up"  # SCP backup stored ahead of its turn, still serving VMs
    STAGE = "stage"  # firmware being staged (reboot-required jobs Scheduled) while it serves VMs
    STAGED = "staged"  # staged ahead of its turn, still serving VMs
    RESCAN = "rescan"  # VMs rescanned for blockers that appeared since the scan
    MAINTENANCE = "maintenance"  # resolved VMs powered off, entering maintenance (evacuation)
    APPLY = "apply"  # the reboot that applies the staged firmware (never started twice)
    SETTLE = "settle"  # resumed inside apply: the BMC settles before the host is judged
    WAIT_HOST = "wait_host"  # ESXi back on a new boot, versions verified
    EXIT_MAINTENANCE = "exit_maintenance"  # out of maintenance, VMs this job powered off on
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# Phases in which the host's staged firmware has not been applied yet: a job that ends there
# (interrupted, cancelled, stopped) must not leave it to apply at some later, unplanned reboot.
BEFORE_APPLY = frozenset(
    {HostPhase.BACKUP, HostPhase.BACKED_UP, HostPhase.STAGE, HostPhase.STAGED, HostPhase.RESCAN,
     HostPhase.MAINTENANCE}
)  # fmt: skip
# Phases from which a resumed host is never flashed again: it waits for what the iDRAC is
# doing, then checks (a crash in the middle of them resumes there).
AFTER_FLASH = frozenset({HostPhase.APPLY, HostPhase.SETTLE, HostPhase.WAIT_HOST, HostPhase.EXIT_MAINTENANCE})
# Phases that are the end of a host in this job.
ENDED = frozenset({HostPhase.DONE, HostPhase.FAILED, HostPhase.SKIPPED, HostPhase.CANCELLED})
TASK_STATUS = {
    HostPhase.QUEUED: TaskStatus.PENDING,
    HostPhase.VSAN_WAIT: TaskStatus.PENDING,
    HostPhase.BACKED_UP: TaskStatus.PENDING,  # read from, not changed: not begun yet
    HostPhase.DONE: TaskStatus.COMPLETED,
    HostPhase.FAILED: TaskStatus.FAILED,
    HostPhase.SKIPPED: TaskStatus.SKIPPED,
    HostPhase.CANCELLED: TaskStatus.CANCELLED,
}  # every other phase: running


class HostCheckpoint(BaseModel):
    """What the job did to one host so far: saved before each irreversible action (in the
    rollout step's progress), shown on the host's task (:meth:`display`), never read back
    from the task."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    phase: HostPhase = HostPhase.QUEUED
    error: str | None = None  # why it failed, was skipped or cancelled
    scp_artifact: str | None = None
    staged_jobs: list[str] = Field(default_factory=list)  # iDRAC jobs Scheduled for the reboot
    unstaged: bool = False  # staged firmware removed again (never applied)
    unstage_error: str | None = None
    powered_off_vms: list[str] = Field(default_factory=list)  # by this job, to power on again
    maintenance_by_job: bool = False  # this job put it into maintenance and has not taken it out
    maintenance_at: dict[str, str] | None = None  # executor/host_maintenance.py
    maintenance_task: str | None = None  # vCenter's enter-maintenance task of the last try
    maintenance_task_ended: list[dict[str, str]] | None = None
    maintenance_attempts: int = 0
    maintenance_errors: list[str] = Field(default_factory=list)
    evacuation_budget_s: float | None = None
    boot_before: str | None = None  # the host's boot time before the apply reboot
    apply_timing: dict[str, float] | None = None  # real seconds: jobs, LC, settle (and its polls)
    resumed_after_interruption: bool = False
    bmc_settle: dict[str, float] | None = None  # the settle after a crash inside apply
    versions: dict[str, str] | None = None  # verified after the update
    bring_back_error: str | None = None
    phase_s: dict[str, float] = Field(default_factory=dict)  # real seconds per phase (the bench)

    def display(self) -> dict[str, Any]:
        """The task's ``details`` (merged into what the pre-flight wrote there)."""
        return self.model_dump(mode="json")

    @property
    def task_status(self) -> TaskStatus:
        return TASK_STATUS.get(self.phase, TaskStatus.RUNNING)

    def stamp(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Apply a ``host_maintenance`` stamp to ``maintenance_at``."""
        d: dict[str, Any] = {KEY: self.maintenance_at}
        fn(d)
        self.maintenance_at = d[KEY]


class RolloutProgress(BaseModel):
    """The rollout step's saved progress (``StepContext.save_progress``): hosts finished,
    hosts failed, and every host the job has begun, by host id."""

    model_config = ConfigDict(extra="forbid")

    done: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    hosts: dict[str, HostCheckpoint] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _phase_only(cls, data: Any) -> Any:
        """Progress saved before the checkpoint model held each host's phase only."""
        if isinstance(data, dict) and "phase" in data and "hosts" not in data:
            phases = data.get("phase") or {}
            data = {k: v for k, v in data.items() if k != "phase"}
            data["hosts"] = {k: {"phase": v} for k, v in phases.items()}
        return data

    def host(self, host_id: str) -> HostCheckpoint:
        return self.hosts.setdefault(host_id, HostCheckpoint())

    def phase_of(self, host_id: str) -> HostPhase:
        cp = self.hosts.get(host_id)
        return HostPhase.QUEUED if cp is None else cp.phase

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class _WaveSignal:
    """When the next wave's preparation may begin: its SCP backups once every host of this
    wave has its own backup stored (or has ended), its staging once every host of this wave
    has begun its turn (or has ended)."""

    def __init__(self, hosts: int):
        self.hosts = hosts
        self.backed_up, self.turn = asyncio.Event(), asyncio.Event()
        self._backed_up: set[str] = set()
        self._turn: set[str] = set()

    def backed_up_one(self, host_id: str) -> None:
        self._backed_up.add(host_id)
        if len(self._backed_up) >= self.hosts:
            self.backed_up.set()

    def turn_one(self, host_id: str) -> None:
        self.backed_up_one(host_id)
        self._turn.add(host_id)
        if len(self._turn) >= self.hosts:
            self.turn.set()


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

    def unstage_all(self) -> None:
        """Remove every unfinished job (staged, or still downloading to be staged): only for
        a host prepared ahead that was never taken out of service."""
        with self.redfish() as c:
            clear_unfinished(c)

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


@dataclass
class _PreflightTally:
    """What the pre-flight's host verdicts add up to, in host order."""

    plan: list[dict[str, Any]] = field(default_factory=list)  # the hosts to update, their entries
    report_hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> its gate facts
    blocked: list[str] = field(default_factory=list)  # "<host>: <gate> (<reason>)"
    changes: list[Any] = field(default_factory=list)  # what will change, per host and component
    compliant: dict[str, str] = field(default_factory=dict)  # host -> why it is skipped


@dataclass
class _RolloutRun:
    """What one run of the rollout step shares between its waves."""

    ctx: StepContext
    params: RollingClusterUpdateParams
    profile: TargetProfile
    client: VSphereClient
    progress: RolloutProgress
    waves: list[list[dict[str, Any]]]
    signals: list[_WaveSignal]
    allowed: int  # hosts that may fail (the failure budget)
    # hosts of the next waves being prepared during this one
    ahead: dict[str, asyncio.Task[HostWork | None]] = field(default_factory=dict)


@register
class RollingClusterUpdateHandler(JobHandler):
    job_type = JobType.ROLLING_CLUSTER_UPDATE

    def __init__(self) -> None:
        super().__init__()
        self._progress: RolloutProgress | None = None  # this run's rollout progress
        self._clocks: dict[str, list[Any]] = {}  # host id -> [phase, since] (phase_s)
        self._pool: ThreadPoolExecutor | None = None  # this job's worker threads, per step
        self._stopping = False  # the rollout stops: no host is prepared ahead any more

    async def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (blocking: sushy, pyvmomi) in a worker thread, in a copy of
        the step's context. A step that waits on several hosts at once runs them in threads
        of its own (:meth:`_own_threads`): the executor's shared default pool is small
        (cpus + 4) and a rollout keeps a thread per host busy for the whole of its apply, so
        two rollouts would queue each other's calls there."""
        if self._pool is None:
            return await asyncio.to_thread(fn, *args, **kwargs)
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @contextlib.contextmanager
    def _own_threads(self, workers: int) -> Iterator[None]:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rolling-update")
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False)  # (calls still running finish; nothing waits for them)

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
        with self._own_threads(PREFLIGHT_HOSTS_AT_ONCE + 2):
            return await self._preflight(ctx)

    async def _preflight(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        profile = TargetProfile.load()
        cluster, vc = await self._vcenter(ctx)
        inv, c = await self._preflight_inventory(ctx, cluster, vc, profile)
        rows, hosts = await self._preflight_hosts(ctx, params, cluster, c)
        policy = self._gates_policy(ctx)
        ctx.checkpoint["vsan"] = bool(c.vsan_enabled)
        # Hosts already out of service count against the policy: the vcenter gate of every
        # host of the cluster (a host out that the job would not update still counts).
        vc_gates = {
            r["name"]: apply_policy([vcenter_gate(inv.hosts[r["moref"]])], policy)[0]
            for r in rows
            if r["moref"] in inv.hosts
        }
        cat_gate, catalog = await self._preflight_catalog(params, policy)
        read = await self._read_hosts(ctx, profile, hosts, catalog, params, policy)
        tally = _PreflightTally()
        for h, (entry, packages, facts) in zip(hosts, read, strict=True):
            await self._judge_host(
                ctx, params, inv, tally, h, entry, packages, facts, vc_gates.get(h["name"])
            )
        report = self._preflight_report(inv, c, hosts, params, catalog, cat_gate, policy, tally)
        # a host out of service that the job would not update still counts against the hosts out
        tally.blocked += [
            f"{name}: vcenter ({g.reason})"
            for name, g in vc_gates.items()
            if g.status == BLOCK and f"{name}: vcenter ({g.reason})" not in tally.blocked
        ]
        if c.vsan_enabled:
            await self._preflight_vsan(ctx, vc, profile, c, params, policy, report, tally)
        report["plan"] = [h["name"] for h in tally.plan]
        report["changes"] = tally.changes  # what will change, per host and component
        report["already_compliant"] = tally.compliant  # host -> why it is skipped
        cap_gate = self._preflight_capacity(ctx, inv, c, policy, report)
        if tally.plan and cap_gate.status == BLOCK:
            tally.blocked.append(f"{c.name}: capacity ({cap_gate.reason})")
        report["blocked"] = tally.blocked
        artifact = (
            await ctx.put_artifact(
                "preflight_report",
                json.dumps(report, indent=1, default=str).encode(),
                content_type="application/json",
            )
        )["artifact_id"]
        if tally.blocked:
            # Nothing has changed yet: refuse with the gates named (the report stays stored).
            raise PreflightBlocked("pre-flight gate(s) block: " + "; ".join(tally.blocked))
        plan = tally.plan
        ctx.checkpoint.update({"plan": plan, "nothing_to_do": not plan, "preflight_artifact": artifact})
        return {
            "hosts": len(hosts),
            "to_update": [h["name"] for h in plan],
            "nothing_to_do": not plan,
            "preflight_artifact": artifact,
            "hosts_at_once": report["capacity"]["hosts_at_once"],
            "capacity": cap_gate.reason,
        }

    # pre-flight steps, in the order _preflight runs them ------------------------------------------
    async def _preflight_inventory(
        self, ctx: StepContext, cluster: dict[str, Any], vc: dict[str, Any], profile: TargetProfile
    ) -> tuple[Any, Any]:
        """vCenter's inventory, synced; the cluster in it, which must run DRS."""
        async with vcenter_session(ctx, vc, profile) as client:
            inv = await self._thread(client.inventory)
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
        return inv, c

    @staticmethod
    async def _preflight_hosts(
        ctx: StepContext, params: RollingClusterUpdateParams, cluster: dict[str, Any], c: Any
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The cluster's host rows, and the hosts the job asks for (all of them, by name)."""
        rows = await ctx.select(
            "esxi_hosts",
            "id,name,moref,server_id,cluster_id,in_maintenance,connection_state",
            cluster_id=cluster["id"],
        )
        by_id = {str(r["id"]): r for r in rows}
        if not params.host_ids:
            return rows, sorted(rows, key=lambda r: r["name"])
        missing = [str(h) for h in params.host_ids if str(h) not in by_id]
        if missing:
            raise InventoryMissing(f"host(s) {', '.join(missing)} are not in cluster {c.name}")
        return rows, [by_id[str(h)] for h in params.host_ids]

    async def _preflight_catalog(
        self, params: RollingClusterUpdateParams, policy: dict[str, str]
    ) -> tuple[Gate, Catalog]:
        """The catalog gate (policy applied) and the catalog; refuses when there is none."""
        cat_gate, catalog = await self._thread(
            catalog_gate,
            lambda: self._catalog(params.firmware.stored_catalog_url(), raw=True),
            sha256=params.firmware.catalog_sha256,
        )
        [cat_gate] = apply_policy([cat_gate], policy)
        if catalog is None:
            raise CatalogUnavailable(f"pre-flight gate catalog blocks: {cat_gate.reason}")
        return cat_gate, catalog

    async def _read_hosts(
        self,
        ctx: StepContext,
        profile: TargetProfile,
        hosts: list[dict[str, Any]],
        catalog: Catalog,
        params: RollingClusterUpdateParams,
        policy: dict[str, str],
    ) -> list[tuple[dict[str, Any], list[UpdatePackage], dict[str, Any]]]:
        """Each host's entry, packages and gate facts, in host order."""
        repo = params.firmware.stored_catalog_url().rsplit("/", 1)[0]
        # the hosts' iDRACs are read side by side (read-only, one session each), a few at a
        # time: the executor's worker threads are shared with its other jobs
        at_once = asyncio.Semaphore(PREFLIGHT_HOSTS_AT_ONCE)

        async def look(
            seq: int, h: dict[str, Any]
        ) -> tuple[dict[str, Any], list[UpdatePackage], dict[str, Any]]:
            entry, cred = await self._host_entry(ctx, seq, h)
            async with at_once:
                packages, facts = await self._thread(
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
            return entry, packages, facts

        looked = await asyncio.gather(*(look(seq, h) for seq, h in enumerate(hosts)), return_exceptions=True)
        read = []
        for r in looked:  # the first host's problem in host order, as when they were read in turn
            if isinstance(r, BaseException):
                raise r
            read.append(r)
        return read

    @staticmethod
    async def _host_entry(ctx: StepContext, seq: int, h: dict[str, Any]) -> tuple[dict[str, Any], Credential]:
        """The plan entry of host ``h`` (its Dell server) and its iDRAC credential."""
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
        return entry, cred

    @staticmethod
    async def _judge_host(
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        inv: Any,
        tally: _PreflightTally,
        h: dict[str, Any],
        entry: dict[str, Any],
        packages: list[UpdatePackage],
        facts: dict[str, Any],
        vg: Gate | None,
    ) -> None:
        """One host's verdict (its vcenter gate added), what will change, whether it blocks,
        and its task: pending with its updates, or skipped as compliant."""
        seq = entry["seq"]
        if vg is not None:
            facts["gates"].append(vg.as_dict())
            gs = [Gate(**g) for g in facts["gates"]]
            facts["verdict"], facts["readiness"] = worst(gs), readiness_score(gs)
        tally.report_hosts[h["name"]] = facts
        host_changes, why_compliant = what_will_change(
            h["name"], catalog_rows(facts.get("components") or [], params.firmware.components)
        )
        tally.changes += host_changes
        if packages or facts["verdict"] == BLOCK and not facts.get("components"):
            tally.blocked += [
                f"{h['name']}: {g['name']} ({g['reason']})" for g in facts["gates"] if g["status"] == BLOCK
            ]
        memory = sum(
            inv.vms[v].memory_mb for v in inv.hosts[h["moref"]].vms if v in inv.vms and inv.vms[v].powered_on
        )
        entry["vm_memory_mb"] = memory
        if packages:
            entry["packages"] = [asdict(p) for p in packages]
            tally.plan.append(entry)
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
            tally.compliant[h["name"]] = why_compliant or "already compliant"
            await ctx.update_task(
                HOST, entry, TaskStatus.SKIPPED, seq=seq, details={"reason": tally.compliant[h["name"]]}
            )

    @staticmethod
    def _preflight_report(
        inv: Any,
        c: Any,
        hosts: list[dict[str, Any]],
        params: RollingClusterUpdateParams,
        catalog: Catalog,
        cat_gate: Gate,
        policy: dict[str, str],
        tally: _PreflightTally,
    ) -> dict[str, Any]:
        """The pre-flight report's first part: the cluster, firmware, catalog and gates per host."""
        report = preflight_report(inv, c.moid, [h["moref"] for h in hosts])
        report["firmware"] = tally.report_hosts
        report["catalog"] = {
            "url": params.firmware.catalog_url,
            "version": catalog.version,
            "age_days": catalog.age_days(),
            "gate": cat_gate.as_dict(),
        }
        report["gates"] = {
            name: {"verdict": f["verdict"], "readiness": f.get("readiness"), "gates": f["gates"]}
            for name, f in tally.report_hosts.items()
        }
        report["gate_policy"] = policy  # which gates block (policies/safety.yaml)
        return report

    async def _preflight_vsan(
        self,
        ctx: StepContext,
        vc: dict[str, Any],
        profile: TargetProfile,
        c: Any,
        params: RollingClusterUpdateParams,
        policy: dict[str, str],
        report: dict[str, Any],
        tally: _PreflightTally,
    ) -> None:
        """The vsan gate of a vSAN cluster, into the report (and the blocked list)."""
        async with vcenter_session(ctx, vc, profile) as client:
            vs_gate, vs_facts = await self._thread(vsan_gate, client, c.moid)
        [vs_gate] = apply_policy([vs_gate], policy)
        report["vsan"] = {
            **vs_facts,
            **vs_gate.as_dict(),
            "object_action": params.vsan_object_action,
            "hosts_at_once": 1,
        }
        if vs_gate.status == BLOCK:
            tally.blocked.append(f"{c.name}: vsan ({vs_gate.reason})")

    def _preflight_capacity(
        self, ctx: StepContext, inv: Any, c: Any, policy: dict[str, str], report: dict[str, Any]
    ) -> Gate:
        """N+1: the hosts left must hold the running VMs plus HA's failover capacity. Saves the
        bound to the checkpoint and puts it in the report; the capacity gate (policy applied)."""
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
        return cap_gate

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
            inv = await self._thread(client.inventory)
        plan = ctx.checkpoint["plan"]
        # The operator's decisions on earlier pauses of this job.
        blockers = await ctx.select("job_blockers", "id,kind,host_id,vm_id,details,status", job_id=ctx.job_id)
        decisions = {
            str(r["blocker_id"]): r["action"]
            for r in await ctx.select("blocker_resolutions", "blocker_id,action", job_id=ctx.job_id)
        }
        skip, power_off = _decided(ctx.checkpoint, blockers, decisions)
        vm_ids = {r["moref"]: str(r["id"]) for r in await ctx.select("vms", "id,moref", vcenter_id=vc["id"])}
        found: list[Blocker] = []
        for h in plan:
            if h["id"] not in skip and h["moref"] in inv.hosts:
                found += _vm_blockers(params.blocker_default, inv, h, vm_ids, skip, power_off)
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
            recorded = await self._thread(client.read_cluster_settings, cluster["moref"])
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
            await self._thread(
                lambda: client.apply_cluster_settings(cluster["moref"], ha=ha or None, drs=drs or None)
            )
        return {"changed": {"ha": ha, "drs": drs}}

    @step(50, resumable=True)
    async def rollout(self, ctx: StepContext) -> dict[str, Any]:
        if ctx.checkpoint.get("nothing_to_do"):
            return {"updated": [], "failed": []}
        # per host of a wave and of the next: its turn (or preparation) and a rescan beside it
        with self._own_threads(4 * self._max_out(ctx) + 2):
            return await self._rollout(ctx)

    async def _rollout(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        progress = RolloutProgress.model_validate(ctx.saved_progress or {})
        self._progress = progress  # the cleanup of this run reads it here (the same store)
        skip = set(ctx.checkpoint.get("skip") or [])
        todo = [
            h
            for h in ctx.checkpoint["plan"]
            if h["id"] not in skip and h["id"] not in progress.done and h["id"] not in progress.failed
        ]
        wave_size = self._max_out(ctx)
        profile = TargetProfile.load()
        _, vc = await self._vcenter(ctx)
        waves = [todo[i : i + wave_size] for i in range(0, len(todo), wave_size)]
        signals = [_WaveSignal(len(w)) for w in waves]
        allowed = params.failure_budget_hosts(len(ctx.checkpoint["plan"]))
        self._stopping = False
        async with vcenter_session(ctx, vc, profile) as client:
            run = _RolloutRun(ctx, params, profile, client, progress, waves, signals, allowed)
            try:
                for k, wave in enumerate(waves):
                    start = k * wave_size
                    # Safe point: no host of this job is out of service here.
                    await self._safe_point(run, todo[start:])
                    if ctx.checkpoint.get("vsan") and not any(
                        progress.phase_of(h["id"]) in AFTER_FLASH | {HostPhase.MAINTENANCE} for h in wave
                    ):
                        await self._vsan_idle(ctx, params, profile, client, wave[0], todo[start:])
                    self._prepare_wave(run, k + 1)  # (two waves ahead at most: the backups go one
                    self._prepare_wave(run, k + 2)  # after the other, so they are done before their turn)
                    await self._run_wave(run, k)
                    await ctx.save_progress(progress.dump())
                    if len(progress.failed) > allowed:
                        await self._budget_exhausted(run, todo[start + len(wave) :])
            except BaseException as exc:
                await self._rollout_stopped(run, exc)
                raise
        host_names = {h["id"]: h["name"] for h in ctx.checkpoint["plan"]}
        return {
            "updated": [host_names[i] for i in progress.done],
            "failed": [host_names[i] for i in progress.failed],
        }

    # the rollout's waves, in the order _rollout runs them ------------------------------------------
    async def _safe_point(self, run: _RolloutRun, rest: list[dict[str, Any]]) -> None:
        """Between two waves: a cancel ends the hosts not updated (``rest``); a pause or the
        executor's drain saves the progress and hands the job back."""
        ctx = run.ctx
        if ctx.cancel_requested:
            await self._drop_ahead(
                ctx, run.client, run.ahead, run.signals, run.progress, HostPhase.CANCELLED, "job cancelled"
            )
            for h in rest:
                if run.progress.phase_of(h["id"]) not in ENDED:
                    await ctx.update_task(HOST, h, TaskStatus.CANCELLED, details={"reason": "job cancelled"})
            raise JobCancelled("cancel requested")
        if ctx.pause_requested or ctx.draining:
            # resumes from the saved progress: finished hosts are not touched again,
            # a host prepared ahead is prepared again (its staged firmware removed now)
            await self._drop_ahead(ctx, run.client, run.ahead, run.signals, run.progress, None, "")
            await ctx.save_progress(run.progress.dump())
            if ctx.pause_requested:
                raise PauseRequested("paused by operator between hosts")
            raise ShutdownRequested("executor stopping; handing the job back between hosts")

    def _prepare_wave(self, run: _RolloutRun, k: int) -> None:
        """Prepare wave ``k`` during the waves before it (nothing of it leaves service):
        its SCP backups once wave k-1's are stored, its staging once wave k-1 goes
        into maintenance (``stage_ahead``, the default; never on vSAN, whose gate comes
        before each host). A rollout that stops before wave k's turn removes what was
        staged there (_drop_ahead; the cleanup step after a crash)."""
        if not 0 < k < len(run.waves):
            return

        def may_stage() -> bool:
            return run.params.stage_firmware and run.params.stage_ahead and not run.ctx.checkpoint.get("vsan")

        for h in run.waves[k]:
            if h["id"] not in run.ahead:
                run.ahead[h["id"]] = asyncio.create_task(
                    self._prepare_ahead(
                        run.ctx, run.profile, run.client, h, run.progress, run.signals[k - 1], run.signals[k], may_stage
                    )
                )  # fmt: skip

    async def _run_wave(self, run: _RolloutRun, k: int) -> None:
        """Wave ``k``'s hosts side by side (with their preparations ahead), each counted done
        or failed."""
        wave, signal = run.waves[k], run.signals[k]
        mine = {h["id"]: run.ahead.pop(h["id"]) for h in wave if h["id"] in run.ahead}
        results = await asyncio.gather(
            *(
                self._host(run.ctx, run.params, run.profile, run.client, h, run.progress, mine.get(h["id"]), signal)
                for h in wave
            ),
            return_exceptions=True,
        )  # fmt: skip
        for h, res in zip(wave, results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, Exception):
                raise res
            (run.progress.failed if isinstance(res, Exception) else run.progress.done).append(h["id"])

    async def _budget_exhausted(self, run: _RolloutRun, rest: list[dict[str, Any]]) -> None:
        """More hosts failed than the failure budget allows: the hosts not updated (``rest``)
        skipped, and the rollout stopped."""
        ctx, params, progress, allowed = run.ctx, run.params, run.progress, run.allowed
        reason = "rollout stopped: failure budget"
        await self._drop_ahead(ctx, run.client, run.ahead, run.signals, progress, HostPhase.SKIPPED, reason)
        for h in rest:
            if progress.phase_of(h["id"]) not in ENDED:
                await ctx.update_task(HOST, h, TaskStatus.SKIPPED, details={"reason": reason})
        names = [h["name"] for h in ctx.checkpoint["plan"] if h["id"] in progress.failed]
        budget = (
            f"{allowed} ({params.failure_budget} of {len(ctx.checkpoint['plan'])} host(s))"
            if isinstance(params.failure_budget, str)
            else f"{allowed}"
        )
        raise FailureBudgetExhausted(
            f"{len(progress.failed)} host(s) failed ({', '.join(names)}), failure budget is "
            f"{budget}: rollout stopped with {len(rest)} host(s) not updated"
        )

    async def _rollout_stopped(self, run: _RolloutRun, exc: BaseException) -> None:
        """Whatever stops the rollout (vSAN gate, a host's error, the budget): no host
        prepared ahead keeps firmware staged for a reboot nobody planned."""
        if isinstance(exc, Exception) and not run.ctx.fenced:
            with contextlib.suppress(Exception):
                why = exc.skip_reason if isinstance(exc, VsanNotIdle) else "rollout stopped"
                await self._drop_ahead(
                    run.ctx, run.client, run.ahead, run.signals, run.progress, HostPhase.SKIPPED, why
                )
        for a in run.ahead.values():  # (a crash or a lost lease: the cleanup removes it)
            a.cancel()

    async def _go_ahead(self, ctx: StepContext) -> bool:
        """Whether a host may be prepared ahead of its turn now: no cancel, pause or stop
        requested - read from the job itself, as the executor learns of them only at its next
        heartbeat and a host prepared after the request would be touched for nothing."""
        if ctx.cancel_requested or ctx.pause_requested or ctx.draining or ctx.fenced:
            return False
        rows = await ctx.select("jobs", "cancel_requested_at,pause_requested_at", id=ctx.job_id)
        return bool(rows) and not rows[0].get("cancel_requested_at") and not rows[0].get("pause_requested_at")

    async def _prepare_ahead(
        self,
        ctx: StepContext,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        progress: RolloutProgress,
        before: _WaveSignal,
        own: _WaveSignal,
        may_stage: Callable[[], bool],
    ) -> HostWork | None:
        """Prepare ``host`` during the waves before its own: its SCP backup once the wave
        before has its backups stored, its staging (when ``may_stage()`` then) once the wave
        before has begun its turn. The host keeps serving VMs throughout. Returns its iDRAC
        session for its turn, or None when nothing was done."""
        await before.backed_up.wait()
        if self._stopping or progress.phase_of(host["id"]) in AFTER_FLASH or not await self._go_ahead(ctx):
            return None  # (a host resumed past its staging is not prepared again)
        work = await self._work(ctx, profile, vc, host)
        try:
            await self._backup(ctx, work, host, progress, HostPhase.BACKED_UP)
            own.backed_up_one(host["id"])  # the next wave's backups may begin
            await before.turn.wait()
            if not self._stopping and may_stage() and await self._go_ahead(ctx):
                await self._stage(ctx, work, host, progress, HostPhase.STAGED)
        except BaseException:
            await self._thread(work.close)
            raise
        return work

    async def _drop_ahead(
        self,
        ctx: StepContext,
        vc: VSphereClient,
        ahead: dict[str, asyncio.Task[HostWork | None]],
        signals: list[_WaveSignal],
        progress: RolloutProgress,
        phase: HostPhase | None,
        reason: str,
    ) -> None:
        """The rollout stops before the hosts prepared ahead have their turn: let each
        preparation finish what it is doing (a request to an iDRAC is not cut off), remove
        any firmware it staged, and end the host with ``phase`` (None: back to queued, the
        job resumes later and prepares it again)."""
        self._stopping = True  # a preparation still waiting for its wave's signal gives up
        for sig in signals:
            sig.backed_up.set()
            sig.turn.set()
        for host_id, a in list(ahead.items()):
            ahead.pop(host_id)
            work = None
            with contextlib.suppress(Exception):
                work = await a
            cp = progress.hosts.get(host_id)
            if cp is None:
                if work is not None:
                    await self._thread(work.close)
                continue
            host = next(h for h in ctx.checkpoint["plan"] if h["id"] == host_id)
            if cp.phase in (HostPhase.STAGE, HostPhase.STAGED):
                try:
                    if work is None:
                        work = await self._work(ctx, TargetProfile.load(), vc, host)
                    await self._thread(work.unstage_all)
                    cp.unstaged, cp.staged_jobs = True, []
                except Exception as exc:  # noqa: BLE001 - on the task; the cleanup tries again
                    cp.unstage_error = str(exc)[:500]
            if work is not None:
                await self._thread(work.close)
            if phase is None and not cp.unstage_error:
                progress.hosts.pop(host_id)  # prepared again when the job resumes
                await ctx.update_task(HOST, host, TaskStatus.PENDING, details={"phase": HostPhase.QUEUED})
                continue
            if phase is not None:
                cp.phase, cp.error = phase, reason
            # (paused with firmware left staged: the host stays staged, prepared again on resume;
            # a cleanup before that removes it)
            await ctx.update_task(
                HOST, host, cp.task_status, details={**cp.display(), **({"reason": reason} if reason else {})}
            )
        await ctx.save_progress(progress.dump())

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
                    HOST, host, TaskStatus.PENDING, details={"phase": HostPhase.VSAN_WAIT, "vsan": g.reason}
                ),
                loop,
            )

        gate, waited = await self._thread(
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
                "phase": HostPhase.QUEUED,
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
            err = VsanNotIdle(
                f"gate vsan blocks before {host['name']} after {params.vsan_resync_timeout_s} s: {gate.reason}"
            )
            err.skip_reason = f"rollout stopped: vsan ({gate.reason})"
            raise err

    async def _enter_maintenance(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        budget: float,
        progress: RolloutProgress,
        vsan: bool,
    ) -> None:
        """Maintenance mode, tried 1 + ``maintenance_retries`` times ``maintenance_retry_delay_s``
        apart (vSAN hosts with ``vsan_object_action``); the tries are counted on the task.
        Each try's vCenter task id is saved (and shown on the task) before the wait: a cleanup
        after this process died cancels that evacuation before it brings the host back."""
        tries = 1 + params.maintenance_retries
        loop = asyncio.get_running_loop()
        cp = progress.host(host["id"])

        def started(task_id: str) -> None:
            cp.maintenance_task = task_id
            asyncio.run_coroutine_threadsafe(
                self._phase(ctx, host, progress, HostPhase.MAINTENANCE, 35), loop
            ).result()

        for attempt in range(1, tries + 1):
            cp.maintenance_attempts = attempt
            try:
                await self._thread(
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
                cp.maintenance_errors = [*cp.maintenance_errors, str(exc)[:300]]
                await asyncio.sleep(profile.seconds(params.maintenance_retry_delay_s))

    async def _work(
        self, ctx: StepContext, profile: TargetProfile, vc: VSphereClient, host: dict[str, Any]
    ) -> HostWork:
        cred = await credential(ctx, host.get("credential_set_id"), f"iDRAC of {host['name']}")
        return HostWork(profile, vc, host, cred)

    async def _phase(
        self,
        ctx: StepContext,
        host: dict[str, Any],
        progress: RolloutProgress,
        phase: HostPhase,
        pct: int | None = None,
        *,
        save: bool = True,
    ) -> None:
        """Enter ``phase``: saved in the step's progress first (with ``save``: what a resume
        and the cleanup must know before the action that follows), then shown on the task."""
        cp = progress.host(host["id"])
        clock = self._clocks.setdefault(host["id"], [None, time.monotonic()])
        now = time.monotonic()
        if clock[0] is not None:
            cp.phase_s[clock[0]] = round(cp.phase_s.get(clock[0], 0.0) + now - clock[1], 3)
        clock[:] = [None if phase in ENDED else str(phase), now]
        cp.phase = phase
        if save:
            await ctx.save_progress(progress.dump())
        await ctx.update_task(
            HOST,
            host,
            cp.task_status,
            progress=pct,
            details=cp.display(),
            error=cp.error if phase in ENDED else None,
        )

    async def _backup(
        self,
        ctx: StepContext,
        work: HostWork,
        host: dict[str, Any],
        progress: RolloutProgress,
        then: HostPhase | None = None,
    ) -> None:
        """Invariant: no firmware is applied without a fresh SCP backup stored for it."""
        await self._phase(ctx, host, progress, HostPhase.BACKUP, 5, save=False)
        scp = await self._thread(work.scp_backup)
        stored = await ctx.put_artifact(
            "scp_backup", scp, content_type="application/json", server_id=host["server_id"]
        )
        progress.host(host["id"]).scp_artifact = stored["artifact_id"]
        if then is not None:  # (ahead of its turn: shown as waiting)
            await self._phase(ctx, host, progress, then, 10)

    async def _stage(
        self,
        ctx: StepContext,
        work: HostWork,
        host: dict[str, Any],
        progress: RolloutProgress,
        then: HostPhase | None = None,
    ) -> None:
        """Stage the host's firmware while it serves VMs; the phase is saved first, so a job
        that ends before the apply (crash, cancel) has its cleanup remove what was staged."""
        await self._phase(ctx, host, progress, HostPhase.STAGE, 15)
        progress.host(host["id"]).staged_jobs = await self._thread(work.stage, _packages(host["packages"]))
        if then is not None:
            await self._phase(ctx, host, progress, then, 25)

    async def _host(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        progress: RolloutProgress,
        ahead: asyncio.Task[HostWork | None] | None,
        signal: _WaveSignal,
    ) -> HostCheckpoint:
        """One host, phase by phase (:class:`HostPhase`); each phase is saved before the
        irreversible action it begins. ``ahead``: its preparation during the wave before."""
        packages = _packages(host["packages"])
        cp = progress.host(host["id"])
        resumed = cp.phase in AFTER_FLASH  # after a crash inside the apply: never flash again
        power_off = list((ctx.checkpoint.get("power_off") or {}).get(host["id"], []))
        work: HostWork | None = None
        try:
            work = (await ahead) if ahead is not None else None
            fresh = work is not None  # prepared during the wave before, in this run
            if work is None:
                work = await self._work(ctx, profile, vc, host)
            if not resumed:
                await self._host_to_apply(
                    ctx, params, profile, vc, host, progress, cp, work, fresh, signal, power_off, packages
                )
            else:
                signal.backed_up_one(host["id"])
                signal.turn_one(host["id"])
                cp.resumed_after_interruption = True
                await self._phase(ctx, host, progress, HostPhase.SETTLE, 60)
                cp.bmc_settle = await self._thread(work.settle_after_interruption)
            await self._host_back(ctx, vc, host, progress, cp, work, packages)
            return cp
        except (asyncio.CancelledError, JobCancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - one host's failure is counted, not fatal by itself
            cp.error = str(exc)[:2000] or type(exc).__name__
            log.warning("host %s failed: %s", host["name"], cp.error)
            if cp.phase in BEFORE_APPLY and (
                cp.staged_jobs or cp.phase in (HostPhase.STAGE, HostPhase.STAGED)
            ):
                try:
                    if work is None:
                        work = await self._work(ctx, profile, vc, host)
                    await self._thread(work.unstage)
                    cp.unstaged = True
                except Exception as unstage:  # noqa: BLE001 - reported on the task
                    cp.unstage_error = str(unstage)[:500]
            await self._host_failed_back(vc, host, cp)
            await self._phase(ctx, host, progress, HostPhase.FAILED)
            raise
        finally:
            signal.turn_one(host["id"])  # (a host that failed early frees the next wave too)
            if work is not None:
                await self._thread(work.close)

    # a host's turn, in the order _host runs it ----------------------------------------------------
    async def _host_to_apply(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        profile: TargetProfile,
        vc: VSphereClient,
        host: dict[str, Any],
        progress: RolloutProgress,
        cp: HostCheckpoint,
        work: HostWork,
        fresh: bool,
        signal: _WaveSignal,
        power_off: list[str],
        packages: list[UpdatePackage],
    ) -> None:
        """Backup (unless prepared ahead), staging and the rescan, out of service (VMs
        powered off, maintenance), then the one reboot (or update) that applies the firmware."""
        if not fresh or cp.phase not in (HostPhase.BACKED_UP, HostPhase.STAGED):
            await self._backup(ctx, work, host, progress)
        signal.backed_up_one(host["id"])
        inv = await self._stage_and_rescan(ctx, params, vc, host, progress, cp, work, fresh)
        signal.turn_one(host["id"])
        late = [
            b for b in host_blockers(inv, host["moref"]) if b.severity == BLOCKING and b.vm not in power_off
        ]
        if late:
            raise HostFailed(
                f"{host['name']}: new blocker(s) since the scan: "
                + "; ".join(f"{b.vm_name}: {b.detail}" for b in late)
            )
        running = await self._thread(work.running_vms, power_off)
        cp.powered_off_vms = sorted(set(running) | set(cp.powered_off_vms))
        cp.maintenance_by_job = True
        cp.stamp(stamp_entered)  # the host leaves service here (executor/host_maintenance.py)
        await self._phase(ctx, host, progress, HostPhase.MAINTENANCE, 30)
        for vm in running:
            await self._thread(vc.power_off_vm, vm)
        memory = sum(
            inv.vms[v].memory_mb
            for v in inv.hosts[host["moref"]].vms
            if v in inv.vms and inv.vms[v].powered_on and v not in running
        )
        budget = evacuation_budget_s(memory, params.vmotion_timeout_s)
        cp.evacuation_budget_s = round(budget, 1)
        await self._enter_maintenance(
            ctx, params, profile, vc, host, budget, progress, bool(ctx.checkpoint.get("vsan"))
        )
        cp.boot_before = await self._thread(work.boot_time)
        await self._phase(ctx, host, progress, HostPhase.APPLY, 50)
        if params.stage_firmware:
            cp.apply_timing = await self._thread(work.reboot_apply, cp.staged_jobs)
        else:
            await self._thread(work.apply_in_maintenance, packages)

    async def _stage_and_rescan(
        self,
        ctx: StepContext,
        params: RollingClusterUpdateParams,
        vc: VSphereClient,
        host: dict[str, Any],
        progress: RolloutProgress,
        cp: HostCheckpoint,
        work: HostWork,
        fresh: bool,
    ) -> Any:
        """vCenter's inventory read again at the host's turn (VMs rescanned there, not on the
        iDRAC), alongside its staging when that is done now: a VM that gained a blocker since
        the scan, or moved here since, fails the host instead of entering maintenance."""
        if params.stage_firmware and (not fresh or cp.phase != HostPhase.STAGED):
            _, inv = await asyncio.gather(self._stage(ctx, work, host, progress), self._thread(vc.inventory))
            return inv
        await self._phase(ctx, host, progress, HostPhase.RESCAN, 28, save=False)
        return await self._thread(vc.inventory)

    async def _host_back(
        self,
        ctx: StepContext,
        vc: VSphereClient,
        host: dict[str, Any],
        progress: RolloutProgress,
        cp: HostCheckpoint,
        work: HostWork,
        packages: list[UpdatePackage],
    ) -> None:
        """After the apply: the host back, its versions verified, out of maintenance, its
        VMs powered on again, done."""
        await self._phase(ctx, host, progress, HostPhase.WAIT_HOST, 75)
        await self._thread(work.wait_esxi, cp.boot_before)
        cp.versions = await self._thread(work.verify, packages)
        await self._phase(ctx, host, progress, HostPhase.EXIT_MAINTENANCE, 90)
        await self._thread(vc.exit_maintenance, host["moref"])
        cp.stamp(stamp_exited)
        for vm in cp.powered_off_vms:
            await self._thread(vc.power_on_vm, vm)
        cp.maintenance_by_job = False
        await self._phase(ctx, host, progress, HostPhase.DONE, 100, save=False)

    async def _host_failed_back(self, vc: VSphereClient, host: dict[str, Any], cp: HostCheckpoint) -> None:
        """A failed host taken out of maintenance when it responds (its evacuation task
        cancelled) and its VMs powered on; what could not be done is left to the cleanup."""
        try:
            info: dict[str, Any] = {"maintenance_task": cp.maintenance_task}
            left_out = await self._thread(self._bring_back, vc, host, cp.powered_off_vms, info)
            cp.maintenance_task_ended = info.get("maintenance_task_ended")
            cp.maintenance_by_job = left_out
            if not left_out:
                cp.stamp(stamp_exited)
        except Exception as back:  # noqa: BLE001 - the cleanup step tries again
            cp.bring_back_error = str(back)[:500]

    async def _not_rebooted(self, ctx: StepContext, host: dict[str, Any], boot_before: str | None) -> bool:
        """True when vCenter shows the host connected and still on the boot it had before
        the apply phase (so the reboot that applies staged firmware never came)."""
        if not boot_before:
            return False
        _, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            try:
                now = await self._thread(client.host, host["moref"])
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

    @step(30, resumable=True)
    async def restore_cluster_settings(self, ctx: StepContext) -> dict[str, Any]:
        return await self._restore(ctx)

    async def _restore(self, ctx: StepContext) -> dict[str, Any]:
        recorded = ctx.checkpoint.get("recorded_settings")
        if not recorded:
            return {"restored": False}
        cluster, vc = await self._vcenter(ctx)
        async with vcenter_session(ctx, vc) as client:
            after = await self._thread(client.restore_cluster_settings, cluster["moref"], recorded)
        return {
            "restored": True,
            "ha_enabled": after["ha"]["enabled"],
            "admission_control_enabled": after["ha"]["admission_control_enabled"],
        }

    # owed from the first change it undoes: a job paused on blockers has changed nothing yet
    @cleanup_step(10, only_if_started="relax_cluster_settings")
    async def cleanup(self, ctx: StepContext) -> dict[str, Any]:
        """Every exit path: settings as recorded, no host of ours left in maintenance, no
        firmware left staged on a host that was not rebooted. What the job did to each host
        is the rollout's saved progress (this run's, or the interrupted run's)."""
        out: dict[str, Any] = {"hosts_brought_back": []}
        progress = self._progress or RolloutProgress.model_validate(await ctx.progress_of("rollout"))
        plan = {h["id"]: h for h in ctx.checkpoint.get("plan") or []}
        errors = []
        # firmware staged (or still downloading) on a host interrupted before its reboot (a
        # crash, a cancel from executor_lost): the failure path of the rollout unstages it, an
        # interruption skips that
        out["unstaged"] = []
        for host_id, cp in progress.hosts.items():
            h = plan.get(host_id)
            if h is None or cp.unstaged or host_id in progress.done or cp.phase == HostPhase.BACKED_UP:
                continue  # (backed up ahead of its turn: nothing staged there)
            if cp.phase not in BEFORE_APPLY and not (
                # interrupted in apply before its reboot: the host still runs the boot it had
                cp.phase == HostPhase.APPLY and await self._not_rebooted(ctx, h, cp.boot_before)
            ):
                continue
            try:
                cred = await credential(ctx, h.get("credential_set_id"), f"iDRAC of {h['name']}")
                await self._thread(self._unstage_left, TargetProfile.load(), h, cred)
                cp.unstaged = True
                if cp.phase not in ENDED:
                    cp.phase, cp.error = (
                        HostPhase.FAILED,
                        "interrupted; its staged firmware removed by the cleanup",
                    )
                await ctx.update_task(HOST, h, cp.task_status, details=cp.display(), error=cp.error)
                out["unstaged"].append(h["name"])
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                errors.append(f"{h['name']}: staged firmware not removed: {exc}")
        ours = [(plan[i], cp) for i, cp in progress.hosts.items() if cp.maintenance_by_job and i in plan]
        if ours:
            _, vc = await self._vcenter(ctx)
            async with vcenter_session(ctx, vc) as client:
                for h, cp in ours:
                    try:
                        info: dict[str, Any] = {"maintenance_task": cp.maintenance_task}
                        if await self._thread(self._bring_back, client, h, cp.powered_off_vms, info):
                            errors.append(f"{h['name']}: still in maintenance mode")
                            continue
                        cp.maintenance_by_job = False
                        cp.stamp(stamp_exited)
                        if info.get("maintenance_task_ended"):
                            cp.maintenance_task_ended = info["maintenance_task_ended"]
                            out.setdefault("maintenance_tasks_ended", {})[h["name"]] = (
                                cp.maintenance_task_ended
                            )
                        if cp.phase not in ENDED:
                            cp.phase = HostPhase.FAILED
                            cp.error = "interrupted; brought back out of maintenance by the cleanup"
                        await ctx.update_task(HOST, h, cp.task_status, details=cp.display(), error=cp.error)
                        out["hosts_brought_back"].append(h["name"])
                    except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                        errors.append(f"{h['name']}: {exc}")
        out.update(await self._restore(ctx))
        if errors:
            raise VSphereHandlerError("cleanup could not bring back: " + "; ".join(errors))
        return out
