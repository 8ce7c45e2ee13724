"""The REST layer's per-header-set cache gives what decoding every request gave, and
its per-token cache never outlives a token."""

import asyncio
import time
from types import SimpleNamespace

import jwt
import orjson

from devstack.stack import jwtauth
from devstack.stack.jwtauth import JWTVerifier
from devstack.stack.rest import service
from devstack.stack.rest.service import RestService


def _svc() -> RestService:
    cfg = SimpleNamespace(exposed_schemas=["public"], max_rows=1000, extra_search_path=["extensions"])
    return RestService(SimpleNamespace(cfg=cfg))


def test_headers_decoded_and_serialised_as_before():
    raw = [(b"host", b"127.0.0.1"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-l", "\xe9".encode("latin-1"))]
    svc = _svc()
    headers, text, token = svc._headers(raw)
    assert headers == {"host": "127.0.0.1", "x-a": "2", "x-l": "\xe9"}  # a repeated name keeps the last
    assert text == orjson.dumps(headers).decode()
    assert token == ""  # neither Authorization nor apikey
    again, text2, _ = svc._headers(list(raw))
    assert again is headers and text2 is text  # the same set: cached


def test_the_token_is_the_bearer_else_the_apikey():
    svc = _svc()
    assert svc._headers([(b"apikey", b"k1")])[2] == "k1"
    assert svc._headers([(b"apikey", b"k1"), (b"authorization", b"Bearer t1")])[2] == "t1"
    # an Authorization header that is not a bearer token: no token (the apikey is not used)
    assert svc._headers([(b"apikey", b"k1"), (b"authorization", b"Basic eDp5")])[2] == ""


def test_large_header_sets_not_kept_and_cache_bounded(monkeypatch):
    svc = _svc()
    big = [(b"x-big", b"v" * (service.HEADER_CACHE_MAX_JSON + 1))]
    headers, text, _ = svc._headers(big)
    assert headers["x-big"].startswith("v") and not svc._header_cache
    monkeypatch.setattr(service, "HEADER_CACHE_SIZE", 3)
    for i in range(10):
        h, _, _ = svc._headers([(b"x-n", str(i).encode())])
        assert h == {"x-n": str(i)}
        assert len(svc._header_cache) <= 3


def _request(svc: RestService, token: str) -> tuple[int, dict]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/rest/v1/nothing_here",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    status, _, body = asyncio.run(svc.respond(scope, receive))
    return status, orjson.loads(body)


def test_a_cached_token_is_refused_once_it_expires(monkeypatch):
    secret = "s" * 40
    cfg = SimpleNamespace(exposed_schemas=["public"], max_rows=1000, extra_search_path=["extensions"])
    svc = RestService(SimpleNamespace(cfg=cfg, verifier=JWTVerifier(secret)))
    now = time.time()
    token = jwt.encode({"role": "authenticated", "exp": int(now) + 60}, secret, algorithm="HS256")
    # valid: past authentication, to the (empty) schema cache
    status, body = _request(svc, token)
    assert status == 404 and body["code"] == "PGRST205"
    assert token in svc._claims
    assert _request(svc, token)[0] == 404  # again, from the cache
    # 61 s later, for the REST layer and the verifier alike: the cached token is refused
    later = SimpleNamespace(time=lambda: now + 61)
    monkeypatch.setattr(service, "time", later)
    monkeypatch.setattr(jwtauth, "time", later)
    status, body = _request(svc, token)
    assert status == 401 and body["code"] == "PGRST303" and body["message"] == "JWT expired"
    forged = jwt.encode({"role": "authenticated", "exp": int(now) + 600}, "x" * 40, algorithm="HS256")
    assert _request(svc, forged)[0] == 401 and forged not in svc._claims
