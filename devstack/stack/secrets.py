"""Per-stack secrets: the JWT secret and the database passwords, persisted 0600.

The anon and service_role keys are HS256 JWTs with the claim shape Supabase issues, so
the official clients and any code that inspects them cannot tell them apart.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

KEY_LIFETIME_S = 10 * 365 * 24 * 3600  # API keys: ten years, as Supabase's local keys


@dataclass(frozen=True)
class StackSecrets:
    jwt_secret: str
    postgres_password: str
    authenticator_password: str
    anon_key: str
    service_role_key: str

    @classmethod
    def load_or_create(cls, path: Path) -> StackSecrets:
        if path.exists():
            data = json.loads(path.read_text())
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            now = int(time.time())
            secret = secrets.token_urlsafe(48)
            data = {
                "jwt_secret": secret,
                "postgres_password": secrets.token_urlsafe(24),
                "authenticator_password": secrets.token_urlsafe(24),
                "anon_key": mint_api_key(secret, "anon", now),
                "service_role_key": mint_api_key(secret, "service_role", now),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2)
        return cls(**data)


def mint_api_key(secret: str, role: str, now: int | None = None) -> str:
    now = int(time.time()) if now is None else now
    claims = {
        "iss": "supabase",
        "ref": "rackpilot-local",
        "role": role,
        "iat": now,
        "exp": now + KEY_LIFETIME_S,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
