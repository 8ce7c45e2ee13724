"""The fleet intake screens against the local stack, as an operator and a viewer: catalogs
registered and listed with their state in words (results columns are the executor's),
baselines, schedules saved and listed with their next run, the BMC call log and discovery
scans read under RLS."""

from __future__ import annotations

import pytest

from console.errors import ConsoleError, ValidationFailed
from console.models.intake import CallLogModel, CatalogsModel, DiscoveryModel, SchedulesModel
from console.widgets.intake import CallLogView, CatalogsView, DiscoveryView, SchedulesView
from tests.integration._functions_support import q
from tests.integration.console_support import make_console_env


@pytest.fixture(scope="module")
def ce(stack):
    return make_console_env(stack)


def test_intake_screens_against_the_stack(ce) -> None:
    site = ce.fleet.site_a
    op, viewer = ce.api("operator"), ce.api("viewer")

    cats = CatalogsModel(op)
    row = cats.register(
        site_id=site, name=f"dell-{ce.tag}", url="https://downloads.example.com/Catalog.xml.gz"
    )
    cats.add_baseline(site_id=site, catalog_id=row["id"], name=f"bios-{ce.tag}", components=["BIOS"])
    v = CatalogsView(CatalogsModel(viewer), site)
    v.load()
    assert f"dell-{ce.tag}" in v.table.value and "not refreshed yet" in v.table.value
    assert f"bios-{ce.tag}" in v.baselines.value
    with pytest.raises(ConsoleError):  # viewers register nothing (RLS)
        CatalogsModel(viewer).register(site_id=site, name="x", url="https://x.example.com/Catalog.xml")

    SchedulesModel(op).save(
        site_id=site,
        name=f"inv-{ce.tag}",
        job_type="inventory_refresh",
        params={"site_id": site},
        recurrence="RRULE:FREQ=DAILY;BYHOUR=2",
        timezone="Europe/Berlin",
    )
    s = SchedulesView(SchedulesModel(viewer), site)
    s.load()
    assert f"inv-{ce.tag}" in s.table.value and "Europe/Berlin" in s.table.value
    with pytest.raises(
        ConsoleError
    ) as exc:  # params as the job form types them, a recurrence the database refuses
        SchedulesModel(op).save(
            site_id=site,
            name=f"bad-{ce.tag}",
            job_type="vcenter_sync",
            params={"vcenter_id": ce.fleet.vcenter},
            recurrence="RRULE:FREQ=YEARLY",
        )
    assert "invalid_argument" in str(exc.value) or "RRULE" in str(exc.value)
    with pytest.raises(ValidationFailed) as bad:  # params the job would refuse: in words, nothing saved
        SchedulesModel(op).save(
            site_id=site, name=f"noparams-{ce.tag}", job_type="vcenter_sync", params={}, recurrence="@daily"
        )
    assert bad.value.problems == ["vcenter id: required"]
    assert not q(ce.conn, "select 1 from public.job_schedules where name = %s", f"noparams-{ce.tag}")

    calls = CallLogView(CallLogModel(op), site_id=site)
    calls.load()
    assert "call(s)" in calls.head.value
    d = DiscoveryView(DiscoveryModel(op), site, [])
    d.load()
    assert d.status.value == ""


def test_the_job_monitor_shows_the_jobs_bmc_calls_to_those_who_may_read_them(ce) -> None:
    """The job view offers the job's BMC call log (a button, the calls on demand) to roles
    the call log screen admits (operators and up); a viewer gets no button."""
    from console.widgets.app import Console
    from tests.integration._functions_support import q
    from tests.integration.console_support import job_row, scp_job

    job = scp_job(ce)
    site = job_row(ce, job)["site_id"]
    q(
        ce.conn,
        "insert into public.bmc_calls (job_id, site_id, step, target, protocol, method, path, status, "
        "duration_ms, message_id, at) values (%s, %s, 'export', %s, 'redfish', 'POST', "
        "'/redfish/v1/Managers/iDRAC.Embedded.1/Actions/Oem/EID_674_Manager.ExportSystemConfiguration', "
        "400, 85, 'SYS041', now()) returning id",
        job,
        site,
        f"r640-{ce.tag}",
    )
    view = Console(ce.config, ce.sessions["operator"]).monitor(job).view
    assert view.calls_button.layout.display is None and view.calls_area.children == ()
    view.calls_button.click()
    assert view.status.value == "", view.status.value
    frame = view.calls_area.children[1]
    assert "1 call(s), 1 failed" in frame.view.head.value
    assert "SYS041" in frame.view.table.value and f"r640-{ce.tag}" in frame.view.table.value
    viewer = Console(ce.config, ce.sessions["viewer"]).monitor(job).view
    assert viewer.calls_button.layout.display == "none"
