"""Where a local stack keeps its state, and which loopback ports it uses.

Every option can be set from the environment so that several stacks (a developer's
and the test suite's, say) run side by side without sharing anything.

| variable | meaning | unit | default |
|---|---|---|---|
| ``RACKPILOT_STACK_DIR`` | state folder (Postgres cluster, secrets, logs) | path | ``<project>/.devstack`` |
| ``RACKPILOT_API_PORT`` | gateway port (loopback) | TCP port | ``54321`` |
| ``RACKPILOT_DB_PORT`` | Postgres port (loopback) | TCP port | ``54322`` |
| ``RACKPILOT_MAX_ROWS`` | overrides ``[api] max_rows`` of ``supabase/config.toml`` | rows | from config.toml |
| ``RACKPILOT_AUTH_SIGN_IN_LIMIT`` | password grants per client IP per 5 minutes; overrides ``[auth.rate_limit] sign_in_sign_ups`` | requests | from config.toml (30) |
| ``RACKPILOT_AUTH_REFRESH_LIMIT`` | refresh grants per client IP per 5 minutes; overrides ``[auth.rate_limit] token_refresh`` | requests | from config.toml (150) |
| ``RACKPILOT_DB_TX_END`` | PostgREST's ``db-tx-end``: ``commit``, ``commit-allow-override``, ``rollback`` or ``rollback-allow-override`` (the ``-allow-override`` ones honour ``Prefer: tx=``) | choice | ``commit`` |
| ``RACKPILOT_AUTH_FAILED_SIGN_IN_LIMIT`` | failed password grants per email address per 5 minutes before 429 | attempts | ``10`` |
| ``RACKPILOT_PROJECT_ROOT`` | repository whose ``supabase/`` (migrations, functions, config.toml) the stack serves | path | this checkout |
| ``RACKPILOT_REST_CONNECTIONS`` | Postgres connections of the ``/rest/v1`` pool, per gateway worker | count | ``16`` |
| ``RACKPILOT_PG_BIN`` | folder of the PostgreSQL 15 server binaries (``initdb``, ``pg_ctl``, ``postgres``) | path | ``/usr/lib/postgresql/15/bin`` |
| ``RACKPILOT_LOG_LEVEL`` | the gateway's log level (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``); the executor reads the same name for its own | level | ``WARNING`` |
| ``RACKPILOT_FUNCTIONS_DIR`` | set by the stack for its Deno router, not by hand: the ``supabase/functions`` folder it serves | path | set by the stack |
| ``RACKPILOT_FUNCTIONS_PORT`` | set by the stack for its Deno router, not by hand: the router's loopback port | TCP port | set by the stack |
| ``RACKPILOT_PROC_OWNER`` | set by the stack on the processes it starts, not by hand: ``<kind>:<state folder>``, so that ``dev down`` stops its own processes only (``devstack/proc.py``) | tag | set by the stack |

Test and benchmark stacks (:func:`devstack.stack.stack.ephemeral_config`, ``scripts/test.sh``)
raise the per-IP limits: every simulated user there signs in from 127.0.0.1. The
``RACKPILOT_*`` variables other parts of rackpilot read (console, lab, benchmarks, scripts)
are in ``docs/environment.md``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def load_supabase_config(root: Path = PROJECT_ROOT) -> dict:
    path = root / "supabase" / "config.toml"
    with path.open("rb") as fh:
        return tomllib.load(fh)


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    api_port: int = 54321
    db_port: int = 54322
    project_root: Path = PROJECT_ROOT
    sign_in_limit: int | None = None  # None: [auth.rate_limit] sign_in_sign_ups of config.toml
    refresh_limit: int | None = None  # None: [auth.rate_limit] token_refresh of config.toml
    failed_sign_in_limit: int = 10
    supabase: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env
        root = Path(env.get("RACKPILOT_PROJECT_ROOT", PROJECT_ROOT))
        state = Path(env.get("RACKPILOT_STACK_DIR", root / ".devstack")).resolve()
        return cls(
            state_dir=state,
            api_port=int(env.get("RACKPILOT_API_PORT", "54321")),
            db_port=int(env.get("RACKPILOT_DB_PORT", "54322")),
            project_root=root,
            sign_in_limit=int(env["RACKPILOT_AUTH_SIGN_IN_LIMIT"])
            if env.get("RACKPILOT_AUTH_SIGN_IN_LIMIT")
            else None,
            refresh_limit=int(env["RACKPILOT_AUTH_REFRESH_LIMIT"])
            if env.get("RACKPILOT_AUTH_REFRESH_LIMIT")
            else None,
            failed_sign_in_limit=int(env.get("RACKPILOT_AUTH_FAILED_SIGN_IN_LIMIT", "10")),
            supabase=load_supabase_config(root),
        )

    # paths ----------------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def gateway_pidfile(self) -> Path:
        return self.run_dir / "gateway.pid"

    # URLs ------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def exposed_schemas(self) -> list[str]:
        return list(self.supabase.get("api", {}).get("schemas", ["public"]))

    @property
    def extra_search_path(self) -> list[str]:
        return list(self.supabase.get("api", {}).get("extra_search_path", ["public", "extensions"]))

    @property
    def max_rows(self) -> int:
        override = os.environ.get("RACKPILOT_MAX_ROWS")
        if override:
            return int(override)
        return int(self.supabase.get("api", {}).get("max_rows", 1000))

    @property
    def jwt_expiry(self) -> int:
        return int(self.supabase.get("auth", {}).get("jwt_expiry", 3600))

    @property
    def refresh_token_reuse_interval(self) -> int:
        """Seconds a just-rotated refresh token may be presented again (GoTrue's default 10)."""
        return int(self.supabase.get("auth", {}).get("refresh_token_reuse_interval", 10))

    @property
    def auth_rate_limits(self) -> dict[str, int]:
        """Per client IP, per 5 minutes: password grants and refresh grants (requests)."""
        rl = self.supabase.get("auth", {}).get("rate_limit", {})
        return {
            "sign_in": self.sign_in_limit
            if self.sign_in_limit is not None
            else int(rl.get("sign_in_sign_ups", 30)),
            "refresh": self.refresh_limit
            if self.refresh_limit is not None
            else int(rl.get("token_refresh", 150)),
            "failed_sign_in": self.failed_sign_in_limit,
        }

    def function_verify_jwt(self, name: str) -> bool:
        fn = self.supabase.get("functions", {}).get(name, {})
        return bool(fn.get("verify_jwt", True))

    def to_env(self) -> dict[str, str]:
        """The variables that recreate this config in a child process."""
        return {
            "RACKPILOT_STACK_DIR": str(self.state_dir),
            "RACKPILOT_API_PORT": str(self.api_port),
            "RACKPILOT_DB_PORT": str(self.db_port),
            "RACKPILOT_PROJECT_ROOT": str(self.project_root),
            **(
                {"RACKPILOT_AUTH_SIGN_IN_LIMIT": str(self.sign_in_limit)}
                if self.sign_in_limit is not None
                else {}
            ),
            **(
                {"RACKPILOT_AUTH_REFRESH_LIMIT": str(self.refresh_limit)}
                if self.refresh_limit is not None
                else {}
            ),
            "RACKPILOT_AUTH_FAILED_SIGN_IN_LIMIT": str(self.failed_sign_in_limit),
        }
