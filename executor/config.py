"""Executor settings, read from ``RACKPILOT_*`` environment variables and an optional env file.

Every option, its unit and its default (the env name is ``RACKPILOT_`` + the upper-case
field name, e.g. ``RACKPILOT_POLL_INTERVAL``):

==========================  =======  ==================================  ======================================
option                      unit     default                             meaning
==========================  =======  ==================================  ======================================
supabase_url                URL      (required)                          control plane base URL (hosted, ``supabase start`` or the local stack)
supabase_key                secret   (required)                          service-role key; sent only to ``supabase_url``
site                        name     (required)                          site this executor serves; only jobs of this site are claimed
executor_name               name     host name                           stable identity; registration is idempotent on it
state_dir                   path     ``/var/lib/rackpilot-executor``     writable state (key pair); created 0700
private_key_path            path     ``<state_dir>/executor_key.pem``    X25519 private key (PKCS#8 PEM), must be 0600 or stricter
max_concurrent_jobs         jobs     4                                   jobs run at once; claims never exceed the free slots
poll_interval               s        5.0                                 claim poll when Realtime is quiet or down
heartbeat_interval          s        10.0                                lease renewal period; at most a third of the shortest lease in safety_policies (30 s)
recovery_interval           s        15.0                                how often this executor tries to run ``recover_expired_leases``
shutdown_grace              s        30.0                                on SIGTERM, time a running step gets to finish or checkpoint
realtime_enabled            bool     true                                wake on Realtime changes; polling always runs as well
realtime_reconnect_max      s        30.0                                upper bound of the Realtime reconnect backoff
control_timeout             s        10.0                                HTTP timeout of one control-plane request
control_retry_initial       s        0.2                                 first retry delay of a failed control-plane write
control_retry_max           s        5.0                                 retry delay cap (backoff doubles up to it, with jitter)
policy_path                 path     ``executor/data/safety.yaml``       safety policy with the per-step timeouts (shipped in the package: a link to ``policies/safety.yaml``)
default_step_timeout        s        3600                                overall step timeout when the policy names none
default_stall_timeout       s        600                                 no-progress timeout of waits when the policy names none
notify_enabled              bool     true                                run the notification outbox dispatcher
notify_interval             s        2.0                                 outbox poll period
notify_batch                rows     20                                  outbox rows claimed at once
notify_lease_seconds        s        60                                  outbox claim lease (another executor may send after it)
notify_max_attempts         count    8                                   attempts before a message is marked dead
notify_backoff_initial      s        5.0                                 delay after the first failed send (doubles per attempt)
notify_backoff_max          s        900.0                               cap of that delay
teams_timeout               s        10.0                                HTTP timeout of one Teams webhook post
smtp_host                   host     (none: email disabled)              SMTP relay
smtp_port                   port     25                                  SMTP port
smtp_starttls               bool     false                               upgrade with STARTTLS before sending
smtp_username               name     (none)                              SMTP login, when the relay wants one
smtp_password               secret   (none)                              SMTP password
smtp_from                   address  ``rackpilot@localhost``             envelope and header sender
smtp_timeout                s        10.0                                SMTP connect/command timeout
replication_poll_interval   s        30.0                                how often an executor that takes ``replication_sync`` jobs asks SQL for the jobs of due replication pairs (``schedule_replication_jobs``: never two per pair, whichever executor asks); schedules are minutes at least (docs/replication.md)
audit_anchor_interval       s        300                                 sign the audit chain's lane heads into ``<state_dir>/audit-anchors.jsonl`` this often; 0 disables
enable_selftest             bool     false                               TESTS ONLY: take ``selftest`` jobs, whose files live in ``<state_dir>/selftest/``
log_level                   level    INFO                                DEBUG, INFO, WARNING, ERROR
log_file                    path     (none: stderr)                      also append JSON lines to this file
==========================  =======  ==================================  ======================================

``python -m executor --verify-audit`` checks the control plane's audit chain against this
executor's anchors (see :mod:`executor.audit_anchor`).

``python -m executor --check-config`` validates all of this (and the key file's mode)
without contacting the control plane or starting anything.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Lease lengths come from the safety_policies table (per job type); the shortest is 30 s.
# Two missed heartbeats must still fit in it, or one slow round trip would fence a job.
MIN_POLICY_LEASE_S = 30


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RACKPILOT_", extra="ignore", env_file=None, validate_default=True
    )

    supabase_url: str = Field(description="control plane base URL")
    supabase_key: SecretStr = Field(description="service-role key")
    site: str = Field(min_length=1, max_length=100, description="site this executor serves")
    executor_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)

    state_dir: Path = Path("/var/lib/rackpilot-executor")
    private_key_path: Path | None = None

    max_concurrent_jobs: int = Field(default=4, ge=1, le=256)
    poll_interval: float = Field(default=5.0, gt=0, le=3600)
    heartbeat_interval: float = Field(default=10.0, gt=0, le=MIN_POLICY_LEASE_S / 3)
    recovery_interval: float = Field(default=15.0, gt=0)
    shutdown_grace: float = Field(default=30.0, ge=0, le=3600)

    realtime_enabled: bool = True
    realtime_reconnect_max: float = Field(default=30.0, gt=0)

    control_timeout: float = Field(default=10.0, gt=0)
    control_retry_initial: float = Field(default=0.2, gt=0)
    control_retry_max: float = Field(default=5.0, gt=0)

    # the copy inside the package (a link to policies/safety.yaml in a checkout), so that
    # `pip install` gives the executor its policy without a source tree
    policy_path: Path = Path(__file__).resolve().parent / "data" / "safety.yaml"
    default_step_timeout: float = Field(default=3600, gt=0)
    default_stall_timeout: float = Field(default=600, gt=0)

    notify_enabled: bool = True
    notify_interval: float = Field(default=2.0, gt=0)
    notify_batch: int = Field(default=20, ge=1, le=1000)
    notify_lease_seconds: int = Field(default=60, ge=1)
    notify_max_attempts: int = Field(default=8, ge=1, le=100)
    notify_backoff_initial: float = Field(default=5.0, gt=0)
    notify_backoff_max: float = Field(default=900.0, gt=0)
    teams_timeout: float = Field(default=10.0, gt=0)
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "rackpilot@localhost"
    smtp_timeout: float = Field(default=10.0, gt=0)

    replication_poll_interval: float = Field(default=30.0, ge=1, le=3600)

    audit_anchor_interval: float = Field(default=300.0, ge=0)

    # the selftest job writes files on this host: never on in production
    enable_selftest: bool = False

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_file: Path | None = None

    @field_validator("supabase_url")
    @classmethod
    def _url(cls, v: str) -> str:
        from .preflight import url_problem

        v = v.strip().rstrip("/")
        problem = url_problem(v)
        if problem:  # e.g. a URL ending in /rest/v1: every call would miss
            raise ValueError(problem)
        return v

    @field_validator("supabase_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        from .preflight import key_problem

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


def load_settings(env_file: str | Path | None = None) -> ExecutorSettings:
    """Settings from the environment, then ``env_file`` for anything the environment lacks."""
    if env_file is not None:
        return ExecutorSettings(_env_file=str(env_file))  # type: ignore[call-arg]
    return ExecutorSettings()  # type: ignore[call-arg]
