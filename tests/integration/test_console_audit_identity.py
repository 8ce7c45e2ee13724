"""The audit-log and identity screens against the local stack.

Audit: an approver reads the entries a job left, named and filtered; the chain check over
the newest rows recomputes each hash in Python as audit_row_hash does and finds the chain
intact (and an edited copy of a row not); verify_audit_chain() and audit_row_hash stay the
service role's (an admin is refused), and an operator reads
no audit rows at all. Identity: an admin saves a site's directory settings and its group
mapping (refused in words when wrong, refused by RLS for an approver), sees a break-glass
account with its failed sign-ins, and revokes a live break-glass session, which then ends."""

from __future__ import annotations

import psycopg2
import pytest

from console.errors import ConsoleError, ValidationFailed
from console.identity import break_glass_login, provision_breakglass
from console.models.audit import AuditModel
from console.models.identity_admin import IdentityAdmin
from console.models.names import Names
from console.widgets.audit import AuditView
from console.widgets.identity_admin import IdentityAdminView
from tests.integration.console_support import make_console_env, scp_job


@pytest.fixture(scope="module")
def ce(stack):
    return make_console_env(stack)


def test_audit_screen_names_filters_and_checks_the_chain(ce) -> None:
    job = scp_job(ce)
    api = ce.api("approver")
    m = AuditModel(api, names=Names(api))
    rows = m.entries(job_id=job)
    assert rows and {r["action"] for r in rows} >= {"job.created"}
    assert all(r["row_id"] == job for r in rows)
    assert rows[-1]["actor"] == f"operator-{ce.tag}@console.test"  # the operator who created it, by name
    assert all(r["table_name"] == "jobs" for r in m.entries(table="jobs", limit=20))
    assert all(r["action"] == "job.created" for r in m.entries(action="job.created", limit=20))

    res = m.chain_status(200)
    assert res["state"] == "intact", res["problems"]
    assert (
        res["checked"] > 0 and "links and hashes" in res["scope"] and "service role only" in res["full_check"]
    )

    raw = api._rest(
        "audit", lambda c: c.table("audit_log").select("*").eq("row_id", job).order("id").limit(1)
    )[0]
    assert m.recompute(raw) == raw["hash"]  # the same hash the database chained
    assert m.recompute({**raw, "note": "edited"}) != raw["hash"]

    v = AuditView(m, job)
    v.load()
    v.check_chain()
    assert "job.created" in v.table.value and "chain intact" in v.chain.value

    with pytest.raises(ConsoleError):  # the whole-chain check is not the API roles' to run
        AuditModel(ce.api("admin")).verify_full()
    with pytest.raises(ConsoleError):
        ce.api("admin")._rest("hash", lambda c: c.rpc("audit_row_hash", {"p_prev_hash": "0" * 64}))
    assert AuditModel(ce.api("operator")).entries(limit=5) == []  # RLS: approvers and admins only


def test_identity_screen_directory_mapping_and_break_glass(ce, stack) -> None:
    admin = ce.api("admin")
    m = IdentityAdmin(admin, names=Names(admin))
    site = ce.fleet.site_a
    with pytest.raises(ValidationFailed) as exc:
        m.save_config(site_id=site, mode="direct", uris="http://idm.example.org", bind_dn_template="uid=x")
    assert any("ldaps://" in p for p in exc.value.problems) and any(
        "{username}" in p for p in exc.value.problems
    )
    m.save_config(
        site_id=site,
        mode="direct",
        uris="ldaps://idm1.example.org ldaps://idm2.example.org:636",
        bind_dn_template="uid={username},cn=users,dc=example,dc=org",
        base_dn="dc=example,dc=org",
    )
    with pytest.raises(ValidationFailed) as exc:
        m.set_group_roles(site, "root: cn=x,dc=example,dc=org")
    assert "mapping line 1" in exc.value.problems[0]
    m.set_group_roles(
        site, "operator: cn=ops,cn=groups,dc=example,dc=org\nadmin: cn=admins,cn=groups,dc=example,dc=org"
    )
    cfg = [c for c in m.configs() if str(c["site_id"]) == str(site)][0]
    assert cfg["mapping"].splitlines() == [  # directory_group_roles rows, highest role first
        "admin: cn=admins,cn=groups,dc=example,dc=org",
        "operator: cn=ops,cn=groups,dc=example,dc=org",
    ]
    assert cfg["updated by"] == "you"
    # a new mapping replaces the old one: a changed role, a dropped group, a new group; each
    # row change audited with the admin as its actor
    with pytest.raises(ValidationFailed) as exc:
        m.set_group_roles(
            site, "admin: cn=ops,cn=groups,dc=example,dc=org\nviewer: CN=ops, cn=groups,dc=example,dc=org"
        )
    assert "given two roles" in exc.value.problems[0]
    m.set_group_roles(
        site, "approver: CN=Ops, cn=groups,dc=example,dc=org\nviewer: cn=all,cn=groups,dc=example,dc=org"
    )
    cfg = [c for c in m.configs() if str(c["site_id"]) == str(site)][0]
    assert cfg["mapping"].splitlines() == [
        "approver: CN=Ops, cn=groups,dc=example,dc=org",
        "viewer: cn=all,cn=groups,dc=example,dc=org",
    ]
    with psycopg2.connect(stack.pg.dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "select action, actor_kind from public.audit_log where table_name = 'directory_group_roles' "
            "and (new_data ->> 'site_id' = %s or old_data ->> 'site_id' = %s or row_id in "
            "(select id::text from public.directory_group_roles where site_id = %s))",
            (str(site), str(site), str(site)),
        )
        actions = cur.fetchall()
    assert sorted(a for a, _ in actions) == sorted(
        ["directory_group_roles.insert"] * 3
        + ["directory_group_roles.update", "directory_group_roles.delete"]
    ), actions
    assert {k for _, k in actions} == {"user"}
    with pytest.raises(ConsoleError):  # approvers may not change who signs in
        IdentityAdmin(ce.api("approver")).set_group_roles(site, [])
    assert IdentityAdmin(ce.api("approver")).configs() == []

    env = stack.env()
    name = f"bg-{ce.tag}".lower().replace("_", "-")[:40]
    secret = provision_breakglass(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"], name)
    live = break_glass_login(
        env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"], name, secret, "directory down, console test"
    )
    v = IdentityAdminView(m, admin.sites())
    v.load()
    assert name in v.accounts_table.value and "per client address" in v.accounts_table.value
    assert "directory down, console test" in v.sessions_table.value
    sid = str(live["breakglass_session_id"])
    assert sid in [val for _, val in v.session.options]
    v.session.value, v.reason.value = sid, "short"
    v.revoke.click()
    assert "reason: at least 10 characters" in v.session_status.value
    v.reason.value = "test over, ending the emergency access"
    v.revoke.click()
    assert "revoked" in v.session_status.value and "rp-ok" in v.session_status.value
    s = [r for r in m.sessions() if str(r["id"]) == sid][0]
    assert s["state"] == "revoked" and "by you: test over" in s["revoked"]
    assert sid not in [val for _, val in v.session.options]

    # a preset fills the site's settings (FreeIPA here), the admin saves them
    v.site.value = str(site)
    v.preset.value, v.suffix.value = "freeipa", ""
    v.use_preset.click()
    assert "RACKPILOT_IDM_SUFFIX" in v.config_status.value  # no suffix: said, nothing filled
    v.suffix.value = "dc=ipa,dc=example"
    v.use_preset.click()
    assert v.base_dn.value == "cn=users,cn=accounts,dc=ipa,dc=example" and v.nesting.value == "memberof"
    v.save.click()
    assert "rp-ok" in v.config_status.value, v.config_status.value
    cfg = [c for c in m.configs() if str(c["site_id"]) == str(site)][0]
    assert (cfg["disabled_filter"], cfg["group_base_dn"], cfg["user_filter"], cfg["member_of_attribute"]) == (
        "(nsAccountLock=TRUE)",
        "cn=groups,cn=accounts,dc=ipa,dc=example",
        "(&(objectClass=person)(uid={username}))",
        "memberOf",
    )
    # attribute names: set one, and a hostile one is refused in words before anything is saved
    base = {k: cfg[k] for k in ("mode", "uris", "bind_dn_template", "base_dn")}
    with pytest.raises(ValidationFailed) as exc:
        m.save_config(site_id=site, **base, attributes={"mail_attribute": "mail)(uid=*"})
    assert exc.value.problems == ["mail attribute: an LDAP attribute name such as mail, not 'mail)(uid=*'"]
    m.save_config(site_id=site, **base, attributes={"mail_attribute": "userPrincipalName"})
    cfg = [c for c in m.configs() if str(c["site_id"]) == str(site)][0]
    assert (cfg["mail_attribute"], cfg["display_name_attribute"]) == ("userPrincipalName", "displayName")


def test_identity_screen_adds_a_presets_default_groups(ce) -> None:
    """The identity screen's "Add preset's groups": the preset's default mapping of
    policies/identity.yaml, for the suffix typed, joins the site's mapping; a group the site
    maps already keeps its role; refused in words without settings, preset or suffix, and
    by the database for a role other than admin."""
    admin = ce.api("admin")
    m = IdentityAdmin(admin, names=Names(admin))
    site = ce.fleet.site_b
    with pytest.raises(ValidationFailed) as exc:
        m.seed_group_roles(site, "freeipa", "dc=example,dc=org")
    assert "save its directory settings first" in exc.value.problems[0]
    m.save_config(site_id=site, mode="executor", uris="")
    m.set_group_roles(site, "viewer: cn=rackpilot-admins,cn=groups,cn=accounts,dc=example,dc=org")
    with pytest.raises(ValidationFailed) as exc:
        m.seed_group_roles(site, "novell", " ")
    assert exc.value.problems == [
        "preset: one of openldap, freeipa, ad",
        "suffix: the directory's naming context, such as dc=example,dc=org",
    ]
    with pytest.raises(ConsoleError):  # the database's own check: admins only
        IdentityAdmin(ce.api("operator")).seed_group_roles(site, "freeipa", "dc=example,dc=org")
    v = IdentityAdminView(m, admin.sites())
    v.load()
    v.site.value, v.preset.value, v.suffix.value = site, "freeipa", "dc=example,dc=org"
    v.seed_mapping.click()
    assert "3 group(s) of the freeipa preset added" in v.mapping_status.value, v.mapping_status.value
    assert v.mapping.value.splitlines() == [  # the admin's viewer row stands; the rest are the defaults
        "approver: cn=rackpilot-approvers,cn=groups,cn=accounts,dc=example,dc=org",
        "operator: cn=rackpilot-operators,cn=groups,cn=accounts,dc=example,dc=org",
        "viewer: cn=rackpilot-admins,cn=groups,cn=accounts,dc=example,dc=org",
        "viewer: cn=rackpilot-viewers,cn=groups,cn=accounts,dc=example,dc=org",
    ]
    v.seed_mapping.click()
    assert "0 group(s) of the freeipa preset added: the site maps them all already" in v.mapping_status.value
