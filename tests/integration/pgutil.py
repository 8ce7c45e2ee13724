"""Small helpers for tests that talk to the control-plane database directly (psycopg2)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras

DUMMY_KEY = "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----"

# A credential set and its one envelope, as encrypt-credentials stores them (the envelopes are the
# only copy of the secret), sealed to the key's executor of the site. Positional parameters:
# site_id, name, kind, username, key_id, envelope (the sealed JSON text); answers the set's id.
INSERT_SEALED_CREDENTIAL = """
with v (site_id, name, kind, username, key_id, sealed) as (
  values (%s::uuid, %s::text, %s::public.credential_kind, %s::text, %s::text, %s::text)),
c as (insert into public.credential_sets (site_id, name, kind, username)
      select site_id, name, kind, username from v returning id),
e as (insert into public.credential_envelopes (credential_set_id, executor_id, key_id, sealed_secret)
      select c.id, (select x.id from public.executors x where x.site_id = v.site_id and x.key_id = v.key_id
                     order by x.registered_at desc limit 1), v.key_id, v.sealed
        from c cross join v)
select id from c"""


def connect(db_url: str, autocommit: bool = True) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(db_url)
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def private_site(db_url: str, prefix: str) -> Iterator[str]:
    """A site of the test's own; everything created under it is removed afterwards so the
    shared stack stays as it was (jobs first: they restrict deletion of sites and executors)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("insert into public.sites (name) values (%s) returning id", (name,))
            site_id = cur.fetchone()[0]
        yield site_id
    finally:
        with conn.cursor() as cur:
            cur.execute("delete from public.maintenance_windows where site_id = %s", (site_id,))
            cur.execute("delete from public.jobs where site_id = %s", (site_id,))
            cur.execute("delete from public.executors where site_id = %s", (site_id,))
            cur.execute("delete from public.sites where id = %s", (site_id,))
        conn.close()


def register_executor(cur, site_id, name: str, key_id: str = "k1", job_types: list[str] | None = None) -> str:
    cur.execute(
        "select id from public.register_executor(%s, %s, %s, %s, '1.0', '{}'::jsonb, %s::public.job_type[])",
        (str(site_id), name, DUMMY_KEY, key_id, job_types),
    )
    return cur.fetchone()[0]


def act_as(cur, user_id: str | None) -> None:
    """Switch the transaction to the API role a JWT for user_id (or anon) would get."""
    if user_id is None:
        cur.execute("set local role anon")
        cur.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"role": "anon"}),))
    else:
        cur.execute("set local role authenticated")
        cur.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": str(user_id), "role": "authenticated"}),),
        )


def create_user(cur, role: str | None) -> str:
    """A throwaway auth user holding an application role (removed by deleting the user)."""
    cur.execute(
        "insert into auth.users (email) values (%s) returning id",
        (f"t-{uuid.uuid4().hex[:12]}@test.invalid",),
    )
    uid = cur.fetchone()[0]
    if role is not None:
        cur.execute("insert into public.user_roles (user_id, role) values (%s, %s)", (uid, role))
    return uid
