"""The console's state machines and validation, without a stack or a browser.

``FakeApi`` stands in for ``console.api.Api`` here only: it records the calls the models
make and answers from fixed rows, so each transition and refusal can be checked in
isolation. The same flows run against the real stack in tests/integration/test_console.py."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest

from console.api import error_for
from console.errors import (
    AccessDenied,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from console.models.admin import CredentialForm, ForceResume
from console.models.blockers import BlockerWizard
from console.models.jobs import JobBoard, JobDetail, notice_for
from console.models.preflight import Check, PreflightReport
from console.models.update_wizard import Step, UpdateWizard
from console.models.windows import WindowBoard
from console.session import ConsoleConfig
from console.widgets.common import Status, html_table

CLUSTER = str(uuid.uuid4())
HOSTS = [str(uuid.uuid4()) for _ in range(2)]
CATALOG = "https://downloads.example.com/Catalog.xml.gz"


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.dry_run_error: Exception | None = None
        self.blockers: list[dict] = []
        self.last_report: dict | None = None  # a stored pre-flight report (last_preflight_report)

    def clusters(self, site_id=None):
        return [{"id": CLUSTER, "name": "cl-a", "site_id": "s1"}]

    def cluster(self, cid):
        if cid != CLUSTER:
            raise NotFound("no such cluster")
        return {
            "id": CLUSTER,
            "name": "cl-a",
            "site_id": "s1",
            "ha_admission_control": True,
            "drs_enabled": True,
            "drs_automation": "fullyAutomated",
        }

    def hosts(self, cid=None):
        return [
            {
                "id": h,
                "name": f"esx-{i}",
                "server_id": None,
                "connection_state": "connected",
                "in_maintenance": False,
            }
            for i, h in enumerate(HOSTS)
        ]

    def windows(self, **kw):
        return []

    def vms_on_hosts(self, ids):
        return [
            {
                "id": "vm1",
                "name": "db01",
                "host_id": HOSTS[0],
                "power_state": "on",
                "has_usb_passthrough": True,
            }
        ]

    def executors(self):
        return []

    def safety_policies(self):
        return [{"job_type": "rolling_cluster_update", "max_hosts_out_per_cluster": 1}]

    def last_preflight_report(self, cluster_id):
        return self.last_report

    def servers(self, site_id=None, ids=None):
        return [{"id": i, "name": f"srv-{i}", "power_state": "on", "health": "ok"} for i in ids or []]

    def create_job(self, job_type, params, **kw):
        self.calls.append(("create_job", {"type": job_type, "params": params, **kw}))
        if kw.get("dry_run") and self.dry_run_error:
            raise self.dry_run_error
        plan = {"tasks": [{"target_id": h} for h in HOSTS], "risk": "high", "scheduled_for": "now"}
        return (
            {"dry_run": True, "plan": plan}
            if kw.get("dry_run")
            else {"job_id": "j1", "status": "pending", "plan": plan}
        )

    def job(self, jid):
        return {"id": jid, "status": "paused", "pause_reason": "blockers"}

    def job_blockers(self, jid, open_only=False):
        return [b for b in self.blockers if b["status"] == "open" or not open_only]

    def _rest(self, what, build):
        return [{"id": h, "name": f"esx-{i}"} for i, h in enumerate(HOSTS)]

    def vms(self, ids):
        return [{"id": i, "name": f"vm-{i}"} for i in ids]

    def resolve_blockers(self, jid, decisions, resume=None):
        self.calls.append(("resolve_blockers", {"decisions": decisions, "resume": resume}))
        for b in self.blockers:
            if b["id"] in {d["blocker_id"] for d in decisions}:
                b["status"] = "resolved"
        return {
            "recorded": len(decisions),
            "status": "pending" if resume else "paused",
            "resumed": bool(resume),
        }

    def jobs(self, **kw):
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
        return [
            {"id": "a", "type": "scp_backup", "status": "paused", "pause_reason": "executor_lost"},
            {"id": "b", "type": "scp_backup", "status": "running", "lease_expires_at": past},
            {"id": "c", "type": "scp_backup", "status": "running", "lease_expires_at": future},
        ]

    def job_control(self, action, jid, reason=None):
        self.calls.append(("job_control", {"action": action, "job_id": jid, "reason": reason}))
        if jid == "refused":
            raise Conflict("job-control: not paused", code="not_paused")
        return {"job_id": jid, "status": "pending", "requested": False}

    def seal_credential(self, **kw):
        self.calls.append(("seal", kw))
        return {"credential_set_id": "c1", "key_ids": ["k"], "sealed_to": 1, "echo": kw.get("secret")}


# -- update wizard ------------------------------------------------------------------------
def at_options() -> tuple[FakeApi, UpdateWizard]:
    api = FakeApi()
    wz = UpdateWizard(api)  # type: ignore[arg-type]
    wz.load_clusters()
    wz.choose_cluster(CLUSTER)
    return api, wz


def test_wizard_walks_cluster_options_preflight_confirm_create():
    api, wz = at_options()
    assert wz.step == Step.OPTIONS
    wz.set_options(catalog_url=CATALOG, components="BIOS, iDRAC", host_ids=[HOSTS[1]], description="x")
    assert wz.params()["firmware"]["components"] == ["BIOS", "iDRAC"] and wz.params()["host_ids"] == [
        HOSTS[1]
    ]
    assert wz.params()["stage_ahead"] is True  # the job option's default
    wz.set_options(stage_ahead=False)
    assert wz.params()["stage_ahead"] is False
    wz.set_options(stage_ahead=True)
    rep = wz.run_preflight()
    assert wz.step == Step.PREFLIGHT and rep.ok
    assert [h["id"] for h in rep.hosts] == [HOSTS[1]]  # only the chosen hosts are checked
    assert {c.name: c.status for c in rep.checks}["ha_admission_control"] == "warn"
    assert api.calls[-1][1]["dry_run"] is True
    wz.confirm("cl-a")
    res = wz.create()
    assert wz.step == Step.DONE and res["job_id"] == "j1"
    created = api.calls[-1][1]
    assert "dry_run" not in created and created["description"] == "x" and created["priority"] == 50


def test_wizard_refuses_bad_options_and_keeps_the_old_ones():
    _, wz = at_options()
    wz.set_options(catalog_url=CATALOG)
    with pytest.raises(ValidationFailed) as exc:
        wz.set_options(
            catalog_url="not a url",
            max_parallel_hosts=0,
            esxi_target_version="8.0.3",
            host_ids=["00000000-0000-4000-8000-000000000000"],
            priority=101,
            bogus=1,
        )
    assert exc.value.problems == ["bogus: unknown option"]
    with pytest.raises(ValidationFailed) as exc:
        wz.set_options(
            catalog_url="not a url",
            max_parallel_hosts=0,
            esxi_target_version="8.0.3",
            host_ids=["00000000-0000-4000-8000-000000000000"],
            priority=101,
        )
    keys = {p.split(":")[0] for p in exc.value.problems}
    assert {"ESXi", "hosts", "priority", "catalog URL", "hosts at once"} <= keys
    assert not any("pattern" in p or "Input should" in p for p in exc.value.problems)  # words, not regex
    assert wz.options["catalog_url"] == CATALOG and wz.options["max_parallel_hosts"] == 1


def test_wizard_order_is_enforced_and_changes_invalidate_the_preflight():
    api = FakeApi()
    wz = UpdateWizard(api)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        wz.set_options(catalog_url=CATALOG)
    with pytest.raises(ValidationFailed):
        wz.run_preflight()
    with pytest.raises(ValidationFailed):
        wz.create()
    wz.choose_cluster(CLUSTER)
    with pytest.raises(ValidationFailed, match="catalog"):
        wz.run_preflight()
    wz.set_options(catalog_url=CATALOG)
    wz.run_preflight()
    with pytest.raises(ValidationFailed, match="type the cluster name"):
        wz.confirm("cl-b")
    wz.set_options(failure_budget=1)  # options changed after pre-flight: run it again
    assert wz.step == Step.OPTIONS and wz.report is None
    with pytest.raises(ValidationFailed):
        wz.confirm("cl-a")
    wz.back()
    assert wz.step == Step.CLUSTER


def test_wizard_blocks_on_a_failed_dry_run():
    api, wz = at_options()
    api.dry_run_error = Conflict("create-job: needs an approved maintenance window", code="window_required")
    wz.set_options(catalog_url=CATALOG)
    rep = wz.run_preflight()
    assert not rep.ok and "window_required" in rep.blocking()[0].detail
    with pytest.raises(ValidationFailed, match="blocking problems"):
        wz.confirm("cl-a")
    assert not any(c[0] == "create_job" and not c[1].get("dry_run") for c in api.calls)


def test_preflight_shows_the_gates_of_the_last_executor_preflight():
    api, wz = at_options()
    wz.set_options(catalog_url=CATALOG)
    rep = wz.run_preflight()
    [chk] = [c for c in rep.checks if c.name == "executor_gates"]
    assert chk.status == "ok" and "no earlier pre-flight" in chk.detail and rep.executor_gates == []
    api.last_report = {
        "job_id": "j9",
        "at": "2026-12-07T03:00:00+00:00",
        "gates": {
            "esx-0": {
                "verdict": "ok",
                "readiness": 100,
                "gates": [{"name": "psu", "status": "ok", "reason": "OK"}],
            },
            "esx-1": {
                "verdict": "block",
                "readiness": 0,
                "gates": [{"name": "storage", "status": "block", "reason": "virtual disk Degraded"}],
            },
        },
        "vsan": {"status": "warn", "reason": "vSAN health yellow"},
        "capacity": {"status": "ok", "reason": "N+1: at most 2"},
    }
    rep = wz.run_preflight()
    [chk] = [c for c in rep.checks if c.name == "executor_gates"]
    assert chk.status == "warn" and "esx-1: storage (virtual disk Degraded)" in chk.detail
    assert {(g["host"], g["gate"], g["status"]) for g in rep.executor_gates} == {
        ("esx-0", "psu", "ok"),
        ("esx-1", "storage", "block"),
        ("(cluster)", "vsan", "warn"),
        ("(cluster)", "capacity", "ok"),
    }
    assert "gate,esx-1/storage,block,virtual disk Degraded" in rep.to_csv()
    md = rep.to_markdown()
    assert "## Gates at the last pre-flight (job j9, 2026-12-07T03:00:00+00:00)" in md
    assert "| esx-1 | storage | block | virtual disk Degraded |" in md


def test_preflight_exports():
    rep = PreflightReport(
        cluster={"id": "c", "name": "cl"},
        generated_at="t",
        checks=[Check("drs", "ok", "DRS on"), Check("dry_run", "block", "no | window")],
        vm_blockers=[{"vm": "db01", "host": "esx-0", "reasons": ["vGPU"]}],
    )
    assert json.loads(rep.to_json())["ok"] is False
    assert "check,dry_run,block,no | window" in rep.to_csv() and "vm_blocker,db01,esx-0,vGPU" in rep.to_csv()
    assert "verdict: **blocked**" in rep.to_markdown() and "| db01 | esx-0 | vGPU |" in rep.to_markdown()


# -- blockers -----------------------------------------------------------------------------
def blocker(kind="usb_passthrough", host=True, vm=True) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "kind": kind,
        "host_id": HOSTS[0] if host else None,
        "vm_id": str(uuid.uuid4()) if vm else None,
        "status": "open",
        "description": "d",
    }


def test_blocker_wizard_decisions_bulk_and_save():
    api = FakeApi()
    b1, b2, b3 = blocker(), blocker(kind="vgpu"), blocker(kind="pending_idrac_jobs", host=False, vm=False)
    api.blockers = [b1, b2, b3]
    wz = BlockerWizard(api, "j")  # type: ignore[arg-type]
    wz.load()
    assert wz.paused_for_blockers and len(wz.rows()) == 3
    with pytest.raises(ValidationFailed, match="unknown decision"):
        wz.decide(b1["id"], "reboot_everything")
    with pytest.raises(ValidationFailed, match="not an open blocker"):
        wz.decide("nope", "skip_host")
    assert wz.bulk("skip_host", kind="vgpu") == (1, [])
    n, skipped = wz.bulk("skip_host")
    assert n == 1 and "names a host" in skipped[0]  # b3 names no host; b2 was already decided
    with pytest.raises(ValidationFailed, match="1 blocker"):
        wz.save()
    with pytest.raises(ValidationFailed, match="decide at least one"):
        BlockerWizard(api, "j").save()  # type: ignore[arg-type]
    wz.decide(b3["id"], "abort", note="LC stuck")
    with pytest.raises(ValidationFailed, match="abort"):
        wz.save()
    res = wz.save(confirm_abort=True)
    assert res["resumed"] and wz.choices == {}
    sent = api.calls[-1][1]
    assert sent["resume"] is True and {d["decision"] for d in sent["decisions"]} == {"skip_host", "abort"}
    assert {"blocker_id": b3["id"], "decision": "abort", "note": "LC stuck"} in sent["decisions"]


# -- jobs ---------------------------------------------------------------------------------
def change(table: str, kind: str, record: dict, old: dict | None = None) -> dict:
    return {"data": {"table": table, "type": kind, "record": record, "old_record": old or {}}}


def test_notices_follow_status_changes():
    assert (
        notice_for({"id": "j", "type": "t", "status": "completed"}, {"status": "running"}).level == "success"
    )
    n = notice_for(
        {"id": "j", "type": "t", "status": "paused", "pause_reason": "blockers"}, {"status": "running"}
    )
    assert n.level == "warning" and "blocker wizard" in n.message
    assert notice_for({"id": "j", "status": "running"}, {"status": "running"}) is None


def test_job_board_and_detail_apply_realtime_changes():
    api = FakeApi()
    board = JobBoard(api, limit=2)  # type: ignore[arg-type]
    seen = []
    board.on_change(lambda: seen.append(1))
    for i, jid in enumerate("xyz"):
        board.apply(
            change(
                "jobs",
                "INSERT",
                {
                    "id": jid,
                    "type": "scp_backup",
                    "status": "pending",
                    "created_at": f"2026-11-28T0{i}:00:00Z",
                },
            )
        )
    assert [r["id"] for r in board.rows()] == ["z", "y"] and len(seen) == 3  # trimmed to the limit
    board.apply(
        change("jobs", "UPDATE", {"id": "z", "status": "failed", "error": "boom"}, {"status": "running"})
    )
    assert board.jobs["z"]["status"] == "failed" and board.notices[-1].message.endswith("boom")
    assert not board.apply(change("job_tasks", "UPDATE", {"id": "t"}))

    d = JobDetail(api, "j")  # type: ignore[arg-type]
    d.job = {"id": "j", "status": "running"}
    assert not d.apply(change("workflow_executions", "INSERT", {"id": "s0", "job_id": "other", "seq": 0}))
    d.apply(
        change(
            "workflow_executions",
            "INSERT",
            {"id": "s1", "job_id": "j", "seq": 1, "step_key": "b", "status": "pending"},
        )
    )
    d.apply(
        change(
            "workflow_executions",
            "INSERT",
            {
                "id": "s0",
                "job_id": "j",
                "seq": 0,
                "step_key": "a",
                "status": "running",
                "started_at": "2026-11-28T00:00:00Z",
            },
        )
    )
    d.apply(
        change(
            "workflow_executions",
            "UPDATE",
            {
                "id": "s0",
                "job_id": "j",
                "seq": 0,
                "step_key": "a",
                "status": "completed",
                "started_at": "2026-11-28T00:00:00Z",
                "finished_at": "2026-11-28T00:01:30Z",
            },
        )
    )
    tl = d.timeline()
    assert [s["key"] for s in tl] == ["a", "b"] and tl[0]["duration_s"] == 90.0 and d.progress() == (1, 2)
    assert d.actions() == ["pause", "cancel"]
    d.apply(
        change(
            "jobs",
            "UPDATE",
            {"id": "j", "status": "paused", "pause_reason": "executor_lost"},
            {"status": "running"},
        )
    )
    assert d.actions() == ["cancel", "force_resume"]
    d.apply(change("job_blockers", "INSERT", {"id": "b", "job_id": "j", "status": "open"}))
    d.job.update(pause_reason="blockers")
    assert d.actions() == ["cancel"]


def test_bulk_actions_report_each_job():
    api = FakeApi()
    board = JobBoard(api)  # type: ignore[arg-type]
    res = board.bulk("resume", ["ok1", "refused"])
    assert res[0][:2] == ("ok1", True) and res[1] == ("refused", False, "job-control: not paused")
    with pytest.raises(ValidationFailed):
        board.bulk("resume", [])


# -- windows, admin -------------------------------------------------------------------------
class FakeSession:
    user_id, email, role = "me", "me@example.com", "approver"


def test_window_request_validation_and_four_eyes_hints():
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    with pytest.raises(ValidationFailed) as exc:
        WindowBoard.check_request("", "2026-11-27T00:00:00Z", "2026-12-10T00:00:00Z", now)
    assert exc.value.problems == [
        "title: give the window a title",
        "a window lasts at most 7 days",
        "starts_at must be in the future",
    ]
    with pytest.raises(ValidationFailed, match="ISO 8601"):
        WindowBoard.check_request("t", "tomorrow", "2026-12-01T00:00:00Z", now)
    s, e = WindowBoard.check_request("t", "2026-11-29T22:00:00Z", "2026-11-30T02:00:00Z", now)
    assert s.startswith("2026-11-29T22:00") and e.startswith("2026-11-30T02:00")

    board = WindowBoard(FakeApi(), FakeSession())  # type: ignore[arg-type]
    assert "four eyes" in board.decide_hint({"status": "requested", "requested_by": "me"})
    assert board.decide_hint({"status": "requested", "requested_by": "other"}) is None
    assert board.decide_hint({"status": "approved", "requested_by": "other"}) == "already approved"
    FakeSession.role = "operator"
    assert "your role is operator" in board.decide_hint({"status": "requested", "requested_by": "other"})
    FakeSession.role = "approver"


def test_force_resume_candidates_and_reason():
    api = FakeApi()
    fr = ForceResume(api)  # type: ignore[arg-type]
    assert [r["id"] for r in fr.load()] == ["a", "b"]  # paused, and running with an expired lease
    assert fr.rows()[1]["state"] == "running (lease expired)"
    with pytest.raises(ValidationFailed, match="at least 10"):
        fr.run("a", "   short   ")
    fr.run("a", "executor   host\nrebooted")
    assert api.calls[-1][1] == {"action": "force_resume", "job_id": "a", "reason": "executor host rebooted"}


def test_credential_form_keeps_no_secret():
    api = FakeApi()
    form = CredentialForm(api)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed) as exc:
        form.submit(
            site_id="", name="n", kind="telnet", username="", secret="pw-123", endpoints="https://x.test"
        )
    assert len(exc.value.problems) == 3 and "pw-123" not in str(exc.value.problems)
    with pytest.raises(ValidationFailed) as exc:  # a secret always names where it may go
        form.submit(
            site_id="s", name="n", kind="idrac", username="root", secret="pw-123", endpoints="  # none\n"
        )
    assert exc.value.problems == ["endpoints: name at least one endpoint the secret may be presented to"]
    res = form.submit(
        site_id="s",
        name=" idrac ",
        kind="idrac",
        username="root",
        secret="pw-123",
        endpoints="https://10.1.2.7 ca_bundle=/etc/rackpilot/ca.pem\n\nhttps://10.1.2.8 insecure",
    )
    assert res == {"credential_set_id": "c1", "key_ids": ["k"], "sealed_to": 1}  # an echo is dropped
    assert api.calls[-1][1]["endpoints"] == [
        {"url": "https://10.1.2.7", "tls": {"ca_bundle": "/etc/rackpilot/ca.pem"}},
        {"url": "https://10.1.2.8", "tls": {"insecure": True}},
    ]
    assert "pw-123" not in json.dumps(vars(form), default=str)


def test_endpoint_lines_and_the_preflight_credentials_check():
    from console.models.admin import parse_endpoints
    from console.models.preflight import credentials_check

    assert parse_endpoints("ssh://esx-01 known_hosts=/k # lab\nssh://esx-02 insecure_host_key") == [
        {"url": "ssh://esx-01", "tls": {"known_hosts": "/k"}},
        {"url": "ssh://esx-02", "tls": {"insecure_host_key": True}},
    ]
    with pytest.raises(ValidationFailed):
        parse_endpoints("https://x verify=no")
    ok = {"name": "idrac", "presentable": True, "unverified_tls": []}
    assert credentials_check({"credentials": [ok]}).status == "ok"
    weak = {"name": "vc", "presentable": True, "unverified_tls": ["https://vc.lab:443 (insecure)"]}
    check = credentials_check({"credentials": [ok, weak]})
    assert check.status == "warn" and "vc: https://vc.lab:443 (insecure)" in check.detail
    assert credentials_check({"credentials": [ok, {"name": "old", "presentable": False}]}).status == "block"


# -- plumbing -------------------------------------------------------------------------------
def test_error_mapping_and_config():
    assert isinstance(error_for(403, "forbidden", "m"), AccessDenied)
    assert isinstance(error_for(None, "42501", "m"), AccessDenied)
    assert isinstance(error_for(404, "job_not_found", "m"), NotFound)
    assert isinstance(error_for(409, "four_eyes", "m"), Conflict)
    assert isinstance(error_for(422, "invalid_params", "m"), InvalidRequest)
    assert isinstance(error_for(502, "x", "m"), ServiceUnavailable)
    with pytest.raises(ConfigError, match="SUPABASE_URL and SUPABASE_ANON_KEY not set"):
        ConsoleConfig.from_env({})
    with pytest.raises(ConfigError, match="http"):
        ConsoleConfig("localhost:54321", "k")
    assert "k3y" not in repr(ConsoleConfig("http://127.0.0.1:1", "k3y"))


def test_views_escape_and_explain():
    html = html_table([{"id": "1", "name": "<script>x</script>"}], ["name"], css="t")
    assert "<script>x" not in html and "&lt;script&gt;" in html
    st = Status()
    st.error(ValidationFailed("bad", ["a: <b>", "c"]))
    assert "&lt;b&gt;" in st.value and st.value.count("<li>") == 2
    st.error(AccessDenied("create-job create needs the operator role", code="forbidden"))
    assert "needs the operator role [forbidden]" in st.value


def test_wizard_view_draws_each_step_and_exports_the_report(tmp_path, monkeypatch):
    from console.widgets.update import UpdateWizardView

    monkeypatch.setenv("RACKPILOT_CONSOLE_EXPORT_DIR", str(tmp_path))
    api = FakeApi()
    wz = UpdateWizard(api)  # type: ignore[arg-type]
    wz.load_inventory()
    view = UpdateWizardView(wz)
    # the first step is never blank: the only cluster is chosen, its hosts and "other URL" offered
    assert view.cluster.value == CLUSTER and view.cluster.label == "cl-a"
    assert [o[1] for o in view.pick_hosts.options] == HOSTS and view.catalog_pick.label == "other URL…"
    view.catalog.value = CATALOG
    view.next1.click()
    assert wz.step == Step.OPTIONS and "rp-error" not in view.status.value
    assert [o[1] for o in view.hosts.options] == HOSTS and view.window.label.startswith("none")
    assert wz.options["catalog_url"] == CATALOG and view.parallel.max == 1  # capped by the safety policy
    view.next2.click()
    assert wz.step == Step.PREFLIGHT and "rp-preflight" in view.report.value and "db01" in view.report.value
    assert "rp-changes" in view.report.value and "rp-hostgates" in view.report.value
    view.export.click()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "preflight-cl-a.csv",
        "preflight-cl-a.json",
        "preflight-cl-a.md",
    ]
    view.typed.value = "wrong"
    view.confirm.click()
    assert "rp-error" in view.status.value and wz.step == Step.PREFLIGHT  # refused, shown, not raised
    view.typed.value = "cl-a"
    view.confirm.click()
    view.create.click()
    assert wz.step == Step.DONE and "j1" in view.status.value
    assert (
        "console.job('j1')" in view.body.children[1].value
    )  # no monitor factory here: the hint names a real call


def test_job_form_validates_with_the_executor_models_and_gates_create_on_a_dry_run():
    from console.models.job_form import FORM_JOB_TYPES, JobForm, template

    assert "rolling_cluster_update" not in FORM_JOB_TYPES and "power_operation" in FORM_JOB_TYPES
    api = FakeApi()
    form = JobForm(api, "power_operation")  # type: ignore[arg-type]
    sid = str(uuid.uuid4())
    with pytest.raises(ValidationFailed) as exc:
        form.params(json.dumps(template("power_operation")), {"server_ids": [sid]})
    assert [p.split(":")[0] for p in exc.value.problems] == ["action"]
    with pytest.raises(ValidationFailed, match="not JSON"):
        form.params("{action: on}")
    params = form.params({"action": "graceful_restart"}, {"server_ids": [sid]})
    assert params["server_ids"] == [sid] and params["timeout_s"] == 600
    with pytest.raises(ValidationFailed, match="dry run"):
        form.create(params)
    form.dry_run(params)
    with pytest.raises(ValidationFailed, match="dry run"):
        form.create({**params, "timeout_s": 60})  # changed after the dry run
    assert form.create(params)["job_id"] == "j1"
    with pytest.raises(ValidationFailed, match="wizard"):
        form.choose("rolling_cluster_update")
