"""The inventory screen's servers in a real data grid (ipydatagrid), against the local stack:
a viewer sees each server of the site by name with power, health, firmware and last
inventory; the search narrows the grid's rows; a site without servers says so in words."""

from __future__ import annotations

import pytest

from console.models.reports import FleetModel
from console.widgets.reports import SERVER_COLUMNS, FleetView
from tests.integration._functions_support import q
from tests.integration.console_support import make_console_env


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    yield e
    e.close()


def test_servers_are_in_a_data_grid_with_search(ce):
    pytest.importorskip("ipydatagrid")
    from ipydatagrid import DataGrid

    f = ce.fleet
    names = sorted(
        r["name"] for r in q(ce.conn, "select name from public.servers where site_id = %s", f.site_a)
    )
    assert len(names) >= 2
    q(
        ce.conn,
        "update public.servers set power_state = 'on', health = 'ok', last_seen_at = now() where name = %s",
        names[0],
    )
    m = FleetModel(ce.api("viewer"))
    m.load(f.site_a)
    v = FleetView(m)
    (grid,) = v.servers.children
    assert isinstance(grid, DataGrid) and "rp-servers" in grid._dom_classes
    assert list(grid.data.columns) == SERVER_COLUMNS
    assert sorted(grid.data["server"].tolist()) == names  # names, never ids
    first = grid.data[grid.data["server"] == names[0]].iloc[0]
    assert (first["power"], first["health"]) == ("on", "ok") and first["last inventory"] != "never"
    ids = {str(r["id"]) for r in q(ce.conn, "select id from public.servers where site_id = %s", f.site_a)}
    assert not ids & {str(x) for col in grid.data.columns for x in grid.data[col].tolist()}
    v.search.value = names[1]
    assert grid.data["server"].tolist() == [names[1]] and v.servers.children == (grid,)
    v.search.value = "no-such-server-anywhere"
    assert "no servers match" in v.servers.children[0].value
