"""The console's frame and its new screens without a stack: selectors that are never blank,
the session file shared by notebooks, the screen registry, the live monitor's phase
timeline, the pre-flight preview ("what will change", "nothing to do"), form messages in
words, and reports that name users instead of showing UUIDs."""

from __future__ import annotations

import datetime as dt
import os
import stat
import uuid

import ipywidgets as w
import pytest

from console import screens
from console.models.forms import pydantic_problems
from console.models.monitor import JobMonitor, task_reason
from console.models.preflight import PreflightReport, preview_changes
from console.store import SessionStore
from console.widgets.charts import bar_svg, gantt_svg, line_svg
from console.widgets.common import dropdown, set_options


def change(table: str, kind: str, record: dict, old: dict | None = None) -> dict:
    return {"data": {"table": table, "type": kind, "record": record, "old_record": old or {}}}


# -- selectors ----------------------------------------------------------------------------------
def test_dropdowns_set_after_creation_are_never_blank():
    dd = w.Dropdown(options=[])
    set_options(dd, [("prod-a", "c1")])
    assert (dd.value, dd.index, dd.label) == ("c1", 0, "prod-a")  # plain ipywidgets 8 would leave None
    set_options(dd, [("prod-b", "c2"), ("prod-a", "c1")])
    assert dd.value == "c1"  # the choice survives new options
    set_options(dd, [("prod-b", "c2")])
    assert dd.value == "c2"
    ph = dropdown([("x", "X")], placeholder="— choose —")
    assert ph.value is None and ph.label == "— choose —"  # an explicit placeholder, not a blank
    set_options(ph, [("x", "X"), ("y", "Y")], value="Y", placeholder="— choose —")
    assert ph.label == "y"


# -- the shared session file --------------------------------------------------------------------
def test_session_store_is_private_and_cleared_on_sign_out(tmp_path):
    folder = tmp_path / "rt"
    a = SessionStore("http://127.0.0.1:54321/", folder)
    b = SessionStore("http://127.0.0.1:54321", folder)  # same control plane: same file
    other = SessionStore("https://x.supabase.co", folder)
    assert a.path == b.path != other.path
    assert a.load() is None
    with a.lock():
        a.save(
            {
                "access_token": "at",
                "refresh_token": "rt",
                "expires_at": 1.0,
                "email": "e@x.test",
                "password": "never",
            }
        )
    assert stat.S_IMODE(os.stat(a.path).st_mode) == 0o600 and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert b.load() == {"access_token": "at", "refresh_token": "rt", "expires_at": 1.0, "email": "e@x.test"}
    assert "never" not in a.path.read_text()
    os.chmod(a.path, 0o644)  # readable by others: not trusted
    assert b.load() is None
    os.chmod(a.path, 0o600)
    b.clear()
    assert a.load() is None and not a.path.exists()


def test_runtime_folder_follows_the_jupyter_session():
    from console.store import runtime_dir

    assert str(runtime_dir({"RACKPILOT_CONSOLE_RUNTIME_DIR": "/r"})) == "/r"
    assert str(runtime_dir({"JUPYTER_RUNTIME_DIR": "/j", "XDG_RUNTIME_DIR": "/x"})) == "/j/rackpilot"
    assert str(runtime_dir({"XDG_RUNTIME_DIR": "/x"})) == "/x/rackpilot"


# -- the frame's screens ------------------------------------------------------------------------
def test_screens_by_role_and_registration():
    keys = lambda role: [s.key for s in screens.screens_for(role)]  # noqa: E731
    assert "jobs" in keys("viewer") and "update" not in keys("viewer") and "credentials" not in keys("viewer")
    assert {"update", "blockers", "replication"} <= set(keys("operator")) and "credentials" not in keys(
        "approver"
    )
    assert {"credentials", "force_resume", "notifications"} <= set(keys("admin"))
    assert keys(None) == []
    with pytest.raises(ValueError):
        screens.register(screens.Screen("x", "X", lambda con: w.HTML(), min_role="root"))
    s = screens.register(
        screens.Screen("test_extra", "Extra", lambda con, **kw: w.HTML("extra"), group="Fleet")
    )
    try:
        assert s in screens.screens_for("viewer")
    finally:
        screens._SCREENS.pop("test_extra")


# -- the live monitor ---------------------------------------------------------------------------
class MonitorApi:
    session = type("S", (), {"user_id": "me"})()

    def __init__(self) -> None:
        self.calls = []

    def job_full(self, jid):
        self.calls.append(("job_full", jid))
        return {
            "id": jid,
            "type": "rolling_cluster_update",
            "status": "running",
            "cluster_id": None,
            "job_tasks": [
                {
                    "id": "t1",
                    "job_id": jid,
                    "target_name": "esx-01",
                    "seq": 0,
                    "status": "pending",
                    "progress": 0,
                    "details": {"updates": ["BIOS", "iDRAC"]},
                },
                {
                    "id": "t2",
                    "job_id": jid,
                    "target_name": "esx-02",
                    "seq": 1,
                    "status": "skipped",
                    "progress": 0,
                    "details": {"reason": "already compliant"},
                    "started_at": "2026-12-07T10:00:00Z",
                    "finished_at": "2026-12-07T10:00:01Z",
                },
            ],
            "workflow_executions": [
                {"id": "s1", "job_id": jid, "seq": 0, "step_key": "rollout", "status": "running"}
            ],
            "job_blockers": [],
        }

    def job_control(self, action, jid, reason=None):
        self.calls.append((action, jid, reason))
        return {"status": "running", "requested": True}


def test_monitor_loads_in_one_request_and_grows_the_timeline_live():
    api = MonitorApi()
    m = JobMonitor(api, "j")  # type: ignore[arg-type]
    m.refresh()
    assert api.calls == [("job_full", "j")]  # job, tasks, steps and blockers: one embedded request
    rows = {r["host"]: r for r in m.host_rows()}
    assert rows["esx-02"]["why"] == "already compliant" and rows["esx-01"]["why"] == "will apply: BIOS, iDRAC"
    t0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
    for i, (phase, pct) in enumerate([("backup", 5), ("stage", 15), ("maintenance", 30), ("apply", 50)]):
        m.apply(
            change(
                "job_tasks",
                "UPDATE",
                {
                    "id": "t1",
                    "job_id": "j",
                    "target_name": "esx-01",
                    "status": "running",
                    "progress": pct,
                    "details": {"phase": phase},
                    "updated_at": (t0 + dt.timedelta(minutes=i)).isoformat(),
                },
            )
        )
    bars = [b["phase"] for b in m.gantt(now=t0 + dt.timedelta(minutes=5))[0]["bars"]]
    assert bars == ["backup", "stage", "maintenance", "apply"] and m.job_progress() == 75  # (50 + 100) / 2
    m.apply(
        change(
            "job_tasks",
            "UPDATE",
            {
                "id": "t1",
                "job_id": "j",
                "target_name": "esx-01",
                "status": "failed",
                "progress": 50,
                "error": "iDRAC job JID_1 failed: RED007",
                "details": {"phase": "failed"},
                "updated_at": (t0 + dt.timedelta(minutes=6)).isoformat(),
            },
        )
    )
    assert m.log[-1].level == "error" and "RED007" in m.log[-1].text
    assert [b["phase"] for b in m.gantt()[0]["bars"]][-1] == "failed"
    svg = gantt_svg(m.gantt(), {}, {})
    assert (
        'class="rp-chart rp-gantt"' in svg and svg.count("rp-bar rp-phase-") == 6
    )  # 5 for esx-01, 1 for esx-02
    assert m.allowed_actions("viewer") == [] and m.allowed_actions("operator") == ["pause", "cancel"]
    m.job["status"], m.job["pause_reason"] = "paused", "executor_lost"
    assert "force_resume" not in m.allowed_actions("operator") and "force_resume" in m.allowed_actions(
        "admin"
    )
    assert task_reason({"status": "skipped", "details": {}}).startswith("skipped")


def test_monitor_view_draws_hosts_chart_and_role_actions():
    from console.widgets.monitor import JobMonitorView

    m = JobMonitor(MonitorApi(), "j")  # type: ignore[arg-type]
    m.refresh()
    v = JobMonitorView(m, role="viewer")
    assert v.buttons.children == () and len(v.hosts.children) == 2 and "rp-gantt" in v.chart.value
    assert "already compliant" in v.hosts.children[1].children[2].value
    op = JobMonitorView(m, role="operator")
    assert [b.description for b in op.buttons.children] == ["pause", "cancel"]
    op.buttons.children[0].click()
    assert "requested" in op.status.value and m.api.calls[-2][0] == "pause"


# -- the pre-flight preview -----------------------------------------------------------------------
class PreviewApi:
    def servers(self, site_id=None, ids=None):
        return [{"id": i, "name": f"srv-{i}", "power_state": "on", "health": "ok"} for i in ids or []]


def test_preview_says_what_changes_per_host_and_component_and_nothing_to_do_honestly():
    hosts = [
        {"id": "h1", "name": "esx-01", "server_id": "s1", "connection_state": "connected"},
        {"id": "h2", "name": "esx-02", "server_id": "s2", "connection_state": "connected"},
    ]
    rep = PreflightReport(cluster={"name": "prod-a"}, generated_at="now")
    rep.firmware = [
        {
            "server_id": "s1",
            "component": "BIOS",
            "installed_version": "2.1.0",
            "target_version": "2.3.1",
            "compliance": "outdated",
            "criticality": "urgent",
            "reboot_required": True,
        },
        {
            "server_id": "s1",
            "component": "iDRAC",
            "installed_version": "7.0",
            "target_version": "7.0",
            "compliance": "compliant",
        },
        {
            "server_id": "s2",
            "component": "BIOS",
            "installed_version": "2.3.1",
            "target_version": "2.3.1",
            "compliance": "compliant",
        },
    ]
    preview_changes(rep, PreviewApi(), hosts, {"s1": "esx-01", "s2": "esx-02"})  # type: ignore[arg-type]
    assert rep.changes == [
        {
            "host": "esx-01",
            "component": "BIOS",
            "installed": "2.1.0",
            "target": "2.3.1",
            "criticality": "urgent",
            "reboot": True,
        }
    ]
    assert rep.compliant_hosts == ["esx-02"] and not rep.nothing_to_do
    assert rep.compliant_reasons == {"esx-02": "already compliant: 1 component(s) at the catalog version"}
    assert "| esx-02 | already compliant: 1 component(s) at the catalog version |" in rep.to_markdown()
    assert [g["verdict"] for g in rep.host_gates] == ["1 update(s)", "will be skipped: already compliant"]
    done = PreflightReport(cluster={"name": "prod-a"}, generated_at="now")
    done.firmware = [r for r in rep.firmware if r["compliance"] == "compliant"]
    preview_changes(done, PreviewApi(), hosts, {"s1": "esx-01", "s2": "esx-02"})  # type: ignore[arg-type]
    assert done.nothing_to_do and done.changes == [] and done.compliant_hosts == ["esx-01", "esx-02"]
    unknown = PreflightReport(cluster={"name": "prod-a"}, generated_at="now")
    preview_changes(unknown, PreviewApi(), hosts, {"s1": "esx-01", "s2": "esx-02"})  # type: ignore[arg-type]
    assert not unknown.nothing_to_do and unknown.host_gates[0]["verdict"] == "unknown: refresh inventory"


# -- words, names, charts --------------------------------------------------------------------------
def test_form_messages_are_words():
    from pydantic import ValidationError

    from executor.jobparams import PowerOperationParams, RollingClusterUpdateParams

    with pytest.raises(ValidationError) as exc:
        RollingClusterUpdateParams.model_validate(
            {
                "cluster_id": str(uuid.uuid4()),
                "max_parallel_hosts": 0,
                "firmware": {"catalog_url": "ftp://x", "format": "XML"},
            }
        )
    text = pydantic_problems(exc.value)
    assert "catalog URL: an http(s) URL such as https://downloads.example.com/catalog/Catalog.xml.gz" in text
    assert "hosts at once: at least 1" in text and "format: not a setting of this job type" in text
    with pytest.raises(ValidationError) as exc:
        PowerOperationParams.model_validate({"server_ids": [str(uuid.uuid4())], "action": ""})
    assert pydantic_problems(exc.value) == [
        "action: choose one of on, graceful_shutdown, force_off, graceful_restart, force_restart, power_cycle"
    ]


def test_reports_name_users_and_draw_charts():
    from console.models.reports import ReportModel

    class Names:
        def load_users(self, ids):
            self.asked = list(ids)

        def user(self, uid):
            return {"u1": "ops@example.com"}.get(uid, "you")

        def name(self, kind, oid):
            return "dc-1"

    m = ReportModel(None, names=Names())  # type: ignore[arg-type]
    m.view = "v_job_stats_by_user"
    uid = "u1"
    m.rows = [
        {
            "user_id": uid,
            "jobs_total": 3,
            "completed": 2,
            "failed": 1,
            "success_rate": 0.6667,
            "last_job_at": "2026-12-07T10:00:00+00:00",
        }
    ]
    assert m.display_rows() == [
        {
            "user": "ops@example.com",
            "jobs_total": 3,
            "completed": 2,
            "failed": 1,
            "success_rate": 0.6667,
            "last_job_at": "2026-12-07 10:00:00",
        }
    ]
    assert m.chart()["labels"] == ["ops@example.com"]
    m.view, m.rows = (
        "v_host_history",
        [
            {
                "target_id": "t",
                "target_name": "esx-01",
                "job_id": "0123456789",
                "job_type": "rolling_cluster_update",
                "duration_s": 90.0,
                "created_by": "u1",
            }
        ],
    )
    row = m.display_rows()[0]
    assert "target_id" not in row and row["job"] == "01234567" and row["created by"] == "ops@example.com"
    assert bar_svg(["a"], {"x": [1]}, title="t").count('<rect class="rp-bar"') == 1
    assert "rp-lines" in line_svg(["w1", "w2"], {"s": [1, None]}, title="t")


# -- the header: "signed in as" once per page -----------------------------------------------------
def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


def test_app_below_connect_shows_the_signed_in_line_once():
    """00_console does ``con = console.connect()`` then ``con.app()``: the header widget was
    drawn by both and the page said "signed in as" twice (and showed two sign-in forms)."""
    from console.session import ConsoleConfig
    from console.widgets.app import Console, SignInView
    from console.widgets.shell import AppShell

    con = Console(ConsoleConfig("http://127.0.0.1:1", "anon"))
    con._show_panel()
    before = [x for x in _walk(con.panel) if isinstance(x, SignInView)]
    assert con.header in con.panel.children and len(before) == 1  # connect() alone: header and form
    shell = AppShell(con)
    on_page = list(_walk(con.panel)) + list(_walk(shell))
    assert sum(x is con.header for x in on_page) == 1
    assert sum(isinstance(x, SignInView) for x in on_page) == 1
    con.session = type("S", (), {"signed_in": True, "email": "ops@example.com", "role": "viewer"})()
    con._show_panel()  # as after sign-in
    assert con.panel.children == () and con.header in shell.children
    assert "signed in as <b>ops@example.com</b>" in con.banner.value


def test_a_screen_above_the_role_says_so_in_words_and_asks_nothing():
    from console.session import ConsoleConfig
    from console.widgets.app import Console
    from console.widgets.shell import role_note

    built = []
    screens.register(
        screens.Screen(
            "test_gated",
            "Gated",
            lambda con, **kw: built.append(kw) or w.HTML("gated content"),
            min_role="approver",
            group="Report",
        )
    )
    try:
        con = Console(ConsoleConfig("http://127.0.0.1:1", "anon"))
        con.session = type("S", (), {"signed_in": True, "email": "o@example.com", "role": "operator"})()
        frame = con.screen("test_gated", x=1)
        (note,) = frame.children
        assert "rp-role-gate" in note.value and built == [] and frame.view is None
        assert "Gated is for approvers and admins; your role is operator." in note.value
        con.session.role = "approver"
        frame.render(force=True)
        assert built == [{"x": 1}] and frame.view.value == "gated content"
    finally:
        screens._SCREENS.pop("test_gated")
    assert role_note("Identity", "admin", None) == "Identity is for admins; your role is none."
