"""The console's frame against the real local stack: one sign-in shared by the notebooks
of a JupyterLab session (refresh and sign-out seen by every kernel), screens that show the
sign-in form instead of a traceback, names instead of UUIDs (user_labels), the server
update wizard from its first step to the live monitor, and the monitor following Realtime.

The executor's side is played by SQL as the database owner, as in test_console.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from console.errors import NotSignedIn
from console.models.monitor import JobMonitor
from console.models.names import Names
from console.models.update_wizard import Step, UpdateWizard
from console.session import resume
from console.store import SessionStore
from console.widgets.app import Console
from tests.integration._functions_support import q
from tests.integration.console_support import (
    CATALOG,
    PASSWORD,
    approved_window,
    claim,
    make_console_env,
)


@pytest.fixture(scope="module")
def ce(stack):
    e = make_console_env(stack)
    yield e
    e.close()


async def wait_for(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def env_for(ce, tmp_path) -> dict[str, str]:
    return {
        "SUPABASE_URL": ce.config.url,
        "SUPABASE_ANON_KEY": ce.config.anon_key,
        "RACKPILOT_CONSOLE_RUNTIME_DIR": str(tmp_path / "rt"),
    }


def test_one_sign_in_for_every_notebook(ce, tmp_path):
    env = env_for(ce, tmp_path)
    first = Console.start(env=env, show=False)
    assert not first.signed_in
    jobs = first.jobs()  # a cell run before sign-in: the form, not a traceback
    assert jobs.view is None and "Sign in to open" in jobs.children[0].value
    first.sign_in(ce.emails["operator"], PASSWORD)
    assert jobs.view is not None and hasattr(jobs, "board")  # the same cell now shows the screen
    store = SessionStore(ce.config.url, tmp_path / "rt")
    assert PASSWORD not in store.path.read_text()

    second = Console.start(env=env, show=False)  # another notebook of the same Lab
    assert (
        second.signed_in
        and second.session.email == ce.emails["operator"]
        and second.session.role == "operator"
    )
    # each refresh rotates the refresh token; the other kernel adopts it instead of reusing its own
    # (a reuse would revoke the whole session)
    second.session.refresh()
    first.session.refresh()
    second.session.refresh()
    assert isinstance(first.api.jobs(limit=1), list) and isinstance(second.api.jobs(limit=1), list)

    second.sign_out()  # signs out every notebook
    assert not store.path.exists()
    with pytest.raises(NotSignedIn):
        first.api.jobs(limit=1)
    assert not first.signed_in and resume(ce.config, store) is None
    assert Console.start(env=env, show=False).signed_in is False


def test_names_instead_of_uuids(ce):
    names = Names(ce.api("operator"))
    assert names.user(ce.user_ids["operator"]) == "you"
    assert names.user(ce.user_ids["approver"]) == ce.emails["approver"]
    assert names.name("cluster", ce.fleet.clusters[0]).startswith("cl")
    assert names.name("site", ce.fleet.site_a) != ce.fleet.site_a[:8]
    # a user without an application role learns nothing
    rows = ce.sessions["viewer"].client.rpc("user_labels", {"p_ids": [ce.user_ids["admin"]]}).execute().data
    assert rows == [{"id": ce.user_ids["admin"], "label": ce.emails["admin"]}]


async def test_wizard_from_the_first_step_to_the_live_monitor(ce):
    f = ce.fleet
    cluster = f.clusters[0]
    site = f.site_a
    q(
        ce.conn,
        "insert into public.firmware_catalogs (site_id, name, url) values (%s, %s, %s) "
        "on conflict do nothing",
        site,
        f"dell-{ce.tag}",
        CATALOG,
    )
    wid = approved_window(ce, cluster)
    api = ce.api("operator")
    wz = UpdateWizard(api)
    wz.load_inventory()
    assert any(c["url"] == CATALOG for c in wz.catalogs)
    wz.choose_cluster(cluster)
    assert wz.options["catalog_url"] == CATALOG and wz.options["maintenance_window_id"] == wid
    wz.set_options(description=f"frame {ce.tag}")
    rep = wz.run_preflight()
    assert rep.hosts_out_bound == 1 and len(rep.host_gates) == len(f.hosts[cluster])
    assert all(g["verdict"] == "unknown: refresh inventory" for g in rep.host_gates) and not rep.nothing_to_do
    wz.confirm(wz.cluster["name"])
    res = wz.create()
    assert wz.step == Step.DONE

    jid = res["job_id"]
    mon = JobMonitor(api, jid, names=Names(api))
    mon.refresh()
    assert len(mon.tasks) == len(f.hosts[cluster]) and mon.title().startswith("rolling_cluster_update of ")
    from console.models.live import LiveFeed

    feed = LiveFeed(ce.sessions["operator"])
    feed.add_sink(mon.apply)
    await feed.start()
    try:
        claim(ce, jid)
        first, second = sorted(mon.tasks.values(), key=lambda t: t["seq"])[:2]
        q(
            ce.conn,
            "update public.job_tasks set status = 'skipped', finished_at = now(), started_at = now(), "
            'details = details || \'{"reason": "already compliant"}\' where id = %s',
            second["id"],
        )
        for phase, pct in (("backup", 5), ("stage", 15), ("maintenance", 30)):
            q(
                ce.conn,
                "update public.job_tasks set status = 'running', started_at = coalesce(started_at, now()), "
                "progress = %s, details = details || jsonb_build_object('phase', %s::text), "
                "updated_at = clock_timestamp() where id = %s",
                pct,
                phase,
                first["id"],
            )
            await wait_for(lambda p=phase: mon.tracks[first["id"]].phase == p)
        await wait_for(lambda: mon.status == "running")
        bars = [
            b["phase"] for b in next(r for r in mon.gantt() if r["label"] == first["target_name"])["bars"]
        ]
        assert bars[-3:] == ["backup", "stage", "maintenance"]
        rows = {r["host"]: r for r in mon.host_rows()}
        assert rows[second["target_name"]]["why"] == "already compliant"
        assert rows[first["target_name"]]["progress"] == 30
        assert any("already compliant" in x.text for x in mon.log) and feed.errors == []
    finally:
        await feed.stop()
