"""The console's frame: every screen sits in a ``ScreenFrame``, and ``AppShell`` is the
one-page app (header with the signed-in user and Sign out, navigation by the screens the
user's role may open, the chosen screen below).

A ScreenFrame shows the sign-in form until someone is signed in (in this notebook or in
another one of the same JupyterLab: ``console.store``), then builds its screen; a
``ConsoleError`` while building becomes a red line with a Retry button, never a traceback.
After sign-out every frame goes back to the form.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from console import screens
from console.errors import ConsoleError
from console.widgets.common import STYLE, Status

if TYPE_CHECKING:
    from console.widgets.app import Console


class ScreenFrame(w.VBox):
    """One screen in a notebook cell. Attribute access falls through to the built view
    (``con.jobs().board``), so notebooks keep their handles on the models."""

    def __init__(
        self,
        console: Console,
        title: str,
        build: Callable[[], w.Widget],
        min_role: str | None = None,
    ) -> None:
        self._console = console
        self._title = title
        self._build = build
        self._min_role = min_role
        self.view: w.Widget | None = None
        self.status = Status()
        self.retry = w.Button(description="Retry", icon="refresh")
        self.retry.on_click(lambda _: self.render(force=True))
        super().__init__([])
        self.add_class("rp-screen")
        console._frames.append(self)
        self.render()

    def __getattr__(self, name: str) -> Any:
        view = self.__dict__.get("view") if "view" in self.__dict__ else None
        if view is not None and not name.startswith("_"):
            return getattr(view, name)
        raise AttributeError(name)

    def render(self, force: bool = False) -> None:
        con = self._console
        if not con.signed_in:
            self.view = None
            self.children = [
                w.HTML(
                    f"{STYLE}<div class='rp-warn rp-gate'>Sign in to open "
                    f"<b>{html.escape(self._title)}</b>:</div>"
                ),
                con.sign_in_form(),
            ]
            return
        role = con.session.role if con.session else None
        if self._min_role and not (
            role in screens.ROLES and screens.ROLES.index(role) >= screens.ROLES.index(self._min_role)
        ):
            # said in words before anything is asked of the control plane (which would refuse)
            self.view = None
            note = html.escape(role_note(self._title, self._min_role, role))
            self.children = [w.HTML(f"{STYLE}<div class='rp-warn rp-role-gate'>{note}</div>")]
            return
        if self.view is not None and not force:
            return
        try:
            self.view = self._build()
        except ConsoleError as exc:
            self.view = None
            self.status.error(exc)
            self.children = [self.status, self.retry]
            return
        self.status.clear()
        self.children = [self.view]


def role_note(title: str, min_role: str, role: str | None) -> str:
    """``Audit log is for approvers and admins; your role is operator.``"""
    allowed = screens.ROLES[screens.ROLES.index(min_role) :]
    names = [f"{r}s" for r in allowed]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{title} is for {who}; your role is {role or 'none'}."


class AppShell(w.VBox):
    """The whole console on one page. It carries the console's header (who is signed in,
    Sign out), so the panel ``connect()`` drew is emptied while an app is on the page."""

    shows_header = True

    def __init__(self, console: Console, start: str | None = None) -> None:
        self.console = console
        self.nav = w.ToggleButtons(options=[], style={"button_width": "auto"})
        self.nav.add_class("rp-nav")
        self.help = w.HTML()
        self.body = w.VBox()
        self._built: dict[str, w.Widget] = {}
        self._start = start
        self.nav.observe(lambda ch: self._show(ch["new"]), names="value")
        super().__init__([console.header, self.nav, self.help, self.body])
        self.add_class("rp-app")
        console._frames.append(self)
        console._show_panel()
        self.render()

    def render(self, force: bool = False) -> None:
        con = self.console
        if not con.signed_in:
            self._built.clear()
            self.nav.options = []
            self.help.value = ""
            self.body.children = [con.sign_in_form()]
            return
        role = con.session.role if con.session else None
        allowed = screens.screens_for(role)
        opts = [(s.title, s.key) for s in allowed]
        if [o[1] for o in self.nav.options] != [o[1] for o in opts]:
            current = self.nav.value if self.nav.value in {k for _, k in opts} else None
            self.nav.options = opts
            want = (
                current
                or (self._start if self._start in {k for _, k in opts} else None)
                or (opts[0][1] if opts else None)
            )
            if want is not None:
                self.nav.value = want
        if self.nav.value:
            self._show(self.nav.value)

    def _show(self, key: str | None) -> None:
        if not key:
            return
        s = screens.get(key)
        self.help.value = f"{STYLE}<div class='rp-info rp-help'>{html.escape(s.help)}</div>" if s.help else ""
        if key not in self._built:
            self._built[key] = self.console.screen(key)
        self.body.children = [self._built[key]]

    def show_screen(self, key: str) -> None:
        """Switch to a screen (as the navigation does)."""
        self.nav.value = key
