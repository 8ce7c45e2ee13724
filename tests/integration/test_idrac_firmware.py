"""Firmware compliance and staged updates against the simulated iDRAC, packages served
from a loopback repository laid out like the catalog fixture; plus the fleet inventory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.lab.idrac import make_dup
from devstack.lab.idrac.testing import FileServer, running_lab
from devstack.testing.redfish_async import async_fleet_inventory
from executor.targets.catalog import Catalog
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import FirmwareVerificationFailed, JobFailed
from executor.targets.redfish import RedfishClient, fleet_inventory

SCALE = 400.0
# Budgets compressed 4x less than the lab's clock (headroom on a loaded 2-core machine);
# polls stay fast. Tests that expect a timeout set the budget they need.
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0)
CATALOG = Catalog.from_path(Path(__file__).resolve().parent.parent / "fixtures" / "catalog" / "Catalog.xml")


def repository(catalog: Catalog, corrupt: set[str] = frozenset()) -> dict[str, bytes]:
    """The repository behind the catalog: one lab update package per catalog entry."""
    files = {}
    for p in catalog.packages:
        cid = sorted(p.component_ids)[0]
        files[f"/repo/{p.path}"] = b"MZ not an update package" if cid in corrupt else make_dup(cid, p.version)
    return files


@pytest.fixture
def lab(request):
    corrupt = getattr(request, "param", set())
    with running_lab(1, SCALE) as lab, FileServer(repository(CATALOG, corrupt)) as files:
        lab.repo = files.url("repo")
        yield lab
        assert lab.bmcs[0].own_sessions() == 0, "a Redfish session leaked"


def client(lab) -> RedfishClient:
    return RedfishClient(Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True), T)


def compliance(c: RedfishClient):
    info = c.system_info()
    return CATALOG.compliance(model=info.model, system_id=info.system_id, components=c.firmware_inventory())


def test_update_stages_applies_in_one_reboot_and_verifies(lab) -> None:
    bmc = lab.bmcs[0]
    with client(lab) as c:
        before = compliance(c)
        assert [u.component_id for u in before.updates] == ["159", "25227", "104298", "105848"]
        packages = before.update_packages(CATALOG.base_location, lab.repo)
        boots = bmc.boot_count
        report = c.dell.update_firmware(packages)
        assert report.ok and report.rebooted and not report.nothing_to_do
        assert bmc.boot_count == boots + 1  # every staged package applied by the same reboot
        assert {r.component_id: (r.before, r.after, r.status) for r in report.components} == {
            "159": ("2.10.2", "2.17.1", "updated"),
            "25227": ("5.00.10.20", "6.10.30.00", "updated"),
            "104298": ("51.13.0-3485", "51.16.0-4076", "updated"),
            "105848": ("21.60.16", "22.31.6", "updated"),
        }
        report.raise_for_failures(c.target)  # nothing to raise
        assert compliance(c).compliant
        # idempotent rerun: nothing to do is a success, and nothing is touched
        jobs, boots = len(bmc.jobs), bmc.boot_count
        again = c.dell.update_firmware(packages)
        assert again.nothing_to_do and again.ok and not again.rebooted
        assert (len(bmc.jobs), bmc.boot_count) == (jobs, boots)


@pytest.mark.parametrize("lab", [{"105848"}], indirect=True)
def test_one_failing_component_leaves_a_correct_per_component_result(lab) -> None:
    with client(lab) as c:
        packages = compliance(c).update_packages(CATALOG.base_location, lab.repo)
        report = c.dell.update_firmware(packages)
        status = {r.component_id: r.status for r in report.components}
        assert status == {"159": "updated", "25227": "updated", "104298": "updated", "105848": "failed"}
        nic = next(r for r in report.components if r.component_id == "105848")
        assert nic.after == "21.60.16" and "ended Failed" in nic.message and nic.job_state == "Failed"
        with pytest.raises(JobFailed) as ei:
            report.raise_for_failures(c.target)
        assert "Broadcom" in str(ei.value) and "firmware update" in str(ei.value)


def test_success_without_a_version_change_is_a_failure(lab) -> None:
    lab.bmcs[0].inject(wrong_firmware_version=True)
    with client(lab) as c:
        packages = compliance(c).update_packages(CATALOG.base_location, lab.repo)
        pkg = [p for p in packages if p.component_id == "159"]  # BIOS only
        report = c.dell.update_firmware(pkg)
        assert [r.status for r in report.components] == ["unchanged"]
        with pytest.raises(FirmwareVerificationFailed) as ei:
            report.raise_for_failures(c.target)
        assert "still 2.10.2 (wanted 2.17.1)" in str(ei.value)


def test_stale_jobs_are_cleared_before_an_update(lab) -> None:
    bmc = lab.bmcs[0]
    stale = bmc.add_stale_jobs(2)
    with client(lab) as c:
        pkg = [
            p
            for p in compliance(c).update_packages(CATALOG.base_location, lab.repo)
            if p.component_id == "105848"
        ]
        report = c.dell.update_firmware(pkg)
        assert report.ok and report.queue is not None and sorted(report.queue.removed) == sorted(stale)


def test_fleet_inventory_with_bounded_concurrency_and_a_dead_bmc() -> None:
    with running_lab(10, SCALE) as lab:
        lab.bmcs[3].inject(unreachable=True)
        eps = [Endpoint(lab.url(i), "root", "calvin", allow_plain_http=True) for i in range(10)]
        results = fleet_inventory(eps, concurrency=4, timeouts=T)
        assert [r.ok for r in results] == [i != 3 for i in range(10)]
        assert results[3].error_kind == "TargetUnreachable" and "open session" in (results[3].error or "")
        ok = results[0]
        assert ok.system is not None and ok.system.model == "PowerEdge R640" and ok.system.system_id == "0716"
        assert {f.component_id for f in ok.firmware} == {"159", "25227", "104298", "105848"}
        assert results[2].system.model == "PowerEdge R650"
        assert all(b.own_sessions() == 0 and b.peak_sessions <= 1 for b in lab.bmcs)


async def test_async_fleet_inventory_matches_the_sushy_path() -> None:
    with running_lab(6, SCALE) as lab:
        lab.bmcs[4].inject(unreachable=True)
        lab.bmcs[5].exhaust_sessions()
        eps = [Endpoint(lab.url(i), "root", "calvin", allow_plain_http=True) for i in range(6)]
        results = await async_fleet_inventory(eps, concurrency=3, timeouts=T)
        assert [r.ok for r in results] == [True, True, True, True, False, False]
        assert results[4].error_kind == "TargetUnreachable"
        assert results[5].error_kind == "SessionLimitReached" and "RAC0218" in (results[5].error or "")
        sync = fleet_inventory(eps[:4], concurrency=2, timeouts=T)
        assert [(r.system, r.firmware) for r in results[:4]] == [(r.system, r.firmware) for r in sync]
        assert all(b.own_sessions() == 0 and b.peak_sessions <= 1 for b in lab.bmcs)
