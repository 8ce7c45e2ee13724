"""Helpers for tests and benchmarks that drive the simulated iDRAC lab: a file server for
ISO images and firmware packages, and a self-signed certificate for TLS tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .http import Request, Response, start_server
from .server import Lab, LabThread


@contextmanager
def running_lab(count: int = 1, time_scale: float = 400.0, **kw: Any) -> Iterator[Lab]:
    """A lab of `count` BMCs on free loopback ports, served from a background thread
    (`personality="idrac10"`, or a list cycled over the fleet, picks the generation)."""
    lab = Lab(count, time_scale=time_scale, **kw)
    with LabThread(lab):
        yield lab


class FileServer:
    """Serves in-memory files over plain HTTP on a loopback port, in its own thread: the
    "HTTP share" virtual media and SimpleUpdate fetch from."""

    def __init__(self, files: dict[str, bytes] | None = None, host: str = "127.0.0.1"):
        self.files: dict[str, bytes] = dict(files or {})
        self.host = host
        self.port = 0
        self.hits: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lab-files", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    async def _handle(self, req: Request) -> Response:
        self.hits[req.path] = self.hits.get(req.path, 0) + 1
        data = self.files.get(req.path)
        if data is None:
            return Response(404, b"not found", {"Content-Type": "text/plain"})
        return Response(200, data, {"Content-Type": "application/octet-stream"})

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> FileServer:
        self._thread.start()

        async def go() -> None:
            self._server = await start_server(self.host, 0, self._handle)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def self_signed_cert(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write a self-signed certificate and key for `host` (as an iDRAC ships with) and
    return (cert_path, key_path)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idrac-sim")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "idrac.crt", folder / "idrac.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
