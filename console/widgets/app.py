"""``Console``: what a notebook holds after ``console.connect()``: the session, the API,
one Realtime feed, and a factory method per screen."""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as w

from console.api import Api
from console.errors import ConsoleError, NotSignedIn
from console.models.admin import CredentialForm, ForceResume
from console.models.blockers import BlockerWizard
from console.models.jobs import JobBoard, JobDetail
from console.models.live import LiveFeed
from console.models.reports import FleetModel, ReportModel
from console.models.update_wizard import UpdateWizard
from console.models.windows import WindowBoard
from console.session import ConsoleConfig, Session, sign_in, sign_in_from_env
from console.widgets.common import STYLE, Status


def _display(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: nothing to draw on
        return
    if get_ipython() is not None:
        display(obj)


class SignInView(w.VBox):
    """Email + password, or a directory (IDM/LDAP) account of a site; the password box is
    emptied as soon as Sign in is pressed. Break-glass has its own notebook cell."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.method = w.ToggleButtons(options=[("email", "email"), ("directory", "directory")], value="email",
                                      description="sign in with")
        self.email = w.Text(description="email", placeholder="you@example.com")
        self.site = w.Text(description="site", placeholder="the site whose directory you use",
                           value=os.environ.get("RACKPILOT_CONSOLE_SITE", ""))
        self.username = w.Text(description="username", placeholder="your directory user name")
        self.password = w.Password(description="password")
        self.go = w.Button(description="Sign in", button_style="primary")
        self.status = Status()
        self.go.on_click(lambda _: self._submit())
        self.method.observe(lambda _: self._show(), names="value")
        super().__init__([])
        self._show()

    def _show(self) -> None:
        fields = [self.site, self.username] if self.method.value == "directory" else [self.email]
        self.children = [self.method, *fields, self.password, self.go, self.status]

    def _submit(self) -> None:
        pw = self.password.value
        self.password.value = ""
        try:
            if self.method.value == "directory":
                self.console.sign_in_directory(self.site.value, self.username.value, pw)
            else:
                self.console.sign_in(self.email.value, pw)
        except ConsoleError as exc:
            self.status.error(exc)
            return
        finally:
            pw = ""  # noqa: F841
        self.status.ok(f"signed in as {self.console.session.email} ({self.console.session.role})")  # type: ignore[union-attr]


class Console:
    def __init__(self, config: ConsoleConfig, session: Session | None = None) -> None:
        self.config = config
        self.session = session
        self.feed: LiveFeed | None = None
        self._sinks: list[Any] = []
        self.banner = w.HTML()
        self.panel = w.VBox([self.banner])
        self._update_banner()

    # -- sign-in -------------------------------------------------------------------------
    @classmethod
    def start(cls, *, env: dict[str, str] | None = None, show: bool = True) -> Console:
        """Sign in from RACKPILOT_CONSOLE_EMAIL/PASSWORD when set; otherwise show a form."""
        env = dict(os.environ) if env is None else env
        config = ConsoleConfig.from_env(env)
        con = cls(config, sign_in_from_env(env))
        if con.session is None:
            con.panel.children = [con.banner, SignInView(con)]
        if show:
            _display(con.panel)
        return con

    def sign_in(self, email: str, password: str) -> Session:
        self.session = sign_in(self.config, email, password)
        self._update_banner()
        return self.session

    def sign_in_directory(self, site: str, username: str, password: str) -> Session:
        """Sign in with a directory account (docs/identity.md): bound where the site's directory is."""
        from console.identity import sign_in_directory

        self.session = sign_in_directory(self.config, site.strip(), username.strip(), password)
        self._update_banner()
        return self.session

    def break_glass(self, account: str, secret: str, reason: str, ttl_seconds: int | None = None) -> Session:
        """EMERGENCY access when the directory or the executor is down. Every use is audited as
        critical and announced on every notification channel; the session ends by itself."""
        from console.identity import sign_in_break_glass

        self.session = sign_in_break_glass(self.config, account, secret, reason, ttl_seconds)
        self._update_banner()
        self.banner.value += ("<div class='rp-warn'><b>BREAK-GLASS SESSION</b>: audited as critical, every "
                              "notification channel has been told, and it expires on its own. Do only what the "
                              "emergency needs.</div>")
        return self.session

    def _update_banner(self) -> None:
        s = self.session
        self.banner.value = STYLE + (
            f"<div class='rp-signed-in'>rackpilot at {html.escape(self.config.url)} — signed in as "
            f"<b>{html.escape(s.email)}</b> (role: <b>{html.escape(s.role or 'none')}</b>)</div>" if s else
            f"<div class='rp-warn'>rackpilot at {html.escape(self.config.url)} — not signed in</div>")

    @property
    def api(self) -> Api:
        if self.session is None or not self.session.signed_in:
            raise NotSignedIn("not signed in: use the sign-in form above (or set RACKPILOT_CONSOLE_EMAIL and "
                              "RACKPILOT_CONSOLE_PASSWORD) first", code="not_signed_in")
        return Api(self.session)

    # -- realtime ------------------------------------------------------------------------
    async def live(self) -> LiveFeed:
        """Start the Realtime feed; every job view made before or after follows it."""
        if self.feed is None or not self.feed.running:
            self.feed = LiveFeed(self.api.session)
            for fn in self._sinks:
                self.feed.add_sink(fn)
            await self.feed.start()
        return self.feed

    def _follow(self, fn: Any) -> None:
        self._sinks.append(fn)
        if self.feed is not None:
            self.feed.add_sink(fn)

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.stop()
        if self.session is not None:
            self.session.sign_out()

    # -- screens -------------------------------------------------------------------------
    def job_board(self, limit: int = 50) -> JobBoard:
        board = JobBoard(self.api, limit=limit)
        board.refresh()
        self._follow(board.apply)
        return board

    def jobs(self, limit: int = 50):
        from console.widgets.jobs import JobListView
        return JobListView(self.job_board(limit))

    def job(self, job_id: str):
        from console.widgets.jobs import JobDetailView
        d = JobDetail(self.api, job_id)
        d.refresh()
        self._follow(d.apply)
        return JobDetailView(d)

    def update_wizard(self, site_id: str | None = None):
        from console.widgets.update import UpdateWizardView
        wz = UpdateWizard(self.api)
        wz.load_clusters(site_id)
        return UpdateWizardView(wz)

    def new_job(self, job_type: str = "scp_backup"):
        """Any job type but rolling updates: targets, params, dry run, create."""
        from console.models.job_form import JobForm
        from console.widgets.job_form import JobFormView
        return JobFormView(JobForm(self.api, job_type))

    def blockers(self, job_id: str):
        from console.widgets.blockers import BlockerWizardView
        wz = BlockerWizard(self.api, job_id)
        wz.load()

        def follow(change: dict) -> None:
            # new blockers of this job (a rescan) or its status: reload, keeping the choices made
            from console.models.jobs import change_parts
            table, _, rec, old = change_parts(change)
            row = rec or old
            if (table == "job_blockers" and row.get("job_id") == job_id) or (table == "jobs" and row.get("id") == job_id):
                wz.load()
        self._follow(follow)
        return BlockerWizardView(wz)

    def windows(self, site_id: str | None = None):
        from console.widgets.windows import WindowsView
        api = self.api
        board = WindowBoard(api, api.session)
        board.load(site_id)
        return WindowsView(board, api.sites(), api.clusters(site_id))

    def credentials(self):
        from console.widgets.admin import CredentialsView
        api = self.api
        return CredentialsView(CredentialForm(api), api.sites())

    def force_resume(self):
        from console.widgets.admin import ForceResumeView
        m = ForceResume(self.api)
        m.load()
        return ForceResumeView(m)

    def notifications(self):
        from console.models.admin import NotificationSettings
        from console.widgets.admin import NotificationsView
        m = NotificationSettings(self.api)
        m.load()
        return NotificationsView(m, self.api.sites())

    def reports(self, view: str | None = None, export_dir: str = "."):
        from console.widgets.reports import ReportsView
        m = ReportModel(self.api)
        v = ReportsView(m, export_dir)
        if view:
            v.view.value = view
            m.load(view)
        return v

    def fleet(self, site_id: str | None = None):
        from console.widgets.reports import FleetView
        m = FleetModel(self.api)
        m.load(site_id)
        return FleetView(m)
