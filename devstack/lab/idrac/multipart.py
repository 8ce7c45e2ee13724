"""A `multipart/form-data` body read from the wire in chunks (RFC 7578), as an iDRAC takes a
firmware package at its `MultipartHttpPushUri`: the package is never held whole. Of each
part the reader keeps its headers, its size and SHA-256, and its first `keep` bytes (enough
for a JSON `UpdateParameters` part and the header of an update package).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message

_MAX_PART_HEADERS = 16 * 1024


class Malformed(Exception):
    """The body is not the multipart document its Content-Type announces."""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    size: int = 0
    head: bytes = b""
    _sha: object = field(default_factory=hashlib.sha256, repr=False)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()  # type: ignore[attr-defined]


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a `multipart/form-data` Content-Type, or None."""
    m = Message()
    m["content-type"] = content_type
    if m.get_content_type() != "multipart/form-data":
        return None
    b = m.get_param("boundary")
    return b if isinstance(b, str) and 0 < len(b) <= 70 else None


def _part_headers(raw: bytes) -> Part:
    m = Message()
    for line in raw.decode("latin-1").split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise Malformed(f"part header line without a colon: {line[:60]!r}")
        m[name.strip()] = value.strip()
    disp = m.get("content-disposition", "")
    if not disp.lower().startswith("form-data"):
        raise Malformed("part without Content-Disposition: form-data")
    d = Message()
    d["content-type"] = "x/" + disp  # reuse the parameter parser for name= and filename=
    name = d.get_param("name")
    filename = d.get_param("filename")
    if not isinstance(name, str) or not name:
        raise Malformed("part without a name")
    return Part(name, filename if isinstance(filename, str) else None, m.get("content-type", "text/plain"))


async def read_parts(
    read: Callable[[], Awaitable[bytes]], boundary: str, keep: int = 64 * 1024
) -> dict[str, Part]:
    """Parts by name, read through `read()` (the next chunk; b"" at the end of the body)."""
    delim = b"--" + boundary.encode("latin-1")
    sep = b"\r\n" + delim
    buf = b""
    parts: dict[str, Part] = {}

    async def more() -> None:
        nonlocal buf
        chunk = await read()
        if not chunk:
            raise Malformed("the body ended inside the multipart document")
        buf += chunk

    while delim not in buf:  # preamble
        buf = buf[-len(delim) :]
        await more()
    buf = buf[buf.index(delim) + len(delim) :]
    while True:
        while len(buf) < 2:
            await more()
        if buf.startswith(b"--"):
            return parts  # the closing delimiter; any epilogue is ignored
        if not buf.startswith(b"\r\n"):
            raise Malformed("a delimiter not followed by CRLF")
        while b"\r\n\r\n" not in buf[2:]:
            if len(buf) > _MAX_PART_HEADERS:
                raise Malformed("part headers too long")
            await more()
        end = buf.index(b"\r\n\r\n", 2)
        part = _part_headers(buf[2:end])
        if part.name in parts:
            raise Malformed(f"part {part.name} given twice")
        buf = buf[end + 4 :]
        while True:
            i = buf.find(sep)
            body = buf if i < 0 else buf[:i]
            if i < 0:
                body = buf[: max(0, len(buf) - len(sep))]  # a delimiter may straddle chunks
            if body:
                part._sha.update(body)  # type: ignore[attr-defined]
                if len(part.head) < keep:
                    part.head += body[: keep - len(part.head)]
                part.size += len(body)
                buf = buf[len(body) :]
            if i >= 0:
                buf = buf[len(sep) :]
                break
            await more()
        parts[part.name] = part
