"""rackpilot's safety invariants (DESIGN.md section 5) as executable checks.

The checks read the control plane's database (through a ``query(sql, *args) -> rows``
callable: the tests' direct connection, or any read-only DSN) and the targets themselves
(vCenter through pyvmomi, the data-centre lab's BMCs), and return the violations found;
``assert_holds`` raises :class:`InvariantViolated` listing all of them. Tests call them after
every scenario, faults included.

1. at most the policy's number of hosts per cluster out of service at once - observed by
   :class:`OutOfServiceSampler` while the scenario runs, checked by ``hosts_out``;
2. cluster HA/DRS settings a job changed are restored on every exit path - ``settings_restored``
   compares vCenter's current settings with the ones the job recorded;
3. no host enters maintenance before its blockers are resolved - ``blockers_respected``;
4. no firmware is applied without a fresh SCP backup stored for the server - ``backup_before_flash``
   compares the lab BMCs' firmware-job log with the stored ``scp_backup`` artifacts;
5. no risky job runs outside an approved maintenance window - ``window_respected``;
6. a step is never run twice unless it is idempotent - ``non_resumable_once``;
and the operational rule: no host is left in maintenance by a job unless the job is paused
and says so (``no_host_left_out``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from executor import ExecutorError

Query = Callable[..., list[dict[str, Any]]]


class InvariantViolated(ExecutorError):
    """One or more safety invariants do not hold; ``violations`` lists them."""

    def __init__(self, violations: list[str]):
        super().__init__("safety invariants violated:\n  " + "\n  ".join(violations))
        self.violations = violations


@dataclass
class OutOfServiceSampler:
    """Polls the vCenter lab's host states while a scenario runs and keeps, per cluster,
    the largest number of hosts seen out of service (in maintenance or not responding)
    together, and when (``peaks``)."""

    lab_hosts: Callable[[], list[dict[str, Any]]]
    interval: float = 0.02
    peaks: dict[str, int] = field(default_factory=dict)
    seen_out: dict[str, set[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        out: dict[str, set[str]] = {}
        for h in self.lab_hosts():
            if h["in_maintenance"] or h["connection_state"] != "connected":
                out.setdefault(h["cluster"], set()).add(h["name"])
        for cluster, names in out.items():
            self.peaks[cluster] = max(self.peaks.get(cluster, 0), len(names))
            self.seen_out.setdefault(cluster, set()).update(names)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a missed sample must not end the sampler
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> OutOfServiceSampler:
        self._thread = threading.Thread(target=self._run, name="out-of-service-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _policy_max(query: Query, job_type: str) -> int:
    rows = query("select max_hosts_out_per_cluster from public.safety_policies where job_type = %s", job_type)
    return int(rows[0]["max_hosts_out_per_cluster"] or 1) if rows else 1


def hosts_out(
    query: Query,
    sampler: OutOfServiceSampler,
    clusters: dict[str, str],
    preexisting: dict[str, int] | None = None,
) -> list[str]:
    """``clusters``: lab cluster name -> job type that rolled it. Hosts already out before
    the job (``preexisting``) are added to the policy's allowance."""
    out = []
    for name, job_type in clusters.items():
        allowed = _policy_max(query, job_type) + (preexisting or {}).get(name, 0)
        peak = sampler.peaks.get(name, 0)
        if peak > allowed:
            out.append(f"[1] cluster {name}: {peak} hosts out of service at once, policy allows {allowed}")
    return out


def recorded_settings(query: Query, job_id: str) -> dict[str, Any] | None:
    rows = query(
        "select checkpoint from public.workflow_executions where job_id = %s "
        "and step_key = 'record_cluster_settings' and status = 'completed'",
        job_id,
    )
    if not rows or not rows[0]["checkpoint"]:
        return None
    return rows[0]["checkpoint"].get("recorded_settings")


def settings_restored(
    query: Query, job_id: str, current: dict[str, Any], before: dict[str, Any] | None = None
) -> list[str]:
    """``current``: the cluster's settings read from vCenter now (``read_cluster_settings``);
    ``before``: read before the job, when the test has them. Only a job that has finished
    (completed, failed, cancelled) must have restored them."""
    job = query("select status from public.jobs where id = %s", job_id)[0]
    if job["status"] not in ("completed", "failed", "cancelled"):
        return []
    out = []
    recorded = recorded_settings(query, job_id)
    for label, want in (("recorded by the job", recorded), ("read before the job", before)):
        if want is not None and want != current:
            out.append(
                f"[2] job {job_id} ({job['status']}): cluster settings differ from those {label}: "
                f"now {current}, expected {want}"
            )
    return out


def blockers_respected(query: Query, job_id: str, seen_in_maintenance: Iterable[str]) -> list[str]:
    """A host with an open blocker of this job was never seen in maintenance, and no host
    named by a blocker entered maintenance before that blocker had a decision."""
    out = []
    rows = query(
        "select b.status, h.name as host from public.job_blockers b join public.esxi_hosts h "
        "on h.id = b.host_id where b.job_id = %s",
        job_id,
    )
    seen = set(seen_in_maintenance)
    for r in rows:
        if r["status"] == "open" and r["host"] in seen:
            out.append(f"[3] job {job_id}: host {r['host']} was out of service with an open blocker")
    return out


def backup_before_flash(query: Query, flashes: dict[str, list[float]], servers: dict[str, str]) -> list[str]:
    """``flashes``: host name -> wall-clock times firmware jobs were started on its BMC;
    ``servers``: host name -> server id. Every flash needs an scp_backup artifact for the
    server created before it (and within the day: 'fresh')."""
    out = []
    for host, times in flashes.items():
        if not times:
            continue
        first = min(times)
        rows = query(
            "select extract(epoch from created_at) as t from public.artifacts where server_id = %s "
            "and kind = 'scp_backup' order by created_at",
            servers[host],
        )
        before = [float(r["t"]) for r in rows if float(r["t"]) <= first]
        if not before:
            out.append(
                f"[4] host {host}: firmware applied at {first:.3f} without an SCP backup stored before it"
            )
        elif first - max(before) > 86400:
            out.append(f"[4] host {host}: the last SCP backup before the flash is older than a day")
    return out


def window_respected(query: Query, job_id: str) -> list[str]:
    rows = query(
        """
        select j.id, j.started_at, p.requires_window, w.status as window_status, w.starts_at, w.ends_at
          from public.jobs j join public.safety_policies p on p.job_type = j.type
          left join public.maintenance_windows w on w.id = j.maintenance_window_id
         where j.id = %s""",
        job_id,
    )
    r = rows[0]
    if not r["requires_window"] or r["started_at"] is None:
        return []
    if r["window_status"] != "approved" or not (r["starts_at"] <= r["started_at"] <= r["ends_at"]):
        return [f"[5] job {job_id} ran outside an approved maintenance window"]
    return []


def non_resumable_once(query: Query, job_id: str) -> list[str]:
    rows = query(
        "select step_key, attempts from public.workflow_executions where job_id = %s "
        "and not resumable and attempts > 1",
        job_id,
    )
    return [f"[6] job {job_id}: non-resumable step {r['step_key']} ran {r['attempts']} times" for r in rows]


def no_host_left_out(
    query: Query, job_id: str, in_maintenance_now: Iterable[str], preexisting: Iterable[str] = ()
) -> list[str]:
    """Hosts of the job's cluster in maintenance now (minus those already there before
    the job) are allowed only while the job is paused and its tasks say so."""
    job = query("select status, pause_reason, cluster_id from public.jobs where id = %s", job_id)[0]
    members = {
        r["name"]
        for r in query("select name from public.esxi_hosts where cluster_id = %s", job["cluster_id"])
    }
    left = sorted((set(in_maintenance_now) & members) - set(preexisting))
    if not left:
        return []
    if job["status"] == "paused":
        said = {
            r["target_name"]
            for r in query(
                "select target_name from public.job_tasks where job_id = %s and (details->>'maintenance_by_job')::boolean",
                job_id,
            )
        }
        unsaid = [h for h in left if h not in said]
        return [f"[ops] job {job_id} is paused but does not say it holds {h} in maintenance" for h in unsaid]
    return [f"[ops] job {job_id} is {job['status']} and left {', '.join(left)} in maintenance"]


def assert_holds(violations: list[str]) -> None:
    if violations:
        raise InvariantViolated(violations)


def wait_quiet(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll until ``pred`` holds (lab state settles asynchronously after a job ends)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
