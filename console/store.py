"""One sign-in for every notebook of a JupyterLab session.

After a sign-in through the console's form, the session's tokens are kept the way
command-line tools keep theirs: in a file only the user can read (mode 0600, in a 0700
folder), in the user's runtime folder, never in a notebook. Every kernel of the same user
and control plane finds it, so the second notebook opens signed in; sign-out deletes it,
and the other notebooks see that on their next call.

Auth rotates refresh tokens and revokes the whole session when a rotated-away token is
presented again, so kernels must never refresh on their own: a refresh happens under an
exclusive lock on the file, and a kernel that finds newer tokens in the file than its own
adopts them instead of refreshing (``console.session.Session``).

Where: ``RACKPILOT_CONSOLE_RUNTIME_DIR``, else ``$JUPYTER_RUNTIME_DIR/rackpilot`` (one
JupyterLab's own runtime folder), else ``$XDG_RUNTIME_DIR/rackpilot``, else Jupyter's
default runtime folder. One file per control-plane URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from console.errors import ConfigError


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("RACKPILOT_CONSOLE_RUNTIME_DIR"):
        return Path(env["RACKPILOT_CONSOLE_RUNTIME_DIR"])
    for var in ("JUPYTER_RUNTIME_DIR", "XDG_RUNTIME_DIR"):
        if env.get(var):
            return Path(env[var]) / "rackpilot"
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return Path(jupyter_runtime_dir()) / "rackpilot"
    except ImportError:  # the console without Jupyter (scripts, tests)
        return Path.home() / ".local" / "share" / "jupyter" / "runtime" / "rackpilot"


class SessionStore:
    """The shared session of one user for one control plane: ``{access_token,
    refresh_token, expires_at, email}``. Only tokens: never a password."""

    FIELDS = ("access_token", "refresh_token", "expires_at", "email")

    def __init__(self, url: str, folder: Path | None = None, *, env: Mapping[str, str] | None = None) -> None:
        self.folder = Path(folder) if folder else runtime_dir(env)
        digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
        self.path = self.folder / f"console-session-{digest}.json"
        self._lock_path = self.folder / f"console-session-{digest}.lock"

    def __repr__(self) -> str:
        return f"SessionStore({str(self.path)!r})"

    def _ensure_folder(self) -> None:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the session folder {self.folder}: {exc.strerror}", code="session_folder"
            ) from None
        st = self.folder.stat()
        if st.st_uid != os.getuid():
            raise ConfigError(
                f"the session folder {self.folder} belongs to another user", code="session_folder"
            )
        if st.st_mode & 0o077:
            os.chmod(self.folder, 0o700)

    def load(self) -> dict[str, Any] | None:
        """The stored session, or None when there is none (never signed in, signed out, or
        a file that is not the user's own and private)."""
        try:
            st = self.path.stat()
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                return None  # someone else's, or readable by others: not ours to trust
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not data.get("refresh_token") or not data.get("access_token"):
            return None
        return {k: data.get(k) for k in self.FIELDS}

    def save(self, data: Mapping[str, Any]) -> None:
        self._ensure_folder()
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({k: data.get(k) for k in self.FIELDS}, f)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive between the user's kernels: held while refreshing or replacing tokens."""
        self._ensure_folder()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
