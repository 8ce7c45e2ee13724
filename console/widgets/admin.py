"""Admin views: credentials (nothing echoed) and force-resume (reason required)."""

from __future__ import annotations

import ipywidgets as w

from console.models.admin import (
    CREDENTIAL_KINDS,
    NOTIFICATION_CHANNELS,
    NOTIFICATION_EVENTS,
    CredentialForm,
    ForceResume,
    NotificationSettings,
)
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options


class CredentialsView(w.VBox):
    """The secret sits in a Password widget only until Submit; it is cleared right after,
    whatever the outcome, and no output ever shows it."""

    def __init__(self, form: CredentialForm, sites: list[dict]) -> None:
        self.form = form
        self.status = Status()
        self.site = dropdown([(s["name"], s["id"]) for s in sites], description="site")
        self.name = w.Text(description="name", placeholder="e.g. idrac-default")
        self.kind = w.Dropdown(description="kind", options=list(CREDENTIAL_KINDS))
        self.username = w.Text(description="username")
        self.secret = w.Password(description="secret")
        self.endpoints = w.Textarea(
            description="endpoints",
            placeholder="one per line: https://10.1.2.7 ca_bundle=/etc/rackpilot/ca.pem",
        )
        self.submit = w.Button(description="Seal and store", button_style="warning")
        self.submit.on_click(lambda _: self._submit())
        self.table = w.HTML()
        self.show = w.Button(description="Show sets", icon="refresh")
        self.show.on_click(guarded(self.status, lambda _: self._status()))
        self.rotate_pick = dropdown([], description="set")
        self.rotate_secret = w.Password(description="new secret")
        self.rotate_endpoints = w.Textarea(
            description="endpoints", placeholder="as above: where it may be presented"
        )
        self.rotate = w.Button(description="Rotate (re-seal)", button_style="warning")
        self.rotate.on_click(lambda _: self._rotate())
        super().__init__(
            [
                w.HTML(
                    f"{STYLE}<b>Target credential</b>: sealed to the site's executors; the control "
                    "plane stores only ciphertext"
                ),
                self.site,
                self.name,
                self.kind,
                self.username,
                self.secret,
                self.endpoints,
                self.submit,
                w.HTML(
                    "<b>Credential sets of the site</b> (stale = an executor key has no envelope: rotate)"
                ),
                self.show,
                self.table,
                w.HBox([self.rotate_pick, self.rotate_secret, self.rotate_endpoints, self.rotate]),
                self.status,
            ]
        )

    def _status(self) -> None:
        rows = self.form.status(self.site.value)
        for r in rows:
            r["key_ids"] = ", ".join(r.get("key_ids") or [])
        for r in rows:
            r["endpoints"] = (
                ", ".join(
                    f"{e['scheme']}://{e['host']}:{e['port']}"
                    + (" INSECURE" if (e.get("tls") or {}).get("insecure") else "")
                    for e in r.get("endpoints") or []
                )
                or "none: presented nowhere"
            )
        self.table.value = html_table(
            rows,
            ["name", "kind", "username", "endpoints", "key_ids", "stale"],
            css="rp-creds",
            empty="no credential sets at this site",
        )
        set_options(self.rotate_pick, [(f"{r['name']} ({r['kind']})", r["id"]) for r in rows])

    def _rotate(self) -> None:
        secret = self.rotate_secret.value
        self.rotate_secret.value = ""
        try:
            res = guarded(self.status, self.form.rotate)(
                credential_set_id=self.rotate_pick.value, secret=secret, endpoints=self.rotate_endpoints.value
            )
        finally:
            secret = ""  # noqa: F841
        if res:
            self.status.ok(
                f"credential set {res['credential_set_id'][:8]} re-sealed to {res['sealed_to']} key(s)"
            )

    def _submit(self) -> None:
        secret = self.secret.value
        self.secret.value = ""  # cleared before the call, so no failure path can leave it behind
        try:
            res = guarded(self.status, self.form.submit)(
                site_id=self.site.value,
                name=self.name.value,
                kind=self.kind.value,
                username=self.username.value,
                secret=secret,
                endpoints=self.endpoints.value,
            )
        finally:
            secret = ""  # noqa: F841
        if res:
            self.status.ok(
                f"credential set {res['credential_set_id'][:8]} sealed to {res['sealed_to']} key(s)"
            )


class ForceResumeView(w.VBox):
    def __init__(self, model: ForceResume) -> None:
        self.model = model
        self.status = Status()
        self.table = w.HTML()
        self.pick = dropdown([], description="job")
        self.reason = w.Textarea(description="reason", placeholder="why it is safe to resume (audited)")
        self.go = w.Button(description="Force resume", button_style="danger")
        self.go.on_click(guarded(self.status, lambda _: self._run()))
        model.on_change(self.render)
        super().__init__(
            [
                w.HTML(
                    f"{STYLE}<b>Force-resume</b> (admin): stuck or executor-lost jobs go back to "
                    "pending under a new lease epoch"
                ),
                self.table,
                self.pick,
                self.reason,
                self.go,
                self.status,
            ]
        )
        self.render()

    def _run(self) -> None:
        res = self.model.run(self.pick.value, self.reason.value)
        self.reason.value = ""
        self.status.ok(f"job {str(res.get('job_id'))[:8]} is {res.get('status')}")

    def render(self) -> None:
        rows = self.model.rows()
        self.table.value = html_table(
            rows, ["job", "type", "state", "since"], css="rp-stuck", empty="no paused or stuck jobs"
        )
        set_options(self.pick, [(f"{r['job']} {r['type']} {r['state']}", r["id"]) for r in rows])


class NotificationsView(w.VBox):
    def __init__(self, model: NotificationSettings, sites: list[dict]) -> None:
        self.model = model
        self.status = Status()
        self.table = w.HTML()
        self.name = w.Text(description="name")
        self.channel = w.Dropdown(description="channel", options=list(NOTIFICATION_CHANNELS))
        self.target = w.Text(
            description="target", placeholder="https://… or ops@example.com", layout=w.Layout(width="60%")
        )
        self.events = w.SelectMultiple(
            description="events",
            options=list(NOTIFICATION_EVENTS),
            rows=5,
            value=("job_completed", "job_failed"),
        )
        # "every site" is the value None: made through dropdown() so index 0 is really selected
        # (a Dropdown whose first value is None can reach the browser with no selection: blank)
        self.site = dropdown(
            [(s["name"], s["id"]) for s in sites], placeholder="every site", description="site"
        )
        self.add = w.Button(description="Add", button_style="info")
        self.add.on_click(guarded(self.status, lambda _: self._add()))
        self.pick = w.SelectMultiple(description="delete", options=[], rows=4)
        self.delete = w.Button(description="Delete selected", button_style="danger")
        self.delete.on_click(guarded(self.status, lambda _: self._delete()))
        model.on_change(self.render)
        super().__init__(
            [
                w.HTML(f"{STYLE}<b>Notifications</b>: job and window events to Teams, e-mail or a webhook"),
                self.table,
                self.name,
                self.channel,
                self.target,
                self.events,
                self.site,
                self.add,
                self.pick,
                self.delete,
                self.status,
            ]
        )
        self.render()

    def _add(self) -> None:
        self.model.add(
            name=self.name.value,
            channel=self.channel.value,
            target=self.target.value,
            events=list(self.events.value),
            site_id=self.site.value,
        )
        self.status.ok(f"notification {self.name.value!r} saved")

    def _delete(self) -> None:
        res = self.model.delete(list(self.pick.value))
        self.status.ok(f"{res.get('deleted')} setting(s) deleted")

    def render(self) -> None:
        rows = self.model.rows()
        self.table.value = html_table(
            rows,
            ["name", "channel", "target", "events", "enabled"],
            css="rp-notify",
            empty="no notification settings",
        )
        self.pick.options = [(f"{r['name']} ({r['channel']})", r["id"]) for r in rows]
