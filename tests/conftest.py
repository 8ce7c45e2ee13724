"""Shared fixtures: one local stack per pytest process.

`make test` starts a stack and exports its env (RACKPILOT_TEST_STACK=shared), and runs
pytest in parallel processes (pytest-xdist, RACKPILOT_TEST_WORKERS, a test file per
process at a time). The first process (or the only one) uses that stack; every other
process starts its own on free ports in a temporary folder, so no two tests that run at
the same time share a database, a gateway or an executor's job queue. Run alone
(`pytest tests/...`), the session starts its own stack in the same way and destroys it
afterwards.
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


def _uses_shared_stack() -> bool:
    """The stack `make test` started serves this process: it is the only pytest process,
    or the first of pytest-xdist's workers (gw0)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return os.environ.get("RACKPILOT_TEST_STACK") == "shared" and worker in (None, "gw0")


def _point_environment_at(st: Stack) -> None:
    """This process's environment names its own stack, as `make test` exports the shared
    one's: a test that hands os.environ to a child (a Deno client, an executor, Jupyter)
    must not give it another process's stack."""
    os.environ.update(
        {
            "RACKPILOT_STACK_DIR": str(st.cfg.state_dir),
            "RACKPILOT_API_PORT": str(st.cfg.api_port),
            "RACKPILOT_DB_PORT": str(st.cfg.db_port),
            **st.env(),
        }
    )
    os.environ.pop("RACKPILOT_TEST_STACK", None)


def _keep_gateway_log(st: Stack) -> None:
    """A worker's stack goes with its session: its gateway log is kept in the shared
    stack's logs folder, where scripts/test.sh looks for REST connection faults."""
    shared = os.environ.get("RACKPILOT_SHARED_STACK_DIR")
    log = st.cfg.state_dir / "logs" / "gateway.log"
    if shared and log.exists() and (Path(shared) / "logs").is_dir():
        worker = os.environ.get("PYTEST_XDIST_WORKER", "pytest")
        shutil.copyfile(log, Path(shared) / "logs" / f"gateway-{worker}.log")


@pytest.fixture(scope="session")
def stack() -> Stack:
    if _uses_shared_stack():
        st = Stack(StackConfig.from_env())
        st.up()
        old = _set_begin_limit(st, TEST_BEGIN_PER_CLIENT_PER_MIN)
        try:
            yield st
        finally:
            _set_begin_limit(st, old)  # the stack outlives the session
        return
    if os.environ.get("RACKPILOT_TEST_STACK") == "shared":
        os.environ["RACKPILOT_SHARED_STACK_DIR"] = os.environ["RACKPILOT_STACK_DIR"]
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-pytest-"))
    os.chmod(tmp, 0o755)
    st = Stack(ephemeral_config(tmp))
    _point_environment_at(st)
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
        _keep_gateway_log(st)
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
