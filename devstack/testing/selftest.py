"""``selftest``: a multi-step job that exercises the step engine without hardware.

It is a test fixture, not an operator job, and lives in the harness: the product does not
import it. An executor started with ``RACKPILOT_ENABLE_SELFTEST=true`` loads it through the
``rackpilot.test_handlers`` entry point (``pyproject.toml``; see :mod:`executor.handlers`),
and takes it only then; unit tests build it directly. Every path it
touches lies inside ``<state_dir>/selftest/`` (:data:`SELFTEST_FOLDER`): ``counter_file``
and ``gate_dir`` are relative to that folder, and an absolute path, a ``..`` component or
a symbolic link leading out of it fails the job before any step runs.

Its target is a *side-effect counter*: an append-only text file (``params.counter_file``)
on the executor host. Every step appends ``<event> <step> <job_id> <pid>`` lines, so a test can
count exactly how often each step's effect happened - in particular that no
non-resumable step ever ran twice, across crashes and fencing.

Steps (priority order) and what they declare:

=============  ========  ==========  ===========================================================
step           priority  resumable   effect
=============  ========  ==========  ===========================================================
preflight      100       yes         checks params; records ``preflight``
disable_guard  90        yes         sets ``guard=off`` in the state file (like disabling HA)
apply_a        80        **no**      one side effect ``apply``
wait_ready     70        yes         progress-aware wait on a simulated target (abortable)
apply_b        60        **no**      one side effect ``apply``
verify         50        yes         reads the state back
restore_guard  cleanup   (cleanup)   sets ``guard=on`` again; runs on every terminal exit
=============  ========  ==========  ===========================================================

Test controls in ``params`` (all optional):

* ``gate_dir`` + ``gates``: (``gate_dir`` relative to the selftest folder, like
  ``counter_file``; gate names are ``boundary:<step>`` or ``inside:<step>``) at a gate named ``boundary:<step>`` (the safe point before the
  step is recorded as running) or ``inside:<step>`` (inside the step, after its side
  effect), the job writes ``<gate_dir>/<job_id>.<gate>.at`` and waits until
  ``<gate_dir>/<job_id>.<gate>.go`` exists - so a test can kill the executor exactly there.
  A gate holds a job once: the executor that resumes the job passes through.
* ``step_seconds``: sleep in each step (s).
* ``wait_ticks``: progress ticks ``wait_ready`` waits for; ``tick_seconds``: seconds per tick;
  ``stall_after``: the simulated target stops progressing after this many ticks.
* ``fail_at``: a step that raises; ``block_at``: a step that reports a blocker on its
  first attempt.
* ``credential_id``: ``preflight`` opens this credential and logs it (the log filter must
  redact it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from executor.steps import (
    Blocker,
    BlockersFound,
    HandlerError,
    JobHandler,
    Progress,
    StepContext,
    StepSpec,
    cleanup_step,
    step,
)
from executor.vocabulary import JobType

log = logging.getLogger("rackpilot.executor.selftest")

GATE_POLL_S = 0.02  # how often a held gate looks for its release file
#: the folder under the executor's state_dir that holds every file a selftest job touches
SELFTEST_FOLDER = "selftest"
GATE_RE = re.compile(r"^(boundary|inside):[a-z_]{1,64}$")


class SelftestError(HandlerError):
    """A selftest step failed on purpose (``fail_at``) or its params are unusable."""


def _append(path: Path, line: str) -> None:
    # O_APPEND + fsync: each side effect is one durable line even if we are killed right after.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def confined(base_dir: Path, value: Any, field: str, *, folder: bool = False) -> Path:
    """``value`` as a path inside ``base_dir``; SelftestError for anything that is not a
    relative path staying inside it (absolute, ``..``, or a symbolic link leading out)."""
    if not isinstance(value, str) or not value:
        raise SelftestError(f"params.{field} is required: a path relative to the selftest folder {base_dir}")
    rel = Path(value)
    if rel.is_absolute():
        raise SelftestError(
            f"params.{field} must be relative to the selftest folder {base_dir}; absolute paths are refused"
        )
    if "\x00" in value:
        raise SelftestError(f"params.{field} holds a NUL character")
    if ".." in rel.parts:
        raise SelftestError(
            f"params.{field} must stay inside the selftest folder {base_dir}; '..' is refused"
        )
    root = base_dir.resolve()
    path = (root / rel).resolve()
    if (path == root and not folder) or not path.is_relative_to(root):
        raise SelftestError(f"params.{field} leads out of the selftest folder {base_dir} (symbolic link)")
    return path


class SelftestHandler(JobHandler):
    """Registered only by ``load_builtin(enable_selftest=True)`` (the entry point); never on import."""

    job_type = JobType.SELFTEST

    def __init__(self, base_dir: Path):
        #: every file this handler reads or writes lies inside this folder
        self.base_dir = Path(base_dir)

    @classmethod
    def from_settings(cls, settings: Any) -> SelftestHandler:
        return cls(Path(settings.state_dir) / SELFTEST_FOLDER)

    def validate(self, job: dict[str, Any]) -> None:
        params = job.get("params") or {}
        self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        counter = confined(self.base_dir, params.get("counter_file"), "counter_file")
        if not counter.parent.is_dir():
            raise SelftestError(f"params.counter_file: folder {counter.parent} does not exist")
        gates = params.get("gates") or []
        if gates and not params.get("gate_dir"):
            raise SelftestError("params.gates needs params.gate_dir")
        if params.get("gate_dir") is not None:
            confined(self.base_dir, params.get("gate_dir"), "gate_dir", folder=True)
        if not isinstance(gates, list) or not all(isinstance(g, str) and GATE_RE.match(g) for g in gates):
            raise SelftestError("params.gates: each gate is boundary:<step> or inside:<step>")

    # helpers -------------------------------------------------------------------------------
    def _counter(self, ctx: StepContext, suffix: str = "") -> Path:
        path = confined(self.base_dir, ctx.params.get("counter_file"), "counter_file")
        return path.with_name(path.name + suffix) if suffix else path

    def _effect(self, ctx: StepContext, event: str) -> None:
        _append(self._counter(ctx), f"{event} {ctx.spec.name} {ctx.job_id} {os.getpid()}")

    async def _gate(self, ctx: StepContext, gate: str) -> None:
        if gate not in (ctx.params.get("gates") or []):
            return
        base = (
            confined(self.base_dir, ctx.params.get("gate_dir"), "gate_dir", folder=True)
            / f"{ctx.job_id}.{gate}"
        )
        at = Path(f"{base}.at")
        if at.exists():
            return  # a gate holds a job once; the executor that resumes it passes through
        at.write_text(str(os.getpid()))
        go = Path(f"{base}.go")
        while not go.exists():
            if ctx.fenced:
                return
            await asyncio.sleep(GATE_POLL_S)

    async def _common(self, ctx: StepContext) -> None:
        seconds = float(ctx.params.get("step_seconds", 0))
        if seconds:
            await asyncio.sleep(seconds)
        if ctx.params.get("fail_at") == ctx.spec.name:
            raise SelftestError(f"step {ctx.spec.name} failed on request")

    def _maybe_block(self, ctx: StepContext) -> None:
        # Blockers are found before the step changes anything, as a real blocker scan would.
        if ctx.params.get("block_at") == ctx.spec.name and ctx.attempt == 1:
            raise BlockersFound(
                [Blocker(kind="other", target="counter", message=f"blocked at {ctx.spec.name}")]
            )

    async def before_step(self, ctx: StepContext, spec: StepSpec) -> None:
        await self._gate(ctx, f"boundary:{spec.name}")

    # steps ---------------------------------------------------------------------------------
    @step(100, resumable=True)
    async def preflight(self, ctx: StepContext) -> dict[str, Any]:
        self._maybe_block(ctx)
        cred_id = ctx.params.get("credential_id")
        if cred_id:
            cred = await ctx.credentials(str(cred_id))
            # Deliberately careless: the log filter, not this line, must keep the secret out.
            log.info(
                "opened credential for %s with password %s", cred.get("username"), cred.unbound("password")
            )
        self._effect(ctx, "run")
        await self._gate(ctx, "inside:preflight")
        await self._common(ctx)
        ctx.checkpoint["preflight_at"] = time.time()
        return {"ok": True}

    @step(90, resumable=True)
    async def disable_guard(self, ctx: StepContext) -> None:
        self._maybe_block(ctx)
        state = self._counter(ctx, ".state")
        state.write_text("guard=off\n")
        self._effect(ctx, "run")
        await self._gate(ctx, "inside:disable_guard")
        await self._common(ctx)
        ctx.checkpoint["guard"] = "off"

    @step(80, resumable=False)
    async def apply_a(self, ctx: StepContext) -> None:
        self._maybe_block(ctx)
        self._effect(ctx, "apply")
        await self._gate(ctx, "inside:apply_a")
        await self._common(ctx)
        ctx.checkpoint["applied"] = [*ctx.checkpoint.get("applied", []), "a"]

    @step(70, resumable=True, abortable=True, timeout="wait_ready")
    async def wait_ready(self, ctx: StepContext) -> dict[str, Any]:
        self._maybe_block(ctx)
        self._effect(ctx, "run")
        await self._gate(ctx, "inside:wait_ready")
        await self._common(ctx)
        ticks = int(ctx.params.get("wait_ticks", 3))
        tick_s = float(ctx.params.get("tick_seconds", 0.02))
        stall_after = ctx.params.get("stall_after")
        start = (ctx.saved_progress or {}).get("marker") or 0
        began = time.monotonic()

        async def probe() -> Progress:
            # The simulated target advances one tick per tick_seconds, from where it was.
            done_ticks = int(start) + int((time.monotonic() - began) / tick_s)
            if stall_after is not None:
                done_ticks = min(done_ticks, int(stall_after))
            return Progress(done=done_ticks >= ticks, marker=min(done_ticks, ticks), info={"of": ticks})

        prog = await ctx.wait_for(probe, what="simulated target ready", interval=tick_s / 2)
        return {"ticks": prog.marker, "resumed_from": start}

    @step(60, resumable=False)
    async def apply_b(self, ctx: StepContext) -> None:
        self._maybe_block(ctx)
        self._effect(ctx, "apply")
        await self._gate(ctx, "inside:apply_b")
        await self._common(ctx)
        ctx.checkpoint["applied"] = [*ctx.checkpoint.get("applied", []), "b"]

    @step(50, resumable=True)
    async def verify(self, ctx: StepContext) -> dict[str, Any]:
        self._maybe_block(ctx)
        self._effect(ctx, "run")
        await self._gate(ctx, "inside:verify")
        await self._common(ctx)
        state = self._counter(ctx, ".state").read_text().strip()
        return {"state": state}

    @cleanup_step(10, only_if_started="disable_guard")
    async def restore_guard(self, ctx: StepContext) -> None:
        self._counter(ctx, ".state").write_text("guard=on\n")
        self._effect(ctx, "cleanup")
        await self._gate(ctx, "inside:restore_guard")
