"""The lab's ZFS storage hosts: a real OpenSSH `sshd` (Debian `openssh-server`) on loopback,
with its own host key and configuration, one port per simulated host, and on each host the
`zfs` stand-in (`zfs_standin.py`) keeping datasets and snapshots in that host's folder.

`Match LocalPort` forces every session on a host's port into the stand-in, which parses
the client's command line as a shell would and answers as zfs does. With `shell=True`
there is no forced command and sessions run the login shell (the benchmark's raw `cat`).

    with ZfsSshLab(["src", "dst"]) as lab:
        lab.zfs("src", "create", "-p", "tank/data")
        lab.write("src", "tank/data", "a.bin", b"...")
        lab.ports["src"], lab.client_key, lab.host_keys("src")   # what a credential seals
        lab.inject("dst", "nospace", times=1)                    # error injection
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .esxi_ssh import LoopbackSshd, SshdStartError, sshd_config

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
STANDIN = Path(__file__).with_name("zfs_standin.py")


@dataclass
class ZfsSshLab(LoopbackSshd):
    hosts: list[str]
    shell: bool = False  # no forced command: sessions run the login shell (benchmarks)
    workdir: Path | None = None  # where the lab's folder is made (default: the system's temporary folder)
    owner: str | None = None  # devstack.proc's owner marker for sshd and its sessions (None: this process's)
    ports: dict[str, int] = field(default_factory=dict)
    username: str = field(default_factory=getpass.getuser)
    client_key: Path | None = None
    host_key: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ZfsSshLab:
        if not os.path.exists(SSHD):
            raise SshdStartError("sshd is not installed (Debian package openssh-server)")
        if shutil.which(SSH_KEYGEN) is None:
            raise SshdStartError("ssh-keygen is not installed (Debian package openssh-client)")
        if self.workdir is not None:
            Path(self.workdir).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="rackpilot-zfs-ssh-", dir=self.workdir))
        os.chmod(self.workdir, 0o700)
        wd = self.workdir
        self.host_key, self.client_key = wd / "ssh_host_ed25519_key", wd / "client_key"
        for key in (self.host_key, self.client_key):
            subprocess.run(
                [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True
            )
        (wd / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        for name in self.hosts:
            (wd / "hosts" / name).mkdir(parents=True)

        def config_for(ports: dict[str, int]) -> list[str]:
            config = sshd_config(wd, self.host_key, ports, "MaxStartups 100:30:200", "MaxSessions 50")
            if not self.shell:
                for name, port in ports.items():
                    command = (
                        f"{shlex.quote(sys.executable)} -S {shlex.quote(str(STANDIN))} shim "
                        f"{shlex.quote(str(self.root(name)))}"
                    )
                    config += [f"Match LocalPort {port}", f"    ForceCommand {command}"]
            return config

        self._serve(wd, config_for, owner=self.owner)
        return self

    def __enter__(self) -> ZfsSshLab:
        return self.start()

    # --- what a credential seals ---------------------------------------------------------------
    def host_key_line(self) -> str:
        """``type base64`` of the hosts' key (one sshd serves every host)."""
        assert self.host_key is not None
        t, b64 = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{t} {b64}"

    def host_keys(self, *names: str) -> str:
        """known_hosts lines pinning the key of ``names`` (default: every host)."""
        return "".join(f"[127.0.0.1]:{self.ports[n]} {self.host_key_line()}\n" for n in (names or self.hosts))

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    # --- the hosts' state --------------------------------------------------------------------------
    def root(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / "hosts" / name

    def zfs(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the stand-in directly on ``host`` (set-up and inspection, no SSH)."""
        p = subprocess.run(
            [sys.executable, "-S", str(STANDIN), "run", str(self.root(host)), "zfs", *args],
            capture_output=True,
            text=True,
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"zfs {' '.join(args)} on {host}: {p.stderr.strip()}")
        return p

    def live(self, host: str, dataset: str) -> Path:
        return self.root(host) / "data" / urllib.parse.quote(dataset, safe="") / "live"

    def write(self, host: str, dataset: str, path: str, data: bytes) -> None:
        p = self.live(host, dataset) / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def read(self, host: str, dataset: str, path: str) -> bytes:
        return (self.live(host, dataset) / path).read_bytes()

    def state(self, host: str) -> dict[str, Any]:
        p = self.root(host) / "state.json"
        return json.loads(p.read_text()) if p.exists() else {"txg": 1, "datasets": {}, "partials": {}}

    def snapshots(self, host: str, dataset: str) -> list[str]:
        d = self.state(host)["datasets"].get(dataset)
        if d is None:
            return []
        return sorted(d["snapshots"], key=lambda k: d["snapshots"][k]["createtxg"])

    def inject(self, host: str, key: str, *, times: int | None = None, **entry: Any) -> None:
        """Make ``host``'s zfs fail as ``key`` says (see zfs_standin.INJECT); ``times`` uses."""
        p = self.root(host) / "inject.json"
        data = json.loads(p.read_text()) if p.exists() else {}
        if times is not None:
            entry["times"] = times
        data[key] = entry or {"always": True}
        p.write_text(json.dumps(data))

    def clear_injections(self, host: str) -> None:
        (self.root(host) / "inject.json").unlink(missing_ok=True)
