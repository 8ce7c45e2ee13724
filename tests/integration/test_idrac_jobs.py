"""Dell OEM job handling against the simulated iDRAC: SCP export/import as tasks, the job
queue (JID_CLEARALL, escalation to JID_CLEARALL_FORCE), LC068/RAC0679, stuck and failing
jobs, and iDRAC reset with the wait for its return."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from devstack.lab.idrac.testing import running_lab
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import (
    JobAlreadyRunning,
    JobFailed,
    JobStuck,
    PendingConfiguration,
    TargetUnreachable,
)
from executor.targets.redfish import RedfishClient

SCALE = 400.0
# Budgets compressed 4x less than the lab's clock (headroom on a loaded 2-core machine);
# polls stay fast. Tests that expect a timeout set the budget they need.
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0)


@pytest.fixture
def lab():
    with running_lab(1, SCALE) as lab:
        yield lab
        assert lab.bmcs[0].own_sessions() == 0, "a Redfish session leaked"


def client(lab, t: Timeouts = T) -> RedfishClient:
    return RedfishClient(Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True), t)


def test_scp_export_returns_the_profile(lab) -> None:
    bmc = lab.bmcs[0]
    with client(lab) as c:
        first = c.dell.export_scp()
        second = c.dell.export_scp()
    sc = first.profile["SystemConfiguration"]
    assert sc["Model"] == bmc.model and sc["ServiceTag"] == bmc.service_tag
    fqdds = {comp["FQDD"] for comp in sc["Components"]}
    assert fqdds == {"BIOS.Setup.1-1", "iDRAC.Embedded.1"}
    assert first.job_id.startswith("JID_") and json.loads(first.text) == first.profile
    assert first.config_sha256 == second.config_sha256  # same configuration, different timestamps


def test_scp_import_applies_with_a_reboot_and_noreboot_waits(lab) -> None:
    bmc = lab.bmcs[0]
    profile = {
        "SystemConfiguration": {
            "Components": [
                {
                    "FQDD": "BIOS.Setup.1-1",
                    "Attributes": [{"Name": "SysProfile", "Value": "PerfPerWattOptimizedOs"}],
                }
            ]
        }
    }
    boots = bmc.boot_count
    with client(lab) as c:
        job = c.dell.import_scp(profile, shutdown="Graceful")
        assert job.state == "Completed"
        assert bmc.attributes["BIOS.Setup.1-1"]["SysProfile"] == "PerfPerWattOptimizedOs"
        assert bmc.boot_count == boots + 1
        c.dell.wait_lc_ready()
        waiting = c.dell.import_scp(profile, shutdown="NoReboot")
        assert waiting.state == "Scheduled"  # applies at the next reboot, which may never come
        with pytest.raises(JobAlreadyRunning) as ei:  # a second import while one is pending
            c.dell.import_scp(profile, shutdown="NoReboot")
        assert "RAC0679" in str(ei.value) and "import SCP" in str(ei.value)
        cleared = c.dell.clear_job_queue()
        assert waiting.id in cleared.removed and cleared.forced is False


@pytest.mark.parametrize(
    "fault,exc,mid",
    [
        ("LC068", PendingConfiguration, "LC068"),
        ("RAC0679", JobAlreadyRunning, "RAC0679"),
    ],
)
def test_export_refused_for_pending_configuration_or_running_job(lab, fault, exc, mid) -> None:
    lab.bmcs[0].inject(config_error=fault)
    with client(lab) as c, pytest.raises(exc) as ei:
        c.dell.export_scp()
    msg = str(ei.value)
    assert mid in msg and "export SCP" in msg and ei.value.hint in msg


def test_stuck_job_is_told_apart_from_a_slow_one(lab) -> None:
    lab.bmcs[0].inject(job_outcome="stuck")
    with client(lab, replace(T, stall=0.3)) as c, pytest.raises(JobStuck) as ei:
        c.dell.export_scp()
    assert "not finished" in str(ei.value) and ei.value.state == "Running" and ei.value.percent == 34
    # a slow job that keeps moving is not cut off by the stall budget
    lab.bmcs[0].clear_faults()
    with client(lab, replace(T, stall=0.3)) as c:
        assert c.dell.export_scp().profile


def test_failing_job(lab) -> None:
    lab.bmcs[0].inject(job_outcome="fail")
    with client(lab) as c, pytest.raises(JobFailed) as ei:
        c.dell.export_scp()
    assert "ended Failed" in str(ei.value) and ei.value.job_id.startswith("JID_")


def test_job_queue_clear_escalates_to_force(lab) -> None:
    bmc = lab.bmcs[0]
    stale = bmc.add_stale_jobs(3)
    with client(lab) as c:
        assert [j["id"] for j in c.dell.readiness()["pending_jobs"]] == stale
        r = c.dell.clear_job_queue()  # plain JID_CLEARALL is enough here
        assert (sorted(r.removed), r.forced) == (sorted(stale), False)
        bmc.inject(queue_stuck=True)
        stale = bmc.add_stale_jobs(2, state="Running")
        r = c.dell.clear_job_queue()
        assert (sorted(r.removed), r.forced) == (sorted(stale), True)
        assert "with force" in r.message and c.dell.jobs() == []
        assert c.dell.lc_status().ready  # waited for the LC restart that the force-clear causes
        again = c.dell.clear_job_queue()
        assert again.removed == [] and "already empty" in again.message


def test_idrac_reset_waits_for_return(lab) -> None:
    bmc = lab.bmcs[0]
    with client(lab) as c:
        c.dell.reset_idrac()
        assert not bmc.idrac_down and c.dell.lc_status().ready
        assert c.power_state() == "On"  # our session died with the reset; a new one was opened
    assert bmc.sessions_created == 2


def test_idrac_that_does_not_come_back(lab) -> None:
    bmc = lab.bmcs[0]
    bmc.timing.idrac_down = 10_000.0  # far beyond the reset budget
    with client(lab, replace(T, idrac_reset=0.5)) as c, pytest.raises(TargetUnreachable) as ei:
        c.dell.reset_idrac()
    assert "not back" in str(ei.value) and "reset iDRAC" in str(ei.value)
    bmc.idrac_down = False  # bring it back so the fixture can count sessions (the reset purged them)
