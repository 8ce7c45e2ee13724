"""A rolling update driven through the console's widgets, end to end (issue 19): an operator
signed in to the console clicks through the server update wizard (targets, options and the
approved window, pre-flight, typed confirmation, start) against the local stack, the
simulated data centre (vCenter simulator, iDRAC BMCs, firmware repository) and a real
executor process. The wizard turns into the live monitor, which follows the job over
Realtime: the job pauses for the USB-passthrough VM, the operator decides in the blocker
wizard (power the VM off, save, resume), and the monitor sees every host through to
completed, each host's phases on its timeline, with nothing read back by polling the
database. The lab checks what really happened: every host flashed and rebooted once, the VM
powered back on."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from console.models.reports import ReportModel
from console.widgets.app import Console
from devstack.cli import add_user
from devstack.lab.datacentre import DataCentre
from executor.targets.endpoint import Endpoint
from executor.targets.vsphere import VSphereClient, VSphereTimeouts
from tests.e2e.executor_harness import Harness
from tests.e2e.test_rolling_update import TIMING, _cluster

LAB_SCALE = 400.0
PASSWORD = "console-e2e-pw-1"
CLUSTER = _cluster("cw", 3, 1, vms=[{"name": "cw-usb", "host": 0, "devices": ["usb_passthrough"]}])
JOB_TIMEOUT_S = 240  # the whole update of 3 hosts at lab speed on a loaded 2-core machine (s)


class Lab:
    def __init__(self, stack: Any, tmp: Path) -> None:
        self.dc = DataCentre(
            [CLUSTER], time_scale=LAB_SCALE, timing=TIMING, migrate_ms=5, migrate_ms_per_gb=2
        )
        self.dc.start()
        try:
            self.h = Harness(stack, tmp)
            ex = self.h.spawn(
                "cw-a",
                target_time_scale=LAB_SCALE / 4,
                max_concurrent_jobs=2,
                realtime_enabled="false",
                poll_interval=0.3,
                bmc_settle_interval_s=10,
            )
            ex.wait_log("registered", timeout=30)
            key = self.h.one(
                "select public_key, key_id from public.executors where site_id = %s and name = 'cw-a'",
                self.h.site_id,
            )
            self.reg = self.dc.register(self.h.query, self.h.site_id, key["public_key"], key["key_id"])
            starts = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
            self.window = self.h.one(
                "insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by) "
                "values (%s, 'console e2e', %s, %s, %s) returning id",
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
            sync = (
                self.h.client.table("jobs")
                .insert(
                    {
                        "type": "vcenter_sync",
                        "site_id": self.h.site_id,
                        "params": {"vcenter_id": str(self.reg["vcenter_id"])},
                        "credential_set_ids": [str(c) for c in self.reg["credential_set_ids"]],
                    }
                )
                .execute()
                .data[0]["id"]
            )
            job = self.h.wait_status(sync, ("completed", "failed"), timeout=60)
            assert job["status"] == "completed", job["error"]
            self.email = f"op-{uuid.uuid4().hex[:8]}@console-e2e.test"
            add_user(self.h.stack, self.email, "operator", PASSWORD)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if hasattr(self, "h"):
            self.h.close()
        self.dc.stop()


@pytest.fixture
def lab(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-console-e2e-"))
    lab = Lab(stack, tmp)
    try:
        yield lab
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def until(pred, timeout: float, what: str) -> None:
    """Wait on the kernel's loop (Realtime delivers on it) until ``pred()`` holds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_rolling_update_through_the_wizard_monitor_and_blocker_wizard(lab):
    env = lab.h.env
    con = Console.start(
        env={
            "SUPABASE_URL": env["SUPABASE_URL"],
            "SUPABASE_ANON_KEY": env["SUPABASE_ANON_KEY"],
            "RACKPILOT_CONSOLE_EMAIL": lab.email,
            "RACKPILOT_CONSOLE_PASSWORD": PASSWORD,
        },
        show=False,
        shared=False,
    )
    try:
        assert con.signed_in and con.session.role == "operator"
        await con.live()  # the feed every view follows

        # 1. targets: the only cluster is chosen and named; the lab's catalog by URL
        wizard = con.update_wizard(site_id=str(lab.h.site_id)).view
        assert wizard is not None and wizard.cluster.label == "cw"
        wizard.catalog_pick.value = wizard.catalog_pick.options[-1][1]  # "other URL…"
        wizard.catalog.value = lab.dc.catalog_url
        wizard.next1.click()
        assert "✖" not in wizard.status.value, wizard.status.value
        # 2-3. options within policy and the approved window, then the pre-flight
        assert wizard.wz.options["maintenance_window_id"] == str(lab.window)
        wizard.next2.click()
        rep = wizard.wz.report
        assert rep is not None and rep.ok, [(c.name, c.detail) for c in rep.blocking()]
        assert [(v["vm"], v["reasons"]) for v in rep.vm_blockers] == [("cw-usb", ["USB passthrough"])]
        assert rep.hosts_out_bound == 1
        # 4-5. typed confirmation, then start: the wizard becomes the live monitor
        wizard.typed.value = "cw"
        wizard.confirm.click()
        wizard.create.click()
        assert "✖" not in wizard.status.value, wizard.status.value
        monitor = wizard.monitor_view
        assert monitor is not None
        mon = monitor.m  # the frame hands attribute reads to the JobMonitorView
        job_id = mon.job_id

        # the job pauses for the USB VM; the monitor learns it over Realtime
        await until(
            lambda: mon.job.get("status") == "paused" and mon.job.get("pause_reason") == "blockers",
            JOB_TIMEOUT_S,
            "the monitor to show the job paused for blockers",
        )
        # the blocker wizard: power the VM off (back on after its host), save, resume
        bw = con.blocker_wizard(job_id)
        [row] = bw.wz.rows()
        assert (row["vm"], row["kind"]) == ("cw-usb", "usb_passthrough")
        bw.rows.children[0].children[1].value = "power_off_vm"
        bw.save.click()
        assert "1 decision(s) saved; job is pending and resumed" in bw.status.value, bw.status.value

        await until(
            lambda: mon.job.get("status") in ("completed", "failed", "cancelled"),
            JOB_TIMEOUT_S,
            "the monitor to show the job finished",
        )
        assert mon.job["status"] == "completed", mon.job.get("error")
        rows = {r["host"]: r for r in mon.host_rows()}
        assert set(rows) == {"cw-esx01", "cw-esx02", "cw-esx03"}
        assert all(r["status"] == "completed" for r in rows.values()), rows
        phases = {b["phase"] for row in mon.gantt() for b in row["bars"]}
        assert {"maintenance", "apply"} <= phases, phases  # the timeline grew from Realtime changes
        assert mon.live_updates > 0
        assert mon.job_progress() == 100
        log = "\n".join(x.text for x in mon.log)
        assert "paused" in log and "completed" in log and job_id not in log  # words and names
        # what really happened in the lab
        for host in rows:
            assert lab.dc.bmc(host).boot_count == 1, host  # rebooted once for its update
        vc = lab.dc.vcenter
        ep = Endpoint(f"https://{vc.host}:{vc.port}", vc.username, vc.password, ca_bundle=str(vc.ca_file))
        with VSphereClient(ep, VSphereTimeouts(poll=0.02)) as c:
            assert c.inventory().vm_by_name("cw-usb").powered_on  # back on after its host
        # Reports: time in maintenance per host, from the stays the job recorded on each host
        # (entered when it asked vCenter, exited when vCenter confirmed), inside the task's run
        rm = ReportModel(con.api)
        rm.load("v_host_history")
        stays = {s["host"]: s for s in rm.stays if str(s["job_id"]) == job_id}
        assert set(stays) == set(rows), rm.stays
        tasks = {t["target_name"]: t for t in mon.tasks.values() if t.get("target_kind") == "host"}
        for host, s in stays.items():
            started = dt.datetime.fromisoformat(tasks[host]["started_at"])
            finished = dt.datetime.fromisoformat(tasks[host]["finished_at"])
            assert s["exited"] is not None and started <= s["entered"] < s["exited"] <= finished, (host, s)
        spec = rm.chart()
        assert spec is not None and spec["title"] == "time in maintenance per host"
        assert set(spec["labels"]) >= set(rows)
        minutes = dict(zip(spec["labels"], spec["series"]["in maintenance (entered to exited)"], strict=True))
        for host, s in stays.items():  # at least this job's stay (the host may have had others)
            assert minutes[host] >= round((s["exited"] - s["entered"]).total_seconds() / 60, 2)
    finally:
        await con.close()
