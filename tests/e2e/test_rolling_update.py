"""The rolling cluster update end to end: real executor processes on the real local stack,
driving one coherent simulated data centre (iDRAC BMCs linked to vCenter hosts, firmware
repository), with operator decisions through the ``resolve-blockers`` edge function.

Scenario matrix (one lab cluster each; every scenario ends with the safety invariants):

=================  ====================================================  ==========================
scenario           what happens                                          expected outcome
=================  ====================================================  ==========================
happy (2 x 4)      two clusters rolled at once                          completed, 8 hosts updated
blockers           one VM per blocker kind; operator powers VMs off,    paused with exactly those
                   skips the pinned VM's host                           blockers, then completed;
                                                                        skipped host untouched
maintenance        evacuation slower than its memory-based budget       failed; HA restored, no
timeout                                                                 host left in maintenance
firmware failure   second host's firmware job fails, budget 0           failed after host 2; host
                                                                        3's firmware, staged ahead,
                                                                        removed; never rebooted
no stage ahead     the same with stage_ahead false                      host 3 never sent firmware
cancel             cancel while host 1 is being updated                 host 1 finished, then
                                                                        cancelled; HA restored
operator pause     pause while host 1 is being updated, then resume     paused between hosts (no
                                                                        host out), resumed without
                                                                        touching host 1 again
kill -9 in         executor killed while a host enters maintenance,     recovered, completed
maintenance        lease recovery, second executor
kill -9 in apply   executor killed during the firmware reboot           recovered without a second
                                                                        flash, completed
pre-flight gates   LC busy; an iDRAC job running; catalog unreachable   failed in preflight naming
                   (one at a time)                                      the gate; nothing touched
N+1 capacity       the hosts left cannot hold the VMs plus HA's         failed in preflight with the
                   failover host                                        bound explained; untouched
replication gate   a host holds the target of a pair lagging beyond     paused (replication_lag, no
                   its policy; operator overrides with a reason          host out, HA untouched),
                   (create-job and resolve-blockers as an operator)     then completed; override
                                                                        recorded and audited
=================  ====================================================  ==========================
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from supabase_functions.errors import FunctionsHttpError

from devstack.cli import add_user
from devstack.lab.datacentre import DataCentre
from devstack.testing import invariants as inv
from executor.targets.endpoint import Endpoint
from executor.targets.vsphere import VSphereClient, VSphereTimeouts
from supabase import create_client
from tests.e2e.executor_harness import Harness, wait_until
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL

LAB_SCALE = 400.0
HA = {"enabled": True, "admission_control": True, "failover_level": 1}


def _cluster(name: str, hosts: int = 3, vms_per_host: int = 2, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "hosts": hosts,
        "vms_per_host": vms_per_host,
        "host_memory_mb": 262144,
        "vm_memory_mb": 2048,
        "ha": HA,
        **kw,
    }


BLOCKER_VMS = [  # (vm, host index, lab device kind or None for the pinned VM)
    ("bv-usb", 0, "usb_passthrough"),
    ("bv-cdhost", 0, "cdrom_host_device"),
    ("bv-ft", 1, "ft"),
    ("bv-vgpu", 1, "vgpu"),
    ("bv-pci", 2, "pci_passthrough"),
    ("bv-local", 2, "local_disk"),
    ("bv-floppy", 3, "floppy_connected"),
    ("bv-cdiso", 3, "cdrom_local_iso"),
    ("bv-pinned", 4, None),
]
# scan kind the blocker scan reports per lab device kind, and the data model's kind
SCAN_KIND = {
    "usb_passthrough": "usb_passthrough",
    "cdrom_host_device": "cdrom_connected",
    "ft": "fault_tolerance",
    "vgpu": "vgpu",
    "pci_passthrough": "pci_passthrough",
    "local_disk": "local_storage",
    "floppy_connected": "floppy_connected",
    "cdrom_local_iso": "cdrom_connected",
    None: "host_affinity",
}
DB_KIND = {
    k: (
        k
        if k
        in (
            "usb_passthrough",
            "pci_passthrough",
            "vgpu",
            "fault_tolerance",
            "cdrom_connected",
            "local_storage",
        )
        else "other"
    )
    for k in SCAN_KIND.values()
}

CLUSTERS = [
    _cluster("alpha", 4),
    _cluster("beta", 4),
    _cluster(
        "blk",
        5,
        1,
        vms=[{"name": n, "host": i, "devices": [d] if d else []} for n, i, d in BLOCKER_VMS],
        rules=[{"name": "pin", "vms": ["bv-pinned"], "hosts": [4], "mandatory": True}],
    ),
    # 2 x 512 GiB per host at 2 ms/GiB: ~2 s of vMotion against a 60 s budget (0.6 s here);
    # 3 TiB hosts, so two left (one kept for HA failover) still hold the 3 TiB of VMs (N+1)
    _cluster("slow", 3, 2, vm_memory_mb=512 * 1024, host_memory_mb=3 * 1024 * 1024),
    _cluster("fail", 3),
    _cluster("nsa", 3),
    _cluster("cncl", 3),
    _cluster("pse", 3),
    # 96 GiB VMs: evacuation takes a few hundred ms, a window to kill the executor in
    _cluster("crm", 3, 2, vm_memory_mb=96 * 1024, host_memory_mb=1024 * 1024),
    _cluster("cra", 3),
    # the BMC of the host being flashed is unreachable when the crashed job is resumed
    _cluster("crb", 2),
    # pre-flight gates failing one at a time
    _cluster("gate", 2),
    # 3 x 64 GiB hosts running 144 GiB of VMs, HA keeping one host free: not even one may go out
    _cluster("full", 3, 2, vm_memory_mb=24 * 1024, host_memory_mb=64 * 1024),
    # the replication gate: repl-esx02 holds the replica of a lagging pair
    _cluster("repl", 2),
    # the replication gate answered by waiting, then a real "sync now" over the ZFS lab
    _cluster("repl2", 2),
]
# Lab durations (simulated seconds) shortened where they only add waiting.
TIMING = {"scp_export": 60.0, "idrac_down": 60.0, "lc_after_idrac_reset": 20.0, "fw_download": 20.0}


class World:
    def __init__(self, stack: Any, tmp: Path):
        self.tmp = tmp
        self.dc = DataCentre(CLUSTERS, time_scale=LAB_SCALE, timing=TIMING, migrate_ms=5, migrate_ms_per_gb=2)
        self.dc.start()
        try:
            self._setup(stack, tmp)
        except BaseException:
            self.close()  # a failed set-up must not leave the lab running
            raise

    def _setup(self, stack: Any, tmp: Path) -> None:
        self.h = Harness(stack, tmp)
        self.executor = self.spawn("ru-a")
        key = self.h.one(
            "select public_key, key_id from public.executors where site_id = %s and name = 'ru-a'",
            self.h.site_id,
        )
        self.reg = self.dc.register(self.h.query, self.h.site_id, key["public_key"], key["key_id"])
        starts = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        self.window = self.h.one(
            "insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by) "
            "values (%s, 'rolling update tests', %s, %s, %s) returning id",
            self.h.site_id,
            starts,
            starts + dt.timedelta(hours=3),
            str(uuid.uuid4()),
        )["id"]
        self.h.query(
            "update public.maintenance_windows set status = 'approved', approved_by = %s where id = %s",
            str(uuid.uuid4()),
            self.window,
        )
        sync = self.create("vcenter_sync", {"vcenter_id": str(self.reg["vcenter_id"])})
        job = self.h.wait_status(sync, ("completed", "failed"), timeout=60)
        assert job["status"] == "completed", job["error"]
        self.servers = {h: str(s) for h, s in self.reg["servers"].items()}

    def spawn(self, name: str) -> Any:
        state = self.tmp / name / "state"
        if hasattr(self, "executor"):
            # the same site key, so the sealed credentials open in the new process too
            state.mkdir(parents=True, mode=0o700)
            shutil.copy(self.tmp / "ru-a" / "state" / "executor_key.pem", state / "executor_key.pem")
            (state / "executor_key.pem").chmod(0o600)
        ex = self.h.spawn(
            name,
            target_time_scale=LAB_SCALE / 4,
            max_concurrent_jobs=4,
            realtime_enabled="false",
            poll_interval=0.3,
            bmc_settle_interval_s=10,
        )  # 3 good answers 0.1 s apart here
        ex.wait_log("registered", timeout=30)
        return ex

    # jobs ----------------------------------------------------------------------------------------
    def cluster_id(self, name: str) -> str:
        return str(
            self.h.one(
                "select id from public.clusters where name = %s and vcenter_id = %s",
                name,
                self.reg["vcenter_id"],
            )["id"]
        )

    def create(self, job_type: str, params: dict[str, Any], cluster: str | None = None) -> str:
        row = {
            "type": job_type,
            "site_id": self.h.site_id,
            "params": params,
            "credential_set_ids": [str(c) for c in self.reg["credential_set_ids"]],
            "maintenance_window_id": str(self.window),
        }
        if cluster:
            row["cluster_id"] = self.cluster_id(cluster)
        return self.h.client.table("jobs").insert(row).execute().data[0]["id"]

    def rolling(self, cluster: str, **params: Any) -> str:
        body = {
            "cluster_id": self.cluster_id(cluster),
            "firmware": {"catalog_url": self.dc.catalog_url},
            **params,
        }
        return self.create("rolling_cluster_update", body, cluster)

    def tasks(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {
            r["target_name"]: r
            for r in self.h.query(
                "select target_name, status, error, details from public.job_tasks where job_id = %s "
                "and target_kind = 'host'",
                job_id,
            )
        }

    # lab -----------------------------------------------------------------------------------------
    def vsphere(self) -> VSphereClient:
        vc = self.dc.vcenter
        ep = Endpoint(f"https://{vc.host}:{vc.port}", vc.username, vc.password, ca_bundle=str(vc.ca_file))
        return VSphereClient(ep, VSphereTimeouts(poll=0.02))

    def settings(self, cluster: str) -> dict[str, Any]:
        with self.vsphere() as c:
            return c.read_cluster_settings(c.inventory().cluster_by_name(cluster).moid)

    def hosts_of(self, cluster: str) -> list[str]:
        return [h["name"] for h in self.dc.vcenter.lab_hosts() if h["cluster"] == cluster]

    def versions(self, host: str) -> dict[str, str]:
        return {c.component_id: c.version for c in self.dc.bmc(host).components}

    def check(
        self, job_id: str, cluster: str, before: dict[str, Any], sampler: inv.OutOfServiceSampler
    ) -> None:
        """The safety invariants after a scenario."""
        inv.wait_quiet(
            lambda: all(
                h["connection_state"] == "connected"
                for h in self.dc.vcenter.lab_hosts()
                if h["cluster"] == cluster
            ),
            15,
        )
        in_mm = [h["name"] for h in self.dc.vcenter.lab_hosts() if h["in_maintenance"]]
        q = self.h.query
        flashes = {h: list(self.dc.bmc(h).flashes) for h in self.hosts_of(cluster)}
        inv.assert_holds(
            [
                *inv.hosts_out(q, sampler, {cluster: "rolling_cluster_update"}),
                *inv.settings_restored(q, job_id, self.settings(cluster), before),
                *inv.blockers_respected(q, job_id, sampler.seen_out.get(cluster, set())),
                *inv.backup_before_flash(q, flashes, self.servers),
                *inv.window_respected(q, job_id),
                *inv.non_resumable_once(q, job_id),
                *inv.no_host_left_out(q, job_id, in_mm),
            ]
        )

    def close(self) -> None:
        if hasattr(self, "h"):
            self.h.close()
        self.dc.stop()


@pytest.fixture(scope="module")
def world(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-ru-"))
    w = World(stack, tmp)
    try:
        yield w
    finally:
        w.close()
        if not os.environ.get("RACKPILOT_TEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def sampler(w: World) -> inv.OutOfServiceSampler:
    return inv.OutOfServiceSampler(w.dc.vcenter.lab_hosts)


def finish(w: World, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return w.h.wait_status(job_id, ("completed", "failed", "cancelled", "paused"), timeout=timeout)


UPDATED = {"159", "25227", "104298", "105848"}


def test_happy_path_two_clusters_of_four(world):
    w = world
    before = {c: w.settings(c) for c in ("alpha", "beta")}
    assert before["alpha"]["ha"]["admission_control_enabled"]
    with sampler(w) as s:
        jobs = {c: w.rolling(c) for c in ("alpha", "beta")}
        done = {c: finish(w, j) for c, j in jobs.items()}
    for c, job in done.items():
        assert job["status"] == "completed", (c, job["error"])
        tasks = w.tasks(jobs[c])
        assert sorted(tasks) == w.hosts_of(c) and all(t["status"] == "completed" for t in tasks.values())
        for host in w.hosts_of(c):
            assert w.dc.bmc(host).boot_count == 1, host  # one reboot per host
            assert tasks[host]["details"]["scp_artifact"]
            assert tasks[host]["details"]["staged_jobs"]
        steps = [r["step_key"] for r in w.h.steps(jobs[c])]
        assert steps == [
            "preflight",
            "blocker_scan",
            "record_cluster_settings",
            "relax_cluster_settings",
            "rollout",
            "restore_cluster_settings",
            "cleanup",
        ]
        # the pre-flight report is one artifact per cluster, readable JSON
        art = w.h.query(
            "select content from public.artifacts where job_id = %s and kind = 'preflight_report'", jobs[c]
        )
        assert len(art) == 1 and json.loads(bytes(art[0]["content"]))["cluster_name"] == c
        rep = json.loads(bytes(art[0]["content"]))
        # what will change, per host and component: exactly what the rollout then flashed
        assert {(x["host"], x["target"]) for x in rep["changes"]} >= {
            (h, w.versions(h)["159"]) for h in w.hosts_of(c)
        }
        assert rep["already_compliant"] == {} and all(g["verdict"] == "ok" for g in rep["gates"].values())
        # 4 x 256 GiB, 16 GiB of VMs, HA keeping one host free: 2 could go out, the policy allows 1
        assert rep["capacity"]["bound"] == 2 and rep["capacity"]["hosts_at_once"] == 1, rep["capacity"]
        w.check(jobs[c], c, before[c], s)
        assert s.peaks[c] == 1  # each host was out in turn
    # a second run finds nothing to update and exits early, touching nothing
    again = w.rolling("alpha")
    job = finish(w, again)
    assert job["status"] == "completed" and job["result"]["checkpoint"]["nothing_to_do"] is True
    # skipped hosts say why, in the task and up front in the pre-flight report
    reasons = {h: t["details"]["reason"] for h, t in w.tasks(again).items()}
    assert sorted(reasons) == w.hosts_of("alpha") and all(
        r.startswith("already compliant: ") for r in reasons.values()
    )
    art = w.h.query(
        "select content from public.artifacts where job_id = %s and kind = 'preflight_report'", again
    )
    rep = json.loads(bytes(art[0]["content"]))
    assert rep["changes"] == [] and rep["already_compliant"] == reasons
    assert all(w.dc.bmc(h).boot_count == 1 for h in w.hosts_of("alpha"))


def test_preflight_gates_refuse_naming_the_gate(world):
    w = world
    before = w.settings("gate")
    bmc = w.dc.bmc("gate-esx02")
    cases = [
        ("lifecycle", lambda: bmc.inject(lc_stuck_busy=True), {}),
        ("job_queue", lambda: bmc.add_stale_jobs(1, "Running"), {}),
        ("catalog", lambda: None, {"firmware": {"catalog_url": "http://127.0.0.1:9/Catalog.xml"}}),
    ]
    for gate, fault, params in cases:
        fault()
        try:
            with sampler(w) as s:
                job_id = w.rolling("gate", **params)
                job = finish(w, job_id)
        finally:
            bmc.clear_faults()
            bmc.jobs.clear()
        named = "gate catalog blocks" if gate == "catalog" else f"gate-esx02: {gate} ("
        assert job["status"] == "failed" and named in job["error"], (gate, job)
        assert [r["step_key"] for r in w.h.steps(job_id)][:1] == ["preflight"]
        assert all(w.dc.bmc(h).boot_count == 0 and not w.dc.bmc(h).flashes for h in w.hosts_of("gate"))
        if gate != "catalog":
            art = w.h.query(
                "select content from public.artifacts where job_id = %s and kind = 'preflight_report'", job_id
            )
            rep = json.loads(bytes(art[0]["content"]))
            assert (
                rep["gates"]["gate-esx02"]["verdict"] == "block"
                and rep["gates"]["gate-esx01"]["verdict"] == "ok"
            )
            assert "gate-esx02: " + gate in rep["blocked"][0]
        w.check(job_id, "gate", before, s)


def test_n_plus_one_capacity_refuses_a_cluster_that_cannot_lose_a_host(world):
    w = world
    before = w.settings("full")
    with sampler(w) as s:
        job_id = w.rolling("full")
        job = finish(w, job_id)
    assert job["status"] == "failed" and "full: capacity (N+1" in job["error"], job
    assert "not even one host can go out" in job["error"] and "144 GiB" in job["error"]
    assert all(w.dc.bmc(h).boot_count == 0 for h in w.hosts_of("full"))
    art = w.h.query(
        "select content from public.artifacts where job_id = %s and kind = 'preflight_report'", job_id
    )
    assert json.loads(bytes(art[0]["content"]))["capacity"]["bound"] == 0
    w.check(job_id, "full", before, s)


def operator(w: World) -> Any:
    env = w.h.env
    email = f"op-{uuid.uuid4().hex[:8]}@rolling.test"
    add_user(w.h.stack, email, "operator", "rolling-test-pw-1")
    client = create_client(env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"])
    client.auth.sign_in_with_password({"email": email, "password": "rolling-test-pw-1"})
    return client


def test_blockers_pause_resolve_and_skip_host(world):
    w = world
    before = w.settings("blk")
    with sampler(w) as s:
        job_id = w.rolling("blk")
        job = finish(w, job_id)
        assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
        # paused before anything changed: HA untouched, no host out
        assert w.settings("blk") == before
        w.check(job_id, "blk", before, s)
        rows = w.h.query(
            "select b.id, b.kind::text as kind, b.details, v.name as vm, h.name as host "
            "from public.job_blockers b left join public.vms v on v.id = b.vm_id "
            "left join public.esxi_hosts h on h.id = b.host_id where b.job_id = %s",
            job_id,
        )
        expected = {(vm, f"blk-esx{i + 1:02d}", SCAN_KIND[d]) for vm, i, d in BLOCKER_VMS}
        assert {(r["vm"], r["host"], r["details"]["scan_kind"]) for r in rows} == expected
        assert all(r["kind"] == DB_KIND[r["details"]["scan_kind"]] for r in rows)
        decisions = [
            {
                "blocker_id": str(r["id"]),
                "decision": "skip_host" if r["vm"] == "bv-pinned" else "power_off_vm",
            }
            for r in rows
        ]
        res = operator(w).functions.invoke(
            "resolve-blockers", {"body": {"job_id": job_id, "decisions": decisions}, "responseType": "json"}
        )
        assert res["resumed"] is True, res
        job = finish(w, job_id)
    assert job["status"] == "completed", job["error"]
    tasks = w.tasks(job_id)
    assert tasks["blk-esx05"]["status"] == "skipped"
    assert w.dc.bmc("blk-esx05").boot_count == 0 and not w.dc.bmc("blk-esx05").flashes
    for i in range(4):
        host = f"blk-esx{i + 1:02d}"
        assert tasks[host]["status"] == "completed" and w.dc.bmc(host).boot_count == 1
        assert sorted(tasks[host]["details"]["powered_off_vms"])
    with w.vsphere() as c:
        now = c.inventory()
    for vm, _, _ in BLOCKER_VMS:
        assert now.vm_by_name(vm).powered_on, vm  # powered back on after its host
    w.check(job_id, "blk", before, s)


def test_replication_gate_pauses_on_a_lagging_storage_host_until_overridden_with_a_reason(world):
    """Issue 23: a rolling update created by an operator through ``create-job`` pauses in its
    blocker scan, before HA/DRS are touched and with no host out, when a host of the cluster
    holds a side of a replication pair lagging beyond ``max_lag_seconds``; ``acknowledge``
    needs a reason, and with one the job resumes and completes; the override is recorded."""
    w = world
    before = w.settings("repl")
    storage = "repl-esx02"
    name = f"ru-gate-{uuid.uuid4().hex[:6]}"
    # the storage server of repl-esx02 holds the replica (target side), 3 h behind a 1 h policy
    pid = str(
        w.h.one(
            "insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
            "target_dataset, target_server_id, max_lag_seconds, schedule, last_synced_snapshot_at) "
            "values (%s, %s, 'zfs1', %s, 'zfs2', %s, %s, 3600, 'manual', now() - interval '3 hours') returning id",
            w.h.site_id,
            name,
            f"tank/{name}",
            f"backup/{name}",
            w.servers[storage],
        )["id"]
    )
    op = operator(w)

    def invoke(fn: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return 200, op.functions.invoke(fn, {"body": body, "responseType": "json"})
        except FunctionsHttpError as exc:
            return exc.status, {"error": exc.message}

    try:
        with sampler(w) as s:
            status, res = invoke(
                "create-job",
                {
                    "type": "rolling_cluster_update",
                    "maintenance_window_id": str(w.window),
                    "params": {
                        "cluster_id": w.cluster_id("repl"),
                        "firmware": {"catalog_url": w.dc.catalog_url},
                    },
                },
            )
            assert status == 200 and res.get("job_id"), res
            job_id = res["job_id"]
            job = finish(w, job_id)
            assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
            # paused before anything changed: HA/DRS as found, no host out, nothing flashed
            assert w.settings("repl") == before
            assert not any(h["in_maintenance"] for h in w.dc.vcenter.lab_hosts() if h["cluster"] == "repl")
            assert all(w.dc.bmc(h).boot_count == 0 and not w.dc.bmc(h).flashes for h in w.hosts_of("repl"))
            steps = {r["step_key"]: r["status"] for r in w.h.steps(job_id)}
            assert steps.get("relax_cluster_settings") in (None, "pending"), steps
            w.check(job_id, "repl", before, s)
            [blk] = w.h.query(
                "select b.id, b.kind::text as kind, b.status::text as status, b.description, b.details, "
                "h.name as host from public.job_blockers b left join public.esxi_hosts h "
                "on h.id = b.host_id where b.job_id = %s",
                job_id,
            )
            assert blk["kind"] == "replication_lag" and blk["host"] == storage and blk["status"] == "open", (
                blk
            )
            assert name in blk["description"] and "3.0 h" in blk["description"], blk["description"]
            d = blk["details"]
            assert d["pair_id"] == pid and d["pair_name"] == name and d["side"] == "target", d
            assert 3 * 3600 <= d["lag_seconds"] < 3 * 3600 + 600 and d["max_lag_seconds"] == 3600, d

            # an override needs a reason: refused without one, the job stays paused
            status, res = invoke(
                "resolve-blockers",
                {"job_id": job_id, "decisions": [{"blocker_id": str(blk["id"]), "decision": "acknowledge"}]},
            )
            assert status == 409, res
            assert w.h.job(job_id)["status"] == "paused"
            reason = "replica verified by hand before the firmware window"
            status, res = invoke(
                "resolve-blockers",
                {
                    "job_id": job_id,
                    "decisions": [{"blocker_id": str(blk["id"]), "decision": "acknowledge", "note": reason}],
                },
            )
            assert status == 200 and res["resumed"] is True, res
            job = finish(w, job_id)
        assert job["status"] == "completed", job["error"]
        tasks = w.tasks(job_id)
        assert sorted(tasks) == w.hosts_of("repl") and all(
            t["status"] == "completed" for t in tasks.values()
        ), tasks
        assert all(w.dc.bmc(h).boot_count == 1 for h in w.hosts_of("repl"))  # the storage host included
        # the gate ran once: the override held on the resume, no second pause
        assert [
            r["id"] for r in w.h.query("select id from public.job_blockers where job_id = %s", job_id)
        ] == [blk["id"]]
        # the override is recorded: the decision with its reason and who took it, and audited
        [r] = w.h.query(
            "select action::text as action, note, resolved_by from public.blocker_resolutions "
            "where blocker_id = %s",
            blk["id"],
        )
        user = op.auth.get_user().user.id
        assert r["action"] == "acknowledge" and r["note"] == reason and str(r["resolved_by"]) == user, r
        audit = w.h.query(
            "select actor_kind, actor_id from public.audit_log where table_name = 'blocker_resolutions' "
            "and action = 'blocker_resolutions.insert' and new_data->>'blocker_id' = %s "
            "and new_data->>'note' = %s",
            str(blk["id"]),
            reason,
        )
        assert [(a["actor_kind"], str(a["actor_id"])) for a in audit] == [("user", user)], audit
        assert (
            w.h.one("select status::text from public.job_blockers where id = %s", blk["id"])["status"]
            != "open"
        )
        w.check(job_id, "repl", before, s)
    finally:
        w.h.query("delete from public.replication_pairs where id = %s", pid)


def test_replication_gate_wait_then_sync_now_lets_a_rolling_update_go(world):
    """Issue 23, the gate's other answers on a real rolling update: the pair on repl2-esx01's
    storage server was never synced, so the update pauses naming it; the operator waits and
    rechecks (paused again, a new blocker, nothing touched), then runs "sync now" - a
    replication_sync through create-job, which this site's executor streams over the lab's
    real sshd and zfs stand-in - and rechecks: the pair is within its lag and the update
    goes, with no override recorded."""
    from devstack.lab.zfs_ssh import ZfsSshLab
    from executor.secrets import seal, unb64u

    w = world
    before = w.settings("repl2")
    storage = "repl2-esx01"
    name = f"ru-sync-{uuid.uuid4().hex[:6]}"
    op = operator(w)

    def invoke(fn: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return 200, op.functions.invoke(fn, {"body": body, "responseType": "json"})
        except FunctionsHttpError as exc:
            return exc.status, {"error": exc.message}

    with ZfsSshLab(["src", "dst"]) as lab:
        lab.zfs("src", "create", "-p", f"tank/{name}")
        lab.zfs("dst", "create", "-p", "backup")
        lab.write("src", f"tank/{name}", "disk.img", os.urandom(200_000))
        key = w.h.one(
            "select public_key, key_id from public.executors where site_id = %s and name = 'ru-a'",
            w.h.site_id,
        )
        secret = {
            "username": lab.username,
            "private_key": lab.client_key.read_text(),
            "host_keys": lab.host_keys(),
        }
        eps = [
            {"scheme": "ssh", "host": "127.0.0.1", "port": p, "tls": {"known_hosts": "sealed"}}
            for p in lab.ports.values()
        ]
        cred = w.h.one(
            INSERT_SEALED_CREDENTIAL,
            w.h.site_id,
            f"zfs-{name}",
            "ssh",
            lab.username,
            key["key_id"],
            json.dumps(seal(unb64u(key["public_key"]), secret, endpoints=eps)),
        )["id"]
        # the source side lives on repl2-esx01's server; never synced counts as lagging
        pid = str(
            w.h.one(
                "insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
                "target_dataset, source_server_id, credential_set_id, max_lag_seconds, schedule, "
                "allow_full_send) values (%s, %s, %s, %s, %s, %s, %s, %s, 3600, 'manual', true) returning id",
                w.h.site_id,
                name,
                lab.address("src"),
                f"tank/{name}",
                lab.address("dst"),
                f"backup/{name}",
                w.servers[storage],
                cred,
            )["id"]
        )
        try:
            with sampler(w) as s:
                status, res = invoke(
                    "create-job",
                    {
                        "type": "rolling_cluster_update",
                        "maintenance_window_id": str(w.window),
                        "params": {
                            "cluster_id": w.cluster_id("repl2"),
                            "firmware": {"catalog_url": w.dc.catalog_url},
                        },
                    },
                )
                assert status == 200 and res.get("job_id"), res
                job_id = res["job_id"]

                def open_blocker() -> dict[str, Any]:
                    job = finish(w, job_id)
                    assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
                    [blk] = w.h.query(
                        "select b.id, b.kind::text as kind, b.description, b.details, h.name as host "
                        "from public.job_blockers b left join public.esxi_hosts h on h.id = b.host_id "
                        "where b.job_id = %s and b.status = 'open'",
                        job_id,
                    )
                    assert blk["kind"] == "replication_lag" and blk["host"] == storage, blk
                    assert name in blk["description"] and "never synced" in blk["description"], blk
                    assert blk["details"]["pair_id"] == pid and blk["details"]["side"] == "source", blk
                    # paused before anything changed
                    assert w.settings("repl2") == before
                    assert all(w.dc.bmc(h).boot_count == 0 for h in w.hosts_of("repl2"))
                    return blk

                def recheck(blk: dict[str, Any]) -> None:
                    status, res = invoke(
                        "resolve-blockers",
                        {
                            "job_id": job_id,
                            "decisions": [{"blocker_id": str(blk["id"]), "decision": "recheck"}],
                        },
                    )
                    assert status == 200 and res["resumed"] is True, res
                    wait_until(lambda: w.h.job(job_id)["status"] != "paused", 30, "the update to resume")

                first = open_blocker()
                recheck(first)  # waiting changed nothing: paused again, with a new blocker
                second = open_blocker()
                assert second["id"] != first["id"]
                # sync now: the console's button is create-job replication_sync for the pair
                status, res = invoke(
                    "create-job", {"type": "replication_sync", "params": {"replication_pair_ids": [pid]}}
                )
                assert status == 200 and res.get("job_id"), res
                sync = w.h.wait_status(res["job_id"], ("completed", "failed", "cancelled"), 120)
                assert sync["status"] == "completed", sync["error"]
                p = w.h.one("select * from public.replication_pairs where id = %s", pid)
                assert p["last_status"] == "succeeded" and 0 <= p["lag_seconds"] < 3600, p
                assert lab.read("dst", f"backup/{name}", "disk.img") == lab.read(
                    "src", f"tank/{name}", "disk.img"
                )
                recheck(second)
                job = finish(w, job_id)
            assert job["status"] == "completed", job["error"]
            tasks = w.tasks(job_id)
            assert sorted(tasks) == w.hosts_of("repl2") and all(
                t["status"] == "completed" for t in tasks.values()
            )
            assert all(w.dc.bmc(h).boot_count == 1 for h in w.hosts_of("repl2"))
            blockers = w.h.query("select id from public.job_blockers where job_id = %s", job_id)
            assert sorted(b["id"] for b in blockers) == sorted([first["id"], second["id"]])
            overrides = w.h.query(
                "select action::text as action from public.blocker_resolutions where blocker_id = any(%s::uuid[])",
                [str(first["id"]), str(second["id"])],
            )
            assert "acknowledge" not in [r["action"] for r in overrides], overrides
            w.check(job_id, "repl2", before, s)
        finally:
            w.h.query("delete from public.replication_pairs where id = %s", pid)


def test_maintenance_timeout_fails_the_host_and_restores_ha(world):
    w = world
    before = w.settings("slow")
    with sampler(w) as s:
        job_id = w.rolling("slow", vmotion_timeout_s=60)
        job = finish(w, job_id)
    assert job["status"] == "failed" and "failure budget" in job["error"], job
    tasks = w.tasks(job_id)
    assert tasks["slow-esx01"]["status"] == "failed" and "maintenance" in tasks["slow-esx01"]["error"]
    assert [tasks[h]["status"] for h in ("slow-esx02", "slow-esx03")] == ["skipped", "skipped"]
    # the host was never rebooted, and its staged firmware was removed rather than left to
    # apply at some later, unplanned reboot
    assert w.dc.bmc("slow-esx01").boot_count == 0 and tasks["slow-esx01"]["details"]["unstaged"] is True
    assert not [j for j in w.dc.bmc("slow-esx01").jobs.values() if j.state == "Scheduled"]
    w.check(job_id, "slow", before, s)


@pytest.mark.parametrize(("cluster", "stage_ahead"), [("fail", True), ("nsa", False)])
def test_firmware_failure_stops_at_the_failure_budget(world, cluster, stage_ahead):
    """The second host's firmware job fails with a budget of 0: the rollout stops and the
    third host is skipped, never rebooted or taken out of service. With ``stage_ahead`` (the
    default) it is staged once the second host is in maintenance, which the failing job may
    end before; if it was, the stop removed its firmware. Without, it was never sent any."""
    w = world
    second, third = f"{cluster}-esx02", f"{cluster}-esx03"
    before = w.settings(cluster)
    w.dc.bmc(second).inject(job_outcome="fail")
    try:
        with sampler(w) as s:
            job_id = w.rolling(cluster, failure_budget=0, stage_ahead=stage_ahead)
            job = finish(w, job_id)
    finally:
        w.dc.bmc(second).clear_faults()
    assert job["status"] == "failed" and "failure budget is 0" in job["error"], job
    tasks = w.tasks(job_id)
    assert [tasks[h]["status"] for h in w.hosts_of(cluster)] == ["completed", "failed", "skipped"]
    if not stage_ahead:
        assert not w.dc.bmc(third).flashes
    elif w.dc.bmc(third).flashes:
        assert tasks[third]["details"]["unstaged"] is True, tasks[third]
    assert never_updated(w, third) and not tasks[third]["details"].get("maintenance_at")
    w.check(job_id, cluster, before, s)


def never_updated(w: World, host: str) -> bool:
    """The host was never rebooted and nothing is left in its iDRAC's job queue (firmware
    staged ahead of its turn was removed)."""
    bmc = w.dc.bmc(host)
    return bmc.boot_count == 0 and not [j for j in bmc.jobs.values() if not j.finished]


def test_cancel_takes_effect_at_the_next_safe_point(world):
    w = world
    before = w.settings("cncl")
    with sampler(w) as s:
        job_id = w.rolling("cncl")
        wait_until(
            lambda: (t := w.tasks(job_id).get("cncl-esx01")) and t["details"].get("phase") == "stage",
            60,
            "first host staging",
        )
        w.h.query("update public.jobs set cancel_requested_at = now() where id = %s", job_id)
        job = finish(w, job_id)
    assert job["status"] == "cancelled", job
    tasks = w.tasks(job_id)
    statuses = [tasks[h]["status"] for h in w.hosts_of("cncl")]
    # The executor learns of the cancel at its next heartbeat (Realtime is off here): the host
    # being updated then is finished, never abandoned mid-flash, and no later host starts.
    assert statuses[0] == "completed" and statuses[-1] == "cancelled", statuses
    done = statuses.count("completed")
    assert statuses == ["completed"] * done + ["cancelled"] * (len(statuses) - done), statuses
    for h in w.hosts_of("cncl")[done:]:  # (a host staged ahead had its firmware removed)
        assert never_updated(w, h), h
    w.check(job_id, "cncl", before, s)


def test_operator_pause_between_hosts_then_resume(world):
    w = world
    before = w.settings("pse")
    with sampler(w) as s:
        job_id = w.rolling("pse")
        wait_until(
            lambda: (t := w.tasks(job_id).get("pse-esx01")) and t["details"].get("phase") == "stage",
            60,
            "first host staging",
        )
        w.h.query("update public.jobs set pause_requested_at = now() where id = %s", job_id)
        job = finish(w, job_id)
        assert job["status"] == "paused" and job["pause_reason"] == "operator", job
        # paused at a host boundary: no host of the cluster out of service
        assert not any(h["in_maintenance"] for h in w.dc.vcenter.lab_hosts() if h["cluster"] == "pse")
        w.check(job_id, "pse", before, s)
        done = [h for h, t in w.tasks(job_id).items() if t["status"] == "completed"]
        assert "pse-esx01" in done
        w.h.query("update public.jobs set status = 'pending' where id = %s", job_id)
        job = finish(w, job_id)
    assert job["status"] == "completed", job["error"]
    assert all(t["status"] == "completed" for t in w.tasks(job_id).values())
    assert all(w.dc.bmc(h).boot_count == 1 for h in w.hosts_of("pse"))  # nobody updated twice
    w.check(job_id, "pse", before, s)


@pytest.mark.parametrize(("cluster", "phase"), [("crm", "maintenance"), ("cra", "apply")])
def test_kill9_then_recovery(world, cluster, phase):
    w = world
    before = w.settings(cluster)
    host = f"{cluster}-esx02"
    with sampler(w) as s:
        job_id = w.rolling(cluster)
        wait_until(
            lambda: (t := w.tasks(job_id).get(host)) and t["details"].get("phase") == phase,
            90,
            f"{host} in phase {phase}",
        )
        if phase == "apply":
            wait_until(
                lambda: any(e[0] == host and e[1] == "reboot" for e in w.dc.power_events),
                30,
                "the firmware reboot",
            )
        w.executor.kill9()
        flashes_at_kill = len(w.dc.bmc(host).flashes)
        recovered = {str(r["job_id"]): r["outcome"] for r in w.h.expire_and_recover([job_id])}
        assert recovered == {job_id: "requeued"}
        w.executor = w.spawn(f"ru-{phase}")
        job = finish(w, job_id)
    assert job["status"] == "completed", job["error"]
    tasks = w.tasks(job_id)
    assert all(t["status"] == "completed" for t in tasks.values()), tasks
    assert all(set(w.versions(h).values()) & set() == set() for h in w.hosts_of(cluster))
    for h in w.hosts_of(cluster):
        assert w.dc.bmc(h).boot_count == 1, h  # one reboot each, the interrupted host included
    if phase == "apply":
        # never flashed twice: no firmware request after the kill, and the apply was verified
        assert len(w.dc.bmc(host).flashes) == flashes_at_kill
        assert tasks[host]["details"].get("resumed_after_interruption") is True
    w.check(job_id, cluster, before, s)
    steps = {r["step_key"]: r for r in w.h.steps(job_id)}
    assert steps["rollout"]["details"]["attempt"] == 2 and steps["cleanup"]["status"] == "completed"


def test_kill9_mid_flash_then_the_bmc_settles_before_the_host_is_judged(world):
    """Issue 14: an executor killed mid-flash; when the job is resumed the iDRAC of the host
    being flashed does not answer (still rebooting). The resumed host must be judged only
    after the BMC settled (N good answers in a row, LC ready, no job running), not failed on
    the first refusal; the job completes with no second flash."""
    w = world
    before = w.settings("crb")
    host = "crb-esx02"
    with sampler(w) as s:
        job_id = w.rolling("crb")
        wait_until(
            lambda: (t := w.tasks(job_id).get(host)) and t["details"].get("phase") == "apply",
            90,
            f"{host} in phase apply",
        )
        wait_until(
            lambda: any(e[0] == host and e[1] == "reboot" for e in w.dc.power_events),
            30,
            "the firmware reboot",
        )
        w.executor.kill9()
        flashes_at_kill = len(w.dc.bmc(host).flashes)
        w.dc.bmc(host).inject(unreachable=True)
        assert [r["outcome"] for r in w.h.expire_and_recover([job_id])] == ["requeued"]
        w.executor = w.spawn("ru-settle")
        # the resumed host waits for its BMC instead of failing (budget 0 would fail the job)
        wait_until(
            lambda: (
                (w.tasks(job_id).get(host) or {}).get("details", {}).get("phase") == "settle"
                or w.h.job(job_id)["status"] in ("failed", "completed", "cancelled")
            ),
            60,
            "the settle wait",
        )
        assert w.tasks(job_id)[host]["details"].get("phase") == "settle", w.h.job(job_id)["error"]
        # the settle wait must have met the silent BMC at least once before it comes back
        dropped = w.dc.bmc(host).dropped
        wait_until(lambda: w.dc.bmc(host).dropped > dropped, 60, "a settle poll the BMC left unanswered")
        w.dc.bmc(host).inject(unreachable=False)
        job = finish(w, job_id)
    assert job["status"] == "completed", job["error"]
    task = w.tasks(job_id)[host]
    assert task["details"]["resumed_after_interruption"] is True
    assert (
        task["details"]["bmc_settle"]["unreachable_polls"] >= 1
        and task["details"]["bmc_settle"]["polls"] >= 3
    )
    assert len(w.dc.bmc(host).flashes) == flashes_at_kill  # never flashed twice
    assert all(w.dc.bmc(h).boot_count == 1 for h in w.hosts_of("crb"))
    w.check(job_id, "crb", before, s)


def test_zz_invariant_checks_catch_violations(world):
    """The checks are not vacuous: a host left in maintenance and changed HA settings after a
    finished job are reported."""
    w = world
    # the first alpha rollout (the second found nothing to do and recorded nothing)
    done = w.h.one(
        "select id from public.jobs where site_id = %s and type = 'rolling_cluster_update' "
        "and status = 'completed' and cluster_id = %s order by created_at limit 1",
        w.h.site_id,
        w.cluster_id("alpha"),
    )["id"]
    recorded = inv.recorded_settings(w.h.query, str(done))
    changed = json.loads(json.dumps(recorded))
    changed["ha"]["admission_control_enabled"] = not changed["ha"]["admission_control_enabled"]
    found = inv.settings_restored(w.h.query, str(done), changed)
    assert found and "[2]" in found[0]
    found = inv.no_host_left_out(w.h.query, str(done), ["alpha-esx01"])
    assert found and "left alpha-esx01 in maintenance" in found[0]
    with pytest.raises(inv.InvariantViolated):
        inv.assert_holds(found)
    fake = inv.OutOfServiceSampler(lambda: [])
    fake.peaks["alpha"] = 2
    assert inv.hosts_out(w.h.query, fake, {"alpha": "rolling_cluster_update"})
    assert inv.backup_before_flash(w.h.query, {"alpha-esx01": [time.time() - 10**6]}, w.servers)
