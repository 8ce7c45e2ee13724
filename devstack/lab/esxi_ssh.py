"""Test SSH endpoint for simulated ESXi hosts.

A real OpenSSH `sshd` (Debian `openssh-server`) on loopback, with its own host key,
config and client key, listening on one port per simulated host. `Match LocalPort`
forces every session on a host's port into this file's `shim` command, which answers the
commands an ESXi upgrade uses, with a per-host JSON state file:

    esxcli system version get
    esxcli software profile get
    esxcli software profile update -d <depot> -p <profile>   (needs maintenance mode)
    esxcli system maintenanceMode get
    esxcli system maintenanceMode set -e true|false
    esxcli system shutdown reboot -r <reason>                (needs maintenance mode)
    reboot

An update stages the new image; the running version changes only after a reboot. While a
host reboots every session fails (exit 255), as a real host would refuse connections.
Linked to a `VcsimLab`, maintenance mode is the vCenter host's own flag and a reboot
takes the vCenter host "not responding" and brings it back with the new build, so the
vCenter side and the SSH side tell the same story.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
DEFAULT_PROFILE = {"profile": "ESXi-7.0U3n-21930508-standard", "version": "7.0.3", "build": "21930508"}


class EsxiLabError(Exception):
    """Root of the ESXi SSH lab's errors."""


class SshdStartError(EsxiLabError):
    """sshd is missing or did not start."""


# --------------------------------------------------------------------------------------
# Shim: runs inside the SSH session (stdlib only, so it starts fast).
# --------------------------------------------------------------------------------------
def _control(state: dict[str, Any], method: str, path: str, query: dict[str, str] | None = None) -> Any:
    # Imported here: only linked hosts need them, and every SSH session pays for imports.
    import ssl
    import urllib.parse
    import urllib.request

    link = state["vcsim"]
    url = f"{link['control_url']}/hosts/{urllib.parse.quote(state['name'])}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    ctx = ssl.create_default_context(cafile=link["ca_file"])
    with urllib.request.urlopen(urllib.request.Request(url, method=method), context=ctx, timeout=10) as r:
        return json.loads(r.read())


def _in_maintenance(state: dict[str, Any]) -> bool:
    if state.get("vcsim"):
        return bool(_control(state, "GET", "")["in_maintenance"])
    return bool(state["in_maintenance"])


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def _profile_block(name: str) -> str:
    return (
        f"{name}\n   Name: {name}\n   Vendor: VMware, Inc.\n   Creation Time: 2023-09-21T00:00:00\n"
        f"   Modification Time: 2023-09-21T00:00:00\n   Stateless Ready: True\n"
        f"   Description: {name.removeprefix('(Updated) ')} image profile\n"
    )


def _option(args: list[str], short: str, long: str) -> str | None:
    for i, a in enumerate(args):
        if a in (short, long) and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(long + "="):
            return a.split("=", 1)[1]
    return None


def _shim_command(state: dict[str, Any], argv: list[str]) -> tuple[int, str]:
    """Run one command against a host's state; return (exit code, output)."""
    if not argv:
        return 1, "This host only runs commands (no interactive shell).\n"
    if argv[0] == "reboot" or argv[:4] == ["esxcli", "system", "shutdown", "reboot"]:
        if argv[0] == "esxcli":
            if not _option(argv, "-r", "--reason"):
                return 1, "Error: Missing required parameter -r|--reason\n"
            if not _in_maintenance(state):
                return 1, "Maintenance mode is required for this operation.\n"
        pending = state.get("pending")
        state["rebooting_until"] = time.time() + state["reboot_seconds"]
        if state.get("vcsim"):
            q = {"seconds": str(state["reboot_seconds"])}
            if pending:
                q.update(version=pending["version"], build=pending["build"])
            _control(state, "POST", "/reboot", q)
        return 0, ""
    if argv[0] != "esxcli":
        return 127, f"sh: {argv[0]}: not found\n"
    cmd = argv[1:]
    if cmd[:3] == ["system", "version", "get"]:
        v = state["running"]
        update = v["version"].split(".")[2] if v["version"].count(".") >= 2 else "0"
        return 0, (
            f"   Product: VMware ESXi\n   Version: {v['version']}\n   Build: Releasebuild-{v['build']}\n"
            f"   Update: {update}\n   Patch: 0\n"
        )
    if cmd[:3] == ["software", "profile", "get"]:
        installed = state.get("pending") or state["running"]
        name = installed["profile"] if not state.get("pending") else f"(Updated) {installed['profile']}"
        return 0, _profile_block(name)
    if cmd[:3] == ["software", "profile", "update"]:
        depot = _option(cmd, "-d", "--depot")
        profile = _option(cmd, "-p", "--profile")
        if not depot or not profile:
            return 1, "Error: Missing required parameter -d|--depot and -p|--profile\n"
        profiles = state["depots"].get(depot)
        if profiles is None:
            return 1, (
                f"[MetadataDownloadError]\n Could not download from depot at {depot}, skipping "
                f"(('{depot}', '', 'HTTP Error 404: Not Found'))\n url = {depot}\n"
                " Please refer to the log file for more details.\n"
            )
        target = profiles.get(profile)
        if target is None:
            return 1, (
                f"[NoMatchError]\n No image profile found with name '{profile}'\n id = {profile}\n"
                " Please refer to the log file for more details.\n"
            )
        installed = state.get("pending") or state["running"]
        if installed["build"] == target["build"]:
            return 0, (
                "Update Result\n   Message: Host is not changed.\n   Reboot Required: false\n"
                "   VIBs Installed: \n   VIBs Removed: \n   VIBs Skipped: \n"
            )
        if _version_tuple(target["version"]) < _version_tuple(installed["version"]):
            return 1, (
                f"[ProfileVibRemoval]\n Profile {profile} is older than the installed image; "
                "a downgrade needs 'profile install'.\n Please refer to the log file for more details.\n"
            )
        if not _in_maintenance(state):
            return 1, (
                "[MaintenanceMode]\n MaintenanceMode is required to remove: "
                f"[VMware_bootbank_esx-base_{installed['version']}-{installed['build']}]; install: "
                f"[VMware_bootbank_esx-base_{target['version']}-{target['build']}].\n"
                " Please refer to the log file for more details.\n"
            )
        state["pending"] = {"profile": profile, "version": target["version"], "build": target["build"]}
        return 0, (
            "Update Result\n   Message: The update completed successfully, but the system needs to be "
            "rebooted for the changes to be effective.\n   Reboot Required: true\n"
            f"   VIBs Installed: VMware_bootbank_esx-base_{target['version']}-{target['build']}\n"
            f"   VIBs Removed: VMware_bootbank_esx-base_{installed['version']}-{installed['build']}\n"
            "   VIBs Skipped: \n"
        )
    if cmd[:3] == ["system", "maintenanceMode", "get"]:
        return 0, ("Enabled\n" if _in_maintenance(state) else "Disabled\n")
    if cmd[:3] == ["system", "maintenanceMode", "set"]:
        value = _option(cmd, "-e", "--enable")
        if value not in ("true", "false", "1", "0"):
            return 1, "Error: Missing required parameter -e|--enable (true|false)\n"
        enabled = value in ("true", "1")
        if state.get("vcsim"):
            _control(state, "POST", "/maintenance", {"enabled": "true" if enabled else "false"})
        else:
            state["in_maintenance"] = enabled
        return 0, ""
    return 1, f"Error: Unknown command or namespace {' '.join(cmd)}\n"


def shim(state_file: str) -> int:
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    try:
        argv = shlex.split(command)
    except ValueError:
        sys.stdout.write("sh: syntax error\n")
        return 2
    with open(state_file, "r+") as f:
        # One command at a time per host, as the state file is read-modify-write.
        fcntl.flock(f, fcntl.LOCK_EX)
        state = json.load(f)
        now = time.time()
        if state.get("rebooting_until", 0) > now:
            sys.stderr.write("Connection closed by remote host (host is rebooting)\n")
            return 255
        if state.get("rebooting_until") and state.get("pending"):
            # The boot after an update runs the staged image.
            state["running"] = state.pop("pending")
        state["rebooting_until"] = 0
        try:
            code, out = _shim_command(state, argv)
        except OSError as e:
            code, out = 1, f"Error: host agent unavailable ({e})\n"
        f.seek(0)
        f.truncate()
        json.dump(state, f)
    (sys.stdout if code == 0 else sys.stderr).write(out)
    return code


# --------------------------------------------------------------------------------------
# Launcher: runs in the test or dev process.
# --------------------------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def sshd_config(wd: Path, host_key: Path, ports: dict[str, int], *extra: str) -> list[str]:
    """The settings of a lab's sshd: loopback only, these ports, this host key, the lab's
    client key only, nothing forwarded; ``extra`` lines before the per-port Match blocks."""
    return [
        "ListenAddress 127.0.0.1",
        *[f"Port {p}" for p in ports.values()],
        f"HostKey {host_key}",
        f"PidFile {wd / 'sshd.pid'}",
        f"AuthorizedKeysFile {wd / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        "PrintMotd no",
        "LogLevel ERROR",
        *extra,
        # bash sources ~/.bashrc for commands run by sshd unless it is a nested
        # shell; the login user's rc file is none of the lab's business (and slow).
        "SetEnv SHLVL=1",
    ]


class LoopbackSshd:
    """One real sshd on loopback serving a lab's simulated hosts, a port each (the ESXi and
    the ZFS labs). A subclass holds ``hosts`` (their names, or a mapping keyed by them),
    ``ports``, ``workdir`` and ``_proc``."""

    def _serve(
        self, wd: Path, config_for: Callable[[dict[str, int]], list[str]], owner: str | None = None
    ) -> None:
        """Start sshd with ``config_for(ports)`` on free ports: a port taken between choosing
        it and sshd binding it fails the start, so up to three sets are tried."""
        # Imported here: the shim part of esxi_ssh.py runs with -S, devstack out of reach.
        from devstack.proc import spawn

        for attempt in range(3):
            self.ports = dict(zip(self.hosts, _free_ports(len(self.hosts)), strict=True))
            (wd / "sshd_config").write_text("\n".join(config_for(self.ports)) + "\n")
            if os.geteuid() == 0:
                # sshd running as root needs its privilege-separation directory.
                os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            # Dies with the process that started it (parent-death signal, even on SIGKILL);
            # -D: sshd does not daemonize, so the signal reaches the listener itself.
            self._proc = spawn(
                [SSHD, "-D", "-e", "-f", str(wd / "sshd_config")],
                owner=owner,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_listening():
                return
            err = self._stop_proc()
            if attempt == 2:
                self.stop()
                raise SshdStartError(f"sshd did not start: {err}")

    def _wait_listening(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                for p in self.ports.values():
                    socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def _stop_proc(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return err

    def stop(self) -> None:
        self._stop_proc()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class EsxiSshLab(LoopbackSshd):
    """sshd serving simulated ESXi hosts. `hosts` maps host names to their starting image
    ({profile, version, build}); `depots` maps depot URLs to {profile: {version, build}}."""

    hosts: dict[str, dict[str, str]]
    depots: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    reboot_seconds: float = 1.0
    vcsim: Any = None  # a started devstack.lab.vcenter.VcsimLab to keep in step with
    workdir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    username: str = field(default_factory=getpass.getuser)
    client_key: Path | None = None
    known_hosts: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EsxiSshLab:
        if not os.path.exists(SSHD):
            raise SshdStartError("sshd is not installed (Debian package openssh-server)")
        if shutil.which(SSH_KEYGEN) is None:
            raise SshdStartError("ssh-keygen is not installed (Debian package openssh-client)")
        if not self.hosts:
            raise ValueError("at least one host is needed")
        self.workdir = Path(tempfile.mkdtemp(prefix="rackpilot-esxi-ssh-"))
        os.chmod(self.workdir, 0o700)
        wd = self.workdir
        hostkey, self.client_key = wd / "ssh_host_ed25519_key", wd / "client_key"
        for key in (hostkey, self.client_key):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (wd / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        states = wd / "hosts"
        states.mkdir()

        def config_for(ports: dict[str, int]) -> list[str]:
            config = sshd_config(wd, hostkey, ports)
            for name, port in ports.items():
                state_file = states / f"{name}.json"
                if not state_file.exists():
                    image = dict(DEFAULT_PROFILE, **self.hosts[name])
                    state = {
                        "name": name,
                        "running": image,
                        "pending": None,
                        "in_maintenance": False,
                        "rebooting_until": 0,
                        "reboot_seconds": self.reboot_seconds,
                        "depots": self.depots,
                        "vcsim": None,
                    }
                    if self.vcsim is not None:
                        state["vcsim"] = {
                            "control_url": self.vcsim.control_url,
                            "ca_file": str(self.vcsim.ca_file),
                        }
                    state_file.write_text(json.dumps(state))
                # -S: the shim is stdlib-only, so skip site-packages set-up on every session.
                command = f"{shlex.quote(sys.executable)} -S {shlex.quote(__file__)} shim {shlex.quote(str(state_file))}"
                config += [f"Match LocalPort {port}", f"    ForceCommand {command}"]
            return config

        self._serve(wd, config_for)
        pub = hostkey.with_suffix(".pub").read_text().split()
        self.known_hosts = wd / "known_hosts"
        self.known_hosts.write_text(
            "".join(f"[127.0.0.1]:{p} {pub[0]} {pub[1]}\n" for p in self.ports.values())
        )
        return self

    def __enter__(self) -> EsxiSshLab:
        return self.start()

    def state(self, host: str) -> dict[str, Any]:
        assert self.workdir is not None
        return json.loads((self.workdir / "hosts" / f"{host}.json").read_text())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "shim":
        sys.exit(shim(sys.argv[2]))
    sys.stderr.write("usage: esxi_ssh.py shim STATE_FILE (run by sshd)\n")
    sys.exit(2)
