"""OpenSSH's own client as the executor's SSH stack for storage hosts (as zrepl, bzfs and
syncoid use it).

Why OpenSSH processes and not an SSH library: measured here, 1 GiB from one SSH host to
another, a relay through asyncssh reached 0.92 of raw two-hop OpenSSH at the median and
spent a whole core of the executor (it decrypts and re-encrypts in one Python thread); two
OpenSSH clients joined by ``os.splice`` through 1 MiB pipes reached 1.10 at 21 MB RSS and
0.4 s of executor CPU per GiB (``bench/replication.py`` measures it again).

One :class:`SshStack` per job:

* a private folder (0700) under the executor's state folder holding the job's
  ``known_hosts`` and the agent's socket; removed when the job's stack closes;
* host keys come pinned from the sealed credential and are written to that private
  ``known_hosts``; every client runs with ``StrictHostKeyChecking=yes`` and
  ``BatchMode=yes`` and no other known-hosts file, so an unknown or changed key is
  refused (:class:`HostKeyMismatch`) and nothing is ever added automatically;
* the private key never touches disk in plaintext: a per-job ``ssh-agent`` is fed the key
  through ``ssh-add -`` (standard input), with a lifetime, and is stopped with the job;
  each client is pointed at exactly that agent and at the key's *public* half
  (``IdentitiesOnly``), with ``-F /dev/null`` and a private ``HOME`` so no user or system
  configuration applies;
* every child (agent and clients) leads its own process group and dies with the executor
  (:mod:`executor.childproc`); a cancelled or failed job kills its groups.

:meth:`SshStack.relay` joins ``ssh src <send>`` to ``ssh dst <recv>``: the source's
stdout and the destination's stdin are two pipes enlarged to 1 MiB (``F_SETPIPE_SZ``),
and one thread moves pages from one to the other with ``os.splice`` - the stream never
sits in the executor's memory - counting exact bytes for progress and pacing to a
bandwidth limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import childproc
from .errors import AuthenticationFailed, TargetError, TargetUnreachable

log = logging.getLogger("rackpilot.targets.ssh")

SSH = "ssh"
SSH_AGENT = "ssh-agent"
SSH_ADD = "ssh-add"
# Fastest here by far (AES-NI); the others stay as fallbacks a host may insist on.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
PIPE_SIZE = 1 << 20  # bytes per relay pipe (F_SETPIPE_SZ; the default pipe-max-size)
SPLICE_CHUNK = 1 << 20  # bytes asked of one splice(2) call
PACED_CHUNK_MIN = 1 << 14  # bytes: the smallest splice under a bandwidth limit
SEALED_TRUST = "sealed"  # binding trust word: the host keys come pinned inside the envelope

# The agent's keeper (see SshStack.start): standard input is the read end of a pipe only
# the executor writes to; EOF there (the executor ended, or closed the stack) stops the
# agent's group. It moves to fd 3 (dash takes single-digit fds only), the agent gets
# /dev/null and replaces the shell (exec), so the child's pid and poll() are the agent's.
_AGENT_WATCH = 'exec 3<&0 </dev/null; (read -r _ <&3; kill -TERM 0) & exec "$@" 3<&-'

_HOST_KEY = re.compile(r"^(?:(\S+)\s+)?((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+([A-Za-z0-9+/=]+)(?:\s.*)?$")


class SshError(TargetError):
    """Root of the SSH transport's failures."""


class HostKeyMismatch(SshError):
    """The host presented a key that is not the one pinned for it (or none is pinned)."""

    hint = (
        "the host's key is not the one sealed in its credential: if the host was reinstalled, an admin "
        "reseals the credential with the new key; otherwise something else answers at that address"
    )


class SshAuthFailed(SshError, AuthenticationFailed):
    """The host refused the key."""


class SshUnreachable(SshError, TargetUnreachable):
    """No SSH connection: refused, timed out, name not resolved, connection lost."""


class RemoteCommandFailed(SshError):
    """The remote command ran and exited non-zero; ``stderr`` has its words."""

    def __init__(self, message: str, *, exit_status: int, stderr: str = "", **kw):
        self.exit_status = exit_status
        self.stderr = stderr
        super().__init__(message, **kw)


class StreamBroken(SshError):
    """The stream stopped mid-way (a side died, the connection broke)."""

    hint = "the receive keeps what arrived when it was started resumable; the next run resumes from its token"


class SshSetupError(SshError):
    """The job's SSH stack could not be set up (agent, key, pinned host keys)."""


# --- endpoints ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SshEndpoint:
    """One host as the clients reach it, with the keys pinned for it."""

    host: str
    port: int
    user: str
    host_keys: tuple[str, ...]  # "type base64" pairs
    name: str = ""
    identity: str = ""  # public key file of the agent key to offer (set by SshStack.add_key)

    @property
    def display(self) -> str:
        return self.name or f"{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_host_keys(text: str, host: str, port: int) -> tuple[str, ...]:
    """The pinned keys for ``host:port`` from the sealed ``host_keys`` field: lines of
    ``type base64`` (for the one host the credential names) or known_hosts lines
    (``host[,host] type base64`` / ``[host]:port type base64``). Markers, hashed names and
    wildcards are refused: a pin names its host plainly."""
    want = {f"[{host}]:{port}"} | ({host} if port == 22 else set())
    keys: list[str] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _HOST_KEY.match(line)
        if not m:
            raise SshSetupError(f"cannot read the pinned host key line {line[:40]!r}...", hint="")
        names, ktype, b64 = m.groups()
        if names is not None:
            if names.startswith(("@", "|")) or any(c in names for c in "*?!"):
                raise SshSetupError(
                    "pinned host keys must name their host plainly (no markers, hashes or wildcards)", hint=""
                )
            if not want & set(names.split(",")):
                continue
        keys.append(f"{ktype} {b64}")
    return tuple(dict.fromkeys(keys))


@dataclass
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


@dataclass
class RelayResult:
    bytes: int
    seconds: float
    src_status: int | None
    dst_status: int | None
    src_stderr: str
    dst_stderr: str
    broken: bool = False  # a side stopped before the other (EPIPE, or killed)

    @property
    def ok(self) -> bool:
        return self.src_status == 0 and self.dst_status == 0 and not self.broken


ProgressFn = Callable[[int, float], Awaitable[None]]  # (bytes so far, bytes/s) -> None


# --- the per-job stack ------------------------------------------------------------------------------
@dataclass
class SshStack:
    """The job's OpenSSH set-up: private folder, pinned known_hosts, ssh-agent. Use as an
    async context manager, or call :meth:`start` and :meth:`close`."""

    state_dir: Path
    connect_timeout: float = 15.0  # s: TCP connect + SSH handshake
    alive_interval: float = 15.0  # s between keep-alives; 4 unanswered ones end the connection
    key_lifetime: int = 43200  # s the agent keeps a key (the job's own timeout bounds it anyway)
    ciphers: str = CIPHERS
    dir: Path | None = None
    _agent: subprocess.Popen | None = field(default=None, repr=False)
    _children: set[subprocess.Popen] = field(default_factory=set, repr=False)
    _keys: dict[str, str] = field(default_factory=dict, repr=False)  # public key line -> pub file
    _masters: dict[tuple[str, int, str], tuple[subprocess.Popen, str]] = field(
        default_factory=dict, repr=False
    )
    _agent_watch: int = field(default=-1, repr=False)  # write end of the agent's watch pipe

    async def __aenter__(self) -> SshStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def sock(self) -> Path:
        assert self.dir is not None
        return self.dir / "agent.sock"

    @property
    def known_hosts(self) -> Path:
        assert self.dir is not None
        return self.dir / "known_hosts"

    async def start(self) -> None:
        for prog in (SSH, SSH_AGENT, SSH_ADD):
            if shutil.which(prog) is None:
                raise SshSetupError(f"{prog} is not installed (Debian package openssh-client)", hint="")
        base = Path(self.state_dir) / "ssh"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(sweep_stale_job_folders, base)
        # short names: a unix socket path must stay under 108 bytes. The executor's pid in
        # the name: one executor per state folder (its lock), so another pid's is stale
        self.dir = Path(tempfile.mkdtemp(prefix=f"j{os.getpid()}_", dir=base))
        os.chmod(self.dir, 0o700)
        self.known_hosts.write_text("")
        os.chmod(self.known_hosts, 0o600)
        # ssh-agent is setgid on Debian (group _ssh): its exec clears the parent-death
        # signal, so the kernel would not stop it with the executor. A watch does instead:
        # the agent (in the foreground, -D, so it stays this child) shares its process group
        # with a subshell blocked reading a pipe whose only writer is the executor. When the
        # executor ends - SIGKILL included - the kernel closes that end, the read returns and
        # the subshell signals the group. Same when the stack closes the pipe (close()).
        watch_r, self._agent_watch = os.pipe()  # both close-on-exec: no other child holds them
        try:
            self._agent = childproc.spawn(
                ["/bin/sh", "-c", _AGENT_WATCH, "rackpilot-ssh-agent", SSH_AGENT, "-D", "-a", str(self.sock)],
                stdin=watch_r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self._env(),
            )
        finally:
            os.close(watch_r)
        agent = self._agent
        ok = await asyncio.to_thread(
            childproc.wait_until, lambda: self.sock.exists() or agent.poll() is not None, 10.0
        )
        if not ok or not self.sock.exists():
            self.close()
            raise SshSetupError("ssh-agent did not start", hint="")

    def _env(self) -> dict[str, str]:
        assert self.dir is not None
        # nothing of the executor's environment: no SSH_AUTH_SOCK, no HOME with ~/.ssh
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir), "LC_ALL": "C"}

    async def add_key(self, private_key: str) -> str:
        """Load ``private_key`` (OpenSSH/PEM text) into the job's agent through standard input
        and return the file of its public half, for :class:`SshEndpoint.identity`."""
        if self._agent is None:
            raise SshSetupError("the SSH stack is not started", hint="")
        env = dict(self._env(), SSH_AUTH_SOCK=str(self.sock))
        data = private_key if private_key.endswith("\n") else private_key + "\n"

        def add() -> tuple[int, str]:
            p = childproc.spawn(
                [SSH_ADD, "-q", "-t", str(self.key_lifetime), "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            out, err = p.communicate(data.encode(), timeout=30)
            return p.returncode, err.decode(errors="replace")

        rc, err = await asyncio.to_thread(add)
        if rc != 0:
            raise SshSetupError(f"the agent refused the private key: {err.strip()[:200]}", hint="")

        def list_keys() -> str:
            # through childproc like every child of the job: it dies with the executor
            p = childproc.spawn(
                [SSH_ADD, "-L"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            try:
                out, _ = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                childproc.stop(p, 1.0)
                raise SshSetupError("the agent did not list its keys within 30 s", hint="") from None
            return out.decode(errors="replace")

        listed = await asyncio.to_thread(list_keys)
        for line in listed.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            pub = f"{parts[0]} {parts[1]}"
            if pub not in self._keys:
                assert self.dir is not None
                path = self.dir / f"id{len(self._keys)}.pub"
                path.write_text(pub + "\n")
                self._keys[pub] = str(path)
        if not self._keys:
            raise SshSetupError("the agent holds no key after ssh-add", hint="")
        return list(self._keys.values())[-1]

    def pin(self, ep: SshEndpoint) -> None:
        """Write the keys pinned for ``ep`` into the job's known_hosts (and only those)."""
        if not ep.host_keys:
            raise HostKeyMismatch(
                "no host key is pinned for this host; it is not connected to", target=ep.display
            )
        with self.known_hosts.open("a") as fh:
            for key in ep.host_keys:
                fh.write(f"{ep.known_hosts_name} {key}\n")

    def _options(self, ep: SshEndpoint, control: str) -> list[str]:
        if self.dir is None:
            raise SshSetupError("the SSH stack is not started", hint="")
        if not ep.identity:
            raise SshSetupError(f"no key was loaded for {ep.display}", hint="")
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "UpdateHostKeys": "no",
            "CheckHostIP": "no",
            "VerifyHostKeyDNS": "no",
            "HashKnownHosts": "no",
            "IdentityAgent": str(self.sock),
            "IdentityFile": ep.identity,
            "IdentitiesOnly": "yes",
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "Ciphers": self.ciphers,
            "Compression": "no",
            "ConnectTimeout": str(int(self.connect_timeout)),
            "ServerAliveInterval": str(int(self.alive_interval)),
            "ServerAliveCountMax": "4",
            "ControlMaster": "yes" if control == "master" else "no",
            "ControlPath": self._masters[self._key(ep)][1]
            if control == "use"
            else (control if control not in ("master", "none") else "none"),
            "ControlPersist": "no",
            "ForwardAgent": "no",
            "ForwardX11": "no",
            "ClearAllForwardings": "yes",
            "RequestTTY": "no",
            "PermitLocalCommand": "no",
            "LogLevel": "ERROR",
        }
        cmd = []
        for k, v in opts.items():
            cmd += ["-o", f"{k}={v}"]
        return [*cmd, "-p", str(ep.port), "-l", ep.user]

    @staticmethod
    def _key(ep: SshEndpoint) -> tuple[str, int, str]:
        return (ep.host, ep.port, ep.user)

    def argv(self, ep: SshEndpoint, remote: list[str], *, stdin: bool = False) -> list[str]:
        """The ssh command line running ``remote`` (an argv, quoted here for the remote shell).
        It goes through the job's connection to the host when one is up (:meth:`connect`)."""
        cmd = [SSH, "-F", "/dev/null", "-T", "-x", "-a", "-e", "none"]
        if not stdin:
            cmd.append("-n")
        master = self._masters.get(self._key(ep))
        control = "use" if master is not None and master[0].poll() is None else "none"
        # every argument quoted for the remote shell: nothing reaches it unquoted
        return [*cmd, *self._options(ep, control), "--", ep.host, shlex.join(remote)]

    async def connect(self, ep: SshEndpoint) -> None:
        """One connection per host for the job (a master the job's commands share): one
        handshake instead of one per command. The master is a child like the others (its
        own group, dies with the executor); if it cannot connect, commands connect on their
        own and report why."""
        key = self._key(ep)
        if key in self._masters and self._masters[key][0].poll() is None:
            return
        assert self.dir is not None
        path = str(self.dir / f"m{len(self._masters)}")
        argv = [
            SSH,
            "-F",
            "/dev/null",
            "-N",
            "-M",
            "-T",
            "-x",
            "-a",
            "-n",
            *self._options(ep, path),
            "--",
            ep.host,
        ]
        argv[argv.index("ControlMaster=no")] = "ControlMaster=yes"
        p = childproc.spawn(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
        )
        self._masters[key] = (p, path)
        await asyncio.to_thread(
            childproc.wait_until,
            lambda: os.path.exists(path) or p.poll() is not None,
            self.connect_timeout + 5,
        )

    def _spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        p = childproc.spawn(argv, env=self._env(), **kw)
        self._children.add(p)
        return p

    def kill_children(self) -> None:
        for p in list(self._children):
            childproc.kill_group(p)
        for p in list(self._children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
            self._children.discard(p)

    async def run(
        self, ep: SshEndpoint, remote: list[str], *, timeout: float = 300.0, operation: str = ""
    ) -> CommandResult:
        """Run ``remote`` on ``ep``; classify transport failures (exit 255) and return the rest."""
        await self.connect(ep)
        argv = self.argv(ep, remote)

        def go() -> CommandResult:
            p = self._spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                childproc.kill_group(p)
                p.communicate()
                raise SshUnreachable(
                    f"'{shlex.join(remote)[:120]}' did not finish in {timeout:g}s",
                    target=ep.display,
                    operation=operation,
                ) from None
            finally:
                self._children.discard(p)
            return CommandResult(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

        res = await asyncio.to_thread(go)
        if res.exit_status == 255:
            raise classify_transport(res.stderr, ep, operation)
        return res

    async def relay(
        self,
        src: SshEndpoint,
        src_cmd: list[str],
        dst: SshEndpoint,
        dst_cmd: list[str],
        *,
        bwlimit: float | None = None,
        on_progress: ProgressFn | None = None,
        progress_interval: float = 1.0,
        check: Callable[[], None] | None = None,
    ) -> RelayResult:
        """Stream ``src_cmd``'s stdout on ``src`` into ``dst_cmd``'s stdin on ``dst``.

        ``bwlimit``: bytes per second (None: unlimited). ``on_progress`` is awaited every
        ``progress_interval`` seconds with the bytes moved and the rate. ``check`` is called
        as often and may raise (a cancel request): both sides are killed and it propagates.
        Never raises for the remote commands' failures: the caller reads the result.
        """
        assert self.dir is not None
        await self.connect(src)
        await self.connect(dst)
        src_err_path, dst_err_path = (
            self.dir / f"e{secrets.token_hex(4)}",
            self.dir / f"e{secrets.token_hex(4)}",
        )
        a_r, a_w = os.pipe()  # src stdout -> executor
        b_r, b_w = os.pipe()  # executor -> dst stdin
        for fd in (a_w, b_w):
            with contextlib.suppress(OSError):  # above pipe-max-size for this user: keep the default
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        src_p = dst_p = None
        pump_thread: threading.Thread | None = None
        pump_fds = _FdHandover()
        counter = [0]
        stop = threading.Event()
        broken = [False]
        t0 = time.monotonic()
        try:
            dst_argv, src_argv = self.argv(dst, dst_cmd, stdin=True), self.argv(src, src_cmd)  # ssh ... (SSH)
            with open(src_err_path, "wb") as se, open(dst_err_path, "wb") as de:
                dst_p = self._spawn(dst_argv, stdin=b_r, stdout=subprocess.DEVNULL, stderr=de)
                src_p = self._spawn(src_argv, stdin=subprocess.DEVNULL, stdout=a_w, stderr=se)
            os.close(a_w)
            os.close(b_r)
            a_w = b_r = -1

            r_fd, w_fd = a_r, b_w
            fut, pump_thread = _in_daemon_thread(
                lambda: _pump(r_fd, w_fd, bwlimit, stop, counter, broken), pump_fds
            )
            await _watch(fut, counter, progress_interval, check, on_progress, stop, (src_p, dst_p))
            # the source ended (or the destination went): close our end so the destination
            # sees EOF, then wait for both
            os.close(b_w)
            b_w = -1
            src_rc, dst_rc = await _wait_both(src_p, dst_p, a_r, broken)
            if src_rc != 0 and dst_rc == 0:
                broken[0] = True  # the receive took a short stream for a whole one: never trust it
        except BaseException:
            stop.set()
            childproc.kill_group(src_p)
            childproc.kill_group(dst_p)
            if pump_thread is not None:
                # the clients are gone, so the pump's splice ends soon (EOF or EPIPE); wait a
                # little, never for ever: the thread is a daemon and must not hold the job
                await asyncio.to_thread(pump_thread.join, 2.0)
            raise
        finally:
            # a pump still inside splice() keeps its two fds and closes them when it returns
            # (closing them under it could hand their numbers to another open)
            if pump_thread is not None and not pump_fds.hand_over(a_r, b_w):
                a_r = b_w = -1
            _close_fds(a_r, a_w, b_r, b_w)
            self._reap(src_p, dst_p)
            src_err = _read_tail(src_err_path)
            dst_err = _read_tail(dst_err_path)
        return RelayResult(counter[0], time.monotonic() - t0, src_rc, dst_rc, src_err, dst_err, broken[0])

    def _reap(self, *procs: subprocess.Popen[bytes] | None) -> None:
        """Wait a little for each process to exit, and forget it."""
        for p in procs:
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)
                self._children.discard(p)

    def close(self) -> None:
        """Kill every child of this stack, stop the agent and remove the private folder."""
        self.kill_children()
        for p, _ in self._masters.values():
            childproc.stop(p, timeout=2.0)
        self._masters.clear()
        childproc.stop(self._agent, timeout=2.0)
        self._agent = None
        if self._agent_watch >= 0:
            with contextlib.suppress(OSError):
                os.close(self._agent_watch)
            self._agent_watch = -1
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self._keys.clear()


STALE_SETUP_S = 120.0  # s: a job folder without an agent socket this old is not being set up


_JOB_DIR = re.compile(r"^j(\d+)_")


def sweep_stale_job_folders(base: Path) -> list[Path]:
    """Remove the private folders of jobs whose executor died without closing them (SIGKILL,
    power loss). A folder whose agent answers is a running job's and stays. Otherwise it is
    stale when another process made it (its pid in the name: the state folder's lock allows
    one executor at a time), when its agent's socket refuses, or when it has had no socket
    for STALE_SETUP_S (a job of this process setting up is younger). They hold known_hosts
    and public keys only; the removed ones are returned."""
    removed = []
    for d in base.iterdir() if base.is_dir() else []:
        m = _JOB_DIR.match(d.name)
        if not d.is_dir() or d.is_symlink() or not d.name.startswith("j"):
            continue
        sock = d / "agent.sock"
        try:
            if sock.exists():
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2.0)
                    try:
                        s.connect(str(sock))
                        continue  # an agent answers: a running job's folder
                    except OSError:
                        pass
            elif (
                m is None or int(m.group(1)) == os.getpid()
            ) and time.time() - d.stat().st_mtime < STALE_SETUP_S:
                continue
        except OSError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    if removed:
        log.info("removed the SSH folders of %d job(s) an earlier executor left", len(removed))
    return removed


def _pump(
    a_r: int, b_w: int, bwlimit: float | None, stop: threading.Event, counter: list[int], broken: list[bool]
) -> None:
    """Splice the source's stdout (``a_r``) into the destination's stdin (``b_w``) until the
    source ends, the destination stops reading (``broken``) or ``stop``; ``counter`` counts
    the bytes moved, paced to ``bwlimit`` bytes per second."""
    limit = float(bwlimit) if bwlimit else 0.0
    # paced: at most ~0.1 s worth per call, so the limit holds over every second
    # rather than in bursts of a whole pipe
    chunk = min(SPLICE_CHUNK, max(PACED_CHUNK_MIN, int(limit / 10))) if limit else SPLICE_CHUNK
    start = time.monotonic()
    while not stop.is_set():
        try:
            n = os.splice(a_r, b_w, chunk, flags=getattr(os, "SPLICE_F_MOVE", 1))
        except BrokenPipeError:
            broken[0] = True  # the destination stopped reading
            return
        if n == 0:
            return  # the source finished (or died)
        counter[0] += n
        if limit:
            ahead = counter[0] / limit - (time.monotonic() - start)
            if ahead > 0:
                stop.wait(ahead)


async def _watch(
    fut: asyncio.Future[Any],
    counter: list[int],
    interval: float,
    check: Callable[[], None] | None,
    on_progress: ProgressFn | None,
    stop: threading.Event,
    procs: tuple[subprocess.Popen[bytes] | None, ...],
) -> None:
    """Until the pump ends: every ``interval`` seconds ``check`` (a raise stops the pump,
    kills ``procs`` and propagates) and ``on_progress`` with the bytes moved and the rate."""
    last = (time.monotonic(), 0)
    while True:
        done, _ = await asyncio.wait({fut}, timeout=interval)
        if done:
            fut.result()
            return
        if check is not None:
            try:
                check()
            except BaseException:
                stop.set()
                for p in procs:
                    childproc.kill_group(p)
                raise
        now, moved = time.monotonic(), counter[0]
        rate = (moved - last[1]) / max(now - last[0], 1e-6)
        last = (now, moved)
        if on_progress is not None:
            await on_progress(moved, rate)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _wait_both(
    src_p: subprocess.Popen[bytes], dst_p: subprocess.Popen[bytes], a_r: int, broken: list[bool]
) -> tuple[int, int]:
    """Both sides' exit codes once the pump ended and the destination's stdin is closed."""
    if broken[0]:
        # EPIPE comes as soon as the destination has gone, even with nothing left to
        # move: a receive that exited 0 took a whole stream, and the source must have
        # nothing more to say (what it still writes is drained and counted)
        dst_rc = await asyncio.to_thread(dst_p.wait)
        if dst_rc == 0:
            broken[0] = await asyncio.to_thread(_drain, a_r) > 0
        else:
            childproc.kill_group(src_p)
        src_rc = await asyncio.to_thread(src_p.wait)
    else:
        src_rc = await asyncio.to_thread(src_p.wait)
        dst_rc = await asyncio.to_thread(dst_p.wait)
    return src_rc, dst_rc


class _FdHandover:
    """The relay's two pump fds: closed by the relay once the pump thread has ended, or by
    the pump thread itself when the relay gives up waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pump_done = False
        self._fds: tuple[int, ...] = ()

    def hand_over(self, *fds: int) -> bool:
        """True when the pump has ended and the caller closes ``fds``; False when the pump
        thread, still running, now owns them."""
        with self._lock:
            if self._pump_done:
                return True
            self._fds = fds
            return False

    def pump_done(self) -> None:
        with self._lock:
            self._pump_done = True
            fds, self._fds = self._fds, ()
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _in_daemon_thread(fn: Callable[[], None], fds: _FdHandover) -> tuple[asyncio.Future, threading.Thread]:
    """Run ``fn`` in a daemon thread of its own (not the loop's pool, whose threads the
    interpreter joins at exit: a splice stuck on a peer that never answers would hold a
    cancelled executor's exit); the future completes on the running loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)

    def main() -> None:
        err: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting relay
            err = exc
        finally:
            fds.pump_done()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits it
            loop.call_soon_threadsafe(settle, err)

    t = threading.Thread(target=main, name="rackpilot-relay", daemon=True)
    t.start()
    return fut, t


def _drain(fd: int) -> int:
    """Read ``fd`` to its end; the number of bytes that were left."""
    n = 0
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return n
        n += len(b)


def _read_tail(path: Path, limit: int = 8192) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def classify_transport(stderr: str, ep: SshEndpoint, operation: str = "") -> SshError:
    """The transport error an ssh exit status 255 means, from its stderr."""
    text = stderr.strip()
    low = text.lower()
    short = text.splitlines()[-1][:300] if text else "ssh failed without a message"
    if (
        "host key verification failed" in low
        or "remote host identification has changed" in low
        or "no matching host key" in low
        or "host key for" in low
        and "not known" in low
    ):
        return HostKeyMismatch(
            f"host key verification failed: {short}", target=ep.display, operation=operation
        )
    if "permission denied" in low or "too many authentication failures" in low:
        return SshAuthFailed(f"the host refused the key: {short}", target=ep.display, operation=operation)
    return SshUnreachable(f"SSH failed: {short}", target=ep.display, operation=operation)


__all__ = [
    "SshStack",
    "SshEndpoint",
    "SshError",
    "HostKeyMismatch",
    "SshAuthFailed",
    "SshUnreachable",
    "RemoteCommandFailed",
    "StreamBroken",
    "SshSetupError",
    "RelayResult",
    "CommandResult",
    "parse_host_keys",
    "classify_transport",
    "SEALED_TRUST",
]
