"""The console's screens, as the app frame lists them: one registry, one entry per screen.

A screen is a title, the least role that may open it, and a ``build(console)`` function
that returns an ipywidgets widget for the signed-in user. The frame
(``console.widgets.shell``) puts every screen the user's role allows in its navigation,
shows the sign-in form instead of a screen until someone is signed in, and turns a
``ConsoleError`` raised while building into a red status line; ``Console.screen(key)``
shows one screen alone, as a notebook cell does.

Adding a screen (see console/README.md): write its model in ``console/models/<name>.py``
and its view in ``console/widgets/<name>.py``, then register it here with one
``register(Screen(...))`` call whose ``build`` imports the view lazily (so importing the
console stays cheap and one broken screen cannot break the others).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from console.roles import ROLES  # the app-role ladder, least to most privileged

if TYPE_CHECKING:
    import ipywidgets as w

    from console.widgets.app import Console

GROUPS = ("Operate", "Fleet", "Report", "Admin")  # navigation order


@dataclass(frozen=True)
class Screen:
    key: str
    title: str
    build: Callable[..., w.Widget]  # build(console, **kwargs) -> the screen's widget
    min_role: str = "viewer"
    group: str = "Operate"
    order: int = 100
    help: str = ""

    def allowed(self, role: str | None) -> bool:
        return role in ROLES and ROLES.index(role) >= ROLES.index(self.min_role)


_SCREENS: dict[str, Screen] = {}


def register(screen: Screen) -> Screen:
    """Add (or replace, by key) a screen of the frame."""
    if screen.min_role not in ROLES:
        raise ValueError(f"min_role must be one of {', '.join(ROLES)}")
    if screen.group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}")
    _SCREENS[screen.key] = screen
    return screen


def get(key: str) -> Screen:
    try:
        return _SCREENS[key]
    except KeyError:
        raise KeyError(f"no screen {key!r}; screens: {', '.join(sorted(_SCREENS))}") from None


def all_screens() -> list[Screen]:
    return sorted(_SCREENS.values(), key=lambda s: (GROUPS.index(s.group), s.order, s.title))


def screens_for(role: str | None) -> list[Screen]:
    return [s for s in all_screens() if s.allowed(role)]


# -- the built-in screens ----------------------------------------------------------------------
# Each build imports its view lazily and gets the signed-in Console plus the keyword
# arguments the notebook passed (con.jobs(limit=20) -> build(con, limit=20)).
def _jobs(con: Console, limit: int = 50) -> w.Widget:
    from console.widgets.jobs import JobListView

    return JobListView(con.job_board(limit), open_job=con.monitor)


def _update(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.update_wizard import UpdateWizard
    from console.widgets.update import UpdateWizardView

    wz = UpdateWizard(con.api)
    wz.load_inventory(site_id)
    return UpdateWizardView(wz, monitor=con.monitor)


def _blockers(con: Console, job_id: str | None = None) -> w.Widget:
    from console.widgets.blockers import BlockerInbox

    return BlockerInbox(con, job_id)


def _new_job(con: Console, job_type: str | None = None) -> w.Widget:
    from console.models.job_form import DEFAULT_FORM_JOB_TYPE, JobForm
    from console.widgets.job_form import JobFormView

    return JobFormView(JobForm(con.api, job_type or DEFAULT_FORM_JOB_TYPE))


def _windows(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.windows import WindowBoard
    from console.widgets.windows import WindowsView

    api = con.api
    board = WindowBoard(api, api.session, names=con.names)
    board.load(site_id)
    return WindowsView(board, api.sites(), api.clusters(site_id))


def _fleet(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.reports import FleetModel
    from console.widgets.reports import FleetView

    m = FleetModel(con.api)
    m.load(site_id)
    return FleetView(m)


def _replication(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.replication import ReplicationModel
    from console.widgets.replication import ReplicationView

    v = ReplicationView(ReplicationModel(con.api), site_id)
    v.load()
    return v


def _reports(con: Console, view: str | None = None, export_dir: str = ".") -> w.Widget:
    from console.models.reports import ReportModel
    from console.widgets.reports import ReportsView

    m = ReportModel(con.api, names=con.names)
    v = ReportsView(m, export_dir)
    # a report with its chart from the start (the first one unless a view is named), not an
    # empty page that waits for Load
    if view and view != v.view.value:
        v.view.value = view  # the dropdown's observer loads it
    else:
        m.load(v.view.value)
    return v


def _force_resume(con: Console) -> w.Widget:
    from console.models.admin import ForceResume
    from console.widgets.admin import ForceResumeView

    m = ForceResume(con.api)
    m.load()
    return ForceResumeView(m)


def _credentials(con: Console) -> w.Widget:
    from console.models.admin import CredentialForm
    from console.widgets.admin import CredentialsView

    api = con.api
    return CredentialsView(CredentialForm(api), api.sites())


def _notifications(con: Console) -> w.Widget:
    from console.models.admin import NotificationSettings
    from console.widgets.admin import NotificationsView

    m = NotificationSettings(con.api)
    m.load()
    return NotificationsView(m, con.api.sites())


register(Screen("jobs", "Jobs", _jobs, order=10, help="every job, live; open one to follow it"))
register(
    Screen(
        "update",
        "Server update",
        _update,
        min_role="operator",
        order=20,
        help="rolling cluster firmware update: pick, pre-flight, options, window, confirm, watch it live",
    )
)
register(
    Screen(
        "blockers",
        "Blockers",
        _blockers,
        min_role="operator",
        order=30,
        help="decide what keeps hosts from entering maintenance mode",
    )
)
register(
    Screen(
        "new_job",
        "Other jobs",
        _new_job,
        min_role="operator",
        order=40,
        help="power, virtual media, SCP backup, firmware, ESXi, vCenter sync, replication",
    )
)
register(Screen("windows", "Windows", _windows, order=50, help="maintenance windows, four eyes"))
register(
    Screen(
        "fleet",
        "Inventory",
        _fleet,
        group="Fleet",
        order=10,
        help="servers, health, power, firmware compliance",
    )
)
register(
    Screen(
        "replication",
        "Replication",
        _replication,
        group="Fleet",
        order=30,
        help="ZFS replication pairs: lag, last success, sync now",
    )
)
register(
    Screen(
        "reports",
        "Reports",
        _reports,
        group="Report",
        order=10,
        help="charts and tables over the reporting views; CSV export",
    )
)
register(Screen("force_resume", "Force-resume", _force_resume, min_role="admin", group="Admin", order=10))
register(Screen("credentials", "Credentials", _credentials, min_role="admin", group="Admin", order=20))
register(Screen("notifications", "Notifications", _notifications, min_role="admin", group="Admin", order=30))


# -- fleet intake (issue 18): console/models/intake.py, console/widgets/intake.py ---------------
def _discovery(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.intake import DiscoveryModel
    from console.widgets.intake import DiscoveryView

    creds = con.api._rest(
        "credential sets",
        lambda c: (
            c.table("credential_sets").select("id,name,kind,site_id").eq("site_id", site_id)
            if site_id
            else c.table("credential_sets").select("id,name,kind,site_id")
        ),
    )
    v = DiscoveryView(DiscoveryModel(con.api), site_id, creds)
    v.load()
    return v


def _calls(con: Console, job_id: str | None = None, site_id: str | None = None) -> w.Widget:
    from console.models.intake import CallLogModel
    from console.widgets.intake import CallLogView

    v = CallLogView(CallLogModel(con.api), job_id, site_id)
    v.load()
    return v


def _schedules(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.intake import SchedulesModel
    from console.widgets.intake import SchedulesView
    from executor.jobtypes import CREATABLE

    v = SchedulesView(SchedulesModel(con.api), site_id, [t.value for t in CREATABLE])
    v.load()
    return v


def _catalogs(con: Console, site_id: str | None = None) -> w.Widget:
    from console.models.intake import CatalogsModel
    from console.widgets.intake import CatalogsView

    v = CatalogsView(CatalogsModel(con.api), site_id)
    v.load()
    return v


register(
    Screen(
        "discovery",
        "Discovery",
        _discovery,
        min_role="operator",
        group="Fleet",
        order=20,
        help="find iDRACs by address range, see why an address was skipped, register them",
    )
)
register(
    Screen(
        "catalogs",
        "Catalogs",
        _catalogs,
        group="Fleet",
        order=40,
        help="firmware catalogs: last refresh (moved, stale, failed), baselines, refresh",
    )
)
register(
    Screen(
        "schedules",
        "Schedules",
        _schedules,
        order=60,
        help="jobs on a recurrence: next run, last outcome, runs; enable, disable, add",
    )
)
register(
    Screen(
        "calls",
        "BMC call log",
        _calls,
        min_role="operator",
        group="Report",
        order=20,
        help="every Redfish and OME call of a job: method, path, status, time, Dell MessageId",
    )
)


# -- audit log (issue 19): console/models/audit.py, console/widgets/audit.py -------------------
def _audit(con: Console, job_id: str | None = None, check_chain: bool = True) -> w.Widget:
    from console.models.audit import AuditModel
    from console.widgets.audit import AuditView

    v = AuditView(AuditModel(con.api, names=con.names), job_id)
    v.load()
    if check_chain:
        v.check_chain()
    return v


register(
    Screen(
        "audit",
        "Audit log",
        _audit,
        min_role="approver",
        group="Report",
        order=30,
        help="who did what: entries with names, filters by table, action and job; hash-chain status",
    )
)


# -- identity administration (docs/identity.md): console/models/identity_admin.py ----------------
def _identity(con: Console) -> w.Widget:
    from console.models.identity_admin import IdentityAdmin
    from console.widgets.identity_admin import IdentityAdminView

    v = IdentityAdminView(IdentityAdmin(con.api, names=con.names), con.api.sites())
    v.load()
    return v


register(
    Screen(
        "identity",
        "Identity",
        _identity,
        min_role="admin",
        group="Admin",
        order=40,
        help="directory sign-in per site, groups to roles, break-glass accounts and sessions (revoke)",
    )
)
