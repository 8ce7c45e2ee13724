"""Process hygiene: nothing devstack starts outlives the process that owns it.

For each parent - the gateway, the lab's data-centre process, a stack owner (what the demo
is when it started the stack), the executor's parent, a `dev up` that fails - the parent is
started for real, SIGKILLed (or fails), and every process it had below it, or that names
this test's state folder in its command line or environment, must be gone within a
deadline. Then Ctrl-C of `rackpilot demo | tee`, which also kills tee, so the demo's stdout
is a closed pipe while it stops.

One stack folder serves the whole module (created and migrated once by the first
`rackpilot dev up`); each test leaves it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from devstack import proc
from devstack.stack.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
SMALL_LAB = {
    "clusters": [{"name": "ph", "hosts": 1, "vms_per_host": 1}],
    "time_scale": 20.0,
    "esxi_ssh": True,
    "ome": False,
}


# --- helpers ----------------------------------------------------------------------------------
def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def describe(pids) -> str:
    return "\n".join(f"  {pid}: {' '.join(proc.cmdline(pid))[:200]}" for pid in sorted(pids))


class Tracker:
    """The processes a test watches: given roots and everything below them, plus whatever
    names ``needle`` (the state folder) in its command line or environment; identified by pid
    and start time, so a recycled pid is not mistaken for a survivor."""

    def __init__(self, needle: str | None = None):
        self.needle = needle
        self.seen: dict[int, int] = {}

    def add(self, *roots: int) -> Tracker:
        named = proc.processes(needle=self.needle) if self.needle else []
        for pid in {*roots, *named, *proc.descendants([*roots, *named])}:
            started = proc.start_time(pid)
            if started is not None and proc.is_alive(pid):
                self.seen[pid] = started
        return self

    def alive(self) -> list[int]:
        left = [
            pid
            for pid, started in self.seen.items()
            if proc.is_alive(pid) and proc.start_time(pid) == started
        ]
        return sorted({*left, *(proc.processes(needle=self.needle) if self.needle else [])})

    def assert_all_gone(self, timeout: float) -> None:
        try:
            wait_until(lambda: not self.alive(), timeout, "every tracked process to exit")
        except AssertionError:
            raise AssertionError(f"left running after {timeout}s:\n{describe(self.alive())}") from None


@pytest.fixture(scope="module")
def env():
    state = Path(tempfile.mkdtemp(prefix="rackpilot-hygiene-"))
    os.chmod(state, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RACKPILOT_", "SUPABASE_"))}
    env.update(
        {
            "RACKPILOT_STACK_DIR": str(state),
            "RACKPILOT_API_PORT": str(free_port()),
            "RACKPILOT_DB_PORT": str(free_port()),
            "RACKPILOT_LAB_DIR": str(state / "lab"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    try:
        cli(env, "dev", "up")  # created and migrated once for the module
        yield env
    finally:
        cli(env, "lab", "down", check=False)
        cli(env, "dev", "destroy", check=False)
        proc.terminate(proc.processes(needle=str(state)), 5)  # a failed test must not leak either
        shutil.rmtree(state, ignore_errors=True)


def cli(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "devstack.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert res.returncode == 0, (
            f"rackpilot {' '.join(args)} exited {res.returncode}:\n{res.stderr[-3000:]}"
        )
    return res


def state_of(env) -> Path:
    return Path(env["RACKPILOT_STACK_DIR"])


def gateway_pid(env) -> int:
    return int((state_of(env) / "run" / "gateway.pid").read_text())


def router_of(gateway: int) -> list[int]:
    return [
        p for p in proc.descendants([gateway]) if any("functions_router.ts" in a for a in proc.cmdline(p))
    ]


def postmaster(env) -> int | None:
    pidfile = state_of(env) / "pgdata" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if proc.is_alive(pid) else None


def owner_script(env, body: str) -> subprocess.Popen:
    """A Python process running ``body``, which prints one JSON line once it is ready."""
    err_path = Path(tempfile.mkstemp(prefix="owner-", suffix=".err", dir=state_of(env))[1])
    with err_path.open("ab") as err:  # a file, not a pipe nobody drains
        p = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(body)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    p.err_path = err_path  # type: ignore[attr-defined]
    return p


def ready_line(p: subprocess.Popen) -> dict:
    line = p.stdout.readline()
    if not line:
        p.wait(10)
        raise AssertionError(
            f"the owner exited {p.returncode} before it was ready:\n{p.err_path.read_text()[-3000:]}"
        )
    return json.loads(line)


def sigkill(p: subprocess.Popen) -> None:
    p.kill()
    p.wait(10)
    if p.stdout is not None:
        p.stdout.close()


# --- the gateway ------------------------------------------------------------------------------
def test_gateway_sigkill_takes_its_functions_router_along(env):
    cli(env, "dev", "up")
    gw = gateway_pid(env)
    routers = wait_until(lambda: router_of(gw), 30, "the functions router")
    group = Tracker().add(gw)  # the gateway and what is below it
    os.kill(gw, signal.SIGKILL)
    group.assert_all_gone(15)
    assert not any(proc.is_alive(r) for r in routers)
    # `dev down` stops the rest (Postgres): nothing of the stack is left
    cli(env, "dev", "down")
    Tracker(str(state_of(env))).assert_all_gone(15)


def test_dev_down_stops_what_a_sigkilled_gateway_left_behind(env):
    """A router that outlived its gateway (one started before routers died with their
    gateway, say) is found by the gateway's marker although the gateway's pid file names a
    dead process. (A real router cannot be kept alive for this: the parent-death signal
    kills it, and a SIGSTOPped one gets SIGHUP when its process group is orphaned.)"""
    cli(env, "dev", "up")
    gw = gateway_pid(env)
    orphan = subprocess.Popen(
        ["sleep", "300"],
        start_new_session=True,
        env={**env, proc.OWNER_ENV: f"gateway:{state_of(env)}", "SUPABASE_SERVICE_ROLE_KEY": "x"},
    )
    os.kill(gw, signal.SIGKILL)
    wait_until(lambda: not proc.is_alive(gw), 10, "the gateway to die")
    assert proc.is_alive(orphan.pid)
    cli(env, "dev", "down")
    assert not proc.is_alive(orphan.pid)
    status = json.loads(cli(env, "dev", "status").stdout)
    assert status["postgres"] == "stopped" and status["gateway"] == "stopped"
    Tracker(str(state_of(env))).assert_all_gone(15)


# --- the lab ----------------------------------------------------------------------------------
def test_lab_process_sigkill_takes_vcsim_and_sshd_along(env):
    cfg = state_of(env) / "small-lab.json"
    cfg.write_text(json.dumps(SMALL_LAB))
    cli(env, "lab", "up", "--config", str(cfg))
    lab = int((state_of(env) / "lab" / "lab.pid").read_text())
    below = proc.descendants([lab])
    names = {Path(f"/proc/{p}/comm").read_text().strip() for p in below}  # sshd rewrites its cmdline
    assert {"vcsim-lab", "sshd"} <= names, names
    tracked = Tracker(str(state_of(env) / "lab")).add(lab)
    os.kill(lab, signal.SIGKILL)
    tracked.assert_all_gone(15)
    # `lab down` also sweeps what carries the lab's marker, its pid being dead
    leftover = proc.spawn(
        ["sleep", "300"], die_with_parent=False, owner=f"lab:{(state_of(env) / 'lab').resolve()}"
    )
    assert "lab stopped" in cli(env, "lab", "down").stderr
    wait_until(lambda: not proc.is_alive(leftover.pid), 10, "the leftover to be stopped")


# --- the stack's owner (the demo, cheaply), the executor's parent, a failing start ------------
def test_stack_owner_sigkill_stops_the_stack_the_lab_and_the_executor(env):
    """What the demo does when it starts the stack itself: hold it (watchdog), start it,
    start a lab and an executor in-process. SIGKILL of the owner leaves nothing behind:
    not Postgres (daemonized by pg_ctl under another uid: the watchdog's `pg_ctl stop`), not
    the gateway and its router (the watchdog), not the executor, vCenter simulator or sshd
    (parent-death signal)."""
    cli(env, "dev", "down")
    owner = owner_script(
        env,
        """
        import json, sys, threading
        from devstack.demo import Executor
        from devstack.lab.datacentre import DataCentre
        from devstack.stack.stack import Stack

        st = Stack()
        st.hold()
        st.up()
        ex = Executor(st, 1.0)
        dc = DataCentre([{"name": "ph", "hosts": 1, "vms_per_host": 1}], time_scale=20.0, esxi_ssh=True,
                        workdir=st.cfg.state_dir / "owner-lab").start()
        print(json.dumps({"executor": ex.proc.pid, "sshd": dc.ssh._proc.pid}), flush=True)
        threading.Event().wait()
    """,
    )
    try:
        pids = ready_line(owner)
        assert postmaster(env) and proc.is_alive(gateway_pid(env))
        tracked = Tracker(str(state_of(env))).add(owner.pid)
        assert {pids["executor"], pids["sshd"], postmaster(env), gateway_pid(env)} <= set(tracked.seen)
    finally:
        sigkill(owner)
    tracked.assert_all_gone(60)
    status = json.loads(cli(env, "dev", "status").stdout)
    assert status["postgres"] == "stopped" and status["gateway"] == "stopped"


def test_executor_dies_with_its_parent(env):
    cli(env, "dev", "up")
    parent = owner_script(
        env,
        """
        import json, threading
        from devstack.demo import Executor
        from devstack.stack.stack import Stack

        ex = Executor(Stack(), 1.0)
        print(json.dumps({"executor": ex.proc.pid}), flush=True)
        threading.Event().wait()
    """,
    )
    try:
        executor = ready_line(parent)["executor"]
        wait_until(
            lambda: (state_of(env) / "demo-executor" / "executor.log").exists(), 30, "the executor to run"
        )
        tracked = Tracker(str(state_of(env) / "demo-executor")).add(parent.pid)
        assert executor in tracked.seen
    finally:
        sigkill(parent)
    tracked.assert_all_gone(30)
    cli(env, "dev", "down")


def test_failed_start_stops_the_postgres_it_started(env):
    """The mechanism `dev up` uses when a step after Postgres fails (a migration, say)."""
    cli(env, "dev", "down")
    failing = owner_script(
        env,
        """
        import json
        from devstack.stack.stack import Stack, StackError

        st = Stack()
        try:
            with st._starting():
                st.pg.start()
                raise StackError("migration 20990101000000_broken.sql failed")
        except StackError:
            print(json.dumps({"running": st.pg.running()}), flush=True)
    """,
    )
    assert ready_line(failing) == {"running": False}
    failing.wait(30)
    Tracker(str(state_of(env))).assert_all_gone(15)

    # the same start SIGKILLed half-way: its watchdog stops what it started
    killed = owner_script(
        env,
        """
        import json, threading
        from devstack.stack.stack import Stack

        st = Stack()
        with st._starting():
            st.pg.start()
            print(json.dumps({"running": st.pg.running()}), flush=True)
            threading.Event().wait()
    """,
    )
    try:
        assert ready_line(killed) == {"running": True}
        tracked = Tracker(str(state_of(env))).add(killed.pid)
        assert postmaster(env) in tracked.seen
    finally:
        sigkill(killed)
    tracked.assert_all_gone(60)


# --- Ctrl-C of `make demo | tee` ----------------------------------------------------------------
def piped_to_tee(env, argv: list[str], name: str) -> tuple[subprocess.Popen, Path, Path, Path]:
    """``argv | tee`` in a session of its own, as a terminal runs a pipeline in one process
    group; the exit code of ``argv`` lands in a file (tee's would hide it)."""
    state = state_of(env)
    rc, out, err = state / f"{name}.rc", state / f"{name}.out", state / f"{name}.err"
    cmd = " ".join(argv)
    group = subprocess.Popen(
        ["bash", "-c", f"({cmd} 2>{err}; echo $? >{rc}) | tee {out} >/dev/null"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        # as from a terminal: SIGINT at its default even when the suite itself was started in
        # the background of a non-interactive shell, which ignores it (and exec keeps that)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return group, rc, out, err


def ctrl_c(group: subprocess.Popen, rc: Path, tracked: Tracker) -> None:
    """What a terminal's Ctrl-C does: SIGINT to the whole foreground process group, the
    program and tee alike, so the program's stdout is a closed pipe while it stops. tee is
    made to go first (the one order of the race that breaks the pipe under every write)."""
    tees = [p for p in proc.descendants([group.pid]) if Path(f"/proc/{p}/comm").read_text().strip() == "tee"]
    assert tees, "tee is not running"
    for pid in tees:
        os.kill(pid, signal.SIGINT)
    wait_until(lambda: not any(proc.is_alive(p) for p in tees), 10, "tee to die")
    os.killpg(group.pid, signal.SIGINT)
    wait_until(rc.exists, 120, "the program to exit", interval=0.1)
    wait_until(lambda: group.poll() is not None, 30, "the shell to exit", interval=0.1)


def test_ctrl_c_while_the_demo_stays_up_with_its_stdout_a_closed_pipe(env):
    """The demo's end (``_finish``) after a run, waiting for Ctrl-C with everything up: the
    "stopping" line meets a closed pipe and must not cut the cleanup short. (The demo's run
    itself is skipped: the stack it started stands in for everything.)"""
    cli(env, "dev", "down")
    script = state_of(env) / "stays_up.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        from devstack import demo
        from devstack.stack.stack import Stack

        st = Stack()
        owner = st.hold()
        st.up()
        sys.exit(demo._finish(st, None, owner, stop_stack=True, wait=True, code=0))
    """)
    )
    group, rc, out, err = piped_to_tee(env, [sys.executable, str(script)], "stays-up")
    try:
        # a condition wait: the stack's start alone took over 120 s on a loaded 2-core machine
        wait_until(
            lambda: "Press Ctrl-C" in (out.read_text() if out.exists() else ""),
            300,
            "the demo to wait for Ctrl-C",
            interval=0.1,
        )
        tracked = Tracker(str(state_of(env))).add(group.pid)
        assert postmaster(env) and gateway_pid(env) in tracked.seen
    except BaseException:
        os.killpg(group.pid, signal.SIGKILL)
        raise
    ctrl_c(group, rc, tracked)
    assert rc.read_text().strip() == "0", err.read_text()[-3000:]
    assert "Traceback" not in err.read_text() and "Broken pipe" not in err.read_text(), err.read_text()[
        -3000:
    ]
    tracked.assert_all_gone(30)


def test_demo_ctrl_c_with_its_stdout_a_closed_pipe_stops_everything(env):
    """`rackpilot demo | tee`, Ctrl-C once the stack, the lab and the executor run."""
    cli(env, "dev", "down")
    state = state_of(env)
    group, rc, out, err = piped_to_tee(env, [sys.executable, "-m", "devstack.cli", "demo"], "demo")
    try:

        def everything_runs() -> bool:
            if group.poll() is not None:
                raise AssertionError(f"the demo ended early:\n{err.read_text()[-3000:]}")
            return bool(
                postmaster(env)
                and proc.processes(needle=str(state / "demo-executor"))
                and proc.processes(needle=str(state / "demo-lab"))
            )

        wait_until(everything_runs, 240, "the stack, the lab and the executor to run", interval=0.2)
        tracked = Tracker(str(state)).add(group.pid)
    except BaseException:
        os.killpg(group.pid, signal.SIGKILL)
        raise
    ctrl_c(group, rc, tracked)
    assert rc.read_text().strip() == "130", err.read_text()[-3000:]
    assert "Traceback" not in err.read_text() and "Broken pipe" not in err.read_text(), err.read_text()[
        -3000:
    ]
    tracked.assert_all_gone(30)
