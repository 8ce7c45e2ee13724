"""Identity administration view (admins): directory sign-in per site with its group -> role
mapping, break-glass accounts, and break-glass sessions with revoke."""

from __future__ import annotations

import html

import ipywidgets as w

from console.models.identity_admin import APP_ROLES, LOCKOUT_NOTE, MODES, NESTING, PRESETS, IdentityAdmin
from console.widgets.common import Status, dropdown, guarded, html_table, set_options


class IdentityAdminView(w.VBox):
    def __init__(self, model: IdentityAdmin, sites: list[dict]) -> None:
        self.model = model
        self.sites = sites
        self.configs_table = w.HTML()
        self.site = dropdown(
            [(s["name"], str(s["id"])) for s in sites], placeholder="— site —", description="site"
        )
        self.mode = dropdown([(m, m) for m in MODES], value="executor", description="mode")
        self.enabled = w.Checkbox(value=True, description="enabled")
        self.starttls = w.Checkbox(value=False, description="StartTLS")
        self.uris = w.Text(
            description="URLs", placeholder="ldaps://idm1.example.org ldaps://idm2.example.org"
        )
        self.bind_dn = w.Text(
            description="bind DN", placeholder="uid={username},cn=users,cn=accounts,dc=example,dc=org"
        )
        self.base_dn = w.Text(description="base DN")
        self.user_filter = w.Text(
            description="user filter", placeholder="(&(objectClass=inetOrgPerson)(uid={username}))"
        )
        self.group_base = w.Text(description="group base")
        self.nesting = dropdown([(n, n) for n in NESTING], value="search", description="nesting")
        self.disabled_filter = w.Text(description="disabled filter", placeholder="(nsAccountLock=TRUE)")
        # a preset (executor/data/directory_presets.yaml) fills the fields above for a suffix
        self.preset = dropdown([(p, p) for p in PRESETS], value=PRESETS[0], description="preset")
        self.suffix = w.Text(description="suffix", placeholder="dc=example,dc=org")
        self.use_preset = w.Button(description="Fill from preset")
        self.save = w.Button(description="Save settings", button_style="primary")
        self.config_status = Status()
        self.mapping = w.Textarea(
            description="groups → roles",
            layout=w.Layout(width="95%", height="90px"),
            style={"description_width": "initial"},
            placeholder=f"one per line, role: group DN (roles: {', '.join(APP_ROLES)})",
        )
        self.save_mapping = w.Button(description="Save mapping")
        # the preset's default groups (policies/identity.yaml) for the suffix above
        self.seed_mapping = w.Button(description="Add preset's groups")
        self.mapping_status = Status()
        self.accounts_table = w.HTML()
        self.sessions_table = w.HTML()
        self.session = dropdown([], placeholder="— live session —", description="session")
        self.reason = w.Text(description="reason", placeholder="why it ends now (audited)")
        self.revoke = w.Button(description="Revoke", button_style="danger")
        self.refresh = w.Button(description="Refresh")
        self.session_status = Status()
        self.site.observe(lambda ch: self._fill(), names="value")
        self.save.on_click(guarded(self.config_status, lambda _: self._save()))
        self.use_preset.on_click(guarded(self.config_status, lambda _: self._use_preset()))
        self.save_mapping.on_click(guarded(self.mapping_status, lambda _: self._save_mapping()))
        self.seed_mapping.on_click(guarded(self.mapping_status, lambda _: self._seed_mapping()))
        self.revoke.on_click(guarded(self.session_status, lambda _: self._revoke()))
        self.refresh.on_click(guarded(self.session_status, lambda _: self.load()))
        super().__init__(
            [
                w.HTML("<h4>Directory sign-in per site</h4>"),
                self.configs_table,
                w.HBox([self.site, self.mode, self.enabled, self.starttls]),
                w.HBox([self.preset, self.suffix, self.use_preset]),
                w.HBox([self.uris, self.bind_dn]),
                w.HBox([self.base_dn, self.user_filter]),
                w.HBox([self.group_base, self.nesting, self.disabled_filter]),
                self.save,
                self.config_status,
                self.mapping,
                w.HBox([self.save_mapping, self.seed_mapping]),
                self.mapping_status,
                w.HTML("<h4>Break-glass accounts</h4>"),
                self.accounts_table,
                w.HTML("<h4>Break-glass sessions</h4>"),
                self.sessions_table,
                w.HBox([self.session, self.reason, self.revoke, self.refresh]),
                self.session_status,
            ]
        )
        self._configs: dict[str, dict] = {}
        self._preset_attributes: dict[str, str] = {}  # attribute names of the preset last filled in

    def load(self) -> None:
        cfgs = self.model.configs()
        self._configs = {str(c["site_id"]): c for c in cfgs}
        shown = [
            {
                "site": c["site"],
                "mode": c["mode"],
                "enabled": "yes" if c["enabled"] else "no",
                "directory": " ".join(c.get("uris") or []) or "(through the site executor)",
                "groups → roles": c["mapping"].replace("\n", "; ") or "none: nobody may sign in",
                "updated": f"{c['updated']} {c['updated by']}".strip(),
            }
            for c in cfgs
        ]
        self.configs_table.value = html_table(
            shown,
            list(shown[0]) if shown else [],
            css="rp-directory",
            empty="no site signs in through a directory",
        )
        accts = self.model.accounts()
        self.accounts_table.value = (
            html_table(
                accts,
                ["name", "role", "state", "longest session", "failed sign-ins", "last used"],
                css="rp-breakglass",
                empty="no break-glass accounts",
            )
            + f'<div class="rp-info">{html.escape(LOCKOUT_NOTE)}</div>'
        )
        sess = self.model.sessions()
        self.sessions_table.value = html_table(
            sess,
            ["account", "role", "state", "started", "expires", "client", "reason", "revoked"],
            css="rp-breakglass-sessions",
            empty="no break-glass sessions",
            row_class=lambda r: f"rp-{r['state']}",
        )
        set_options(
            self.session,
            [
                (f"{s['account']} since {s['started']} ({s['client'] or 'unknown client'})", str(s["id"]))
                for s in sess
                if s["state"] == "live"
            ],
            placeholder="— live session —",
        )
        self._fill()

    def _fill(self) -> None:
        c = self._configs.get(self.site.value or "")
        if not c:
            self.mapping.value = ""
            return
        self.mode.value, self.enabled.value, self.starttls.value = (
            c["mode"],
            bool(c["enabled"]),
            bool(c["starttls"]),
        )
        self.uris.value = " ".join(c.get("uris") or [])
        self.bind_dn.value, self.base_dn.value = c.get("bind_dn_template") or "", c.get("base_dn") or ""
        self.user_filter.value, self.group_base.value = (
            c.get("user_filter") or "",
            c.get("group_base_dn") or "",
        )
        self.nesting.value = c.get("nesting") or "search"
        self.disabled_filter.value = c.get("disabled_filter") or ""
        self.mapping.value = c["mapping"]

    def _save(self) -> None:
        self.model.save_config(
            site_id=self.site.value or "",
            mode=self.mode.value,
            uris=self.uris.value,
            bind_dn_template=self.bind_dn.value,
            base_dn=self.base_dn.value,
            user_filter=self.user_filter.value,
            group_base_dn=self.group_base.value,
            nesting=self.nesting.value,
            disabled_filter=self.disabled_filter.value,
            attributes=self._preset_attributes,
            enabled=self.enabled.value,
            starttls=self.starttls.value,
        )
        self.load()
        self.config_status.ok("directory settings saved")

    def _use_preset(self) -> None:
        values = self.model.preset(self.preset.value or "", self.suffix.value)
        self._preset_attributes = {k: v for k, v in values.items() if k.endswith("_attribute")}
        self.bind_dn.value, self.base_dn.value = values["bind_dn_template"], values["base_dn"]
        self.user_filter.value, self.group_base.value = values["user_filter"], values["group_base_dn"]
        self.nesting.value, self.disabled_filter.value = values["nesting"], values["disabled_filter"]
        self.config_status.ok(f"filled from the {self.preset.value} preset: review, then save")

    def _save_mapping(self) -> None:
        rows = self.model.set_group_roles(self.site.value or "", self.mapping.value)
        self.load()
        self.mapping_status.ok(
            f"{len(rows)} group mapping(s) saved" + ("" if rows else ": nobody may sign in")
        )

    def _seed_mapping(self) -> None:
        added = self.model.seed_group_roles(self.site.value or "", self.preset.value or "", self.suffix.value)
        self.load()
        self.mapping_status.ok(
            f"{len(added)} group(s) of the {self.preset.value} preset added"
            + (
                ": the sync reads every mapped group, so remove those your directory does not have"
                if added
                else ": the site maps them all already"
            )
        )

    def _revoke(self) -> None:
        sid = self.session.value or ""
        self.model.revoke(sid, self.reason.value)
        self.reason.value = ""
        self.load()
        self.session_status.ok("break-glass session revoked: its grant and its sign-in ended now")
