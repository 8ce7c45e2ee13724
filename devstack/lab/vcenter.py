"""Launcher for the simulated vCenter (`devstack/lab/vcsim/`, a Go program on govmomi's
simulator package).

The binary is built on first use (and whenever its sources change) into `.cache/vcsim/`,
in GOPATH mode against Debian's govmomi sources. Each lab runs in a work folder of its
own: TLS certificate, password file, config, and the simulator's datastore folders
(TMPDIR points there, so nothing is left in /tmp).

    with VcsimLab.from_spec({"clusters": [{"name": "c1", "hosts": 4}]}) as lab:
        lab.url, lab.username, lab.password, lab.ca_file
        lab.reboot_host("c1-esx01", seconds=2)

The spec (validated by the binary, unknown keys rejected):
    {"datacenter": "dc1", "migrate_ms": 20, "migrate_ms_per_gb": 0,
     "hardware": {"c1-esx01": {"service_tag": "7XK2P93", "bmc_address": "https://..."}},
     "clusters": [{"name": "c1", "hosts": 4, "vms_per_host": 2,
                   "host_memory_mb": 262144, "vm_memory_mb": 4096,
                   "version": "7.0.3", "build": "21930508",
                   "ha": {"enabled": true, "admission_control": true, "failover_level": 1},
                   "drs": {"enabled": true, "behavior": "fullyAutomated"},
                   "in_maintenance": [3],
                   "vms": [{"name": "db1", "host": 0, "memory_mb": 8192, "power_on": true,
                            "devices": ["usb_passthrough"], "drs_behavior": "manual",
                            "tools": true}],
                   "rules": [{"name": "pin", "vms": ["db1"], "hosts": [0], "mandatory": true}],
                   "vsan": {"enabled": true, "resync_after_exit_ms": 300, "resync_objects": 12}}]}
Hosts are named <cluster>-esxNN, generated VMs <cluster>-vmNNNN. Device kinds:
usb_passthrough, cdrom_host_device, cdrom_local_iso, cdrom_shared_iso, floppy_connected, ft,
vgpu, pci_passthrough, local_disk. A VM's "tools": false means VMware Tools does not run in
its guest (ShutdownGuest is refused with ToolsUnavailable, as vCenter does); by default it
runs. The control endpoints are listed in vcsim/control.go.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import glob
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.proc import spawn

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = Path(__file__).resolve().parent / "vcsim"
CACHE_DIR = ROOT / ".cache" / "vcsim"
BINARY = CACHE_DIR / "vcsim-lab"
GOPATH_SYSTEM = "/usr/share/gocode"
START_TIMEOUT = 120.0


class LabError(Exception):
    """Root of the lab launcher's errors."""


class BuildError(LabError):
    """The Go toolchain or the govmomi sources are missing, or the build failed."""


class StartError(LabError):
    """The simulator did not come up."""


class ControlError(LabError):
    """A lab control request was refused."""


def _sources_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(SOURCE_DIR.glob("*.go")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def build_binary(force: bool = False) -> Path:
    """Build the lab binary if it is missing or older than its sources; return its path."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    stamp = CACHE_DIR / "vcsim-lab.sha256"
    digest = _sources_digest()
    # Parallel test processes may all want the binary: one builds, the others wait.
    with open(CACHE_DIR / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and BINARY.exists() and stamp.exists() and stamp.read_text() == digest:
            return BINARY
        go = shutil.which("go")
        if go is None:
            raise BuildError("the Go toolchain is not installed (Debian package golang-go)")
        if not Path(GOPATH_SYSTEM, "src/github.com/vmware/govmomi/simulator").is_dir():
            raise BuildError("govmomi sources are missing (Debian package golang-github-vmware-govmomi-dev)")
        own_gopath = ROOT / ".cache" / "go"
        own_gopath.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            GO111MODULE="off",
            GOPATH=f"{own_gopath}:{GOPATH_SYSTEM}",
            GOCACHE=str(ROOT / ".cache" / "go-build"),
            GOFLAGS="",
        )
        tmp = BINARY.with_suffix(".tmp")
        proc = subprocess.run(
            [go, "build", "-o", str(tmp), "."],
            cwd=SOURCE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise BuildError(f"go build failed:\n{proc.stderr.strip()}")
        os.replace(tmp, BINARY)
        stamp.write_text(digest)
    return BINARY


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost that clients can pin as their CA bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rackpilot lab vCenter")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@dataclass
class VcsimLab:
    """One running simulated vCenter. Use `from_spec`/`uniform`, then `start()` or `with`."""

    spec: dict[str, Any]
    hardware: dict[str, dict[str, str]] = field(default_factory=dict)
    username: str = "administrator@vsphere.local"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    workdir: Path | None = None
    url: str = ""
    control_url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    ca_file: Path | None = None
    hosts_count: int = 0
    vms_count: int = 0
    build_seconds: float = 0.0
    _proc: subprocess.Popen[str] | None = None
    _own_workdir: bool = False

    @classmethod
    def from_spec(cls, spec: dict[str, Any], hardware: dict[str, dict[str, str]] | None = None) -> VcsimLab:
        return cls(spec=spec, hardware=hardware or {})

    @classmethod
    def uniform(cls, clusters: int, hosts: int, vms_per_host: int, **cluster_opts: Any) -> VcsimLab:
        return cls(
            spec={
                "clusters": [
                    {
                        "name": f"cluster{i + 1:02d}",
                        "hosts": hosts,
                        "vms_per_host": vms_per_host,
                        **cluster_opts,
                    }
                    for i in range(clusters)
                ]
            }
        )

    def start(self) -> VcsimLab:
        binary = build_binary()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="rackpilot-vcsim-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = _self_signed(self.workdir)
        self.ca_file = cert
        pw = self.workdir / "password"
        pw.write_text(self.password)
        pw.chmod(0o600)
        cfg = self.workdir / "lab.json"
        cfg.write_text(json.dumps(self.spec))
        args = [
            str(binary),
            "-config", str(cfg),
            "-cert", str(cert),
            "-key", str(key),
            "-username", self.username,
            "-password-file", str(pw),
            "-listen", "127.0.0.1:0",
        ]  # fmt: skip
        if self.hardware:
            hw = self.workdir / "hardware.json"
            hw.write_text(json.dumps(self.hardware))
            args += ["-hardware-map", str(hw)]
        env = dict(os.environ, TMPDIR=str(self.workdir))
        # Dies with the process that started it (parent-death signal: SIGTERM, which the
        # binary handles by shutting down and removing its folders), even on SIGKILL.
        self._proc = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self._read_first_line()
        info = json.loads(line)
        self.url = info["url"]
        self.control_url = info["control"]
        parsed = urllib.parse.urlsplit(self.url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 443
        self.hosts_count, self.vms_count = info["hosts"], info["vms"]
        self.build_seconds = info["build_seconds"]
        return self

    def _read_first_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT)
        if not result or not result[0].strip():
            err = ""
            if result:  # stdout closed: the binary is exiting; collect its reason
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            if self._proc.poll() is not None and self._proc.stderr is not None:
                err = self._proc.stderr.read().strip()
            self.stop()
            raise StartError(f"vCenter simulator did not start: {err or 'no URL printed'}")
        return result[0]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if self.workdir is not None and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        # The simulator names its folders govcsim-*; with TMPDIR set they live in the work
        # folder, but a binary started by hand may have left some in the system temp dir.
        if self.workdir is not None:
            for d in glob.glob(str(self.workdir / "govcsim-*")):
                shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> VcsimLab:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- control endpoint -------------------------------------------------------------
    def _control(self, method: str, path: str, query: dict[str, Any] | None = None) -> Any:
        url = self.control_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ControlError(f"{method} {path}: HTTP {e.code}: {detail}") from None

    def lab_hosts(self) -> list[dict[str, Any]]:
        return self._control("GET", "/hosts")

    def lab_host(self, name: str) -> dict[str, Any]:
        return self._control("GET", f"/hosts/{urllib.parse.quote(name)}")

    def reboot_host(
        self, name: str, seconds: float, version: str | None = None, build: str | None = None
    ) -> dict[str, Any]:
        return self._control(
            "POST",
            f"/hosts/{urllib.parse.quote(name)}/reboot",
            {"seconds": seconds, "version": version, "build": build},
        )

    def power_host(self, name: str, on: bool, seconds: float = 0) -> dict[str, Any]:
        return self._control(
            "POST",
            f"/hosts/{urllib.parse.quote(name)}/power",
            {"state": "on" if on else "off", "seconds": seconds},
        )

    def vsan(self, cluster: str) -> dict[str, Any]:
        """A vSAN cluster's lab state and record (entries, most hosts out at once)."""
        return self._control("GET", f"/clusters/{urllib.parse.quote(cluster)}/vsan")

    def set_vsan(
        self,
        cluster: str,
        *,
        health: str | None = None,
        test: str | None = None,
        resync_objects: int | None = None,
        resync_bytes: int = 0,
        resync_seconds: float = 0,
    ) -> dict[str, Any]:
        """Fault injection: vSAN health (green, yellow, red; the failing test's name) and a
        resync backlog draining over ``resync_seconds`` (0: until changed)."""
        q: dict[str, Any] = {"health": health, "test": test}
        if resync_objects is not None:
            q.update(resync_objects=resync_objects, resync_bytes=resync_bytes, resync_seconds=resync_seconds)
        return self._control("POST", f"/clusters/{urllib.parse.quote(cluster)}/vsan", q)

    def wait_host(self, name: str, connection_state: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            h = self.lab_host(name)
            if h["connection_state"] == connection_state or time.monotonic() > deadline:
                return h
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """`python -m devstack.lab.vcenter build` builds the binary; `... run --config lab.json`
    starts a lab and prints its connection details (the password stays in a file)."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m devstack.lab.vcenter", description="rackpilot's simulated vCenter"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or rebuild) the lab binary")
    run = sub.add_parser("run", help="start a lab and keep it running until Ctrl-C")
    run.add_argument("--config", help="JSON lab configuration (see devstack/lab/vcsim/config.go)")
    run.add_argument("--clusters", type=int, default=2)
    run.add_argument("--hosts", type=int, default=4)
    run.add_argument("--vms-per-host", type=int, default=2)
    run.add_argument("--hardware-map", help="JSON: host name -> {service_tag, bmc_address}")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            print(json.dumps({"binary": str(build_binary(force=True))}))
            return 0
        if args.config:
            lab = VcsimLab.from_spec(json.loads(Path(args.config).read_text()))
        else:
            lab = VcsimLab.uniform(args.clusters, args.hosts, args.vms_per_host)
        if args.hardware_map:
            lab.hardware = json.loads(Path(args.hardware_map).read_text())
    except (OSError, ValueError, LabError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with lab:
            assert lab.workdir is not None
            # Blocked only now, so the simulator child does not inherit the mask; sigwait
            # then receives the stop signals instead of the default handlers.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            print(json.dumps({
                "url": lab.url, "control_url": lab.control_url, "username": lab.username,
                "password_file": str(lab.workdir / "password"), "ca_file": str(lab.ca_file),
                "hosts": lab.hosts_count, "vms": lab.vms_count,
            }), flush=True)  # fmt: skip
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
