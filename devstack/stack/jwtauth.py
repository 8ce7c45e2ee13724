"""JWT verification shared by every service of the gateway.

Tokens are HS256 JWTs signed with the stack's secret, exactly as Supabase issues them.
Verified tokens are cached (keyed by the token string) until shortly before they expire,
so the REST hot path does not pay for HMAC and JSON decoding on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import jwt

API_ROLES = frozenset({"anon", "authenticated", "service_role"})
CACHE_SIZE = 4096  # verified tokens kept (count)


class JWTError(Exception):
    """A token is missing, malformed, forged or expired. ``code`` is PostgREST's."""

    def __init__(self, message: str, code: str = "PGRST301"):
        super().__init__(message)
        self.message = message
        self.code = code


class JWTVerifier:
    def __init__(self, secret: str, leeway_s: int = 0):
        self._secret = secret
        self._leeway = leeway_s
        self._cache: OrderedDict[str, tuple[dict, float]] = OrderedDict()

    def verify(self, token: str | None) -> dict:
        """Return the claims of a valid token, or raise JWTError."""
        if not token:
            raise JWTError("No API key found in request", "PGRST301")
        hit = self._cache.get(token)
        now = time.time()
        if hit is not None:
            claims, exp = hit
            if exp > now:
                self._cache.move_to_end(token)
                return claims
            del self._cache[token]
            raise JWTError("JWT expired", "PGRST303")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                leeway=self._leeway,
                options={"verify_aud": False, "require": ["exp", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise JWTError("JWT expired", "PGRST303") from None
        except jwt.MissingRequiredClaimError as exc:
            raise JWTError(f"JWT is missing the {exc.claim!r} claim", "PGRST301") from None
        except jwt.InvalidTokenError:
            raise JWTError("JWT could not be verified", "PGRST301") from None
        role = claims.get("role")
        if not isinstance(role, str) or role not in API_ROLES:
            raise JWTError("JWT role is not an API role", "PGRST301")
        self._cache[token] = (claims, float(claims["exp"]))
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return claims


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of a request: the Authorization bearer, else the apikey header.

    ``headers`` has lower-case names (ASGI gives them so)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = headers.get("apikey")
    return key.strip() if key else None
