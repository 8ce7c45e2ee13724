"""``rackpilot demo``: rackpilot's main job, a rolling cluster firmware update, end to end
on the local stack and the simulated data centre.

Every step goes through the same paths an operator's would, with the official clients:

 1. the local stack comes up (created and migrated on first use); demo users exist;
 2. the simulated data centre starts: two vCenter clusters of four ESXi hosts, each host on
    a PowerEdge iDRAC, an OpenManage Enterprise instance, and a Dell firmware repository
    whose catalog is newer than what the servers run. On cluster prod-a two VMs keep their
    hosts from entering maintenance: one with a connected CD-ROM, one with USB passthrough;
    beside it two ZFS storage hosts behind a real sshd on loopback (the ``zfs`` stand-in);
 3. an executor starts for the demo site, registers, and wakes through Realtime;
 4. the admin seals the lab's credentials to the executor's key (``encrypt-credentials``)
    and registers the vCenter, OME and both clusters' servers (REST, under RLS); it seals
    the storage hosts' SSH login with their pinned host keys and registers the ZFS pair, and
    the operator syncs it (``create-job`` ``replication_sync``, running alongside what follows);
 5. the operator syncs vCenter (``create-job`` ``vcenter_sync``); the site's automation
    (service key: ``create-job`` does not take these types yet) refreshes the Dell
    inventory (``inventory_refresh``) and reports firmware compliance against the catalog
    (``firmware_compliance``);
 6. an approver requests a maintenance window for prod-a, cannot approve it themself (four
    eyes), and the admin approves it;
 7. the operator dry-runs, then creates the rolling update of prod-a (``create-job``) and
    watches its steps stream in over Realtime. It pauses on the two blockers before
    touching the cluster. With ``--once`` the operator decides through ``resolve-blockers``
    (power the CD-ROM VM off and back on around its host; skip the USB VM's host);
    otherwise the demo prints where to decide - notebook ``03_blockers`` in the JupyterLab
    it started - and waits (Realtime) until the job resumes. The job then completes;
 8. compliance is reported again, then the summary per host (firmware before -> after, time
    in maintenance, blockers and decisions), the expectations those decisions imply, the
    ZFS pair's sync (bytes, lag, last success), the safety invariants (DESIGN.md §5) and the
    audit chain are checked and printed.

Without ``--once`` everything stays up until Ctrl-C (JupyterLab included), then stops
cleanly. With ``--once`` (no JupyterLab) the demo stops what it started and exits 0, or
non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

DEMO_USERS = {
    "operator@rackpilot.local": "operator",
    "approver@rackpilot.local": "approver",
    "admin@rackpilot.local": "admin",
    "viewer@rackpilot.local": "viewer",
}
SITE_NAME = "demo"
LAB_SCALE = 200.0  # the lab's clock runs this many times faster than real time
_HA = {"enabled": True, "admission_control": True, "failover_level": 1}
# The VMs that keep their hosts from entering maintenance, and what the operator decides in
# run-once mode (resolve-blockers): the CD-ROM VM is powered off around its host's update and
# back on; the USB-passthrough VM cannot move or stop, so its host is left out of this job.
BLOCKER_VMS = [
    {"name": "build-iso", "host": 0, "devices": ["cdrom_host_device"]},  # on prod-a-esx01
    {"name": "license-dongle", "host": 2, "devices": ["usb_passthrough"]},  # on prod-a-esx03
]
DECISIONS = {
    "cdrom_connected": ("power_off_vm", "installer ISO no longer needed: power it off, back on after"),
    "usb_passthrough": ("skip_host", "licence dongle VM cannot move: leave this host for the next window"),
}
LAB_CLUSTERS = [
    {
        "name": "prod-a",
        "hosts": 4,
        "vms_per_host": 2,
        "host_memory_mb": 262144,
        "vm_memory_mb": 2048,
        "ha": _HA,
        "vms": BLOCKER_VMS,
    },
    {
        "name": "prod-b",
        "hosts": 4,
        "vms_per_host": 2,
        "host_memory_mb": 262144,
        "vm_memory_mb": 2048,
        "ha": _HA,
    },
]
LAB_CLUSTER = LAB_CLUSTERS[0]  # the cluster the demo rolls
# simulated seconds; shortened where they only add waiting
LAB_TIMING = {"scp_export": 60.0, "idrac_down": 60.0, "lc_after_idrac_reset": 20.0, "fw_download": 20.0}
# The ZFS pair: a dataset on one storage host replicated to the other, both behind a real sshd
# on loopback running the zfs stand-in (devstack/lab/zfs_ssh.py); one replication_sync seeds it.
ZFS_HOSTS = ("zfs1", "zfs2")  # source, target
ZFS_PAIR = {
    "name": "vm-store",
    "source_dataset": "tank/vm",
    "target_dataset": "backup/vm",
    "schedule": "@hourly",
    "retention_snapshots": 24,
    "max_lag_seconds": 3600,
    "allow_full_send": True,
}
ZFS_DATA = {"disk0.img": 1_500_000, "disk1.img": 500_000, "config/vm.json": 2_000}  # file -> bytes
JOB_TIMEOUT_S = 600  # how long the demo waits for the rolling update once it runs (seconds)
SMALL_JOB_TIMEOUT_S = 120  # vcenter_sync, inventory_refresh, firmware_compliance (seconds)
WINDOW_LEAD_S = 5  # the maintenance window opens this long after it is requested (seconds)
JUPYTER_PORT = 8888  # preferred JupyterLab port (interactive mode); a free one when taken
TERMINAL = ("completed", "failed", "cancelled")


class DemoError(RuntimeError):
    pass


def say(step: str, detail: str = "") -> None:
    _write(f"  \u2713 {step}" + (f" \u2014 {detail}" if detail else ""))


def _write(text: str, err: bool = False) -> None:
    """``print(text, flush=True)`` that survives a closed pipe. ``make demo | tee``: the
    Ctrl-C that stops the demo kills tee too, and a BrokenPipeError raised on the way out
    would abort the cleanup and leave everything running. The first write that finds its
    reader gone points the descriptor at /dev/null (``_detach``): nothing written after
    that, by this function or by any print, raises."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (BrokenPipeError, ValueError):  # ValueError: the stream is closed
        _detach(stream)


def _detach(stream: Any) -> None:
    """Point ``stream``'s descriptor at /dev/null (its reader is gone)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _demo_passwords(st) -> dict[str, str]:
    """Demo users' passwords, generated once per stack and kept 0600 in its state folder."""
    path = st.cfg.state_dir / "demo-users.json"
    if path.exists():
        return json.loads(path.read_text())
    data = {email: secrets.token_urlsafe(12) for email in DEMO_USERS}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    return data


class Executor:
    """The demo site's executor, as a child process (``python -m executor``)."""

    def __init__(self, st, time_scale: float):
        self.dir = st.cfg.state_dir / "demo-executor"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.log = self.dir / "executor.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
        env.update(
            {
                "RACKPILOT_SUPABASE_URL": st.env()["SUPABASE_URL"],
                "RACKPILOT_SUPABASE_KEY": st.env()["SUPABASE_SERVICE_ROLE_KEY"],
                "RACKPILOT_SITE": SITE_NAME,
                "RACKPILOT_EXECUTOR_NAME": "demo-executor",
                # Ctrl-C stops the demo within seconds: a running step (the replication stream, say)
                # gets 5 s to reach a safe point, not the service's 30 s
                "RACKPILOT_SHUTDOWN_GRACE": "5",
                "RACKPILOT_STATE_DIR": str(self.dir / "state"),
                "RACKPILOT_LOG_FILE": str(self.log),
                "RACKPILOT_LOG_LEVEL": "INFO",
                "RACKPILOT_POLICY_PATH": str(st.cfg.project_root / "policies" / "safety.yaml"),
                "RACKPILOT_TARGET_TIME_SCALE": str(time_scale),
                "RACKPILOT_POLL_INTERVAL": "2",
                "RACKPILOT_HEARTBEAT_INTERVAL": "2",
            }
        )
        # Dies with the demo (parent-death signal: SIGTERM, on which the executor shuts down
        # cleanly), even when the demo is SIGKILLed; a session of its own, so the terminal's
        # Ctrl-C reaches only the demo, which stops it in order (stop()).
        from devstack.proc import spawn

        with open(self.dir / "executor.stdout", "ab") as out:
            self.proc = spawn(
                [sys.executable, "-m", "executor"],
                env=env,
                owner=f"demo:{st.cfg.state_dir}",
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=st.cfg.project_root,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # its shutdown grace is 5 s here; an executor still busy after 15 s is killed
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # No sweep of what its jobs started: nothing outlives it, SIGKILL included. Every
        # child of the executor is started through executor/childproc.py (the kernel's
        # parent-death signal; for the setgid ssh-agent, whose exec clears it, a watch on
        # the executor's pipe, 7333a9f), and tests/unit/test_executor_children.py keeps it so.


OP = "operator@rackpilot.local"
ADMIN = "admin@rackpilot.local"


class MaintenanceClock:
    """``lab_hosts`` for the out-of-service sampler that also times every stay of a host in
    maintenance mode, as vCenter reports it (real seconds)."""

    def __init__(self, lab_hosts):
        self._lab_hosts = lab_hosts
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}
        self._total: dict[str, float] = {}

    def __call__(self) -> list[dict[str, Any]]:
        hosts = self._lab_hosts()
        now = time.monotonic()
        with self._lock:
            for h in hosts:
                if h["in_maintenance"]:
                    self._since.setdefault(h["name"], now)
                elif h["name"] in self._since:
                    self._total[h["name"]] = (
                        self._total.get(h["name"], 0.0) + now - self._since.pop(h["name"])
                    )
        return hosts

    def seconds(self, host: str) -> float | None:
        """Time ``host`` spent in maintenance; None when it never was."""
        with self._lock:
            if host not in self._total and host not in self._since:
                return None
            open_s = time.monotonic() - self._since[host] if host in self._since else 0.0
            return self._total.get(host, 0.0) + open_s


def _free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DemoError("no free port for JupyterLab")


class Jupyter:
    """JupyterLab serving a fresh copy of ``notebooks/``, connected to the stack as an
    operator's would be: the kernel gets ``SUPABASE_URL`` and ``SUPABASE_ANON_KEY`` only (no
    service key, no database URL, no password); the operator signs in with the form."""

    NOTEBOOK = "03_blockers.ipynb"

    def __init__(self, st, env: dict[str, str], port: int = JUPYTER_PORT):
        import shutil

        self.dir = st.cfg.state_dir / "demo-jupyter"
        self.root = self.dir / "notebooks"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for src in sorted((st.cfg.project_root / "notebooks").glob("*.ipynb")):
            shutil.copy(src, self.root / src.name)  # fresh each run: no stale outputs
        self.token = secrets.token_hex(16)
        self.port = _free_port(port)
        self.log = self.dir / "jupyter.log"
        child = {
            k: v for k, v in os.environ.items() if not k.startswith(("RACKPILOT_", "SUPABASE_", "JUPYTER"))
        }
        child.update(
            {
                "SUPABASE_URL": env["SUPABASE_URL"],
                "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
                "RACKPILOT_CONSOLE_EXPORT_DIR": str(self.dir / "exports"),
                "JUPYTER_RUNTIME_DIR": str(self.dir / "runtime"),
                "JUPYTER_CONFIG_DIR": str(self.dir / "config"),
                # JupyterLab setting defaults: no "Jupyter news?" question (console/jupyter/)
                "JUPYTER_CONFIG_PATH": str(st.cfg.project_root / "console" / "jupyter"),
                "JUPYTERLAB_WORKSPACES_DIR": str(self.dir / "workspaces"),
                "IPYTHONDIR": str(self.dir / "ipython"),
            }
        )
        args = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=None",  # no news fetched (the question itself: console/jupyter/)
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        # Dies with the demo (parent-death signal: SIGTERM, on which JupyterLab shuts its kernels
        # down and exits), even when the demo is SIGKILLed; a session of its own, so the
        # terminal's Ctrl-C reaches only the demo, which stops it (stop()).
        from devstack.proc import spawn

        with open(self.log, "ab") as out:
            self.proc = spawn(
                args,
                env=child,
                owner=f"demo:{st.cfg.state_dir}",
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{self.NOTEBOOK}?token={self.token}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise DemoError(f"JupyterLab exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(
                    f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=2
                ).is_success:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"JupyterLab did not answer within {timeout:.0f} s; see {self.log}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class _RunFacts:
    """What the demo's rolling update left, as its closing report reads it."""

    after: dict[str, dict[str, tuple[str, str]]]  # host -> component -> (name, version)
    tasks: dict[str, dict[str, Any]]  # host -> its job task
    blockers: list[dict[str, Any]]
    users: dict[str, str]  # user id -> email
    by_host: dict[str, list[dict[str, Any]]]  # host -> its blockers
    lab_hosts: list[dict[str, Any]]
    vm_power: dict[str, bool]  # blocker VM -> powered on


def _host_outcome(
    h: str,
    task: dict[str, Any] | None,
    changed: list[str],
    bmc: Any,
    mm: float | None,
    by_host: dict[str, list[dict[str, Any]]],
    counts: dict[str, int],
    problems: list[str],
) -> str:
    """The summary's words for a host of the job (updated, skipped, or its task's status),
    counting it and noting what it did that was not decided."""
    status = task["status"] if task else "not planned"
    if status == "completed":
        counts["updated"] += 1
        counts["components"] += len(changed)
        if not changed or bmc.boot_count != 1:
            problems.append(
                f"{h}: completed with {len(changed)} components changed and "
                f"{bmc.boot_count} reboots (want >0 and 1)"
            )
        return "updated" + (
            f", {mm:.1f} s in maintenance (~{mm * LAB_SCALE / 60:.0f} min at the lab's clock)"
            if mm is not None
            else ""
        )
    if status == "skipped":
        assert task is not None
        counts["skipped"] += 1
        reason = (task.get("details") or {}).get("reason", "")
        if changed or bmc.flashes or bmc.boot_count or mm is not None:
            problems.append(
                f"{h}: skipped but touched (changed {changed}, flashes {len(bmc.flashes)}, "
                f"reboots {bmc.boot_count}, maintenance {mm})"
            )
        if not any((b.get("resolution") or {}).get("action") == "skip_host" for b in by_host.get(h, [])):
            problems.append(f"{h}: skipped without a skip_host decision")
        return f"skipped ({reason}), never in maintenance, firmware unchanged"
    problems.append(f"{h}: task {status} {task.get('error') if task else ''}".strip())
    return status


def _print_blocker(h: str, b: dict[str, Any], facts: _RunFacts, problems: list[str]) -> None:
    """One blocker of host ``h`` and its decision, noting a missing one or a VM left off."""
    res = b.get("resolution")
    vm = (b.get("details") or {}).get("vm_name", "?")
    if res:
        who = facts.users.get(res.get("resolved_by"), res.get("resolved_by") or "?")
        decision = f"{res['action']} by {who}" + (f" ({res['note']})" if res.get("note") else "")
        if res["action"] == "power_off_vm":
            decision += f"; {vm} is powered {'on' if facts.vm_power.get(vm) else 'OFF'} again"
            if not facts.vm_power.get(vm):
                problems.append(f"{vm} was not powered back on")
    else:
        decision = "no decision"
        problems.append(f"blocker {b['id']} on {h} has no decision")
    print(
        f"          blocker  {vm}: {b['description'].split(': ', 1)[-1]} [{b['kind']}] \u2192 {decision}",
        flush=True,
    )


class Demo:
    def __init__(self, st, passwords: dict[str, str], once: bool = True):
        self.st = st
        self.env = st.env()
        self.passwords = passwords
        self.once = once
        self.dc = None
        self.executor: Executor | None = None
        self.jupyter: Jupyter | None = None
        self.zfs: Any = None  # the ZFS storage hosts (ZfsSshLab)
        self.clients: dict[str, Any] = {}
        self.interrupted = asyncio.Event()  # set by Ctrl-C or SIGTERM while run() waits
        self.automation: Any = None  # the service-key client that queues the read-only jobs

    # --- helpers -------------------------------------------------------------------------------
    async def client(self, email: str):
        from supabase import acreate_client

        if email not in self.clients:
            c = await acreate_client(self.env["SUPABASE_URL"], self.env["SUPABASE_ANON_KEY"])
            await c.auth.sign_in_with_password({"email": email, "password": self.passwords[email]})
            self.clients[email] = c
        return self.clients[email]

    async def invoke(self, email: str, fn: str, body: dict[str, Any]) -> dict[str, Any]:
        from supabase_functions.errors import FunctionsHttpError

        c = await self.client(email)
        try:
            raw = await c.functions.invoke(fn, invoke_options={"body": body})
        except FunctionsHttpError as exc:
            raise DemoError(f"{fn} refused: {exc.message}") from None
        return json.loads(raw)

    async def wait_job(
        self,
        email: str,
        job_id: str,
        timeout: float | None,
        on_step=None,
        until=lambda job: job["status"] in (*TERMINAL, "paused"),
    ) -> dict[str, Any]:
        """Follow a job over Realtime (jobs + workflow_executions) until ``until(job)`` holds;
        the job row is read through REST on every change (and every few seconds, should a
        Realtime message be lost). ``timeout=None`` waits as long as it takes (an operator)."""
        c = await self.client(email)
        changed = asyncio.Event()
        seen: dict[str, str] = {}

        def on_wf(payload: dict) -> None:
            rec = payload["data"]["record"]
            key = f"{rec.get('step_key') or rec.get('name')}"
            if seen.get(key) != rec.get("status"):
                seen[key] = rec.get("status")
                if on_step:
                    on_step(rec)

        subscribed = asyncio.Event()
        ch = c.channel(f"demo-job-{job_id}-{secrets.token_hex(3)}")
        ch.on_postgres_changes(
            "UPDATE",
            schema="public",
            table="jobs",
            filter=f"id=eq.{job_id}",
            callback=lambda _payload: changed.set(),
        )
        ch.on_postgres_changes(
            "*", schema="public", table="workflow_executions", filter=f"job_id=eq.{job_id}", callback=on_wf
        )
        await ch.subscribe(
            lambda status, err=None: subscribed.set() if str(status).endswith("SUBSCRIBED") else None
        )
        await asyncio.wait_for(subscribed.wait(), 15)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                changed.clear()  # before the read: a change after it wakes the wait below
                row = (
                    await c.table("jobs")
                    .select("id,status,pause_reason,error,result")
                    .eq("id", job_id)
                    .single()
                    .execute()
                ).data
                if until(row):
                    return row
                left = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
                if left <= 0:
                    raise DemoError(f"job {job_id} is still {row['status']} after {timeout:.0f} s")
                if self.interrupted.is_set():
                    raise KeyboardInterrupt
                woke = asyncio.ensure_future(changed.wait())
                stop = asyncio.ensure_future(self.interrupted.wait())
                try:
                    await asyncio.wait({woke, stop}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woke.cancel()
                    stop.cancel()
                if self.interrupted.is_set():
                    raise KeyboardInterrupt
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(c.remove_channel(ch), 5)

    async def run_job(
        self,
        job_type: str,
        site_id: str,
        params: dict[str, Any],
        credential_set_ids: list[str],
        description: str,
    ) -> tuple[dict[str, Any], float]:
        """A low-risk, read-only job queued as the site's scheduled automation would, with the
        service key: ``create-job`` does not take ``inventory_refresh`` or
        ``firmware_compliance`` yet, and users insert no jobs themselves. It must complete."""
        from supabase import acreate_client

        if self.automation is None:
            self.automation = await acreate_client(
                self.env["SUPABASE_URL"], self.env["SUPABASE_SERVICE_ROLE_KEY"]
            )
        t0 = time.perf_counter()
        job = (
            await self.automation.table("jobs")
            .insert(
                {
                    "type": job_type,
                    "site_id": site_id,
                    "params": params,
                    "credential_set_ids": credential_set_ids,
                    "description": description,
                }
            )
            .execute()
        ).data[0]
        row = await self.wait_job(OP, job["id"], SMALL_JOB_TIMEOUT_S, until=lambda j: j["status"] in TERMINAL)
        if row["status"] != "completed":
            raise DemoError(f"{job_type} ended {row['status']}: {row.get('error')}")
        return row, time.perf_counter() - t0

    def vsphere(self):
        from executor.targets.endpoint import Endpoint
        from executor.targets.vsphere import VSphereClient

        vc = self.dc.vcenter
        return VSphereClient(
            Endpoint(f"https://{vc.host}:{vc.port}", vc.username, vc.password, ca_bundle=str(vc.ca_file))
        )

    def cluster_settings(self) -> dict[str, Any]:
        """The demo cluster's HA/DRS settings as vCenter reports them now."""
        with self.vsphere() as client:
            return client.read_cluster_settings(client.inventory().cluster_by_name(LAB_CLUSTER["name"]).moid)

    def versions(self) -> dict[str, dict[str, tuple[str, str]]]:
        """Every lab host's firmware as its iDRAC reports it: component id -> (name, version)."""
        return {
            h: {c.component_id: (c.name, c.version) for c in self.dc.bmc(h).components}
            for h in self.dc.host_bmc
        }

    # --- the stages ----------------------------------------------------------------------------
    def start_jupyter(self) -> None:
        self.jupyter = Jupyter(self.st, self.env)

    def start_lab(self) -> None:
        from devstack.lab.datacentre import DataCentre

        t0 = time.perf_counter()
        self.dc = DataCentre(
            LAB_CLUSTERS,
            time_scale=LAB_SCALE,
            timing=LAB_TIMING,
            migrate_ms=5,
            migrate_ms_per_gb=2,
            ome=True,
            workdir=self.st.cfg.state_dir / "demo-lab",
        )
        self.dc.start()
        hosts = self.dc.vcenter.lab_hosts()
        clusters = ", ".join(
            f"{c['name']} ({sum(1 for h in hosts if h['cluster'] == c['name'])} ESXi hosts)"
            for c in LAB_CLUSTERS
        )
        say(
            "lab",
            f"vCenter {self.dc.vcenter.url} with clusters {clusters} on {len(hosts)} simulated iDRACs, "
            f"OpenManage Enterprise {self.dc.ome_sim.url}, firmware repository {self.dc.catalog_url} "
            f"(clock x{LAB_SCALE:.0f}, started in {time.perf_counter() - t0:.1f} s)",
        )
        for vm in BLOCKER_VMS:
            print(
                f"      {LAB_CLUSTER['name']}-esx{vm['host'] + 1:02d} runs VM {vm['name']} with "
                f"{', '.join(vm['devices'])}",
                flush=True,
            )
        self.start_zfs()

    def start_zfs(self) -> None:
        """The two ZFS storage hosts: one sshd on loopback (a port per host, its own host key),
        sessions forced into the zfs stand-in; the source dataset gets some data, the target
        only its parent. Stopped with the rest (stop()); sshd dies with the demo regardless."""
        from devstack.lab.esxi_ssh import SshdStartError
        from devstack.lab.zfs_ssh import ZfsSshLab

        t0 = time.perf_counter()
        src, dst = ZFS_HOSTS
        try:
            self.zfs = ZfsSshLab(
                list(ZFS_HOSTS),
                workdir=self.st.cfg.state_dir / "demo-zfs",
                owner=f"demo:{self.st.cfg.state_dir}",
            ).start()
        except SshdStartError as exc:
            raise DemoError(f"the ZFS storage hosts did not start: {exc}") from None
        self.zfs.zfs(src, "create", "-p", ZFS_PAIR["source_dataset"])
        self.zfs.zfs(dst, "create", "-p", ZFS_PAIR["target_dataset"].rsplit("/", 1)[0])
        for name, size in ZFS_DATA.items():
            self.zfs.write(src, ZFS_PAIR["source_dataset"], name, os.urandom(size))
        say(
            "zfs lab",
            f"storage hosts {src} ({self.zfs.address(src)}) and {dst} ({self.zfs.address(dst)}): "
            f"OpenSSH sshd with its own host key, zfs stand-in; {src}:{ZFS_PAIR['source_dataset']} "
            f"holds {sum(ZFS_DATA.values()) / 1e6:.1f} MB (started in {time.perf_counter() - t0:.1f} s)",
        )

    async def start_executor(self) -> dict[str, Any]:
        self.executor = Executor(self.st, self.dc.executor_time_scale)
        admin = await self.client(ADMIN)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.executor.proc.poll() is not None:
                raise DemoError(
                    f"the executor exited with {self.executor.proc.returncode}; see {self.executor.log}"
                )
            rows = (
                await admin.table("executors")
                .select("id,name,key_id,version,last_heartbeat_at")
                .eq("name", "demo-executor")
                .execute()
            ).data
            if rows and rows[0].get("key_id"):
                say(
                    "executor",
                    f"registered as {rows[0]['name']} (key {rows[0]['key_id'][:12]}\u2026), "
                    f"log {self.executor.log}",
                )
                return rows[0]
            await asyncio.sleep(0.3)
        raise DemoError("the executor did not register within 60 s")

    async def register_lab(self, site_id: str) -> dict[str, Any]:
        vc = self.dc.vcenter
        sealed_vc = await self.invoke(
            ADMIN,
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": site_id,
                "name": "lab-vcenter",
                "kind": "vcenter",
                "username": vc.username,
                "secret": vc.password,
                "endpoints": self.dc.vcenter_endpoints(),
            },
        )
        sealed_idrac = await self.invoke(
            ADMIN,
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": site_id,
                "name": "lab-idrac",
                "kind": "idrac",
                "username": "root",
                "secret": self.dc.idrac_password,
                "endpoints": self.dc.idrac_endpoints(),
            },
        )
        sealed_ome = await self.invoke(
            ADMIN,
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": site_id,
                "name": "lab-ome",
                "kind": "ome",
                "username": "admin",
                "secret": self.dc.idrac_password,
                "endpoints": self.dc.ome_endpoints(),
            },
        )
        say(
            "credentials",
            f"vCenter, iDRAC and OME secrets sealed to {len(sealed_vc['key_ids'])} executor key(s), "
            "each naming the only endpoints it may be presented to; only envelopes are stored",
        )
        c = await self.client(ADMIN)
        vcenter = (
            await c.table("vcenters")
            .insert(
                {
                    "site_id": site_id,
                    "name": "lab-vcenter",
                    "address": f"https://{vc.host}:{vc.port}",
                    "credential_set_id": sealed_vc["credential_set_id"],
                    "details": {"tls": self.dc.vcenter_tls()},
                }
            )
            .execute()
        ).data[0]
        await (
            c.table("ome_instances")
            .insert(
                {
                    "site_id": site_id,
                    "name": "lab-ome",
                    "address": self.dc.ome_sim.url,
                    "credential_set_id": sealed_ome["credential_set_id"],
                }
            )
            .execute()
        )
        servers = []
        for host, i in self.dc.host_bmc.items():
            bmc = self.dc.idrac.bmcs[i]
            servers.append(
                {
                    "site_id": site_id,
                    "name": f"{host}-srv",
                    "idrac_address": self.dc.idrac.url(i),
                    "service_tag": bmc.service_tag,
                    "model": bmc.model,
                    "credential_set_id": sealed_idrac["credential_set_id"],
                    "details": {"tls": self.dc.idrac_tls()},
                }
            )
        rows = (await c.table("servers").insert(servers).execute()).data
        say(
            "inventory",
            f"vCenter, OME and {len(rows)} PowerEdge servers of {len(LAB_CLUSTERS)} clusters "
            "registered by the admin",
        )
        return {
            "vcenter_id": vcenter["id"],
            "idrac_credential_set_id": sealed_idrac["credential_set_id"],
            "servers": {r["name"][:-4]: r["id"] for r in rows},
        }

    async def register_replication(self, site_id: str) -> dict[str, Any]:
        """The admin seals the storage hosts' SSH login with their pinned host keys
        (``known_hosts: "sealed"``, docs/replication.md) and registers the pair; the operator
        then syncs it now (``create-job`` ``replication_sync``). The job runs alongside the
        ones below (the executor takes several at once); the summary reports it."""
        lab = self.zfs
        src, dst = ZFS_HOSTS
        secret = json.dumps({"private_key": lab.client_key.read_text(), "host_keys": lab.host_keys()})
        sealed = await self.invoke(
            ADMIN,
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": site_id,
                "name": "lab-zfs",
                "kind": "ssh",
                "username": lab.username,
                "secret": secret,
                "endpoints": [
                    {"url": f"ssh://{lab.address(h)}", "tls": {"known_hosts": "sealed"}} for h in ZFS_HOSTS
                ],
            },
        )
        c = await self.client(ADMIN)
        pair = (
            await c.table("replication_pairs")
            .insert(
                {
                    "site_id": site_id,
                    **ZFS_PAIR,
                    "source_host": lab.address(src),
                    "target_host": lab.address(dst),
                    "credential_set_id": sealed["credential_set_id"],
                }
            )
            .execute()
        ).data[0]
        say(
            "replication pair",
            f"{pair['name']}: {src}:{pair['source_dataset']} \u2192 {dst}:{pair['target_dataset']} "
            f"({pair['schedule']}, max lag {pair['max_lag_seconds'] // 60} min) registered by the "
            "admin; its SSH key and pinned host keys sealed, each endpoint trusted by those keys",
        )
        job = await self.invoke(
            OP,
            "create-job",
            {
                "type": "replication_sync",
                "site_id": site_id,
                "params": {"replication_pair_ids": [pair["id"]]},
            },
        )
        say(
            "replication_sync",
            f"job {job['job_id'][:8]} created by {OP} (sync now); it runs alongside the jobs "
            "below, the summary reports it",
        )
        return {"pair_id": pair["id"], "job_id": job["job_id"], "t0": time.perf_counter()}

    async def replication_report(self, repl: dict[str, Any]) -> dict[str, Any]:
        """The pair in the closing summary: what its sync did (bytes, lag, last success)."""
        row = await self.wait_job(
            OP, repl["job_id"], SMALL_JOB_TIMEOUT_S, until=lambda j: j["status"] in TERMINAL
        )
        c = await self.client(OP)
        p = (await c.table("replication_pairs").select("*").eq("id", repl["pair_id"]).single().execute()).data
        runs = (
            await c.table("replication_runs")
            .select("status,kind,bytes,duration_ms,lag_seconds")
            .eq("pair_id", repl["pair_id"])
            .execute()
        ).data
        src, dst = ZFS_HOSTS
        problems = []
        if row["status"] != "completed":
            problems.append(f"replication_sync ended {row['status']}: {row.get('error')}")
        if p.get("last_status") != "succeeded" or not p.get("last_success_at") or not p.get("last_bytes"):
            problems.append(f"pair {p['name']} is {p.get('last_status')}: {p.get('last_error')}")
        elif self.zfs.snapshots(dst, p["target_dataset"]) != self.zfs.snapshots(src, p["source_dataset"]):
            problems.append(f"{dst}:{p['target_dataset']} does not hold the source's snapshots")
        elif any(
            self.zfs.read(dst, p["target_dataset"], f) != self.zfs.read(src, p["source_dataset"], f)
            for f in ZFS_DATA
        ):
            problems.append(f"{dst}:{p['target_dataset']} differs from {src}:{p['source_dataset']}")
        if problems:
            raise DemoError("the ZFS pair did not sync: " + "; ".join(problems))
        kind = ", ".join(r["kind"] for r in runs if r["status"] == "succeeded")
        success = dt.datetime.fromisoformat(p["last_success_at"]).astimezone(dt.UTC)
        print(
            f"      replication {p['name']}  {src}:{p['source_dataset']} \u2192 {dst}:{p['target_dataset']}: "
            f"{p['last_status']} ({kind}), {p['last_bytes'] / 1e6:.1f} MB in {p['last_duration_ms'] / 1000:.1f} s, "
            f"lag {p['lag_seconds']} s (max {p['max_lag_seconds']} s), last success "
            f"{success:%H:%M:%S}Z, snapshot {p['last_snapshot']}",
            flush=True,
        )
        return {
            "pair": p["name"],
            "status": p["last_status"],
            "bytes": p["last_bytes"],
            "lag_seconds": p["lag_seconds"],
        }

    async def sync(self, site_id: str, vcenter_id: str) -> dict[str, str]:
        t0 = time.perf_counter()
        job = await self.invoke(
            OP,
            "create-job",
            {"type": "vcenter_sync", "site_id": site_id, "params": {"vcenter_id": vcenter_id}},
        )
        row = await self.wait_job(
            OP, job["job_id"], SMALL_JOB_TIMEOUT_S, until=lambda j: j["status"] in TERMINAL
        )
        if row["status"] != "completed":
            raise DemoError(f"vcenter_sync ended {row['status']}: {row.get('error')}")
        c = await self.client(OP)
        clusters = (
            await c.table("clusters").select("id,name").eq("vcenter_id", vcenter_id).order("name").execute()
        ).data
        hosts = (await c.table("esxi_hosts").select("name,server_id,cluster_id").execute()).data
        vms = (await c.table("vms").select("id").eq("vcenter_id", vcenter_id).execute()).data
        parts = []
        for cl in clusters:
            mine = [h for h in hosts if h["cluster_id"] == cl["id"]]
            parts.append(
                f"{cl['name']} {len(mine)} hosts ({sum(1 for h in mine if h.get('server_id'))} linked "
                "to their servers)"
            )
        say(
            "vcenter_sync",
            f"job {job['job_id'][:8]} completed in {time.perf_counter() - t0:.1f} s: "
            + ", ".join(parts)
            + f", {len(vms)} VMs",
        )
        by_name = {cl["name"]: cl["id"] for cl in clusters}
        if set(by_name) != {c["name"] for c in LAB_CLUSTERS}:
            raise DemoError(f"vcenter_sync found clusters {sorted(by_name)}")
        return by_name

    async def inventory_refresh(self, site_id: str, reg: dict[str, Any]) -> None:
        row, took = await self.run_job(
            "inventory_refresh",
            site_id,
            {"server_ids": [], "max_parallel": 8},
            [reg["idrac_credential_set_id"]],
            "demo: read every iDRAC of the site",
        )
        c = await self.client(OP)
        servers = (
            await c.table("servers")
            .select("id,model,bios_version,idrac_version,power_state,last_seen_at")
            .eq("site_id", site_id)
            .execute()
        ).data
        seen = [s for s in servers if s.get("last_seen_at")]
        fw = (
            await c.table("server_firmware")
            .select("server_id")
            .in_("server_id", [s["id"] for s in servers])
            .execute()
        ).data
        models = sorted({s["model"] for s in seen})
        say(
            "inventory_refresh",
            f"job {row['id'][:8]} (site automation) completed in {took:.1f} s: "
            f"{len(seen)}/{len(servers)} iDRACs "
            f"read ({', '.join(models)}), {len(fw)} firmware components recorded",
        )
        if len(seen) != len(servers):
            raise DemoError("inventory_refresh did not read every iDRAC")

    async def compliance(self, site_id: str, reg: dict[str, Any], label: str) -> dict[str, dict[str, int]]:
        """A firmware compliance report of every server against the lab catalog; per cluster:
        servers compliant, servers with updates, updates."""
        ids = [str(s) for s in reg["servers"].values()]
        row, took = await self.run_job(
            "firmware_compliance",
            site_id,
            {"catalog_url": self.dc.catalog_url, "server_ids": ids},
            [reg["idrac_credential_set_id"]],
            f"demo: firmware compliance {label}",
        )
        c = await self.client(OP)
        servers = (await c.table("servers").select("id,name,details").in_("id", ids).execute()).data
        per: dict[str, dict[str, int]] = {}
        for s in servers:
            comp = (s.get("details") or {}).get("firmware_compliance") or {}
            cluster = s["name"].rsplit("-esx", 1)[0]
            d = per.setdefault(cluster, {"compliant": 0, "outdated": 0, "updates": 0})
            d["compliant" if comp.get("status") == "compliant" else "outdated"] += 1
            d["updates"] += int(comp.get("updates") or 0)
        say(
            f"firmware_compliance ({label})",
            f"job {row['id'][:8]} (site automation) completed in {took:.1f} s against catalog {self.dc.catalog_url}: "
            + "; ".join(
                f"{k} {v['compliant']} compliant, {v['outdated']} with {v['updates']} updates available"
                for k, v in sorted(per.items())
            )
            + " (report stored as an artifact)",
        )
        return per

    async def window(self, site_id: str, cluster_id: str) -> str:
        now = dt.datetime.now(dt.UTC)
        requester, approver = "approver@rackpilot.local", ADMIN
        created = await self.invoke(
            requester,
            "maintenance-windows",
            {
                "action": "create",
                "site_id": site_id,
                "cluster_id": cluster_id,
                "title": f"{LAB_CLUSTER['name']} firmware",
                "reason": "quarterly BIOS/iDRAC/NIC baseline",
                "starts_at": (now + dt.timedelta(seconds=WINDOW_LEAD_S)).isoformat(),
                "ends_at": (now + dt.timedelta(hours=2)).isoformat(),
            },
        )
        window_id = created["window_id"]
        try:
            await self.invoke(requester, "maintenance-windows", {"action": "approve", "window_id": window_id})
        except DemoError as exc:
            refusal = str(exc)
        else:
            raise DemoError("the requester approved their own window: four-eyes is broken")
        await self.invoke(approver, "maintenance-windows", {"action": "approve", "window_id": window_id})
        say(
            "maintenance window",
            f"{LAB_CLUSTER['name']}, opens in {WINDOW_LEAD_S} s: requested by {requester}, "
            f"self-approval refused ({refusal}), approved by {approver}",
        )
        return window_id

    async def blockers(self, job_id: str) -> list[dict[str, Any]]:
        """The job's blockers (REST, as the operator) with the decisions taken on them."""
        c = await self.client(OP)
        rows = (
            await c.table("job_blockers")
            .select("id,kind,description,details,status,detected_at")
            .eq("job_id", job_id)
            .order("detected_at")
            .execute()
        ).data
        decided = {
            r["blocker_id"]: r
            for r in (
                await c.table("blocker_resolutions")
                .select("blocker_id,action,note,resolved_by,created_at")
                .eq("job_id", job_id)
                .execute()
            ).data
        }
        for r in rows:
            r["resolution"] = decided.get(r["id"])
        return rows

    async def decide(self, job_id: str, blockers: list[dict[str, Any]]) -> dict[str, Any]:
        """Run-once mode: the operator's decisions, through ``resolve-blockers``."""
        decisions = []
        for b in blockers:
            kind = (b.get("details") or {}).get("scan_kind", b["kind"])
            if kind not in DECISIONS:
                raise DemoError(f"unexpected blocker: {b['description']}")
            action, note = DECISIONS[kind]
            decisions.append({"blocker_id": b["id"], "decision": action, "note": note})
        res = await self.invoke(
            OP, "resolve-blockers", {"job_id": job_id, "decisions": decisions, "resume": True}
        )
        if not res.get("resumed"):
            raise DemoError(f"resolve-blockers did not resume the job: {res}")
        say(
            "resolve-blockers",
            f"{OP} decided "
            + ", ".join(
                f"{(b.get('details') or {}).get('vm_name')} \u2192 {d['decision']}"
                for b, d in zip(blockers, decisions, strict=True)
            )
            + f"; job resumed ({res['status']})",
        )
        return res

    def operator_instructions(self, job_id: str) -> None:
        pw_file = self.st.cfg.state_dir / "demo-users.json"
        print(
            "\n  \u23f8 the rolling update waits for an operator's decision. Decide in the blocker notebook:\n"
            f"      open      {self.jupyter.url if self.jupyter else '(JupyterLab did not start)'}\n"
            f"      sign in   as {OP} with its password from {pw_file}\n"
            f"      decide    job {job_id}: e.g. power off {BLOCKER_VMS[0]['name']} (back on after its host), "
            f"skip the host of {BLOCKER_VMS[1]['name']}; then save and resume\n"
            "  waiting for the job to resume (Realtime)\u2026 Ctrl-C stops the demo\n",
            flush=True,
        )

    async def rolling_update(self, site_id: str, cluster_id: str, window_id: str) -> dict[str, Any]:
        body = {
            "type": "rolling_cluster_update",
            "site_id": site_id,
            "maintenance_window_id": window_id,
            "params": {
                "cluster_id": cluster_id,
                "firmware": {"catalog_url": self.dc.catalog_url},
                "max_parallel_hosts": 1,
                "failure_budget": 0,
            },
        }
        plan = await self.invoke(OP, "create-job", {**body, "dry_run": True})
        say("dry run", f"plan for {len(plan['plan'].get('tasks', []))} targets, nothing written")
        t0 = time.perf_counter()
        created = await self.invoke(OP, "create-job", body)
        job_id = created["job_id"]
        say(
            "rolling_cluster_update",
            f"job {job_id} created (it starts when the window opens); following it over Realtime:",
        )

        def on_step(rec: dict) -> None:
            status = rec.get("status")
            if status in ("completed", "failed", "paused"):
                det = rec.get("details") or {}
                extra = ""
                if isinstance(det, dict) and det.get("host"):
                    extra = f" [{det['host']}]"
                took = ""
                if rec.get("started_at") and rec.get("finished_at"):
                    a = dt.datetime.fromisoformat(rec["started_at"])
                    b = dt.datetime.fromisoformat(rec["finished_at"])
                    took = f" in {(b - a).total_seconds():.1f} s"
                print(
                    f"      step {rec.get('seq', '?'):>2} {rec.get('name')}{extra}: {status}{took}",
                    flush=True,
                )

        paused_s = 0.0
        pauses = 0
        deadline = time.monotonic() + JOB_TIMEOUT_S
        row = await self.wait_job(OP, job_id, JOB_TIMEOUT_S, on_step=on_step)
        while row["status"] == "paused" and row.get("pause_reason") == "blockers":
            pauses += 1
            p0 = time.perf_counter()
            found = [b for b in await self.blockers(job_id) if b["status"] == "open"]
            say(
                "blockers",
                f"the job paused before touching the cluster (HA/DRS as they were, no host in "
                f"maintenance): {len(found)} blocker(s)",
            )
            for b in found:
                print(f"      {b['description']} [{b['kind']}]", flush=True)
            if self.once:
                if pauses > 1:
                    raise DemoError("the job paused for blockers again after the operator's decisions")
                await self.decide(job_id, found)
            else:
                self.operator_instructions(job_id)
                row = await self.wait_job(
                    OP,
                    job_id,
                    None,
                    on_step=on_step,
                    until=lambda j: not (j["status"] == "paused" and j.get("pause_reason") == "blockers"),
                )
                say(
                    "resumed",
                    f"after {time.perf_counter() - p0:.0f} s: the operator's decisions are recorded",
                )
            paused_s += time.perf_counter() - p0
            deadline = time.monotonic() + JOB_TIMEOUT_S
            row = await self.wait_job(OP, job_id, max(1.0, deadline - time.monotonic()), on_step=on_step)
        if row["status"] != "completed":
            raise DemoError(
                f"the rolling update ended {row['status']}"
                f"{' (' + row['pause_reason'] + ')' if row.get('pause_reason') else ''}: {row.get('error')}"
            )
        took = time.perf_counter() - t0
        say(
            "rolling_cluster_update",
            f"completed in {took:.1f} s"
            + (f" ({paused_s:.1f} s of it waiting for decisions)" if pauses else ""),
        )
        return {"job_id": job_id, "seconds": round(took, 1), "paused_for_blockers": pauses > 0}

    async def report(
        self,
        job_id: str,
        servers: dict[str, str],
        before: dict[str, dict[str, tuple[str, str]]],
        settings_before: dict[str, Any],
        clock: MaintenanceClock,
        sampler: Any,
        repl: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The closing summary per host, then the expectations, the safety invariants
        (DESIGN.md §5) and the audit chain."""
        from devstack.testing import invariants as inv

        cluster = LAB_CLUSTER["name"]
        inv.wait_quiet(
            lambda: all(h["connection_state"] == "connected" for h in self.dc.vcenter.lab_hosts()), 15
        )
        facts = await self._run_facts(job_id)
        problems: list[str] = []
        counts = {"updated": 0, "skipped": 0, "components": 0}
        say(
            "summary",
            f"cluster {cluster}, job {job_id[:8]}; times are real seconds, the lab's clock runs "
            f"x{LAB_SCALE:.0f}",
        )
        for h in sorted(before):
            self._report_host(h, cluster, before, facts, clock, counts, problems)
        others = sorted({h["cluster"] for h in facts.lab_hosts} - {cluster})
        print(
            f"      {', '.join(others)}: not part of this job; firmware unchanged, no host in maintenance",
            flush=True,
        )
        replication = await self.replication_report(repl) if repl else None
        if not facts.blockers:
            problems.append("the job never paused for the blocker VMs")
        if problems:
            raise DemoError("the rolling update did not do what was decided: " + "; ".join(problems))
        self._check_invariants(job_id, cluster, before, servers, settings_before, sampler, facts.lab_hosts)
        return {
            "hosts_updated": counts["updated"],
            "hosts_skipped": counts["skipped"],
            "components_updated": counts["components"],
            "blockers": len(facts.blockers),
            "decisions": {
                (b.get("details") or {}).get("vm_name"): (b.get("resolution") or {}).get("action")
                for b in facts.blockers
            },
            **({"replication": replication} if replication else {}),
        }

    async def _run_facts(self, job_id: str) -> _RunFacts:
        """What the rolling update left: versions, host tasks, blockers and who decided them,
        the lab's hosts and the blocker VMs' power."""
        after = self.versions()
        c = await self.client(OP)
        tasks = {
            t["target_name"]: t
            for t in (
                await c.table("job_tasks")
                .select("target_name,status,details,error")
                .eq("job_id", job_id)
                .eq("target_kind", "host")
                .execute()
            ).data
        }
        blockers = await self.blockers(job_id)
        users = {}
        for email, cl in self.clients.items():
            session = await cl.auth.get_session()
            if session and session.user:
                users[session.user.id] = email
        by_host: dict[str, list[dict[str, Any]]] = {}
        for b in blockers:
            by_host.setdefault((b.get("details") or {}).get("host_name", "?"), []).append(b)
        lab_hosts = self.dc.vcenter.lab_hosts()
        with self.vsphere() as client:
            vms = client.inventory()
            vm_power = {vm["name"]: vms.vm_by_name(vm["name"]).powered_on for vm in BLOCKER_VMS}
        return _RunFacts(after, tasks, blockers, users, by_host, lab_hosts, vm_power)

    def _report_host(
        self,
        h: str,
        cluster: str,
        before: dict[str, dict[str, tuple[str, str]]],
        facts: _RunFacts,
        clock: MaintenanceClock,
        counts: dict[str, int],
        problems: list[str],
    ) -> None:
        """Print one host's line of the summary, its blockers and its firmware; count it and
        note what it did that was not decided."""
        bmc = self.dc.bmc(h)
        after = facts.after
        changed = [k for k in after[h] if after[h][k][1] != before[h].get(k, ("", ""))[1]]
        mm = clock.seconds(h)
        if not h.startswith(f"{cluster}-"):
            if changed or bmc.flashes or mm is not None:
                problems.append(f"{h} is not part of the job but was touched")
            return
        head = _host_outcome(h, facts.tasks.get(h), changed, bmc, mm, facts.by_host, counts, problems)
        print(f"      {h}  {head}", flush=True)
        for b in facts.by_host.get(h, []):
            _print_blocker(h, b, facts, problems)
        if changed:
            print(
                "          firmware "
                + "; ".join(f"{after[h][k][0]} {before[h][k][1]} \u2192 {after[h][k][1]}" for k in changed),
                flush=True,
            )
            same = len(after[h]) - len(changed)
            if same:
                print(f"                   {same} component(s) already current", flush=True)
        else:
            print(
                "          firmware " + "; ".join(f"{n} {v}" for n, v in after[h].values()) + " (unchanged)",
                flush=True,
            )

    def _check_invariants(
        self,
        job_id: str,
        cluster: str,
        before: dict[str, dict[str, tuple[str, str]]],
        servers: dict[str, str],
        settings_before: dict[str, Any],
        sampler: Any,
        lab_hosts: list[dict[str, Any]],
    ) -> None:
        """The safety invariants (DESIGN.md §5) and the audit chain, read from the database."""
        import psycopg2
        import psycopg2.extras

        from devstack.testing import invariants as inv

        conn = psycopg2.connect(self.env["SUPABASE_DB_URL"])
        conn.autocommit = True

        def q(sql: str, *args: Any) -> list[dict[str, Any]]:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(sql, args)
                return [dict(r) for r in cur.fetchall()] if cur.description else []

        try:
            settings_now = self.cluster_settings()
            in_mm = [h["name"] for h in lab_hosts if h["in_maintenance"]]
            flashes = {
                h: list(self.dc.bmc(h).flashes) for h in before
            }  # every host, the skipped one included
            violations = [
                *inv.hosts_out(q, sampler, {cluster: "rolling_cluster_update"}),
                *inv.settings_restored(q, job_id, settings_now, settings_before),
                *inv.blockers_respected(q, job_id, sampler.seen_out.get(cluster, set())),
                *inv.backup_before_flash(q, flashes, servers),
                *inv.window_respected(q, job_id),
                *inv.non_resumable_once(q, job_id),
                *inv.no_host_left_out(q, job_id, in_mm),
            ]
            if violations:
                raise DemoError("safety invariants violated: " + "; ".join(violations))
            say(
                "invariants",
                f"at most {sampler.peaks.get(cluster, 0)} host out of service at once (policy: 1), "
                "HA/DRS restored as recorded, no host in maintenance before its blockers were decided, "
                "an SCP backup before every flash, ran inside the approved window, no non-resumable "
                "step twice, no host left in maintenance",
            )
            broken = q("select * from public.verify_audit_chain()")  # one row per broken link
            if broken:
                raise DemoError(f"audit chain broken: {broken[0]}")
            audited = q("select count(*) as n from public.audit_log")[0]["n"]
            say("audit", f"{audited} audit entries, hash chain verified")
        finally:
            conn.close()

    async def run(self) -> dict[str, Any]:
        from devstack.testing import invariants as inv

        # Ctrl-C (and SIGTERM) while the demo waits - for an operator, say - is answered
        # here rather than by cancelling the task: a cancellation can be lost in a client
        # library's await, and the demo then went on waiting after Ctrl-C
        self.interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.interrupted.set)
        op = await self.client(OP)
        site = (await op.table("sites").select("id,name").eq("name", SITE_NAME).single().execute()).data
        say("auth", f"demo users signed in; the operator sees site {site['name']!r}")
        await self.start_executor()
        reg = await self.register_lab(site["id"])
        repl = await self.register_replication(site["id"])
        clusters = await self.sync(site["id"], reg["vcenter_id"])
        cluster_id = clusters[LAB_CLUSTER["name"]]
        # the window opens a few seconds from now; the read-only jobs run meanwhile
        window_id = await self.window(site["id"], cluster_id)
        await self.inventory_refresh(site["id"], reg)
        await self.compliance(site["id"], reg, "before")
        if self.jupyter is not None:
            await asyncio.to_thread(self.jupyter.wait_ready)
            say(
                "jupyter",
                f"JupyterLab {self.jupyter.url} (notebooks in {self.jupyter.root}); sign in as {OP} "
                f"with its password from {self.st.cfg.state_dir / 'demo-users.json'}",
            )

        settings_before = self.cluster_settings()
        before = self.versions()
        clock = MaintenanceClock(self.dc.vcenter.lab_hosts)
        with inv.OutOfServiceSampler(clock, interval=0.05) as sampler:
            result = await self.rolling_update(site["id"], cluster_id, window_id)
            inv.wait_quiet(
                lambda: all(
                    h["connection_state"] == "connected" and not h["in_maintenance"]
                    for h in self.dc.vcenter.lab_hosts()
                ),
                15,
            )
        await self.compliance(site["id"], reg, "after")
        result.update(
            await self.report(
                result["job_id"],
                {h: str(s) for h, s in reg["servers"].items()},
                before,
                settings_before,
                clock,
                sampler,
                repl,
            )
        )
        return result

    async def close_clients(self) -> None:
        for c in self.clients.values():
            try:
                await asyncio.wait_for(c.auth.sign_out(), 5)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.clients.clear()

    def stop(self) -> None:
        if self.jupyter is not None:
            self.jupyter.stop()
            self.jupyter = None
        if self.executor is not None:
            self.executor.stop()
            self.executor = None
        if self.zfs is not None:
            self.zfs.stop()
            self.zfs = None
        if self.dc is not None:
            self.dc.stop()
            self.dc = None


def run_demo(once: bool = False) -> int:
    from devstack.stack.stack import Stack, StackError
    from devstack.stack.users import add_user

    st = Stack()
    print(f"rackpilot demo \u2014 local stack in {st.cfg.state_dir}", flush=True)
    started_here = not st.healthy()
    # a stack the demo starts is the demo's: should the demo die (even SIGKILL), a watchdog stops it
    owner = st.hold() if started_here else None
    demo: Demo | None = None
    code = 0
    try:
        # a fresh schema each run: the demo registers its own lab inventory
        st.up(reset=True)
        say(
            "stack",
            f"Postgres on 127.0.0.1:{st.cfg.db_port}, gateway on {st.cfg.api_url} "
            "(REST, Auth, Realtime, Functions); migrations and seed applied by the Supabase CLI",
        )
        passwords = _demo_passwords(st)
        for email, role in DEMO_USERS.items():
            add_user(st, email, role, passwords[email])
        say(
            "users",
            ", ".join(f"{e} ({r})" for e, r in DEMO_USERS.items())
            + f"; passwords in {st.cfg.state_dir / 'demo-users.json'} (mode 0600)",
        )
        print("\n# .env for the official clients and the executor (rackpilot dev env)")
        for k, v in st.env().items():
            print(f"{k}={v}")
        print(flush=True)
        demo = Demo(st, passwords, once=once)
        if not once:
            demo.start_jupyter()  # starts while the lab and the jobs run; the URL comes once it answers
        demo.start_lab()

        async def main() -> dict[str, Any]:
            try:
                return await demo.run()
            finally:
                await demo.close_clients()

        result = asyncio.run(main())
        print(f"\nmain job OK: {json.dumps(result)}", flush=True)
    except (StackError, DemoError) as exc:
        _write(f"\ndemo failed: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # stdout's reader is gone (`make demo | tee`, tee killed by the same Ctrl-C)
        _detach(sys.stdout)
        code = 130
    return _finish(
        st, demo, owner, stop_stack=started_here or not once, wait=code == 0 and not once, code=code
    )


def _finish(st, demo: Demo | None, owner, stop_stack: bool, wait: bool, code: int) -> int:
    """The demo's end: wait for Ctrl-C when asked to stay up, then stop the executor, the lab
    and (``stop_stack``) the stack, and release the stack's watchdog (``owner``).

    It runs to the end whatever happens on the way: from here on Ctrl-C and SIGTERM only ask
    to stop (a second Ctrl-C does not cut the cleanup short), output to a closed pipe is
    dropped (``_write``), and a step that fails does not skip the next. When the stack could
    not be stopped the watchdog stays armed and tries again as this process exits."""
    import threading

    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()  # nothing else: a handler that wrote could re-enter a write under way

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if wait:
        _write(
            "\neverything stays up: the stack, the lab and the executor. Open the notebooks with "
            "the demo users' passwords (see above). Press Ctrl-C to stop."
        )
        while not stop.wait(0.5):
            pass
    if wait or code == 130:
        _write("\nstopping\u2026")
    stack_stopped = True
    if demo is not None:
        try:
            demo.stop()
        except Exception as exc:  # noqa: BLE001 - the stack must still be stopped
            _write(f"stopping the demo's executor and lab failed: {exc}", err=True)
            code = code or 1
    if stop_stack:
        try:
            st.down()
        except Exception as exc:  # noqa: BLE001 - reported; the watchdog retries at exit
            _write(f"stopping the stack failed: {exc}", err=True)
            stack_stopped = False
            code = code or 1
    if owner is not None and stack_stopped:
        owner.release()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _detach(sys.stdout)
    return code
