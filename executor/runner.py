"""The run loop: register, claim, lease, heartbeat, wake on Realtime, recover, shut down.

* **Claim** - ``claim_jobs`` is called for at most the free slots (``max_concurrent_jobs``
  minus jobs in flight), whenever Realtime reports a new, resumed or changed job of this
  site and, as a fallback that keeps working with Realtime down, every ``poll_interval``.
* **Lease** - each claimed job carries a lease epoch. Every write for it carries that
  epoch (see :class:`LeasedJob`); the heartbeat renews all leases every
  ``heartbeat_interval`` and reports metrics.
* **Fencing** - when a write is refused for a stale epoch, or the heartbeat or Realtime
  show the job moved to another owner or epoch, the job's task is cancelled at once and
  its session refuses every further write: a fenced executor never writes for that job
  again, not even its cleanup (the new owner runs it).
* **Cancel and pause requests** arrive by Realtime and by the heartbeat's read of the
  in-flight jobs; the engine honours them at its safe points.
* **Recovery** - every ``recovery_interval`` the executor calls ``recover_expired_leases``,
  which serialises itself in the database so one executor at a time does the work.
* **SIGTERM** - stop claiming, let each job reach its next safe point within
  ``shutdown_grace`` (it then hands the job back with ``release_job``), then cancel what
  is left: the step is recorded as interrupted, resumable steps are handed back, and
  non-resumable ones keep their lease until it expires and recovery pauses them as
  ``executor_lost`` for an operator.
* **systemd** - ``READY=1`` after registration, ``WATCHDOG=1`` from the main loop when
  ``WatchdogSec`` is set, ``STOPPING=1`` on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any

from realtime.types import RealtimePostgresChangesListenEvent

from . import ExecutorError, __version__
from . import handlers as handler_registry
from .binding import Credential, EndpointSpecError
from .calllog import CALLS
from .config import ExecutorSettings
from .control import ControlPlane, ControlPlaneError, Rejected, StaleEpoch
from .log import SECRETS, job_id_var
from .notify import Dispatcher
from .preflight import ConfigurationError, explain_refusal
from .schedule_fire import fire_loop
from .secrets import EnvelopeError, KeyPair
from .steps import Fenced, SafetyPolicy, StepEngine, StepError
from .vocabulary import JobStatus, PauseReason, RunOutcome, StepStatus

log = logging.getLogger("rackpilot.executor.runner")


class RunnerError(ExecutorError):
    """The executor cannot run (registration refused, site unknown...)."""


class CredentialError(StepError):
    """A credential the job needs cannot be fetched or opened."""


def sd_notify(message: str) -> None:
    """Tell systemd about our state (no-op outside a Type=notify unit)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall(message.encode())


# --- one claimed job ------------------------------------------------------------------------
class LeasedJob:
    """A claimed job seen through its lease epoch (the engine's :class:`JobSession`)."""

    def __init__(self, runner: Executor, job: dict[str, Any]):
        self.runner = runner
        self.job = job
        # claim_jobs names the id job_id; the engine and handlers see it as id
        job.setdefault("id", job.get("job_id"))
        self.job_id = str(job["id"])
        self.epoch = int(job["lease_epoch"])
        self._fenced = False
        self.cancel_flag = bool(job.get("cancel_requested") or job.get("cancel_requested_at"))
        self.pause_flag = bool(job.get("pause_requested_at"))
        self.draining_flag = False
        self.give_up = asyncio.Event()  # stop retrying writes (fenced, or past the shutdown grace)
        self.task: asyncio.Task | None = None
        self.claimed_at = time.monotonic()

    # flags the engine reads at safe points
    @property
    def fenced(self) -> bool:
        return self._fenced

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_flag

    @property
    def pause_requested(self) -> bool:
        return self.pause_flag

    @property
    def draining(self) -> bool:
        return self.draining_flag

    def fence(self, why: str) -> None:
        """The job is no longer ours: stop its work now and never write for it again."""
        if self._fenced:
            return
        self._fenced = True
        self.give_up.set()
        log.warning("job fenced: %s", why, extra={"job_id": self.job_id})
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()

    async def _write(self, fn: str, params: dict[str, Any]) -> Any:
        if self._fenced:
            raise Fenced(f"job {self.job_id} is fenced")
        args = {
            "p_job_id": self.job_id,
            "p_epoch": self.epoch,
            "p_executor_id": self.runner.executor_id,
            **params,
        }
        try:
            return await self.runner.control.job_call(self.job_id, fn, args, until=self.give_up)
        except StaleEpoch as exc:
            self.fence(str(exc))
            raise

    async def call(self, fn: str, params: dict[str, Any]) -> Any:
        """Any job-scoped, fenced RPC (inventory, artifacts, tasks): executor, job and epoch
        are added, the write is ordered with the job's others and retried like them."""
        return await self._write(fn, params)

    async def select(self, table: str, columns: str, **filters: Any) -> list[dict[str, Any]]:
        """A read for the job's handler (inventory rows, blockers, earlier tasks), retried like
        the control plane's other reads."""
        return await self.runner.control.select(table, columns, **filters)

    async def history(self) -> list[dict[str, Any]]:
        # Steps are written only under a lease and every claim counts an attempt: a job on
        # its first attempt has no history, and dispatch skips a round trip.
        if self.job.get("attempts") == 1 and not self.job.get("resume_from"):
            return []
        rows = await self.runner.control.select(
            "workflow_executions",
            "step_key,name,seq,status,resumable,checkpoint,details,attempts",
            job_id=self.job_id,
        )
        out = []
        for r in rows:
            details = dict(r.get("details") or {})
            details.setdefault("attempt", r.get("attempts") or 0)
            if r.get("checkpoint") is not None:
                details["checkpoint"] = r["checkpoint"]
            out.append(
                {
                    "name": r["step_key"],
                    "status": r["status"],
                    "resumable": r.get("resumable"),
                    "details": details,
                    "seq": r.get("seq"),
                }
            )
        return out

    async def report_step(
        self, *, index: int, name: str, status: StepStatus, resumable: bool, details: dict[str, Any]
    ) -> None:
        details = dict(details)
        checkpoint = details.pop("checkpoint", None)
        error = details.get("error")
        await self._write(
            "report_step",
            {
                "p_step_key": name,
                "p_seq": index,
                "p_name": name.replace("_", " "),
                "p_status": StepStatus(status),
                "p_resumable": resumable,
                "p_checkpoint": checkpoint,
                "p_details": details,
                "p_error": error,
            },
        )

    async def pause(self, reason: PauseReason, blockers: list[dict[str, Any]]) -> None:
        rows = []
        for b in blockers:
            details = dict(b.get("details") or {})
            if b.get("target"):
                details.setdefault("target", b["target"])
            row = {
                "kind": b.get("kind") or "other",
                "description": b.get("message") or b.get("kind") or "blocker",
                "details": details,
            }
            for key in ("host_id", "vm_id", "server_id"):
                if details.get(key):
                    row[key] = details[key]
            rows.append(row)
        await self._write("pause_job", {"p_reason": reason, "p_blockers": rows})

    async def finish(
        self, status: JobStatus, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        await self._write("finish_job", {"p_status": JobStatus(status), "p_result": result, "p_error": error})

    async def release(self) -> None:
        await self._write("release_job", {})

    async def credentials(self, credential_id: str) -> Credential:
        # encrypt-credentials seals one envelope per executor key of the site, and the
        # envelopes are the only copy of the secret: ask for the one sealed to this key (a set
        # with none is refused as key_mismatch, naming the re-seal that fixes it).
        try:
            row = await self._write("get_job_credential_envelope", {"p_credential_set_id": credential_id})
        except Rejected as exc:
            raise CredentialError(f"credential {credential_id}: {exc.reason}") from None
        if isinstance(row, list):
            row = row[0] if row else None
        if not isinstance(row, dict):
            raise CredentialError(f"credential {credential_id} was not returned")
        try:
            opened = self.runner.open_sealed(row.get("sealed_secret"))
            # the secret comes with the endpoints its sealer named: it is released only to them
            return Credential.from_plaintext(credential_id, opened, username=str(row.get("username") or ""))
        except (EnvelopeError, EndpointSpecError) as exc:
            raise CredentialError(f"credential {credential_id}: {exc}") from None

    async def notice(self, event: str, payload: dict[str, Any]) -> None:
        try:
            await self._write("job_notice", {"p_event": event, "p_payload": SECRETS.redact_obj(payload)})
        except Rejected as exc:
            # A notice is advisory: the job goes on even if the control plane will not take it.
            log.warning("notice %s not recorded: %s", event, exc.reason)


# --- the executor -----------------------------------------------------------------------------
class Executor:
    def __init__(
        self,
        settings: ExecutorSettings,
        keys: KeyPair,
        *,
        control: ControlPlane | None = None,
        engine: StepEngine | None = None,
    ):
        self.s = settings
        self.keys = keys
        self.control = control or ControlPlane(settings, key_id=keys.kid)
        self.control.on_replaced = self._replaced
        self.exit_code = 0  # 2 once an admin's re-key gave this identity to another key
        policy = SafetyPolicy.load(
            settings.policy_path,
            default_timeout=settings.default_step_timeout,
            default_stall=settings.default_stall_timeout,
        )
        self.engine = engine or StepEngine(policy)
        self.executor_id: str = ""
        self.site_id: str = ""
        self.inflight: dict[str, LeasedJob] = {}
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self.stopped = asyncio.Event()
        self.realtime_ok = False
        self.outcomes: dict[RunOutcome, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._channel: Any = None
        self.dispatcher: Dispatcher | None = None
        self.job_types = []
        for job_type in handler_registry.load_builtin(enable_selftest=settings.enable_selftest):
            # a handler whose prerequisites this executor lacks (directory_sync without its
            # RACKPILOT_IDM_* settings) is not advertised, so the claim gives its jobs to an
            # executor of the site that can run them
            why_not = handler_registry.unavailable(job_type, settings)
            if why_not:
                log.info("job type not taken", extra={"job_type": job_type, "reason": why_not})
            else:
                self.job_types.append(job_type)
        if settings.enable_selftest:
            log.warning(
                "selftest jobs enabled (RACKPILOT_ENABLE_SELFTEST): a test-only job type",
                extra={"selftest_dir": str(settings.state_dir / "selftest")},
            )

    # --- identity ----------------------------------------------------------------------
    def open_sealed(self, sealed: Any) -> dict[str, str]:
        """Open a credential's sealed secret: one envelope, or one envelope per executor key."""
        import json

        if isinstance(sealed, str):
            try:
                sealed = json.loads(sealed)
            except ValueError:
                raise EnvelopeError("sealed secret is not JSON") from None
        if isinstance(sealed, dict) and isinstance(sealed.get("envelopes"), list):
            sealed = sealed["envelopes"]
        if isinstance(sealed, list):
            mine = [e for e in sealed if isinstance(e, dict) and e.get("kid") == self.keys.kid]
            if not mine:
                raise EnvelopeError(f"no envelope is sealed to this executor's key {self.keys.kid}")
            sealed = mine[0]
        return self.keys.open(sealed)

    async def register(self) -> None:
        capabilities = {
            "job_types": self.job_types,
            "max_concurrent_jobs": self.s.max_concurrent_jobs,
            "realtime": self.s.realtime_enabled,
        }
        try:
            # transient failures retry (capped backoff, every retry logged with the URL) until
            # registered or told to stop; a refusal is a configuration or identity error
            res = await self.control.call(
                "register_executor",
                {
                    "p_site": self.s.site,
                    "p_name": self.s.executor_name,
                    "p_public_key": self.keys.public_b64,
                    "p_key_id": self.keys.kid,
                    "p_version": __version__,
                    "p_capabilities": capabilities,
                    "p_job_types": self.job_types,
                },
                until=self.stop,
                log_every=True,
            )
        except Rejected as exc:
            raise ConfigurationError(
                explain_refusal(
                    exc.code,
                    exc.reason,
                    url=self.s.supabase_url,
                    site=self.s.site,
                    name=self.s.executor_name,
                    hint=exc.hint,
                )
            ) from None
        row = res[0] if isinstance(res, list) and res else res
        if isinstance(row, dict):
            self.executor_id = str(row.get("executor_id") or row.get("id"))
            self.site_id = str(row.get("site_id") or "")
        else:
            self.executor_id = str(row)
        if not self.site_id:
            sites = await self.control.select("sites", "id", name=self.s.site)
            if not sites:
                raise RunnerError(f"site {self.s.site!r} does not exist in the control plane")
            self.site_id = str(sites[0]["id"])
        log.info(
            "registered",
            extra={
                "executor_id": self.executor_id,
                "site": self.s.site,
                "kid": self.keys.kid,
                "job_types": self.job_types,
            },
        )

    # --- metrics -----------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        return {
            "jobs_in_flight": len(self.inflight),
            "outcomes": {o.value: n for o, n in self.outcomes.items()},
            "realtime": self.realtime_ok,
            **self.engine.metrics.snapshot(),
            **self.control.latency.snapshot(),
            **(
                {"notifications_sent": self.dispatcher.sent, "notifications_failed": self.dispatcher.failed}
                if self.dispatcher
                else {}
            ),
        }

    # --- jobs --------------------------------------------------------------------------
    def _start_job(self, job: dict[str, Any]) -> None:
        session = LeasedJob(self, job)
        if session.job_id in self.inflight:
            # A second claim of a job we still run can only mean our first lease was lost.
            self.inflight[session.job_id].fence("job claimed again with a new epoch")
        self.inflight[session.job_id] = session
        session.task = asyncio.create_task(self._run_job(session), name=f"job-{session.job_id}")

    async def _run_job(self, session: LeasedJob) -> None:
        job_id_var.set(session.job_id)
        status = RunOutcome.ERROR
        try:
            job_type = str(session.job.get("type"))
            if job_type not in self.job_types:  # not advertised: e.g. selftest without its flag
                raise handler_registry.UnknownJobType(f"this executor does not take job type {job_type!r}")
            handler = handler_registry.create(job_type, self.s)
            outcome = await self.engine.run(handler, session)
            status = outcome.status
        except handler_registry.UnknownJobType as exc:
            with contextlib.suppress(Fenced, ControlPlaneError):
                await session.finish(JobStatus.FAILED, error=str(exc))
            status = RunOutcome.FAILED
        except asyncio.CancelledError:
            status = RunOutcome.FENCED if session.fenced else RunOutcome.INTERRUPTED
        except (Fenced, ControlPlaneError) as exc:
            status = RunOutcome.FENCED if session.fenced else RunOutcome.ERROR
            log.warning("job stopped: %s", exc)
        except Exception:  # noqa: BLE001 - one job's bug must not take the executor down
            log.exception("job crashed in the engine")
        finally:
            self.outcomes[status] = self.outcomes.get(status, 0) + 1
            if self.inflight.get(session.job_id) is session:
                del self.inflight[session.job_id]
                self.control.forget_job(session.job_id)
            self.wake.set()  # a slot is free

    async def claim_once(self) -> int:
        free = self.s.max_concurrent_jobs - len(self.inflight)
        if free <= 0 or self.stop.is_set():
            return 0
        rows = (
            await self.control.call(
                "claim_jobs", {"p_executor_id": self.executor_id, "p_max": free}, until=self.stop
            )
            or []
        )
        for job in rows:
            self._start_job(job)
        return len(rows)

    async def claim_loop(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            try:
                n = await self.claim_once()
            except ControlPlaneError as exc:
                log.warning("claim failed: %s", exc)
                n = 0
            if n and len(self.inflight) < self.s.max_concurrent_jobs:
                continue  # there may be more waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.s.poll_interval)

    # --- heartbeat, flags, recovery ------------------------------------------------------
    def apply_job_row(self, row: dict[str, Any]) -> None:
        """Fold a fresh view of one in-flight job (Realtime or heartbeat read) into its session."""
        session = self.inflight.get(str(row.get("id")))
        if session is None or session.fenced:
            return
        epoch = row.get("lease_epoch")
        if epoch is not None:
            # Epochs only grow. A change feed event can arrive late (the recovery that made
            # the job claimable, say): an older epoch says nothing about our lease.
            if int(epoch) < session.epoch:
                return
            if int(epoch) > session.epoch:
                session.fence(f"lease epoch is now {epoch}, ours is {session.epoch}")
                return
        owner = row.get("claimed_by")
        if "claimed_by" in row and owner is not None and str(owner) != self.executor_id:
            session.fence("job is claimed by another executor")
            return
        if row.get("cancel_requested_at"):
            session.cancel_flag = True
        if row.get("pause_requested_at"):
            session.pause_flag = True

    async def heartbeat_once(self) -> None:
        leases = [{"job_id": s.job_id, "epoch": s.epoch} for s in self.inflight.values() if not s.fenced]
        res = await self.control.call(
            "heartbeat", {"p_executor_id": self.executor_id, "p_leases": leases}, retry=False
        )
        res = res if isinstance(res, dict) else {}
        for job_id in res.get("fenced") or []:
            session = self.inflight.get(str(job_id))
            # only leases we sent: a job claimed after the heartbeat left must not be fenced
            if session is not None and any(
                entry["job_id"] == session.job_id and entry["epoch"] == session.epoch for entry in leases
            ):
                session.fence("heartbeat could not renew the lease")
        for job_id in res.get("cancel_requested") or []:
            if str(job_id) in self.inflight:
                self.inflight[str(job_id)].cancel_flag = True
        for job_id in res.get("pause_requested") or []:
            if str(job_id) in self.inflight:
                self.inflight[str(job_id)].pause_flag = True
        await self.control.call(
            "report_executor_metrics",
            {"p_executor_id": self.executor_id, "p_metrics": self.metrics()},
            retry=False,
        )

    async def heartbeat_loop(self) -> None:
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        while not self.stopped.is_set():
            try:
                await self.heartbeat_once()
            except ControlPlaneError as exc:
                log.warning("heartbeat failed: %s", exc)
            if watchdog_usec:
                sd_notify("WATCHDOG=1")
            interval = self.s.heartbeat_interval
            if watchdog_usec:
                interval = min(interval, watchdog_usec / 2e6)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), timeout=interval)

    async def recovery_loop(self) -> None:
        while not self.stop.is_set():
            try:
                res = await self.control.call(
                    "executor_recover_leases", {"p_executor_id": self.executor_id}, retry=False
                )
                if res:
                    log.info("recovered expired leases", extra={"recovered": res})
                    self.wake.set()
            except ControlPlaneError as exc:
                log.warning("lease recovery failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.s.recovery_interval)

    async def anchor_loop(self) -> None:
        """Sign the audit chain's lane heads into the state folder (executor.audit_anchor)."""
        from .audit_anchor import AnchorError, AnchorStore, anchor_once

        store = AnchorStore(self.s.state_dir, self.s.executor_name)
        while not self.stop.is_set():
            try:
                await anchor_once(self.control, store)
            except (ControlPlaneError, AnchorError, OSError) as exc:
                log.warning("audit anchoring failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.s.audit_anchor_interval)

    # --- Realtime ----------------------------------------------------------------------
    def _on_change(self, payload: Mapping[str, Any]) -> None:
        data = payload.get("data", payload) if isinstance(payload, dict) else {}
        record = data.get("record") or {}
        if record.get("status") == "pending":
            self.wake.set()
        if record:
            self.apply_job_row(record)

    async def realtime_loop(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                client = await self.control.start()
                channel = client.channel(f"rackpilot-executor-{self.executor_id}")
                for event in (
                    RealtimePostgresChangesListenEvent.Insert,
                    RealtimePostgresChangesListenEvent.Update,
                ):
                    channel.on_postgres_changes(
                        event,
                        schema="public",
                        table="jobs",
                        filter=f"site_id=eq.{self.site_id}",
                        callback=self._on_change,
                    )
                joined = asyncio.Event()

                def on_state(state: Any, err: Exception | None, joined: asyncio.Event = joined) -> None:
                    name = getattr(state, "value", str(state))
                    self.realtime_ok = name == "SUBSCRIBED"
                    if self.realtime_ok:
                        joined.set()
                        self.wake.set()  # catch up on anything created while we were away

                await channel.subscribe(on_state)
                self._channel = channel
                await asyncio.wait_for(joined.wait(), timeout=10)
                delay = 1.0
                log.info("realtime subscribed")
                # The client reconnects and rejoins by itself; we only watch for a closed socket.
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=2.0)
                    if not client.realtime.is_connected:
                        raise ConnectionError("realtime socket closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers us while we reconnect
                self.realtime_ok = False
                log.warning(
                    "realtime unavailable (%s); polling every %.1fs", type(exc).__name__, self.s.poll_interval
                )
                with contextlib.suppress(Exception):
                    if self._channel is not None:
                        await self._channel.unsubscribe()
                self._channel = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                delay = min(delay * 2, self.s.realtime_reconnect_max)

    # --- lifecycle ---------------------------------------------------------------------
    def _replaced(self, reason: str) -> None:
        """An admin re-keyed this identity and the new key registered: stop claiming, say why."""
        if self.exit_code == 2:
            return
        self.exit_code = 2
        log.error(
            "this executor's identity now belongs to another key; it stops claiming and exits: %s",
            reason,
            extra={"kid": self.keys.kid, "executor_id": self.executor_id},
        )
        self.request_stop()

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("stopping: no new claims; running jobs checkpoint at their next safe point")
            sd_notify("STOPPING=1")
            self.stop.set()
            self.wake.set()
            for session in self.inflight.values():
                session.draining_flag = True

    async def run(self, *, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        await self.control.start()
        # SIGTERM/SIGINT end start-up retries at once (the registration is cancelled)
        registering = asyncio.create_task(self.register(), name="register")
        stopping = asyncio.create_task(self.stop.wait(), name="stop-wait")
        await asyncio.wait({registering, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if self.stop.is_set() and not (
            registering.done() and not registering.cancelled() and registering.exception() is None
        ):
            registering.cancel()
            with contextlib.suppress(asyncio.CancelledError, ControlPlaneError):
                await registering
            await self.control.close()
            log.info("stopped before registration")
            return
        try:
            registering.result()
        except BaseException:
            await self.control.close()
            raise
        sd_notify("READY=1")
        self._tasks = [
            asyncio.create_task(self.claim_loop(), name="claim"),
            asyncio.create_task(self.heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self.recovery_loop(), name="recovery"),
        ]
        if self.s.realtime_enabled:
            self._tasks.append(asyncio.create_task(self.realtime_loop(), name="realtime"))
        if self.s.audit_anchor_interval > 0:
            self._tasks.append(asyncio.create_task(self.anchor_loop(), name="audit-anchor"))
        # the BMC call log: jobs' Redfish/OME calls written in batches (executor/calllog.py)
        self._tasks.append(
            asyncio.create_task(
                CALLS.flush_loop(self.control, self.executor_id, self.stopped), name="bmc-call-log"
            )
        )
        # due job schedules get their jobs through create-job's code (executor/schedule_fire.py)
        self._tasks.append(
            asyncio.create_task(fire_loop(self.control, self.site_id, self.stop), name="schedules")
        )
        if "replication_sync" in self.job_types:  # due pairs get their job (SQL decides: never twice)
            from .replication_schedule import schedule_loop

            self._tasks.append(
                asyncio.create_task(
                    schedule_loop(
                        self.control, self.executor_id, self.stop, interval=self.s.replication_poll_interval
                    ),
                    name="replication-schedule",
                )
            )
        if self.s.notify_enabled:
            self.dispatcher = Dispatcher(self.s, self.control, self.executor_id)
            self._tasks.append(asyncio.create_task(self.dispatcher.run(self.stop), name="notify"))
        await self.stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        for session in self.inflight.values():
            session.draining_flag = True
        jobs = [s.task for s in self.inflight.values() if s.task is not None]
        if jobs:
            done, pending = await asyncio.wait(jobs, timeout=self.s.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%d job(s) did not reach a safe point within %.0fs; recorded as interrupted",
                    len(pending),
                    self.s.shutdown_grace,
                )
                await asyncio.wait(pending, timeout=10)
        for session in self.inflight.values():
            session.give_up.set()
        self.stopped.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await CALLS.flush(self.control, self.executor_id)  # the calls of the jobs that just stopped
        with contextlib.suppress(ControlPlaneError):
            await self.control.call(
                "report_executor_metrics",
                {"p_executor_id": self.executor_id, "p_metrics": {**self.metrics(), "stopping": True}},
                retry=False,
            )
        if self.dispatcher is not None:
            await self.dispatcher.close()
        await self.control.close()
        log.info("stopped")
