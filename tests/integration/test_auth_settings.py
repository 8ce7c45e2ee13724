"""Auth honours supabase/config.toml: enable_signup, email confirmations, the minimum
password length and refresh-token rotation.

rackpilot's own config.toml turns sign-up off, so these run the real auth service
(devstack.stack.auth.AuthService) in-process, against the test stack's database, with the
settings changed in a copy of the config; requests go through httpx's ASGI transport.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid

import httpx
import pytest

from devstack.stack.auth import AuthService
from devstack.stack.gateway import GatewayContext
from devstack.stack.jwtauth import JWTVerifier


def _service(stack, **auth: object) -> AuthService:
    supabase = copy.deepcopy(stack.cfg.supabase)
    section = supabase.setdefault("auth", {})
    for key, value in auth.items():
        if key == "enable_confirmations":
            section.setdefault("email", {})[key] = value
        else:
            section[key] = value
    cfg = dataclasses.replace(stack.cfg, supabase=supabase)
    return AuthService(
        GatewayContext(cfg=cfg, secrets=stack.secrets, verifier=JWTVerifier(stack.secrets.jwt_secret))
    )


@pytest.fixture
async def auth_client(stack, request):
    svc = _service(stack, **getattr(request, "param", {}))
    await svc.startup()
    transport = httpx.ASGITransport(app=svc)
    async with httpx.AsyncClient(
        transport=transport,
        base_url=f"{stack.cfg.api_url}/auth/v1",
        headers={"apikey": stack.secrets.anon_key},
    ) as client:
        yield client
    await svc.shutdown()


def _email() -> str:
    return f"signup-{uuid.uuid4().hex[:10]}@example.com"


@pytest.mark.parametrize("auth_client", [{"enable_signup": False}], indirect=True)
async def test_signup_refused_when_disabled(auth_client):
    r = await auth_client.post("/signup", json={"email": _email(), "password": "long-enough-pw"})
    assert r.status_code == 422 and r.json()["code"] == "signup_disabled"
    assert (await auth_client.get("/settings")).json()["disable_signup"] is True


@pytest.mark.parametrize(
    "auth_client", [{"enable_signup": True, "minimum_password_length": 10}], indirect=True
)
async def test_signup_when_enabled_returns_a_session(auth_client):
    email = _email()
    r = await auth_client.post("/signup", json={"email": email, "password": "short-pw"})
    assert r.status_code == 422 and r.json()["code"] == "weak_password"
    r = await auth_client.post(
        "/signup", json={"email": email, "password": "long-enough-pw", "data": {"display_name": "Ada"}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["email"] == email and body["user"]["user_metadata"] == {"display_name": "Ada"}
    assert body["access_token"] and body["refresh_token"]
    user = await auth_client.get("/user", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert user.status_code == 200 and user.json()["email"] == email
    again = await auth_client.post("/signup", json={"email": email.upper(), "password": "long-enough-pw"})
    assert again.status_code == 422 and again.json()["code"] == "user_already_exists"
    settings = (await auth_client.get("/settings")).json()
    assert settings["disable_signup"] is False and settings["mailer_autoconfirm"] is True


@pytest.mark.parametrize(
    "auth_client", [{"enable_signup": True, "enable_confirmations": True}], indirect=True
)
async def test_signup_with_confirmations_waits_unconfirmed(auth_client):
    email = _email()
    r = await auth_client.post("/signup", json={"email": email, "password": "long-enough-pw"})
    assert r.status_code == 200 and "access_token" not in r.json()
    assert r.json()["email"] == email and r.json()["email_confirmed_at"] is None
    r = await auth_client.post(
        "/token", params={"grant_type": "password"}, json={"email": email, "password": "long-enough-pw"}
    )
    assert r.status_code == 400 and r.json()["code"] == "email_not_confirmed"


@pytest.mark.parametrize(
    "auth_client", [{"enable_signup": True, "enable_refresh_token_rotation": False}], indirect=True
)
async def test_refresh_without_rotation_keeps_the_token(auth_client):
    r = await auth_client.post("/signup", json={"email": _email(), "password": "long-enough-pw"})
    token = r.json()["refresh_token"]
    for _ in range(3):
        r = await auth_client.post(
            "/token", params={"grant_type": "refresh_token"}, json={"refresh_token": token}
        )
        assert r.status_code == 200 and r.json()["refresh_token"] == token
