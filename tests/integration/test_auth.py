"""Auth (/auth/v1) through the official supabase-py client, sync and async, plus the
raw-HTTP cases the client cannot produce (bad JSON, forged and expired tokens)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from devstack.cli import add_user
from supabase import acreate_client, create_client

PASSWORD = "correct-horse-battery"


def _email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture(scope="module")
def admin(api_url, service_key):
    return create_client(api_url, service_key)


@pytest.fixture
def user(admin) -> Iterator[dict]:
    """A confirmed user made through the admin API; deleted afterwards."""
    email = _email()
    created = admin.auth.admin.create_user(
        {
            "email": email,
            "password": PASSWORD,
            "email_confirm": True,
            "user_metadata": {"display_name": "Ada"},
            "app_metadata": {"team": "ops"},
        }
    ).user
    yield {"id": created.id, "email": email}
    try:
        admin.auth.admin.delete_user(created.id)
    except AuthApiError as exc:  # the test itself may have deleted it
        assert exc.status == 404


@pytest.fixture
def http(api_url, anon_key) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{api_url}/auth/v1", headers={"apikey": anon_key}, timeout=10) as client:
        yield client


def test_password_sign_in_session_and_claims(api_url, anon_key, stack, user):
    client = create_client(api_url, anon_key)
    res = client.auth.sign_in_with_password({"email": user["email"], "password": PASSWORD})
    session = res.session
    assert session is not None and session.token_type == "bearer"
    assert session.expires_in == stack.cfg.jwt_expiry
    assert abs(session.expires_at - (time.time() + stack.cfg.jwt_expiry)) < 30
    assert res.user.id == user["id"] and res.user.email == user["email"]
    assert res.user.aud == "authenticated" and res.user.role == "authenticated"
    assert res.user.user_metadata == {"display_name": "Ada"}
    assert res.user.app_metadata["team"] == "ops" and res.user.app_metadata["provider"] == "email"

    claims = jwt.decode(
        session.access_token, stack.secrets.jwt_secret, algorithms=["HS256"], audience="authenticated"
    )
    assert claims["sub"] == user["id"] and claims["role"] == "authenticated"
    assert claims["email"] == user["email"] and claims["is_anonymous"] is False
    assert claims["exp"] - claims["iat"] == stack.cfg.jwt_expiry
    assert claims["user_metadata"] == {"display_name": "Ada"} and claims["app_metadata"]["team"] == "ops"
    assert claims["aal"] == "aal1" and claims["amr"][0]["method"] == "password"
    uuid.UUID(claims["session_id"])


def test_sync_get_user_refresh_sign_out(api_url, anon_key, http, user):
    client = create_client(api_url, anon_key)
    first = client.auth.sign_in_with_password({"email": user["email"], "password": PASSWORD}).session
    assert client.auth.get_user().user.id == user["id"]

    second = client.auth.refresh_session().session
    assert second.refresh_token != first.refresh_token
    assert client.auth.get_user(second.access_token).user.email == user["email"]
    same_session = jwt.decode(second.access_token, options={"verify_signature": False})["session_id"]
    assert same_session == jwt.decode(first.access_token, options={"verify_signature": False})["session_id"]

    client.auth.sign_out()
    assert client.auth.get_session() is None
    # The session is gone on the server: its access token no longer reaches /user and
    # its refresh token is dead.
    with pytest.raises(AuthApiError) as err:
        client.auth.get_user(second.access_token)
    assert err.value.status == 403 and err.value.code == "session_not_found"
    r = http.post(
        "/token", params={"grant_type": "refresh_token"}, json={"refresh_token": second.refresh_token}
    )
    assert r.status_code == 400 and r.json()["code"] == "refresh_token_not_found"


async def test_async_sign_in_refresh_get_user_sign_out(api_url, anon_key, user):
    client = await acreate_client(api_url, anon_key)
    res = await client.auth.sign_in_with_password({"email": user["email"], "password": PASSWORD})
    assert res.user.id == user["id"]
    assert (await client.auth.get_user()).user.email == user["email"]
    refreshed = await client.auth.refresh_session()
    assert refreshed.session.refresh_token != res.session.refresh_token
    await client.auth.sign_out()
    assert await client.auth.get_session() is None
    with pytest.raises(AuthApiError) as err:
        await client.auth.get_user(refreshed.session.access_token)
    assert err.value.code == "session_not_found"


def _age_rotated_token(stack, token: str, seconds: float) -> None:
    """Move a rotated token's rotation time back, as if ``seconds`` had passed (no sleeping)."""
    import hashlib

    import psycopg2

    conn = psycopg2.connect(stack.pg.dsn())
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "update auth.refresh_tokens set updated_at = updated_at - make_interval(secs => %s) "
                "where token_hash = %s and revoked",
                (seconds, hashlib.sha256(token.encode()).hexdigest()),
            )
            assert cur.rowcount == 1
    finally:
        conn.close()


def test_refresh_token_reuse_revokes_the_session(http, user, stack):
    r = http.post(
        "/token", params={"grant_type": "password"}, json={"email": user["email"], "password": PASSWORD}
    )
    assert r.status_code == 200
    old = r.json()["refresh_token"]
    r = http.post("/token", params={"grant_type": "refresh_token"}, json={"refresh_token": old})
    assert r.status_code == 200
    current = r.json()
    # Someone replays the rotated-away token after the reuse interval: refused, and the
    # whole session dies.
    _age_rotated_token(stack, old, stack.cfg.refresh_token_reuse_interval + 1)
    r = http.post("/token", params={"grant_type": "refresh_token"}, json={"refresh_token": old})
    assert r.status_code == 400 and r.json()["code"] == "refresh_token_already_used"
    r = http.post(
        "/token", params={"grant_type": "refresh_token"}, json={"refresh_token": current["refresh_token"]}
    )
    assert r.status_code == 400 and r.json()["code"] == "refresh_token_not_found"
    r = http.get("/user", headers={"Authorization": f"Bearer {current['access_token']}"})
    assert r.status_code == 403 and r.json()["code"] == "session_not_found"


def test_logout_scopes(http, user):
    def sign_in() -> dict:
        r = http.post(
            "/token", params={"grant_type": "password"}, json={"email": user["email"], "password": PASSWORD}
        )
        assert r.status_code == 200
        return r.json()

    def alive(s: dict) -> bool:
        return http.get("/user", headers={"Authorization": f"Bearer {s['access_token']}"}).status_code == 200

    a, b, c = sign_in(), sign_in(), sign_in()
    r = http.post(
        "/logout", params={"scope": "others"}, headers={"Authorization": f"Bearer {a['access_token']}"}
    )
    assert r.status_code == 204 and r.content == b""
    assert [alive(a), alive(b), alive(c)] == [True, False, False]
    d = sign_in()
    r = http.post(
        "/logout", params={"scope": "local"}, headers={"Authorization": f"Bearer {d['access_token']}"}
    )
    assert r.status_code == 204 and [alive(a), alive(d)] == [True, False]
    e = sign_in()
    r = http.post(
        "/logout", params={"scope": "global"}, headers={"Authorization": f"Bearer {e['access_token']}"}
    )
    assert r.status_code == 204 and [alive(a), alive(e)] == [False, False]
    r = http.post(
        "/logout", params={"scope": "everything"}, headers={"Authorization": f"Bearer {a['access_token']}"}
    )
    assert r.status_code == 400 and r.json()["code"] == "validation_failed"


def test_wrong_password_and_unknown_email(api_url, anon_key, http, user):
    client = create_client(api_url, anon_key)
    for email in (user["email"], _email()):
        with pytest.raises(AuthApiError) as err:
            client.auth.sign_in_with_password({"email": email, "password": "not-the-password"})
        assert err.value.status == 400 and err.value.code == "invalid_credentials"
    r = http.post(
        "/token",
        params={"grant_type": "password"},
        json={"email": user["email"], "password": "not-the-password"},
    )
    assert r.status_code == 400
    assert r.headers["x-supabase-api-version"] == "2024-01-01"
    assert r.json()["error_code"] == "invalid_credentials" and r.json()["msg"] == "Invalid login credentials"
    assert "not-the-password" not in r.text


def test_pgcrypto_hash_from_cli_user_add_signs_in(api_url, anon_key, admin, stack):
    email = _email()
    uid = add_user(stack, email, "viewer", "made-by-the-cli")
    try:
        res = create_client(api_url, anon_key).auth.sign_in_with_password(
            {"email": email, "password": "made-by-the-cli"}
        )
        assert res.user.id == uid
    finally:
        admin.auth.admin.delete_user(uid)


def test_bad_requests_are_clear_400s(http, user):
    cases = [
        ({"grant_type": "password"}, b'{"email": ', "bad_json"),
        ({"grant_type": "password"}, b'["a list"]', "bad_json"),
        ({"grant_type": "password"}, b'{"email": "x@example.com"}', "validation_failed"),
        ({"grant_type": "password"}, b'{"email": 5, "password": "abcdef"}', "validation_failed"),
        ({"grant_type": "refresh_token"}, b"{}", "validation_failed"),
        ({"grant_type": "refresh_token"}, b'{"refresh_token": "never-issued"}', "refresh_token_not_found"),
        ({"grant_type": "magic"}, b"{}", "unsupported_grant_type"),
        ({}, b"{}", "unsupported_grant_type"),
    ]
    for params, body, code in cases:
        r = http.post("/token", params=params, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (params, body, r.text)
        assert r.json()["code"] == code and r.json()["message"], (params, body, r.text)
        assert r.headers["x-supabase-api-version"] == "2024-01-01"
        assert "Traceback" not in r.text
    r = http.post("/token", params={"grant_type": "password"}, content=b"x" * (65 * 1024))
    assert r.status_code == 413
    r = http.get("/nonexistent")
    assert r.status_code == 404
    r = http.delete("/token")
    assert r.status_code == 405


def test_token_endpoint_needs_an_api_key(api_url, user):
    r = httpx.post(
        f"{api_url}/auth/v1/token",
        params={"grant_type": "password"},
        json={"email": user["email"], "password": PASSWORD},
    )
    assert r.status_code == 401 and r.json()["code"] == "no_authorization"


def test_expired_forged_and_missing_tokens_get_401(api_url, anon_key, http, stack, user):
    now = int(time.time())
    base = {
        "sub": user["id"],
        "role": "authenticated",
        "aud": "authenticated",
        "email": user["email"],
        "session_id": str(uuid.uuid4()),
    }
    expired = jwt.encode(
        {**base, "iat": now - 7200, "exp": now - 3600}, stack.secrets.jwt_secret, algorithm="HS256"
    )
    forged = jwt.encode(
        {**base, "iat": now, "exp": now + 3600}, "a-different-secret-of-thirty-two-bytes+", algorithm="HS256"
    )
    for token in (expired, forged, "not.a.jwt"):
        r = http.get("/user", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["code"] == "bad_jwt", r.text
    r = http.get("/user")
    assert r.status_code == 401 and r.json()["code"] == "no_authorization"
    # The anon key is a valid JWT but names no user.
    r = http.get("/user", headers={"Authorization": f"Bearer {anon_key}"})
    assert r.status_code == 403 and r.json()["code"] == "bad_jwt"
    with pytest.raises(AuthApiError) as err:
        create_client(api_url, anon_key).auth.get_user(forged)
    assert err.value.status == 401 and err.value.code == "bad_jwt"


def test_admin_create_list_get_delete(admin, api_url, anon_key, service_key, user):
    admin_key = service_key  # `user` makes sure a second account exists for paging
    email = _email()
    created = admin.auth.admin.create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True, "user_metadata": {"k": 1}}
    ).user
    assert (
        created.email == email
        and created.email_confirmed_at is not None
        and created.user_metadata == {"k": 1}
    )
    assert admin.auth.admin.get_user_by_id(created.id).user.email == email

    assert created.id in [u.id for u in admin.auth.admin.list_users(page=1, per_page=1000)]
    first, second = (
        admin.auth.admin.list_users(page=1, per_page=1),
        admin.auth.admin.list_users(page=2, per_page=1),
    )
    assert len(first) == 1 and len(second) == 1 and first[0].id != second[0].id
    r = httpx.get(
        f"{api_url}/auth/v1/admin/users",
        params={"page": 1, "per_page": 1},
        headers={"apikey": anon_key, "Authorization": f"Bearer {admin_key}"},
    )
    assert int(r.headers["x-total-count"]) >= 2 and 'rel="next"' in r.headers["link"]
    for bad in ({"page": "x"}, {"per_page": "0"}, {"per_page": "100000"}):
        r = httpx.get(
            f"{api_url}/auth/v1/admin/users",
            params=bad,
            headers={"apikey": anon_key, "Authorization": f"Bearer {admin_key}"},
        )
        assert r.status_code == 400 and r.json()["code"] == "validation_failed", bad

    with pytest.raises(AuthApiError) as err:
        admin.auth.admin.create_user({"email": email.upper(), "password": PASSWORD})
    assert err.value.status == 422 and err.value.code == "email_exists"
    with pytest.raises(AuthWeakPasswordError) as err:
        admin.auth.admin.create_user({"email": _email(), "password": "short"})
    assert err.value.status == 422 and err.value.code == "weak_password" and err.value.reasons == ["length"]
    with pytest.raises(AuthApiError) as err:
        admin.auth.admin.create_user({"email": "not-an-email", "password": PASSWORD})
    assert err.value.status == 400 and err.value.code == "email_address_invalid"

    unconfirmed = admin.auth.admin.create_user({"email": _email(), "password": PASSWORD}).user
    assert unconfirmed.email_confirmed_at is None
    with pytest.raises(AuthApiError) as err:
        create_client(api_url, anon_key).auth.sign_in_with_password(
            {"email": unconfirmed.email, "password": PASSWORD}
        )
    assert err.value.status == 400 and err.value.code == "email_not_confirmed"
    admin.auth.admin.delete_user(unconfirmed.id)

    # Refused with the anon key and with a user's token.
    anon = create_client(api_url, anon_key)
    for call in (
        lambda: anon.auth.admin.list_users(),
        lambda: anon.auth.admin.create_user({"email": _email(), "password": PASSWORD}),
        lambda: anon.auth.admin.delete_user(created.id),
    ):
        with pytest.raises(AuthApiError) as err:
            call()
        assert err.value.status == 403 and err.value.code == "not_admin"
    token = anon.auth.sign_in_with_password({"email": email, "password": PASSWORD}).session.access_token
    r = httpx.get(
        f"{api_url}/auth/v1/admin/users", headers={"apikey": anon_key, "Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 403 and r.json()["code"] == "not_admin"

    admin.auth.admin.delete_user(created.id)
    with pytest.raises(AuthApiError) as err:
        admin.auth.admin.get_user_by_id(created.id)
    assert err.value.status == 404 and err.value.code == "user_not_found"
    with pytest.raises(AuthApiError) as err:
        anon.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert err.value.code == "invalid_credentials"


def test_settings_and_health_are_public(http):
    assert http.get("/health").json()["name"] == "GoTrue"
    settings = http.get("/settings").json()
    assert settings["external"]["email"] is True and settings["disable_signup"] is True
    r = http.post("/signup", json={"email": _email(), "password": PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "signup_disabled"


def test_parallel_refreshes_of_one_token_keep_the_session(http, user, api_url, anon_key):
    """Two clients (two tabs, a notebook and the console) refresh the same token at once:
    within GoTrue's reuse interval both get a working token and the session lives on."""
    import concurrent.futures as cf

    r = http.post(
        "/token", params={"grant_type": "password"}, json={"email": user["email"], "password": PASSWORD}
    )
    token = r.json()["refresh_token"]

    def refresh(_: int) -> httpx.Response:
        with httpx.Client(base_url=f"{api_url}/auth/v1", headers={"apikey": anon_key}, timeout=10) as c:
            return c.post("/token", params={"grant_type": "refresh_token"}, json={"refresh_token": token})

    with cf.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(refresh, range(2)))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    tokens = {a.json()["refresh_token"] for a in answers}
    assert len(tokens) == 2 and token not in tokens
    for a in answers:  # both sessions' access tokens and refresh tokens still work
        assert (
            http.get("/user", headers={"Authorization": f"Bearer {a.json()['access_token']}"}).status_code
            == 200
        )
        nxt = http.post(
            "/token",
            params={"grant_type": "refresh_token"},
            json={"refresh_token": a.json()["refresh_token"]},
        )
        assert nxt.status_code == 200


def test_failed_sign_ins_are_rate_limited_per_account(http, user, stack):
    limit = stack.cfg.auth_rate_limits["failed_sign_in"]
    assert limit > 0
    for _ in range(limit):
        r = http.post(
            "/token",
            params={"grant_type": "password"},
            json={"email": user["email"], "password": "wrong-password"},
        )
        assert r.status_code == 400 and r.json()["code"] == "invalid_credentials"
    r = http.post(
        "/token", params={"grant_type": "password"}, json={"email": user["email"], "password": "wrong"}
    )
    assert r.status_code == 429 and r.json()["code"] == "over_request_rate_limit"
    assert int(r.headers["retry-after"]) > 0
    # locked out: even the right password is refused until the window passes, without checking it
    r = http.post(
        "/token", params={"grant_type": "password"}, json={"email": user["email"], "password": PASSWORD}
    )
    assert r.status_code == 429
    # the email is the key, whatever its spelling
    r = http.post(
        "/token",
        params={"grant_type": "password"},
        json={"email": user["email"].upper(), "password": PASSWORD},
    )
    assert r.status_code == 429


def test_a_successful_sign_in_clears_the_failure_count(http, user, stack):
    limit = stack.cfg.auth_rate_limits["failed_sign_in"]
    for _ in range(2):
        for _ in range(limit - 1):
            r = http.post(
                "/token",
                params={"grant_type": "password"},
                json={"email": user["email"], "password": "wrong-password"},
            )
            assert r.status_code == 400
        r = http.post(
            "/token", params={"grant_type": "password"}, json={"email": user["email"], "password": PASSWORD}
        )
        assert r.status_code == 200
