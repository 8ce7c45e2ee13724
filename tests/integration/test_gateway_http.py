"""HTTP/1.1 on the gateway's port where /rest/v1 is answered without ASGI (the gateway's
HTTP protocol writes the REST service's answer itself): keep-alive, pipelining in order
across REST and the other services, HEAD, Connection: close, HTTP/1.0 and Expect:
100-continue behave as uvicorn's ASGI path does. Raw sockets, so every byte is seen."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg2
import pytest

SCHEMA_SQL = """
create table public.gw_http_items (id bigint primary key, name text not null);
grant select, insert on public.gw_http_items to service_role;
insert into public.gw_http_items values (1, 'one'), (2, 'two');
"""
TEARDOWN_SQL = "drop table if exists public.gw_http_items"


@pytest.fixture(scope="module")
def table(stack, api_url, service_key) -> Iterator[None]:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
            cur.execute(SCHEMA_SQL)
        hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
        deadline = time.monotonic() + 15
        while True:  # the schema cache reloads on NOTIFY after DDL
            r = httpx.get(f"{api_url}/rest/v1/gw_http_items", headers=hdrs, timeout=5)
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, "the REST schema cache never showed the test table"
            time.sleep(0.05)
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
        conn.close()


class Conn:
    def __init__(self, api_url: str, service_key: str):
        u = urlsplit(api_url)
        self.host = f"{u.hostname}:{u.port}"
        self.key = service_key
        self.sock = socket.create_connection((u.hostname, u.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each send a segment
        self.buf = b""

    def request(
        self, method: str, path: str, body: bytes = b"", extra: str = "", version: str = "1.1"
    ) -> bytes:
        head = (
            f"{method} {path} HTTP/{version}\r\nHost: {self.host}\r\napikey: {self.key}\r\n"
            f"Authorization: Bearer {self.key}\r\n{extra}"
        )
        if body or method in ("POST", "PATCH"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return head.encode() + b"\r\n" + body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the gateway closed the connection")
        self.buf += chunk

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        n = 0 if head_only or status < 200 or status == 204 else int(headers["content-length"])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def conn(table, api_url, service_key) -> Iterator[Conn]:
    c = Conn(api_url, service_key)
    yield c
    c.close()


def test_pipelined_requests_are_answered_in_order_across_services(conn):
    """Five requests in one write: REST, REST (HEAD), /health (ASGI), REST error, REST."""
    conn.send(
        conn.request("GET", "/rest/v1/gw_http_items?id=eq.1")
        + conn.request("HEAD", "/rest/v1/gw_http_items?id=eq.2")
        + conn.request("GET", "/health")
        + conn.request("GET", "/rest/v1/gw_http_nothing")
        + conn.request("GET", "/rest/v1/gw_http_items?select=name&order=id")
    )
    status, headers, body = conn.response()
    assert status == 200 and orjson.loads(body) == [{"id": 1, "name": "one"}]
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["content-length"] == str(len(body)) and "date" in headers
    assert "connection" not in headers  # kept alive
    status, headers, body = conn.response(head_only=True)
    assert status == 200 and headers["content-length"] == "0"
    status, _, body = conn.response()
    assert status == 200 and orjson.loads(body) == {"ok": True}
    status, _, body = conn.response()
    assert status == 404 and orjson.loads(body)["code"] == "PGRST205"
    status, _, body = conn.response()
    assert status == 200 and orjson.loads(body) == [{"name": "one"}, {"name": "two"}]
    # still open: one more round trip on the same connection
    conn.send(conn.request("GET", "/rest/v1/gw_http_items?id=eq.2&select=name"))
    assert conn.response()[2] == b'[{"name":"two"}]'


def test_connection_close_and_http_1_0_close_after_the_answer(conn, api_url, service_key):
    conn.send(conn.request("GET", "/rest/v1/gw_http_items?id=eq.1", extra="Connection: close\r\n"))
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert conn.closed_by_peer()
    old = Conn(api_url, service_key)
    try:
        old.send(old.request("GET", "/rest/v1/gw_http_items?id=eq.2", version="1.0"))
        status, headers, body = old.response()
        assert status == 200 and headers["connection"] == "close" and b'"two"' in body
        assert old.closed_by_peer()
    finally:
        old.close()


def test_expect_100_continue_then_the_body(conn):
    body = orjson.dumps({"id": 3, "name": "three"})
    head = conn.request("POST", "/rest/v1/gw_http_items", body, extra="Expect: 100-continue\r\n")
    conn.send(head[: -len(body)])  # the head alone: the client waits for 100 Continue
    status, _, _ = conn.response()
    assert status == 100
    conn.send(body)
    status, headers, answer = conn.response()
    assert status == 201 and answer == b"" and headers["content-length"] == "0"
    conn.send(conn.request("GET", "/rest/v1/gw_http_items?id=eq.3&select=name"))
    assert conn.response()[2] == b'[{"name":"three"}]'


def test_a_body_in_several_segments(conn):
    body = orjson.dumps([{"id": 10 + i, "name": "x" * 2000} for i in range(20)])
    head = conn.request("POST", "/rest/v1/gw_http_items", body, extra="Prefer: return=minimal\r\n")
    split = len(head) - len(body)
    conn.send(head[:split])
    for i in range(0, len(body), 4096):
        conn.send(body[i : i + 4096])  # the service reads the body as it comes
    status, _, _ = conn.response()
    assert status == 201
    conn.send(conn.request("GET", "/rest/v1/gw_http_items?id=gte.10&select=id"))
    assert len(orjson.loads(conn.response()[2])) == 20


def test_a_percent_encoded_rest_path_is_the_same_resource(conn):
    """The path is decoded before routing, as uvicorn decodes it for ASGI."""
    conn.send(conn.request("GET", "/rest/v1/gw%5Fhttp%5Fitems?id=eq.1&select=name"))
    status, _, body = conn.response()
    assert status == 200 and body == b'[{"name":"one"}]'


def test_keep_alive_closes_an_idle_connection_only(conn):
    """uvicorn's keep-alive timeout (5 s): a connection in use for longer than that stays
    open, and is closed once it has been idle for that long, not before."""
    start = time.monotonic()
    while True:  # busy past one timeout: requests keep it open
        conn.send(conn.request("GET", "/rest/v1/gw_http_items?id=eq.1&select=id"))
        assert conn.response()[0] == 200
        idle_from = time.monotonic()  # the gateway's idle period began just before
        if idle_from - start >= 7:
            break
        time.sleep(0.5)
    conn.sock.settimeout(30)
    assert conn.closed_by_peer()
    assert time.monotonic() - idle_from >= 4.5  # 5 s less the answer's way back


def test_the_rest_fast_path_hooks_into_this_uvicorn():
    """The gateway answers /rest/v1 from uvicorn's parser callbacks and ``_start_asgi_task``
    and keeps its own keep-alive timer; were these hooks gone (another uvicorn), the
    overrides would no longer be called, or call what is not there. A REST request lives in
    a _RestExchange where uvicorn keeps its RequestResponseCycle: the exchange must have
    every attribute uvicorn's protocol reads or writes on its current cycle."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from devstack.stack.gateway import _http_protocol, _RestExchange

    overridden = (
        "_start_asgi_task",
        "on_message_begin",
        "on_headers_complete",
        "on_response_complete",
        "_unset_keepalive_if_required",
        "connection_lost",
    )
    for name in overridden:
        assert name in vars(HttpToolsProtocol), name
        assert name in vars(_http_protocol(None)), name
    assert callable(HttpToolsProtocol.timeout_keep_alive_handler)
    # what uvicorn's protocol touches on self.cycle (on_body, on_message_complete,
    # connection_lost, shutdown, the pipeline) is all in the exchange
    source = inspect.getsource(HttpToolsProtocol)
    touched = set(re.findall(r"self\.cycle\.(\w+)", source)) | set(
        re.findall(r"existing_cycle\.(\w+)", source)
    )
    assert touched, "uvicorn's protocol no longer names its cycle's attributes as this test reads them"
    assert touched <= set(_RestExchange.__slots__), touched - set(_RestExchange.__slots__)
