"""Small ASGI helpers shared by the gateway's services (no framework on the hot path)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

MAX_BODY_BYTES = 1 * 1024 * 1024  # largest request body accepted by REST/Auth (bytes)


class BodyTooLarge(Exception):
    pass


class Service(Protocol):
    """One part of the gateway (REST, Auth, Realtime, Functions)."""

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None: ...


def header_dict(scope: dict) -> dict[str, str]:
    """Request headers with lower-case names; a repeated header keeps its last value."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


async def read_body(receive: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_bytes(
    send: Any,
    status: int,
    body: bytes,
    content_type: str | None = "application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    hdrs = list(headers or [])
    if content_type:
        hdrs.append((b"content-type", content_type.encode()))
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(send, status, orjson.dumps(payload), "application/json; charset=utf-8", headers)
