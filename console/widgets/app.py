"""``Console``: what a notebook holds after ``console.connect()``: the session (shared by
every notebook of the JupyterLab session, ``console.store``), the API, one Realtime feed,
and a method per screen. Each screen comes in the frame (``console.widgets.shell``): the
sign-in form until someone is signed in, a red line instead of a traceback; ``app()`` is
the whole console on one page. The screens themselves are listed in ``console.screens``."""

from __future__ import annotations

import html
import os
import re
import weakref
from typing import Any

import ipywidgets as w

from console.api import Api
from console.errors import ConfigError, ConsoleError, NotSignedIn, ValidationFailed
from console.models.blockers import BlockerWizard
from console.models.jobs import JobBoard
from console.models.live import LiveFeed
from console.models.names import Names
from console.session import ConsoleConfig, Session, resume, sign_in, sign_in_from_env
from console.store import SessionStore
from console.widgets.common import STYLE, Status

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_current: weakref.ref[Console] | None = None  # the notebook's console, for console.job(...)


def current() -> Console:
    """The console ``console.connect()`` made in this kernel (one is made on first use)."""
    con = _current() if _current is not None else None
    return con if con is not None else Console.start(show=False)


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
        self.method = w.ToggleButtons(
            options=[("email", "email"), ("directory", "directory")],
            value="email",
            description="sign in with",
        )
        self.email = w.Text(description="email", placeholder="you@example.com")
        self.site = w.Text(
            description="site",
            placeholder="the site whose directory you use",
            value=os.environ.get("RACKPILOT_CONSOLE_SITE", ""),
        )
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
    def __init__(
        self,
        config: ConsoleConfig | None,
        session: Session | None = None,
        *,
        store: SessionStore | None = None,
        config_error: ConsoleError | None = None,
    ) -> None:
        self.config = config
        self.session = session
        self.store = store
        self.config_error = config_error
        self.feed: LiveFeed | None = None
        self._feed_lock: Any = None
        self._sinks: list[Any] = []
        self._frames: list[Any] = []  # ScreenFrames and AppShells drawn by this console
        self._names: Names | None = None
        self.banner = w.HTML()
        self.sign_out_button = w.Button(
            description="Sign out", icon="sign-out", layout=w.Layout(width="auto")
        )
        self.sign_out_button.on_click(lambda _: self.sign_out())
        self.header = w.HBox([self.banner], layout=w.Layout(align_items="center"))
        self.panel = w.VBox([self.header])
        self._update_banner()

    # -- sign-in -------------------------------------------------------------------------
    @classmethod
    def start(
        cls, *, env: dict[str, str] | None = None, show: bool = True, shared: bool | None = None
    ) -> Console:
        """Sign in from RACKPILOT_CONSOLE_EMAIL/PASSWORD when set; else open the session the
        user signed in from another notebook of this JupyterLab (``shared``: on unless
        RACKPILOT_CONSOLE_SHARED_SESSION=0); else show the sign-in form."""
        global _current
        env = dict(os.environ) if env is None else env
        if shared is None:
            shared = env.get("RACKPILOT_CONSOLE_SHARED_SESSION", "1") not in ("0", "false", "no")
        try:
            config = ConsoleConfig.from_env(env)
        except ConfigError as exc:
            con = cls(None, config_error=exc)
        else:
            store = SessionStore(config.url, env=env) if shared else None
            session = sign_in_from_env(env)
            if session is None and store is not None:
                session = resume(config, store)
            con = cls(config, session, store=store)
        con._show_panel()
        _current = weakref.ref(con)
        if show:
            _display(con.panel)
        return con

    @property
    def signed_in(self) -> bool:
        return self.session is not None and self.session.signed_in

    @property
    def role(self) -> str | None:
        """The signed-in user's role, None before sign-in (notebook cells test it, never
        ``con.session.role``, which fails while nobody is signed in)."""
        return self.session.role if self.signed_in and self.session is not None else None

    def sign_in_form(self) -> w.Widget:
        if self.config is None:
            st = Status()
            st.error(self.config_error or ConfigError("SUPABASE_URL and SUPABASE_ANON_KEY are not set"))
            return st
        return SignInView(self)

    def _show_panel(self) -> None:
        self._update_banner()
        self.header.children = [self.banner, self.sign_out_button] if self.signed_in else [self.banner]
        if any(getattr(f, "shows_header", False) for f in self._frames):
            # an app (con.app()) shows the header and the sign-in form itself: the panel that
            # connect() drew above it stays empty, so "signed in as" appears once on the page
            self.panel.children = []
            return
        self.panel.children = [self.header] if self.signed_in else [self.header, self.sign_in_form()]

    def _signed_in_changed(self) -> None:
        """Redraw everything this console drew: the panel, every screen frame, every app."""
        self._names = None
        self._show_panel()
        for f in list(self._frames):
            f.render(force=True)

    def sign_in(self, email: str, password: str) -> Session:
        self.session = sign_in(self.config, email, password)  # type: ignore[arg-type]
        if self.store is not None:
            self.session.share(self.store)
        self._signed_in_changed()
        return self.session

    def sign_in_directory(self, site: str, username: str, password: str) -> Session:
        """Sign in with a directory account (docs/identity.md): bound where the site's directory is."""
        from console.identity import sign_in_directory

        self.session = sign_in_directory(self.config, site.strip(), username.strip(), password)
        if self.store is not None:
            self.session.share(self.store)
        self._signed_in_changed()
        return self.session

    def sign_out(self) -> None:
        """Sign out here and in every notebook sharing the session (the stored tokens go)."""
        if self.session is not None:
            self.session.sign_out()
        elif self.store is not None:
            self.store.clear()
        self.session = None
        self._signed_in_changed()

    def break_glass(self, account: str, secret: str, reason: str, ttl_seconds: int | None = None) -> Session:
        """EMERGENCY access when the directory or the executor is down. Every use is audited as
        critical and announced on every notification channel; the session ends by itself."""
        from console.identity import sign_in_break_glass

        # not shared with other notebooks: an emergency session stays where it was opened
        self.session = sign_in_break_glass(self.config, account, secret, reason, ttl_seconds)
        self._signed_in_changed()
        self.banner.value += (
            "<div class='rp-warn'><b>BREAK-GLASS SESSION</b>: audited as critical, every "
            "notification channel has been told, and it expires on its own. Do only what the "
            "emergency needs.</div>"
        )
        return self.session

    def _update_banner(self) -> None:
        s = self.session if self.signed_in else None
        if self.config is None:
            self.banner.value = STYLE + (
                f"<div class='rp-error'>✖ rackpilot is not configured: "
                f"{html.escape(str(self.config_error))}</div>"
            )
            return
        self.banner.value = STYLE + (
            f"<div class='rp-signed-in'>rackpilot at {html.escape(self.config.url)} — signed in as "
            f"<b>{html.escape(s.email)}</b> (role: <b>{html.escape(s.role or 'none')}</b>)</div>"
            if s
            else f"<div class='rp-warn'>rackpilot at {html.escape(self.config.url)} — not signed in</div>"
        )

    @property
    def api(self) -> Api:
        if self.config is None:
            raise self.config_error or ConfigError("not configured")
        if self.session is None or not self.session.signed_in:
            raise NotSignedIn(
                "not signed in: use the sign-in form above (or set RACKPILOT_CONSOLE_EMAIL and "
                "RACKPILOT_CONSOLE_PASSWORD) first",
                code="not_signed_in",
            )
        return Api(self.session)

    @property
    def names(self) -> Names:
        """Names for ids (users, sites, clusters, hosts, ...), cached for this sign-in."""
        if self._names is None:
            self._names = Names(self.api)
        return self._names

    # -- realtime ------------------------------------------------------------------------
    async def live(self) -> LiveFeed:
        """Start the Realtime feed; every job view made before or after follows it."""
        import asyncio

        if self._feed_lock is None:
            self._feed_lock = asyncio.Lock()
        async with self._feed_lock:  # a monitor's button and a notebook cell may both start it
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

    # -- screens ------------------------------------------------------------------------
    def screen(self, key: str, **kw: Any):
        """One screen of ``console.screens`` in its frame (sign-in gate, errors in red)."""
        from console import screens
        from console.widgets.shell import ScreenFrame

        s = screens.get(key)
        return ScreenFrame(self, s.title, lambda: s.build(self, **kw), min_role=s.min_role)

    def app(self, start: str | None = None):
        """The whole console on one page: navigation by what your role may open."""
        from console.widgets.shell import AppShell

        return AppShell(self, start)

    def job_board(self, limit: int = 50) -> JobBoard:
        board = JobBoard(self.api, limit=limit)
        board.refresh()
        self._follow(board.apply)
        return board

    def jobs(self, limit: int = 50):
        return self.screen("jobs", limit=limit)

    def job(self, job_id: str | None = None):
        """The live monitor of one job (per-host phases, progress, log, actions): ``job_id``
        may be a whole id or the 8-character short id the tables show."""
        return self.monitor(job_id)

    def monitor(self, job_id: str | None = None, *, framed: bool = True):
        from console.widgets.shell import ScreenFrame

        def build():
            from console.models.monitor import JobMonitor
            from console.widgets.monitor import JobMonitorView

            jid = self.resolve_job_id(job_id)
            m = JobMonitor(self.api, jid, names=self.names)
            m.refresh()
            self._follow(m.apply)
            from console import screens

            role = self.session.role if self.session else None

            def calls():
                return self.screen("calls", job_id=jid)

            view = JobMonitorView(
                m,
                role=role,
                open_blockers=lambda: self.screen("blockers", job_id=jid),
                # the BMC call log screen's own role rule decides who sees the button
                open_calls=calls if screens.get("calls").allowed(role) else None,
            )
            self._start_feed_soon(view.status)
            return view

        return ScreenFrame(self, "the job monitor", build) if framed else build()

    def resolve_job_id(self, job_id: str | None) -> str:
        """A whole job id from a whole or short id (the newest job when None)."""
        jid = (job_id or "").strip()
        if not jid:
            rows = self.api.jobs(limit=1)
            if not rows:
                raise ValidationFailed("there are no jobs yet", ["no jobs"])
            return str(rows[0]["id"])
        if UUID_RE.match(jid):
            return jid.lower()
        if re.match(r"^[0-9a-fA-F]{4,32}$", jid):
            hits = [r["id"] for r in self.api.jobs(limit=500) if str(r["id"]).startswith(jid.lower())]
            if len(hits) == 1:
                return str(hits[0])
            raise ValidationFailed(
                f"{len(hits)} jobs start with {jid}: give more of the id",
                [f"job id {jid!r}: {'no match' if not hits else 'ambiguous'}"],
            )
        raise ValidationFailed(
            f"{jid!r} is not a job id: use the id (or its first 8 characters) from the job list",
            [f"job id {jid!r}: not an id"],
        )

    def _start_feed_soon(self, status: Status) -> None:
        """Start Realtime on the kernel's loop if it is not running (a monitor opened from a
        button cannot await); failures show on the monitor's status line."""
        import asyncio

        if self.feed is not None and self.feed.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:
                return
        if not loop.is_running():
            return  # plain Python: the caller awaits con.live() itself

        async def go() -> None:
            try:
                await self.live()
            except ConsoleError as exc:
                status.error(exc)

        loop.create_task(go())

    def update_wizard(self, site_id: str | None = None):
        return self.screen("update", site_id=site_id)

    def new_job(self, job_type: str | None = None):
        """Any job type but rolling updates (the form's default type when none is named):
        targets, params, dry run, create."""
        return self.screen("new_job", job_type=job_type)

    def blockers(self, job_id: str | None = None):
        """The blocker wizard of one job, or of the jobs waiting for decisions (a picker)."""
        return self.screen("blockers", job_id=job_id)

    def blocker_wizard(self, job_id: str):
        """The bare blocker wizard of one job, following Realtime (used by the blockers screen)."""
        from console.widgets.blockers import BlockerWizardView

        wz = BlockerWizard(self.api, job_id)
        wz.load()

        def follow(change: dict) -> None:
            # new blockers of this job (a rescan) or its status: reload, keeping the choices made
            from console.models.jobs import change_parts

            table, _, rec, old = change_parts(change)
            row = rec or old
            if (table == "job_blockers" and row.get("job_id") == job_id) or (
                table == "jobs" and row.get("id") == job_id
            ):
                wz.load()

        self._follow(follow)
        return BlockerWizardView(wz)

    def windows(self, site_id: str | None = None):
        return self.screen("windows", site_id=site_id)

    def credentials(self):
        return self.screen("credentials")

    def force_resume(self):
        return self.screen("force_resume")

    def notifications(self):
        return self.screen("notifications")

    def reports(self, view: str | None = None, export_dir: str = "."):
        return self.screen("reports", view=view, export_dir=export_dir)

    def fleet(self, site_id: str | None = None):
        return self.screen("fleet", site_id=site_id)

    def replication(self, site_id: str | None = None):
        return self.screen("replication", site_id=site_id)
