"""OpenPGP signatures of Dell firmware catalogs (``Catalog.xml.gz.sign`` beside the catalog).

Dell signs its catalogs with a detached OpenPGP signature published next to the file
(``<catalog URL>.sign``). A registered catalog that carries a signing key
(``firmware_catalogs.signing_key``, an ASCII-armoured OpenPGP public key block, e.g. Dell's)
is verified against it on every refresh by ``gpgv``, GnuPG's verify-only tool: it trusts
exactly the keys in the keyring it is given, keeps no state, starts no agent and needs no
trust database. The key is de-armoured here into a keyring file of a temporary home that
is removed afterwards; ``gpgv`` runs in a process group of its own that dies with the
executor (:mod:`executor.childproc`).

What a check answers (:class:`SignatureCheck`): ``ok`` with the signing key's fingerprint
(``VALIDSIG``), or not, with the reason in words: a bad signature (the catalog or the
signature was altered), a signature by a key that is not the catalog's, or a file that is
not a signature at all.
"""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import tempfile
from pathlib import Path

from .. import childproc

GPGV_TIMEOUT_S = 30.0  # seconds gpgv may take for one catalog
KEY_MAX_BYTES = 65536  # size of an armoured key block (bytes); the column holds as much
SIGNATURE_MAX_BYTES = 65536  # size of a .sign file (bytes); Dell's are under 1 KiB


class SignatureKeyError(ValueError):
    """The signing key is not an ASCII-armoured OpenPGP public key block."""


@dataclasses.dataclass(frozen=True)
class SignatureCheck:
    ok: bool
    detail: str
    fingerprint: str | None = None


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text: str) -> bytes:
    """The binary packets of an ASCII-armoured OpenPGP public key block (RFC 4880, 6.2),
    its CRC-24 checked when present."""
    if len(text) > KEY_MAX_BYTES:
        raise SignatureKeyError(f"the signing key is larger than {KEY_MAX_BYTES} bytes")
    lines = [ln.strip() for ln in text.strip().splitlines()]
    try:
        start = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        end = lines.index("-----END PGP PUBLIC KEY BLOCK-----", start)
    except ValueError:
        raise SignatureKeyError("the signing key is not an armoured OpenPGP public key block") from None
    body = lines[start + 1 : end]
    while body and ":" in body[0]:  # armour headers (Version:, Comment:) up to a blank line
        body.pop(0)
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()[1:]
    try:
        data = base64.b64decode("".join(b for b in body if b), validate=True)
        want = int.from_bytes(base64.b64decode(checksum, validate=True), "big") if checksum else None
    except ValueError:
        raise SignatureKeyError("the signing key's armour is not valid base64") from None
    if not data:
        raise SignatureKeyError("the signing key block is empty")
    if want is not None and _crc24(data) != want:
        raise SignatureKeyError("the signing key's armour checksum does not match (a damaged copy?)")
    if not data[0] & 0x80:
        raise SignatureKeyError("the signing key block does not hold OpenPGP packets")
    return data


def _status(out: str) -> dict[str, list[str]]:
    st: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("[GNUPG:] "):
            word, *rest = line[9:].split(" ")
            st[word] = rest
    return st


def verify(
    data: bytes, signature: bytes, signing_key: str, timeout: float = GPGV_TIMEOUT_S
) -> SignatureCheck:
    """Check a detached signature (armoured or binary) of ``data`` against ``signing_key``
    with ``gpgv``. Raises :class:`SignatureKeyError` for a key that is not one."""
    keyring = dearmor(signing_key)
    if len(signature) > SIGNATURE_MAX_BYTES:
        return SignatureCheck(False, f"the signature file is larger than {SIGNATURE_MAX_BYTES} bytes")
    with tempfile.TemporaryDirectory(prefix="rackpilot-gpgv-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        (home / "signing-key.gpg").write_bytes(keyring)
        (home / "catalog.sign").write_bytes(signature)
        (home / "catalog").write_bytes(data)
        proc = childproc.spawn(
            [
                "gpgv",
                "--homedir",
                str(home),
                "--keyring",
                str(home / "signing-key.gpg"),
                "--status-fd",
                "1",
                str(home / "catalog.sign"),
                str(home / "catalog"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            out, _err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            childproc.stop(proc, 1.0)
            return SignatureCheck(False, f"verifying the signature took longer than {timeout:.0f} s")
        finally:
            childproc.kill_group(proc)
    st = _status(out.decode("utf-8", "replace"))
    if proc.returncode == 0 and "VALIDSIG" in st and "GOODSIG" in st:
        return SignatureCheck(True, "good signature", st["VALIDSIG"][0] if st["VALIDSIG"] else None)
    if "BADSIG" in st:
        return SignatureCheck(False, "bad signature: the catalog or its signature was altered")
    if "NO_PUBKEY" in st or ("ERRSIG" in st and len(st["ERRSIG"]) > 5 and st["ERRSIG"][5] == "9"):
        key = (st.get("NO_PUBKEY") or st.get("ERRSIG") or ["?"])[0]
        return SignatureCheck(False, f"signed by key {key}, which is not the catalog's signing key")
    if "NODATA" in st or "ERRSIG" in st:
        return SignatureCheck(False, "the .sign file is not an OpenPGP signature of the catalog")
    return SignatureCheck(False, f"the signature could not be verified (gpgv exit {proc.returncode})")
