"""The REST layer's per-header-set cache gives what decoding every request gave."""

from types import SimpleNamespace

import orjson

from devstack.stack.rest import service
from devstack.stack.rest.service import RestService


def _svc() -> RestService:
    cfg = SimpleNamespace(exposed_schemas=["public"], max_rows=1000, extra_search_path=["extensions"])
    return RestService(SimpleNamespace(cfg=cfg))


def test_headers_decoded_and_serialised_as_before():
    raw = [(b"host", b"127.0.0.1"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-l", "\xe9".encode("latin-1"))]
    svc = _svc()
    headers, text = svc._headers(raw)
    assert headers == {"host": "127.0.0.1", "x-a": "2", "x-l": "\xe9"}  # a repeated name keeps the last
    assert text == orjson.dumps(headers).decode()
    again, text2 = svc._headers(list(raw))
    assert again is headers and text2 is text  # the same set: cached


def test_large_header_sets_not_kept_and_cache_bounded(monkeypatch):
    svc = _svc()
    big = [(b"x-big", b"v" * (service.HEADER_CACHE_MAX_JSON + 1))]
    headers, text = svc._headers(big)
    assert headers["x-big"].startswith("v") and not svc._header_cache
    monkeypatch.setattr(service, "HEADER_CACHE_SIZE", 3)
    for i in range(10):
        h, _ = svc._headers([(b"x-n", str(i).encode())])
        assert h == {"x-n": str(i)}
        assert len(svc._header_cache) <= 3
