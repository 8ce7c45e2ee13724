"""OME client against the simulated OpenManage Enterprise: paging, devices, firmware
inventory, baseline compliance (cross-checked with rackpilot's own catalog compliance),
jobs, faults, and no leaked API sessions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from devstack.lab.ome import OMESim
from executor.targets.catalog import Catalog
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import (
    AuthenticationFailed,
    JobFailed,
    JobStuck,
    RequestRejected,
    TargetServerError,
    TargetUnreachable,
)
from executor.targets.ome import OMEClient

SCALE = 400.0
# Budgets compressed 4x less than the lab's clock (headroom on a loaded 2-core machine);
# polls stay fast. Tests that expect a timeout set the budget they need.
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0)
CATALOG = Catalog.from_path(Path(__file__).resolve().parent.parent / "fixtures" / "catalog" / "Catalog.xml")


def sim_packages(catalog: Catalog) -> list[dict]:
    return [
        {
            "component_id": cid,
            "version": p.version,
            "name": p.name,
            "criticality": p.criticality,
            "reboot_required": p.reboot_required,
            "system_ids": sorted(p.system_ids),
            "path": p.path,
        }
        for p in catalog.packages
        for cid in p.component_ids
    ]


@pytest.fixture
async def ome():
    sim = OMESim(
        devices=OMESim.lab_devices(7),
        packages=sim_packages(CATALOG),
        page_size=3,
        time_scale=SCALE,
        job_seconds=40.0,
    )
    await sim.start()
    yield sim
    await sim.stop()
    assert sim.own_sessions() == 0, "an OME API session leaked"


def ep(sim: OMESim, password: str = "ome-lab-pw") -> Endpoint:
    return Endpoint(sim.url, "admin", password, allow_plain_http=True)


async def test_devices_are_read_across_all_pages(ome: OMESim) -> None:
    async with OMEClient(ep(ome), T) as c:
        first = await c.get("/api/DeviceService/Devices", "peek")
        assert len(first["value"]) == 3 and "@odata.nextLink" in first  # the server pages
        devices = await c.devices()
    assert [d.service_tag for d in devices] == [f"SIM{i:04d}" for i in range(7)]
    d0 = devices[0]
    assert (d0.model, d0.system_id, d0.power_state, d0.address) == (
        "PowerEdge R640",
        "0716",
        "On",
        "10.0.0.1",
    )
    assert ome.sessions_created == 1 and ome.peak_sessions == 1


async def test_baseline_compliance_matches_catalog_compliance(ome: OMESim) -> None:
    async with OMEClient(ep(ome), T) as c:
        baseline = await c.baseline("rackpilot-baseline")
        assert (await c.catalogs())[0]["Repository"]["RepositoryType"] == "HTTP"
        reports = await c.compliance(int(baseline["Id"]))
        devices = {d.id: d for d in await c.devices()}
        assert len(reports) == 7
        for rep in reports:
            dev = devices[rep.device_id]
            ours = CATALOG.compliance(
                model=dev.model, system_id=dev.system_id, components=await c.device_firmware(dev.id)
            )
            assert {u.component_id: u.target for u in ours.updates} == {
                u.component_id: u.target for u in rep.updates
            }, dev.service_tag
            assert rep.status == (
                "OK"
                if ours.compliant
                else "CRITICAL"
                if any(u.criticality == "Urgent" for u in ours.updates)
                else "WARNING"
            )
        old_r640 = next(r for r in reports if r.service_tag == "SIM0000")
        bios = next(x for x in old_r640.components if x.component_id == "159")
        assert (bios.current, bios.target, bios.action, bios.criticality, bios.reboot_required) == (
            "2.10.2",
            "2.17.1",
            "UPGRADE",
            "Urgent",
            True,
        )


async def test_inventory_and_compliance_refresh_jobs(ome: OMESim) -> None:
    async with OMEClient(ep(ome), T) as c:
        before = ome.devices[25001].last_inventory
        job = await c.refresh_inventory([25001, 25002])
        assert ome.jobs[job].status == 2060 and ome.devices[25001].last_inventory != before
        task = await c.refresh_compliance(31)
        assert ome.jobs[task].status == 2060


async def test_job_failure_and_stuck_job(ome: OMESim) -> None:
    async with OMEClient(ep(ome), T) as c:
        ome.inject(job_outcome="fail")
        with pytest.raises(JobFailed) as ei:
            await c.refresh_inventory([25000])
        assert "ended Failed" in str(ei.value) and "refresh inventory" in str(ei.value)
        ome.inject(job_outcome="stuck")
        c.timeouts = replace(T, job=0.3)
        with pytest.raises(JobStuck, match="still Running"):
            await c.refresh_inventory([25000])
        with pytest.raises(RequestRejected) as ei:
            await c.refresh_inventory([99])
        assert "CJOB4002" in str(ei.value)


async def test_faults_end_in_specific_errors(ome: OMESim) -> None:
    with pytest.raises(AuthenticationFailed) as ei:
        async with OMEClient(ep(ome, "nope"), T):
            pass
    assert "CSEC5002" in str(ei.value) and "nope" not in str(ei.value)
    async with OMEClient(ep(ome), T) as c:
        ome.inject(server_errors=1)
        assert len(await c.devices()) == 7  # one HTTP 500 on a GET is retried
        ome.inject(server_errors=-1)
        with pytest.raises(TargetServerError, match="CGEN1009"):
            await c.devices()
        ome.inject(server_errors=0)
    ome.inject(unreachable=True)
    with pytest.raises(TargetUnreachable, match="open session"):
        async with OMEClient(ep(ome), T):
            pass
    ome.inject(unreachable=False)


async def test_session_deleted_when_the_work_fails(ome: OMESim) -> None:
    with pytest.raises(RuntimeError):
        async with OMEClient(ep(ome), T) as c:
            await c.devices()
            raise RuntimeError("handler failed")
    assert ome.sessions_deleted == 1


async def test_unauthenticated_requests_are_refused(ome: OMESim) -> None:
    async with httpx.AsyncClient(base_url=ome.url) as raw:
        r = await raw.get("/api/DeviceService/Devices")
    assert r.status_code == 401
