"""Users of the local stack: made straight in its database (``rackpilot-dev user add``, the
demo, and the tests that sign in as a role)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.stack.stack import Stack


def add_user(st: Stack, email: str, role: str, password: str) -> str:
    """Create (or update) a user with a bcrypt password and grant an app role."""
    import psycopg2

    conn = psycopg2.connect(st.pg.dsn())
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                insert into auth.users (email, encrypted_password, email_confirmed_at, raw_app_meta_data)
                values (lower(%s), extensions.crypt(%s, extensions.gen_salt('bf', 10)), now(),
                        '{"provider":"email","providers":["email"]}')
                on conflict (lower(email)) where email is not null
                do update set encrypted_password = excluded.encrypted_password, updated_at = now()
                returning id
                """,
                (email, password),
            )
            uid = cur.fetchone()[0]
            cur.execute("select to_regclass('public.user_roles') is not null")
            if cur.fetchone()[0]:
                cur.execute(
                    "insert into public.user_roles (user_id, role) values (%s, %s) "
                    "on conflict (user_id) do update set role = excluded.role",
                    (uid, role),
                )
        return str(uid)
    finally:
        conn.close()
