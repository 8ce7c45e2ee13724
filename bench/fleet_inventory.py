"""Fleet inventory benchmark: 1,000 simulated iDRACs (simulator in another process),
inventory refreshed with bounded concurrency, one Redfish session per BMC.

Prints ONE JSON line: wall time of the fleet run, the sequential time of 50 BMCs and its
extrapolation to the fleet, the speed-up, the peak concurrent sessions seen by any one BMC
(must be <= 2) and the sessions left open afterwards (must be 0).

    .venv/bin/python bench/fleet_inventory.py [--count 1000] [--concurrency 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.testing.redfish_async import async_fleet_inventory  # noqa: E402
from executor.targets.endpoint import Endpoint, Timeouts  # noqa: E402
from executor.targets.redfish import fleet_inventory  # noqa: E402


def free_range(count: int, start: int) -> int:
    """First base port at or above `start` (below the kernel's ephemeral range) with
    `count` consecutive free loopback ports."""
    base = start
    while base + count < 32768:
        socks = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            base = p + 1
        finally:
            for s in socks:
                s.close()
    raise SystemExit(f"no {count} consecutive free ports between {start} and 32767")


def start_lab(count: int, base_port: int, latency_ms: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.lab.idrac",
            "--count",
            str(count),
            "--base-port",
            str(base_port),
            "--time-scale",
            "1",
            "--latency-ms",
            str(latency_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("{"):
        proc.kill()
        raise SystemExit(f"simulator did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc


def control(base_port: int, path: str, method: str = "GET") -> dict:
    return requests.request(method, f"http://127.0.0.1:{base_port}/_lab/{path}", timeout=30).json()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=48)
    ap.add_argument(
        "--latency-ms",
        type=float,
        default=50.0,
        help="service time per request of each simulated BMC (real iDRACs: 100 ms and more)",
    )
    ap.add_argument(
        "--client",
        choices=("threads", "asyncio", "both"),
        default="both",
        help="fleet path(s) to measure (default both; the faster is reported first)",
    )
    ap.add_argument("--sequential", type=int, default=50, help="BMCs in the sequential reference run")
    ap.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("RACKPILOT_BENCH_PORT", "20000")),
        help="search for a free port range from here (default 20000)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the lab speaks plain HTTP; keep the per-open warning out
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    args.base_port = free_range(args.count, args.base_port)
    proc = start_lab(args.count, args.base_port, args.latency_ms)
    try:
        eps = [
            Endpoint(f"http://127.0.0.1:{args.base_port + i}", "root", "calvin", allow_plain_http=True)
            for i in range(args.count)
        ]
        t = replace(Timeouts(), connect=5.0, read=30.0, retry_delay=0.5)
        runners = {
            "threads+sushy": lambda e, c: fleet_inventory(e, concurrency=c, timeouts=t),
            "asyncio+httpx": lambda e, c: asyncio.run(async_fleet_inventory(e, concurrency=c, timeouts=t)),
        }
        if args.client != "both":
            runners = {k: v for k, v in runners.items() if k.startswith(args.client)}
        runs = {}
        all_ok = True
        for name, run in runners.items():
            t0 = time.perf_counter()
            seq = run(eps[: args.sequential], 1)
            seq_s = time.perf_counter() - t0
            control(args.base_port, "reset-stats", "POST")
            t0 = time.perf_counter()
            res = run(eps, args.concurrency)
            wall = time.perf_counter() - t0
            fleet = control(args.base_port, "fleet")
            extrapolated = seq_s / len(seq) * args.count
            failed = [r for r in res + seq if not r.ok]
            all_ok = all_ok and not failed and fleet["sessions"] == 0 and fleet["peak_sessions_max"] <= 2
            runs[name] = {
                "wall_s": round(wall, 2),
                "sequential_s": round(seq_s, 2),
                "sequential_extrapolated_s": round(extrapolated, 1),
                "speedup": round(extrapolated / wall, 1),
                "requests": fleet["requests"],
                "peak_sessions_per_bmc": fleet["peak_sessions_max"],
                "leaked_sessions": fleet["sessions"],
                "ok": sum(r.ok for r in res),
                "failed": len(failed),
                "first_error": failed[0].error if failed else None,
            }
        best = min(runs, key=lambda k: runs[k]["wall_s"])
        out = {
            "bench": "fleet_inventory",
            "bmcs": args.count,
            "concurrency": args.concurrency,
            "bmc_latency_ms": args.latency_ms,
            "sequential_bmcs": args.sequential,
            "client": best,
            **runs[best],
            "target_wall_s": 30,
            "clients": runs,
        }
        print(json.dumps(out))
        return 0 if all_ok else 1
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
