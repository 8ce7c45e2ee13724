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
    e.close()


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


def _frame_view(ce, tmp_path, role: str) -> ReplicationView:
    con = Console.start(
        env={
            "SUPABASE_URL": ce.config.url,
            "SUPABASE_ANON_KEY": ce.config.anon_key,
            "RACKPILOT_CONSOLE_RUNTIME_DIR": str(tmp_path / f"rt-{role}"),
        },
        show=False,
    )
    con.sign_in(ce.emails[role], PASSWORD)
    shell = con.app()
    shell.show_screen("replication")
    view = shell.body.children[0].view
    assert isinstance(view, ReplicationView)
    return view


def _sync_jobs(ce, pair) -> list[dict]:
    return q(
        ce.conn,
        "select id, type::text as type, params, created_by, status::text as status from public.jobs "
        "where type = 'replication_sync' and params->'replication_pair_ids' ? %s",
        str(pair),
    )


def test_sync_now_in_the_screen_creates_the_pairs_job_for_an_operator_only(ce, tmp_path):
    """The screen's "Sync now" goes through create-job as the signed-in user: an operator
    gets a replication_sync job of the chosen pair (its id shown); a viewer is told no, and
    no job is written."""
    pair = ce.fleet.replication_pair
    before = _sync_jobs(ce, pair)
    viewer = _frame_view(ce, tmp_path, "viewer")
    viewer.pair.value = str(pair)
    viewer.sync.click()
    assert "rp-error" in viewer.status.value, viewer.status.value
    assert _sync_jobs(ce, pair) == before

    op = _frame_view(ce, tmp_path, "operator")
    op.pair.value = str(pair)
    op.sync.click()
    assert "rp-ok" in op.status.value, op.status.value
    new = [j for j in _sync_jobs(ce, pair) if j not in before]
    assert len(new) == 1, new
    job = new[0]
    assert str(job["id"]) in op.status.value
    assert job["params"]["replication_pair_ids"] == [str(pair)] and job["params"]["dry_run"] is False
    # nobody runs it: ended, so no other test's executor of this site takes it
    q(
        ce.conn,
        "update public.jobs set status = 'cancelled', finished_at = now(), cancel_requested_at = now() where id = %s",
        job["id"],
    )
