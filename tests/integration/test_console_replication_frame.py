"""The replication screen in the console's frame against the real local stack: a viewer
opens it from the app's navigation (``register(Screen("replication", ...))``), sees each pair
with its lag, and the lag plot of the chosen pair drawn by console/widgets/charts.py from
``replication_runs`` with the pair's allowed lag; the sync itself is tested elsewhere
(tests/unit/test_console_replication.py, tests/integration/test_replication_schedule.py)."""

from __future__ import annotations

import pytest

from console.widgets.app import Console
from console.widgets.replication import ReplicationView
from tests.integration._functions_support import q
from tests.integration.console_support import PASSWORD, make_console_env


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    yield e
    for s in e.sessions.values():
        s.sign_out()
    e.conn.close()


def test_a_viewer_opens_the_replication_screen_and_its_lag_plot(ce, tmp_path):
    pair = ce.fleet.replication_pair
    q(
        ce.conn,
        "update public.replication_pairs set max_lag_seconds = 3600, "
        "last_synced_snapshot_at = now() - interval '3 hours' where id = %s",
        pair,
    )
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
    con = Console.start(
        env={
            "SUPABASE_URL": ce.config.url,
            "SUPABASE_ANON_KEY": ce.config.anon_key,
            "RACKPILOT_CONSOLE_RUNTIME_DIR": str(tmp_path / "rt"),
        },
        show=False,
    )
    con.sign_in(ce.emails["viewer"], PASSWORD)
    shell = con.app()
    assert "replication" in [k for _, k in shell.nav.options]  # a viewer may open it
    shell.show_screen("replication")
    frame = shell.body.children[0]
    view = frame.view
    assert isinstance(view, ReplicationView)
    assert f"rep-{ce.tag}" in view.table.value and "behind policy" in view.table.value
    view.pair.value = str(pair)
    svg = view.plot.value
    assert 'class="rp-chart rp-lines rp-lag-plot"' in svg and ">allowed lag<" in svg
    assert svg.count('class="rp-line"') == 2 and "now at most 1.5 h" in svg
