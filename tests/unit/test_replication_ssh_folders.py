"""A job's private SSH folder left behind by an executor that died (SIGKILL) is removed when
the next job's SSH stack starts; a running job's folder (its agent answers) and one being
set up (no socket yet, young) are left alone. The real ssh-agent runs (Debian
openssh-client)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

from executor.targets.ssh import STALE_SETUP_S, SshStack, sweep_stale_job_folders


def _dead_socket(path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: connect is refused, as for a killed agent


def test_stale_job_folders_go_and_live_or_young_ones_stay(tmp_path):
    base = tmp_path / "ssh"
    base.mkdir(mode=0o700)
    dead = base / "jdead"
    dead.mkdir()
    (dead / "known_hosts").write_text("[127.0.0.1]:22 ssh-ed25519 AAAA\n")
    _dead_socket(dead / "agent.sock")
    old = base / "jold"  # crashed before its agent made a socket
    old.mkdir()
    past = time.time() - STALE_SETUP_S - 10
    os.utime(old, (past, past))
    young = base / "jyoung"  # a job setting up right now
    young.mkdir()
    mine = base / f"j{os.getpid()}_abc"  # this process's job setting up
    mine.mkdir()
    gone = base / "j999999999_abc"  # made by an executor that has gone (its socket removed on TERM)
    gone.mkdir()
    live = base / "jlive"
    live.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(live / "agent.sock"))
    listener.listen(1)
    other = base / "not-a-job"
    other.mkdir()
    try:
        assert sorted(p.name for p in sweep_stale_job_folders(base)) == ["j999999999_abc", "jdead", "jold"]
        assert sorted(p.name for p in base.iterdir()) == [mine.name, "jlive", "jyoung", "not-a-job"]

        # the next job's stack sweeps on start, and leaves its own and the live one
        (base / "jdead2").mkdir()
        _dead_socket(base / "jdead2" / "agent.sock")

        async def start_and_close() -> list[str]:
            stack = SshStack(tmp_path)
            await stack.start()
            try:
                assert stack.dir is not None and stack.dir.exists()
                return sorted(p.name for p in base.iterdir() if p != stack.dir)
            finally:
                stack.close()

        assert asyncio.run(start_and_close()) == [mine.name, "jlive", "jyoung", "not-a-job"]
    finally:
        listener.close()
