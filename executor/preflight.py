"""What the executor checks before it runs, and how it words a refusal.

* :class:`ConfigurationError` - a problem a restart cannot fix (exit code 2: the unit's
  ``RestartPreventExitStatus=2`` keeps systemd from restarting it every 5 s). Its message
  names the setting and the fix.
* :func:`executor.config.key_role` (imported here) - the role a Supabase API key carries
  (read from the JWT payload, or the ``sb_publishable_``/``sb_secret_`` prefix), so the anon
  key or a user's token is refused before the first request.
* :func:`explain_refusal` - the control plane's refusals of ``register_executor`` in the
  words of the setting at fault (a key from another project, the anon key, a URL with a
  path, an unknown site, an identity bound to another key).
* :class:`StateLock` - one process per state folder (``flock`` on ``<state_dir>/executor.lock``,
  holding the PID).
* :func:`check_config` - what ``--check-config`` checks (``--online`` adds the control plane).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ExecutorError
from .config import key_problem, key_role

LOCK_FILE = "executor.lock"
URL_ENV, KEY_ENV, SITE_ENV, NAME_ENV = (
    "RACKPILOT_SUPABASE_URL",
    "RACKPILOT_SUPABASE_KEY",
    "RACKPILOT_SITE",
    "RACKPILOT_EXECUTOR_NAME",
)


class ConfigurationError(ExecutorError):
    """A configuration or identity error a restart cannot fix (exit code 2)."""

    exit_code = 2


# --- settings ----------------------------------------------------------------------------------
# url_problem, key_role and key_problem judge a setting's value: they live with the settings
# (executor/config.py, whose validators use them); check_local uses the key's.


# --- the control plane's refusals ----------------------------------------------------------------
def explain_refusal(
    code: str | None, message: str, *, url: str, site: str, name: str, hint: str | None = None
) -> str:
    """The refusal of ``register_executor`` as the operator needs to read it."""
    code = str(code or "")
    if message.startswith("identity_bound"):
        return f"{message}. {hint or ''}".strip()
    if message.startswith("unknown_site"):
        return (
            f"{SITE_ENV}={site}: no such site in the control plane at {url}; an admin creates it "
            f"(rackpilot site add {site}) or fix the name"
        )
    if code in ("PGRST301", "PGRST302", "401") or "JWT" in message:
        return (
            f"{KEY_ENV} is not accepted by the control plane at {url} ({message}): it is another project's "
            "key, or was rotated; use this project's service-role key"
        )
    if code in ("42501", "403"):
        return (
            f"{KEY_ENV} may not register an executor at {url} ({message}): it is the anon key or a user's "
            "token; the executor needs the service-role key"
        )
    if code in ("PGRST202", "PGRST205", "404", "PGRST106"):
        return (
            f"{URL_ENV}={url} serves no register_executor RPC ({message}): it must be the project URL "
            "(without /rest/v1), and the project needs rackpilot's migrations (supabase db push)"
        )
    return f"the control plane at {url} refused register_executor: {message} ({code})"


# --- one process per state folder -----------------------------------------------------------------
class StateLock:
    """An exclusive ``flock`` on ``<state_dir>/executor.lock`` for the life of the process."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.path = state_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> StateLock:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"RACKPILOT_STATE_DIR={self.dir}: cannot use it ({exc.strerror}); "
                "create it, owned by the executor's user, mode 0700"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode().strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigurationError(
                    f"state folder {self.dir} is in use by another executor process (PID {holder or 'unknown'}); "
                    "run one process per state folder (RACKPILOT_STATE_DIR)"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def holder(self) -> int | None:
        """The PID holding the lock now, or None (for --check-config)."""
        if not self.path.exists():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            with contextlib.suppress(OSError, ValueError):
                return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
            return -1
        else:
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- --check-config --------------------------------------------------------------------------------
@dataclass
class CheckReport:
    checks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": name, "ok": ok, **({"detail": detail} if detail else {})})
        return ok

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c['check']}: {c.get('detail', '')}" for c in self.checks if not c["ok"]]


def env_file_mode_problem(path: Path, key: str | None) -> str | None:
    """A service-role key in a file others may read (0640 or tighter is fine)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    holds_key = key is not None and key in path.read_text(errors="replace")
    if holds_key and mode & 0o137:
        return (
            f"{path} holds the service-role key with mode {mode:04o}; it must be 0640 or tighter "
            f"(chmod 640 {path}; owner root, group of the executor's user)"
        )
    return None


def _writable_dir_problem(path: Path) -> str | None:
    """Why the executor could not create its files in ``path`` (created when missing)."""
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        return f"{probe_dir} is not a folder"
    if probe_dir != path:
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            return f"{path} does not exist and {probe_dir} is not writable to create it"
        return None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".check-", dir=path)
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror})"
    os.close(fd)
    os.unlink(tmp)
    return None


def check_local(settings: Any, report: CheckReport, env_file: Path | None) -> None:
    """Everything start needs that can be checked without the network."""
    from .secrets import SecretsError, load_or_create

    key = settings.supabase_key.get_secret_value()
    if env_file is not None:
        problem = env_file_mode_problem(env_file, key)
        report.add("env_file_mode", problem is None, problem or f"{env_file}")
    problem = key_problem(key)
    report.add(
        "key_role",
        problem is None,
        f"{KEY_ENV} {problem}" if problem else f"role {key_role(key) or 'unknown (opaque key)'}",
    )
    problem = _writable_dir_problem(settings.state_dir)
    report.add(
        "state_dir_writable",
        problem is None,
        f"RACKPILOT_STATE_DIR: {problem}" if problem else str(settings.state_dir),
    )
    holder = StateLock(settings.state_dir).holder()
    if holder:
        report.warnings.append(
            f"an executor process (PID {holder}) holds {settings.state_dir} now; "
            "a second one would be refused"
        )
    path = settings.key_path
    if path.exists():
        try:
            load_or_create(path)  # the file exists: this only reads and checks it
            report.add("private_key", True, f"{path}")
        except (SecretsError, OSError) as exc:
            report.add("private_key", False, f"RACKPILOT_PRIVATE_KEY_PATH: {exc}")
    else:
        problem = _writable_dir_problem(path.parent)
        report.add(
            "private_key",
            problem is None,
            f"RACKPILOT_PRIVATE_KEY_PATH: {path} is missing and cannot be created: {problem}"
            if problem
            else f"{path} will be created at first start",
        )
    report.add(
        "policy_file",
        settings.policy_path.is_file(),
        str(settings.policy_path)
        if settings.policy_path.is_file()
        else f"RACKPILOT_POLICY_PATH: {settings.policy_path} not found (the safety policy with the step "
        "timeouts; pip install ships it inside the executor package)",
    )
    if settings.log_file is not None:
        problem = _writable_dir_problem(settings.log_file.parent)
        report.add(
            "log_file",
            problem is None,
            f"RACKPILOT_LOG_FILE: {problem}" if problem else str(settings.log_file),
        )


async def check_online(settings: Any, report: CheckReport, key_id: str | None) -> None:
    """The control plane reachable, the key accepted with the service role, the site there, and
    this identity's binding (read only: nothing is registered)."""
    import httpx

    from .control import ControlPlane, Rejected, Unavailable

    url = settings.supabase_url
    control = ControlPlane(settings)
    try:
        try:
            sites = await control.select("sites", "id,name", name=settings.site, retry=False)
        except Unavailable as exc:
            report.add("control_plane_reachable", False, f"{URL_ENV}={url}: {exc}")
            return
        except Rejected as exc:
            report.add("control_plane_reachable", True, url)
            _key_refused(report, settings, exc)
            return
        except httpx.HTTPError as exc:
            report.add("control_plane_reachable", False, f"{URL_ENV}={url}: {type(exc).__name__}")
            return
        report.add("control_plane_reachable", True, url)
        # only the service role reads executors' keys through RLS-free access to every site
        try:
            rows = await control.select(
                "executors",
                "id,name,key_id,status,rekey_requested_at,rekey_key_id",
                name=settings.executor_name,
                retry=False,
                **({"site_id": sites[0]["id"]} if sites else {}),
            )
            report.add("service_key", True, "the control plane accepts it with the service role")
        except Rejected as exc:
            _key_refused(report, settings, exc)
            return
        if not report.add(
            "site_exists",
            bool(sites),
            settings.site
            if sites
            else f"{SITE_ENV}={settings.site}: no such site at {url}; an admin creates it "
            f"(rackpilot site add {settings.site})",
        ):
            return
        _identity(report, settings, rows, key_id)
    finally:
        await control.close()


def _key_refused(report: CheckReport, settings: Any, exc: Any) -> None:
    """The control plane refused the service key: why, and what to do about it."""
    report.add(
        "service_key",
        False,
        explain_refusal(
            exc.code, exc.reason, url=settings.supabase_url, site=settings.site, name=settings.executor_name
        ),
    )


def _identity(report: CheckReport, settings: Any, rows: list[dict[str, Any]], key_id: str | None) -> None:
    """Whether start would bind, keep or take over this site/name with this host's key."""
    who = f"{settings.site}/{settings.executor_name}"
    if not rows:
        report.add(
            "identity",
            True,
            f"{who} is not registered yet; the first start binds it to {key_id or 'the key it creates'}",
        )
    elif key_id is None or rows[0]["key_id"] == key_id:
        report.add(
            "identity",
            True,
            f"{who} is bound to this key ({rows[0]['key_id']})"
            + (f", executor {rows[0]['status']}" if rows[0]["status"] != "active" else ""),
        )
    elif rows[0].get("rekey_requested_at") and rows[0].get("rekey_key_id") in (None, key_id):
        report.add(
            "identity", True, f"{who} was re-keyed by an admin: this key ({key_id}) takes it over at start"
        )
    else:
        report.add(
            "identity",
            False,
            f"{who} is bound to key {rows[0]['key_id']}, this host "
            f"holds {key_id}; start would be refused. If this host replaces the old one, an admin runs "
            f"`rackpilot executor rekey {who} --key-id {key_id}`; "
            f"otherwise set another {NAME_ENV}",
        )
