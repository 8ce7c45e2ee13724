"""Hostile review of the security (#12) and identity (#17) work: a signed-in operator, a
viewer and an anon-key holder calling REST, RPCs, functions and Realtime directly.

Each test is one attack. Holes fixed in the same review pass; holes left open are
``xfail(strict=True)`` with the finding in the reason while open, so they fail loudly once fixed
(then drop the marker). The executor-side parser differential is in
tests/unit/test_binding_parser_differential.py.
"""

from __future__ import annotations

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
