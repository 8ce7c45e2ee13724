"""The executor's key pair and sealed credential envelopes.

Key pair
--------
On first start the executor generates an X25519 key pair. The private key is written as
unencrypted PKCS#8 PEM to ``private_key_path`` with mode 0600 inside a 0700 folder; on
every later start the executor refuses to run when the file is readable or writable by
group or others (:class:`KeyFilePermissionError`). The public key is registered with the
control plane as base64url (no padding) of the 32 raw bytes, together with its key id.

Key id (``kid``): ``"x25519:" + base64url(SHA-256(raw public key))[:16]``. It names the key an
envelope was sealed to, so a rotated executor reports "sealed to another key" instead of
a decryption error.

Envelope format, version 1 (agreed with the ``encrypt-credentials`` edge function)
-----------------------------------------------------------------------------------
A JSON object, every binary field base64url without padding::

    {
      "v": 1,
      "alg": "X25519-HKDF-SHA256-A256GCM",
      "kid": "<key id of the executor it is sealed to>",
      "epk": "<sender's ephemeral X25519 public key, 32 raw bytes>",
      "nonce": "<12 random bytes>",
      "ct": "<AES-256-GCM ciphertext followed by its 16-byte tag>"
    }

Sealing (what the edge function does, e.g. with WebCrypto):

1. generate an ephemeral X25519 key pair; ``shared = X25519(eph_private, executor_public)``;
2. ``key = HKDF-SHA256(ikm=shared, salt=epk || executor_public, info="rackpilot-credential-v1",
   length=32)``;
3. ``aad = "rackpilot-credential-v1|" + kid`` (UTF-8), binding the ciphertext to its key id;
4. ``ct = AES-256-GCM(key, nonce, plaintext, aad)``.

The plaintext is a UTF-8 JSON object: the secret's fields as strings, and ``endpoints``,
the list of endpoints the secret may be presented to, e.g. ``{"username": "root",
"password": "...", "endpoints": [{"scheme": "https", "host": "10.1.2.7", "port": 443,
"tls": {"ca_bundle": "/etc/rackpilot/idrac-ca.pem"}}]}`` (entry format:
:mod:`executor.binding`). The list is sealed by the admin with the secret, inside the
authenticated ciphertext: the control plane can neither read nor change it. A plaintext
without ``endpoints`` (sealed before endpoints existed) opens, but its secret is
presented nowhere. The executor opens envelopes in memory only, per job, never writes
them to disk, and registers every secret string with :data:`executor.log.SECRETS` before
returning it so that no log line can print it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import ExecutorError
from .log import SECRETS

ALG = "X25519-HKDF-SHA256-A256GCM"
INFO = b"rackpilot-credential-v1"
AAD_PREFIX = "rackpilot-credential-v1|"
MAX_ENVELOPE_BYTES = 64 * 1024


class SecretsError(ExecutorError):
    """Root of key and envelope failures."""


class KeyFilePermissionError(SecretsError):
    """The private key file is readable or writable by someone other than its owner."""


class KeyFileError(SecretsError):
    """The private key file exists but cannot be read as an X25519 private key."""


class EnvelopeError(SecretsError):
    """The envelope is malformed, sealed to another key, or fails authentication."""


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: object) -> bytes:
    """A base64url field of an envelope as read from JSON: any value, refused unless text."""
    if not isinstance(text, str):
        raise EnvelopeError("envelope field is not a string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise EnvelopeError("envelope field is not base64url") from exc


def key_id(public_raw: bytes) -> str:
    return "x25519:" + b64u(hashlib.sha256(public_raw).digest())[:16]


def _derive(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=INFO).derive(shared)


@dataclass(frozen=True)
class KeyPair:
    private: X25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_b64(self) -> str:
        return b64u(self.public_raw)

    @property
    def kid(self) -> str:
        return key_id(self.public_raw)

    def open(self, envelope: dict[str, Any] | str) -> dict[str, str]:
        """Decrypt an envelope sealed to this key; every value is registered for redaction."""
        if isinstance(envelope, str):
            if len(envelope) > MAX_ENVELOPE_BYTES:
                raise EnvelopeError("envelope is too large")
            try:
                envelope = json.loads(envelope)
            except ValueError as exc:
                raise EnvelopeError("envelope is not JSON") from exc
        if not isinstance(envelope, dict):
            raise EnvelopeError("envelope is not a JSON object")
        if envelope.get("v") != 1 or envelope.get("alg") != ALG:
            raise EnvelopeError(f"unsupported envelope version/algorithm (want v=1, alg={ALG})")
        if envelope.get("kid") != self.kid:
            raise EnvelopeError(
                f"envelope is sealed to key {envelope.get('kid')!r}, this executor holds {self.kid}"
            )
        epk, nonce, ct = (
            unb64u(envelope.get("epk")),
            unb64u(envelope.get("nonce")),
            unb64u(envelope.get("ct")),
        )
        if len(epk) != 32 or len(nonce) != 12 or len(ct) < 16:
            raise EnvelopeError("envelope fields have the wrong length")
        shared = self.private.exchange(X25519PublicKey.from_public_bytes(epk))
        key = _derive(shared, epk, self.public_raw)
        try:
            plain = AESGCM(key).decrypt(nonce, ct, (AAD_PREFIX + self.kid).encode())
        except InvalidTag as exc:
            raise EnvelopeError("envelope failed authentication (tampered or sealed to another key)") from exc
        try:
            data = json.loads(plain)
        except ValueError as exc:
            raise EnvelopeError("envelope plaintext is not JSON") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and (isinstance(v, str) or (k == "endpoints" and isinstance(v, list)))
            for k, v in data.items()
        ):
            raise EnvelopeError("envelope plaintext must be a JSON object of strings (and an endpoints list)")
        for key, value in data.items():
            if key != "endpoints":
                SECRETS.add(value)
        return data


def seal(
    public_raw: bytes, secret: dict[str, str], *, endpoints: list[Any] | tuple[Any, ...] = ()
) -> dict[str, Any]:
    """Seal ``secret`` to an executor's public key (the edge function's half, for tests and
    tools), naming the ``endpoints`` it may be presented to (URLs, ``{"url", "tls"}`` or
    canonical entries; see :func:`executor.binding.endpoint_entries`). Without endpoints
    the secret can be opened but is presented nowhere."""
    if endpoints:
        from .binding import endpoint_entries

        secret = {**secret, "endpoints": endpoint_entries(endpoints)}  # type: ignore[dict-item]
    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _derive(eph.exchange(X25519PublicKey.from_public_bytes(public_raw)), epk, public_raw)
    nonce = os.urandom(12)
    kid = key_id(public_raw)
    ct = AESGCM(key).encrypt(nonce, json.dumps(secret).encode(), (AAD_PREFIX + kid).encode())
    return {"v": 1, "alg": ALG, "kid": kid, "epk": b64u(epk), "nonce": b64u(nonce), "ct": b64u(ct)}


def check_key_permissions(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFilePermissionError(
            f"{path} has mode {mode:04o}; the private key must be readable by its owner only "
            f"(chmod 600 {path})"
        )


def load_or_create(path: Path) -> tuple[KeyPair, bool]:
    """The key pair at ``path``, generated on first start. Returns ``(pair, created)``."""
    if path.exists():
        check_key_permissions(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a PEM private key") from exc
        if not isinstance(key, X25519PrivateKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an X25519 key")
        return KeyPair(key), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL + 0600 at creation: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return KeyPair(key), True
