"""Directory sign-in and break-glass access from a notebook (docs/identity.md).

:func:`directory_sign_in` asks ``idm-login`` which path the site uses. On a direct site the
password goes to the function over HTTPS, as it would to Auth. On an executor site it never
reaches the control plane: the console seals ``{username, password, challenge}`` to the
site executor's key (the same envelope as credentials, :func:`executor.secrets.seal`) and
only the envelope travels; the challenge makes a captured envelope worthless for any other
sign-in. Either way the answer is a normal Supabase session, installed in the client.

:func:`break_glass_sign_in` is the emergency path: no directory, no executor, a reason,
a short session, audited as critical and announced on every notification channel.
:func:`provision_breakglass` (service key, run by whoever holds the platform's keys)
creates an account and shows its secret exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import httpx

from executor.secrets import seal

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1  # ~0.1 s per check, 32 MiB
SECRET_BYTES = 32  # a break-glass secret: 256 random bits, base64url


class IdentityError(Exception):
    """A sign-in the control plane refused; ``code`` is the function's error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public_key(text: str) -> bytes:
    t = text.strip()
    if t.startswith("-----BEGIN PUBLIC KEY-----"):
        der = base64.b64decode("".join(t.splitlines()[1:-1]))
        return der[-32:]
    return base64.urlsafe_b64decode(t.replace("+", "-").replace("/", "_") + "=" * (-len(t) % 4))


def _call(url: str, key: str, fn: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    r = httpx.post(
        f"{url}/functions/v1/{fn}",
        json=body,
        timeout=timeout,
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
    )
    try:
        data = r.json()
    except ValueError:
        data = {"error": r.text[:200], "code": "bad_response"}
    if r.status_code >= 400:
        raise IdentityError(r.status_code, str(data.get("code")), str(data.get("error")))
    return data


def sealed_login(url: str, anon_key: str, site: str, username: str, password: str) -> dict[str, Any]:
    """The executor path by hand: begin, seal to the named executor key, complete."""
    begun = _call(url, anon_key, "idm-login", {"action": "begin", "site": site})
    envelope = seal(
        _raw_public_key(begun["public_key"]),
        {"username": username, "password": password, "challenge": begun["challenge"]},
    )
    return _call(
        url,
        anon_key,
        "idm-login",
        {"action": "complete", "request_id": begun["request_id"], "envelope": envelope},
    )


BUSY_RETRIES = 3  # sign-ins tried again after a "busy" answer (count)
BUSY_PAUSE_S = 0.2  # first pause before trying again, doubled each time (seconds)


def directory_login(url: str, anon_key: str, site: str, username: str, password: str) -> dict[str, Any]:
    """A directory sign-in on the path the site is configured for; the function's answer.
    A "busy" answer (409: too many sign-ins in flight for the site's executor, or a record
    locked by another operation) is the function's "retry shortly": the whole sign-in is
    tried again, from a new request, up to ``BUSY_RETRIES`` times. An address over its
    sign-in limits is answered 429 ``rate_limited`` ("try again in a minute"), not retried."""
    pause = BUSY_PAUSE_S
    for attempt in range(BUSY_RETRIES + 1):
        try:
            return _directory_login_once(url, anon_key, site, username, password)
        except IdentityError as exc:
            if exc.code != "busy" or attempt == BUSY_RETRIES:
                raise
        time.sleep(pause)
        pause *= 2
    raise AssertionError("unreachable")


def _directory_login_once(url: str, anon_key: str, site: str, username: str, password: str) -> dict[str, Any]:
    mode = _call(url, anon_key, "idm-login", {"action": "config", "site": site})["mode"]
    if mode == "direct":
        return _call(
            url,
            anon_key,
            "idm-login",
            {"action": "login", "site": site, "username": username, "password": password},
        )
    return sealed_login(url, anon_key, site, username, password)


def directory_sign_in(
    client: Any, url: str, anon_key: str, site: str, username: str, password: str
) -> dict[str, Any]:
    """Sign ``client`` (supabase-py) in with a directory account; returns {role, via, username}."""
    res = directory_login(url, anon_key, site, username, password)
    client.auth.set_session(res["session"]["access_token"], res["session"]["refresh_token"])
    return {"role": res["role"], "via": res["via"], "username": res["username"]}


def break_glass_login(
    url: str, anon_key: str, account: str, secret: str, reason: str, ttl_seconds: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "sign_in", "account": account, "secret": secret, "reason": reason}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return _call(url, anon_key, "break-glass", body)


def break_glass_sign_in(
    client: Any,
    url: str,
    anon_key: str,
    account: str,
    secret: str,
    reason: str,
    ttl_seconds: int | None = None,
) -> dict[str, Any]:
    """Emergency sign-in: audited as critical, announced on every channel, time-boxed."""
    res = break_glass_login(url, anon_key, account, secret, reason, ttl_seconds)
    client.auth.set_session(res["session"]["access_token"], res["session"]["refresh_token"])
    return {
        "role": res["role"],
        "expires_at": res["expires_at"],
        "breakglass_session_id": res["breakglass_session_id"],
    }


def hash_secret(secret: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """scrypt$N$r$p$salt$hash, what break-glass checks (hashlib.scrypt = node's scrypt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=32
    )
    return f"scrypt${n}${r}${p}${_b64u(salt)}${_b64u(digest)}"


def provision_breakglass(
    url: str, service_key: str, name: str, role: str = "admin", max_session_s: int = 1800
) -> str:
    """Create (or rotate) break-glass account ``name``; returns its secret, shown only now.
    Needs the service key: an auth user without a password, and the scrypt hash only."""
    secret = _b64u(secrets.token_bytes(SECRET_BYTES))
    email = f"breakglass-{name}@breakglass.rackpilot.invalid"
    headers = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as http:
        r = http.post(
            "/auth/v1/admin/users",
            json={
                "email": email,
                "email_confirm": True,
                "app_metadata": {"provider": "rackpilot-breakglass"},
            },
        )
        if r.status_code == 200:
            user_id = r.json()["id"]
        else:
            found = http.get(
                "/rest/v1/breakglass_accounts", params={"select": "user_id", "name": f"eq.{name}"}
            )
            found.raise_for_status()
            if not found.json():
                raise IdentityError(
                    r.status_code, "provision_failed", f"could not create the auth user: {r.text[:200]}"
                )
            user_id = found.json()[0]["user_id"]
        r = http.post(
            "/rest/v1/rpc/breakglass_provision",
            content=json.dumps(
                {
                    "p_name": name,
                    "p_user_id": user_id,
                    "p_secret_hash": hash_secret(secret),
                    "p_role": role,
                    "p_max_session_s": max_session_s,
                }
            ),
            headers={"content-type": "application/json"},
        )
        r.raise_for_status()
    return secret


def list_breakglass_sessions(client: Any) -> list[dict[str, Any]]:
    """Admins: every break-glass session, newest first."""
    return client.table("breakglass_sessions").select("*").order("started_at", desc=True).execute().data


def revoke_breakglass_session(client: Any, session_id: str, reason: str) -> dict[str, Any]:
    """Admins: end a break-glass session now (its grant and its auth session)."""
    return (
        client.rpc("revoke_breakglass_session", {"p_session_id": session_id, "p_reason": reason})
        .execute()
        .data
    )


# --- console sessions ---------------------------------------------------------------------
def _session_from(config: Any, result: dict[str, Any]) -> Any:
    from console.session import FUNCTION_TIMEOUT_S, Session
    from supabase import ClientOptions, create_client

    client = create_client(
        config.url,
        config.anon_key,
        ClientOptions(
            auto_refresh_token=False, persist_session=False, function_client_timeout=FUNCTION_TIMEOUT_S
        ),
    )
    client.auth.set_session(result["session"]["access_token"], result["session"]["refresh_token"])
    return Session(config, client)


def _console_error(exc: IdentityError) -> Exception:
    from console.errors import ServiceUnavailable, SignInError

    cls = ServiceUnavailable if exc.status >= 500 else SignInError
    return cls(str(exc), code=exc.code, status=exc.status)


def sign_in_directory(config: Any, site: str, username: str, password: str) -> Any:
    """A console Session for a directory account of ``site`` (the password is used once)."""
    try:
        return _session_from(config, directory_login(config.url, config.anon_key, site, username, password))
    except IdentityError as exc:
        raise _console_error(exc) from None
    finally:
        password = ""  # noqa: F841 -- drop our reference at once


def sign_in_break_glass(
    config: Any, account: str, secret: str, reason: str, ttl_seconds: int | None = None
) -> Any:
    """A console Session on a break-glass account: audited as critical, notified everywhere."""
    try:
        return _session_from(
            config, break_glass_login(config.url, config.anon_key, account, secret, reason, ttl_seconds)
        )
    except IdentityError as exc:
        raise _console_error(exc) from None
    finally:
        secret = ""  # noqa: F841


def seal_bind_credential(
    client: Any, site_id: str, name: str, bind_dn: str, password: str, uris: list[str]
) -> str:
    """Admins: store the directory bind account the executor's sync uses, sealed here to every
    active executor key of the site (the password never leaves this process in the clear),
    naming the directory URIs as the only endpoints it may be presented to. Returns its id."""
    execs = (
        client.table("executors")
        .select("id,public_key,key_id")
        .eq("site_id", site_id)
        .eq("status", "active")
        .execute()
        .data
    )
    if not execs:
        raise IdentityError(
            409, "no_executor_key", "the site has no active executor to seal the bind account to"
        )
    secret = {"username": bind_dn, "password": password, "endpoints": [{"url": u} for u in uris]}
    sealed = [(e, json.dumps(seal(_raw_public_key(e["public_key"]), secret))) for e in execs]  # type: ignore[arg-type]
    client.table("credential_sets").insert(
        {
            "site_id": site_id,
            "name": name,
            "kind": "ldap",
            "username": bind_dn,
        },
        returning="minimal",
    ).execute()
    cred = (
        client.table("credential_sets")
        .select("id")
        .eq("site_id", site_id)
        .eq("name", name)
        .execute()
        .data[0]["id"]
    )
    client.table("credential_envelopes").insert(
        [
            {"credential_set_id": cred, "executor_id": e["id"], "key_id": e["key_id"], "sealed_secret": s}
            for e, s in sealed
        ],
        returning="minimal",
    ).execute()
    password = ""  # noqa: F841
    return cred
