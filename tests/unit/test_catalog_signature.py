"""Catalog signatures checked by gpgv (executor/targets/catalog_signature.py), with keys and
signatures made at run time by a real GnuPG in a throw-away home (no key is tracked)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.targets.catalog_signature import SignatureKeyError, dearmor, verify


class Signer:
    """A GnuPG home with one fresh signing key; its agent is stopped on close."""

    def __init__(self, name: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rackpilot-gpg-"))
        self.home.chmod(0o700)
        self._gpg(
            "--passphrase",
            "",
            "--quick-generate-key",
            f"{name} <{name}@lab.test>",
            "ed25519",
            "sign",
            "never",
        )
        self.public = self._gpg("--armor", "--export").decode()

    def _gpg(self, *args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback", *args],
            input=data,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout

    def sign(self, data: bytes, armor: bool = True) -> bytes:
        return self._gpg("--passphrase", "", *(["--armor"] if armor else []), "--detach-sign", data=data)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True, timeout=30
        )
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def signers() -> Iterator[tuple[Signer, Signer]]:
    made: list[Signer] = []
    try:
        made.append(Signer("dell-test"))
        made.append(Signer("someone-else"))
        yield made[0], made[1]
    finally:
        for s in made:
            s.close()


DATA = b'<?xml version="1.0" encoding="utf-16"?><Manifest dateTime="2026-11-01T00:00:00"/>'


def test_a_good_signature_armoured_or_binary_is_accepted_with_its_fingerprint(signers) -> None:
    dell, _ = signers
    for armor in (True, False):
        check = verify(DATA, dell.sign(DATA, armor=armor), dell.public)
        assert check.ok and check.detail == "good signature", check
        assert check.fingerprint and len(check.fingerprint) == 40


def test_an_altered_catalog_another_key_or_no_signature_is_refused_in_words(signers) -> None:
    dell, other = signers
    sig = dell.sign(DATA)
    check = verify(DATA + b" ", sig, dell.public)
    assert not check.ok and "bad signature" in check.detail
    check = verify(DATA, other.sign(DATA), dell.public)
    assert not check.ok and "not the catalog's signing key" in check.detail
    check = verify(DATA, b"<html>404 Not Found</html>", dell.public)
    assert not check.ok and "not an OpenPGP signature" in check.detail
    # the other key's block next to Dell's signature: the key decides, not the signature
    check = verify(DATA, sig, other.public)
    assert not check.ok and "not the catalog's signing key" in check.detail


def test_a_signing_key_that_is_not_one_is_refused_before_gpgv_runs(signers) -> None:
    dell, _ = signers
    assert dearmor(dell.public)[0] & 0x80
    lines = dell.public.strip().splitlines()
    crc_at = next(i for i, ln in enumerate(lines) if ln.startswith("="))
    bad_crc = "\n".join(
        lines[:crc_at] + ["=" + base64.b64encode(b"\x00\x00\x00").decode()] + lines[crc_at + 1 :]
    )
    for key, words in (
        ("not a key", "not an armoured OpenPGP public key block"),
        (bad_crc, "checksum does not match"),
        (
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----",
            "not valid base64",
        ),
        ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----", "empty"),
    ):
        with pytest.raises(SignatureKeyError, match=words):
            verify(DATA, dell.sign(DATA), key)
