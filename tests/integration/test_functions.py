"""Functions (/functions/v1) through supabase-py's functions.invoke, against the real
Deno router, plus the relay's own failure modes with a service run in-process."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import pytest
from supabase_functions.errors import FunctionsHttpError

from devstack.stack.functions import FunctionsService
from devstack.stack.gateway import GatewayContext
from devstack.stack.jwtauth import JWTVerifier
from supabase import acreate_client, create_client

PASSWORD = "functions-test-pw"


@pytest.fixture(scope="module")
def member(api_url, service_key) -> Iterator[dict]:
    admin = create_client(api_url, service_key)
    email = f"fn-{uuid.uuid4().hex[:12]}@example.com"
    user = admin.auth.admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True}).user
    yield {"id": user.id, "email": email}
    admin.auth.admin.delete_user(user.id)


def _json(data: bytes) -> dict:
    return json.loads(data)


def test_hello_with_the_anon_key(api_url, anon_key):
    client = create_client(api_url, anon_key)
    reply = _json(client.functions.invoke("hello"))
    assert reply == {"message": "Hello, anonymous!", "role": "anon", "anonymous": True, "user": None}
    reply = _json(client.functions.invoke("hello", {"body": {"name": "Grace"}}))
    assert reply["message"] == "Hello, Grace!" and reply["anonymous"] is True


def test_hello_as_a_signed_in_user(api_url, anon_key, member):
    client = create_client(api_url, anon_key)
    client.auth.sign_in_with_password({"email": member["email"], "password": PASSWORD})
    reply = _json(client.functions.invoke("hello"))
    # The function asked Auth (through supabase-js with the caller's token) who this is.
    assert reply["role"] == "authenticated" and reply["anonymous"] is False
    assert reply["user"] == {"id": member["id"], "email": member["email"]}
    assert reply["message"] == f"Hello, {member['email']}!"
    client.auth.sign_out()


def test_hello_with_the_service_key(api_url, service_key):
    reply = _json(create_client(api_url, service_key).functions.invoke("hello", {"body": {"name": "ops"}}))
    assert reply == {"message": "Hello, ops!", "role": "service_role", "anonymous": False, "user": None}


async def test_hello_async_client(api_url, anon_key, member):
    client = await acreate_client(api_url, anon_key)
    assert _json(await client.functions.invoke("hello"))["anonymous"] is True
    await client.auth.sign_in_with_password({"email": member["email"], "password": PASSWORD})
    assert _json(await client.functions.invoke("hello"))["user"]["id"] == member["id"]
    await client.auth.sign_out()


def test_verify_jwt_refuses_forged_expired_and_missing_tokens(api_url, anon_key, stack, member):
    now = int(time.time())
    claims = {"sub": member["id"], "role": "authenticated", "aud": "authenticated"}
    forged = jwt.encode({**claims, "iat": now, "exp": now + 600}, "x" * 48, algorithm="HS256")
    expired = jwt.encode(
        {**claims, "iat": now - 900, "exp": now - 600}, stack.secrets.jwt_secret, algorithm="HS256"
    )
    for token in (forged, expired):
        client = create_client(api_url, anon_key)
        client.functions.set_auth(token)
        with pytest.raises(FunctionsHttpError) as err:
            client.functions.invoke("hello")
        assert err.value.status == 401 and err.value.message == "Invalid JWT"
    r = httpx.post(f"{api_url}/functions/v1/hello", json={})
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED_NO_AUTH_HEADER"


def test_unknown_function_is_404(api_url, anon_key):
    client = create_client(api_url, anon_key)
    for name in ("no-such-function", "_shared", "tests"):
        with pytest.raises(FunctionsHttpError) as err:
            client.functions.invoke(name)
        assert err.value.status == 404, name
    r = httpx.post(f"{api_url}/functions/v1/", headers={"Authorization": f"Bearer {anon_key}"})
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


def test_dot_segments_cannot_reach_another_function(api_url, anon_key):
    """verify_jwt is checked for the first path segment; Deno would resolve `..` (also
    percent-encoded) to another function, so such paths are refused outright."""
    headers = {"Authorization": f"Bearer {anon_key}"}
    for path in ("hello/%2e%2e/hello", "hello/%2E./hello", "hello/%2e/x"):
        r = httpx.post(f"{api_url}/functions/v1/{path}", headers=headers)
        assert r.status_code == 404, path
    # A client cannot name a different function to the router either.
    r = httpx.post(f"{api_url}/functions/v1/hello", headers={**headers, "x-rackpilot-function": "other"})
    assert r.status_code == 200 and r.json()["anonymous"] is True


def test_function_errors_reach_the_caller_as_json(api_url, anon_key):
    headers = {"Authorization": f"Bearer {anon_key}", "apikey": anon_key, "content-type": "application/json"}
    base = f"{api_url}/functions/v1/hello"
    r = httpx.post(base, content=b'{"name": ', headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "bad_json" and r.json()["error"]
    r = httpx.post(base, json={"name": 42}, headers=headers)
    assert r.status_code == 400 and r.json() == {
        "error": "name must be a non-empty string of at most 100 characters",
        "code": "invalid_name",
        "details": {"max_length": 100},
    }
    r = httpx.put(base, json={}, headers=headers)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    # The client surfaces the function's `error` as the exception message.
    with pytest.raises(FunctionsHttpError) as err:
        create_client(api_url, anon_key).functions.invoke("hello", {"body": {"name": ""}})
    assert err.value.status == 400 and "name must be" in err.value.message
    # GET with a query string and a sub-path: the function sees /hello/... like hosted.
    r = httpx.get(f"{base}/sub/path?x=1", headers=headers)
    assert r.status_code == 200 and r.json()["anonymous"] is True


# --- the relay itself, in-process --------------------------------------------------------
@pytest.fixture
async def relay(stack) -> AsyncIterator[FunctionsService]:
    ctx = GatewayContext(cfg=stack.cfg, secrets=stack.secrets, verifier=JWTVerifier(stack.secrets.jwt_secret))
    svc = FunctionsService(ctx)
    await svc.startup()
    try:
        yield svc
    finally:
        await svc.shutdown()


async def _invoke(svc: FunctionsService, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=svc)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.post(
            "/functions/v1/hello",
            json={"name": "relay"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


async def test_functions_get_the_supabase_env(relay, supabase_env):
    env = relay.function_env()
    for key in ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        assert env[key] == supabase_env[key], key


async def test_verify_jwt_follows_config_toml(relay):
    transport = httpx.ASGITransport(app=relay)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        r = await client.post("/functions/v1/hello", json={})
        assert r.status_code == 401  # [functions.hello] verify_jwt = true
        cfg = relay.ctx.cfg
        relay.ctx.cfg = dataclasses.replace(
            cfg, supabase={**cfg.supabase, "functions": {"hello": {"verify_jwt": False}}}
        )
        try:
            r = await client.post("/functions/v1/hello", json={}, timeout=30)
            assert r.status_code == 200 and r.json()["anonymous"] is True
        finally:
            relay.ctx.cfg = cfg


async def test_dead_deno_is_a_relay_error_then_restarts(relay, anon_key):
    assert (await _invoke(relay, anon_key)).json()["message"] == "Hello, relay!"
    relay.proc.kill()
    relay.proc.wait()
    relay.restart_interval_s = 3600.0  # a restart was "just" tried: the relay must say so
    r = await _invoke(relay, anon_key)
    assert r.status_code == 503 and r.headers["x-relay-error"] == "true" and r.json()["error"]
    relay.restart_interval_s = 0.0
    r = await _invoke(relay, anon_key)
    assert r.status_code == 200 and r.json()["message"] == "Hello, relay!"


async def test_missing_deno_binary_is_a_relay_error(stack, anon_key):
    ctx = GatewayContext(
        cfg=stack.cfg,
        secrets=stack.secrets,
        verifier=JWTVerifier(stack.secrets.jwt_secret),
        extras={"deno_bin": "/nonexistent/deno"},
    )
    svc = FunctionsService(ctx)
    await svc.startup()  # must not raise: REST and Auth keep working without Deno
    try:
        r = await _invoke(svc, anon_key)
        assert r.status_code == 503 and r.headers["x-relay-error"] == "true"
        assert r.json()["code"] == "RELAY_UNAVAILABLE" and "/nonexistent" not in r.text
    finally:
        await svc.shutdown()
