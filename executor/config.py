"""Executor settings, read from ``RACKPILOT_*`` environment variables and an optional env file.

Each option is a field of ``ExecutorSettings`` below, and the field holds all there is to
know of it: its default, its unit, what it means (``description``) and its bounds. The
environment variable is ``RACKPILOT_`` + the upper-case field name (``poll_interval`` ->
``RACKPILOT_POLL_INTERVAL``). ``option_rows()`` turns the fields into the option table of
docs/executor.md (``python -m tests.integration.test_docs --write-options`` writes it, a
test fails when it is stale).

``python -m executor --verify-audit`` checks the control plane's audit chain against this
executor's anchors (see :mod:`executor.audit_anchor`).

``python -m executor --check-config`` validates all of this (and the key file's mode)
without contacting the control plane or starting anything.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonDict
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Lease lengths come from the safety_policies table (per job type); the shortest is 30 s.
# Two missed heartbeats must still fit in it, or one slow round trip would fence a job.
MIN_POLICY_LEASE_S = 30


# --- what a value of a setting can be (the validators below; preflight's checks) ------------------
def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a project URL (None when it can)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL such as https://<project>.supabase.co"
    path = parts.path.rstrip("/")
    if path or parts.query or parts.fragment:
        return (
            f"must be the project URL, without {path or '?' + parts.query} "
            f"(e.g. {parts.scheme}://{parts.netloc})"
        )
    return None


def key_role(key: str) -> str | None:
    """The role an API key carries: ``anon``, ``service_role``, ``authenticated``..., or None
    when it cannot be told offline (an opaque key)."""
    key = key.strip()
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    role = payload.get("role") if isinstance(payload, dict) else None
    return role if isinstance(role, str) else None


def key_problem(key: str) -> str | None:
    role = key_role(key)
    if role == "anon":
        return "is the anon key; the executor needs the service-role key (the project's API settings)"
    if role is not None and role != "service_role":
        return f"carries role {role!r} (a user's token?); the executor needs the service-role key"
    return None


def _doc(unit: str, default_text: str | None = None) -> JsonDict:
    """A field's unit for the option table, and how the table shows a default that is
    computed or absent (the default itself is shown otherwise)."""
    return {"unit": unit} if default_text is None else {"unit": unit, "default_text": default_text}


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RACKPILOT_", extra="ignore", env_file=None, validate_default=True
    )
    #: the env file these settings were read from (load_settings), so that settings of the
    #: same file read elsewhere (the directory_sync job's RACKPILOT_IDM_*) come from it too
    _env_file_path: Path | None = PrivateAttr(default=None)

    supabase_url: str = Field(
        description="control plane base URL (hosted, ``supabase start`` or the local stack)",
        json_schema_extra=_doc("URL"),
    )
    supabase_key: SecretStr = Field(
        description="service-role key; sent only to ``supabase_url``", json_schema_extra=_doc("secret")
    )
    site: str = Field(
        min_length=1,
        max_length=100,
        description="site this executor serves; only jobs of this site are claimed",
        json_schema_extra=_doc("name"),
    )
    executor_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=200,
        description="stable identity; registration is idempotent on it",
        json_schema_extra=_doc("name", "host name"),
    )

    state_dir: Path = Field(
        default=Path("/var/lib/rackpilot-executor"),
        description="writable state (key pair); created 0700",
        json_schema_extra=_doc("path"),
    )
    private_key_path: Path | None = Field(
        default=None,
        description="X25519 private key (PKCS#8 PEM), must be 0600 or stricter",
        json_schema_extra=_doc("path", "``<state_dir>/executor_key.pem``"),
    )

    max_concurrent_jobs: int = Field(
        default=4,
        ge=1,
        le=256,
        description="jobs run at once; claims never exceed the free slots",
        json_schema_extra=_doc("jobs"),
    )
    poll_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="claim poll when Realtime is quiet or down",
        json_schema_extra=_doc("s"),
    )
    heartbeat_interval: float = Field(
        default=10.0,
        gt=0,
        le=MIN_POLICY_LEASE_S / 3,
        description="lease renewal period; at most a third of the shortest lease in safety_policies (30 s)",
        json_schema_extra=_doc("s"),
    )
    recovery_interval: float = Field(
        default=15.0,
        gt=0,
        description="how often this executor tries to run ``recover_expired_leases``",
        json_schema_extra=_doc("s"),
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="on SIGTERM, time a running step gets to finish or checkpoint",
        json_schema_extra=_doc("s"),
    )

    realtime_enabled: bool = Field(
        default=True,
        description="wake on Realtime changes; polling always runs as well",
        json_schema_extra=_doc("bool"),
    )
    realtime_reconnect_max: float = Field(
        default=30.0,
        gt=0,
        description="upper bound of the Realtime reconnect backoff",
        json_schema_extra=_doc("s"),
    )

    control_timeout: float = Field(
        default=10.0,
        gt=0,
        description="HTTP timeout of one control-plane request",
        json_schema_extra=_doc("s"),
    )
    control_retry_initial: float = Field(
        default=0.2,
        gt=0,
        description="first retry delay of a failed control-plane write",
        json_schema_extra=_doc("s"),
    )
    control_retry_max: float = Field(
        default=5.0,
        gt=0,
        description="retry delay cap (backoff doubles up to it, with jitter)",
        json_schema_extra=_doc("s"),
    )

    # the copy inside the package (a link to policies/safety.yaml in a checkout), so that
    # `pip install` gives the executor its policy without a source tree
    policy_path: Path = Field(
        default=Path(__file__).resolve().parent / "data" / "safety.yaml",
        description="safety policy with the per-step timeouts (shipped in the package: a link to ``policies/safety.yaml``)",
        json_schema_extra=_doc("path", "``executor/data/safety.yaml``"),
    )
    default_step_timeout: float = Field(
        default=3600,
        gt=0,
        description="overall step timeout when the policy names none",
        json_schema_extra=_doc("s"),
    )
    default_stall_timeout: float = Field(
        default=600,
        gt=0,
        description="no-progress timeout of waits when the policy names none",
        json_schema_extra=_doc("s"),
    )

    notify_enabled: bool = Field(
        default=True, description="run the notification outbox dispatcher", json_schema_extra=_doc("bool")
    )
    notify_interval: float = Field(
        default=2.0, gt=0, description="outbox poll period", json_schema_extra=_doc("s")
    )
    notify_batch: int = Field(
        default=20, ge=1, le=1000, description="outbox rows claimed at once", json_schema_extra=_doc("rows")
    )
    notify_lease_seconds: int = Field(
        default=60,
        ge=1,
        description="outbox claim lease (another executor may send after it)",
        json_schema_extra=_doc("s"),
    )
    notify_max_attempts: int = Field(
        default=8,
        ge=1,
        le=100,
        description="attempts before a message is marked dead",
        json_schema_extra=_doc("count"),
    )
    notify_backoff_initial: float = Field(
        default=5.0,
        gt=0,
        description="delay after the first failed send (doubles per attempt)",
        json_schema_extra=_doc("s"),
    )
    notify_backoff_max: float = Field(
        default=900.0, gt=0, description="cap of that delay", json_schema_extra=_doc("s")
    )
    teams_timeout: float = Field(
        default=10.0, gt=0, description="HTTP timeout of one Teams webhook post", json_schema_extra=_doc("s")
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP relay", json_schema_extra=_doc("host", "(none: email disabled)")
    )
    smtp_port: int = Field(
        default=25, ge=1, le=65535, description="SMTP port", json_schema_extra=_doc("port")
    )
    smtp_starttls: bool = Field(
        default=False, description="upgrade with STARTTLS before sending", json_schema_extra=_doc("bool")
    )
    smtp_username: str | None = Field(
        default=None, description="SMTP login, when the relay wants one", json_schema_extra=_doc("name")
    )
    smtp_password: SecretStr | None = Field(
        default=None, description="SMTP password", json_schema_extra=_doc("secret")
    )
    smtp_from: str = Field(
        default="rackpilot@localhost",
        description="envelope and header sender",
        json_schema_extra=_doc("address"),
    )
    smtp_timeout: float = Field(
        default=10.0, gt=0, description="SMTP connect/command timeout", json_schema_extra=_doc("s")
    )

    replication_poll_interval: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="how often an executor that takes ``replication_sync`` jobs asks SQL for the jobs of due replication pairs (``schedule_replication_jobs``: never two per pair, whichever executor asks); schedules are minutes at least (docs/replication.md)",
        json_schema_extra=_doc("s"),
    )

    audit_anchor_interval: float = Field(
        default=300.0,
        ge=0,
        description="sign the audit chain's lane heads into ``<state_dir>/audit-anchors.jsonl`` this often; 0 disables",
        json_schema_extra=_doc("s"),
    )

    # the selftest job writes files on this host: never on in production
    enable_selftest: bool = Field(
        default=False,
        description="TESTS ONLY: take ``selftest`` jobs, whose files live in ``<state_dir>/selftest/``",
        json_schema_extra=_doc("bool"),
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR", json_schema_extra=_doc("level")
    )
    log_file: Path | None = Field(
        default=None,
        description="also append JSON lines to this file",
        json_schema_extra=_doc("path", "(none: stderr)"),
    )

    @field_validator("supabase_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        problem = url_problem(v)
        if problem:  # e.g. a URL ending in /rest/v1: every call would miss
            raise ValueError(problem)
        return v

    @field_validator("supabase_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        problem = key_problem(v.get_secret_value())
        if problem:  # the anon key or a user's token: every executor RPC would be refused
            raise ValueError(problem)
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _coherent(self) -> ExecutorSettings:
        if self.control_retry_initial > self.control_retry_max:
            raise ValueError("control_retry_initial must not exceed control_retry_max")
        if self.private_key_path is None:
            self.private_key_path = self.state_dir / "executor_key.pem"
        return self

    @property
    def key_path(self) -> Path:
        assert self.private_key_path is not None  # set by _coherent
        return self.private_key_path


def _default_text(f: FieldInfo) -> str:
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    if "default_text" in extra:
        return str(extra["default_text"])
    if f.is_required():
        return "(required)"
    d = f.default
    if d is None:
        return "(none)"
    if isinstance(d, bool):
        return str(d).lower()
    if isinstance(d, int | float):
        return str(d)
    return f"``{d}``"


def option_rows() -> list[dict[str, str]]:
    """The option table, from the fields: option, unit, default, meaning (reST markup)."""
    rows = []
    for name, f in ExecutorSettings.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        rows.append(
            {
                "option": name,
                "unit": str(extra.get("unit", "")),
                "default": _default_text(f),
                "meaning": f.description or "",
            }
        )
    return rows


def load_settings(env_file: str | Path | None = None) -> ExecutorSettings:
    """Settings from the environment, then ``env_file`` for anything the environment lacks."""
    if env_file is not None:
        settings = ExecutorSettings(_env_file=str(env_file))  # type: ignore[call-arg]
        settings._env_file_path = Path(env_file)
        return settings
    return ExecutorSettings()  # type: ignore[call-arg]
