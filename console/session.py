"""Signing in to the control plane as a user, and keeping the session fresh.

The console talks to Supabase exactly as any client would: supabase-py, the anon key, and
the user's access token after an email/password sign-in. Two rules shape this module:

- The password goes straight to the Auth call and is never kept: not on the Session, not
  in a log, not in a repr, not in an exception message.
- Exactly one party refreshes the session. Auth rotates refresh tokens and revokes the whole
  session when a rotated-away token is presented again, so two clients refreshing on their
  own timers would sign the user out. supabase-py's timer-driven refresh is therefore off;
  ``Session`` refreshes on use (before a call when the token is close to expiry) and hands
  the new token to the Realtime connection it created.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from supabase_auth.errors import AuthApiError, AuthError

from console.errors import ConfigError, NotSignedIn, ServiceUnavailable, SignInError
from supabase import Client, ClientOptions, create_client

if TYPE_CHECKING:
    from console.store import SessionStore
    from supabase import AsyncClient

REFRESH_MARGIN_S = 120  # refresh when the access token has less than this left (s)
FUNCTION_TIMEOUT_S = 30  # edge function calls: planning a rolling update reads a lot (s)
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the control plane is: the same two values for hosted Supabase, ``supabase
    start`` and the local stack."""

    url: str
    anon_key: str

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/]+", self.url or ""):
            raise ConfigError(
                "SUPABASE_URL must be an http(s) URL such as http://127.0.0.1:54321", code="bad_url"
            )
        if not self.anon_key or any(c.isspace() for c in self.anon_key):
            raise ConfigError("SUPABASE_ANON_KEY is empty or malformed", code="bad_key")

    def __repr__(self) -> str:  # the key is public, but it does not belong in notebook output
        return f"ConsoleConfig(url={self.url!r}, anon_key=<{len(self.anon_key)} chars>)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleConfig:
        env = os.environ if env is None else env
        missing = [k for k in ("SUPABASE_URL", "SUPABASE_ANON_KEY") if not env.get(k)]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set: run `rackpilot dev env` (local stack) or take them "
                "from the project's API settings, and export them before starting Jupyter",
                code="missing_config",
                details={"missing": missing},
            )
        return cls(env["SUPABASE_URL"].rstrip("/"), env["SUPABASE_ANON_KEY"])


class Session:
    """A signed-in user. ``client`` is a supabase-py sync client carrying the user's token;
    ``role`` is the user's rackpilot application role (viewer/operator/approver/admin)."""

    def __init__(
        self,
        config: ConsoleConfig,
        client: Client,
        *,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        store: SessionStore | None = None,
    ):
        self.config = config
        self._client: Client | None = client
        self._margin = refresh_margin_s
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], Any]] = []
        s = client.auth.get_session()
        if s is None:
            raise SignInError("sign-in returned no session", code="no_session")
        self.user_id: str = s.user.id
        self.email: str = s.user.email or ""
        self._expires_at: float = float(s.expires_at or time.time() + (s.expires_in or 0))
        self._refresh_token: str = s.refresh_token
        self._store = store  # shared with the user's other notebooks (console.store)
        self.role: str | None = self._read_role()
        if store is not None:
            self._save_to_store(s.access_token)

    def __repr__(self) -> str:
        state = "signed in" if self._client else "signed out"
        return f"Session({self.email!r}, role={self.role!r}, {state})"

    # -- token -----------------------------------------------------------------------
    @property
    def signed_in(self) -> bool:
        return self._client is not None

    @property
    def expires_at(self) -> float:
        return self._expires_at

    @property
    def client(self) -> Client:
        """The supabase-py client, its token refreshed first when close to expiry."""
        self.ensure_fresh()
        assert self._client is not None
        return self._client

    @property
    def access_token(self) -> str:
        self.ensure_fresh()
        assert self._client is not None
        s = self._client.auth.get_session()
        if s is None:
            raise NotSignedIn("the session has ended; sign in again", code="session_ended")
        return s.access_token

    def ensure_fresh(self) -> None:
        if self._client is None:
            raise NotSignedIn(
                "not signed in: run the sign-in cell (console.connect()) first", code="not_signed_in"
            )
        if self._store is not None:
            self._sync_from_store()
        if self._expires_at - time.time() > self._margin:
            return
        self.refresh()

    # -- the session shared with the user's other notebooks ------------------------------
    def share(self, store: SessionStore) -> None:
        """Keep this session in ``store`` so the user's other notebooks open signed in
        (any sign-in path: password, directory, break-glass)."""
        token = self.access_token
        self._store = store
        self._save_to_store(token)

    def _save_to_store(self, access_token: str) -> None:
        assert self._store is not None
        self._store.save(
            {
                "access_token": access_token,
                "refresh_token": self._refresh_token,
                "expires_at": self._expires_at,
                "email": self.email,
            }
        )

    def _sync_from_store(self) -> bool:
        """Adopt tokens another notebook refreshed; end this session when it signed out.
        True when newer tokens were adopted."""
        assert self._store is not None and self._client is not None
        data = self._store.load()
        if data is None:
            self._client = None
            self._listeners.clear()
            raise NotSignedIn("signed out (here or in another notebook): sign in again", code="signed_out")
        if data["refresh_token"] == self._refresh_token:
            return False
        try:
            res = self._client.auth.set_session(data["access_token"], data["refresh_token"])
        except (AuthError, httpx.HTTPError):
            return False  # the file is behind us or broken: keep ours; refresh decides
        if res.session is None:
            return False
        self._refresh_token = res.session.refresh_token
        self._expires_at = float(res.session.expires_at or time.time() + res.session.expires_in)
        token = res.session.access_token
        for fn in list(self._listeners):
            fn(token)
        return True

    def refresh(self) -> None:
        """Exchange the refresh token for a new session now."""
        if self._client is None:
            raise NotSignedIn(
                "not signed in: run the sign-in cell (console.connect()) first", code="not_signed_in"
            )
        if self._store is not None:
            with self._lock, self._store.lock():
                # another notebook may have refreshed while we waited: its tokens are ours now
                if self._sync_from_store() and self._expires_at - time.time() > self._margin:
                    return
                token = self._refresh_locked()
                self._save_to_store(token)
        else:
            with self._lock:
                token = self._refresh_locked()
        for fn in list(self._listeners):
            fn(token)

    def _refresh_locked(self) -> str:
        assert self._client is not None
        try:
            res = self._client.auth.refresh_session()
        except AuthError as exc:
            self._client = None
            raise SignInError(
                f"the session could not be refreshed ({_auth_message(exc)}); sign in again",
                code="refresh_failed",
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"Auth is unreachable at {self.config.url}: {type(exc).__name__}", code="unreachable"
            ) from None
        if res.session is None:
            self._client = None
            raise SignInError("the session could not be refreshed; sign in again", code="refresh_failed")
        self._expires_at = float(res.session.expires_at or time.time() + res.session.expires_in)
        self._refresh_token = res.session.refresh_token
        return res.session.access_token

    def on_token(self, fn: Callable[[str], Any]) -> Callable[[], None]:
        """Call ``fn(access_token)`` after every refresh; returns an unsubscribe function."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def sign_out(self) -> None:
        if self._store is not None:
            self._store.clear()  # every notebook of this user: signed out
        if self._client is None:
            return
        try:
            self._client.auth.sign_out()
        except (AuthError, httpx.HTTPError):
            pass  # the local state is dropped either way; the server session simply expires
        self._client = None
        self._listeners.clear()

    # -- realtime --------------------------------------------------------------------
    async def realtime_client(self) -> tuple[AsyncClient, Callable[[], None]]:
        """An async supabase-py client for Realtime (the sync client has none), carrying this
        session's token and kept current on every refresh. It never signs in itself, so it
        never refreshes on its own. Returns the client and the function that stops the token
        hand-over (call it when the client is dropped)."""
        import asyncio

        from supabase import AClientOptions, acreate_client

        token = self.access_token
        ac = await acreate_client(
            self.config.url,
            self.config.anon_key,
            AClientOptions(auto_refresh_token=False, persist_session=False),
        )
        await ac.realtime.set_auth(token)
        loop = asyncio.get_running_loop()

        def push(new_token: str) -> None:
            # refresh may run on any thread; the Realtime socket lives on this loop
            loop.call_soon_threadsafe(lambda: loop.create_task(ac.realtime.set_auth(new_token)))

        return ac, self.on_token(push)

    # -- helpers -----------------------------------------------------------------------
    def _read_role(self) -> str | None:
        assert self._client is not None
        # the role RLS sees: user_roles, or a live break-glass grant of this session
        role = self._client.rpc("current_app_role", {}).execute().data
        return role if isinstance(role, str) and role else None


def _auth_message(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return msg[:200]


def _client(config: ConsoleConfig) -> Client:
    """A supabase client for one user's session: the console refreshes the token itself
    and keeps the session where it chooses (nothing persisted by the client)."""
    return create_client(
        config.url,
        config.anon_key,
        ClientOptions(
            auto_refresh_token=False, persist_session=False, function_client_timeout=FUNCTION_TIMEOUT_S
        ),
    )


def sign_in(
    config: ConsoleConfig, email: str, password: str, *, refresh_margin_s: float = REFRESH_MARGIN_S
) -> Session:
    """Sign in with email and password. The password is used for this one call only."""
    email = (email or "").strip()
    if not EMAIL_RE.match(email):
        raise SignInError("enter an email address such as ops@example.com", code="bad_email")
    if not password:
        raise SignInError("enter the password", code="no_password")
    client = _client(config)
    try:
        client.auth.sign_in_with_password({"email": email, "password": password})
    except AuthApiError as exc:
        if exc.status in (400, 401, 422):
            raise SignInError(
                f"sign-in refused for {email}: wrong email or password",
                code="bad_credentials",
                status=exc.status,
            ) from None
        raise SignInError(
            f"sign-in failed for {email}: {_auth_message(exc)}", code="auth_error", status=exc.status
        ) from None
    except AuthError as exc:
        raise SignInError(f"sign-in failed for {email}: {_auth_message(exc)}", code="auth_error") from None
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"Auth is unreachable at {config.url}: {type(exc).__name__}", code="unreachable"
        ) from None
    finally:
        password = ""  # noqa: F841 -- drop our reference at once
    return Session(config, client, refresh_margin_s=refresh_margin_s)


def resume(
    config: ConsoleConfig, store: SessionStore, *, refresh_margin_s: float = REFRESH_MARGIN_S
) -> Session | None:
    """The session another notebook signed in (``console.store``), or None when there is
    none or it has ended (then the file is removed and the form is shown)."""
    with store.lock():
        data = store.load()
        if data is None:
            return None
        client = _client(config)
        try:
            res = client.auth.set_session(data["access_token"], data["refresh_token"])
        except AuthError:
            store.clear()
            return None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"Auth is unreachable at {config.url}: {type(exc).__name__}", code="unreachable"
            ) from None
        if res.session is None:
            store.clear()
            return None
        # set_session may have refreshed an expired token: Session's constructor saves what it holds
        return Session(config, client, refresh_margin_s=refresh_margin_s, store=store)


def sign_in_from_env(env: Mapping[str, str] | None = None, **kw: Any) -> Session | None:
    """Sign in with RACKPILOT_CONSOLE_EMAIL / RACKPILOT_CONSOLE_PASSWORD when both are set
    (demo and headless runs); None when they are not."""
    env = os.environ if env is None else env
    email, password = env.get("RACKPILOT_CONSOLE_EMAIL"), env.get("RACKPILOT_CONSOLE_PASSWORD")
    if not email or not password:
        return None
    return sign_in(ConsoleConfig.from_env(env), email, password, **kw)
