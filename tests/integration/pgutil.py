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
