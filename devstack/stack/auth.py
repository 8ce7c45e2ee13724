"""The GoTrue-compatible subset behind ``/auth/v1``.

What the official clients use and rackpilot needs: the password and refresh_token grants,
``/user``, ``/logout``, ``/settings``, ``/health`` and admin create/list/get/delete of
users. Sessions live in ``auth.sessions``; refresh tokens are random, stored only as
sha256 hashes in ``auth.refresh_tokens`` and rotated on every use. As GoTrue, a token that
was rotated away less than ``[auth] refresh_token_reuse_interval`` seconds ago (10) may be
presented again (two clients refreshing at once): it gets a fresh token of the same session.
Presented later, it revokes its whole session.

Rate limits, on GoTrue's model (answered 429 ``over_request_rate_limit``, with Retry-After):
password grants and refresh grants per client IP per 5 minutes (``[auth.rate_limit]``
``sign_in_sign_ups`` and ``token_refresh``), and failed password grants per email address
per 5 minutes (``RACKPILOT_AUTH_FAILED_SIGN_IN_LIMIT``, 10), which also holds against a
guesser who spreads over many addresses. The counters live in the gateway process (the
stack runs one).

Access tokens are HS256 JWTs signed with the stack's secret, with the claims GoTrue puts
in them, so REST (and Postgres RLS through ``auth.uid()``/``auth.jwt()``) sees exactly what
hosted Supabase would give it.

Admin ``generate_link`` (type ``magiclink``) and ``POST /verify`` with its ``token_hash``
give a server-side caller a session for a user it has authenticated by other means (the
idm-login and break-glass functions): the hashed token is random, stored only as its sha256
in ``auth.one_time_tokens``, single use and valid ``MAGIC_LINK_TTL_S`` seconds. ``PUT
/admin/users/<id>`` updates email and metadata.

Errors follow GoTrue's 2024-01-01 API: a JSON body with ``code`` (string), ``error_code``,
``msg`` and ``message``, and the ``X-Supabase-Api-Version`` header, which tells the clients
to read ``code``. No response ever carries a password, a hash or a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import asyncpg
import bcrypt
import jwt
import orjson

from .asgi import BodyTooLarge, header_dict, read_body, send_bytes
from .jwtauth import JWTError, bearer_token

if TYPE_CHECKING:
    from .gateway import GatewayContext

log = logging.getLogger("rackpilot.auth")

PREFIX = "/auth/v1"
API_VERSION = b"2024-01-01"
BCRYPT_COST = 10  # GoTrue's default cost factor
MIN_PASSWORD_LEN = 6  # GoTrue's default minimum length (characters)
MAX_PASSWORD_BYTES = 72  # bcrypt only looks at the first 72 bytes; GoTrue refuses longer ones
MAX_EMAIL_LEN = 255  # auth.users.email is varchar(255)
MAX_PER_PAGE = 1000  # largest admin list page (users)
DEFAULT_PER_PAGE = 50  # GoTrue's default admin list page (users)
MAX_AUTH_BODY = 64 * 1024  # auth requests are small; refuse anything bigger (bytes)
POOL_SIZE = 4  # connections the auth service keeps to Postgres
MAGIC_LINK_TTL_S = 300  # how long a generate_link token can be verified (seconds)
RATE_WINDOW_S = 300.0  # the rate limits' window (seconds), as GoTrue's "per 5 minutes"
MAX_TRACKED_KEYS = 50_000  # addresses and emails a limiter remembers before it drops the idle ones
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ADMIN_ROLES = frozenset({"service_role", "supabase_admin"})

USER_COLUMNS = """
    id, aud, role, email, encrypted_password, email_confirmed_at, phone, last_sign_in_at,
    raw_app_meta_data, raw_user_meta_data, created_at, updated_at, banned_until, is_anonymous
"""


# --- errors ------------------------------------------------------------------------------
class AuthServiceError(Exception):
    """Root of every failure the auth service answers; ``code`` is GoTrue's error code."""

    status = 500
    code = "unexpected_failure"

    def __init__(self, message: str, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        if code is not None:
            self.code = code


class BadRequest(AuthServiceError):
    status = 400
    code = "validation_failed"


class Unauthorized(AuthServiceError):
    status = 401
    code = "no_authorization"


class Forbidden(AuthServiceError):
    status = 403
    code = "not_admin"


class NotFound(AuthServiceError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AuthServiceError):
    status = 405
    code = "method_not_allowed"


class Conflict(AuthServiceError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AuthServiceError):
    status = 413
    code = "request_too_large"


class Unprocessable(AuthServiceError):
    status = 422
    code = "validation_failed"


class TooManyRequests(AuthServiceError):
    status = 429
    code = "over_request_rate_limit"


class RateLimiter:
    """At most ``limit`` events per key in any ``window`` seconds (a sliding window).

    ``check`` refuses without counting; ``add`` counts. Memory stays bounded: beyond
    ``MAX_TRACKED_KEYS`` keys, those with no event left in the window are forgotten."""

    def __init__(self, limit: int, window: float = RATE_WINDOW_S, clock: Any = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, collections.deque[float]] = {}

    def _recent(self, key: str, now: float) -> collections.deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may act again, or None when it may act now."""
        if self.limit <= 0:
            return None
        now = self.clock()
        events = self._recent(key, now)
        if events is None or len(events) < self.limit:
            return None
        return max(0.0, events[0] + self.window - now)

    def add(self, key: str) -> None:
        now = self.clock()
        events = self._recent(key, now)
        if events is None:
            if len(self._events) >= MAX_TRACKED_KEYS:
                self._forget_idle(now)
            events = self._events[key] = collections.deque()
        events.append(now)

    def reset(self, key: str) -> None:
        self._events.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        for key in list(self._events):
            events = self._recent(key, now)
            if not events:
                del self._events[key]

    def take(self, key: str, what: str) -> None:
        """Count one event for ``key``, or raise 429 when the key is over its limit."""
        wait = self.retry_after(key)
        if wait is not None:
            raise TooManyRequests(
                f"Request rate limit reached: too many {what}; try again in {int(wait) + 1} s",
                extra={"retry_after": int(wait) + 1},
            )
        self.add(key)


# --- helpers -----------------------------------------------------------------------------
def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _password_bytes(password: str) -> bytes:
    # bcrypt (and pgcrypto's crypt(), which `rackpilot dev user add` uses) only ever look
    # at the first 72 bytes; truncating here keeps both kinds of hash verifiable.
    return password.encode()[:MAX_PASSWORD_BYTES]


def hash_password(password: str) -> str:
    return bcrypt.hashpw(_password_bytes(password), bcrypt.gensalt(BCRYPT_COST)).decode()


def check_password(password: str, hashed: str | None) -> bool:
    """True when ``password`` matches a bcrypt hash ($2a$ from pgcrypto or $2b$ from us)."""
    if not hashed:
        return False
    try:
        return bcrypt.checkpw(_password_bytes(password), hashed.encode())
    except ValueError:  # not a bcrypt hash at all
        return False


def user_json(row: asyncpg.Record) -> dict[str, Any]:
    """A user as GoTrue serialises it (the clients require id, aud, metadata, created_at)."""
    confirmed = _ts(row["email_confirmed_at"])
    return {
        "id": str(row["id"]),
        "aud": row["aud"],
        "role": row["role"],
        "email": row["email"] or "",
        "email_confirmed_at": confirmed,
        "phone": row["phone"] or "",
        "confirmed_at": confirmed,
        "last_sign_in_at": _ts(row["last_sign_in_at"]),
        "app_metadata": row["raw_app_meta_data"] or {},
        "user_metadata": row["raw_user_meta_data"] or {},
        "identities": [],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
        "is_anonymous": bool(row["is_anonymous"]),
    }


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, schema="pg_catalog", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads
        )


def _parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("User not found", "user_not_found") from None


def _opt_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _opt_obj(body: dict, key: str) -> dict | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{key} must be a JSON object")
    return value


# --- the service -------------------------------------------------------------------------
class AuthService:
    def __init__(self, ctx: GatewayContext):
        self.ctx = ctx
        self.secret = ctx.secrets.jwt_secret
        self.expiry = ctx.cfg.jwt_expiry
        self.issuer = f"{ctx.cfg.api_url}{PREFIX}"
        auth_cfg = ctx.cfg.supabase.get("auth", {})
        self.signup_enabled = bool(auth_cfg.get("enable_signup", False))
        self.confirmations = bool(auth_cfg.get("email", {}).get("enable_confirmations", False))
        self.min_password_len = int(auth_cfg.get("minimum_password_length", MIN_PASSWORD_LEN))
        self.rotate_refresh_tokens = bool(auth_cfg.get("enable_refresh_token_rotation", True))
        self.reuse_interval = ctx.cfg.refresh_token_reuse_interval
        limits = ctx.cfg.auth_rate_limits
        self.sign_in_per_ip = RateLimiter(limits["sign_in"])
        self.refresh_per_ip = RateLimiter(limits["refresh"])
        self.refresh_per_user = RateLimiter(limits["refresh"])
        self.failures_per_email = RateLimiter(limits["failed_sign_in"])
        self.pool: asyncpg.Pool | None = None
        # Checked against when the email is unknown, so a miss costs the same bcrypt time
        # as a wrong password and response timing does not reveal which accounts exist.
        self._dummy_hash = ""
        self._routes = {
            ("POST", "/token"): self._token,
            ("GET", "/user"): self._get_user,
            ("POST", "/logout"): self._logout,
            ("GET", "/settings"): self._settings,
            ("GET", "/health"): self._health,
            ("POST", "/signup"): self._signup,
            ("GET", "/admin/users"): self._admin_list,
            ("POST", "/admin/users"): self._admin_create,
            ("POST", "/admin/generate_link"): self._admin_generate_link,
            ("POST", "/verify"): self._verify,
        }

    async def startup(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.ctx.dsn("postgres"), min_size=1, max_size=POOL_SIZE, init=_init_connection
        )
        self._dummy_hash = await asyncio.to_thread(hash_password, secrets.token_urlsafe(16))

    async def shutdown(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    # --- ASGI entry ---------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        method: str = scope["method"]
        sub = scope["path"][len(PREFIX) :].rstrip("/") or "/"
        headers = header_dict(scope)
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        client = scope.get("client")
        headers["x-rackpilot-peer"] = client[0] if client else "unknown"  # the socket's peer, never a header
        try:
            status, payload, extra = await self._dispatch(method, sub, headers, query, receive)
        except AuthServiceError as exc:
            extra_headers = None
            if "retry_after" in exc.extra:
                extra_headers = [(b"retry-after", str(exc.extra["retry_after"]).encode())]
            await self._send(
                send,
                exc.status,
                {
                    "code": exc.code,
                    "error_code": exc.code,
                    "msg": exc.message,
                    "message": exc.message,
                    **exc.extra,
                },
                extra_headers,
            )
            return
        except Exception:  # noqa: BLE001 - never let a traceback reach a client
            log.exception("auth request failed: %s %s", method, sub)
            await self._send(
                send,
                500,
                {
                    "code": "unexpected_failure",
                    "error_code": "unexpected_failure",
                    "msg": "Unexpected failure, please check the server logs",
                    "message": "Unexpected failure, please check the server logs",
                },
            )
            return
        await self._send(send, status, payload, extra)

    async def _send(
        self, send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"x-supabase-api-version", API_VERSION), (b"cache-control", b"no-store"), *(extra or [])]
        if status == 204:
            await send_bytes(send, 204, b"", None, headers)
            return
        await send_bytes(send, status, orjson.dumps(payload), "application/json; charset=utf-8", headers)

    async def _dispatch(
        self, method: str, sub: str, headers: dict[str, str], query: dict[str, str], receive: Any
    ) -> tuple[int, Any, list[tuple[bytes, bytes]] | None]:
        handler = self._routes.get((method, sub))
        if handler is not None:
            return await handler(headers, query, receive)
        if sub.startswith("/admin/users/") and sub.count("/") == 3:
            uid = _parse_uuid(sub.rsplit("/", 1)[1])
            if method == "GET":
                return await self._admin_get(headers, uid)
            if method == "DELETE":
                return await self._admin_delete(headers, uid, receive)
            if method == "PUT":
                return await self._admin_update(headers, uid, receive)
            raise MethodNotAllowed(f"{method} is not supported on this endpoint")
        if any(path == sub for _, path in self._routes):
            raise MethodNotAllowed(f"{method} is not supported on this endpoint")
        raise NotFound(f"{sub} is not an endpoint of this auth server")

    # --- request plumbing ---------------------------------------------------------------
    async def _json_body(self, receive: Any) -> dict:
        try:
            raw = await read_body(receive, MAX_AUTH_BODY)
        except BodyTooLarge:
            raise PayloadTooLarge(f"Request body is larger than {MAX_AUTH_BODY} bytes") from None
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("Could not parse request body as JSON", "bad_json") from None
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object", "bad_json")
        return body

    def _claims(self, headers: dict[str, str], *, bearer_only: bool) -> dict:
        if bearer_only:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
        else:
            token = bearer_token(headers) or ""
        if not token:
            raise Unauthorized("This endpoint requires a Bearer token", "no_authorization")
        try:
            return self.ctx.verifier.verify(token)
        except JWTError as exc:
            raise Unauthorized(f"invalid JWT: {exc.message}", "bad_jwt") from None

    def _require_api_key(self, headers: dict[str, str]) -> dict:
        """Hosted Supabase's gateway refuses requests without a valid project API key."""
        token = headers.get("apikey") or bearer_token(headers)
        if not token:
            raise Unauthorized("No API key found in request", "no_authorization")
        try:
            return self.ctx.verifier.verify(token)
        except JWTError:
            raise Unauthorized("Invalid API key", "bad_jwt") from None

    def _require_admin(self, headers: dict[str, str]) -> None:
        claims = self._claims(headers, bearer_only=False)
        if claims.get("role") not in ADMIN_ROLES:
            raise Forbidden("User not allowed", "not_admin")

    def _db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise AuthServiceError("The auth service is not started")
        return self.pool

    # --- tokens -------------------------------------------------------------------------
    def _mint_access_token(
        self, user: asyncpg.Record, session_id: uuid.UUID, auth_time: int
    ) -> tuple[str, int, int]:
        now = int(time.time())
        exp = now + self.expiry
        claims = {
            "iss": self.issuer,
            "sub": str(user["id"]),
            "aud": user["aud"] or "authenticated",
            "exp": exp,
            "iat": now,
            "email": user["email"] or "",
            "phone": user["phone"] or "",
            "app_metadata": user["raw_app_meta_data"] or {},
            "user_metadata": user["raw_user_meta_data"] or {},
            # Only ever `authenticated`: the role claim picks the Postgres role REST runs
            # as, so a user row must not be able to mint itself anything stronger.
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": auth_time}],
            "session_id": str(session_id),
            "is_anonymous": bool(user["is_anonymous"]),
        }
        return jwt.encode(claims, self.secret, algorithm="HS256"), now, exp

    def _session_json(
        self, user: asyncpg.Record, session_id: uuid.UUID, auth_time: int, refresh_token: str
    ) -> dict[str, Any]:
        access, _now, exp = self._mint_access_token(user, session_id, auth_time)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.expiry,
            "expires_at": exp,
            "refresh_token": refresh_token,
            "user": user_json(user),
            "weak_password": None,
        }

    async def _token(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        self._require_api_key(headers)
        grant = query.get("grant_type")
        body = await self._json_body(receive)
        peer = headers["x-rackpilot-peer"]
        if grant == "password":
            self.sign_in_per_ip.take(peer, "sign-in attempts from this address")
            return 200, await self._password_grant(body), None
        if grant == "refresh_token":
            self.refresh_per_ip.take(peer, "token refreshes from this address")
            return 200, await self._refresh_grant(body), None
        if not grant:
            raise BadRequest("grant_type is required", "unsupported_grant_type")
        raise BadRequest(
            "Unsupported grant type: only password and refresh_token are available", "unsupported_grant_type"
        )

    async def _password_grant(self, body: dict) -> dict[str, Any]:
        email = _opt_str(body, "email")
        password = _opt_str(body, "password")
        if body.get("phone") is not None and email is None:
            raise BadRequest("Phone logins are not enabled on this server", "phone_provider_disabled")
        if not email or password is None:
            raise BadRequest("email and password are required")
        # Refused before the password is checked: a guesser learns nothing while locked out,
        # whatever the address they come from.
        email_key = email.strip().lower()
        wait = self.failures_per_email.retry_after(email_key)
        if wait is not None:
            raise TooManyRequests(
                f"Request rate limit reached: too many failed sign-ins for this account; "
                f"try again in {int(wait) + 1} s",
                extra={"retry_after": int(wait) + 1},
            )
        db = self._db()
        user = await db.fetchrow(
            f"select {USER_COLUMNS} from auth.users "
            "where email is not null and lower(email) = lower($1) and deleted_at is null",
            email,
        )
        hashed = user["encrypted_password"] if user is not None else None
        ok = await asyncio.to_thread(check_password, password, hashed or self._dummy_hash)
        if user is None or not hashed or not ok:
            self.failures_per_email.add(email_key)
            raise BadRequest("Invalid login credentials", "invalid_credentials")
        if user["banned_until"] is not None and user["banned_until"] > datetime.now(UTC):
            raise BadRequest("User is banned", "user_banned")
        if user["email_confirmed_at"] is None:
            # As GoTrue: an admin-created user without email_confirm cannot sign in yet.
            raise BadRequest("Email not confirmed", "email_not_confirmed")
        self.failures_per_email.reset(email_key)
        session_id = uuid.uuid4()
        refresh = secrets.token_urlsafe(32)
        async with db.acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into auth.sessions (id, user_id) values ($1, $2)", session_id, user["id"]
            )
            await conn.execute(
                "insert into auth.refresh_tokens (token_hash, user_id, session_id) values ($1, $2, $3)",
                _hash_token(refresh),
                user["id"],
                session_id,
            )
            user = await conn.fetchrow(
                f"update auth.users set last_sign_in_at = now() where id = $1 returning {USER_COLUMNS}",
                user["id"],
            )
        return self._session_json(user, session_id, int(time.time()), refresh)

    async def _refresh_grant(self, body: dict) -> dict[str, Any]:
        token = _opt_str(body, "refresh_token")
        if not token:
            raise BadRequest("refresh_token is required")
        token_hash = _hash_token(token)
        reused = False
        new_token = secrets.token_urlsafe(32)
        async with self._db().acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "select rt.id, rt.user_id, rt.session_id, rt.revoked, "
                    "case when rt.revoked then rt.updated_at end as revoked_at, "
                    "s.not_after, s.created_at as session_created "
                    "from auth.refresh_tokens rt join auth.sessions s on s.id = rt.session_id "
                    "where rt.token_hash = $1 for update of rt, s",
                    token_hash,
                )
                if row is None:
                    raise BadRequest(
                        "Invalid Refresh Token: Refresh Token Not Found", "refresh_token_not_found"
                    )
                in_reuse_window = (
                    row["revoked"]
                    and row["revoked_at"] is not None
                    and (datetime.now(UTC) - row["revoked_at"]).total_seconds() < self.reuse_interval
                )
                if row["revoked"] and not in_reuse_window:
                    # A rotated-away token came back: someone holds a copy. Revoke the whole
                    # session (its refresh tokens cascade) and commit that before refusing.
                    await conn.execute("delete from auth.sessions where id = $1", row["session_id"])
                    reused = True
                else:
                    # A fresh token, or one rotated within the reuse interval (a concurrent
                    # refresh of the same token): either way the session goes on with a new token.
                    if row["not_after"] is not None and row["not_after"] <= datetime.now(UTC):
                        raise BadRequest("Invalid Refresh Token: Session Expired", "session_expired")
                    user = await conn.fetchrow(
                        f"select {USER_COLUMNS} from auth.users where id = $1 and deleted_at is null",
                        row["user_id"],
                    )
                    if user is None:
                        raise NotFound("User from refresh token does not exist", "user_not_found")
                    if user["banned_until"] is not None and user["banned_until"] > datetime.now(UTC):
                        raise BadRequest("User is banned", "user_banned")
                    self.refresh_per_user.take(str(row["user_id"]), "token refreshes for this user")
                    if not self.rotate_refresh_tokens and not row["revoked"]:
                        # [auth] enable_refresh_token_rotation = false: the token stays valid
                        new_token = token
                    elif not row["revoked"]:
                        await conn.execute(
                            "update auth.refresh_tokens set revoked = true, updated_at = now() where id = $1",
                            row["id"],
                        )
                    if new_token != token:
                        await conn.execute(
                            "insert into auth.refresh_tokens (token_hash, user_id, session_id, parent_hash) "
                            "values ($1, $2, $3, $4)",
                            _hash_token(new_token),
                            row["user_id"],
                            row["session_id"],
                            token_hash,
                        )
                    await conn.execute(
                        "update auth.sessions set updated_at = now() where id = $1", row["session_id"]
                    )
        if reused:
            raise BadRequest("Invalid Refresh Token: Already Used", "refresh_token_already_used")
        auth_time = int(row["session_created"].timestamp())
        return self._session_json(user, row["session_id"], auth_time, new_token)

    # --- the signed-in user -------------------------------------------------------------
    async def _current(self, headers: dict[str, str]) -> tuple[dict, uuid.UUID, uuid.UUID | None]:
        claims = self._claims(headers, bearer_only=True)
        sub = claims.get("sub")
        if not sub:
            raise Forbidden("invalid claim: missing sub claim", "bad_jwt")
        try:
            uid = uuid.UUID(str(sub))
        except ValueError:
            raise Forbidden("invalid claim: sub claim must be a UUID", "bad_jwt") from None
        sid_raw = claims.get("session_id")
        sid: uuid.UUID | None = None
        if sid_raw:
            try:
                sid = uuid.UUID(str(sid_raw))
            except ValueError:
                raise Forbidden("invalid claim: session_id claim must be a UUID", "bad_jwt") from None
            found = await self._db().fetchval(
                "select 1 from auth.sessions where id = $1 and user_id = $2", sid, uid
            )
            if not found:
                raise Forbidden("Session from session_id claim in JWT does not exist", "session_not_found")
        return claims, uid, sid

    async def _get_user(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        _claims, uid, _sid = await self._current(headers)
        user = await self._db().fetchrow(
            f"select {USER_COLUMNS} from auth.users where id = $1 and deleted_at is null", uid
        )
        if user is None:
            raise Forbidden("User from sub claim in JWT does not exist", "user_not_found")
        return 200, user_json(user), None

    async def _logout(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        scope = query.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise BadRequest("scope must be one of global, local, others")
        _claims, uid, sid = await self._current(headers)
        db = self._db()
        if scope == "global" or sid is None:
            await db.execute("delete from auth.sessions where user_id = $1", uid)
        elif scope == "local":
            await db.execute("delete from auth.sessions where id = $1 and user_id = $2", sid, uid)
        else:
            await db.execute("delete from auth.sessions where user_id = $1 and id <> $2", uid, sid)
        return 204, None, None

    # --- public info --------------------------------------------------------------------
    async def _settings(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        return (
            200,
            {
                "external": {"email": True, "phone": False, "anonymous_users": False},
                "disable_signup": not self.signup_enabled,
                "mailer_autoconfirm": not self.confirmations,
                "phone_autoconfirm": False,
                "sms_provider": "",
                "saml_enabled": False,
            },
            None,
        )

    async def _health(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        return (
            200,
            {
                "version": "rackpilot-local",
                "name": "GoTrue",
                "description": "GoTrue-compatible auth of the rackpilot local stack",
            },
            None,
        )

    async def _signup(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        """Self-service sign-up, as ``[auth] enable_signup`` says (rackpilot keeps it off:
        operators are created with ``rackpilot dev user add`` or the admin API). With
        ``[auth.email] enable_confirmations`` the user waits unconfirmed (this server sends
        no mail: an admin confirms); without, the answer is a session, as GoTrue's."""
        self._require_api_key(headers)
        body = await self._json_body(receive)
        if not self.signup_enabled:
            raise Unprocessable("Signups not allowed for this instance", "signup_disabled")
        self.sign_in_per_ip.take(headers["x-rackpilot-peer"], "sign-ups from this address")
        if body.get("phone") is not None and body.get("email") is None:
            raise BadRequest("Phone signups are not enabled on this server", "phone_provider_disabled")
        email, hashed = await self._new_credentials(
            _opt_str(body, "email"), _opt_str(body, "password"), password_required=True
        )
        user_meta = _opt_obj(body, "data") or {}
        app_meta = {"provider": "email", "providers": ["email"]}
        try:
            user = await self._db().fetchrow(
                f"insert into auth.users (email, encrypted_password, email_confirmed_at, raw_app_meta_data, "
                f"raw_user_meta_data) values (lower($1), $2, case when $3 then now() end, $4, $5) "
                f"returning {USER_COLUMNS}",
                email,
                hashed,
                not self.confirmations,
                app_meta,
                user_meta,
            )
        except asyncpg.UniqueViolationError:
            raise Unprocessable("User already registered", "user_already_exists") from None
        if self.confirmations:
            return 200, user_json(user), None
        session_id = uuid.uuid4()
        refresh = secrets.token_urlsafe(32)
        async with self._db().acquire() as conn, conn.transaction():
            await conn.execute(
                "insert into auth.sessions (id, user_id) values ($1, $2)", session_id, user["id"]
            )
            await conn.execute(
                "insert into auth.refresh_tokens (token_hash, user_id, session_id) values ($1, $2, $3)",
                _hash_token(refresh),
                user["id"],
                session_id,
            )
            user = await conn.fetchrow(
                f"update auth.users set last_sign_in_at = now() where id = $1 returning {USER_COLUMNS}",
                user["id"],
            )
        return 200, self._session_json(user, session_id, int(time.time()), refresh), None

    async def _new_credentials(
        self, email: str | None, password: str | None, password_required: bool
    ) -> tuple[str, str | None]:
        """A new user's email (validated) and bcrypt hash (None without a password)."""
        if not email:
            raise BadRequest("email is required")
        email = email.strip()
        if len(email) > MAX_EMAIL_LEN or not EMAIL_RE.match(email):
            raise BadRequest("Unable to validate email address: invalid format", "email_address_invalid")
        if password is None:
            if password_required:
                raise BadRequest("Signup requires a valid password", "validation_failed")
            return email, None
        if len(password) < self.min_password_len:
            # The clients read the reasons of a weak_password error from this object.
            raise Unprocessable(
                f"Password should be at least {self.min_password_len} characters.",
                "weak_password",
                {"weak_password": {"reasons": ["length"]}},
            )
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            raise Unprocessable(f"Password cannot be longer than {MAX_PASSWORD_BYTES} bytes")
        return email, await asyncio.to_thread(hash_password, password)

    # --- admin --------------------------------------------------------------------------
    async def _admin_create(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        self._require_admin(headers)
        body = await self._json_body(receive)
        email = _opt_str(body, "email")
        password = _opt_str(body, "password")
        user_meta = _opt_obj(body, "user_metadata") or {}
        app_meta = _opt_obj(body, "app_metadata") or {}
        confirm = body.get("email_confirm", False)
        if not isinstance(confirm, bool):
            raise BadRequest("email_confirm must be a boolean")
        role = body.get("role")
        if role not in (None, "authenticated"):
            raise BadRequest("role: only 'authenticated' users can be created here")
        if body.get("phone") is not None:
            raise BadRequest("Phone users are not supported by this server", "phone_provider_disabled")
        email, hashed = await self._new_credentials(email, password, password_required=False)
        app_meta = {**app_meta, "provider": "email", "providers": ["email"]}
        try:
            user = await self._db().fetchrow(
                f"insert into auth.users (email, encrypted_password, email_confirmed_at, raw_app_meta_data, "
                f"raw_user_meta_data) values (lower($1), $2, case when $3 then now() end, $4, $5) "
                f"returning {USER_COLUMNS}",
                email,
                hashed,
                confirm,
                app_meta,
                user_meta,
            )
        except asyncpg.UniqueViolationError:
            raise Unprocessable(
                "A user with this email address has already been registered", "email_exists"
            ) from None
        return 200, user_json(user), None

    async def _admin_list(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        self._require_admin(headers)
        page = self._int_param(query, "page", 1, 1, 1_000_000)
        per_page = self._int_param(query, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
        db = self._db()
        rows = await db.fetch(
            f"select {USER_COLUMNS} from auth.users where deleted_at is null "
            "order by created_at desc, id limit $1 offset $2",
            per_page,
            (page - 1) * per_page,
        )
        total = await db.fetchval("select count(*) from auth.users where deleted_at is null")
        links = []
        last = max(1, -(-total // per_page))
        base = f"{self.issuer}/admin/users?per_page={per_page}"
        if page < last:
            links.append(f'<{base}&page={page + 1}>; rel="next"')
        links.append(f'<{base}&page={last}>; rel="last"')
        extra = [(b"x-total-count", str(total).encode()), (b"link", ", ".join(links).encode())]
        return 200, {"users": [user_json(r) for r in rows], "aud": "authenticated"}, extra

    @staticmethod
    def _int_param(query: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
        raw = query.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{key} must be an integer") from None
        if not lo <= value <= hi:
            raise BadRequest(f"{key} must be between {lo} and {hi}")
        return value

    async def _admin_get(self, headers: dict[str, str], uid: uuid.UUID):
        self._require_admin(headers)
        user = await self._db().fetchrow(
            f"select {USER_COLUMNS} from auth.users where id = $1 and deleted_at is null", uid
        )
        if user is None:
            raise NotFound("User not found", "user_not_found")
        return 200, user_json(user), None

    async def _admin_delete(self, headers: dict[str, str], uid: uuid.UUID, receive: Any):
        self._require_admin(headers)
        body = await self._json_body(receive)
        soft = body.get("should_soft_delete", False)
        if not isinstance(soft, bool):
            raise BadRequest("should_soft_delete must be a boolean")
        db = self._db()
        try:
            async with db.acquire() as conn, conn.transaction():
                if soft:
                    # GoTrue keeps the row but frees the email and ends every session.
                    done = await conn.fetchval(
                        "update auth.users set deleted_at = now(), email = null, encrypted_password = null, "
                        "updated_at = now() where id = $1 and deleted_at is null returning id",
                        uid,
                    )
                    await conn.execute("delete from auth.sessions where user_id = $1", uid)
                else:
                    done = await conn.fetchval("delete from auth.users where id = $1 returning id", uid)
        except asyncpg.ForeignKeyViolationError:
            raise Conflict(
                "Database error deleting user: rows in other tables still reference this user", "conflict"
            ) from None
        if done is None:
            raise NotFound("User not found", "user_not_found")
        return 200, {}, None

    async def _admin_update(self, headers: dict[str, str], uid: uuid.UUID, receive: Any):
        """PUT /admin/users/<id>: email, user_metadata, app_metadata (merged as GoTrue does)."""
        self._require_admin(headers)
        body = await self._json_body(receive)
        email = _opt_str(body, "email")
        user_meta = _opt_obj(body, "user_metadata")
        app_meta = _opt_obj(body, "app_metadata")
        if body.get("password") is not None or body.get("phone") is not None:
            raise BadRequest("only email, user_metadata and app_metadata can be updated here")
        if email is not None:
            email = email.strip()
            if len(email) > MAX_EMAIL_LEN or not EMAIL_RE.match(email):
                raise BadRequest("Unable to validate email address: invalid format", "email_address_invalid")
        try:
            user = await self._db().fetchrow(
                f"update auth.users set email = coalesce(lower($2), email), "
                f"raw_user_meta_data = raw_user_meta_data || coalesce($3, '{{}}'::jsonb), "
                f"raw_app_meta_data = raw_app_meta_data || coalesce($4, '{{}}'::jsonb), updated_at = now() "
                f"where id = $1 and deleted_at is null returning {USER_COLUMNS}",
                uid,
                email,
                user_meta,
                app_meta,
            )
        except asyncpg.UniqueViolationError:
            raise Unprocessable(
                "A user with this email address has already been registered", "email_exists"
            ) from None
        if user is None:
            raise NotFound("User not found", "user_not_found")
        return 200, user_json(user), None

    async def _admin_generate_link(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        """POST /admin/generate_link, type magiclink: a single-use token for an existing user.
        The answer is the user with action_link, email_otp, hashed_token, redirect_to and
        verification_type, as GoTrue's (supabase-js splits them into user and properties)."""
        self._require_admin(headers)
        body = await self._json_body(receive)
        kind = _opt_str(body, "type")
        email = _opt_str(body, "email")
        if kind != "magiclink":
            raise BadRequest("only type magiclink is supported by this server", "validation_failed")
        if not email:
            raise BadRequest("email is required")
        db = self._db()
        user = await db.fetchrow(
            f"select {USER_COLUMNS} from auth.users "
            "where email is not null and lower(email) = lower($1) and deleted_at is null",
            email,
        )
        if user is None:
            raise NotFound("User not found", "user_not_found")
        hashed_token = secrets.token_hex(28)
        await db.execute(
            "insert into auth.one_time_tokens (user_id, token_type, token_hash, expires_at) "
            "values ($1, 'magiclink', $2, now() + make_interval(secs => $3))",
            user["id"],
            _hash_token(hashed_token),
            MAGIC_LINK_TTL_S,
        )
        redirect_to = _opt_str(body, "redirect_to") or self.ctx.cfg.supabase.get("auth", {}).get(
            "site_url", ""
        )
        return (
            200,
            {
                **user_json(user),
                "action_link": f"{self.issuer}/verify?token={hashed_token}&type=magiclink&redirect_to={redirect_to}",
                "email_otp": "",
                "hashed_token": hashed_token,
                "verification_type": "magiclink",
                "redirect_to": redirect_to,
            },
            None,
        )

    async def _verify(self, headers: dict[str, str], query: dict[str, str], receive: Any):
        """POST /verify {type: magiclink|email, token_hash}: a session, once per token."""
        self._require_api_key(headers)
        body = await self._json_body(receive)
        self.sign_in_per_ip.take(headers["x-rackpilot-peer"], "verifications from this address")
        kind = _opt_str(body, "type")
        token_hash = _opt_str(body, "token_hash")
        if kind not in ("magiclink", "email") or not token_hash:
            raise BadRequest("type magiclink (or email) with a token_hash is required", "validation_failed")
        session_id = uuid.uuid4()
        refresh = secrets.token_urlsafe(32)
        async with self._db().acquire() as conn, conn.transaction():
            user_id = await conn.fetchval(
                "delete from auth.one_time_tokens where token_hash = $1 and token_type = 'magiclink' "
                "returning case when expires_at > now() then user_id end",
                _hash_token(token_hash),
            )
            if user_id is None:
                raise Forbidden("Email link is invalid or has expired", "otp_expired")
            user = await conn.fetchrow(
                f"update auth.users set last_sign_in_at = now(), email_confirmed_at = coalesce(email_confirmed_at, now()) "
                f"where id = $1 and deleted_at is null returning {USER_COLUMNS}",
                user_id,
            )
            if user is None:
                raise Forbidden("Email link is invalid or has expired", "otp_expired")
            if user["banned_until"] is not None and user["banned_until"] > datetime.now(UTC):
                raise BadRequest("User is banned", "user_banned")
            await conn.execute("insert into auth.sessions (id, user_id) values ($1, $2)", session_id, user_id)
            await conn.execute(
                "insert into auth.refresh_tokens (token_hash, user_id, session_id) values ($1, $2, $3)",
                _hash_token(refresh),
                user_id,
                session_id,
            )
        return 200, self._session_json(user, session_id, int(time.time()), refresh), None
