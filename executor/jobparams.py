"""Parameters of every rackpilot job type: the one source of truth for their fields.
Which model belongs to which job type is declared in :mod:`executor.jobtypes`.

The ``create-job`` edge function validates requests against JSON Schemas generated from
these models (``scripts/gen_job_schemas.py`` writes
``supabase/functions/_shared/job-schemas.json``; a test fails when the committed file
drifts from the models), and the executor parses the stored ``jobs.params`` with the
same models. A field marked ``x-target`` names the inventory kind its ids refer to;
the edge function resolves those ids, checks that they exist and that they all belong
to the job's site, and makes one task per target.

Only constraints a JSON Schema can express are used (no cross-field validators), so the
edge function and the executor accept exactly the same documents.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import ErrorDetails


class JobParamsError(ValueError):
    """Root of this module's errors: the params of a job are not acceptable."""


class UnknownJobTypeError(JobParamsError):
    """The job type is not one rackpilot knows."""


class InvalidJobParamsError(JobParamsError):
    """The params do not match the job type's model; ``errors`` has pydantic's details."""

    def __init__(self, job_type: str, errors: list[ErrorDetails]):
        super().__init__(f"invalid params for {job_type}: {len(errors)} error(s)")
        self.job_type = job_type
        self.errors = errors


class TargetKind(StrEnum):
    """Inventory kinds a job can target (``x-target`` in the schemas)."""

    SERVER = "server"  # a Dell PowerEdge server, reached through its iDRAC
    HOST = "host"  # an ESXi host in vCenter
    CLUSTER = "cluster"  # a vCenter cluster
    VCENTER = "vcenter"  # a vCenter instance
    REPLICATION_PAIR = "replication_pair"  # a ZFS source dataset and its replica
    SITE = "site"  # a whole site (discovery; a site-wide inventory or compliance run)
    OME_INSTANCE = "ome_instance"  # an OpenManage Enterprise instance
    FIRMWARE_CATALOG = "firmware_catalog"  # a registered Dell catalog (firmware_catalogs)
    VM = "vm"  # a virtual machine in vCenter (vms)


def _unique(ids: list[UUID]) -> list[UUID]:
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    return ids


# ids named in the order the operator chose, each once. uniqueItems is emitted into the
# schema by hand (the fields below) because pydantic only emits it for sets, and a set would
# lose that order. The helpers return the Field of a target: a field is written
# ``Annotated[UniqueIds, _target_list(...)]``, a static type the type checker reads.
UniqueIds = Annotated[list[UUID], AfterValidator(_unique)]


def _target_list(kind: TargetKind, max_items: int, description: str) -> Any:
    return Field(
        min_length=1,
        max_length=max_items,
        description=description,
        json_schema_extra={"uniqueItems": True, "x-target": kind.value},
    )


def _target_one(kind: TargetKind, description: str) -> Any:
    return Field(description=description, json_schema_extra={"x-target": kind.value})


# http(s) URL without whitespace; the same regex in Python (pydantic) and JavaScript.
# ASCII only, so that Python's and JavaScript's regex engines agree on every character
# (their \s classes differ on U+0085 and U+FEFF); non-ASCII hosts go in as punycode.
HttpUrlStr = Annotated[
    str, StringConstraints(pattern=r"^https?://[A-Za-z0-9._~%@:\[\]-]+(?:[/?#][!-~]*)?$", max_length=2048)
]
Name = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length=1, max_length=128)
]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9][0-9A-Za-z.+-]*$", min_length=1, max_length=64)]

# a ZFS snapshot name component (executor/targets/zfs.py narrows ZFS's rules the same way)
SnapshotPrefix = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$", min_length=1, max_length=64)
]

MAX_SERVERS_PER_JOB = 256  # targets one job may name (count)


class BlockerDefault(StrEnum):
    """What to do with a VM that keeps a host from entering maintenance mode, unless the
    operator decides otherwise when the job pauses."""

    ASK = "ask"  # pause the job and wait for an operator decision (the default)
    POWER_OFF_VM = "power_off_vm"  # power the VM off, power it back on after the host
    SKIP_HOST = "skip_host"  # leave this host out of the update


class FirmwareSelection(BaseModel):
    """Which firmware to apply: a Dell catalog, optionally narrowed to components. Name a
    registered catalog (catalog_id) or baseline (baseline_id) and create-job fills in its URL
    (and the baseline's components); a URL typed by hand is still accepted. create-job
    refuses a selection with none of the three, so a stored job always has catalog_url."""

    model_config = ConfigDict(extra="forbid")
    catalog_url: HttpUrlStr | None = Field(
        default=None, description="Dell repository catalog (Catalog.xml or .gz)"
    )
    catalog_id: UUID | None = Field(default=None, description="a registered catalog of the job's site")
    baseline_id: UUID | None = Field(
        default=None, description="a baseline of the job's site (catalog + components)"
    )
    components: list[Name] = Field(
        default=[], max_length=64, description="component names to apply; empty = every applicable update"
    )
    allow_downgrade: bool = False
    catalog_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description="SHA-256 the catalog must have (the pre-flight's catalog gate verifies it); "
        "create-job fills it in from a registered catalog's pin",
    )

    def stored_catalog_url(self) -> str:
        """The catalog URL of a stored job: create-job fills it in from catalog_id or
        baseline_id, so only params that never went through create-job lack it."""
        if self.catalog_url is None:
            raise JobParamsError("the firmware selection names no catalog_url (create-job fills it in)")
        return self.catalog_url


class EsxiImage(BaseModel):
    """An ESXi image to upgrade to, from an offline depot."""

    model_config = ConfigDict(extra="forbid")
    target_version: Version
    depot_url: HttpUrlStr
    profile_name: Name | None = None


class JobParams(BaseModel):
    """Base of every job type's params model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class RollingClusterUpdateParams(JobParams):
    """Update every host of a cluster a few at a time: evacuate, back up, flash, reboot."""

    cluster_id: Annotated[UUID, _target_one(TargetKind.CLUSTER, "the vCenter cluster to update")]
    host_ids: Annotated[
        list[UUID],
        AfterValidator(_unique),
        Field(
            default=[],
            max_length=MAX_SERVERS_PER_JOB,
            description="hosts of the cluster to update, in order; empty = every host of the cluster",
            json_schema_extra={"uniqueItems": True, "x-target": TargetKind.HOST.value},
        ),
    ]
    firmware: FirmwareSelection
    esxi: EsxiImage | None = Field(default=None, description="also upgrade ESXi during the same host reboot")
    max_parallel_hosts: int = Field(
        default=1, ge=1, le=16, description="hosts out of service at once (capped by safety.yaml)"
    )
    failure_budget: (
        Annotated[int, Field(ge=0, le=64, strict=True)]
        | Annotated[str, StringConstraints(pattern=r"^(100|[1-9]?[0-9])%$")]
    ) = Field(
        default=0,
        description="failed hosts tolerated before the rollout stops: a count (0..64) or a percentage "
        'of the hosts to update such as "25%" (rounded down)',
    )
    blocker_default: BlockerDefault = BlockerDefault.ASK
    vmotion_timeout_s: int = Field(
        default=1800, ge=60, le=86400, description="per-host evacuation budget (s)"
    )
    stage_firmware: bool = Field(default=True, description="stage updates while the host still serves VMs")
    stage_ahead: bool = Field(
        default=True,
        description="stage the next host's updates while the current one is updated (a rollout that "
        "stops removes what it staged); false: no host is sent firmware before its turn",
    )
    maintenance_retries: int = Field(
        default=1, ge=0, le=10, description="further tries when a host fails to enter maintenance mode"
    )
    maintenance_retry_delay_s: int = Field(
        default=60, ge=0, le=3600, description="wait before each maintenance-mode retry (s)"
    )
    event_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="the events gate looks at critical SEL/LC entries this many days back (d)",
    )
    vsan_object_action: Literal["ensureObjectAccessibility", "evacuateAllData", "noAction"] = Field(
        default="ensureObjectAccessibility",
        description="vSAN clusters: what maintenance mode does with the host's vSAN data",
    )
    vsan_resync_timeout_s: int = Field(
        default=3600,
        ge=60,
        le=86400,
        description="vSAN clusters: longest wait before each host for resync to finish and health to "
        "leave red (s); then the vsan gate stops the rollout",
    )

    def failure_budget_hosts(self, planned: int) -> int:
        """Failed hosts tolerated among ``planned`` hosts (a percentage rounded down)."""
        if isinstance(self.failure_budget, str):
            return int(planned * int(self.failure_budget[:-1]) // 100)
        return self.failure_budget


class FirmwareUpdateParams(JobParams):
    """Apply firmware to servers; an SCP backup is always taken first."""

    server_ids: Annotated[
        UniqueIds, _target_list(TargetKind.SERVER, MAX_SERVERS_PER_JOB, "servers to update")
    ]
    firmware: FirmwareSelection
    reboot: Literal["immediate", "staged"] = Field(
        default="immediate", description="reboot now, or stage and apply at the next reboot"
    )
    max_parallel: int = Field(default=1, ge=1, le=32, description="servers flashed at once")
    scp_backup_max_age_h: int = Field(
        default=24, ge=1, le=168, description="a stored SCP backup younger than this counts as fresh (h)"
    )
    dry_run: bool = Field(
        default=False,
        description="report per-component compliance (current, target, criticality, reboot) "
        "and change nothing",
    )


class PowerOperationParams(JobParams):
    """Power servers on or off, or restart them, through Redfish."""

    server_ids: Annotated[
        UniqueIds, _target_list(TargetKind.SERVER, MAX_SERVERS_PER_JOB, "servers to act on")
    ]
    action: Literal[
        "on", "graceful_shutdown", "force_off", "graceful_restart", "force_restart", "power_cycle"
    ]
    wait_for_state: bool = True
    timeout_s: int = Field(default=600, ge=10, le=7200, description="budget per server (s)")


class VirtualMediaMountParams(JobParams):
    """Attach an ISO or image to servers' virtual media, optionally booting from it once."""

    server_ids: Annotated[
        UniqueIds, _target_list(TargetKind.SERVER, MAX_SERVERS_PER_JOB, "servers to mount the image on")
    ]
    image_url: HttpUrlStr
    media_type: Literal["cd", "usb"] = "cd"
    boot_once: bool = False
    write_protected: bool = True
    eject: bool = Field(default=False, description="eject image_url instead of mounting it (only that image)")


class ScpBackupParams(JobParams):
    """Export each server's Server Configuration Profile and store it."""

    server_ids: Annotated[
        UniqueIds, _target_list(TargetKind.SERVER, MAX_SERVERS_PER_JOB, "servers to back up")
    ]
    components: list[
        Literal["ALL", "IDRAC", "BIOS", "NIC", "RAID", "LifecycleController", "EventFilters"]
    ] = Field(default=["ALL"], min_length=1, max_length=7)
    export_format: Literal["XML", "JSON"] = "XML"
    include_read_only: bool = False


class EsxiUpgradeParams(JobParams):
    """Upgrade ESXi on hosts one by one (maintenance mode, patch, reboot)."""

    host_ids: Annotated[
        UniqueIds, _target_list(TargetKind.HOST, MAX_SERVERS_PER_JOB, "ESXi hosts to upgrade")
    ]
    image: EsxiImage
    blocker_default: BlockerDefault = BlockerDefault.ASK
    vmotion_timeout_s: int = Field(default=1800, ge=60, le=86400)


class VcenterSyncParams(JobParams):
    """Read a vCenter's inventory (clusters, hosts, VMs) into the control plane."""

    vcenter_id: Annotated[UUID, _target_one(TargetKind.VCENTER, "the vCenter to read")]
    include_vms: bool = True
    prune_missing: bool = Field(default=False, description="delete inventory rows vCenter no longer reports")


MAX_VMS_PER_JOB = 64  # VMs one vm_operation job may name (count)


class VmOperationParams(JobParams):
    """Shut VMs down or power them off, or disconnect their CD-ROM and floppy media, through
    their vCenter: the fixes the update wizard's pre-flight offers for a VM that would keep its
    host from entering maintenance mode. Idempotent: a VM already off, or with no media
    connected, is left as it is (and said so)."""

    vm_ids: Annotated[UniqueIds, _target_list(TargetKind.VM, MAX_VMS_PER_JOB, "VMs to act on")]
    action: Literal["shutdown_guest", "power_off", "disconnect_media"] = Field(
        description="shutdown_guest: ask the guest OS to shut down (VMware Tools must run in it) and "
        "wait until the VM is off; power_off: hard power-off (the guest is not asked); "
        "disconnect_media: disconnect every CD-ROM and floppy, and do not connect them at power-on"
    )
    timeout_s: int = Field(default=300, ge=10, le=3600, description="budget per VM (s)")


class ReplicationSyncParams(JobParams):
    """Send ZFS snapshots from source to replica, incrementally where possible."""

    replication_pair_ids: Annotated[
        UniqueIds, _target_list(TargetKind.REPLICATION_PAIR, 64, "replication pairs to sync")
    ]
    mode: Literal["incremental", "full"] = Field(
        default="incremental",
        description="full: allow a full send to a replica that does not exist yet, whatever the pair says",
    )
    snapshot_prefix: SnapshotPrefix = Field(
        default="rackpilot", description="prefix of the snapshots taken and pruned; default: the pair's"
    )
    keep_snapshots: int | None = Field(
        default=None, ge=1, le=1000, description="keep-last count on both sides (count); default: the pair's"
    )
    resume: bool = Field(default=True, description="resume an interrupted send from its token")
    dry_run: bool = Field(default=False, description="report what would be sent and pruned, change nothing")


def _optional_target(kind: TargetKind, description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra={"x-target": kind.value})


def _servers_or_site(max_items: int) -> Any:
    return Field(
        default=[],
        max_length=max_items,
        description="servers to act on; empty = every server of site_id",
        json_schema_extra={"uniqueItems": True, "x-target": TargetKind.SERVER.value},
    )


MAX_INVENTORY_SERVERS = 10_000  # servers one inventory job may read (count)


class InventoryRefreshParams(JobParams):
    """Read servers' health, power, system facts, firmware inventory and Lifecycle Controller
    version from their iDRACs into the inventory. Name servers, or a site for all of its."""

    server_ids: Annotated[UniqueIds, _servers_or_site(MAX_INVENTORY_SERVERS)]
    site_id: Annotated[
        UUID | None, _optional_target(TargetKind.SITE, "every server of this site (when server_ids is empty)")
    ]
    max_parallel: int = Field(default=32, ge=1, le=128, description="BMCs read at once (count)")


class FirmwareComplianceParams(JobParams):
    """Per-component firmware compliance: from OpenManage Enterprise (ome_instance_id), or
    each iDRAC's inventory against a Dell catalog (catalog_url with server_ids or site_id).
    Exactly one source; the executor refuses a job that names both or neither."""

    ome_instance_id: Annotated[
        UUID | None, _optional_target(TargetKind.OME_INSTANCE, "read compliance from this OME instance")
    ]
    baseline: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="OME baseline name; default: OME's first baseline",
    )
    refresh_inventory: bool = True
    catalog_url: HttpUrlStr | None = Field(default=None, description="Dell catalog (Catalog.xml or .gz)")
    catalog_id: UUID | None = Field(
        default=None, description="a registered catalog of the job's site; create-job fills in catalog_url"
    )
    server_ids: Annotated[UniqueIds, _servers_or_site(4096)]
    site_id: Annotated[
        UUID | None, _optional_target(TargetKind.SITE, "every server of this site (when server_ids is empty)")
    ]


# An IPv4/IPv6 network in CIDR form, a first-last range of addresses, or one address.
AddressRange = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9A-Fa-f:.]+(/[0-9]{1,3}|-[0-9A-Fa-f:.]+)?$", min_length=2, max_length=100
    ),
]
HostName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$", min_length=1, max_length=253)
]
MAX_DISCOVERY_ADDRESSES = 4096  # addresses one scan may probe (count); the executor checks the sum


class DiscoveryScanParams(JobParams):
    """Probe IP ranges and host lists for Redfish services, identify Dell iDRACs with the
    site's credential sets (in the order given) and register or update them as servers.
    A credential set is presented only to addresses its sealed endpoints allow."""

    site_id: Annotated[UUID, _target_one(TargetKind.SITE, "the site the servers belong to")]
    ranges: list[AddressRange] = Field(
        default=[], max_length=64, description="CIDR networks or first-last address ranges"
    )
    hosts: list[HostName] = Field(
        default=[], max_length=MAX_DISCOVERY_ADDRESSES, description="single addresses or host names"
    )
    credential_set_ids: Annotated[
        list[UUID],
        AfterValidator(_unique),
        Field(
            min_length=1,
            max_length=8,
            description="iDRAC credential sets to try, in priority order",
            json_schema_extra={"uniqueItems": True, "x-credential": "idrac"},
        ),
    ]
    port: int = Field(default=443, ge=1, le=65535, description="the BMCs' Redfish port")
    scheme: Literal["https", "http"] = Field(
        default="https", description="http only for loopback addresses (the lab)"
    )
    max_parallel: int = Field(default=64, ge=1, le=256, description="addresses probed at once (count)")
    dry_run: bool = Field(
        default=False, description="list what would be registered or updated, write no server"
    )


class CatalogRefreshParams(JobParams):
    """Download a registered firmware catalog (Catalog.xml or .gz), check it against its
    SHA-256 pin if it has one, and load its packages; a catalog that moved (redirect) or is
    older than stale_after_days is loaded and reported as such."""

    catalog_id: Annotated[UUID, _target_one(TargetKind.FIRMWARE_CATALOG, "the catalog to refresh")]
    stale_after_days: int = Field(
        default=180, ge=1, le=3650, description="a catalog dated earlier than this is reported stale (days)"
    )


class DirectorySyncParams(JobParams):
    """Read the members of every directory group mapped to a role at the site (nested groups
    followed) with the site's sealed bind account, and apply them: roles set from the
    directory, and a user who left a mapped group loses that role and their sessions and
    refresh tokens. Where to connect and which credential set to bind with are the
    executor's own settings (RACKPILOT_IDM_*), never the job's: nobody who can create a job
    can send the bind password elsewhere."""

    site_id: Annotated[UUID, _target_one(TargetKind.SITE, "the site whose directory roles to sync")]


def targets_of(job_type: str, params: JobParams) -> list[tuple[TargetKind, UUID]]:
    """The (kind, id) pairs a job acts on, in the order given, read from ``x-target`` fields."""
    out: list[tuple[TargetKind, UUID]] = []
    for name, field in type(params).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind = extra.get("x-target")
        if kind is None:
            continue
        value = getattr(params, name)
        if value is None:
            continue  # an optional target not given (e.g. site_id when server_ids names servers)
        for v in value if isinstance(value, list) else [value]:
            out.append((TargetKind(str(kind)), v))
    return out
