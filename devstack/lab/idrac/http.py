"""A small HTTP/1.1 server on asyncio streams, shared by the lab's simulators.

The simulated fleet puts a thousand BMCs on a thousand loopback ports inside one process,
so a full ASGI server per port is too heavy; this keeps one listening socket and one
coroutine per connection. It speaks just enough HTTP/1.1 for requests, httpx and sushy:
Content-Length bodies, keep-alive, `Connection: close`, HEAD. A `multipart/form-data` body
is not read up front: the handler reads it from `Request.stream` in chunks (a firmware
package pushed to an iDRAC can be hundreds of megabytes), and a connection whose body the
handler left unread is closed after the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    501: "Not Implemented",
    304: "Not Modified",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_MAX_HEADER = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: str = ""
    stream: asyncio.StreamReader | None = None  # an unread multipart body (see module doc)
    unread: int = 0  # bytes of that body not read yet

    async def read_chunk(self, n: int = 65536) -> bytes:
        """The next at most `n` bytes of a streamed body; b"" at its end."""
        if self.stream is None or self.unread <= 0:
            return b""
        chunk = await self.stream.read(min(n, self.unread))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", self.unread)
        self.unread -= len(chunk)
        return chunk

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        h = {"Content-Type": "application/json;odata.metadata=minimal;charset=utf-8"}
        h.update(headers or {})
        return cls(status, json.dumps(payload).encode(), h)

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


# A handler returns a Response, or None to drop the connection without answering
# (how the lab plays an unreachable BMC).
Handler = Callable[[Request], Awaitable[Response | None]]


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(target)
    path = unquote(parts.path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    return path, dict(parse_qsl(parts.query, keep_blank_values=True))


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    path, query = parse_target(target)
    if headers.get("content-type", "").lower().startswith("multipart/form-data") and length:
        return Request(method.upper(), target, path, query, headers, b"", stream=reader, unread=length)
    if length > _MAX_BODY:
        return None
    body = await reader.readexactly(length) if length else b""
    return Request(method.upper(), target, path, query, headers, body)


def _encode(resp: Response, head_only: bool, close: bool) -> bytes:
    reason = _REASONS.get(resp.status, "Status")
    hdrs = dict(resp.headers)
    hdrs["Content-Length"] = str(len(resp.body))
    hdrs["Connection"] = "close" if close else "keep-alive"
    out = [f"HTTP/1.1 {resp.status} {reason}"]
    out += [f"{k}: {v}" for k, v in hdrs.items()]
    data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + resp.body


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    peer = writer.get_extra_info("peername")
    try:
        while True:
            req = await _read_request(reader)
            if req is None:
                return
            req.peer = f"{peer[0]}:{peer[1]}" if peer else ""
            resp = await handler(req)
            if resp is None:
                return
            close = req.headers.get("connection", "").lower() == "close" or req.unread > 0
            writer.write(_encode(resp, req.method == "HEAD", close))
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    except asyncio.CancelledError:
        raise
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the peer may already be gone
            pass


async def start_server(host: str, port: int, handler: Handler, ssl: Any = None) -> asyncio.base_events.Server:
    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, handler)

    return await asyncio.start_server(
        on_conn, host, port, limit=_MAX_HEADER, backlog=256, reuse_address=True, ssl=ssl
    )
