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
  a percentage of the wall time; per cluster in ``clusters_detail``. Target: <= 5 %.
  ``overhead_pct_issue``: the same against the issue's own definition of the limit
  (evacuation, staging, apply and reboot: the SCP backup counts as overhead there).
  The BMC settle is never part of the limit: its mandated minimum, (N - 1) intervals after
  the first good answer (``settle_min_s_per_host``), is overhead a safety rule imposes;
  Both limits add each host's phases one after the other. The rollout prepares the next
  hosts (their SCP backups, and the next host's staging unless ``--no-stage-ahead``) while
  the current one is updated, so the wall time can fall below them: ``overhead_pct_pipelined`` is the
  overhead against the limit of that order (``pipelined_limit_s``), the one that still
  bounds it, and ``overhead_pct_beyond_settle_min`` what is left of it without the settle's
  minimum, for reading only. ``targets_met`` needs overhead_pct and overhead_pct_issue <= 5.
* ``per_host_phase_s`` (the handler's per-phase clock, mean real seconds per host) beside
  ``per_host_physical_phase_s`` (the simulated waits of each phase) and ``per_host_apply_s``
  (reboot to jobs done, to LC ready, the settle): where the overhead goes.
* ``executor_cpu_s``: CPU time of the executor process over the concurrent rollouts (wall
  time on a loaded machine is noisy; this is not).
* ``maintenance_s_per_host``: mean time a host spends in maintenance mode, staged and
  naive, and ``staging_cut_pct``. Target: >= 30 %.

    .venv/bin/python bench/rolling_update.py [--hosts 8] [--naive-hosts 3] [--scale 50] [--failure-budget 0]
        [--no-stage-ahead]
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
from executor.targets.bmc_settle import SettleOptions  # noqa: E402
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


def physical_phases_s(dc: DataCentre, host: str, t: Timing, vms: int) -> dict[str, float]:
    """unavoidable_s split by the rollout's phases (real seconds): backup (SCP export), stage
    (downloads, and the iDRAC's own apply and restart of the components it applies now),
    maintenance (VM evacuation) and apply (graceful off, power on, POST, LC start)."""
    bmc = dc.bmc(host)
    stage = 0.0
    for job in bmc.jobs.values():
        if job.component is None:
            continue
        stage += t.fw_download + t.fw_downloaded
        if not job.component.reboot_required:
            stage += t.fw_apply + t.idrac_reset_delay + t.idrac_down + t.lc_after_idrac_reset
    s = dc.time_scale
    return {
        "backup": t.scp_export / s,
        "stage": stage / s,
        "maintenance": vms * (MIGRATE_MS + MIGRATE_MS_PER_GB * VM_GB) / 1000,
        "apply": (t.graceful_off + t.power_on + t.post + t.lc_after_post) / s,
    }


def pipelined_limit_s(hosts: list[dict[str, float]], stage_ahead: bool) -> float:
    """The physical limit of one cluster (one host per wave) under the rollout's own order,
    which prepares the next hosts during the current one: a host's SCP backup begins once the
    host before it has its backup stored (at most two hosts ahead of the one being updated),
    its staging (``stage_ahead``, the job option) once the
    host before begins its turn (maintenance); its own turn only after the host before ended
    its turn. ``hosts``: physical_phases_s of each host in order. No orchestration that keeps
    that order can finish earlier; the limits that add the phases one after the other
    (physical_limit_s, physical_limit_issue_s) no longer bound it."""
    n = len(hosts)
    wave_start, backup_end, turn_start, end = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    for i, h in enumerate(hosts):
        wave_start[i] = end[i - 1] if i else 0.0
        # prepared from the start of wave i-2 on, after the backup before it
        may_begin = wave_start[i - 2] if i >= 2 else 0.0
        backup_end[i] = max(may_begin, backup_end[i - 1] if i else 0.0) + h["backup"]
        if i and stage_ahead:
            staged = max(backup_end[i], turn_start[i - 1]) + h["stage"]
            turn_start[i] = max(wave_start[i], staged)
        else:
            turn_start[i] = max(wave_start[i], backup_end[i]) + h["stage"]
        end[i] = turn_start[i] + h["maintenance"] + h["apply"]
    return end[-1] if hosts else 0.0


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads, waited-for children) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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
                        "failure_budget": args.failure_budget,
                        "stage_ahead": not args.no_stage_ahead,
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
            cpu0 = cpu_s(ex.proc.pid)
            jobs = {c: start(c, True) for c in concurrent}
            done = {c: finish(j, c) for c, j in jobs.items()}
            out["executor_cpu_s"] = round(cpu_s(ex.proc.pid) - cpu0, 2)
        # where each host's time went (the handler's phase_s, real seconds) against the
        # simulated waits of each phase
        phases: dict[str, list[float]] = {}
        apply_timing: dict[str, list[float]] = {}
        physical_phase: dict[str, list[float]] = {}
        for j in jobs.values():
            for r in h.query(
                "select target_name, details from public.job_tasks where job_id = %s and target_kind = 'host'",
                j,
            ):
                d = r["details"] or {}
                for k, v in (d.get("phase_s") or {}).items():
                    phases.setdefault(k, []).append(v)
                for k, v in (d.get("apply_timing") or {}).items():
                    apply_timing.setdefault(k, []).append(v)
                for k, v in physical_phases_s(dc, r["target_name"], timing, 2).items():
                    physical_phase.setdefault(k, []).append(v)

        def mean(xs: list[float]) -> float:
            return round(sum(xs) / len(xs), 3) if xs else 0.0

        out["per_host_phase_s"] = {k: mean(v) for k, v in phases.items()}
        out["per_host_physical_phase_s"] = {k: mean(v) for k, v in physical_phase.items()}
        out["per_host_apply_s"] = {k: mean(v) for k, v in apply_timing.items()}
        # the settle's minimum after the BMC's first good answer: (N - 1) intervals, a safety
        # rule's wait, not a physical one; counted as overhead, only shown apart
        so = SettleOptions.from_env(args.scale)
        settle_min = (so.consecutive - 1) * so.interval
        out["settle_min_s_per_host"] = round(settle_min, 3)
        per_cluster = {}
        stage_ahead = not args.no_stage_ahead  # (the job option; the naive rollout stages nothing)
        for c, job in done.items():
            hosts = sorted(x for x in dc.host_bmc if x.startswith(f"{c}-"))
            total = (job["finished_at"] - job["started_at"]).total_seconds()
            physical = sum(unavoidable_s(dc, x, timing, 2) for x in hosts)  # one host per wave
            # the issue's words: evacuation, staging, apply and reboot (no SCP backup)
            issue = sum(
                sum(v for k, v in physical_phases_s(dc, x, timing, 2).items() if k != "backup") for x in hosts
            )
            per_host = [clock.total.get(x, 0.0) for x in hosts]
            steps = {
                r["step_key"]: r
                for r in h.query(
                    "select step_key, started_at, finished_at from public.workflow_executions "
                    "where job_id = %s",
                    jobs[c],
                )
            }
            ro = steps.get("rollout") or {}
            per_cluster[c] = {
                "rollout_s": round((ro["finished_at"] - ro["started_at"]).total_seconds(), 2)
                if ro.get("finished_at") and ro.get("started_at")
                else None,
                "total_s": round(total, 2),
                "physical_s": round(physical, 2),
                "overhead_pct": round(100 * (total - physical) / total, 1),
                "physical_issue_s": round(issue, 2),
                "physical_pipelined_s": round(
                    pipelined_limit_s([physical_phases_s(dc, x, timing, 2) for x in hosts], stage_ahead), 2
                ),
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
        # the same against the issue's definition (the SCP backup counted as overhead)
        limit_issue = max(v["physical_issue_s"] for v in per_cluster.values())
        out["physical_limit_issue_s"] = round(limit_issue, 2)
        out["overhead_pct_issue"] = round(100 * (wall_s - limit_issue) / wall_s, 1)
        # the same against the limit of the rollout's own order (the next host prepared during
        # the current one): the only one of the three that still bounds the wall time from below
        limit_pipe = max(v["physical_pipelined_s"] for v in per_cluster.values())
        out["failure_budget"] = args.failure_budget
        out["prepared_ahead"] = "backup and staging" if stage_ahead else "backup"
        out["physical_limit_pipelined_s"] = round(limit_pipe, 2)
        out["overhead_pct_pipelined"] = round(100 * (wall_s - limit_pipe) / wall_s, 1)
        # shown apart: what is left of that once the settle's mandated minimum is set aside
        settle_total = settle_min * args.hosts  # one host per wave
        out["overhead_pct_beyond_settle_min"] = round(100 * (wall_s - limit_pipe - settle_total) / wall_s, 1)

        # 2. the naive baseline
        with MaintenanceClock(dc) as clock:
            finish(start("naive", False), "naive")
        hosts = [x for x in dc.host_bmc if x.startswith("naive-")]
        naive = sum(clock.total.get(x, 0.0) for x in hosts) / len(hosts)
        staged = sum(v["maintenance_s_per_host"] for v in per_cluster.values()) / len(per_cluster)
        out["maintenance_s_per_host"] = {"staged": round(staged, 3), "naive": round(naive, 3)}
        out["staging_cut_pct"] = round(100 * (naive - staged) / naive, 1)
        # every reading of the overhead target, the issue's own included
        out["targets_met"] = (
            max(out["overhead_pct"], out["overhead_pct_issue"]) <= 5 and out["staging_cut_pct"] >= 30
        )
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
    ap.add_argument(
        "--failure-budget",
        type=int,
        default=0,
        help="the rollouts' failure_budget (hosts)",
    )
    ap.add_argument(
        "--no-stage-ahead",
        action="store_true",
        help="the rollouts' stage_ahead false: each host staged in its own turn",
    )
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
