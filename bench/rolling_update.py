"""Rolling cluster update benchmark: two clusters of 8 hosts updated at the same time by one
real executor process on an ephemeral local stack, against the simulated data centre with
time-scaled reboots; then a naive rollout of a third cluster as the baseline of the
maintenance time.

* The concurrent rollouts stage firmware while each host still serves VMs (the default). Their
  physical limit is, per cluster, the sum over its waves (one host per wave: the policy's
  max_hosts_out_per_cluster) of the simulated waits no orchestration can avoid - SCP export,
  package downloads (staging), the iDRAC's own apply and restart, VM evacuation, the reboot
  that applies the staged jobs, POST, Lifecycle Controller start - and, the clusters running
  side by side, the larger of the two sums.
* The naive rollout (``stage_firmware: false``) downloads and applies everything while the
  host is in maintenance.

Prints ONE JSON line:
* ``overhead_pct``: (wall time of the two concurrent rollouts minus their physical limit) as
  a percentage of the wall time; per cluster in ``clusters``. Target: <= 5 %.
* ``maintenance_s_per_host``: mean time a host spends in maintenance mode, staged and
  naive, and ``staging_cut_pct``. Target: >= 30 %.

    .venv/bin/python bench/rolling_update.py [--hosts 8] [--naive-hosts 3] [--scale 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.lab.datacentre import DataCentre  # noqa: E402
from devstack.lab.idrac import Timing  # noqa: E402
from devstack.stack.stack import Stack, ephemeral_config  # noqa: E402
from tests.e2e.executor_harness import Harness  # noqa: E402

VM_GB = 16
MIGRATE_MS, MIGRATE_MS_PER_GB = 100, 10


class MaintenanceClock:
    """Samples the vCenter lab and accumulates, per host, the time spent in maintenance."""

    def __init__(self, dc: DataCentre, interval: float = 0.02):
        self.dc, self.interval = dc, interval
        self.since: dict[str, float] = {}
        self.total: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for h in self.dc.vcenter.lab_hosts():
                name = h["name"]
                if h["in_maintenance"] and name not in self.since:
                    self.since[name] = now
                elif not h["in_maintenance"] and name in self.since:
                    self.total[name] = self.total.get(name, 0.0) + now - self.since.pop(name)
            self._stop.wait(self.interval)

    def __enter__(self) -> MaintenanceClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def unavoidable_s(dc: DataCentre, host: str, t: Timing, vms: int) -> float:
    """The simulated waits one host's update cannot avoid, in real seconds."""
    bmc = dc.bmc(host)
    sim = t.scp_export
    for job in bmc.jobs.values():
        if job.component is None:
            continue
        sim += t.fw_download + t.fw_downloaded
        if not job.component.reboot_required:  # the iDRAC applies it itself, then restarts
            sim += t.fw_apply + t.idrac_reset_delay + t.idrac_down + t.lc_after_idrac_reset
    sim += t.graceful_off + t.power_on + t.post + t.lc_after_post
    evacuation = vms * (MIGRATE_MS + MIGRATE_MS_PER_GB * VM_GB) / 1000
    return sim / dc.time_scale + evacuation


def _insert(h: Harness, row: dict) -> str:
    return h.client.table("jobs").insert(row).execute().data[0]["id"]


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-bench-ru-"))
    os.chmod(tmp, 0o755)
    st = Stack(ephemeral_config(tmp / "stack"))
    spec = {
        "hosts": args.hosts,
        "vms_per_host": 2,
        "host_memory_mb": 262144,
        "vm_memory_mb": VM_GB * 1024,
        "ha": {"enabled": True, "admission_control": True, "failover_level": 1},
    }
    concurrent = ("a", "b")
    dc = DataCentre(
        [*({"name": c, **spec} for c in concurrent), {"name": "naive", **spec, "hosts": args.naive_hosts}],
        time_scale=args.scale,
        migrate_ms=MIGRATE_MS,
        migrate_ms_per_gb=MIGRATE_MS_PER_GB,
    )
    out: dict = {
        "bench": "rolling_update",
        "clusters": len(concurrent),
        "hosts_per_cluster": args.hosts,
        "naive_hosts": args.naive_hosts,
        "time_scale": args.scale,
        "cpus": os.cpu_count(),
        "loadavg_start": round(os.getloadavg()[0], 2),
    }
    h = None
    try:
        st.up()
        dc.start()
        h = Harness(st, tmp)
        ex = h.spawn(
            "bench",
            target_time_scale=args.scale,
            realtime_enabled="false",
            poll_interval=0.2,
            max_concurrent_jobs=4,
        )
        ex.wait_log("registered", timeout=60)
        key = h.one("select public_key, key_id from public.executors where site_id = %s", h.site_id)
        reg = dc.register(h.query, h.site_id, key["public_key"], key["key_id"])
        creds = [str(c) for c in reg["credential_set_ids"]]
        window = h.one(
            "insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by) "
            "values (%s, 'bench', now() - interval '1 minute', now() + interval '3 hours', %s) "
            "returning id",
            h.site_id,
            str(uuid.uuid4()),
        )["id"]
        h.query(
            "update public.maintenance_windows set status = 'approved', approved_by = %s where id = %s",
            str(uuid.uuid4()),
            window,
        )
        sync = _insert(
            h,
            {
                "type": "vcenter_sync",
                "site_id": h.site_id,
                "credential_set_ids": creds,
                "params": {"vcenter_id": str(reg["vcenter_id"])},
            },
        )
        assert h.wait_status(sync, ("completed", "failed"), 120)["status"] == "completed"
        timing = dc.idrac.bmcs[0].timing

        def start(cluster_name: str, staged: bool) -> str:
            cluster = h.one(
                "select id from public.clusters where name = %s and vcenter_id = %s",
                cluster_name,
                reg["vcenter_id"],
            )["id"]
            return _insert(
                h,
                {
                    "type": "rolling_cluster_update",
                    "site_id": h.site_id,
                    "cluster_id": str(cluster),
                    "params": {
                        "cluster_id": str(cluster),
                        "firmware": {"catalog_url": dc.catalog_url},
                        "stage_firmware": staged,
                    },
                    "credential_set_ids": creds,
                    "maintenance_window_id": str(window),
                },
            )

        def finish(job_id: str, what: str) -> dict:
            job = h.wait_status(job_id, ("completed", "failed", "paused", "cancelled"), 3600)
            if job["status"] != "completed":
                raise SystemExit(f"{what} rollout ended {job['status']}: {job['error']}")
            return job

        # 1. two clusters at once, one executor
        with MaintenanceClock(dc) as clock:
            t0 = time.monotonic()
            jobs = {c: start(c, True) for c in concurrent}
            done = {c: finish(j, c) for c, j in jobs.items()}
        per_cluster = {}
        for c, job in done.items():
            hosts = [x for x in dc.host_bmc if x.startswith(f"{c}-")]
            total = (job["finished_at"] - job["started_at"]).total_seconds()
            physical = sum(unavoidable_s(dc, x, timing, 2) for x in hosts)  # one host per wave
            per_host = [clock.total.get(x, 0.0) for x in hosts]
            per_cluster[c] = {
                "total_s": round(total, 2),
                "physical_s": round(physical, 2),
                "overhead_pct": round(100 * (total - physical) / total, 1),
                "maintenance_s_per_host": round(sum(per_host) / len(per_host), 3),
            }
        wall = max(j["finished_at"] for j in done.values()) - min(j["started_at"] for j in done.values())
        wall_s = wall.total_seconds()
        limit = max(v["physical_s"] for v in per_cluster.values())
        out["clusters_detail"] = per_cluster
        out["wall_s"] = round(wall_s, 2)
        out["claim_to_finish_s"] = round(time.monotonic() - t0, 2)
        out["physical_limit_s"] = round(limit, 2)
        out["overhead_pct"] = round(100 * (wall_s - limit) / wall_s, 1)

        # 2. the naive baseline
        with MaintenanceClock(dc) as clock:
            finish(start("naive", False), "naive")
        hosts = [x for x in dc.host_bmc if x.startswith("naive-")]
        naive = sum(clock.total.get(x, 0.0) for x in hosts) / len(hosts)
        staged = sum(v["maintenance_s_per_host"] for v in per_cluster.values()) / len(per_cluster)
        out["maintenance_s_per_host"] = {"staged": round(staged, 3), "naive": round(naive, 3)}
        out["staging_cut_pct"] = round(100 * (naive - staged) / naive, 1)
        out["targets_met"] = out["overhead_pct"] <= 5 and out["staging_cut_pct"] >= 30
        out["loadavg_end"] = round(os.getloadavg()[0], 2)
        return out
    finally:
        if h is not None:
            h.close()
        dc.stop()
        st.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument(
        "--naive-hosts", type=int, default=3, help="hosts of the naive rollout (its per-host figure)"
    )
    ap.add_argument("--scale", type=float, default=50.0, help="simulated seconds per real second")
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
