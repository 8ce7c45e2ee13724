"""One coherent simulated data centre: iDRAC BMCs, a vCenter, OME, ESXi SSH and a
firmware repository, linked so that they tell one story.

* every ESXi host of the vCenter lab sits on one simulated PowerEdge: the host reports the
  BMC's service tag and address (``-hardware-map``), so rackpilot can link hosts to servers;
* a power action through a host's iDRAC (restart, power cycle, off, on - including the
  reboot that applies staged firmware or an SCP import) takes the ESXi host "not
  responding" in vCenter for as long as the server is down, POST included, and brings it
  back connected with a new boot time (through the vCenter lab's control endpoint);
* the firmware repository serves a Dell-layout ``Catalog.xml`` and one lab update package
  per catalog entry, so catalog checks and SimpleUpdate downloads are real HTTP fetches;
* optionally an OME instance managing the same servers, and a real sshd answering
  ``esxcli`` for each host (linked to the vCenter lab: its reboot is vCenter's reboot).

    with DataCentre([{"name": "c1", "hosts": 4}], time_scale=400) as dc:
        dc.describe()          # URLs, ports, credentials file: what `rackpilot lab up` writes

Everything is started and stopped as one. ``describe()`` is also written as JSON to
``<workdir>/datacentre.json``, with what an executor needs to drive the lab (the TLS
choices to store with the vCenter and server rows, and ``RACKPILOT_TARGET_TIME_SCALE``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import logging
import secrets
import shutil
import string
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .idrac import BMC, Lab, LabThread, Timing, make_dup
from .idrac.bmc import default_components
from .idrac.testing import FileServer
from .vcenter import VcsimLab

log = logging.getLogger("rackpilot.lab.datacentre")

ROOT = Path(__file__).resolve().parents[2]
CATALOG_FILE = ROOT / "tests" / "fixtures" / "catalog" / "Catalog.xml"


class DataCentreError(Exception):
    """Root of the data-centre lab's errors."""


class LinkedBMC(BMC):
    """A simulated iDRAC whose host is an ESXi host of the vCenter lab: the host's power
    timeline is mirrored into vCenter as "not responding" while the server is down."""

    def __init__(self, *args: Any, on_power: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self.on_power = on_power  # callable(event, seconds) run outside the BMC's lock
        self.host_name = ""
        self._in_restart = False
        # wall-clock times firmware was sent: SimpleUpdate requests and multipart pushes
        self.flashes: list[float] = []

    def simple_update(self, body: dict) -> Any:
        job = super().simple_update(body)
        self.flashes.append(time.time())
        return job

    def push_update(self, params: dict[str, Any], package_head: bytes, info: dict[str, Any]) -> Any:
        job = super().push_update(params, package_head, info)
        self.flashes.append(time.time())
        return job

    def _power_down(self, delay: float, then_on: bool = False) -> None:
        super()._power_down(delay, then_on)
        if self.on_power is None:
            return
        if then_on:
            # The whole restart, in real seconds: shutdown, power-on, POST.
            self._in_restart = True
            self.on_power("reboot", self.real(delay + self.timing.power_on + self.timing.post))
        else:
            self.on_power("off", 0.0)

    def _power_up(self) -> None:
        super()._power_up()
        if self._in_restart:
            self._in_restart = False  # the vCenter side already knows when it comes back
            return
        if self.on_power is not None:
            self.on_power("on", self.real(self.timing.power_on + self.timing.post))


def repository_files(catalog_bytes: bytes) -> dict[str, bytes]:
    """Catalog plus one lab update package per catalog entry, as the repository serves them."""
    from executor.targets.catalog import Catalog

    catalog = Catalog.from_bytes(catalog_bytes, "lab catalog")
    files = {"/Catalog.xml": catalog_bytes}
    for p in catalog.packages:
        cid = sorted(p.component_ids)[0]
        files[f"/{p.path}"] = make_dup(cid, p.version)
    return files


@dataclass
class DataCentre:
    """The linked lab. ``clusters`` are vCenter lab cluster specs (see ``vcsim.py``);
    ``timing`` overrides the iDRAC simulator's durations (simulated seconds)."""

    clusters: list[dict[str, Any]]
    time_scale: float = 400.0
    timing: dict[str, float] = field(default_factory=dict)
    migrate_ms: int = 5
    migrate_ms_per_gb: int = 0
    esxi_ssh: bool = False
    esxi_reboot_seconds: float = 0.5
    depots: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    ome: bool = False
    outdated: bool = True
    workdir: Path | None = None
    idrac_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    # set by start()
    idrac: Lab | None = None
    vcenter: VcsimLab | None = None
    files: FileServer | None = None
    ssh: Any = None
    ome_sim: Any = None
    host_bmc: dict[str, int] = field(default_factory=dict)  # ESXi host name -> BMC index
    _idrac_thread: LabThread | None = None
    _ome_loop: Any = None
    _ome_thread: threading.Thread | None = None
    _notify: cf.ThreadPoolExecutor | None = None
    _own_workdir: bool = False
    power_events: list[tuple[str, str, float]] = field(default_factory=list)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> DataCentre:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> DataCentre:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="rackpilot-dc-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = [f"{c['name']}-esx{i + 1:02d}" for c in self.clusters for i in range(int(c.get("hosts", 1)))]
        if not names:
            raise DataCentreError("the data centre needs at least one host")
        # vCenter changes ordered per process: one worker keeps a host's down/up in order.
        self._notify = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dc-link")
        self.files = FileServer(repository_files(CATALOG_FILE.read_bytes())).__enter__()

        timing = Timing(**{**vars(Timing()), **self.timing})
        self.idrac = Lab(len(names), time_scale=self.time_scale, password=self.idrac_password, timing=timing)
        # Service tags unique per data centre: servers.service_tag is unique across sites.
        prefix = "".join(secrets.choice(string.ascii_uppercase) for _ in range(3))
        linked = []
        for i, name in enumerate(names):
            bmc = LinkedBMC(
                i,
                time_scale=self.time_scale,
                password=self.idrac_password,
                timing=timing,
                on_power=self._linker(name),
            )
            if self.outdated:
                # every server one release behind the catalog, so each host has updates
                bmc.components = default_components(bmc.model, 0)
            bmc.service_tag = f"{prefix}{i:04d}"
            bmc.host_name = name
            linked.append(bmc)
            self.host_bmc[name] = i
        self.idrac.bmcs = linked
        self._idrac_thread = LabThread(self.idrac)
        self._idrac_thread.start()

        hardware = {
            name: {"service_tag": self.idrac.bmcs[i].service_tag, "bmc_address": self.idrac.url(i)}
            for name, i in self.host_bmc.items()
        }
        spec = {
            "migrate_ms": self.migrate_ms,
            "migrate_ms_per_gb": self.migrate_ms_per_gb,
            "clusters": self.clusters,
        }
        self.vcenter = VcsimLab.from_spec(spec, hardware)
        self.vcenter.workdir = self.workdir / "vcenter"
        self.vcenter.start()

        if self.esxi_ssh:
            from .esxi_ssh import EsxiSshLab

            self.ssh = EsxiSshLab(
                hosts={n: {} for n in names},
                depots=self.depots,
                reboot_seconds=self.esxi_reboot_seconds,
                vcsim=self.vcenter,
            ).start()
        if self.ome:
            self._start_ome()
        self._write_description()
        return self

    def _start_ome(self) -> None:
        from .ome import OMESim

        self._ome_loop = asyncio.new_event_loop()
        self._ome_thread = threading.Thread(target=self._ome_loop.run_forever, name="dc-ome", daemon=True)
        self._ome_thread.start()
        assert self.idrac is not None
        sim = OMESim(
            devices=OMESim.lab_devices(len(self.idrac.bmcs)),
            time_scale=self.time_scale,
            username="admin",
            password=self.idrac_password,
        )
        asyncio.run_coroutine_threadsafe(sim.start(0), self._ome_loop).result(30)
        self.ome_sim = sim

    def stop(self) -> None:
        if self.ssh is not None:
            self.ssh.stop()
            self.ssh = None
        if self.vcenter is not None:
            self.vcenter.stop()
        if self.ome_sim is not None and self._ome_loop is not None:
            asyncio.run_coroutine_threadsafe(self.ome_sim.stop(), self._ome_loop).result(30)
            self.ome_sim = None
        if self._ome_loop is not None:
            self._ome_loop.call_soon_threadsafe(self._ome_loop.stop)
            if self._ome_thread is not None:
                self._ome_thread.join(10)
            self._ome_loop = None
        if self._idrac_thread is not None:
            self._idrac_thread.stop()
            self._idrac_thread = None
        if self.files is not None:
            self.files.__exit__(None, None, None)
            self.files = None
        if self._notify is not None:
            self._notify.shutdown(wait=True, cancel_futures=True)
            self._notify = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DataCentre:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the link ----------------------------------------------------------------------------
    def _linker(self, host_name: str) -> Any:
        def on_power(event: str, seconds: float) -> None:
            self.power_events.append((host_name, event, seconds))
            if self._notify is None or self.vcenter is None:
                return
            self._notify.submit(self._apply_power, host_name, event, seconds)

        return on_power

    def _apply_power(self, host_name: str, event: str, seconds: float) -> None:
        assert self.vcenter is not None
        try:
            if event == "reboot":
                self.vcenter.reboot_host(host_name, seconds=round(seconds, 3))
            elif event == "off":
                self.vcenter.power_host(host_name, on=False)
            else:
                self.vcenter.power_host(host_name, on=True, seconds=round(seconds, 3))
        except Exception as exc:  # noqa: BLE001 - a lab link failure must show, not kill the BMC loop
            log.warning("data centre link: %s %s failed: %s", event, host_name, exc)

    # -- views -----------------------------------------------------------------------------
    def bmc(self, host_name: str) -> LinkedBMC:
        assert self.idrac is not None
        return self.idrac.bmcs[self.host_bmc[host_name]]  # type: ignore[return-value]

    def bmc_url(self, host_name: str) -> str:
        assert self.idrac is not None
        return self.idrac.url(self.host_bmc[host_name])

    @property
    def catalog_url(self) -> str:
        assert self.files is not None
        return self.files.url("Catalog.xml")

    @property
    def executor_time_scale(self) -> float:
        """``RACKPILOT_TARGET_TIME_SCALE`` for an executor driving this lab: budgets compressed
        4x less than the lab's clock, headroom on a loaded machine."""
        return self.time_scale / 4

    def vcenter_tls(self) -> dict[str, Any]:
        """``vcenters.details.tls`` for this lab's vCenter (its own CA)."""
        assert self.vcenter is not None
        return {"ca_bundle": str(self.vcenter.ca_file)}

    @staticmethod
    def idrac_tls() -> dict[str, Any]:
        """``servers.details.tls`` for this lab's iDRACs (plain HTTP on loopback)."""
        return {"allow_plain_http": True}

    def describe(self) -> dict[str, Any]:
        assert self.vcenter is not None and self.idrac is not None and self.files is not None
        hosts = []
        for name, i in self.host_bmc.items():
            entry = {
                "name": name,
                "service_tag": self.idrac.bmcs[i].service_tag,
                "bmc_url": self.idrac.url(i),
                "model": self.idrac.bmcs[i].model,
            }
            if self.ssh is not None:
                entry["ssh_port"] = self.ssh.ports[name]
            hosts.append(entry)
        out: dict[str, Any] = {
            "vcenter": {
                "url": self.vcenter.url,
                "control_url": self.vcenter.control_url,
                "username": self.vcenter.username,
                "password_file": str(self.vcenter.workdir / "password"),
                "ca_file": str(self.vcenter.ca_file),
            },
            "idrac": {
                "username": "root",
                "password_file": str(self.workdir / "idrac-password"),
                "time_scale": self.time_scale,
            },
            "firmware": {"catalog_url": self.catalog_url},
            "hosts": hosts,
            "executor": {
                "RACKPILOT_TARGET_TIME_SCALE": self.executor_time_scale,
                "vcenter_tls": self.vcenter_tls(),
                "idrac_tls": self.idrac_tls(),
            },
        }
        if self.ssh is not None:
            out["esxi_ssh"] = {
                "username": self.ssh.username,
                "client_key": str(self.ssh.client_key),
                "known_hosts": str(self.ssh.known_hosts) if self.ssh.known_hosts else None,
            }
        if self.ome_sim is not None:
            out["ome"] = {
                "url": self.ome_sim.url,
                "username": "admin",
                "password_file": str(self.workdir / "idrac-password"),
            }
        return out

    def vcenter_endpoints(self) -> list[dict[str, Any]]:
        """Where the vCenter credential may be presented (``encrypt-credentials`` endpoints)."""
        assert self.vcenter is not None
        return [{"url": f"https://{self.vcenter.host}:{self.vcenter.port}", "tls": self.vcenter_tls()}]

    def idrac_endpoints(self) -> list[dict[str, Any]]:
        """Where the iDRAC credential may be presented: the lab's BMCs of this lab's hosts."""
        assert self.idrac is not None
        urls = [self.idrac.url(i) for i in sorted(set(self.host_bmc.values()))]
        return [{"url": u, "tls": self.idrac_tls() if u.startswith("http://") else {}} for u in urls]

    def ome_endpoints(self) -> list[dict[str, Any]]:
        """Where the OME credential may be presented (plain HTTP on loopback)."""
        assert self.ome_sim is not None
        return [{"url": self.ome_sim.url, "tls": {"allow_plain_http": True}}]

    def register(
        self, query: Any, site_id: str, public_key_b64: str, key_id: str, name: str = "lab-vcenter"
    ) -> dict[str, Any]:
        """Put this lab into a site's inventory: the vCenter and one server per host, with
        their credentials sealed to an executor key (as ``encrypt-credentials`` does), each
        naming the endpoints it may be presented to. ``query(sql, *args)`` runs SQL as an
        admin (tests, ``rackpilot lab up``)."""
        from executor.binding import endpoint_entries
        from executor.secrets import seal, unb64u

        assert self.vcenter is not None and self.idrac is not None
        pub = unb64u(public_key_b64)
        endpoints = {"vcenter": self.vcenter_endpoints(), "idrac": self.idrac_endpoints()}

        def cred(kind: str, username: str, password: str) -> str:
            env = seal(pub, {"username": username, "password": password}, endpoints=endpoints[kind])
            # the set with, as encrypt-credentials keeps it, a copy of the endpoints for display
            # (the console's pre-flight blocks a credential that names none: presented nowhere),
            # and its one envelope, sealed to the key's executor of the site
            return query(
                "with c as (insert into public.credential_sets (site_id, name, kind, username, endpoints) "
                "values (%s, %s, %s, %s, %s) returning id), "
                "e as (insert into public.credential_envelopes (credential_set_id, executor_id, key_id, sealed_secret) "
                "select c.id, (select x.id from public.executors x where x.site_id = %s and x.key_id = %s "
                "order by x.registered_at desc limit 1), %s, %s from c) "
                "select id from c",
                site_id,
                f"{name}-{kind}",
                kind,
                username,
                json.dumps(endpoint_entries(endpoints[kind])),
                site_id,
                key_id,
                key_id,
                json.dumps(env),
            )[0]["id"]

        vc_cred = cred("vcenter", self.vcenter.username, self.vcenter.password)
        idrac_cred = cred("idrac", "root", self.idrac_password)
        vc_id = query(
            "insert into public.vcenters (site_id, name, address, credential_set_id, details) "
            "values (%s, %s, %s, %s, %s) returning id",
            site_id,
            name,
            f"https://{self.vcenter.host}:{self.vcenter.port}",
            vc_cred,
            json.dumps({"tls": self.vcenter_tls()}),
        )[0]["id"]
        servers = {}
        for host, i in self.host_bmc.items():
            bmc = self.idrac.bmcs[i]
            servers[host] = query(
                "insert into public.servers (site_id, name, idrac_address, service_tag, model, credential_set_id, "
                "details) values (%s, %s, %s, %s, %s, %s, %s) returning id",
                site_id,
                f"{host}-srv",
                self.idrac.url(i),
                bmc.service_tag,
                bmc.model,
                idrac_cred,
                json.dumps({"tls": self.idrac_tls()}),
            )[0]["id"]
        return {"vcenter_id": vc_id, "credential_set_ids": [vc_cred, idrac_cred], "servers": servers}

    def _write_description(self) -> None:
        assert self.workdir is not None
        pw = self.workdir / "idrac-password"
        pw.write_text(self.idrac_password)
        pw.chmod(0o600)
        (self.workdir / "datacentre.json").write_text(json.dumps(self.describe(), indent=1))


# --- `rackpilot lab up|down|status` ----------------------------------------------------------------
def lab_dir() -> Path:
    """Where the background lab keeps its state (``RACKPILOT_LAB_DIR``, default ``.cache/lab``)."""
    import os

    return Path(os.environ.get("RACKPILOT_LAB_DIR") or ROOT / ".cache" / "lab")


def lab_owner(folder: Path | None = None) -> str:
    """The owner marker of a background lab and of everything it starts (devstack.proc)."""
    return f"lab:{(folder or lab_dir()).resolve()}"


def _pid(folder: Path) -> int | None:
    """The background lab's pid: only a live process carrying this folder's lab marker counts
    (the pid file may name a dead or recycled pid)."""
    from devstack import proc

    try:
        pid = int((folder / "lab.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if proc.is_alive(pid) and proc.owned_by(pid, lab_owner(folder)) else None


def lab_up(config: str | None = None, timeout: float = 180.0) -> dict[str, Any]:
    """Start the data centre in the background (idempotent); return its description.

    The lab process is a daemon (it outlives `rackpilot lab up`, so no parent-death signal);
    its vCenter simulator and sshd die with it (devstack.proc), and it and they carry the
    lab's owner marker, which `lab_down()` sweeps. A start that fails or is interrupted
    stops what it started."""
    import subprocess
    import sys

    from devstack import proc

    folder = lab_dir()
    if _pid(folder):
        return lab_status()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run" / "datacentre.json").unlink(missing_ok=True)
    args = [sys.executable, "-m", "devstack.lab.datacentre", "--workdir", str(folder / "run")]
    if config:
        args += ["--config", str(Path(config).resolve())]
    with open(folder / "lab.log", "ab") as log_file:
        child = proc.spawn(
            args,
            die_with_parent=False,
            owner=lab_owner(folder),
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    (folder / "lab.pid").write_text(str(child.pid))
    description = folder / "run" / "datacentre.json"
    deadline = time.monotonic() + timeout
    try:
        while not description.exists():
            if child.poll() is not None:
                tail = (folder / "lab.log").read_text(errors="replace")[-1500:]
                raise DataCentreError(f"the lab did not start (exit {child.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise DataCentreError(
                    f"the lab did not start within {timeout:.0f}s; see {folder / 'lab.log'}"
                )
            time.sleep(0.2)
    except BaseException:
        lab_down()
        raise
    return lab_status()


def lab_down(timeout: float = 30.0) -> bool:
    """Stop the background lab, and whatever carries its marker (children a SIGKILLed lab
    process left behind); False when nothing was running."""
    from devstack import proc

    folder = lab_dir()
    pid = _pid(folder)
    if pid is not None:
        proc.terminate([pid], timeout)
    leftovers = proc.stop_owned(lab_owner(folder), 10.0)
    (folder / "lab.pid").unlink(missing_ok=True)
    return pid is not None or bool(leftovers)


def lab_status() -> dict[str, Any]:
    folder = lab_dir()
    pid = _pid(folder)
    out: dict[str, Any] = {"running": pid is not None, "pid": pid, "folder": str(folder)}
    description = folder / "run" / "datacentre.json"
    if pid and description.exists():
        out["description"] = json.loads(description.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.lab.datacentre --config dc.json --workdir DIR``: run until
    interrupted (what ``rackpilot lab up`` starts in the background)."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python -m devstack.lab.datacentre")
    ap.add_argument("--config", help="JSON: {clusters: [...], time_scale, esxi_ssh, ome, timing}")
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args(argv)
    cfg: dict[str, Any] = {
        "clusters": [
            {"name": "c1", "hosts": 4, "vms_per_host": 2},
            {"name": "c2", "hosts": 4, "vms_per_host": 2},
        ],
        "time_scale": 20.0,
        "esxi_ssh": True,
        "ome": True,
    }
    if args.config:
        cfg.update(json.loads(Path(args.config).read_text()))
    # the description file appears last: it tells `rackpilot lab up` that everything runs
    dc = DataCentre(workdir=Path(args.workdir), **cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dc.start()
    print(json.dumps({"ready": True, "description": str(Path(args.workdir) / "datacentre.json")}), flush=True)
    try:
        stop.wait()
    finally:
        dc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
