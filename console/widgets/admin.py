"""Admin views: credentials (nothing echoed) and force-resume (reason required)."""

from __future__ import annotations

import ipywidgets as w

from console.models.admin import CREDENTIAL_KINDS, CredentialForm, ForceResume
from console.widgets.common import STYLE, Status, guarded, html_table


class CredentialsView(w.VBox):
    """The secret sits in a Password widget only until Submit; it is cleared right after,
    whatever the outcome, and no output ever shows it."""

    def __init__(self, form: CredentialForm, sites: list[dict]) -> None:
        self.form = form
        self.status = Status()
        self.site = w.Dropdown(description="site", options=[(s["name"], s["id"]) for s in sites])
        self.name = w.Text(description="name", placeholder="e.g. idrac-default")
        self.kind = w.Dropdown(description="kind", options=list(CREDENTIAL_KINDS))
        self.username = w.Text(description="username")
        self.secret = w.Password(description="secret")
        self.submit = w.Button(description="Seal and store", button_style="warning")
        self.submit.on_click(lambda _: self._submit())
        super().__init__([w.HTML(f"{STYLE}<b>Target credential</b>: sealed to the site's executors; the control "
                                 "plane stores only ciphertext"), self.site, self.name, self.kind, self.username,
                          self.secret, self.submit, self.status])

    def _submit(self) -> None:
        secret = self.secret.value
        self.secret.value = ""  # cleared before the call, so no failure path can leave it behind
        try:
            res = guarded(self.status, self.form.submit)(site_id=self.site.value, name=self.name.value,
                                                          kind=self.kind.value, username=self.username.value,
                                                          secret=secret)
        finally:
            secret = ""  # noqa: F841
        if res:
            self.status.ok(f"credential set {res['credential_set_id'][:8]} sealed to {res['sealed_to']} key(s)")


class ForceResumeView(w.VBox):
    def __init__(self, model: ForceResume) -> None:
        self.model = model
        self.status = Status()
        self.table = w.HTML()
        self.pick = w.Dropdown(description="job", options=[])
        self.reason = w.Textarea(description="reason", placeholder="why it is safe to resume (audited)")
        self.go = w.Button(description="Force resume", button_style="danger")
        self.go.on_click(guarded(self.status, lambda _: self._run()))
        model.on_change(self.render)
        super().__init__([w.HTML(f"{STYLE}<b>Force-resume</b> (admin): stuck or executor-lost jobs go back to "
                                 "pending under a new lease epoch"), self.table, self.pick, self.reason, self.go,
                          self.status])
        self.render()

    def _run(self) -> None:
        res = self.model.run(self.pick.value, self.reason.value)
        self.reason.value = ""
        self.status.ok(f"job {str(res.get('job_id'))[:8]} is {res.get('status')}")

    def render(self) -> None:
        rows = self.model.rows()
        self.table.value = html_table(rows, ["job", "type", "state", "since"], css="rp-stuck",
                                      empty="no paused or stuck jobs")
        self.pick.options = [(f"{r['job']} {r['type']} {r['state']}", r["id"]) for r in rows]
