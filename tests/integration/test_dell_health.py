"""Pre-flight gates of a Dell host (executor/targets/dell_health.py) against the simulated
iDRAC, each failing through the lab's fault injection: Lifecycle Controller busy, a job
running, jobs scheduled or failed, the iDRAC unreachable or refusing the credentials, and the
catalog unreachable."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devstack.lab.idrac.testing import running_lab
from executor.handlers.rolling_update import RollingClusterUpdateHandler
from executor.targets.dell_health import BLOCK, OK, WARN, catalog_gate, idrac_gates, worst
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.redfish import RedfishClient

SCALE = 400.0
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0, retries=0)


@pytest.fixture
def lab():
    with running_lab(1, SCALE) as lab:
        yield lab


def gates(lab, password: str = "calvin"):
    client = RedfishClient(Endpoint(lab.url(0), "root", password, allow_plain_http=True), T)
    got, opened = idrac_gates(client.__enter__, lc_wait=0.3)
    if opened is not None:
        opened.__exit__(None, None, None)
    return {g.name: g for g in got}, worst(got)


def test_a_healthy_idrac_passes_every_gate(lab) -> None:
    g, verdict = gates(lab)
    assert verdict == OK and set(g) == {"reachability", "lifecycle", "job_queue"}


def test_lifecycle_controller_busy_blocks(lab) -> None:
    lab.bmcs[0].inject(lc_stuck_busy=True)
    g, verdict = gates(lab)
    assert verdict == BLOCK and g["lifecycle"].status == BLOCK and "InUse" in g["lifecycle"].reason


def test_a_running_job_blocks_scheduled_and_failed_jobs_warn(lab) -> None:
    bmc = lab.bmcs[0]
    [sched] = bmc.add_stale_jobs(1, "Scheduled")
    [failed] = bmc.add_stale_jobs(1, "Failed", "Unable to apply the BIOS settings.")
    g, verdict = gates(lab)
    assert verdict == WARN and g["job_queue"].status == WARN
    assert sched in g["job_queue"].reason and "Unable to apply the BIOS settings." in g["job_queue"].reason
    [running] = bmc.add_stale_jobs(1, "Running")
    g, verdict = gates(lab)
    assert verdict == BLOCK and g["job_queue"].status == BLOCK and running in g["job_queue"].reason


def test_unreachable_or_wrong_credentials_block(lab) -> None:
    g, verdict = gates(lab, password="wrong")
    assert (
        verdict == BLOCK and g["reachability"].status == BLOCK and "credentials" in g["reachability"].reason
    )
    lab.bmcs[0].inject(unreachable=True)
    g, verdict = gates(lab)
    assert verdict == BLOCK and list(g) == ["reachability"] and "unreachable" in g["reachability"].reason


def test_catalog_unreachable_blocks() -> None:
    gate, cat = catalog_gate(lambda: RollingClusterUpdateHandler._catalog("http://127.0.0.1:9/Catalog.xml"))
    assert cat is None and gate.status == BLOCK and "cannot fetch the firmware catalog" in gate.reason
