"""UNIT-TEST DOUBLE of the control plane, for the step engine's unit tests only.

This in-memory stand-in keeps one job's ``workflow_executions`` rows and lease epoch so
the engine's ordering, resume, cancel, pause, cleanup and fencing logic can be tested in
milliseconds. It is not the control plane: the integration and e2e tests
(``tests/integration/test_executor_*.py``, ``tests/e2e/test_executor_*.py``) run the
same engine against the real local stack (Postgres, REST, Realtime).
"""

from __future__ import annotations

from typing import Any

from executor.steps import Fenced
from executor.vocabulary import JobStatus, PauseReason, StepStatus


class DoubleJobStore:
    """One job's state, as the real RPCs would keep it (epoch-checked writes)."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.epoch = 1
        self.steps: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple] = []
        self.status = "running"
        self.finish_args: dict[str, Any] | None = None
        self.pause_args: tuple | None = None
        self.notices: list[tuple[str, dict]] = []
        self.cancel = False
        self.released = False
        self.cleanup_owed = False  # public.jobs.cleanup_owed_since, as set_cleanup_owed keeps it
        self.credentials: dict[str, dict[str, str]] = {}

    def session(self, *, draining: bool = False) -> DoubleSession:
        return DoubleSession(self, self.epoch, draining=draining)

    def check(self, epoch: int) -> None:
        if epoch != self.epoch:
            raise Fenced(f"stale epoch {epoch}, current {self.epoch}")


class DoubleSession:
    def __init__(self, store: DoubleJobStore, epoch: int, *, draining: bool = False):
        self.store = store
        self.epoch = epoch
        self.job = dict(store.job)
        self._fenced = False
        self.draining = draining
        self.pause_requested = False

    @property
    def fenced(self) -> bool:
        return self._fenced or self.epoch != self.store.epoch

    @property
    def cancel_requested(self) -> bool:
        return self.store.cancel

    def _write(self, *entry: Any) -> None:
        try:
            self.store.check(self.epoch)
        except Fenced:
            self._fenced = True
            raise
        self.store.writes.append((self.epoch, *entry))

    async def history(self) -> list[dict[str, Any]]:
        return [dict(v) for v in self.store.steps.values()]

    async def report_step(
        self, *, index: int, name: str, status: str, resumable: bool, details: dict[str, Any]
    ) -> None:
        # as public.step_status: the engine writes only values SQL has (no translation on the way)
        assert status in set(StepStatus), f"step status {status!r} is not a public.step_status value"
        self._write("step", name, status)
        self.store.steps[name] = {
            "name": name,
            "step_index": index,
            "status": status,
            "resumable": resumable,
            "details": details,
        }

    async def pause(self, reason: str, blockers: list[dict[str, Any]]) -> None:
        assert reason in set(PauseReason), f"pause reason {reason!r} is not a public.pause_reason value"
        self._write("pause", reason)
        self.store.status = "paused"
        self.store.pause_args = (reason, blockers)

    async def call(self, fn: str, params: dict[str, Any]) -> Any:
        self._write("call", fn, params)
        if fn == "set_cleanup_owed":
            if not params["p_owed"]:
                open_ = [
                    n
                    for n, r in self.store.steps.items()
                    if (r.get("details") or {}).get("cleanup") and r["status"] != "completed"
                ]
                assert not open_, f"cleanup_not_done: {open_}"
            self.store.cleanup_owed = bool(params["p_owed"])
        return None

    async def finish(
        self, status: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        # as jobs_guard_cleanup: no terminal state while the cleanup is owed
        assert not self.store.cleanup_owed, f"cleanup_owed: finish({status}) refused"
        assert status in {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}, f"finish({status!r})"
        self._write("finish", status)
        self.store.status = status
        self.store.finish_args = {"status": status, "result": result, "error": error}

    async def release(self) -> None:
        self._write("release")
        self.store.status = "pending"
        self.store.released = True

    async def credentials(self, credential_id: str) -> dict[str, str]:
        self._write("credentials", credential_id)
        return dict(self.store.credentials[credential_id])

    async def notice(self, event: str, payload: dict[str, Any]) -> None:
        self._write("notice", event)
        self.store.notices.append((event, payload))
