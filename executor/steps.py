"""The step engine: ordered, recorded, resumable steps (after Ironic's clean/deploy steps).

A handler is a class whose methods are decorated with :func:`step` (and :func:`cleanup_step`).
Each declaration carries what the engine must know without running it:

* ``priority`` - steps run from the highest priority to the lowest, like Ironic's steps;
* ``resumable`` - whether the step may be run again after it was interrupted (the executor
  died or was stopped mid-step). A resumable step is idempotent or resumes from the progress
  it saved with :meth:`StepContext.save_progress`; a non-resumable one (a firmware flash, a
  reboot) is never re-run: the job pauses as ``executor_lost`` instead and an operator decides;
* ``abortable`` - whether a cancel request may interrupt the step at its waits. Otherwise
  cancel is honoured only between steps (the safe points);
* ``timeout`` - the policy key of its timeouts in ``policies/safety.yaml`` (default: its name).

Handlers may override :meth:`JobHandler.plan` to derive steps from the job (one per host,
say); the default plan is the decorated methods.

For each job the engine:

1. reads the steps already recorded in ``workflow_executions``; completed and skipped ones
   are not run again, and the checkpoint of the last completed step is restored;
2. runs the remaining steps in order, recording each as ``running`` then ``completed``
   (with timing, result and the checkpoint) or ``failed`` (with the error), checking for a
   cancel request before each one;
3. on blockers (:class:`BlockersFound`) pauses the job with the blocker list; the step is
   recorded as ``paused`` and runs again when the job is resumed;
4. runs the cleanup steps on every terminal exit - completed, failed, cancelled, and after
   recovery from a lost executor - recording each of them too. Before the step a cleanup
   step's ``only_if_started`` names (the first step that changes a target's state) it tells
   the control plane the job now owes its cleanup (``set_cleanup_owed``): SQL then refuses
   the job every terminal state until its cleanup completed - a cancel while it waits
   (paused for any reason, ``executor_lost`` included) hands it back to an executor, which
   runs no main step and only the cleanup. A cleanup that fails pauses the job as
   ``cleanup_failed`` with its outcome kept; the next run does the cleanup only;
5. on a fencing error stops at once and writes nothing more: the job belongs to another
   executor now, which will run the cleanup itself.

Waits on targets go through :meth:`StepContext.wait_for`, which tells a stalled operation
(no progress for ``stall`` seconds) from a slow one (still progressing, bounded only by the
overall step ``timeout``), and reports "running longer than usual" once.

Timeouts (``policies/safety.yaml``; all in seconds). The job type's ``timeouts.step`` bounds
each of its steps; optional ``step_timeouts`` sections refine it per step::

    job_types:
      firmware_update:
        timeouts: {lease: 120, step: 3600, job: 14400}
        step_timeouts:                       # optional, per step
          apply_firmware: {timeout: 7200, stall: 1800, expected: 2400}
    step_timeouts:                           # optional, for every job type
      default: {stall: 600}

``timeout`` bounds the whole step, ``stall`` bounds a wait without progress, ``expected`` is
when the "running longer than usual" notice goes out (default: half of ``timeout``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict

import yaml

from . import ExecutorError
from .log import SECRETS, job_id_var, step_var, target_var
from .vocabulary import JobStatus, PauseReason, RunOutcome, StepStatus, TaskStatus, TaskTargetKind

if TYPE_CHECKING:
    from .binding import Credential

log = logging.getLogger("rackpilot.executor.steps")

# workflow_executions.status values the engine writes (public.step_status); a step that found
# blockers goes back to PENDING and runs again on resume
PENDING, RUNNING, COMPLETED, FAILED, SKIPPED = (
    StepStatus.PENDING,
    StepStatus.RUNNING,
    StepStatus.COMPLETED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
)


# --- errors ---------------------------------------------------------------------------------
class StepError(ExecutorError):
    """A step failed; the job fails after its cleanup steps."""


class HandlerError(StepError):
    """Root of the job handlers' own failures (DellHandlerError, VSphereHandlerError,
    ReplicationHandlerError, ...); what a target answered keeps its TargetError class."""


class StepTimeout(StepError):
    """A step ran past its overall timeout."""


class StepStalled(StepError):
    """A wait saw no progress for its stall timeout."""


class StepInterrupted(StepError):
    """A non-resumable step was found interrupted: it must not run again."""


class JobCancelled(ExecutorError):
    """The operator's cancel request was honoured at a safe point."""


class Fenced(ExecutorError):
    """The control plane refused a write because our lease epoch is stale."""


class ShutdownRequested(ExecutorError):
    """The executor is stopping; the job is checkpointed and handed back."""


class PauseRequested(ExecutorError):
    """The operator asked for a pause; honoured at the next safe point."""


class PlanError(ExecutorError):
    """A handler's step declarations are inconsistent."""


@dataclass
class Blocker:
    """Why a job cannot go on without an operator (a VM that cannot move, say)."""

    kind: str
    target: str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "message": self.message, "details": self.details}


class BlockersFound(ExecutorError):
    """Raised by a step to pause the job for an operator's decision."""

    def __init__(self, blockers: list[Blocker]):
        super().__init__(f"{len(blockers)} blocker(s)")
        self.blockers = blockers


# --- declarations ---------------------------------------------------------------------------
StepFn = Callable[["StepContext"], Awaitable[Any]]


@dataclass(frozen=True)
class StepSpec:
    name: str
    fn: StepFn
    priority: int = 0
    resumable: bool = True
    abortable: bool = False
    timeout_key: str | None = None
    cleanup: bool = False
    only_if_started: str | None = None  # cleanup only: run only if this step ever started
    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


def step(priority: int, *, resumable: bool, abortable: bool = False, timeout: str | None = None) -> Callable:
    """Declare a handler method as a step. ``resumable`` has no default on purpose."""

    def deco(fn: Callable) -> Callable:
        fn._rackpilot_step = {  # type: ignore[attr-defined]
            "priority": priority,
            "resumable": resumable,
            "abortable": abortable,
            "timeout_key": timeout,
            "cleanup": False,
            "only_if_started": None,
        }
        return fn

    return deco


def cleanup_step(
    priority: int, *, only_if_started: str | None = None, timeout: str | None = None
) -> Callable:
    """Declare a cleanup step: idempotent, run on every terminal exit path."""

    def deco(fn: Callable) -> Callable:
        fn._rackpilot_step = {  # type: ignore[attr-defined]
            "priority": priority,
            "resumable": True,
            "abortable": False,
            "timeout_key": timeout,
            "cleanup": True,
            "only_if_started": only_if_started,
        }
        return fn

    return deco


class JobHandler:
    """Base class of job handlers. Subclasses set ``job_type`` and declare steps."""

    job_type: ClassVar[str] = ""
    #: capabilities advertised at registration (default: the job type)
    capabilities: ClassVar[tuple[str, ...]] = ()

    def declared(self) -> list[StepSpec]:
        specs = []
        for name, member in inspect.getmembers(type(self), predicate=inspect.isfunction):
            meta = getattr(member, "_rackpilot_step", None)
            if meta:
                specs.append(StepSpec(name=name, fn=getattr(self, name), **meta))
        return sorted(specs, key=lambda s: (-s.priority, s.name))

    def plan(self, job: dict[str, Any]) -> list[StepSpec]:
        """Ordered main and cleanup steps for ``job``; override to derive steps from params."""
        return self.declared()

    async def before_step(self, ctx: StepContext, spec: StepSpec) -> None:
        """Called at each safe point before a step is recorded as running."""

    def validate(self, job: dict[str, Any]) -> None:
        """Raise :class:`StepError` for params that cannot work (fails the job before any step)."""


def split_plan(specs: list[StepSpec]) -> tuple[list[StepSpec], list[StepSpec]]:
    main = [s for s in specs if not s.cleanup]
    cleanup = [s for s in specs if s.cleanup]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise PlanError(f"duplicate step names in plan: {names}")
    for s in cleanup:
        if s.only_if_started and s.only_if_started not in names:
            raise PlanError(f"cleanup step {s.name} refers to unknown step {s.only_if_started}")
    return main, cleanup


# --- policy ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepTimeouts:
    timeout: float
    stall: float
    expected: float


class SafetyPolicy:
    """Per-step timeouts read from ``policies/safety.yaml`` (see the module docstring)."""

    def __init__(
        self, data: dict[str, Any] | None = None, *, default_timeout: float = 3600, default_stall: float = 600
    ):
        self.data = data or {}
        self.default_timeout = default_timeout
        self.default_stall = default_stall

    @classmethod
    def load(cls, path: Path | None, **kw: float) -> SafetyPolicy:
        if path is None or not path.exists():
            return cls({}, **kw)
        with path.open() as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ExecutorError(f"{path}: the safety policy must be a mapping")
        return cls(data, **kw)

    @staticmethod
    def _section(node: Any) -> dict[str, Any]:
        if isinstance(node, dict):
            st = node.get("step_timeouts")
            return st if isinstance(st, dict) else {}
        return {}

    def timeouts(self, job_type: str, key: str) -> StepTimeouts:
        merged: dict[str, Any] = {}
        jt = (self.data.get("job_types") or {}).get(job_type)
        # the job type's one step timeout (``timeouts: {step: N}``) is the base for all its steps
        jt_timeouts = jt.get("timeouts") if isinstance(jt, dict) else None
        if isinstance(jt_timeouts, dict) and isinstance(jt_timeouts.get("step"), int | float):
            merged["timeout"] = jt_timeouts["step"]
        for section in (self._section(self.data), self._section(jt)):
            for name in ("default", key):
                entry = section.get(name)
                if isinstance(entry, dict):
                    merged.update(entry)
                elif isinstance(entry, int | float):
                    merged["timeout"] = entry
        timeout = float(merged.get("timeout", self.default_timeout))
        stall = float(merged.get("stall", min(self.default_stall, timeout)))
        expected = float(merged.get("expected", timeout / 2))
        return StepTimeouts(timeout=timeout, stall=stall, expected=expected)


# --- what the engine needs from the control plane ---------------------------------------------
class JobSession(Protocol):
    """One claimed job seen through its lease; every write carries the epoch.

    Implemented by :class:`executor.runner.LeasedJob` on the real control plane. Writes raise
    :class:`Fenced` once the lease is lost; after that the engine writes nothing.
    """

    job: dict[str, Any]

    @property
    def fenced(self) -> bool: ...
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def pause_requested(self) -> bool: ...
    async def history(self) -> list[dict[str, Any]]: ...
    async def report_step(
        self, *, index: int, name: str, status: StepStatus, resumable: bool, details: dict[str, Any]
    ) -> None: ...
    async def pause(self, reason: PauseReason, blockers: list[dict[str, Any]]) -> None: ...
    async def finish(
        self, status: JobStatus, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None: ...
    async def release(self) -> None: ...
    async def credentials(self, credential_id: str) -> Credential: ...
    async def notice(self, event: str, payload: dict[str, Any]) -> None: ...
    async def call(self, fn: str, params: dict[str, Any]) -> Any: ...
    async def select(self, table: str, columns: str, **filters: Any) -> list[dict[str, Any]]: ...


# --- step context ---------------------------------------------------------------------------
class StoredArtifact(TypedDict):
    """What :meth:`StepContext.put_artifact` answers (handlers keep it in their results)."""

    artifact_id: str
    sha256: str
    size_bytes: int


@dataclass
class Progress:
    """What a wait probe returns: done or not, and a marker that changes while work advances."""

    done: bool
    marker: Any = None
    info: dict[str, Any] = field(default_factory=dict)


class StepContext:
    """What a running step sees: the job, its checkpoint, saved progress, and helpers.

    It is a handler's whole interface to the control plane: :meth:`rpc`, :meth:`select`,
    :meth:`update_task`, :meth:`put_artifact`, :meth:`save_progress` and
    :meth:`progress_of`, :meth:`credentials`, and the operator's flags
    (:attr:`cancel_requested`, ...). Handlers never touch :attr:`session` themselves
    (``tests/unit/test_handler_interface.py`` checks it).
    """

    def __init__(
        self,
        engine: StepEngine,
        session: JobSession,
        spec: StepSpec,
        index: int,
        checkpoint: dict[str, Any],
        saved_progress: dict[str, Any] | None,
        attempt: int,
    ):
        self.engine = engine
        self.session = session
        self.spec = spec
        self.index = index
        self.job: dict[str, Any] = session.job
        self.params: dict[str, Any] = session.job.get("params") or {}
        self.checkpoint = checkpoint
        self.saved_progress = saved_progress
        self.resuming = saved_progress is not None or attempt > 1
        self.attempt = attempt
        self.timeouts = engine.policy.timeouts(
            str(session.job.get("type", "")), spec.timeout_key or spec.name
        )
        self.started = time.monotonic()
        self._slow_noticed = False
        self._last_progress_write = 0.0

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    async def save_progress(self, progress: dict[str, Any], *, force: bool = True) -> None:
        """Record in-step progress so a resumed step can continue where it was."""
        now = time.monotonic()
        if not force and now - self._last_progress_write < self.engine.progress_write_interval:
            return
        self._last_progress_write = now
        await self.session.report_step(
            index=self.index,
            name=self.spec.name,
            status=RUNNING,
            resumable=self.spec.resumable,
            details=SECRETS.redact_obj({"attempt": self.attempt, "progress": progress}),
        )

    async def credentials(self, credential_id: str) -> Credential:
        return await self.session.credentials(credential_id)

    # --- the control plane as a handler sees it --------------------------------------------
    async def rpc(self, fn: str, params: Mapping[str, Any] | None = None) -> Any:
        """A job-scoped executor RPC (``public.<fn>``): the session adds executor id, job id
        and lease epoch, orders it with the job's other writes and retries it like them;
        :class:`Fenced` once the lease is lost."""
        return await self.session.call(fn, dict(params or {}))

    async def select(self, table: str, columns: str, **filters: Any) -> list[dict[str, Any]]:
        """Rows of ``table`` (``columns`` as PostgREST spells them); a filter is ``col=value``,
        or ``col=[values]`` for membership."""
        return await self.session.select(table, columns, **filters)

    async def update_task(
        self,
        kind: TaskTargetKind,
        target: Mapping[str, Any],
        status: TaskStatus,
        *,
        progress: int | None = None,
        details: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        seq: int | None = None,
    ) -> None:
        """Create or update this job's task for ``target`` (a row with ``id`` and ``name``).
        ``None`` leaves a field as it is, except ``error`` (cleared) and ``progress`` (100 on
        completed); ``details`` is merged into the task's."""
        await self.rpc(
            "update_task",
            {
                "p_target_kind": TaskTargetKind(kind),
                "p_target_id": str(target["id"]),
                "p_status": TaskStatus(status),
                "p_progress": progress,
                "p_details": details,
                "p_result": result,
                "p_error": error,
                "p_target_name": target.get("name"),
                "p_seq": seq,
            },
        )

    async def put_artifact(
        self, kind: str, content: bytes, *, content_type: str, server_id: str | None = None
    ) -> StoredArtifact:
        """Store ``content`` as an artifact of this job (the control plane checks its
        sha256 and size)."""
        sha = hashlib.sha256(content).hexdigest()
        art_id = await self.rpc(
            "put_artifact",
            {
                "p_kind": kind,
                "p_content_base64": base64.b64encode(content).decode(),
                "p_sha256": sha,
                "p_content_type": content_type,
                "p_server_id": server_id,
            },
        )
        return {"artifact_id": str(art_id), "sha256": sha, "size_bytes": len(content)}

    async def progress_of(self, step_name: str) -> dict[str, Any]:
        """The progress step ``step_name`` of this job last saved (``{}`` if none): a
        cleanup reads there what an interrupted step had begun."""
        progress: dict[str, Any] = {}
        for row in await self.session.history():
            if row["name"] == step_name:
                progress = (row.get("details") or {}).get("progress") or {}
        return progress

    # --- the operator's requests and the lease, as the session last saw them -----------------
    @property
    def cancel_requested(self) -> bool:
        return self.session.cancel_requested

    @property
    def pause_requested(self) -> bool:
        return self.session.pause_requested

    @property
    def draining(self) -> bool:
        """The executor is stopping: a step that can hand back at a safe point should."""
        return self.session.draining

    @property
    def fenced(self) -> bool:
        """The lease is lost: write nothing more."""
        return self.session.fenced

    def check_cancel(self) -> None:
        """Raise :class:`JobCancelled` if the step is abortable and a cancel was requested."""
        if self.spec.abortable and self.session.cancel_requested:
            raise JobCancelled("cancel requested")

    async def _maybe_slow(self) -> None:
        if not self._slow_noticed and time.monotonic() - self.started > self.timeouts.expected:
            self._slow_noticed = True
            await self.session.notice(
                "job_slow",
                {
                    "step": self.spec.name,
                    "expected_s": self.timeouts.expected,
                    "elapsed_s": round(time.monotonic() - self.started, 1),
                },
            )

    async def wait_for(
        self,
        probe: Callable[[], Awaitable[Progress]],
        *,
        what: str,
        interval: float = 1.0,
        stall: float | None = None,
        timeout: float | None = None,
    ) -> Progress:
        """Poll ``probe`` until done, telling a stalled operation from a slow one.

        ``stall`` (s): fail if the probe's marker has not changed for this long (policy
        ``stall`` by default). ``timeout`` (s): fail when the whole step has run this long
        (policy ``timeout`` by default). Progress is written (throttled) so operators see it
        and a resumable step can resume from it.
        """
        stall = self.timeouts.stall if stall is None else stall
        timeout = self.timeouts.timeout if timeout is None else timeout
        last_marker: Any = object()
        last_change = time.monotonic()
        while True:
            self.check_cancel()
            if self.session.fenced:
                raise Fenced("lease lost")
            prog = await probe()
            now = time.monotonic()
            if prog.done:
                return prog
            if prog.marker != last_marker:
                last_marker, last_change = prog.marker, now
                await self.save_progress(
                    {"waiting_for": what, "marker": prog.marker, **prog.info}, force=False
                )
            if now - last_change > stall:
                raise StepStalled(f"{what}: no progress for {stall:.0f}s (last state {prog.marker!r})")
            if now - self.started > timeout:
                raise StepTimeout(f"{what}: still progressing but over the step timeout of {timeout:.0f}s")
            await self._maybe_slow()
            await asyncio.sleep(interval)


# --- the engine -----------------------------------------------------------------------------
@dataclass
class Outcome:
    """How the engine's run of a job ended, and the error it recorded."""

    status: RunOutcome
    error: str | None = None
    steps_run: list[str] = field(default_factory=list)


@dataclass
class EngineMetrics:
    step_durations: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    steps_completed: int = 0

    def observe(self, job_type: str, name: str, seconds: float) -> None:
        samples = self.step_durations.setdefault(f"{job_type}.{name}", [])
        samples.append(seconds)
        del samples[:-100]  # keep the recent window only

    def snapshot(self) -> dict[str, Any]:
        durations = {}
        for key, samples in self.step_durations.items():
            s = sorted(samples)
            durations[key] = {"n": len(s), "p50_s": round(s[len(s) // 2], 3), "max_s": round(s[-1], 3)}
        return {
            "steps_completed": self.steps_completed,
            "step_errors": self.errors,
            "step_durations": durations,
        }


FINAL_WRITE_TIMEOUT_S = 5.0  # bound on the last writes of a step cancelled at shutdown


async def _bounded(aw: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(aw, FINAL_WRITE_TIMEOUT_S)
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - best effort on the way out
        log.warning("final write at shutdown did not complete")


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return SECRETS.redact(text)[:2000]


@dataclass
class _JobRun:
    """What one run of a job knows while it runs: its cleanup steps, the steps' indexes, the
    rows recorded before it, the steps started (before or now) and the checkpoint."""

    session: JobSession
    cleanup: list[StepSpec]
    index_of: dict[str, int]
    recorded: dict[str, Any]
    started_names: set[str]
    checkpoint: dict[str, Any]


def _restored_checkpoint(main: list[StepSpec], recorded: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of the last main step recorded completed (empty before any)."""
    checkpoint: dict[str, Any] = {}
    for s in main:
        row = recorded.get(s.name)
        if row and row.get("status") == COMPLETED:
            checkpoint = dict((row.get("details") or {}).get("checkpoint") or checkpoint)
    return checkpoint


def _pending_outcome(cleanup: list[StepSpec], recorded: dict[str, Any]) -> dict[str, Any] | None:
    """The details of a failed cleanup step that keep the outcome its run had, if any."""
    return next(
        (
            (recorded.get(s.name) or {}).get("details") or {}
            for s in cleanup
            if ((recorded.get(s.name) or {}).get("details") or {}).get("pending_outcome")
        ),
        None,
    )


async def _resumed_progress(
    session: JobSession, spec: StepSpec, row: dict[str, Any] | None, index: int, attempt: int
) -> Any:
    """What a step found interrupted (running or failed) saved, to resume from; None for a
    step that starts afresh. A non-resumable step found interrupted fails the job here."""
    if row is None or row.get("status") not in (RUNNING, FAILED):
        return None
    if not spec.resumable:
        # Invariant: a non-resumable step never runs twice.
        err = StepInterrupted(
            f"step {spec.name} was interrupted and is not resumable; "
            f"check the target by hand before running it again"
        )
        await session.report_step(
            index=index,
            name=spec.name,
            status=FAILED,
            resumable=False,
            details={"attempt": attempt - 1, "error": str(err), "error_class": "StepInterrupted"},
        )
        raise err
    return (row.get("details") or {}).get("progress")


def _safe_point(session: JobSession) -> None:
    """Between steps: a lost lease, a cancel, a pause or a shutdown stops the run here."""
    if session.fenced:
        raise Fenced("lease lost")
    if session.cancel_requested:
        raise JobCancelled("cancel requested")
    if session.pause_requested:
        raise PauseRequested("paused by operator")
    if session.draining:
        raise ShutdownRequested("executor stopping")


class StepEngine:
    def __init__(self, policy: SafetyPolicy | None = None, *, progress_write_interval: float = 2.0):
        self.policy = policy or SafetyPolicy()
        self.progress_write_interval = progress_write_interval
        self.metrics = EngineMetrics()

    async def run(self, handler: JobHandler, session: JobSession) -> Outcome:
        job = session.job
        job_id_var.set(str(job["id"]))
        try:
            return await self._run(handler, session)
        except Fenced:
            log.warning("lease lost: stopping the job without further writes")
            return Outcome(RunOutcome.FENCED)
        finally:
            step_var.set(None)
            target_var.set(None)

    async def _run(self, handler: JobHandler, session: JobSession) -> Outcome:
        job = session.job
        try:
            specs = handler.plan(job)
            main, cleanup = split_plan(specs)
            handler.validate(job)
        except (PlanError, StepError) as exc:
            await session.finish(JobStatus.FAILED, error=_error_text(exc))
            return Outcome(RunOutcome.FAILED, _error_text(exc))
        index_of = {s.name: i for i, s in enumerate(main + cleanup)}
        recorded = {row["name"]: row for row in await session.history()}
        started_names = set(recorded)
        checkpoint = _restored_checkpoint(main, recorded)
        outcome = Outcome(RunOutcome.COMPLETED)
        run = _JobRun(session, cleanup, index_of, recorded, started_names, checkpoint)
        # a run after a failed cleanup does the cleanup only and keeps the outcome it had
        kept = _pending_outcome(cleanup, recorded)
        try:
            if kept is not None:
                if session.cancel_requested:
                    raise JobCancelled("cancel requested")
                outcome = Outcome(RunOutcome(str(kept["pending_outcome"])), kept.get("pending_error"))
                main = []
            await self._run_main(handler, run, main, outcome.steps_run)
        except BlockersFound as exc:
            blockers = [SECRETS.redact_obj(b.to_json()) for b in exc.blockers]
            await session.pause(PauseReason.BLOCKERS, blockers)
            return Outcome(RunOutcome.PAUSED, f"{len(blockers)} blocker(s)", outcome.steps_run)
        except PauseRequested:
            await session.pause(PauseReason.OPERATOR, [])
            return Outcome(RunOutcome.PAUSED, "paused by operator", outcome.steps_run)
        except ShutdownRequested:
            await session.release()
            return Outcome(RunOutcome.RELEASED, None, outcome.steps_run)
        except JobCancelled:
            outcome = Outcome(RunOutcome.CANCELLED, "cancelled by operator", outcome.steps_run)
            await self._skip_rest(session, main, recorded, index_of, outcome.steps_run)
        except Fenced:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any step failure fails the job after cleanup
            self.metrics.errors += 1
            outcome = Outcome(RunOutcome.FAILED, _error_text(exc), outcome.steps_run)
            log.warning("job failed: %s", outcome.error)
        return await self._close(handler, run, outcome)

    async def _run_main(
        self, handler: JobHandler, run: _JobRun, main: list[StepSpec], steps_run: list[str]
    ) -> None:
        """The main steps not yet completed or skipped, in order, each from a safe point."""
        session, recorded, index_of = run.session, run.recorded, run.index_of
        cleanup, checkpoint, started_names = run.cleanup, run.checkpoint, run.started_names
        owes_from = {s.only_if_started or (main[0].name if main else "") for s in cleanup}
        for spec in main:
            row = recorded.get(spec.name)
            if row and row.get("status") in (COMPLETED, SKIPPED):
                continue
            attempt = int((row.get("details") or {}).get("attempt", 0)) + 1 if row else 1
            if session.cancel_requested:
                # a cancelled job runs no main step, not even to find it interrupted:
                # straight to its cleanup (a cancel from executor_lost comes this way)
                raise JobCancelled("cancel requested")
            saved = await _resumed_progress(session, spec, row, index_of[spec.name], attempt)
            ctx = StepContext(self, session, spec, index_of[spec.name], checkpoint, saved, attempt)
            await handler.before_step(ctx, spec)
            _safe_point(session)  # nothing of this step has run yet
            if spec.name in owes_from:
                # before the first change the cleanup must undo: no terminal state without it
                await self._cleanup_owed(session, True)
            # started, whatever its end: a step that fails half-way may have changed the
            # target (staged part of the firmware, say), so the cleanup it owes still runs
            started_names.add(spec.name)
            await self._run_step(ctx, session, spec)
            steps_run.append(spec.name)

    async def _close(self, handler: JobHandler, run: _JobRun, outcome: Outcome) -> Outcome:
        """The cleanup steps the run owes, then the job's end: ``outcome`` as its status, or
        paused while a cleanup step failed."""
        session, index_of, checkpoint = run.session, run.index_of, run.checkpoint
        cleanup_error, cleaned = await self._cleanup(
            handler, session, run.cleanup, run.started_names, checkpoint, run.recorded, index_of
        )
        if cleanup_error:
            # the job keeps its outcome and waits: resume runs the cleanup again, an admin may
            # abandon it (public.abandon_cleanup); SQL refuses it a terminal state meanwhile
            await self._cleanup_owed(session, True)
            for spec in cleaned:
                await session.report_step(
                    index=index_of[spec.name],
                    name=spec.name,
                    status=FAILED,
                    resumable=True,
                    details={
                        "cleanup": True,
                        "pending_outcome": outcome.status,
                        "pending_error": outcome.error,
                    },
                )
            await session.pause(PauseReason.CLEANUP_FAILED, [])
            return Outcome(RunOutcome.PAUSED, cleanup_error, outcome.steps_run)
        if cleaned:
            await self._cleanup_owed(session, False)
        result = {"steps_run": outcome.steps_run, "checkpoint": SECRETS.redact_obj(checkpoint)}
        # completed, failed or cancelled here: each is also a job status
        await session.finish(JobStatus(outcome.status), result=result, error=outcome.error)
        return outcome

    @staticmethod
    async def _cleanup_owed(session: JobSession, owed: bool) -> None:
        call = getattr(session, "call", None)
        if call is not None:
            await call("set_cleanup_owed", {"p_owed": owed})

    async def _run_step(self, ctx: StepContext, session: JobSession, spec: StepSpec) -> None:
        step_var.set(spec.name)
        target_var.set(spec.target)
        details: dict[str, Any] = {"attempt": ctx.attempt, "priority": spec.priority}
        if spec.cleanup:
            details["cleanup"] = True  # set_cleanup_owed(false) checks these rows completed
        if spec.target:
            details["target"] = spec.target
        if ctx.saved_progress is not None:
            details["progress"] = ctx.saved_progress
        await session.report_step(
            index=ctx.index, name=spec.name, status=RUNNING, resumable=spec.resumable, details=details
        )
        log.info("step started", extra={"attempt": ctx.attempt})
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(ctx.timeouts.timeout):
                result = await spec.fn(ctx)
        except TimeoutError as exc:
            err: BaseException = StepTimeout(
                f"step {spec.name} exceeded its timeout of {ctx.timeouts.timeout:.0f}s"
            )
            await self._report_failed(session, ctx, spec, err, t0)
            raise err from exc
        except BlockersFound as exc:
            await self._report_ended(session, ctx, spec, PENDING, t0, blockers=len(exc.blockers))
            raise
        except JobCancelled:
            await self._report_ended(session, ctx, spec, SKIPPED, t0, reason="cancelled while waiting")
            raise
        except Fenced:
            raise
        except asyncio.CancelledError:
            if session.draining and not session.fenced:
                # Stopped past the shutdown grace: say so on the step before the process
                # goes, so an operator never finds a target left mid-operation unrecorded.
                await _bounded(
                    self._report_ended(session, ctx, spec, RUNNING, t0, interrupted="executor shutdown")
                )
                if spec.resumable:
                    await _bounded(session.release())
            raise
        except Exception as exc:
            if not session.fenced:
                await self._report_failed(session, ctx, spec, exc, t0)
            raise
        duration = time.monotonic() - t0
        self.metrics.observe(str(session.job.get("type")), spec.name, duration)
        self.metrics.steps_completed += 1
        done = {
            "attempt": ctx.attempt,
            "duration_s": round(duration, 3),
            "checkpoint": SECRETS.redact_obj(ctx.checkpoint),
        }
        if spec.cleanup:
            done["cleanup"] = True
        if result is not None:
            done["result"] = SECRETS.redact_obj(result)
        # The checkpoint travels with the completion record: one write, so it cannot be lost
        # between "step done" and "checkpoint saved".
        await session.report_step(
            index=ctx.index, name=spec.name, status=COMPLETED, resumable=spec.resumable, details=done
        )
        log.info("step completed", extra={"duration_s": round(duration, 3)})
        step_var.set(None)

    async def _report_failed(
        self, session: JobSession, ctx: StepContext, spec: StepSpec, exc: BaseException, t0: float
    ) -> None:
        await self._report_ended(
            session, ctx, spec, FAILED, t0, error=_error_text(exc), error_class=type(exc).__name__
        )

    @staticmethod
    async def _report_ended(
        session: JobSession, ctx: StepContext, spec: StepSpec, status: StepStatus, t0: float, **details: Any
    ) -> None:
        """The step's row as its run ended (or stopped) ``t0`` seconds of monotonic time ago."""
        await session.report_step(
            index=ctx.index,
            name=spec.name,
            status=status,
            resumable=spec.resumable,
            details={"attempt": ctx.attempt, **details, "duration_s": round(time.monotonic() - t0, 3)},
        )

    async def _skip_rest(
        self,
        session: JobSession,
        main: list[StepSpec],
        recorded: dict[str, Any],
        index_of: dict[str, int],
        ran: list[str],
    ) -> None:
        for spec in main:
            row = recorded.get(spec.name)
            if spec.name in ran or (row and row.get("status") in (COMPLETED, SKIPPED)):
                continue
            await session.report_step(
                index=index_of[spec.name],
                name=spec.name,
                status=SKIPPED,
                resumable=spec.resumable,
                details={"reason": "cancelled"},
            )

    async def _cleanup(
        self,
        handler: JobHandler,
        session: JobSession,
        cleanup: list[StepSpec],
        started: set[str],
        checkpoint: dict[str, Any],
        recorded: dict[str, Any],
        index_of: dict[str, int],
    ) -> tuple[str | None, list[StepSpec]]:
        """Run every cleanup step; one failing does not stop the others. Returns the errors
        and the cleanup steps that ran."""
        errors = []
        ran: list[StepSpec] = []
        for spec in cleanup:
            if spec.only_if_started and spec.only_if_started not in started:
                continue
            row = recorded.get(spec.name)
            attempt = int((row.get("details") or {}).get("attempt", 0)) + 1 if row else 1
            ctx = StepContext(self, session, spec, index_of[spec.name], checkpoint, None, attempt)
            ran.append(spec)
            try:
                await handler.before_step(ctx, spec)
                if session.fenced:
                    raise Fenced("lease lost")
                await self._run_step(ctx, session, spec)
            except (Fenced, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                self.metrics.errors += 1
                errors.append(f"cleanup {spec.name}: {_error_text(exc)}")
        return "; ".join(errors) or None, ran
