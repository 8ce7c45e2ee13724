"""The fleet intake screens against the local stack, as an operator and a viewer: catalogs
registered and listed with their state in words (results columns are the executor's),
baselines, schedules saved and listed with their next run, the BMC call log and discovery
scans read under RLS."""

from __future__ import annotations

import pytest

from console.errors import ConsoleError
from console.models.intake import CallLogModel, CatalogsModel, DiscoveryModel, SchedulesModel
from console.widgets.intake import CallLogView, CatalogsView, DiscoveryView, SchedulesView
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
    with pytest.raises(ConsoleError) as exc:
        SchedulesModel(op).save(
            site_id=site,
            name=f"bad-{ce.tag}",
            job_type="vcenter_sync",
            params={},
            recurrence="RRULE:FREQ=YEARLY",
        )
    assert "invalid_argument" in str(exc.value) or "RRULE" in str(exc.value)

    calls = CallLogView(CallLogModel(op), site_id=site)
    calls.load()
    assert "call(s)" in calls.head.value
    d = DiscoveryView(DiscoveryModel(op), site, [])
    d.load()
    assert d.status.value == ""
