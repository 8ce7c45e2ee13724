"""The one way devstack starts child processes, and makes sure none outlives its owner.

Three mechanisms, each for what the others cannot cover:

**1. Parent-death signal** (``spawn(..., die_with_parent=True)``, the default). Between fork
and exec the child asks Linux for ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: when its parent
dies - Ctrl-C, an exception, ``kill -9`` alike - the kernel sends it SIGTERM. Used for the
children that must never outlive the process that started them: the gateway's Deno
functions router, the lab's vCenter simulator (Go) and sshd, the demo's executor. SIGTERM
rather than SIGKILL so that they shut down cleanly (each of them exits on SIGTERM). Caveats:

* the signal fires when the *thread* that forked the child exits, not the process. Calls
  from the main thread fork directly (it lives as long as the process); calls from any other
  thread are handed to one long-lived daemon thread (``_SPAWNER``, an ``executor.childproc.Forker``)
  that does the fork, so a short-lived worker thread ending does not kill the children it
  asked for;
* the parent may die between fork and ``prctl``: the child then sees a different parent
  (``getppid()``) right after setting the signal and exits before exec;
* the kernel clears the setting when the child executes a set-uid/set-gid binary or changes
  its effective or filesystem uid/gid (``runuser``, ``su``, ``sudo``), and it reaches only the
  direct child: a program that daemonizes (forks and lets the intermediate exit, as
  ``pg_ctl start`` does with the postmaster) escapes it. Those need (2).

**2. Watchdog** (``Watchdog``). A tiny process (``python -m devstack.proc watchdog``) that
holds the read end of a pipe whose only write end stays in its owner. When the owner dies
- however it dies, SIGKILL included - the kernel closes that write end, the watchdog's read
returns EOF and it runs its action (for the stack: ``pg_ctl stop -m fast`` through
``runuser`` and the gateway's process group, i.e. ``Stack._abort_start``). An owner that is
done writes ``release`` first and the watchdog exits without acting. It runs in its own
session (a Ctrl-C on the terminal's process group does not reach it) and ignores SIGINT
and SIGHUP. Caveat: a child the owner ``fork()``s *without* exec inherits the write end and
delays the EOF until it exits too (``subprocess`` closes it: the descriptor is not
inheritable and ``close_fds`` is on).

**3. Owner markers** (``owner=``, ``processes()``, ``stop_owned()``). Every process started
here carries ``RACKPILOT_PROC_OWNER=<owner>`` in its environment, and its own children
inherit it (``spawn`` copies it into an explicit ``env`` too). ``rackpilot dev down`` and
``lab down`` stop whatever carries their marker, found by a ``/proc`` scan: a functions
router left behind by a SIGKILLed gateway is found although the gateway's pid file names a
dead process, and a pid file naming a recycled pid never gets an unrelated process killed
(identity is the marker, not the number). A watchdog carries no marker, so a sweep it
triggers never stops the watchdog itself.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from executor.childproc import PR_SET_PDEATHSIG, PRCTL, Forker

OWNER_ENV = "RACKPILOT_PROC_OWNER"
ROOT = Path(__file__).resolve().parents[1]
RELEASE = b"release\n"
WATCHDOG_ACTION_TIMEOUT_S = 120.0  # how long a watchdog lets its action run (seconds)


def _pdeathsig_preexec(sig: int, parent: int) -> Callable[[], None]:
    assert PRCTL is not None
    prctl = PRCTL

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


# forks the children asked for from threads other than the main one (executor/childproc.py)
_SPAWNER = Forker("devstack-spawner")


def spawn(
    argv: list[str],
    *,
    die_with_parent: bool = True,
    death_signal: int = signal.SIGTERM,
    owner: str | None = None,
    new_session: bool = True,
    env: dict[str, str] | None = None,
    **popen_kw: Any,
) -> subprocess.Popen:
    """``subprocess.Popen(argv, ...)`` the devstack way.

    * ``die_with_parent``: the child gets ``death_signal`` when this process dies (see the
      module's notes). Off for daemons that must outlive a short-lived starter (the gateway
      started by ``rackpilot dev up``, the lab started by ``rackpilot lab up``).
    * ``owner``: the marker the child (and its children) carry; ``None`` keeps the one this
      process carries, ``""`` drops it.
    * ``new_session``: the child leads a session and process group of its own, so a Ctrl-C
      on the terminal does not hit it before its owner has had a chance to stop it in order.
    """
    if env is None and (owner is not None or OWNER_ENV in os.environ):
        env = dict(os.environ)
    if env is not None:
        env = dict(env)
        marker = owner if owner is not None else os.environ.get(OWNER_ENV, "")
        if marker:
            env[OWNER_ENV] = marker
        else:
            env.pop(OWNER_ENV, None)
    if die_with_parent and PRCTL is not None:
        if "preexec_fn" in popen_kw:
            raise ValueError("spawn sets preexec_fn itself")
        popen_kw["preexec_fn"] = _pdeathsig_preexec(int(death_signal), os.getpid())

    def start() -> subprocess.Popen:
        return subprocess.Popen(argv, env=env, start_new_session=new_session, **popen_kw)

    if die_with_parent and threading.current_thread() is not threading.main_thread():
        return _SPAWNER.run(start)
    return start()


# --- finding and stopping processes ------------------------------------------------------------
def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:  # gone, or not ours to read
        return None


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a dead child nobody reaped yet)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which the process started: with the pid, its identity."""
    st = _stat(pid)
    return int(st[19]) if st else None


def process_group(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[2]) if st else None


def environ(pid: int) -> dict[str, str]:
    raw = _read(f"/proc/{pid}/environ")
    out: dict[str, str] = {}
    for item in (raw or b"").split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [a.decode(errors="replace") for a in (raw or b"").split(b"\0") if a]


def owned_by(pid: int, owner: str) -> bool:
    return environ(pid).get(OWNER_ENV) == owner


def _pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def processes(owner: str | None = None, needle: str | None = None) -> list[int]:
    """Live processes (not this one) carrying ``owner``'s marker, or whose command line or
    environment contains ``needle``."""
    me = os.getpid()
    found = []
    for pid in _pids():
        if pid == me or not is_alive(pid):
            continue
        if owner is not None and owned_by(pid, owner):
            found.append(pid)
        elif needle is not None:
            blob = (_read(f"/proc/{pid}/cmdline") or b"") + b"\0" + (_read(f"/proc/{pid}/environ") or b"")
            if needle.encode() in blob:
                found.append(pid)
    return found


def descendants(roots: Iterable[int]) -> set[int]:
    """Every live process below ``roots`` (by parent pid), roots excluded."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[0] not in ("Z", "X"):
            children.setdefault(int(st[1]), []).append(pid)
    out: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive (reaping our own children); the ones still alive."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        for pid in left:
            _reap(pid)
        left = [pid for pid in left if is_alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def terminate(pids: Iterable[int], timeout: float = 10.0, sig: int = signal.SIGTERM) -> list[int]:
    """``sig`` to each, SIGKILL to those still alive after ``timeout``; returns the pids signalled."""
    pids = [p for p in pids if is_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)  # a stopped process would only act on it when continued
        except ProcessLookupError:
            pass
    for pid in wait_gone(pids, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(pids, 5.0)
    return pids


def group_members(pgid: int) -> list[int]:
    return [pid for pid in _pids() if (st := _stat(pid)) and st[0] not in ("Z", "X") and int(st[2]) == pgid]


def stop_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGTERM to a process group, SIGKILL to what is left of it after ``timeout``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_members(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone(group_members(pgid), 5.0)
    _reap(pgid)


def stop_owned(owner: str, timeout: float = 10.0) -> list[int]:
    """Stop every process carrying ``owner``'s marker; returns their pids."""
    return terminate(processes(owner=owner), timeout)


# --- the watchdog --------------------------------------------------------------------------------
class Watchdog:
    """Runs ``action`` (an argv) when the process that created this object dies before
    calling ``release()``. See the module's notes (2)."""

    def __init__(
        self,
        action: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        timeout: float = WATCHDOG_ACTION_TIMEOUT_S,
    ):
        r, w = os.pipe()  # both ends non-inheritable: only the watchdog gets the read end
        out: Any = subprocess.DEVNULL
        try:
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                out = open(log, "ab")  # noqa: SIM115 - handed to the child
            self.proc = spawn(
                [
                    sys.executable,
                    "-m",
                    "devstack.proc",
                    "watchdog",
                    "--fd",
                    str(r),
                    "--timeout",
                    str(timeout),
                    "--",
                    *action,
                ],
                die_with_parent=False,
                owner="",
                env=dict(env if env is not None else os.environ),
                pass_fds=(r,),
                cwd=cwd or ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
            if out is not subprocess.DEVNULL:
                out.close()
        self._w: int | None = w

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def armed(self) -> bool:
        return self._w is not None

    def release(self, timeout: float = 10.0) -> None:
        """The owner has stopped what it owns: the watchdog exits without acting."""
        if self._w is None:
            return
        try:
            os.write(self._w, RELEASE)
        except OSError:
            pass
        self._close_and_wait(timeout)

    def fire(self, timeout: float | None = None) -> None:
        """Act now, as if the owner had died; wait up to ``timeout`` for the action."""
        if self._w is not None:
            self._close_and_wait(timeout)

    def _close_and_wait(self, timeout: float | None) -> None:
        w, self._w = self._w, None
        if w is not None:
            os.close(w)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def _watchdog_main(fd: int, timeout: float, action: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    os.close(fd)
    if RELEASE in data:
        return 0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} watchdog {os.getpid()}: owner gone, running {action!r}", flush=True)
    try:
        res = subprocess.run(action, stdin=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"watchdog {os.getpid()}: {exc}", flush=True)
        return 1
    print(f"watchdog {os.getpid()}: action exited {res.returncode}", flush=True)
    return res.returncode


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m devstack.proc")
    sub = ap.add_subparsers(dest="cmd", required=True)
    wd = sub.add_parser("watchdog", help="run ACTION when the pipe on --fd reaches EOF without 'release'")
    wd.add_argument("--fd", type=int, required=True)
    wd.add_argument("--timeout", type=float, default=WATCHDOG_ACTION_TIMEOUT_S)
    wd.add_argument("action", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    action = args.action[1:] if args.action[:1] == ["--"] else args.action
    if not action:
        ap.error("an action is required after --")
    return _watchdog_main(args.fd, args.timeout, action)


if __name__ == "__main__":
    sys.exit(main())
