"""Child processes of the executor that never outlive their job, nor the executor.

The ZFS target runs OpenSSH clients and a per-job ``ssh-agent`` as child processes. Each
one is started here and:

* leads a process group of its own (``process_group=0``), so a job stops everything it
  started with one ``killpg`` and a Ctrl-C on the executor's terminal does not hit it first;
* gets ``PR_SET_PDEATHSIG`` (SIGKILL by default) between fork and exec: when the executor
  dies - SIGKILL included - the kernel kills the child. The signal is tied to the *thread*
  that forked, so forks asked for from a thread other than the main one go through one
  long-lived daemon thread; a parent that died before the signal was armed is noticed
  (``getppid()`` changed) and the child exits before exec. The kernel clears the signal
  when the child execs a set-user-ID or set-group-ID program (Debian's ``ssh-agent`` is
  setgid): such a child needs another watch (see ``executor.targets.ssh.SshStack.start``).

The executor is installed on sites without devstack, so the rule lives here; devstack's
``devstack/proc.py`` (the harness) builds its own ``spawn`` on the same ``PRCTL`` and
``Forker``.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


# prctl(2), resolved once so that a forked child only makes the call (no symbol lookup, no
# import); None off Linux
PRCTL = _load_prctl()


def _preexec(sig: int, parent: int) -> Callable[[], None]:
    prctl = PRCTL

    def preexec() -> None:  # in the child between fork and exec: minimal
        if prctl is not None and prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the executor died before the signal was armed
            os._exit(1)

    return preexec


class Forker:
    """One daemon thread that forks for the other threads (PDEATHSIG follows the forking
    thread, and this one lives as long as the process); ``name`` names the thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run(self, fn: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        """``fn()`` (which starts the child) called in the forking thread; its result."""
        with self._lock:
            # after a fork() the thread does not exist in the child process: start another
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._q = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._loop, args=(self._q,), name=self._name, daemon=True
                )
                self._pid = os.getpid()
                self._thread.start()
            q = self._q
        fut: cf.Future = cf.Future()
        q.put((fn, fut))
        return fut.result()

    @staticmethod
    def _loop(q: queue.SimpleQueue) -> None:
        while True:
            fn, fut = q.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)


_FORKER = Forker("rackpilot-forker")


def spawn(argv: list[str], *, death_signal: int = signal.SIGKILL, **popen_kw: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, ...)`` in a process group of its own, killed with the executor."""
    if "preexec_fn" in popen_kw or "start_new_session" in popen_kw:
        raise ValueError("spawn sets the child's session and parent-death signal itself")
    popen_kw["preexec_fn"] = _preexec(int(death_signal), os.getpid())
    popen_kw.setdefault("process_group", 0)
    popen_kw.setdefault("close_fds", True)

    def start() -> subprocess.Popen:
        return subprocess.Popen(argv, **popen_kw)

    if threading.current_thread() is threading.main_thread():
        return start()
    return _FORKER.run(start)


def kill_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it leads it); quiet when it is gone."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> int | None:
    """SIGTERM to the child's group, SIGKILL after ``timeout`` seconds; reaps it; its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc, signal.SIGKILL)  # whatever the leader left in its group
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``pred`` until true or ``timeout`` seconds pass (for a socket to appear, say)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
