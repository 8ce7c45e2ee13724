"""vCenter inventory benchmark: the full inventory of a 10-cluster x 16-host lab with 20
VMs per host (3,200 VMs, each with its device list) read through rackpilot's vSphere
client, i.e. what every `vcenter_sync` starts with.

Prints ONE JSON line: lab start time, the best and median wall time of `--runs` full
inventory reads, the client's CPU time for one read, VMs per second, and the number of objects read. Also runs the blocker
scan / safety status for every cluster once and reports its time.

    .venv/bin/python bench/vcenter_sync.py [--clusters 10] [--hosts 16] [--vms-per-host 20] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.lab.vcsim import VcsimLab  # noqa: E402
from executor.targets.endpoint import Endpoint  # noqa: E402
from executor.targets.vsphere import VSphereClient  # noqa: E402
from executor.targets.vsphere_blockers import cluster_safety, preflight_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--vms-per-host", type=int, default=20)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    started = time.perf_counter()
    with VcsimLab.uniform(args.clusters, args.hosts, args.vms_per_host, host_memory_mb=524288) as lab:
        lab_start = time.perf_counter() - started
        ep = Endpoint(url=f"https://{lab.host}:{lab.port}", username=lab.username, password=lab.password,
                      ca_bundle=str(lab.ca_file))  # fmt: skip
        times, cpu = [], []
        with VSphereClient(ep) as client:
            for _ in range(args.runs):
                t, c = time.perf_counter(), time.process_time()
                inv = client.inventory()
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
        t = time.perf_counter()
        statuses = {}
        for cluster in inv.clusters:
            preflight_report(inv, cluster)
            statuses[cluster] = cluster_safety(inv, cluster)["status"]
        scan = time.perf_counter() - t
        complete = len(inv.vms) == lab.vms_count and len(inv.hosts) == lab.hosts_count
    best = min(times)
    print(json.dumps({
        "bench": "vcenter_sync_inventory",
        "clusters": len(inv.clusters),
        "hosts": len(inv.hosts),
        "vms": len(inv.vms),
        "complete": complete,
        "lab_start_s": round(lab_start, 2),
        "inventory_best_s": round(best, 3),
        "inventory_median_s": round(statistics.median(times), 3),
        "vms_per_s": round(len(inv.vms) / best),
        # Client CPU (SOAP parsing dominates); wall time also holds the simulator's share
        # and any contention on a shared machine.
        "inventory_client_cpu_s": round(min(cpu), 3),
        "runs": args.runs,
        "blocker_scan_all_clusters_s": round(scan, 3),
        "clusters_ok": sum(1 for s in statuses.values() if s == "ok"),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
