"""rackpilot's state vocabulary, spelled once for Python: the values of the Postgres enums
``public.job_status``, ``public.task_status``, ``public.step_status``,
``public.pause_reason``, ``public.task_target_kind`` and ``public.job_type``.

SQL is the source (``supabase/migrations``); these StrEnums mirror it member for member,
in the enum's order, and ``tests/integration/test_vocabulary.py`` reads ``pg_enum`` of a
migrated database and fails, naming the enum and the value, when either side drifts. A
migration that adds a value adds the member here in the same commit.

Members are ``str``: they compare equal to the strings the REST API returns and serialise
as those strings. This module imports nothing of rackpilot, so every layer may use it.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """``public.job_status``: pending -> running -> completed | failed | cancelled, with
    running <-> paused (the transitions are enforced in SQL)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    """``public.task_status``: one job task (a server, host, pair ...)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class TaskTargetKind(StrEnum):
    """``public.task_target_kind``: what one job task is about (its ``target_id`` names a
    row of that kind)."""

    SERVER = "server"
    HOST = "host"
    CLUSTER = "cluster"
    VCENTER = "vcenter"
    REPLICATION_PAIR = "replication_pair"
    VM = "vm"
    OME_INSTANCE = "ome_instance"
    SITE = "site"
    FIRMWARE_CATALOG = "firmware_catalog"


class StepStatus(StrEnum):
    """``public.step_status``: one row of ``workflow_executions``. A step that found blockers
    goes back to ``pending`` (its details say how many); it runs again on resume."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class PauseReason(StrEnum):
    """``public.pause_reason``: why a job is paused."""

    BLOCKERS = "blockers"  # open blockers wait for an operator's decision
    OPERATOR = "operator"  # an operator paused it
    EXECUTOR_LOST = "executor_lost"  # its lease expired in a step that is not safe to redo
    WINDOW_CLOSED = "window_closed"  # its maintenance window ended
    CLEANUP_FAILED = "cleanup_failed"  # the cleanup it owes failed; the next run does only that


class JobType(StrEnum):
    """``public.job_type``: every type the database knows, each declared (params, risk,
    window, handler ...) in ``executor/jobtypes.py``; ``create-job`` takes all but
    :data:`TEST_ONLY_JOB_TYPES` (``jobtypes.CREATABLE``)."""

    ROLLING_CLUSTER_UPDATE = "rolling_cluster_update"
    FIRMWARE_UPDATE = "firmware_update"
    POWER_OPERATION = "power_operation"
    VIRTUAL_MEDIA_MOUNT = "virtual_media_mount"
    SCP_BACKUP = "scp_backup"
    ESXI_UPGRADE = "esxi_upgrade"
    VCENTER_SYNC = "vcenter_sync"
    REPLICATION_SYNC = "replication_sync"
    INVENTORY_REFRESH = "inventory_refresh"
    FIRMWARE_COMPLIANCE = "firmware_compliance"
    SELFTEST = "selftest"  # the executor's own end-to-end probe; touches no infrastructure
    DISCOVERY_SCAN = "discovery_scan"
    CATALOG_REFRESH = "catalog_refresh"
    DIRECTORY_SYNC = "directory_sync"
    VM_OPERATION = "vm_operation"  # power VMs off or disconnect their media (pre-flight fixes)


#: job types only an executor started with ``enable_selftest`` takes; create-job refuses them
TEST_ONLY_JOB_TYPES = frozenset({JobType.SELFTEST})


class RunOutcome(StrEnum):
    """How one executor's run of a claimed job ended: the executor's own word, not a SQL
    enum (health reports count runs by it). The first four are the job status the run left
    the job in, spelled by :class:`JobStatus`; the others mean it wrote no end state."""

    COMPLETED = JobStatus.COMPLETED.value
    FAILED = JobStatus.FAILED.value
    CANCELLED = JobStatus.CANCELLED.value
    PAUSED = JobStatus.PAUSED.value
    FENCED = "fenced"  # its lease was lost; it wrote nothing more
    RELEASED = "released"  # handed back while the executor stops; another executor resumes it
    INTERRUPTED = "interrupted"  # the run's task was cancelled (the executor stopping)
    ERROR = "error"  # a control-plane error or a bug in the engine ended the run


#: the Postgres enum each StrEnum mirrors
SQL_ENUMS: dict[str, type[StrEnum]] = {
    "job_status": JobStatus,
    "task_status": TaskStatus,
    "task_target_kind": TaskTargetKind,
    "step_status": StepStatus,
    "pause_reason": PauseReason,
    "job_type": JobType,
}
