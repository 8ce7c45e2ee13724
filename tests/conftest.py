"""Shared fixtures: one local stack per test run.

`make test` starts a stack and exports its env (RACKPILOT_TEST_STACK=shared), and every
test uses that one. Run alone (`pytest tests/...`), the session starts its own stack on
free ports in a temporary folder and destroys it afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest

from devstack.stack.config import StackConfig
from devstack.stack.stack import Stack, ephemeral_config

# Every test user signs in from 127.0.0.1: one client address to every per-address limit.
# The stack's config raises Auth's (ephemeral_config, scripts/test.sh). idm-login's begin
# limit is a row of public.identity_policy (begin_per_client_per_min, 60 a minute), and
# the directory sign-ins of a full run pass 60 in a minute (test_identity.py, then
# test_identity_shapes.py: the 61st was refused), so the session raises it.
# test_identity.py::test_begin_is_limited_per_client_address holds the limit itself.
TEST_BEGIN_PER_CLIENT_PER_MIN = 100_000


def _set_begin_limit(st: Stack, limit: int) -> int:
    """Set identity_policy.begin_per_client_per_min; the value it had."""
    with psycopg2.connect(st.pg.dsn()) as conn, conn.cursor() as cur:
        cur.execute("select begin_per_client_per_min from public.identity_policy")
        (old,) = cur.fetchone()
        cur.execute("update public.identity_policy set begin_per_client_per_min = %s", (limit,))
    conn.close()
    return old


@pytest.fixture(scope="session")
def stack() -> Stack:
    if os.environ.get("RACKPILOT_TEST_STACK") == "shared":
        st = Stack(StackConfig.from_env())
        st.up()
        old = _set_begin_limit(st, TEST_BEGIN_PER_CLIENT_PER_MIN)
        try:
            yield st
        finally:
            _set_begin_limit(st, old)  # the stack outlives the session
        return
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-pytest-"))
    os.chmod(tmp, 0o755)
    st = Stack(ephemeral_config(tmp))
    st.up()
    # the session's own stack goes with it, even when pytest is killed: a watchdog stops
    # the gateway and Postgres (a killed run left both running before)
    owner = st.hold()
    try:
        _set_begin_limit(st, TEST_BEGIN_PER_CLIENT_PER_MIN)
        yield st
    finally:
        st.destroy()
        owner.release()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def supabase_env(stack: Stack) -> dict[str, str]:
    return stack.env()


@pytest.fixture(scope="session")
def api_url(supabase_env) -> str:
    return supabase_env["SUPABASE_URL"]


@pytest.fixture(scope="session")
def anon_key(supabase_env) -> str:
    return supabase_env["SUPABASE_ANON_KEY"]


@pytest.fixture(scope="session")
def service_key(supabase_env) -> str:
    return supabase_env["SUPABASE_SERVICE_ROLE_KEY"]


@pytest.fixture(scope="session")
def db_url(supabase_env) -> str:
    return supabase_env["SUPABASE_DB_URL"]
