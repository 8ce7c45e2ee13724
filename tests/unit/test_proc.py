"""devstack.proc: children die with their parent, even one a short-lived thread asked for;
a watchdog acts when its owner dies and not when it is released; owner markers find
processes. Real processes, no stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from devstack import proc

ROOT = Path(__file__).resolve().parents[2]


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def parent(body: str) -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = p.stdout.readline()
    assert line, f"the parent exited {p.wait(10)} before it was ready"
    return p, json.loads(line)


def test_children_die_with_their_parent_also_when_a_finished_thread_started_them(tmp_path):
    p, pids = parent("""
        import json, threading
        from devstack import proc

        main = proc.spawn(["sleep", "300"])
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("p", proc.spawn(["sleep", "301"])))
        t.start(); t.join()  # the thread that asked is gone: its child must not be
        print(json.dumps({"main": main.pid, "thread": box["p"].pid}), flush=True)
        threading.Event().wait()
    """)
    try:
        assert proc.is_alive(pids["main"]) and proc.is_alive(pids["thread"])
        # both in sessions of their own (a terminal's Ctrl-C does not reach them)
        assert proc.process_group(pids["main"]) == pids["main"]
    finally:
        p.kill()
        p.wait(10)
    wait_until(
        lambda: not proc.is_alive(pids["main"]) and not proc.is_alive(pids["thread"]),
        10,
        "the children to die with their parent",
    )


def test_watchdog_acts_when_its_owner_dies_and_not_when_released(tmp_path):
    fired, released = tmp_path / "fired", tmp_path / "released"
    p, info = parent(f"""
        import json, threading
        from devstack import proc

        done = proc.Watchdog(["touch", {str(released)!r}])
        done.release()
        armed = proc.Watchdog(["touch", {str(fired)!r}])
        print(json.dumps({{"released_exit": done.proc.returncode, "armed": armed.pid}}), flush=True)
        threading.Event().wait()
    """)
    try:
        assert info["released_exit"] == 0
        assert proc.is_alive(info["armed"])
        assert proc.process_group(info["armed"]) == info["armed"]  # out of the owner's group
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    wait_until(fired.exists, 20, "the watchdog's action")
    wait_until(lambda: not proc.is_alive(info["armed"]), 10, "the watchdog to exit")
    assert not released.exists()


def test_owner_markers_are_inherited_and_swept(tmp_path):
    owner = f"test:{tmp_path}"
    # an explicit env gets the marker too, and the child's own children inherit it
    top = proc.spawn(
        ["sh", "-c", "sleep 300 & wait"], die_with_parent=False, owner=owner, env={"PATH": os.defpath}
    )
    wait_until(lambda: len(proc.processes(owner=owner)) == 2, 10, "the shell and its sleep")
    assert proc.descendants([top.pid]) <= set(proc.processes(owner=owner))
    assert proc.stop_owned(owner, 5)
    wait_until(lambda: not proc.processes(owner=owner), 10, "the sweep")
    top.wait(5)
