"""The application roles are declared once: the database's ``public.app_role`` enum, least
to most privileged. Every other place that names them - the access policy, the console,
the directory mapping (``directory_group_roles.role`` is of that type) - must agree with
it in names and order, so that "the highest mapped role wins" means the same everywhere."""

from __future__ import annotations

import psycopg2

from console.models.identity_admin import APP_ROLES
from console.models.monitor import ROLES as MONITOR_ROLES
from console.roles import ROLES
from console.screens import ROLES as SCREEN_ROLES
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
    assert tuple(ROLES) == tuple(enum), "console/roles.py ROLES"
    # the console's one copy is the one every screen uses
    assert SCREEN_ROLES is ROLES and MONITOR_ROLES is ROLES and APP_ROLES is ROLES
    assert tuple(r for r in load_access().roles if r != "anon") == tuple(enum), "policies/access.yaml roles"
    assert mapping_type == "app_role"
