"""Directory sign-in and the directory sync against FreeIPA's and Active Directory's shapes,
served by a real slapd, configured from the presets of executor/data/directory_presets.yaml.

Real: Debian's slapd over LDAPS (the direct path) and StartTLS (the executor path); the
layouts - FreeIPA's ``cn=users,cn=accounts`` / ``cn=groups,cn=accounts`` with a
``memberOf`` that lists nested groups, AD's ``CN=Users`` with ``user``/``group`` entries,
``sAMAccountName``, ``userPrincipalName`` (the address of accounts without ``mail``, read
through the site's ``mail_attribute``), ``memberOf`` of direct groups and a disabled
``userAccountControl`` matched with AD's bitwise-AND rule; the ``idm-login`` function, the
executor's identity agent, the directory sync the ``directory_sync`` job runs
(``executor.identity.sync_directory``; test_identity_sync_job.py runs the job itself on
its schedule), ``directory_group_roles`` under RLS.

Simulated (devstack/lab/ldap.py says more): the FreeIPA and AD schema are small subsets
declared by the lab with the products' attribute OIDs (FreeIPA's nsAccountLock is allowed
by an auxiliary class of the lab's own); slapd lets a locked or disabled account bind
where 389 and AD refuse it, so the refusal here comes from the preset's
``disabled_filter``; slapd cannot bind with a UPN and has no in-chain matching rule
(1.2.840.113556.1.4.1941), so the AD site binds with a ``CN={username},CN=Users,...``
template and follows nested groups with ``member=`` searches (``nesting = search``, which
real AD also answers). The AD preset's own ``{username}@domain`` bind and ``ad`` nesting
are therefore not exercised against a server here.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg2
import pytest
from postgrest.exceptions import APIError

from console.identity import IdentityError, directory_login, seal_bind_credential
from devstack.identity_policy import load_identity
from devstack.lab.ldap import ADLabDirectory, FreeIPALabDirectory, LabDirectory
from executor.config import ExecutorSettings
from executor.directory_presets import preset_values
from executor.identity import IdentityAgent, IdentitySettings
from executor.log import setup_logging
from executor.secrets import load_or_create
from supabase import create_client

from .idm_support import AgentThread

SHAPES = {"freeipa": FreeIPALabDirectory, "ad": ADLabDirectory}


class Shape:
    def __init__(self, stack, tmp: Path, shape: str):
        env = stack.env()
        self.url, self.anon, self.service = (
            env["SUPABASE_URL"],
            env["SUPABASE_ANON_KEY"],
            env["SUPABASE_SERVICE_ROLE_KEY"],
        )
        self.shape = shape
        self.conn = psycopg2.connect(stack.pg.dsn())
        self.conn.autocommit = True
        self.tag = uuid.uuid4().hex[:6]
        self.ldap: LabDirectory = SHAPES[shape](tmp / "ldap").start()
        self.agent: AgentThread | None = None
        self.sites: dict[str, str] = {}
        self.log = io.StringIO()
        setup_logging("INFO", stream=self.log)
        # the site's settings are the preset's, for this directory's suffix ...
        self.settings = preset_values(shape, self.ldap.suffix)
        if shape == "ad":
            # ... except what slapd cannot serve of AD (see the module docstring)
            self.settings["bind_dn_template"] = f"CN={{username}},CN=Users,{self.ldap.suffix}"
            self.settings["nesting"] = "search"
            # this AD's accounts have no mailbox: the address is the UPN (an attribute setting)
            self.settings["mail_attribute"] = "userPrincipalName"

    def q(self, sql: str, *args):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def site(self, path: str) -> str:
        return f"idm-{self.shape}-{path}-{self.tag}"

    def build(self, tmp: Path) -> None:
        shape_name = self.ldap.preset
        self.key_path = tmp / "exec.pem"
        key, _ = load_or_create(self.key_path)  # a key file, as the executor keeps it
        for path in ("direct", "exec"):
            sid = str(
                self.q("insert into public.sites (name) values (%s) returning id", self.site(path))[0][0]
            )
            self.sites[path] = sid
            cfg = self.settings if path == "direct" else {}
            self.q(
                "insert into public.directory_configs (site_id, mode, uris, ca_pem, bind_dn_template, base_dn, "
                "group_base_dn, user_filter, nesting, disabled_filter, mail_attribute) "
                "values (%s, %s, %s, %s, %s, %s, %s, coalesce(%s, '(uid={username})'), "
                "coalesce(%s, 'search'), %s, coalesce(%s, 'mail'))",
                sid,
                "direct" if path == "direct" else "executor",
                [self.ldap.ldaps_uri] if path == "direct" else [],
                self.ldap.ca_pem,
                cfg.get("bind_dn_template"),
                cfg.get("base_dn", ""),
                cfg.get("group_base_dn"),
                cfg.get("user_filter"),
                cfg.get("nesting"),
                cfg.get("disabled_filter"),
                cfg.get("mail_attribute"),
            )
            # the site's mapping: its preset's defaults (policies/identity.yaml), seeded as the
            # platform's service role seeds a site that has no admin yet
            seeded = (
                create_client(self.url, self.service)
                .rpc(
                    "idm_seed_group_roles",
                    {"p_site_id": sid, "p_preset": shape_name, "p_suffix": self.ldap.suffix},
                )
                .execute()
                .data
            )
            assert [(r["group_dn"], r["role"]) for r in seeded] == [
                (m["group"], m["role"]) for m in self.ldap.group_roles()
            ]
        self.q(
            "insert into public.executors (site_id, name, public_key, key_id) values (%s, 'idm', %s, %s)",
            self.sites["exec"],
            key.public_b64,
            key.kid,
        )
        # an admin of the directory seals the sync's bind account to the executor's key
        admin = self.login("direct", "alice")
        assert admin["role"] == "admin", admin
        seal_bind_credential(
            self.client(admin["session"]),
            self.sites["exec"],
            "directory-sync",
            self.ldap.sync_dn,
            self.ldap.passwords["sync"],
            [self.ldap.ldap_uri],
        )
        overrides = (
            {
                "bind_dn_template": self.settings["bind_dn_template"],
                "nesting": "search",
                "mail_attribute": "userPrincipalName",
            }
            if self.shape == "ad"
            else {}
        )
        idm = IdentitySettings(
            uris=[self.ldap.ldap_uri],
            starttls=True,
            ca_file=self.ldap.ca_file,
            preset=self.shape,
            suffix=self.ldap.suffix,
            bind_credential="directory-sync",
            poll_interval=1.0,
            **overrides,
        )
        assert idm.disabled_filter == self.settings["disabled_filter"]
        settings = ExecutorSettings(
            supabase_url=self.url,
            supabase_key=self.service,
            site=self.site("exec"),
            state_dir=tmp,
            private_key_path=self.key_path,
            log_level="INFO",
        )
        self.agent = AgentThread(IdentityAgent(settings, idm, key)).start()

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.ldap.stop()
        self.conn.close()

    def login(self, path: str, user: str, password: str | None = None) -> dict:
        pw = self.ldap.passwords.get(user, "x-password") if password is None else password
        return directory_login(self.url, self.anon, self.site(path), user, pw)

    def refused(self, path: str, user: str, password: str | None = None) -> IdentityError:
        with pytest.raises(IdentityError) as info:
            self.login(path, user, password)
        return info.value

    def client(self, session: dict):
        c = create_client(self.url, self.anon)
        c.auth.set_session(session["access_token"], session["refresh_token"])
        return c

    def role_of(self, session: dict) -> str | None:
        r = httpx.post(
            f"{self.url}/rest/v1/rpc/current_app_role",
            json={},
            headers={"apikey": self.anon, "Authorization": f"Bearer {session['access_token']}"},
        )
        assert r.status_code == 200, r.text
        return r.json()

    def directory_role(self, user: str) -> str | None:
        rows = self.q(
            "select ur.role::text from public.directory_identities d "
            "left join public.user_roles ur on ur.user_id = d.user_id where d.subject = %s",
            self.ldap.user_dn(user).lower(),
        )
        return rows[0][0] if rows else None


@pytest.fixture(scope="module", params=sorted(SHAPES))
def shape(request, stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"idm-{request.param}")
    s = Shape(stack, tmp, request.param)
    try:
        s.build(tmp)
        yield s
    finally:
        s.close()


def test_both_paths_sign_in_with_the_preset(shape: Shape):
    for path in ("direct", "exec"):
        res = shape.login(path, "alice")  # nested: alice -> platform-admins -> rackpilot admins
        assert (res["role"], res["via"]) == ("admin", "direct" if path == "direct" else "executor"), res
        assert shape.role_of(res["session"]) == "admin"
        me = shape.client(res["session"]).auth.get_user().user
        # FreeIPA's mail; AD's userPrincipalName (its accounts have no mail here)
        assert me.email == f"alice@{'ipa' if shape.shape == 'freeipa' else 'corp'}.test"
        assert shape.login(path, "bob")["role"] == "operator"
        # the preset's user filter (uid / sAMAccountName) takes a hostile name literally
        for hostile in ("*", "alice)(|(objectClass=*", "al*"):
            e = shape.refused(path, hostile, shape.ldap.passwords["alice"])
            assert (e.status, e.code) == (401, "invalid_credentials"), (path, hostile, e)


def test_the_mapping_comes_from_policies_and_admins_own_it(shape: Shape):
    """policies/identity.yaml is the default mapping of each preset: the database holds the
    file's rows, and both sites here were seeded from them (Shape.build), so the sign-ins
    of this module map through them. An admin seeding again adds only a default the site
    lacks and keeps an admin's change to a row; the addition is audited with the admin as
    its actor. Other roles are refused; an unknown preset, a suffix that is no DN and a site
    without directory settings are each named; none of these writes anything."""
    assert shape.q(
        "select preset, group_dn_template, role::text from public.idm_default_group_roles() order by ord"
    ) == [(r.preset, r.group, r.role) for r in load_identity()]
    sid = shape.sites["direct"]

    def mapping() -> list[tuple[str, str]]:
        return shape.q(
            "select group_dn, role::text as r from public.directory_group_roles where site_id = %s "
            "order by role desc",
            sid,
        )

    assert mapping() == [(m["group"], m["role"]) for m in shape.ldap.group_roles()]
    admin = shape.client(shape.login("direct", "alice")["session"])
    seed = {"p_site_id": sid, "p_preset": shape.shape, "p_suffix": shape.ldap.suffix}
    viewers = shape.ldap.groups["viewers"]
    admin.table("directory_group_roles").update({"role": "operator"}).eq("site_id", sid).eq(
        "group_dn", viewers
    ).execute()
    assert admin.rpc("idm_seed_group_roles", seed).execute().data == []
    assert (viewers, "operator") in mapping()  # the admin's choice stands
    admin.table("directory_group_roles").delete().eq("site_id", sid).eq("group_dn", viewers).execute()
    back = admin.rpc("idm_seed_group_roles", seed).execute().data
    assert [(r["group_dn"], r["role"]) for r in back] == [(viewers, "viewer")]
    assert mapping() == [(m["group"], m["role"]) for m in shape.ldap.group_roles()]
    alice_id = admin.auth.get_user().user.id
    assert shape.q(
        "select actor_kind, actor_id::text, note from public.audit_log "
        "where action = 'directory_group_roles.insert' and row_id = %s",
        back[0]["id"],
    ) == [("user", alice_id, f"default group mapping of preset {shape.shape}")]

    before = shape.q("select count(*) from public.directory_group_roles")[0][0]
    operator = shape.client(shape.login("direct", "bob")["session"])
    for client, args, code, words in (
        (operator, seed, "42501", "for admins"),
        (
            admin,
            seed | {"p_preset": "novell"},
            "22023",
            "unknown directory preset; one of ad, freeipa, openldap",
        ),
        (admin, seed | {"p_suffix": "example.org"}, "22023", "a DN such as dc=example,dc=org"),
        (admin, seed | {"p_site_id": str(uuid.uuid4())}, "P0001", "no directory settings yet"),
    ):
        with pytest.raises(APIError) as info:
            client.rpc("idm_seed_group_roles", args).execute()
        assert info.value.code == code and words in str(info.value.message), (args, info.value)
    assert shape.q("select count(*) from public.directory_group_roles")[0][0] == before
    for user in ("alice", "bob"):  # their identities back to the executor's site, which the sync below reads
        shape.login("exec", user)


def test_a_disabled_account_is_refused_on_both_paths(shape: Shape):
    users_before = shape.q("select count(*) from auth.users")[0][0]
    for path in ("direct", "exec"):
        e = shape.refused(path, "frank")  # in the operators group, but disabled
        assert (e.status, e.code) == (403, "account_disabled"), (path, e)
        assert "disabled" in str(e)
    assert shape.q("select count(*) from auth.users")[0][0] == users_before


def test_the_agent_runs_as_its_own_process_from_an_env_file(shape: Shape, tmp_path: Path):
    """``python -m executor.identity --env-file ... --sync-once`` as the systemd unit runs it:
    the preset and suffix from the file, a comma-separated URI list with a dead server
    first (failover), the sealed bind account; it prints the sync's counts and no secret."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connections are refused
    env = {
        "RACKPILOT_SUPABASE_URL": shape.url,
        "RACKPILOT_SUPABASE_KEY": shape.service,
        "RACKPILOT_SITE": shape.site("exec"),
        "RACKPILOT_STATE_DIR": str(tmp_path),
        "RACKPILOT_PRIVATE_KEY_PATH": str(shape.key_path),
        "RACKPILOT_IDM_URIS": f"ldap://127.0.0.1:{dead},{shape.ldap.ldap_uri}",
        "RACKPILOT_IDM_STARTTLS": "true",
        "RACKPILOT_IDM_CA_FILE": str(shape.ldap.ca_file),
        "RACKPILOT_IDM_PRESET": shape.shape,
        "RACKPILOT_IDM_SUFFIX": shape.ldap.suffix,
        "RACKPILOT_IDM_BIND_CREDENTIAL": "directory-sync",
    }
    if shape.shape == "ad":
        env |= {
            "RACKPILOT_IDM_BIND_DN_TEMPLATE": shape.settings["bind_dn_template"],
            "RACKPILOT_IDM_NESTING": "search",
            "RACKPILOT_IDM_MAIL_ATTRIBUTE": "userPrincipalName",
        }
    env_file = tmp_path / "executor.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
    res = subprocess.run(
        [sys.executable, "-m", "executor.identity", "--env-file", str(env_file), "--sync-once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    assert counts["users_seen"] >= 2, counts  # alice and bob signed in through this site earlier
    for secret in (shape.ldap.passwords["sync"], shape.service):
        assert secret not in res.stdout and secret not in res.stderr


def test_the_sync_follows_membership_disabling_and_removal(shape: Shape):
    """Three users signed in through the executor's site; in the directory, one leaves the
    admin group, one is disabled, one is deleted. One sync (what the directory_sync job
    runs) takes all three roles and their refresh tokens; alice, untouched, keeps hers."""
    sessions = {u: shape.login("exec", u)["session"] for u in ("alice", "erin", "bob", "gina")}
    assert [shape.directory_role(u) for u in ("alice", "erin", "bob", "gina")] == [
        "admin",
        "admin",
        "operator",
        "operator",
    ]
    ldap = shape.ldap
    ldap.modify(
        f"dn: {ldap.groups['admins']}\nchangetype: modify\ndelete: member\nmember: {ldap.user_dn('erin')}\n"
    )
    if shape.shape == "freeipa":
        ldap.modify(
            f"dn: {ldap.user_dn('bob')}\nchangetype: modify\nreplace: nsAccountLock\nnsAccountLock: TRUE\n"
        )
    else:
        ldap.modify(
            f"dn: {ldap.user_dn('bob')}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n"
        )
    ldap.delete_entry(ldap.user_dn("gina"))
    assert shape.agent is not None
    counts = shape.agent.sync_once()
    assert counts["roles_removed"] >= 3 and counts["sessions_revoked"] >= 3, counts
    assert [shape.directory_role(u) for u in ("erin", "bob", "gina")] == [None, None, None]
    assert shape.directory_role("alice") == "admin"
    assert shape.role_of(sessions["alice"]) == "admin"
    for u in ("erin", "bob", "gina"):
        assert shape.role_of(sessions[u]) is None, u
        r = httpx.post(
            f"{shape.url}/auth/v1/token?grant_type=refresh_token",
            headers={"apikey": shape.anon},
            json={"refresh_token": sessions[u]["refresh_token"]},
        )
        assert r.status_code >= 400, (u, r.text)
    synced = shape.q(
        "select count(*) from public.audit_log where action = 'idm.sync' and row_id = %s",
        shape.sites["exec"],
    )[0][0]
    assert synced >= 1, "the sync is audited"
    # and the next sign-ins say why
    assert shape.refused("exec", "erin").code == "no_mapped_group"
    assert shape.refused("direct", "bob").code == "account_disabled"
    assert shape.ldap.passwords["bob"] not in shape.log.getvalue()
    assert shape.ldap.passwords["sync"] not in shape.log.getvalue()
    gone = shape.refused("exec", "gina")  # the entry is gone
    assert (gone.status, gone.code) == (401, "invalid_credentials"), gone
