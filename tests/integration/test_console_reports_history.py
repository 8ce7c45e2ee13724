"""Reports against the real local stack: firmware compliance over time, recorded per server
per inventory run by the database when the run ends (migration 20261208200000), and the
replication lag per pair, drawn in Reports by the Replication screen's own plot.

The executor's side (claiming the inventory_refresh job, reading the servers, ending the
job) is played by SQL as the database owner, as the other console tests do; the handlers'
reads against the Redfish lab are tested in tests/integration/test_handlers_dell_fleet.py."""

from __future__ import annotations

import pytest

from console.models.replication import ReplicationModel
from console.models.reports import REPLICATION_LAG, ReportModel
from console.widgets.replication import lag_svg
from console.widgets.reports import ReportsView, draw_chart
from tests.integration._functions_support import q
from tests.integration.console_support import CATALOG, claim, make_console_env


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    yield e
    e.close()


def inventory_run(ce, servers_read: list[str], bios: str, *, server_ids: list[str] | None = None) -> str:
    """An inventory_refresh job as the executor runs it: claimed, the servers it reads get
    their firmware and last_seen_at, then it completes."""
    import json

    job = str(
        q(
            ce.conn,
            "insert into public.jobs (type, site_id, params, created_by) "
            "values ('inventory_refresh', %s, %s::jsonb, %s) returning id",
            ce.fleet.site_a,
            json.dumps({"server_ids": server_ids} if server_ids else {"site_id": ce.fleet.site_a}),
            ce.user_ids["operator"],
        )[0]["id"]
    )
    claim(ce, job)
    for sid in servers_read:
        q(ce.conn, "delete from public.server_firmware where server_id = %s", sid)
        q(
            ce.conn,
            "insert into public.server_firmware (server_id, component, version) values (%s, 'BIOS', %s)",
            sid,
            bios,
        )
        q(ce.conn, "update public.servers set last_seen_at = now() where id = %s", sid)
    q(ce.conn, "update public.jobs set status = 'completed', finished_at = now() where id = %s", job)
    return job


def test_compliance_history_is_recorded_per_run_and_charted(ce):
    q(
        ce.conn,
        "insert into public.firmware_catalogs (site_id, name, url) values (%s, 'dell-hist', %s)",
        ce.fleet.site_a,
        CATALOG,
    )
    cat = q(
        ce.conn,
        "select id from public.firmware_catalogs where site_id = %s and name = 'dell-hist'",
        ce.fleet.site_a,
    )[0]["id"]
    q(
        ce.conn,
        "insert into public.firmware_packages (catalog_id, component, version, path, criticality) "
        "values (%s, 'BIOS', '2.20.1', 'bios.exe', 'urgent')",
        cat,
    )
    solo = ce.fleet.standalone_server
    others = [
        r["id"]
        for r in q(
            ce.conn, "select id from public.servers where site_id = %s and id <> %s", ce.fleet.site_a, solo
        )
    ]
    # run 1 reads the standalone server at an old BIOS; run 2 after its update; run 3 names
    # only that server: the servers a run did not read get no snapshot from it
    j1 = inventory_run(ce, [solo], "2.19.1")
    j2 = inventory_run(ce, [solo, others[0]], "2.20.1")
    j3 = inventory_run(ce, [solo, others[1]], "2.20.1", server_ids=[solo])
    hist = q(
        ce.conn,
        "select job_id::text, server_id::text, verdict, compliant, outdated, urgent "
        "from public.firmware_compliance_history where site_id = %s order by id",
        ce.fleet.site_a,
    )
    got = {(h["job_id"], h["server_id"], h["verdict"], h["urgent"]) for h in hist}
    assert got == {
        (j1, str(solo), "outdated", 1),
        (j2, str(solo), "compliant", 0),
        (j2, str(others[0]), "compliant", 0),
        (j3, str(solo), "compliant", 0),
    }
    assert {h["job_id"] for h in hist if h["server_id"] == str(others[1])} == set()

    # recording the same run again keeps one row per server (a job ends once: jobs_guard)
    assert q(ce.conn, "select public.record_firmware_compliance(%s) as n", j3)[0]["n"] == 1
    assert len(q(ce.conn, "select 1 from public.firmware_compliance_history where job_id = %s", j3)) == 1

    # a viewer reads it through RLS, with names; the chart counts servers per run
    rm = ReportModel(ce.api("viewer"))
    rows = rm.load("v_firmware_compliance_history", site_id=ce.fleet.site_a)
    assert {r["server_name"] for r in rows} == {f"srv-solo-{ce.tag}"} | {
        q(ce.conn, "select name from public.servers where id = %s", others[0])[0]["name"]
    }
    spec = rm.chart()
    assert spec is not None and spec["kind"] == "line" and len(spec["xs"]) == 3
    assert spec["series"] == {"compliant": [0, 2, 1], "not compliant": [1, 0, 0]}
    assert spec["second"]["series"]["outdated"] == [1, 0, 0]
    shown = rm.display_rows()
    assert all("server_id" not in r and "server" not in r for r in shown)  # named, not a UUID
    view = ReportsView(rm)
    view.render()
    assert "rp-chart rp-lines" in view.chart.value
    assert "servers compliant after each inventory / compliance run" in view.chart.value


def test_replication_lag_report_draws_the_replication_screens_plot(ce):
    pair = ce.fleet.replication_pair
    q(ce.conn, "update public.replication_pairs set max_lag_seconds = 3600 where id = %s", pair)
    for hours_ago, lag in ((5, 600), (4, 1800), (3, 5400)):
        q(
            ce.conn,
            "insert into public.replication_runs (pair_id, site_id, status, kind, bytes, lag_seconds, "
            "finished_at) values (%s, %s, 'succeeded', 'incremental', 4096, %s, "
            "now() - make_interval(hours => %s))",
            pair,
            ce.fleet.site_a,
            lag,
            hours_ago,
        )
    rm = ReportModel(ce.api("viewer"))
    rm.load(REPLICATION_LAG, site_id=ce.fleet.site_a)
    assert [r["name"] for r in rm.rows] == [f"rep-{ce.tag}"]
    html = draw_chart(rm.chart())
    # the very plot the Replication screen draws for that pair
    same = lag_svg(ReplicationModel(ce.api("viewer")).lag_series(str(pair)), 3600)
    assert same in html and "rp-lag-plot" in html and f"rep-{ce.tag}" in html
    assert "allowed lag" in html
    table = rm.display_rows()
    assert table[0]["pair"] == f"rep-{ce.tag}" and table[0]["allowed lag"] == "1.0 h"
    # and CSV export stays
    assert f"rep-{ce.tag}" in rm.csv()
