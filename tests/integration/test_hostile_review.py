"""Hostile review of the security (#12) and identity (#17) work: a signed-in operator, a
viewer and an anon-key holder calling REST, RPCs, functions and Realtime directly.

Each test is one attack. Holes fixed in the same review pass; holes left open are
``xfail(strict=True)`` with the finding in the reason while open, so they fail loudly once fixed
(then drop the marker). The executor-side parser differential is in
tests/unit/test_binding_parser_differential.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg2
import pytest

from console.identity import break_glass_login, provision_breakglass
from devstack.cli import add_user


class Api:
    def __init__(self, env: dict[str, str], db_url: str, stack: Any) -> None:
        self.url, self.anon, self.db_url = env["SUPABASE_URL"], env["SUPABASE_ANON_KEY"], db_url
        self.service = env["SUPABASE_SERVICE_ROLE_KEY"]
        self.tag = uuid.uuid4().hex[:8]
        self.tokens: dict[str, str] = {}
        for role in ("viewer", "operator", "admin"):
            email, pw = f"hostile-{role}-{self.tag}@x.test", f"hostile-{role}-pw-{self.tag}"
            add_user(stack, email, role, pw)
            r = httpx.post(
                f"{self.url}/auth/v1/token?grant_type=password",
                headers={"apikey": self.anon},
                json={"email": email, "password": pw},
            )
            r.raise_for_status()
            self.tokens[role] = r.json()["access_token"]

    def q(self, sql: str, *args: Any) -> list[tuple]:
        con = psycopg2.connect(self.db_url)
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute(sql, args or None)
                return cur.fetchall() if cur.description else []
        finally:
            con.close()

    def rest(self, role: str, method: str, path: str, **kw: Any) -> httpx.Response:
        token = self.tokens.get(role, self.anon)
        headers = {"apikey": self.anon, "Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return httpx.request(method, f"{self.url}/rest/v1/{path}", headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def api(stack, supabase_env, db_url) -> Api:
    return Api(supabase_env, db_url, stack)


def _credential_set(api: Api) -> tuple[str, str]:
    site = api.q(
        "insert into public.sites (name) values (%s) returning id",
        f"hostile-{api.tag}-{uuid.uuid4().hex[:4]}",
    )[0][0]
    cred = api.q(
        "insert into public.credential_sets (site_id, name, kind, username, endpoints) "
        "values (%s, 'idrac-admin', 'idrac', 'root', "
        '\'[{"scheme": "https", "host": "10.1.2.7", "port": 443, "tls": {}}]\') returning id',
        site,
    )[0][0]
    api.q(
        "insert into public.credential_envelopes (credential_set_id, key_id, sealed_secret) "
        "values (%s, 'k-admin', 'admin-sealed-envelope-ciphertext') returning key_id",
        cred,
    )
    return str(site), str(cred)


# --- an operator replaces an admin-sealed credential ---------------------------------------------------
def test_an_operator_cannot_replace_the_envelope_of_a_sealed_credential(api: Api):
    """The envelope carries the secret and the endpoint list its sealer chose. Anyone can seal
    to the executor's public key, so an operator who may write envelopes (or the username they
    were sealed for) swaps the admin's credential for one of their own, with their own endpoint
    list, behind the admin's name and the admin's display copy of the endpoints. Sealing is an
    admin action: the envelopes are the only copy of the secret, and only admins write them."""
    _, cred = _credential_set(api)
    state_sql = (
        "select c.username, c.endpoints, array_agg(e.key_id || '=' || e.sealed_secret order by e.key_id) "
        "from public.credential_sets c left join public.credential_envelopes e on e.credential_set_id = c.id "
        "where c.id = %s group by c.id"
    )
    before = api.q(state_sql, cred)
    assert before[0][2] == ["k-admin=admin-sealed-envelope-ciphertext"]
    r = api.rest(
        "operator",
        "PATCH",
        f"credential_sets?id=eq.{cred}",
        json={"username": "operator-account"},
        headers={"Prefer": "return=minimal"},
    )
    assert r.status_code == 403 and r.json()["code"] == "42501", (r.status_code, r.text)
    assert "only an admin" in r.json()["message"], r.text
    own = {
        "credential_set_id": cred,
        "key_id": "k-operator",
        "sealed_secret": "operator-sealed-envelope-of-theirs",
    }
    for method, path, body in (
        ("POST", "credential_envelopes", own),
        ("POST", "credential_envelopes", {**own, "key_id": "k-admin"}),
        (
            "PATCH",
            f"credential_envelopes?credential_set_id=eq.{cred}",
            {"sealed_secret": own["sealed_secret"]},
        ),
        ("DELETE", f"credential_envelopes?credential_set_id=eq.{cred}", None),
    ):
        r = api.rest("operator", method, path, json=body, headers={"Prefer": "return=minimal"})
        # refused outright (403), or a delete that RLS lets reach no row
        assert r.status_code == 403 or (method == "DELETE" and r.status_code == 204), (
            method,
            r.status_code,
            r.text,
        )
    assert api.q(state_sql, cred) == before
    # operators still name sets (the access matrix's update cell), and insert new ones
    r = api.rest("operator", "PATCH", f"credential_sets?id=eq.{cred}", json={"name": f"renamed-{api.tag}"})
    assert r.status_code == 204, r.text
    # an admin may (encrypt-credentials reseal writes these as the admin)
    r = api.rest("admin", "PATCH", f"credential_sets?id=eq.{cred}", json={"username": "root2"})
    assert r.status_code == 204, r.text
    r = api.rest(
        "admin",
        "POST",
        "credential_envelopes",
        json={**own, "key_id": "k-admin2", "sealed_secret": "admin-resealed-envelope-ciphertext"},
        headers={"Prefer": "return=minimal"},
    )
    assert r.status_code == 201, r.text


# --- privileges the platform's defaults hand out ----------------------------------------------------------
def test_api_roles_hold_no_privilege_the_policy_does_not_grant(api: Api):
    """Tables created after the access migration get the platform's default privileges (ALL
    to anon and authenticated) unless their migration revokes them: replication_runs kept
    TRUNCATE (RLS does not apply to it), TRIGGER, REFERENCES, INSERT and UPDATE for anon,
    and the bigserial sequences of later tables stayed usable by both API roles."""
    loose = api.q("""
        select c.relname, r.role, p.priv
          from pg_class c join pg_namespace n on n.oid = c.relnamespace,
               (values ('anon'), ('authenticated')) r(role),
               (values ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'), ('TRIGGER'), ('REFERENCES')) p(priv)
         where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm')
           and has_table_privilege(r.role, c.oid, p.priv)
           and (r.role = 'anon' or p.priv in ('TRUNCATE', 'TRIGGER', 'REFERENCES'))
         order by 1, 2, 3""")
    assert loose == [], loose
    seqs = api.q("""
        select c.relname, r.role from pg_class c join pg_namespace n on n.oid = c.relnamespace,
               (values ('anon'), ('authenticated')) r(role)
         where n.nspname = 'public' and c.relkind = 'S'
           and (has_sequence_privilege(r.role, c.oid, 'USAGE') or has_sequence_privilege(r.role, c.oid, 'UPDATE'))
         order by 1, 2""")
    assert seqs == [], seqs


# --- embedding: RLS and column grants hold through select=*,rel(*) ----------------------------------------
def test_embedding_reaches_no_row_or_column_the_caller_cannot_select(api: Api):
    site, cred = _credential_set(api)
    api.q(
        "insert into public.servers (site_id, name, idrac_address, credential_set_id) values (%s, %s, '10.1.2.7', %s)",
        site,
        f"srv-{api.tag}",
        cred,
    )
    # the ciphertext no role may select, however it is reached
    for role in ("viewer", "operator", "admin"):
        for path in (
            f"servers?select=id,credential_sets(*,credential_envelopes(*))&site_id=eq.{site}",
            f"servers?select=id,credential_sets(credential_envelopes(sealed_secret))&site_id=eq.{site}",
            f"credential_sets?select=id,...credential_envelopes(sealed_secret)&site_id=eq.{site}",
            "credential_sets?select=id,credential_envelopes!inner()&credential_envelopes.sealed_secret=like.admin*",
            f"sites?select=id,credential_sets(id,credential_envelopes(sealed_secret))&id=eq.{site}",
        ):
            r = api.rest(role, "GET", path)
            assert r.status_code in (400, 403) and "admin-sealed" not in r.text, (
                role,
                path,
                r.status_code,
                r.text,
            )
            r = api.rest(role, "GET", path, headers={"Accept": "text/csv"})
            assert r.status_code in (400, 403) and "admin-sealed" not in r.text, (
                role,
                path,
                r.status_code,
                r.text,
            )
    # rows RLS hides stay hidden when embedded: a viewer sees the server, not its credential set
    r = api.rest("viewer", "GET", f"servers?select=id,credential_sets(id,name,username)&site_id=eq.{site}")
    assert r.status_code == 200 and r.json() and all(s["credential_sets"] is None for s in r.json()), r.text
    r = api.rest("viewer", "GET", f"servers?select=id,credential_sets!inner(id)&site_id=eq.{site}")
    assert r.status_code == 200 and r.json() == [], r.text
    r = api.rest("viewer", "GET", f"sites?select=id,credential_sets(id)&id=eq.{site}")
    assert r.status_code == 200 and r.json() == [{"id": site, "credential_sets": []}], r.text
    # and so do the break-glass hashes, even for admins
    r = api.rest("admin", "GET", "breakglass_sessions?select=id,breakglass_accounts(secret_hash)")
    assert r.status_code == 403, r.text


# --- break-glass: the lockout holds for the guessing client only -----------------------------------------
def _guess_from(api: Api, address: str, account: str, secret: str) -> int:
    """One break-glass sign-in from another loopback address (the gateway records the peer)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=30) as c:
        r = c.post(
            f"{api.url}/functions/v1/break-glass",
            headers={"apikey": api.anon, "Authorization": f"Bearer {api.anon}"},
            json={
                "action": "sign_in",
                "account": account,
                "secret": secret,
                "reason": "an outsider guessing secrets",
            },
        )
        return r.status_code


def test_an_outsider_cannot_lock_the_holder_out_of_break_glass(api: Api):
    """Was open: five wrong secrets from anywhere locked the account for everyone, and a 423
    only for existing names enumerated them. Now the count is per (name, client address)."""
    name = f"bg-hostile-{api.tag}"
    secret = provision_breakglass(api.url, api.service, name, max_session_s=60)
    codes = [_guess_from(api, "127.0.0.2", name, "wrong-" + secret) for _ in range(7)]
    assert codes == [401] * 4 + [423] * 3, codes  # the guesser locks itself out
    unknown = [_guess_from(api, "127.0.0.2", f"no-such-{api.tag}", "wrong") for _ in range(7)]
    assert unknown == codes  # an unknown name answers the same: no enumeration
    # the holder, during the outage, from another address
    res = break_glass_login(api.url, api.anon, name, secret, "directory down, restoring access")
    assert res["role"] == "admin"
    # and the guesser stays locked out, even with the right secret
    assert _guess_from(api, "127.0.0.2", name, secret) == 423


def test_a_forged_forwarded_for_does_not_reset_the_break_glass_count(api: Api):
    """The per-address count is keyed on the address the gateway appends (the last
    X-Forwarded-For entry), so a guesser who sends a new X-Forwarded-For / X-Real-IP with each
    try is still one address: locked out after the same four wrong secrets."""
    name = f"bg-xff-{api.tag}"
    secret = provision_breakglass(api.url, api.service, name, max_session_s=60)
    codes = []
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=30) as c:
        for i in range(7):
            r = c.post(
                f"{api.url}/functions/v1/break-glass",
                headers={
                    "apikey": api.anon,
                    "Authorization": f"Bearer {api.anon}",
                    "X-Forwarded-For": f"198.51.100.{i}",
                    "X-Real-IP": f"203.0.113.{i}",
                },
                json={
                    "action": "sign_in",
                    "account": name,
                    "secret": "wrong-" + secret,
                    "reason": "rotating XFF",
                },
            )
            codes.append(r.status_code)
    assert codes == [401] * 4 + [423] * 3, codes


# --- today's additions: vm_operation, the directory group mapping, schedules -------------------------------
def _fn(api: Api, role: str, name: str, body: dict[str, Any]) -> httpx.Response:
    token = api.tokens.get(role, api.anon)
    return httpx.post(
        f"{api.url}/functions/v1/{name}",
        headers={"apikey": api.anon, "Authorization": f"Bearer {token}"},
        json=body,
        timeout=60,
    )


def _vsphere_site(api: Api) -> dict[str, str]:
    """A site with a vCenter, a cluster, a host in it and a VM on the host; a server."""
    w: dict[str, str] = {}
    w["site"] = str(
        api.q(
            "insert into public.sites (name) values (%s) returning id", f"hostile-vs-{uuid.uuid4().hex[:8]}"
        )[0][0]
    )
    w["vcenter"] = str(
        api.q(
            "insert into public.vcenters (site_id, name, address) values (%s, 'vc', 'https://192.0.2.11') returning id",
            w["site"],
        )[0][0]
    )
    w["cluster"] = str(
        api.q(
            "insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, 'cl', 'domain-c1') returning id",
            w["vcenter"],
            w["site"],
        )[0][0]
    )
    w["host"] = str(
        api.q(
            "insert into public.esxi_hosts (vcenter_id, cluster_id, name, moref) values (%s, %s, 'h1', 'host-1') "
            "returning id",
            w["vcenter"],
            w["cluster"],
        )[0][0]
    )
    w["vm"] = str(
        api.q(
            "insert into public.vms (vcenter_id, host_id, name, moref) values (%s, %s, 'vm-a', 'vm-1') returning id",
            w["vcenter"],
            w["host"],
        )[0][0]
    )
    w["server"] = str(
        api.q(
            "insert into public.servers (site_id, name, idrac_address) values (%s, 'srv', '10.1.2.9') returning id",
            w["site"],
        )[0][0]
    )
    return w


def test_vm_operation_takes_vm_ids_only_and_from_operators_only(api: Api):
    """create-job loads a vm_operation's targets from vms alone: the id of a host, server,
    vCenter or cluster of the same site is not a VM (target_not_found), a viewer is refused
    even a dry run, and nothing reaches public.jobs directly or moves a VM's row."""
    w = _vsphere_site(api)

    def body(ids: list[str]) -> dict[str, Any]:
        return {
            "type": "vm_operation",
            "site_id": w["site"],
            "params": {"vm_ids": ids, "action": "power_off"},
        }

    for kind in ("host", "server", "vcenter", "cluster"):
        r = _fn(api, "operator", "create-job", {**body([w[kind]]), "dry_run": True})
        assert r.status_code == 422 and r.json()["code"] == "target_not_found", (kind, r.status_code, r.text)
        assert r.json()["details"]["missing"] == [{"kind": "vm", "id": w[kind]}], r.text
    r = _fn(api, "viewer", "create-job", {**body([w["vm"]]), "dry_run": True})
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    r = _fn(api, "anon", "create-job", body([w["vm"]]))
    assert r.status_code == 401, r.text
    r = api.rest("operator", "POST", "jobs", json=body([w["vm"]]))
    assert r.status_code == 403, r.text
    # the rows the handler acts on (moref, vCenter) are the admins' and the sync's
    before = api.q("select moref, vcenter_id from public.vms where id = %s", w["vm"])
    for patch in ({"moref": "vm-2"}, {"vcenter_id": str(uuid.uuid4())}):
        r = api.rest(
            "operator", "PATCH", f"vms?id=eq.{w['vm']}", json=patch, headers={"Prefer": "return=minimal"}
        )
        assert r.status_code in (204, 403), r.text
    r = api.rest(
        "operator", "POST", "vms", json={"vcenter_id": w["vcenter"], "name": "evil", "moref": "vm-3"}
    )
    assert r.status_code == 403, r.text
    assert api.q("select moref, vcenter_id from public.vms where id = %s", w["vm"]) == before
    assert api.q("select count(*) from public.jobs where site_id = %s", w["site"]) == [(0,)]


def test_the_directory_group_mapping_is_the_admins_alone(api: Api):
    """idm_seed_group_roles (policies/identity.yaml's defaults) and directory_group_roles: an
    operator or viewer who maps a group of theirs to admin would own the next sign-in. Both
    are refused with nothing written; the helpers behind them are no RPC; an admin seeds."""
    site = str(
        api.q(
            "insert into public.sites (name) values (%s) returning id", f"hostile-dgr-{uuid.uuid4().hex[:8]}"
        )[0][0]
    )
    api.q("insert into public.directory_configs (site_id, mode) values (%s, 'executor')", site)
    seed = {"p_site_id": site, "p_preset": "openldap", "p_suffix": "dc=example,dc=org"}
    for role in ("viewer", "operator", "anon"):
        r = api.rest(role, "POST", "rpc/idm_seed_group_roles", json=seed)
        assert r.status_code in (401, 403) and r.json()["code"] == "42501", (role, r.text)
        r = api.rest(
            role,
            "POST",
            "directory_group_roles",
            json={"site_id": site, "group_dn": "cn=mine,dc=example,dc=org", "role": "admin"},
        )
        assert r.status_code in (401, 403), (role, r.text)
        for fn, args in (
            ("idm_default_group_roles", {}),
            ("idm_begin_login", {"p_site_id": site, "p_client": "198.51.100.7"}),
        ):
            r = api.rest(role, "POST", f"rpc/{fn}", json=args)
            assert r.status_code in (401, 403) and "permission denied" in r.json()["message"], (
                role,
                fn,
                r.text,
            )
        r = api.rest(
            role, "POST", "rpc/rekey_executor", json={"p_executor_id": str(uuid.uuid4()), "p_reason": "x"}
        )
        assert r.status_code in (401, 403), (role, r.text)
    assert api.q("select count(*) from public.directory_group_roles where site_id = %s", site) == [(0,)]
    r = api.rest("admin", "POST", "rpc/idm_seed_group_roles", json=seed)
    assert r.status_code == 200 and len(r.json()) == 4, r.text
    # an operator sees none of the mapping, and cannot change the admin's rows
    assert api.rest("operator", "GET", f"directory_group_roles?site_id=eq.{site}").json() == []
    r = api.rest(
        "operator",
        "PATCH",
        f"directory_group_roles?site_id=eq.{site}",
        json={"role": "admin"},
        headers={"Prefer": "return=minimal"},
    )
    assert r.status_code in (204, 403), r.text
    assert api.q(
        "select role::text, count(*) from public.directory_group_roles where site_id = %s group by 1 order by 1",
        site,
    ) == [("admin", 1), ("approver", 1), ("operator", 1), ("viewer", 1)]


def _bad_schedules(api: Api) -> tuple[str, list[tuple[dict[str, Any], str]]]:
    """A site and, per attack, a schedule body an operator POSTs by REST with the code
    create-job refuses its params with."""
    w = _vsphere_site(api)
    other = _vsphere_site(api)
    tag = uuid.uuid4().hex[:6]
    base = {"site_id": w["site"], "recurrence": "@daily"}
    return w["site"], [
        (
            {
                **base,
                "name": f"bad-{tag}",
                "job_type": "vm_operation",
                "params": {"vm_ids": ["x"], "action": "rm"},
            },
            "invalid_params",
        ),
        (
            {
                **base,
                "name": f"other-{tag}",
                "job_type": "vm_operation",
                "params": {"vm_ids": [other["vm"]], "action": "power_off"},
            },
            "site_mismatch",
        ),
        (
            {
                **base,
                "name": f"proto-{tag}",
                "job_type": "vcenter_sync",
                "params": {"__proto__": {"polluted": 1}},
            },
            "forbidden_key",
        ),
    ]


def test_a_schedule_whose_params_create_job_refuses_is_refused_when_stored(api: Api):
    """A schedule's template is written only through the schedules function (action save),
    which runs create-job's request checks against the schedule's site: each attack gets
    create-job's code and nothing is written. REST takes no insert, and no update of a
    stored schedule's job_type, params or site_id; a valid save makes the caller its owner."""
    site, cases = _bad_schedules(api)
    other = _vsphere_site(api)["site"]
    save = lambda body: httpx.post(  # noqa: E731
        f"{api.url}/functions/v1/schedules",
        headers={"apikey": api.anon, "Authorization": f"Bearer {api.tokens['operator']}"},
        json={"action": "save", **body},
        timeout=60,
    )
    for body, code in cases:
        r = api.rest("operator", "POST", "job_schedules", json=body, headers={"Prefer": "return=minimal"})
        assert r.status_code in (401, 403), (code, r.status_code, r.text)
        r = save(body)
        assert r.status_code in (400, 422) and r.json()["code"] == code, (code, r.status_code, r.text)
    names = [b["name"] for b, _ in cases]
    assert api.q("select count(*) from public.job_schedules where name = any(%s)", names) == [(0,)]

    # a template create-job accepts is saved, owned by the caller
    vcenter = str(api.q("select id from public.vcenters where site_id = %s", site)[0][0])
    r = save(
        {
            "site_id": site,
            "name": f"ok-{api.tag}",
            "job_type": "vcenter_sync",
            "recurrence": "@daily",
            "params": {"vcenter_id": vcenter},
        }
    )
    assert r.status_code == 201, r.text
    good = r.json()["schedule"]
    operator = api.q("select id from auth.users where email = %s", f"hostile-operator-{api.tag}@x.test")[0][0]
    assert str(good["owner_id"]) == str(operator)
    # the fields the save left out took the table's column defaults (the function's copy of them)
    defaults = api.q(
        "insert into public.job_schedules (site_id, name, job_type, recurrence) "
        "values (%s, %s, 'vcenter_sync', '@daily') returning priority, description, timezone, missed_policy, "
        "enabled, window_series_id",
        site,
        f"defaults-{api.tag}",
    )
    keys = ("priority", "description", "timezone", "missed_policy", "enabled", "window_series_id")
    assert defaults == [tuple(good[k] for k in keys)], (defaults, good)
    # REST cannot rewrite its job input, in any of the three columns
    for change in (
        {"params": {"vcenter_id": "not-a-uuid"}},
        {"job_type": "vm_operation"},
        {"site_id": other},
    ):
        r = api.rest(
            "operator",
            "PATCH",
            f"job_schedules?id=eq.{good['id']}",
            json=change,
            headers={"Prefer": "return=minimal"},
        )
        assert r.status_code in (401, 403), (change, r.status_code, r.text)
    # nor can a save move it to another site's target, or rewrite another site's schedule
    r = save(
        {
            "id": good["id"],
            "site_id": site,
            "name": good["name"],
            "job_type": "vcenter_sync",
            "recurrence": "@daily",
            "params": {
                "vcenter_id": str(api.q("select id from public.vcenters where site_id = %s", other)[0][0])
            },
        }
    )
    assert r.status_code == 422 and r.json()["code"] == "site_mismatch", r.text
    r = save(
        {
            "id": good["id"],
            "site_id": other,
            "name": good["name"],
            "job_type": "vcenter_sync",
            "recurrence": "@daily",
            "params": {"vcenter_id": vcenter},
        }
    )
    assert r.status_code == 404 and r.json()["code"] == "schedule_not_found", r.text
    assert api.q(
        "select site_id::text, job_type::text, params ->> 'vcenter_id' from public.job_schedules where id = %s",
        good["id"],
    ) == [(site, "vcenter_sync", vcenter)]


def test_a_stored_schedule_with_refused_params_fires_no_job_and_says_why(api: Api):
    """However such a schedule got stored, each occurrence runs create-job's checks as its
    owner: recorded failed with create-job's code, no job, and the other schedules still fire
    (a refused schedule does not poison the fire call)."""
    site, cases = _bad_schedules(api)
    owner = api.q("select id from auth.users where email = %s", f"hostile-operator-{api.tag}@x.test")[0][0]
    for body, _ in cases:
        api.q(
            "insert into public.job_schedules (site_id, name, job_type, params, recurrence, owner_id) "
            "values (%s, %s, %s, %s::jsonb, %s, %s)",
            site,
            body["name"],
            body["job_type"],
            json.dumps(body["params"]),
            body["recurrence"],
            owner,
        )
    names = [b["name"] for b, _ in cases]
    api.q(
        "update public.job_schedules set next_run_at = now() - interval '1 minute' where site_id = %s and name = any(%s)",
        site,
        names,
    )
    r = httpx.post(
        f"{api.url}/functions/v1/schedules",
        headers={"apikey": api.anon, "Authorization": f"Bearer {api.service}"},
        json={"action": "fire", "site_id": site},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    runs = api.q(
        "select s.name, r.status, r.code from public.schedule_runs r join public.job_schedules s on s.id = r.schedule_id "
        "where s.site_id = %s and s.name = any(%s) order by s.name",
        site,
        names,
    )
    assert runs == sorted((b["name"], "failed", code) for b, code in cases), runs
    assert api.q("select count(*) from public.jobs where site_id = %s", site) == [(0,)]


def test_the_envelopes_ciphertext_stays_out_of_the_audit_log(api: Api):
    """The envelopes are the only copy of a secret (credentials stored only as envelopes): the
    audit entry of a seal names the set and the key, never the ciphertext, for every role
    that reads the log, through REST or the embedded rows."""
    _, cred = _credential_set(api)
    needle = f"admin-sealed-{uuid.uuid4().hex}"
    r = api.rest(
        "admin",
        "POST",
        "credential_envelopes",
        json={"credential_set_id": cred, "key_id": "k-audit", "sealed_secret": needle},
        headers={"Prefer": "return=minimal"},
    )
    assert r.status_code == 201, r.text
    r = api.rest("admin", "GET", "audit_log?table_name=eq.credential_envelopes&order=id.desc&limit=20")
    assert r.status_code == 200, r.text
    entries = [e for e in r.json() if (e.get("new_data") or {}).get("credential_set_id") == cred]
    assert [e["new_data"]["key_id"] for e in entries] == ["k-audit", "k-admin"], r.text
    assert needle not in r.text and "admin-sealed-envelope" not in r.text
    assert api.q("select count(*) from public.audit_log where new_data::text like %s", f"%{needle}%") == [
        (0,)
    ]
