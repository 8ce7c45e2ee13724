"""Discovery benchmark (issue 18): a scan of 1,000 simulated iDRACs, each on its own loopback
address and answering every request 50 ms late, probed the way the ``discovery_scan`` handler
probes (``executor.targets.discovery.probe``: service root, one session with a sealed
credential, identification, session deleted) with its bounded thread pool.

The simulator runs in a child process (so the probes' threads and the BMCs do not share one
interpreter). Prints ONE JSON line: the scan's wall time, the baseline measured in the same
run (the same probe done one address at a time over a sample, extrapolated to the fleet), the
speed-up, the peak sessions any one BMC held at once (target: at most 1) and the sessions left
open afterwards (target: 0).

    .venv/bin/python bench/discovery.py [--count 1000] [--latency-ms 50] [--parallel 64] [--sample 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from executor.binding import Credential  # noqa: E402
from executor.targets.discovery import probe  # noqa: E402
from executor.targets.endpoint import Timeouts  # noqa: E402

TARGET_WALL_S = 30.0  # issue 18: 1,000 BMCs at 50 ms in at most 30 s


def address(net: int, i: int) -> str:
    """The i-th BMC's loopback address: 250 per /24 inside 127.<net>.0.0/16."""
    return f"127.{net}.{i // 250}.{i % 250 + 1}"


def lab_process(net: int, count: int, latency: float, conn) -> None:  # runs in the child
    from devstack.lab.discovery import AddressLab, LabThread, free_port

    class Lab16(AddressLab):
        def address(self, i: int) -> str:
            return address(net, i)

    lab = Lab16(f"127.{net}", port=free_port(address(net, 0)), time_scale=1.0, latency=latency)
    for i in range(count):
        lab.add_idrac(i, service_tag=f"B{net:03d}{i:04d}")
    with LabThread(lab):
        conn.send({"port": lab.port})
        conn.recv()  # the scan is over
        conn.send(
            {
                "peak_sessions_per_bmc": max(b.peak_sessions for b in lab.bmcs),
                "sessions_open": lab.sessions_open(),
                "sessions_created": sum(b.sessions_created for b in lab.bmcs),
            }
        )


def scan(hosts: list[str], port: int, creds: list[Credential], parallel: int) -> list:
    timeouts = Timeouts()
    if parallel <= 1:
        return [probe(h, "http", port, creds, timeouts) for h in hosts]
    with ThreadPoolExecutor(max_workers=min(parallel, len(hosts)), thread_name_prefix="discovery") as pool:
        return list(pool.map(lambda h: probe(h, "http", port, creds, timeouts), hosts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument(
        "--parallel", type=int, default=64, help="probes in flight (the handler's max_parallel default)"
    )
    ap.add_argument("--sample", type=int, default=20, help="addresses probed one at a time for the baseline")
    a = ap.parse_args()
    net = random.randint(100, 250)
    parent, child = mp.get_context("fork").Pipe()
    proc = mp.get_context("fork").Process(
        target=lab_process, args=(net, a.count, a.latency_ms / 1000, child), daemon=True
    )
    proc.start()
    try:
        port = parent.recv()["port"]
        creds = [
            Credential.from_plaintext(
                "bench",
                {
                    "username": "root",
                    "password": "calvin",
                    "endpoints": [
                        {
                            "scheme": "http",
                            "host": f"127.{net}.0.0/16",
                            "port": port,
                            "tls": {"allow_plain_http": True},
                        }
                    ],
                },
            )
        ]
        hosts = [address(net, i) for i in range(a.count)]
        # the baseline: the same probe, one address at a time, over a sample
        sample = hosts[: max(1, min(a.sample, a.count))]
        t0 = time.perf_counter()
        base = scan(sample, port, creds, 1)
        seq_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        probes = scan(hosts, port, creds, a.parallel)
        wall = time.perf_counter() - t0
        parent.send("done")
        lab = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    found = sum(1 for p in probes if not p.reason)
    sequential_fleet_s = seq_s / len(sample) * a.count
    print(
        json.dumps(
            {
                "benchmark": "discovery",
                "bmcs": a.count,
                "latency_ms": a.latency_ms,
                "parallel": a.parallel,
                "wall_s": round(wall, 3),
                "identified": found,
                "skipped": a.count - found,
                "baseline_sequential_sample": len(sample),
                "baseline_sequential_s": round(seq_s, 3),
                "baseline_sequential_fleet_s": round(sequential_fleet_s, 1),
                "speedup": round(sequential_fleet_s / wall, 1) if wall else None,
                "peak_sessions_per_bmc": lab["peak_sessions_per_bmc"],
                "sessions_left_open": lab["sessions_open"],
                "sessions_created": lab["sessions_created"],
                "baseline_identified": sum(1 for p in base if not p.reason),
                "target_wall_s": TARGET_WALL_S,
                "ok": wall <= TARGET_WALL_S
                and lab["peak_sessions_per_bmc"] <= 1
                and lab["sessions_open"] == 0
                and found == a.count,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
