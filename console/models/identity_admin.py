"""Identity administration for admins (docs/identity.md): the directory sign-in of each
site with its group -> role mapping, the break-glass accounts, and their sessions with
revoke. Everything goes through REST and RPCs under RLS; the control plane decides
(admins only) and its triggers validate again.

Break-glass lockouts are kept per client address in ``breakglass_lockouts``, which no API
role may read; the accounts' ``failed_attempts`` still counts every failure, so the screen
shows that count and says that a lockout holds only for the guessing address.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from console.api import Api, Row
from console.errors import ValidationFailed
from console.models.common import parse_ts, short_ts
from console.roles import ROLES as APP_ROLES
from executor.directory_presets import directory_presets, preset_values

MODES = ("direct", "executor")
NESTING = ("memberof", "search", "ad")
PRESETS = tuple(directory_presets())  # openldap, freeipa, ad (executor/data/directory_presets.yaml)
MIN_REASON = 10
CONFIG_COLUMNS = (
    "site_id,mode,enabled,uris,starttls,bind_dn_template,base_dn,user_filter,group_base_dn,nesting,"
    "disabled_filter,mail_attribute,display_name_attribute,member_of_attribute,member_attribute,updated_by,updated_at"
)
ATTRIBUTES = ("mail_attribute", "display_name_attribute", "member_of_attribute", "member_attribute")
ATTRIBUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+")
ACCOUNT_COLUMNS = (
    "id,name,user_id,role,max_session_s,failed_attempts,locked_until,last_used_at,disabled_at,created_at"
)
URI_RE = re.compile(r"^ldaps?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$")
LOCKOUT_NOTE = (
    "lockouts hold per client address (five wrong secrets lock out the guessing address only); "
    "failed sign-ins counts every failure from any address"
)


def parse_group_roles(text: str) -> list[Row]:
    """One mapping per line, ``role: group DN`` (e.g. ``operator: cn=ops,ou=groups,dc=example,dc=org``);
    blank lines and ``#`` comments skipped. Raises ValidationFailed naming each bad line."""
    out: list[Row] = []
    problems = []
    for n, line in enumerate((text or "").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        role, sep, group = line.partition(":")
        role, group = role.strip().lower(), group.strip()
        if not sep or role not in APP_ROLES:
            problems.append(
                f"mapping line {n}: start with a role ({', '.join(APP_ROLES)}), a colon, then the group DN"
            )
        elif not group or "=" not in group or len(group) > 1024:
            problems.append(
                f"mapping line {n}: the group must be a DN such as cn=ops,ou=groups,dc=example,dc=org"
            )
        else:
            out.append({"group": group, "role": role})
    if problems:
        raise ValidationFailed("the group mapping is not valid: " + "; ".join(problems), problems)
    return out


def format_group_roles(mapping: list[Row] | None) -> str:
    return "\n".join(f"{m['role']}: {m['group']}" for m in mapping or [])


def check_config(
    mode: str, uris: list[str], bind_dn_template: str, user_filter: str, nesting: str
) -> list[str]:
    problems = []
    if mode not in MODES:
        problems.append("mode: direct (the control plane binds) or executor (the site executor binds)")
    bad = [u for u in uris if not URI_RE.match(u)]
    if bad:
        problems.append(f"directory URLs: ldaps:// or ldap:// with host and port only, not {', '.join(bad)}")
    if len(uris) > 8:
        problems.append("directory URLs: at most 8")
    if mode == "direct" and not uris:
        problems.append("directory URLs: a direct site needs at least one")
    if bind_dn_template and "{username}" not in bind_dn_template:
        problems.append(
            "bind DN template: must contain {username}, e.g. uid={username},ou=people,dc=example,dc=org"
        )
    if mode == "direct" and not bind_dn_template:
        problems.append("bind DN template: a direct site needs one")
    if user_filter and "{username}" not in user_filter:
        problems.append("user filter: must contain {username}")
    if nesting not in NESTING:
        problems.append(f"group nesting: one of {', '.join(NESTING)}")
    return problems


def session_state(s: Row, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    if s.get("revoked_at"):
        return "revoked"
    exp = parse_ts(s.get("expires_at"))
    return "expired" if exp is not None and exp <= now else "live"


def _extra_problems(disabled: str, attrs: dict[str, str]) -> list[str]:
    """What is wrong with a disabled-accounts filter and attribute names, in words."""
    problems = []
    if disabled and not (disabled.startswith("(") and disabled.endswith(")") and len(disabled) <= 1024):
        problems.append("disabled filter: one LDAP filter in parentheses, such as (nsAccountLock=TRUE)")
    for k, v in attrs.items():
        if not ATTRIBUTE_RE.fullmatch(v):
            problems.append(f"{k.replace('_', ' ')}: an LDAP attribute name such as mail, not {v!r}")
    return problems


class IdentityAdmin:
    def __init__(self, api: Api, names: Any = None) -> None:
        self.api = api
        self.names = names

    # -- directory sign-in per site ----------------------------------------------------------
    @staticmethod
    def preset(name: str, suffix: str) -> Row:
        """The directory settings a preset gives (bind DN template, base DNs, user filter,
        nesting, disabled filter) for a directory whose naming context is ``suffix``."""
        try:
            return dict(preset_values(name, (suffix or "").strip() or None))
        except ValueError as exc:
            raise ValidationFailed(str(exc), [f"preset: {exc}"]) from None

    def mappings(self) -> dict[str, list[Row]]:
        """site id -> its group mapping, ``[{"group": DN, "role": role}]``, highest role first."""
        rows = self.api._rest(
            "group mapping",
            lambda c: (
                c.table("directory_group_roles")
                .select("site_id,group_dn,role")
                .order("role", desc=True)
                .order("group_key")
            ),
        )
        out: dict[str, list[Row]] = {}
        for r in rows:
            out.setdefault(str(r["site_id"]), []).append({"group": r["group_dn"], "role": r["role"]})
        return out

    def configs(self) -> list[Row]:
        rows = self.api._rest(
            "directory settings", lambda c: c.table("directory_configs").select(CONFIG_COLUMNS)
        )
        mappings = self.mappings()
        for r in rows:
            r["site"] = (
                self.names.name("site", r["site_id"]) if self.names is not None else str(r["site_id"])[:8]
            )
            r["group_roles"] = mappings.get(str(r["site_id"]), [])
            r["mapping"] = format_group_roles(r["group_roles"])
            r["updated"] = short_ts(r.get("updated_at"))
            r["updated by"] = (
                self.names.user(r.get("updated_by")) if self.names is not None and r.get("updated_by") else ""
            )
        return sorted(rows, key=lambda r: r["site"])

    def save_config(
        self,
        *,
        site_id: str,
        mode: str,
        uris: list[str] | str,
        bind_dn_template: str = "",
        base_dn: str = "",
        user_filter: str = "",
        group_base_dn: str = "",
        nesting: str = "search",
        enabled: bool = True,
        starttls: bool = False,
        disabled_filter: str = "",
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Save a site's directory settings; ``attributes`` sets attribute names
        (mail_attribute, display_name_attribute, member_of_attribute, member_attribute, as a
        preset gives them), the others keep theirs."""
        uri_list = [u for u in (uris.split() if isinstance(uris, str) else uris) if u]
        problems = (["site: choose a site"] if not site_id else []) + check_config(
            mode, uri_list, bind_dn_template.strip(), user_filter.strip(), nesting
        )
        disabled = disabled_filter.strip()
        attrs = {
            k: (v or "").strip()
            for k, v in (attributes or {}).items()
            if k in ATTRIBUTES and (v or "").strip()
        }
        problems += _extra_problems(disabled, attrs)
        if problems:
            raise ValidationFailed("the directory settings are not valid: " + "; ".join(problems), problems)
        row: Row = {
            **attrs,
            "disabled_filter": disabled or None,
            "mode": mode,
            "enabled": bool(enabled),
            "uris": uri_list,
            "starttls": bool(starttls),
            "bind_dn_template": bind_dn_template.strip() or None,
            "base_dn": base_dn.strip(),
            "group_base_dn": group_base_dn.strip() or None,
            "nesting": nesting,
        }
        if user_filter.strip():
            row["user_filter"] = user_filter.strip()
        if self._exists(site_id):
            self.api._rest(
                "directory settings",
                lambda c: (
                    c.table("directory_configs").update(row, returning="minimal").eq("site_id", site_id)
                ),
            )
        else:
            self.api._rest(
                "directory settings",
                lambda c: c.table("directory_configs").insert(
                    {"site_id": site_id, **row}, returning="minimal"
                ),
            )

    def set_group_roles(self, site_id: str, mapping: list[Row] | str) -> list[Row]:
        rows = parse_group_roles(mapping) if isinstance(mapping, str) else list(mapping)
        if not site_id:
            raise ValidationFailed("choose a site", ["site: choose a site"])
        if not self._exists(site_id):
            raise ValidationFailed(
                "the site has no directory settings yet",
                ["site: save its directory settings first, then the group mapping"],
            )
        keys: dict[str, Row] = {}
        for r in rows:  # one row per group (DNs compare case- and blank-insensitively)
            key = re.sub(r"\s*([,=+])\s*", r"\1", r["group"]).strip().lower()
            if key in keys and keys[key]["role"] != r["role"]:
                raise ValidationFailed(
                    "the group mapping is not valid: a group is mapped twice",
                    [f"mapping: {r['group']} is given two roles ({keys[key]['role']}, {r['role']})"],
                )
            keys[key] = r
        current = self.api._rest(
            "group mapping",
            lambda c: c.table("directory_group_roles").select("id").eq("site_id", site_id),
        )
        # new and changed rows first, then the ones that went: no moment without a kept mapping
        kept: set[str] = set()
        if keys:
            saved = self.api._rest(
                "group mapping",
                lambda c: c.table("directory_group_roles").upsert(
                    [{"site_id": site_id, "group_dn": r["group"], "role": r["role"]} for r in keys.values()],
                    on_conflict="site_id,group_key",
                ),
            )
            kept = {str(r["id"]) for r in saved}
        gone = [str(r["id"]) for r in current if str(r["id"]) not in kept]
        if gone:
            self.api._rest(
                "group mapping",
                lambda c: c.table("directory_group_roles").delete(returning="minimal").in_("id", gone),
            )
        return list(keys.values())

    def seed_group_roles(self, site_id: str, preset: str, suffix: str) -> list[Row]:
        """Add the preset's default group mapping (policies/identity.yaml) for a directory
        whose naming context is ``suffix`` to the site's mapping: groups it already maps keep
        their role. The rows added, ``[{"group": DN, "role": role}]``; each is audited with
        this admin as its actor. The database checks the role, the preset and the suffix."""
        problems = (["site: choose a site"] if not site_id else []) + (
            [f"preset: one of {', '.join(PRESETS)}"] if preset not in PRESETS else []
        )
        if not (suffix or "").strip():
            problems.append("suffix: the directory's naming context, such as dc=example,dc=org")
        if problems:
            raise ValidationFailed("the default mapping was not added: " + "; ".join(problems), problems)
        if not self._exists(site_id):
            raise ValidationFailed(
                "the site has no directory settings yet",
                ["site: save its directory settings first, then the group mapping"],
            )
        rows = self.api._rest(
            "default group mapping",
            lambda c: c.rpc(
                "idm_seed_group_roles", {"p_site_id": site_id, "p_preset": preset, "p_suffix": suffix.strip()}
            ),
        )
        return [{"group": r["group_dn"], "role": r["role"]} for r in rows or []]

    def _exists(self, site_id: str) -> bool:
        return bool(
            self.api._rest(
                "directory settings",
                lambda c: c.table("directory_configs").select("site_id").eq("site_id", site_id),
            )
        )

    # -- break-glass ------------------------------------------------------------------------
    def accounts(self) -> list[Row]:
        rows = self.api._rest(
            "break-glass accounts",
            lambda c: c.table("breakglass_accounts").select(ACCOUNT_COLUMNS).order("name"),
        )
        for r in rows:
            r["state"] = "disabled" if r.get("disabled_at") else "enabled"
            r["failed sign-ins"] = int(r.get("failed_attempts") or 0)
            r["last used"] = short_ts(r.get("last_used_at")) or "never"
            r["longest session"] = f"{int(r['max_session_s']) // 60} min"
        return rows

    def sessions(self, *, live_only: bool = False, now: dt.datetime | None = None) -> list[Row]:
        accounts = {
            str(a["id"]): a["name"]
            for a in self.api._rest(
                "break-glass accounts", lambda c: c.table("breakglass_accounts").select("id,name")
            )
        }
        rows = self.api._rest(
            "break-glass sessions",
            lambda c: (
                c.table("breakglass_sessions")
                .select(
                    "id,account_id,user_id,role,reason,client,started_at,expires_at,revoked_at,"
                    "revoked_by,revoke_reason"
                )
                .order("started_at", desc=True)
                .limit(200)
            ),
        )
        out = []
        for r in rows:
            r["account"] = accounts.get(str(r["account_id"]), str(r["account_id"])[:8])
            r["state"] = session_state(r, now)
            r["started"], r["expires"] = short_ts(r.get("started_at")), short_ts(r.get("expires_at"))
            by = (
                self.names.user(r.get("revoked_by")) if self.names is not None and r.get("revoked_by") else ""
            )
            r["revoked"] = (
                f"{short_ts(r['revoked_at'])} by {by or 'an admin'}: {r.get('revoke_reason') or ''}"
                if r.get("revoked_at")
                else ""
            )
            if not live_only or r["state"] == "live":
                out.append(r)
        return out

    def revoke(self, session_id: str, reason: str) -> Row:
        reason = (reason or "").strip()
        problems = []
        if not session_id:
            problems.append("session: choose a live break-glass session")
        if len(reason) < MIN_REASON:
            problems.append(f"reason: at least {MIN_REASON} characters; it goes to the audit log")
        if problems:
            raise ValidationFailed("not revoked: " + "; ".join(problems), problems)
        out = self.api._rest(
            "revoke break-glass session",
            lambda c: c.rpc("revoke_breakglass_session", {"p_session_id": session_id, "p_reason": reason}),
        )
        return out[0] if out and isinstance(out[0], dict) else {"revoked": session_id}
