"""The application roles are declared once: the database's ``public.app_role`` enum, least
to most privileged. Every other place that names them - the access policy, the console,
the directory mapping (``directory_group_roles.role`` is of that type) - must agree with
it in names and order, so that "the highest mapped role wins" means the same everywhere."""

from __future__ import annotations

import psycopg2

from console.models.identity_admin import APP_ROLES
from console.screens import ROLES
from devstack.policies import load_access


def test_every_list_of_roles_is_the_app_role_enum(stack):
    with psycopg2.connect(stack.pg.dsn()) as conn, conn.cursor() as cur:
        cur.execute("select enum_range(null::public.app_role)::text[]")
        (enum,) = cur.fetchone()
        cur.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = 'public.directory_group_roles'::regclass and attname = 'role'"
        )
        (mapping_type,) = cur.fetchone()
    assert tuple(enum) == ("viewer", "operator", "approver", "admin")
    assert tuple(ROLES) == tuple(enum), "console/screens.py ROLES"
    assert tuple(APP_ROLES) == tuple(enum), "the identity screen's roles"
    assert tuple(r for r in load_access().roles if r != "anon") == tuple(enum), "policies/access.yaml roles"
    assert mapping_type == "app_role"
