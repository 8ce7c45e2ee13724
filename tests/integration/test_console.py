"""The operator console against the real local stack: sign-in for every role, the update
wizard's dry run and creation, Realtime reaching the job view models, the blocker wizard,
four-eyes windows, force-resume, sealed credentials, reports and the fleet browser.

Everything goes through console.api/console.models exactly as the notebooks drive them;
the executor's side (claiming, reporting steps, pausing for blockers) is played by SQL as
the database owner, since no executor runs in these tests."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

import pytest

from console.api import Api
from console.errors import AccessDenied, Conflict, SignInError, ValidationFailed
from console.models.admin import CredentialForm, ForceResume
from console.models.blockers import BlockerWizard
from console.models.jobs import JobBoard, JobDetail
from console.models.live import LiveFeed
from console.models.reports import FleetModel, ReportModel
from console.models.update_wizard import Step, UpdateWizard
from console.models.windows import WindowBoard
from console.session import sign_in
from tests.integration._functions_support import insert_blocker, q, window_slot
from tests.integration.console_support import (
    CATALOG,
    PASSWORD,
    add_step,
    approved_window,
    claim,
    job_row,
    jobs_count,
    make_console_env,
    scp_job,
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


def test_sign_in_every_role_and_refusals(ce):
    assert {r: ce.sessions[r].role for r in ce.sessions} == {
        "viewer": "viewer",
        "operator": "operator",
        "approver": "approver",
        "approver2": "approver",
        "admin": "admin",
    }
    with pytest.raises(SignInError) as exc:
        sign_in(ce.config, ce.emails["operator"], "not-the-password")
    assert exc.value.code == "bad_credentials" and "not-the-password" not in str(exc.value)
    s = ce.sessions["operator"]
    assert s.access_token not in repr(s) and PASSWORD not in repr(s) and "signed in" in repr(s)
    assert PASSWORD not in json.dumps(vars(s), default=str)


def test_token_refresh_keeps_working(ce):
    s = sign_in(ce.config, ce.emails["viewer"], PASSWORD, refresh_margin_s=10**6)  # every use refreshes
    seen: list[str] = []
    s.on_token(seen.append)
    before = s.expires_at
    tokens = [s.access_token for _ in range(2)]
    # two refreshes, each rotating the refresh token: a second refresher would have been
    # refused (reuse revokes the session), so the calls below prove there is one
    assert len(seen) == 2 and all(tokens) and s.expires_at >= before
    assert isinstance(Api(s).jobs(limit=1), list)
    s.sign_out()
    with pytest.raises(Exception) as exc:
        Api(s).jobs()
    assert "not signed in" in str(exc.value)


def test_viewer_is_refused_with_a_clear_message_and_nothing_written(ce):
    before = jobs_count(ce)
    with pytest.raises(AccessDenied) as exc:
        ce.api("viewer").create_job("scp_backup", {"server_ids": [ce.fleet.standalone_server]})
    assert exc.value.code == "forbidden" and exc.value.status == 403
    assert "create-job create needs the operator role" in str(exc.value)
    assert exc.value.details == {"required_role": "operator", "your_role": "viewer"}
    assert jobs_count(ce) == before


def test_update_wizard_dry_run_then_create(ce):
    cluster = ce.fleet.clusters[0]
    wz = UpdateWizard(ce.api("operator"))
    assert {c["id"] for c in wz.load_clusters(ce.fleet.site_a)} == set(ce.fleet.clusters)
    wz.choose_cluster(cluster)
    assert wz.step == Step.OPTIONS and len(wz.hosts) == 3 and wz.windows == []

    # bad options are refused before anything is sent, with every problem named
    with pytest.raises(ValidationFailed) as exc:
        wz.set_options(catalog_url="ftp://nope", max_parallel_hosts=99)
    assert (
        "catalog URL: an http(s) URL such as https://downloads.example.com/catalog/Catalog.xml.gz"
        in exc.value.problems
    )  # in words, never the pattern
    assert "hosts at once: at most 16" in exc.value.problems

    # without a window the dry run is a blocking check, and nothing is written
    wz.set_options(catalog_url=CATALOG)
    before = jobs_count(ce)
    rep = wz.run_preflight()
    assert not rep.ok and [c.name for c in rep.blocking()] == ["dry_run"]
    assert "window_required" in rep.blocking()[0].detail
    assert len(rep.vm_blockers) == 3 and all(v["reasons"] == ["USB passthrough"] for v in rep.vm_blockers)
    with pytest.raises(ValidationFailed):
        wz.confirm("anything")
    assert jobs_count(ce) == before

    # with an approved window the dry run passes; the plan names every host
    wid = approved_window(ce, cluster)
    wz.back()
    wz.choose_cluster(cluster)  # reloads the approved windows
    assert [w["id"] for w in wz.windows] == [wid] and wz.options["maintenance_window_id"] == wid
    wz.set_options(catalog_url=CATALOG, description=f"wizard {ce.tag}")
    rep = wz.run_preflight()
    assert rep.ok, rep.blocking()
    assert len(rep.plan["tasks"]) == 3 and rep.plan["risk"] == "high"
    assert jobs_count(ce) == before
    exported = json.loads(rep.to_json())
    assert exported["ok"] is True and exported["cluster"]["id"] == cluster
    rows = list(csv.reader(io.StringIO(rep.to_csv())))
    assert rows[0] == ["section", "item", "status", "detail"]
    assert ["check", "dry_run", "ok"] in [r[:3] for r in rows] and sum(r[0] == "host" for r in rows) == 3
    assert "verdict: **ready**" in rep.to_markdown()

    with pytest.raises(ValidationFailed):
        wz.confirm("wrong-name")
    wz.confirm(wz.cluster["name"])
    res = wz.create()
    assert wz.step == Step.DONE and res["status"] == "pending"
    row = job_row(ce, res["job_id"])
    assert (row["type"], row["cluster_id"], str(row["maintenance_window_id"])) == (
        "rolling_cluster_update",
        cluster,
        wid,
    )
    assert row["params"]["firmware"]["catalog_url"] == CATALOG
    assert (
        q(ce.conn, "select count(*) as n from public.job_tasks where job_id = %s", res["job_id"])[0]["n"] == 3
    )

    # a second update of the same cluster is refused by the control plane, said plainly
    wz2 = UpdateWizard(ce.api("operator"))
    wz2.choose_cluster(cluster)
    wz2.set_options(catalog_url=CATALOG)
    rep2 = wz2.run_preflight()
    assert not rep2.ok and "rolling_update_in_progress" in rep2.blocking()[0].detail

    # the executor's gates from that job's stored pre-flight report come with the next preview
    report = {
        "gates": {
            "esx-x": {
                "verdict": "block",
                "readiness": 0,
                "gates": [{"name": "psu", "status": "block", "reason": "PS2 Critical"}],
            }
        },
        "capacity": {"status": "ok", "reason": "N+1: at most 1 host(s) out at once"},
    }
    body = json.dumps(report).encode()
    q(
        ce.conn,
        "insert into public.artifacts (job_id, kind, content_type, sha256, size_bytes, content) "
        "values (%s, 'preflight_report', 'application/json', encode(extensions.digest(%s::bytea, 'sha256'), 'hex'), %s, %s)",
        res["job_id"],
        body,
        len(body),
        body,
    )
    last = ce.api("operator").last_preflight_report(cluster)
    assert last["job_id"] == res["job_id"] and last["gates"] == report["gates"]
    rep3 = wz2.run_preflight()
    assert ("esx-x", "psu", "block") in {(g["host"], g["gate"], g["status"]) for g in rep3.executor_gates}
    assert "esx-x: psu (PS2 Critical)" in next(c.detail for c in rep3.checks if c.name == "executor_gates")


def test_job_form_dry_run_then_create(ce):
    from console.models.job_form import JobForm

    form = JobForm(ce.api("operator"), "scp_backup")
    servers = [ce.fleet.standalone_server, ce.fleet.server_b]  # two sites: the plan refuses
    params = form.params({"components": ["BIOS"]}, {"server_ids": servers})
    before = jobs_count(ce)
    with pytest.raises(Exception) as exc:
        form.dry_run(params)
    assert getattr(exc.value, "code", "") == "targets_span_sites"
    params = form.params({"components": ["BIOS"]}, {"server_ids": servers[:1]})
    assert form.dry_run(params)["plan"]["tasks"][0]["target_id"] == servers[0]
    assert jobs_count(ce) == before
    res = form.create(params)
    assert job_row(ce, res["job_id"])["params"]["components"] == ["BIOS"] and jobs_count(ce) == before + 1
    assert {r["id"] for r in ce.api("viewer").inventory("server", ce.fleet.site_a)} >= {servers[0]}


async def test_realtime_updates_reach_the_job_views(ce):
    jid = scp_job(ce)
    api = ce.api("operator")
    board = JobBoard(api, limit=20)
    board.refresh()
    detail = JobDetail(api, jid)
    detail.refresh()
    assert jid in board.jobs and detail.status == "pending"
    feed = LiveFeed(ce.sessions["operator"])
    feed.add_sink(board.apply)
    feed.add_sink(detail.apply)
    await feed.start()
    try:
        claim(ce, jid)
        sid = add_step(ce, jid, 0, "scp.export", "Export SCP")
        await wait_for(
            lambda: (
                detail.status == "running"
                and detail.timeline()
                and detail.timeline()[0]["status"] == "running"
            )
        )
        # a token refresh mid-stream: the new token goes to the open Realtime connection
        # (set_auth on the joined channel) and changes keep arriving
        await asyncio.to_thread(ce.sessions["operator"].refresh)
        q(
            ce.conn,
            "update public.workflow_executions set status = 'completed', finished_at = now() where id = %s",
            sid,
        )
        q(ce.conn, "update public.jobs set status = 'completed' where id = %s", jid)
        await wait_for(lambda: detail.timeline()[0]["status"] == "completed" and detail.status == "completed")
        await wait_for(lambda: board.jobs[jid]["status"] == "completed")
        assert detail.progress() == (1, 1)
        assert [n.level for n in board.notices if n.job_id == jid] == ["info", "success"]
        assert any(r["id"] == jid and "completed" in r["status"] for r in board.table())
        assert feed.errors == []
    finally:
        await feed.stop()
    assert ce.sessions["operator"]._listeners == []  # the stopped feed no longer takes tokens


def test_blocker_wizard_sends_decisions_and_resumes(ce):
    f = ce.fleet
    jid = scp_job(ce, f.host_servers[f.hosts[f.clusters[1]][0]])
    claim(ce, jid)
    vms = list(f.vms.items())[:2]
    b1 = insert_blocker(ce.conn, jid, vms[0][1], vms[0][0])
    b2 = insert_blocker(ce.conn, jid, vms[1][1], vms[1][0])
    b3 = insert_blocker(ce.conn, jid, None, None, kind="pending_idrac_jobs")
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'blockers' where id = %s", jid)

    wz = BlockerWizard(ce.api("operator"), jid)
    wz.load()
    assert wz.paused_for_blockers and {b["id"] for b in wz.blockers} == {b1, b2, b3}
    with pytest.raises(ValidationFailed, match="skip_host needs a blocker that names a host"):
        wz.decide(b3, "skip_host")
    n, skipped = wz.bulk("power_off_vm")
    assert n == 2 and len(skipped) == 1 and "names a VM" in skipped[0]
    with pytest.raises(ValidationFailed, match="1 blocker"):
        wz.save(resume=True)
    wz.decide(b3, "abort")
    with pytest.raises(ValidationFailed, match="abort"):
        wz.save(resume=True)
    wz.clear(b3)

    # the viewer may look but not decide
    vw = BlockerWizard(ce.api("viewer"), jid)
    vw.load()
    vw.decide(b1, "power_off_vm")
    with pytest.raises(AccessDenied, match="operator role"):
        vw.save(resume=False)

    # partial save keeps the job paused; completing the set resumes it
    res = wz.save(resume=False)
    assert res["recorded"] == 2 and res["resumed"] is False and res["status"] == "paused"
    assert [b["id"] for b in wz.blockers] == [b3]
    with pytest.raises(ValidationFailed):
        wz.decide(b3, "power_off_vm")  # no VM on this blocker
    wz.decide(b3, "abort")
    with pytest.raises(Conflict):
        BlockerWizard(ce.api("operator"), jid).api.resolve_blockers(
            jid, [{"blocker_id": b1, "decision": "skip_host"}]
        )
    res = wz.save(resume=True, confirm_abort=True)
    assert res["status"] == "cancelled"
    acts = {
        r["blocker_id"]: r["action"]
        for r in q(
            ce.conn,
            "select blocker_id::text, action::text from public.blocker_resolutions where job_id = %s",
            jid,
        )
    }
    assert acts[b1] == "power_off_vm" and acts[b2] == "power_off_vm" and len(acts) == 3


def test_blocker_wizard_resume(ce):
    f = ce.fleet
    jid = scp_job(ce, f.host_servers[f.hosts[f.clusters[1]][1]])
    claim(ce, jid)
    vm, host = list(f.vms.items())[3]
    b = insert_blocker(ce.conn, jid, host, vm)
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'blockers' where id = %s", jid)
    wz = BlockerWizard(ce.api("operator"), jid)
    wz.load()
    wz.decide(b, "skip_host", note="host has a dead PSU")
    res = wz.save(resume=True)
    assert res["resumed"] is True and job_row(ce, jid)["status"] == "pending"
    assert wz.blockers == [] and not wz.paused_for_blockers


def test_windows_four_eyes(ce):
    ops = WindowBoard(ce.api("operator"), ce.sessions["operator"])
    starts, ends = window_slot()
    with pytest.raises(ValidationFailed) as exc:
        ops.request(site_id=ce.fleet.site_a, title="", starts_at=ends, ends_at=starts)
    assert len(exc.value.problems) == 2
    res = ops.request(
        site_id=ce.fleet.site_a,
        cluster_id=ce.fleet.clusters[1],
        title=f"patch {ce.tag}",
        starts_at=starts,
        ends_at=ends,
        reason="BIOS",
    )
    wid = res["window_id"]
    mine = next(r for r in ops.rows() if r["id"] == wid)
    assert mine["requested_by"] == "you" and not mine["can_decide"] and "approvers decide" in mine["why_not"]

    # an approver who requested a window cannot approve it: said before and by the server
    ap = WindowBoard(ce.api("approver"), ce.sessions["approver"])
    s2, e2 = window_slot()
    own = ap.request(site_id=ce.fleet.site_a, title=f"own {ce.tag}", starts_at=s2, ends_at=e2)["window_id"]
    row = next(r for r in ap.rows() if r["id"] == own)
    assert not row["can_decide"] and "four eyes" in row["why_not"]
    with pytest.raises(AccessDenied) as exc:
        ap.approve(own)
    assert exc.value.code == "four_eyes"

    with pytest.raises(AccessDenied):
        ops.approve(wid)
    with pytest.raises(ValidationFailed, match="say why"):
        ap.reject(wid, "  ")
    assert next(r for r in ap.rows() if r["id"] == wid)["can_decide"]
    assert ap.approve(wid, "ok for tonight")["status"] == "approved"
    assert (
        WindowBoard(ce.api("approver2"), ce.sessions["approver2"]).reject(own, "clashes")["status"]
        == "rejected"
    )
    w = q(
        ce.conn, "select status::text, approved_by::text from public.maintenance_windows where id = %s", wid
    )[0]
    assert w == {"status": "approved", "approved_by": ce.user_ids["approver"]}


def test_force_resume_admin_only_with_reason(ce):
    jid = scp_job(ce)
    claim(ce, jid)
    q(ce.conn, "update public.jobs set status = 'paused', pause_reason = 'executor_lost' where id = %s", jid)
    admin = ForceResume(ce.api("admin"))
    assert jid in {r["id"] for r in admin.load()}
    with pytest.raises(ValidationFailed, match="at least 10"):
        admin.run(jid, "ok")
    with pytest.raises(AccessDenied, match="admin"):
        ForceResume(ce.api("operator")).run(jid, "the executor host was rebooted")
    assert job_row(ce, jid)["status"] == "paused"
    res = admin.run(jid, "executor host rebooted; the flash step never started")
    assert res["status"] == "pending" and job_row(ce, jid)["status"] == "pending"
    assert jid not in {r["id"] for r in admin.candidates}


def test_credentials_form_seals_and_echoes_nothing(ce):
    secret = f"s3cret-{ce.tag}-value"
    form = CredentialForm(ce.api("admin"))
    with pytest.raises(ValidationFailed) as exc:
        form.submit(
            site_id=ce.fleet.site_a,
            name="",
            kind="bmc",
            username="root",
            secret="",
            endpoints="https://x.test",
        )
    assert len(exc.value.problems) == 3 and secret not in str(exc.value)
    res = form.submit(
        site_id=ce.fleet.site_a,
        name=f"idrac-{ce.tag}",
        kind="idrac",
        username="root",
        secret=secret,
        endpoints="https://10.20.0.5 ca_bundle=/etc/rackpilot/idrac-ca.pem",
    )
    assert set(res) == {"credential_set_id", "key_ids", "sealed_to"} and res["sealed_to"] == 1
    assert secret not in json.dumps(res) and secret not in json.dumps(vars(form), default=str)
    stored = q(
        ce.conn,
        "select row_to_json(c)::text as t from public.credential_sets c where id = %s",
        res["credential_set_id"],
    )[0]["t"]
    assert secret not in stored
    with pytest.raises(AccessDenied) as exc:
        CredentialForm(ce.api("operator")).submit(
            site_id=ce.fleet.site_a,
            name=f"x-{ce.tag}",
            kind="ssh",
            username="root",
            secret=secret,
            endpoints="ssh://10.20.0.9 insecure_host_key",
        )
    assert secret not in str(exc.value) and secret not in json.dumps(exc.value.details, default=str)


def test_credential_status_and_rotation(ce):
    form = CredentialForm(ce.api("admin"))
    made = form.submit(
        site_id=ce.fleet.site_a,
        name=f"vc-{ce.tag}",
        kind="vcenter",
        username="admin@vsphere",
        secret="first-secret-1",
        endpoints="https://vc.lab.test",
    )
    sets = {s["id"]: s for s in form.status(ce.fleet.site_a)}
    mine = sets[made["credential_set_id"]]
    assert mine["stale"] is False and mine["key_ids"] == [ce.fleet.executor_key.kid]
    assert mine["endpoints"] == [{"scheme": "https", "host": "vc.lab.test", "port": 443, "tls": {}}]
    assert "first-secret-1" not in json.dumps(sets)
    envelope_sql = (
        "select key_id, sealed_secret from public.credential_envelopes where credential_set_id = %s"
    )
    before = q(ce.conn, envelope_sql, mine["id"])
    res = form.rotate(
        credential_set_id=mine["id"], secret="second-secret-2", endpoints="https://vc2.lab.test insecure"
    )
    assert res == {"credential_set_id": mine["id"], "key_ids": [ce.fleet.executor_key.kid], "sealed_to": 1}
    after = q(ce.conn, envelope_sql, mine["id"])
    assert [r["key_id"] for r in after] == [ce.fleet.executor_key.kid] == [r["key_id"] for r in before]
    assert after != before and "second-secret-2" not in json.dumps(after)
    assert {s["id"]: s for s in form.status(ce.fleet.site_a)}[mine["id"]]["endpoints"] == [
        {"scheme": "https", "host": "vc2.lab.test", "port": 443, "tls": {"insecure": True}}
    ]
    with pytest.raises(AccessDenied):
        CredentialForm(ce.api("approver")).status(ce.fleet.site_a)


def test_notification_settings(ce):
    from console.models.admin import NotificationSettings

    ns = NotificationSettings(ce.api("admin"))
    with pytest.raises(ValidationFailed) as exc:
        ns.add(name="", channel="webhook", target="http://hooks.example.com/x", events=["job_exploded"])
    assert len(exc.value.problems) == 3
    name = f"teams-{ce.tag}"
    ns.add(
        name=name,
        channel="teams",
        target="https://example.webhook.office.com/hook/abc",
        events=["job_completed", "job_failed"],
        site_id=ce.fleet.site_a,
    )
    row = next(r for r in ns.rows() if r["name"] == name)
    assert row["events"] == "job_completed, job_failed" and row["channel"] == "teams"
    assert ns.delete([row["id"]])["deleted"] == 1 and all(r["name"] != name for r in ns.rows())
    with pytest.raises(AccessDenied, match="admin"):
        NotificationSettings(ce.api("operator")).load()


def test_reports_and_fleet(ce, tmp_path):
    scp_job(ce)
    rm = ReportModel(ce.api("viewer"))
    rows = rm.load("v_job_stats_by_type")
    assert any(r["type"] == "scp_backup" and r["jobs_total"] >= 1 for r in rows)
    p = rm.export(tmp_path / "stats.csv")
    back = list(csv.DictReader(p.open()))
    assert len(back) == len(rows) and "success_rate" in back[0]
    assert json.loads(rm.export(tmp_path / "stats.json").read_text()) == json.loads(rm.json())
    with pytest.raises(Exception, match="unknown report"):
        rm.load("jobs")

    q(
        ce.conn,
        "insert into public.firmware_catalogs (site_id, name, url) values (%s, 'dell', %s)",
        ce.fleet.site_a,
        CATALOG,
    )
    cat = q(ce.conn, "select id from public.firmware_catalogs where site_id = %s", ce.fleet.site_a)[0]["id"]
    q(
        ce.conn,
        "insert into public.firmware_packages (catalog_id, component, version, path, criticality) "
        "values (%s, 'BIOS', '2.20.1', 'bios.exe', 'urgent')",
        cat,
    )
    solo = ce.fleet.standalone_server
    q(
        ce.conn,
        "insert into public.server_firmware (server_id, component, version) values (%s, 'BIOS', '2.19.1')",
        solo,
    )
    # what the last inventory found odd, as inventory_refresh stores it, shown with the server
    q(
        ce.conn,
        "update public.servers set details = details || %s::jsonb where id = %s",
        json.dumps({"inventory_warnings": ["missing component: no BIOS version reported"]}),
        solo,
    )
    fm = FleetModel(ce.api("viewer"))
    fm.load(ce.fleet.site_a)
    servers = {r["server"]: r for r in fm.server_rows()}
    assert len(servers) == 7
    solo_row = servers[f"srv-solo-{ce.tag}"]
    assert (solo_row["firmware"], solo_row["outdated"], solo_row["urgent"]) == ("outdated", 1, 1)
    assert solo_row["inventory notes"] == "missing component: no BIOS version reported"
    assert {r["inventory notes"] for r in servers.values() if r is not solo_row} == {""}
    assert {r["hosts"] for r in fm.cluster_rows()} == {3}
