"""Every rackpilot job type, declared once: its parameter model, risk, maintenance-window
rule, whether it takes hosts out of service (and how many at once), the inventory kinds it
targets, its handler module, the console form that creates it, and the hints create-job's
``planJob`` plans it by.

The other places that know a job type are made from :data:`REGISTRY`, or held to it by a
test that names the place, the type and the field that drifted:

* ``supabase/functions/_shared/job-schemas.json``: ``scripts/gen_job_schemas.py`` writes
  each creatable type's params schema and, under ``job_type_rules``, its risk, window
  rule, target kinds and the planning hints ``jobs.ts`` reads instead of branching on type
  names;
* ``public.safety_policies``: ``python -m devstack.policies safety-migration`` writes the
  upsert from the registry (risk, window rule, takes hosts out) and ``policies/safety.yaml`` (the
  tunable limits and timeouts);
* the handler registry: :data:`executor.handlers.BUILTIN_MODULES` is the registry's handler
  modules;
* the console's generic job form offers every type whose ``console`` is ``FORM``;
* ``public.job_type`` is mirrored by :class:`executor.vocabulary.JobType` (held to
  ``pg_enum`` by ``tests/integration/test_vocabulary.py``), whose every member is declared
  here (checked when this module is imported).

``tests/integration/test_job_type_places.py`` fails when any of them drifts.

Adding a job type: the ``public.job_type`` value (a migration of its own) and its
``vocabulary.JobType`` member, its params model in ``jobparams.py``, its declaration below,
its limits in ``policies/safety.yaml``, then ``scripts/gen_job_schemas.py`` and a migration
made with ``python -m devstack.policies safety-migration`` (CONTRIBUTING.md says it step by
step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from . import jobparams as p
from .vocabulary import TEST_ONLY_JOB_TYPES, JobType

JSON_SCHEMA_VERSION = 1


class Risk(StrEnum):
    """``public.risk_level`` (test_job_type_places.py holds the two together): how much a
    job of the type can disturb; high always needs an approved maintenance window."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Tasks(StrEnum):
    """What planJob makes the job's tasks of."""

    TARGETS = "targets"  # one task per id the params' x-target fields name, in their order
    CLUSTER_HOSTS = "cluster_hosts"  # the hosts of the params' cluster_id (host_ids narrows and orders them)


class ConsoleForm(StrEnum):
    """How the console creates a job of the type."""

    FORM = "form"  # the generic job form, made from the params model
    WIZARD = "wizard"  # a screen of its own (the rolling update wizard)
    NONE = "none"  # not created from the console (test-only types)


@dataclass(frozen=True)
class HostsOut:
    """How many of a cluster's hosts one job of the type has out of service at once, which
    planJob holds to the policy's ``max_hosts_out_per_cluster``. With neither ``param`` nor
    ``all_targets`` a job takes one host out at a time."""

    param: str | None = None  # this params field gives the count (capped by the hosts in the cluster)
    all_targets: bool = False  # every targeted host of the cluster at once
    # params values for which the job takes no host out (power_operation's action "on")
    none_when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.param is not None:
            out["param"] = self.param
        if self.all_targets:
            out["all_targets"] = True
        if self.none_when:
            out["none_when"] = {k: list(v) for k, v in self.none_when.items()}
        return out


@dataclass(frozen=True)
class OnePerCluster:
    """At most one pending, running or paused job of the type per cluster; create-job
    refuses another with ``code`` (409), saying the cluster already has a ``noun`` in
    progress."""

    code: str
    noun: str


@dataclass(frozen=True)
class JobTypeSpec:
    """One job type. ``params`` is None only for a test-only type (create-job refuses it)."""

    job_type: JobType
    params: type[p.JobParams] | None
    handler: str | None  # module of executor.handlers; None: the harness provides it (selftest)
    risk: Risk
    requires_window: bool
    hosts_out: HostsOut | None = None  # None: takes no host out of service
    tasks: Tasks = Tasks.TARGETS
    ssh_credential: str | None = None  # credential kind the job must carry to log in to hosts over SSH
    one_per_cluster: OnePerCluster | None = None
    # a top-level catalog_id is resolved to its URL; with no catalog and none of these
    # fields, the site's default catalog is taken (None: the type has no catalog of its own)
    site_default_catalog_unless: tuple[str, ...] | None = None
    console: ConsoleForm = ConsoleForm.FORM

    @property
    def takes_hosts_out(self) -> bool:
        return self.hosts_out is not None

    @property
    def target_kinds(self) -> tuple[str, ...]:
        """The inventory kinds the params' ``x-target`` fields name, in field order."""
        if self.params is None:
            return ()
        kinds: list[str] = []
        for f in self.params.model_fields.values():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            kind = extra.get("x-target")
            if kind is not None and str(kind) not in kinds:
                kinds.append(str(kind))
        return tuple(kinds)

    def plan_hints(self) -> dict[str, Any]:
        """What planJob (``jobs.ts``) plans the type by; absent keys take their defaults."""
        out: dict[str, Any] = {"tasks": self.tasks.value}
        if self.hosts_out is not None:
            out["hosts_out"] = self.hosts_out.as_json()
        if self.ssh_credential is not None:
            out["ssh_credential"] = self.ssh_credential
        if self.one_per_cluster is not None:
            out["one_per_cluster"] = {"code": self.one_per_cluster.code, "noun": self.one_per_cluster.noun}
        if self.site_default_catalog_unless is not None:
            out["site_default_catalog_unless"] = list(self.site_default_catalog_unless)
        return out

    def rules_json(self) -> dict[str, Any]:
        """The type's entry under ``job_type_rules`` in job-schemas.json."""
        return {
            "risk": self.risk.value,
            "requires_window": self.requires_window,
            "takes_hosts_out": self.takes_hosts_out,
            "target_kinds": list(self.target_kinds),
            "handler": self.handler,
            "console": self.console.value,
            "plan": self.plan_hints(),
        }


_DECLARED = (
    JobTypeSpec(
        JobType.ROLLING_CLUSTER_UPDATE,
        p.RollingClusterUpdateParams,
        "rolling_update",
        Risk.HIGH,
        requires_window=True,
        hosts_out=HostsOut(param="max_parallel_hosts"),
        tasks=Tasks.CLUSTER_HOSTS,
        one_per_cluster=OnePerCluster("rolling_update_in_progress", "rolling update"),
        console=ConsoleForm.WIZARD,
    ),
    JobTypeSpec(
        JobType.FIRMWARE_UPDATE,
        p.FirmwareUpdateParams,
        "firmware",
        Risk.HIGH,
        requires_window=True,
        hosts_out=HostsOut(param="max_parallel"),
    ),
    JobTypeSpec(
        JobType.POWER_OPERATION,
        p.PowerOperationParams,
        "power",
        Risk.MEDIUM,
        requires_window=False,
        hosts_out=HostsOut(all_targets=True, none_when={"action": ("on",)}),
    ),
    JobTypeSpec(JobType.VIRTUAL_MEDIA_MOUNT, p.VirtualMediaMountParams, "virtual_media", Risk.MEDIUM, False),
    JobTypeSpec(JobType.SCP_BACKUP, p.ScpBackupParams, "scp_backup", Risk.LOW, False),
    JobTypeSpec(
        JobType.ESXI_UPGRADE,
        p.EsxiUpgradeParams,
        "esxi_upgrade",
        Risk.HIGH,
        requires_window=True,
        hosts_out=HostsOut(),  # host by host
        ssh_credential="esxi",
    ),
    JobTypeSpec(JobType.VCENTER_SYNC, p.VcenterSyncParams, "vcenter_sync", Risk.LOW, False),
    JobTypeSpec(JobType.REPLICATION_SYNC, p.ReplicationSyncParams, "replication_sync", Risk.LOW, False),
    JobTypeSpec(JobType.INVENTORY_REFRESH, p.InventoryRefreshParams, "inventory", Risk.LOW, False),
    JobTypeSpec(
        JobType.FIRMWARE_COMPLIANCE,
        p.FirmwareComplianceParams,
        "ome",
        Risk.LOW,
        requires_window=False,
        site_default_catalog_unless=("ome_instance_id",),
    ),
    JobTypeSpec(JobType.SELFTEST, None, None, Risk.LOW, False, console=ConsoleForm.NONE),
    JobTypeSpec(JobType.DISCOVERY_SCAN, p.DiscoveryScanParams, "discovery", Risk.LOW, False),
    JobTypeSpec(JobType.CATALOG_REFRESH, p.CatalogRefreshParams, "catalog", Risk.LOW, False),
    JobTypeSpec(JobType.DIRECTORY_SYNC, p.DirectorySyncParams, "directory_sync", Risk.LOW, False),
    # medium: a powered-off VM (or one whose ISO is pulled) is an outage of its workload, but
    # no host leaves service; created from the update wizard's pre-flight, one VM at a time
    JobTypeSpec(
        JobType.VM_OPERATION,
        p.VmOperationParams,
        "vm_operation",
        Risk.MEDIUM,
        False,
        console=ConsoleForm.WIZARD,
    ),
)


class JobTypeDeclarationError(Exception):
    """The declarations below disagree with the vocabulary or with themselves."""


def _registry(specs: tuple[JobTypeSpec, ...]) -> dict[JobType, JobTypeSpec]:
    out: dict[JobType, JobTypeSpec] = {}
    for s in specs:
        if s.job_type in out:
            raise JobTypeDeclarationError(f"{s.job_type} is declared twice")
        if (s.params is None) != (s.job_type in TEST_ONLY_JOB_TYPES):
            raise JobTypeDeclarationError(f"{s.job_type}: only a test-only type has no params model")
        if s.risk is Risk.HIGH and not s.requires_window:
            raise JobTypeDeclarationError(f"{s.job_type}: a high-risk type must require a maintenance window")
        if s.hosts_out is not None and s.hosts_out.param is not None and s.params is not None:
            if s.hosts_out.param not in s.params.model_fields:
                raise JobTypeDeclarationError(
                    f"{s.job_type}: hosts_out.param {s.hosts_out.param} is no params field"
                )
        out[s.job_type] = s
    missing = [t.value for t in JobType if t not in out]
    if missing:
        raise JobTypeDeclarationError(
            f"job types of the vocabulary without a declaration: {', '.join(missing)}"
        )
    return {t: out[t] for t in JobType}  # in the vocabulary's (the SQL enum's) order


#: every job type, in the order of ``public.job_type``
REGISTRY: dict[JobType, JobTypeSpec] = _registry(_DECLARED)

#: the types create-job takes (all but the test-only ones), in the enum's order
CREATABLE: tuple[JobType, ...] = tuple(t for t, s in REGISTRY.items() if s.params is not None)

#: the types the console's generic job form offers
FORM_TYPES: tuple[JobType, ...] = tuple(t for t, s in REGISTRY.items() if s.console is ConsoleForm.FORM)


def spec(job_type: str) -> JobTypeSpec:
    """The declaration of ``job_type``; raises :class:`jobparams.UnknownJobTypeError`."""
    try:
        return REGISTRY[JobType(job_type)]
    except ValueError:
        raise p.UnknownJobTypeError(f"unknown job type {job_type!r}") from None


def model_for(job_type: str) -> type[p.JobParams]:
    """The params model of a type create-job takes; a test-only type is unknown to it.
    Raises :class:`jobparams.UnknownJobTypeError`."""
    model = spec(job_type).params
    if model is None:
        raise p.UnknownJobTypeError(f"unknown job type {job_type!r}")
    return model


def parse_params(job_type: str, params: Any) -> p.JobParams:
    """The typed params of a stored job; raises a :class:`jobparams.JobParamsError` subclass."""
    model = model_for(job_type)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise p.InvalidJobParamsError(job_type, exc.errors(include_url=False, include_input=False)) from None


def json_schemas() -> dict[str, Any]:
    """Every creatable type's params schema and rules, as committed in ``job-schemas.json``."""
    return {
        "version": JSON_SCHEMA_VERSION,
        "generated_by": "scripts/gen_job_schemas.py from executor/jobtypes.py",
        "target_kinds": [k.value for k in p.TargetKind],
        "job_types": {t.value: model_for(t).model_json_schema() for t in CREATABLE},
        "job_type_rules": {t.value: REGISTRY[t].rules_json() for t in CREATABLE},
    }
