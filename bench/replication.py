"""Replication transport: 1 GiB through the executor's real transport against raw two-hop OpenSSH.

Both sides run on loopback against the lab's real sshd (no forced command: the hosts run
``head -c N /dev/zero`` and ``cat > /dev/null``, so zfs is not what is measured). Each round
streams the same bytes twice, in alternating order:

* transport: ``executor.targets.ssh.SshStack.relay`` - two OpenSSH clients joined by
  ``os.splice`` through 1 MiB pipes in this process (the executor's code path);
* raw: ``ssh src 'head ...' | ssh dst 'cat > /dev/null'`` joined by a kernel pipe.

Both use the same ssh command lines (cipher aes128-gcm@openssh.com, the job's pinned
known_hosts, agent and per-host connection), so the difference is the relay. Figures:
median and worst ratio (raw seconds / transport seconds: above 1 the transport is faster),
this process's (the executor's) peak RSS and RSS range during the transfers, its CPU
seconds per GiB moved, and the time to plan a send and prune 1,000 snapshots.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.lab.zfs_ssh import ZfsSshLab  # noqa: E402
from executor.replication_plan import parse_grid, plan_prune, plan_send  # noqa: E402
from executor.targets.ssh import SshEndpoint, SshStack, parse_host_keys  # noqa: E402
from executor.targets.zfs import Snap  # noqa: E402

GIB = 1 << 30
CIPHER = "aes128-gcm@openssh.com"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def plan_and_prune_1000() -> float:
    now = time.time()
    src = [
        Snap(f"tank/a@rackpilot_{i:05d}", i, i, int(now - (1000 - i) * 3600), "snapshot") for i in range(1000)
    ]
    dst = [
        Snap(f"backup/a@rackpilot_{i:05d}", i, i + 7, int(now - (1000 - i) * 3600), "snapshot")
        for i in range(990)
    ]
    t0 = time.perf_counter()
    plan_send(src, dst, allow_full=False)
    grid = parse_grid("24x1h,30x1d,12x4w")
    plan_prune(dst, prefix="rackpilot", keep_last=24, grid=grid, now=now, common_guid=989)
    plan_prune(
        src, prefix="rackpilot", keep_last=24, grid=grid, now=now, common_guid=989, unreplicated_after=989
    )
    return time.perf_counter() - t0


async def main_async(size: int, rounds: int) -> dict:
    with ZfsSshLab(["src", "dst"], shell=True) as lab:
        ssh = SshStack(Path(tempfile.mkdtemp(prefix="rackpilot-bench-")), ciphers=CIPHER)
        await ssh.start()
        try:
            pub = await ssh.add_key(lab.client_key.read_text())
            eps = {}
            for n in ("src", "dst"):
                port = lab.ports[n]
                eps[n] = SshEndpoint(
                    "127.0.0.1",
                    port,
                    lab.username,
                    parse_host_keys(lab.host_keys(n), "127.0.0.1", port),
                    n,
                    pub,
                )
                ssh.pin(eps[n])
                await ssh.connect(eps[n])
            src_cmd = ["head", "-c", str(size), "/dev/zero"]
            dst_cmd = ["sh", "-c", "cat > /dev/null"]
            rss_seen: list[float] = []

            async def progress(moved: int, rate: float) -> None:
                rss_seen.append(rss_mb())

            async def transport() -> tuple[float, float]:
                c0, t0 = cpu_s(), time.perf_counter()
                res = await ssh.relay(
                    eps["src"], src_cmd, eps["dst"], dst_cmd, on_progress=progress, progress_interval=0.25
                )
                t, c = time.perf_counter() - t0, cpu_s() - c0
                if not res.ok or res.bytes != size:
                    raise RuntimeError(f"transport round failed: {res}")
                return t, c

            def raw() -> float:
                src_argv = ssh.argv(eps["src"], src_cmd)  # ssh ... (declared: ssh)
                dst_argv = ssh.argv(eps["dst"], dst_cmd, stdin=True)
                t0 = time.perf_counter()
                p1 = subprocess.Popen(
                    src_argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=ssh._env()
                )
                p2 = subprocess.Popen(dst_argv, stdin=p1.stdout, stdout=subprocess.DEVNULL, env=ssh._env())
                assert p1.stdout is not None
                p1.stdout.close()
                if p2.wait() != 0 or p1.wait() != 0:
                    raise RuntimeError("raw round failed")
                return time.perf_counter() - t0

            ratios, t_transport, t_raw, cpu = [], [], [], []
            await transport()  # warm-up (page cache, connections)
            rss_seen.clear()
            for i in range(rounds):
                order = ("transport", "raw") if i % 2 == 0 else ("raw", "transport")
                got = {}
                for what in order:
                    if what == "transport":
                        got["t"], c = await transport()
                        cpu.append(c)
                    else:
                        got["r"] = await asyncio.to_thread(raw)
                t_transport.append(got["t"])
                t_raw.append(got["r"])
                ratios.append(got["r"] / got["t"])
        finally:
            ssh.close()
    gib = size / GIB
    return {
        "benchmark": "replication",
        "bytes": size,
        "rounds": rounds,
        "cipher": CIPHER,
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_worst": round(min(ratios), 3),
        "transport_mb_s_median": round(size / statistics.median(t_transport) / 1e6, 1),
        "raw_mb_s_median": round(size / statistics.median(t_raw) / 1e6, 1),
        "executor_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "executor_rss_during_mb": [round(min(rss_seen), 1), round(max(rss_seen), 1)] if rss_seen else None,
        "executor_cpu_s_per_gib": round(statistics.median(cpu) / gib, 3),
        "plan_prune_1000_snapshots_ms": round(plan_and_prune_1000() * 1000, 2),
        "load_before": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=GIB, help="bytes per stream (default 1 GiB)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (count)")
    opts = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(opts.bytes, opts.rounds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
