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

import pytest

from devstack.stack.config import StackConfig
from devstack.stack.stack import Stack, ephemeral_config


@pytest.fixture(scope="session")
def stack() -> Stack:
    if os.environ.get("RACKPILOT_TEST_STACK") == "shared":
        st = Stack(StackConfig.from_env())
        st.up()
        yield st
        return
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-pytest-"))
    os.chmod(tmp, 0o755)
    st = Stack(ephemeral_config(tmp))
    st.up()
    try:
        yield st
    finally:
        st.destroy()
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
