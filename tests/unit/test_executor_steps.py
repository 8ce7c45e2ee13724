"""Step engine unit tests, on the in-memory UNIT-TEST DOUBLE of the control plane
(tests/unit/executor_double.py). The same engine runs against the real stack in
tests/integration and tests/e2e."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devstack.testing.selftest import SelftestHandler
from executor.steps import (
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    JobHandler,
    PlanError,
    SafetyPolicy,
    StepContext,
    StepEngine,
    cleanup_step,
    split_plan,
    step,
)
from tests.unit.executor_double import DoubleJobStore

MAIN = ["preflight", "disable_guard", "apply_a", "wait_ready", "apply_b", "verify"]


def make_store(tmp_path: Path, **params) -> DoubleJobStore:
    # selftest paths are relative to its folder (SelftestHandler(tmp_path) here)
    params.setdefault("counter_file", "counter")
    return DoubleJobStore({"id": "job-1", "type": "selftest", "params": params})


def effects(tmp_path: Path) -> list[str]:
    f = tmp_path / "counter"
    return [" ".join(line.split()[:2]) for line in f.read_text().splitlines()] if f.exists() else []


async def test_happy_path_runs_steps_in_priority_order_and_cleans_up(tmp_path):
    store = make_store(tmp_path)
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "completed" and out.steps_run == MAIN
    assert [w[2] for w in store.writes if w[1] == "step" and w[3] == COMPLETED] == [*MAIN, "restore_guard"]
    assert effects(tmp_path) == [
        "run preflight",
        "run disable_guard",
        "apply apply_a",
        "run wait_ready",
        "apply apply_b",
        "run verify",
        "cleanup restore_guard",
    ]
    assert store.finish_args["status"] == "completed"
    assert store.finish_args["result"]["checkpoint"]["applied"] == ["a", "b"]
    assert (tmp_path / "counter.state").read_text() == "guard=on\n"
    # the checkpoint travels with each completion record
    assert store.steps["apply_a"]["details"]["checkpoint"]["applied"] == ["a"]


async def test_resume_continues_after_last_completed_step_with_saved_progress(tmp_path):
    store = make_store(tmp_path, wait_ticks=5)
    for i, name in enumerate(MAIN[:3]):
        store.steps[name] = {
            "name": name,
            "step_index": i,
            "status": COMPLETED,
            "details": {"attempt": 1, "checkpoint": {"applied": ["a"]} if name == "apply_a" else {}},
        }
    store.steps["wait_ready"] = {
        "name": "wait_ready",
        "step_index": 3,
        "status": RUNNING,
        "details": {"attempt": 1, "progress": {"marker": 4}},
    }
    (tmp_path / "counter.state").write_text("guard=off\n")
    store.epoch = 2  # a new claim
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "completed" and out.steps_run == ["wait_ready", "apply_b", "verify"]
    assert "apply apply_a" not in effects(tmp_path)  # not re-run
    assert store.steps["wait_ready"]["details"]["attempt"] == 2
    assert store.steps["wait_ready"]["details"]["result"]["resumed_from"] == 4
    assert store.finish_args["result"]["checkpoint"]["applied"] == ["a", "b"]


async def test_interrupted_non_resumable_step_is_never_rerun_and_cleanup_runs(tmp_path):
    store = make_store(tmp_path)
    for i, name in enumerate(MAIN[:4]):
        store.steps[name] = {"name": name, "step_index": i, "status": COMPLETED, "details": {"attempt": 1}}
    store.steps["apply_b"] = {
        "name": "apply_b",
        "step_index": 4,
        "status": RUNNING,
        "details": {"attempt": 1},
    }
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "failed" and "not resumable" in out.error
    assert effects(tmp_path) == ["cleanup restore_guard"]
    assert store.finish_args["status"] == "failed"


async def test_failure_records_error_and_runs_cleanup(tmp_path):
    store = make_store(tmp_path, fail_at="apply_b")
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "failed"
    assert store.steps["apply_b"]["status"] == FAILED
    assert "failed on request" in store.steps["apply_b"]["details"]["error"]
    assert "verify" not in store.steps
    assert effects(tmp_path)[-1] == "cleanup restore_guard"


async def test_cleanup_only_if_its_step_started(tmp_path):
    store = make_store(tmp_path, fail_at="preflight")
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "failed"
    assert "cleanup restore_guard" not in effects(tmp_path)


async def test_blockers_pause_without_cleanup_then_resume_reruns_the_step(tmp_path):
    store = make_store(tmp_path, block_at="apply_a")
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "paused" and store.status == "paused"
    reason, blockers = store.pause_args
    assert reason == "blockers" and blockers[0]["kind"] == "other"
    # SQL has no paused step: the blocked step is pending again, its details say why
    assert store.steps["apply_a"]["status"] == PENDING and store.steps["apply_a"]["details"]["blockers"] == 1
    assert "cleanup restore_guard" not in effects(tmp_path)
    # the operator resolves; the job is claimed again
    store.epoch += 1
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "completed" and out.steps_run == MAIN[2:]
    assert effects(tmp_path).count("apply apply_a") == 1  # blocked before its side effect
    assert store.steps["apply_a"]["details"]["attempt"] == 2


class Hooked(SelftestHandler):
    """Selftest with a hook at each safe point (for cancel and fencing)."""

    def __init__(self, at: str, action, base_dir: Path):
        super().__init__(base_dir)
        self.at, self.action = at, action

    async def before_step(self, ctx: StepContext, spec) -> None:
        if spec.name == self.at:
            self.action()


async def test_cancel_is_honoured_only_at_a_safe_point(tmp_path):
    store = make_store(tmp_path)
    out = await StepEngine().run(
        Hooked("apply_b", lambda: setattr(store, "cancel", True), tmp_path), store.session()
    )
    assert out.status == "cancelled"
    # apply_b's safe point came after the request: it never ran; later steps are skipped
    assert "apply apply_b" not in effects(tmp_path)
    assert store.steps["apply_b"]["status"] == SKIPPED and store.steps["verify"]["status"] == SKIPPED
    assert effects(tmp_path)[-1] == "cleanup restore_guard"
    assert store.finish_args["status"] == "cancelled"


async def test_cancel_interrupts_an_abortable_wait(tmp_path):
    store = make_store(tmp_path, wait_ticks=10_000, tick_seconds=0.01)

    async def cancel_soon():
        while "wait_ready" not in store.steps:
            await asyncio.sleep(0.005)
        store.cancel = True

    task = asyncio.create_task(cancel_soon())
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    await task
    assert out.status == "cancelled"
    assert store.steps["wait_ready"]["status"] == SKIPPED
    assert "apply apply_b" not in effects(tmp_path)


async def test_fenced_session_stops_and_writes_nothing_more(tmp_path):
    store = make_store(tmp_path)

    def steal():  # another executor claimed the job: the epoch moved on
        store.epoch += 1

    session = store.session()
    out = await StepEngine().run(Hooked("apply_b", steal, tmp_path), session)
    assert out.status == "fenced"
    assert all(w[0] == 1 for w in store.writes)
    assert store.finish_args is None
    assert "apply apply_b" not in effects(tmp_path) and "cleanup restore_guard" not in effects(tmp_path)


async def test_stalled_wait_fails_but_a_slow_one_only_notices(tmp_path):
    stalled = make_store(tmp_path, wait_ticks=50, tick_seconds=0.01, stall_after=2)
    policy = SafetyPolicy({"step_timeouts": {"wait_ready": {"timeout": 30, "stall": 0.2}}})
    out = await StepEngine(policy).run(SelftestHandler(tmp_path), stalled.session())
    assert out.status == "failed" and "no progress" in out.error
    assert stalled.steps["wait_ready"]["details"]["error_class"] == "StepStalled"

    slow = make_store(tmp_path, wait_ticks=20, tick_seconds=0.02)
    policy = SafetyPolicy({"step_timeouts": {"wait_ready": {"timeout": 30, "stall": 5, "expected": 0.1}}})
    out = await StepEngine(policy).run(SelftestHandler(tmp_path), slow.session())
    assert out.status == "completed"
    assert [n[0] for n in slow.notices] == ["job_slow"]


async def test_step_timeout_from_policy(tmp_path):
    store = make_store(tmp_path, step_seconds=0.5)
    policy = SafetyPolicy({"job_types": {"selftest": {"step_timeouts": {"preflight": {"timeout": 0.1}}}}})
    out = await StepEngine(policy).run(SelftestHandler(tmp_path), store.session())
    assert out.status == "failed" and "timeout" in out.error
    assert store.steps["preflight"]["details"]["error_class"] == "StepTimeout"


async def test_draining_releases_the_job_at_a_safe_point(tmp_path):
    store = make_store(tmp_path)
    session = store.session()
    out = await StepEngine().run(
        Hooked("apply_a", lambda: setattr(session, "draining", True), tmp_path), session
    )
    # draining is noticed at apply_a's safe point: apply_a never starts
    assert out.status == "released" and store.released
    assert store.steps["disable_guard"]["status"] == COMPLETED and "apply_a" not in store.steps
    assert "apply apply_a" not in effects(tmp_path)


async def test_bad_params_fail_before_any_step(tmp_path):
    store = DoubleJobStore({"id": "j", "type": "selftest", "params": {}})
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "failed" and "counter_file" in out.error and store.steps == {}


def test_policy_lookup_merges_defaults_and_job_type():
    p = SafetyPolicy(
        {
            "step_timeouts": {"default": {"timeout": 100, "stall": 10}},
            "job_types": {"x": {"step_timeouts": {"s": {"stall": 3}, "t": 7}}},
        }
    )
    assert p.timeouts("x", "s") == p.timeouts("x", "s")
    s = p.timeouts("x", "s")
    assert (s.timeout, s.stall, s.expected) == (100, 3, 50)
    assert p.timeouts("x", "t").timeout == 7
    assert p.timeouts("y", "s").stall == 10


def test_policy_reads_the_job_types_step_timeout_from_safety_yaml():
    root = Path(__file__).resolve().parents[2]
    p = SafetyPolicy.load(root / "policies" / "safety.yaml")
    t = p.timeouts("selftest", "apply_a")
    assert t.timeout == 60 and t.stall <= 60 and t.expected == 30
    assert p.timeouts("firmware_update", "x").timeout == 3600


def test_plan_errors_are_specific():
    class Bad(JobHandler):
        job_type = "bad"

        @step(1, resumable=True)
        async def a(self, ctx):
            pass

        @cleanup_step(0, only_if_started="nope")
        async def c(self, ctx):
            pass

    with pytest.raises(PlanError, match="unknown step nope"):
        split_plan(Bad().plan({}))


@pytest.mark.parametrize("step_name,resumable", [("wait_ready", True), ("apply_a", False)])
async def test_step_cut_off_past_the_shutdown_grace_is_recorded(tmp_path, step_name, resumable):
    """Past the grace the runner cancels the job task: the step says so; a resumable one is
    handed back, a non-resumable one keeps its lease for recovery to pause as executor_lost."""
    store = make_store(
        tmp_path, wait_ticks=100_000, tick_seconds=0.01, gate_dir=".", gates=[f"inside:{step_name}"]
    )
    session = store.session()
    task = asyncio.create_task(StepEngine().run(SelftestHandler(tmp_path), session))
    while not (tmp_path / f"job-1.inside:{step_name}.at").exists():
        await asyncio.sleep(0.005)
    session.draining = True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    row = store.steps[step_name]
    assert row["status"] == RUNNING and row["details"]["interrupted"] == "executor shutdown"
    assert store.released is resumable and store.finish_args is None


# --- selftest is a test fixture: off by default, and its files stay in its folder ----------
def test_selftest_is_registered_only_with_its_flag(tmp_path, monkeypatch):
    from executor import handlers
    from executor.config import ExecutorSettings

    handlers.load_builtin()  # the built-in modules register on import, once per process
    # this process's registry as a fresh executor's would be (another test may have enabled selftest)
    monkeypatch.setattr(
        handlers, "_REGISTRY", {k: v for k, v in handlers._REGISTRY.items() if k != "selftest"}
    )
    assert "selftest" not in handlers.load_builtin()
    with pytest.raises(handlers.UnknownJobType):
        handlers.get("selftest")
    base = {"supabase_url": "http://127.0.0.1:1", "supabase_key": "k", "site": "s", "state_dir": tmp_path}
    assert ExecutorSettings(**base).enable_selftest is False  # the default
    monkeypatch.setenv("RACKPILOT_ENABLE_SELFTEST", "true")
    on = ExecutorSettings(**base)
    assert on.enable_selftest is True
    assert "selftest" in handlers.load_builtin(enable_selftest=on.enable_selftest)
    handler = handlers.create("selftest", on)
    assert handler.base_dir == tmp_path / "selftest"
    # once registered in this process, an executor without the flag still does not take it
    assert "selftest" not in handlers.load_builtin()


def test_test_handlers_come_only_from_their_entry_point_and_only_for_test_only_types(monkeypatch):
    """selftest is the harness's, found through the rackpilot.test_handlers entry point: with
    none installed the flag is refused by name, and an entry point naming an operator job's
    handler (or no handler) is refused instead of replacing it."""
    from importlib.metadata import EntryPoint

    from executor import ExecutorError, handlers

    real = handlers.entry_points(group=handlers.TEST_HANDLER_GROUP)
    assert [(ep.name, ep.value) for ep in real] == [("selftest", "devstack.testing.selftest:SelftestHandler")]
    monkeypatch.setattr(handlers, "_REGISTRY", dict(handlers._REGISTRY))

    def installed(*values: str):
        eps = [EntryPoint(f"ep{i}", v, handlers.TEST_HANDLER_GROUP) for i, v in enumerate(values)]
        monkeypatch.setattr(
            handlers, "entry_points", lambda group: eps if group == handlers.TEST_HANDLER_GROUP else []
        )

    installed()
    with pytest.raises(
        ExecutorError, match="RACKPILOT_ENABLE_SELFTEST is set, but no test handler is installed"
    ):
        handlers.load_builtin(enable_selftest=True)
    installed("executor.handlers.power:PowerOperationHandler")
    with pytest.raises(ExecutorError, match=r"ep0 .* is not a handler of a test-only job type \(selftest\)"):
        handlers.load_builtin(enable_selftest=True)
    installed("executor.steps:StepEngine")
    with pytest.raises(ExecutorError, match="is not a handler of a test-only job type"):
        handlers.load_builtin(enable_selftest=True)
    installed("devstack.testing.no_such_module:Handler")
    with pytest.raises(ExecutorError, match="test handler ep0 .* cannot be imported"):
        handlers.load_builtin(enable_selftest=True)
    assert handlers.get("power_operation").__name__ == "PowerOperationHandler"


@pytest.mark.parametrize(
    "params,why",
    [
        ({"counter_file": "/tmp/counter"}, "absolute paths are refused"),
        ({"counter_file": "../counter"}, "'..' is refused"),
        ({"counter_file": "sub/../../counter"}, "'..' is refused"),
        ({"counter_file": "."}, "leads out of the selftest folder"),
        ({"counter_file": "link/counter"}, "leads out of the selftest folder"),
        (
            {"counter_file": "counter", "gate_dir": "/tmp", "gates": ["boundary:apply_a"]},
            "absolute paths are refused",
        ),
        ({"counter_file": "counter", "gate_dir": "..", "gates": ["boundary:apply_a"]}, "'..' is refused"),
        ({"counter_file": "counter", "gate_dir": ".", "gates": ["inside:../../x"]}, "each gate is"),
    ],
)
async def test_selftest_paths_are_confined_to_its_folder(tmp_path, params, why):
    base = tmp_path / "state" / "selftest"
    base.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (base / "link").symlink_to(tmp_path / "outside")
    store = DoubleJobStore({"id": "j", "type": "selftest", "params": params})
    out = await StepEngine().run(SelftestHandler(base), store.session())
    assert out.status == "failed" and why in out.error, out.error
    assert store.steps == {}  # refused before any step ran
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link", "outside", "selftest", "state"]


async def test_selftest_relative_paths_land_in_its_folder(tmp_path):
    base = tmp_path / "selftest"  # created on first use
    store = DoubleJobStore({"id": "j", "type": "selftest", "params": {"counter_file": "c"}})
    out = await StepEngine().run(SelftestHandler(base), store.session())
    assert out.status == "completed"
    assert sorted(p.name for p in base.iterdir()) == ["c", "c.state"]
    assert oct(base.stat().st_mode & 0o777) == "0o700"


# --- cleanup on every exit path (DESIGN §5.2; issue 14) ---------------------------------------
def _owed_calls(store: DoubleJobStore) -> list[bool]:
    return [w[3]["p_owed"] for w in store.writes if w[1] == "call" and w[2] == "set_cleanup_owed"]


async def test_cleanup_is_owed_before_the_first_change_and_settled_after_the_cleanup(tmp_path):
    store = make_store(tmp_path)
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "completed" and _owed_calls(store) == [True, False]
    seq = [
        ("owe" if w[3]["p_owed"] else "settle") if w[1] == "call" else w[2]
        for w in store.writes
        if w[1] == "call" or (w[1] == "step" and w[3] == RUNNING)
    ]
    seq = [x for i, x in enumerate(seq) if i == 0 or seq[i - 1] != x]  # progress writes repeat RUNNING
    # owed right before disable_guard runs (its only_if_started), settled after restore_guard
    assert seq == ["preflight", "owe", "disable_guard", *MAIN[2:], "restore_guard", "settle"], seq
    assert store.steps["restore_guard"]["details"]["cleanup"] is True
    assert not store.cleanup_owed


async def test_cancel_from_executor_lost_runs_only_the_cleanup(tmp_path):
    """A job paused as executor_lost inside a non-resumable step, then cancelled: SQL hands it
    back (pending, cancel requested); the engine must not stop at the interrupted step but
    skip every main step and run the cleanup, so the guard (HA/DRS) is restored."""
    store = make_store(tmp_path)
    for i, name in enumerate(MAIN[:2]):
        store.steps[name] = {"name": name, "step_index": i, "status": COMPLETED, "details": {"attempt": 1}}
    store.steps["apply_a"] = {
        "name": "apply_a",
        "step_index": 2,
        "status": RUNNING,
        "details": {"attempt": 1},
    }
    (tmp_path / "counter.state").write_text("guard=off\n")
    store.cleanup_owed = True
    store.cancel = True
    store.epoch = 2
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "cancelled", out
    assert effects(tmp_path) == ["cleanup restore_guard"]
    assert (tmp_path / "counter.state").read_text() == "guard=on\n"
    assert store.steps["apply_a"]["status"] == SKIPPED and store.finish_args["status"] == "cancelled"
    assert not store.cleanup_owed


class FlakyCleanup(SelftestHandler):
    """restore_guard fails while ``broken`` is set (the vCenter unreachable, say)."""

    broken = True

    @cleanup_step(10, only_if_started="disable_guard")
    async def restore_guard(self, ctx: StepContext) -> None:
        if FlakyCleanup.broken:
            raise RuntimeError("vCenter unreachable")
        await super().restore_guard(ctx)


async def test_a_failed_cleanup_pauses_the_job_and_the_next_run_does_the_cleanup_only(tmp_path):
    FlakyCleanup.broken = True
    store = make_store(tmp_path, fail_at="apply_b")
    out = await StepEngine().run(FlakyCleanup(tmp_path), store.session())
    assert out.status == "paused" and store.pause_args == ("cleanup_failed", [])
    assert store.cleanup_owed and store.finish_args is None  # no terminal state without the cleanup
    assert store.steps["restore_guard"]["details"]["pending_outcome"] == "failed"
    FlakyCleanup.broken = False
    store.epoch += 1  # resumed, claimed again
    before = effects(tmp_path)
    out = await StepEngine().run(FlakyCleanup(tmp_path), store.session())
    assert out.status == "failed" and "failed on request" in out.error  # the outcome it had
    assert effects(tmp_path)[len(before) :] == ["cleanup restore_guard"]  # no main step again
    assert store.finish_args["status"] == "failed" and not store.cleanup_owed


async def test_a_step_that_fails_half_way_still_gets_its_cleanup(tmp_path):
    """The step the cleanup waits for (only_if_started) failed while running: it may have
    changed the target already (staged part of the firmware, say), so the cleanup runs and
    the job ends failed, its owed cleanup settled. Before, the job was left running: SQL
    refused it a terminal state while the cleanup it owed never ran."""
    store = make_store(tmp_path, fail_at="disable_guard")
    out = await StepEngine().run(SelftestHandler(tmp_path), store.session())
    assert out.status == "failed" and store.finish_args["status"] == "failed"
    assert effects(tmp_path)[-1] == "cleanup restore_guard"
    assert _owed_calls(store) == [True, False] and not store.cleanup_owed
