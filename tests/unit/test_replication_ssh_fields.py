"""A replication credential sealed by encrypt-credentials: the admin's secret (sealed as
``password``) is the JSON object {private_key, host_keys}; the handler takes both from it."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from executor.handlers.replication_sync import ssh_fields

# a key made at test time (no key text is kept in the repository)
KEY = (
    Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    .decode()
)


def test_the_json_secret_gives_the_key_and_the_pinned_host_keys():
    out = ssh_fields(
        {"username": "zrepl", "password": json.dumps({"private_key": KEY, "host_keys": "h ssh-ed25519 A"})}
    )
    assert out == {"username": "zrepl", "private_key": KEY, "host_keys": "h ssh-ed25519 A"}


def test_fields_sealed_directly_win_and_other_secrets_pass_unchanged():
    direct = {
        "username": "u",
        "private_key": KEY,
        "host_keys": "x",
        "password": json.dumps({"private_key": "other"}),
    }
    assert ssh_fields(direct) == direct
    for plain in (
        {"username": "u", "password": "hunter2"},
        {"username": "u", "password": "{not json"},
        {"username": "u", "password": "[1, 2]"},
        {"username": "u"},
    ):
        assert ssh_fields(plain) == plain
    # only the two string fields are taken: nothing else of the object leaks into the secret
    out = ssh_fields(
        {"username": "u", "password": json.dumps({"private_key": KEY, "username": "root", "host_keys": 7})}
    )
    assert out == {"username": "u", "private_key": KEY}
