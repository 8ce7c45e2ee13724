"""A ZFS replication credential sealed the way an admin seals it - ``rackpilot credentials seal
--kind ssh --endpoint ssh://... --known-hosts sealed`` with the secret {private_key, host_keys}
on standard input, through ``encrypt-credentials`` - opens in the executor and is released to
those two hosts with their pinned keys only (docs/replication.md, docs/security.md)."""

from __future__ import annotations

import json

import pytest

from console.cli import build_parser, seal_endpoints
from console.errors import ValidationFailed
from executor.binding import Credential, EndpointNotAllowed
from executor.handlers.replication_sync import release_secret
from tests.integration._functions_support import close_env, invoke, make_env, q


def _openssh_key() -> str:
    """A private key made at test time (no key is kept in the repository)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        .decode()
    )


KEY = _openssh_key()
PINS = "zfs1.example.net ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1\n[zfs2.example.net]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA2"


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def args(*extra: str):
    return build_parser().parse_args(
        ["credentials", "seal", "--site", "s", "--name", "n", "--kind", "ssh", "--username", "zrepl", *extra]
    )


def test_the_command_line_builds_ssh_endpoints_with_their_host_key_trust():
    eps = seal_endpoints(
        args(
            "--endpoint",
            "ssh://zfs1.example.net",
            "--endpoint",
            "https://10.0.0.1",
            "--known-hosts",
            "sealed",
            "--ca-bundle",
            "/etc/ca.pem",
        )
    )
    assert eps == [
        {"url": "ssh://zfs1.example.net", "tls": {"known_hosts": "sealed"}},
        {"url": "https://10.0.0.1", "tls": {"ca_bundle": "/etc/ca.pem"}},
    ]
    assert seal_endpoints(args("--endpoint", "ssh://h", "--insecure-host-key")) == [
        {"url": "ssh://h", "tls": {"insecure_host_key": True}}
    ]
    with pytest.raises(ValidationFailed, match="needs --known-hosts"):
        seal_endpoints(args("--endpoint", "ssh://h"))
    with pytest.raises(ValidationFailed, match="choose one"):
        seal_endpoints(args("--endpoint", "ssh://h", "--known-hosts", "sealed", "--insecure-host-key"))


def test_sealed_by_encrypt_credentials_released_to_the_two_hosts_with_their_pinned_keys(env):
    endpoints = seal_endpoints(
        args(
            "--endpoint",
            "ssh://zfs1.example.net",
            "--endpoint",
            "ssh://zfs2.example.net:2222",
            "--known-hosts",
            "sealed",
        )
    )
    secret = json.dumps({"private_key": KEY, "host_keys": PINS})
    status, res = invoke(
        env.users["admin"],
        "encrypt-credentials",
        {
            "action": "seal",
            "site_id": env.fleet.site_a,
            "name": f"zfs-{env.tag}",
            "kind": "ssh",
            "username": "zrepl",
            "secret": secret,
            "endpoints": endpoints,
        },
    )
    assert status == 200, res
    assert [e["tls"] for e in res["endpoints"]] == [{"known_hosts": "sealed"}] * 2
    row = q(
        env.conn,
        "select sealed_secret from public.credential_envelopes where credential_set_id = %s and key_id = %s",
        res["credential_set_id"],
        env.fleet.executor_key.kid,
    )[0]
    cred = Credential.from_plaintext(
        res["credential_set_id"], env.fleet.executor_key.open(row["sealed_secret"])
    )
    for host, port in (("zfs1.example.net", 22), ("zfs2.example.net", 2222)):
        got = release_secret(cred, host, port, "pair")
        assert got["private_key"] == KEY and got["host_keys"] == PINS and got["username"] == "zrepl"
        assert "password" not in got
    with pytest.raises(EndpointNotAllowed):
        release_secret(cred, "zfs3.example.net", 22, "pair")  # not sealed for it
    with pytest.raises(EndpointNotAllowed):
        release_secret(cred, "zfs2.example.net", 22, "pair")  # another port

    # the same secret sealed with a known_hosts path is not released to a connection that
    # trusts sealed keys only
    status, res = invoke(
        env.users["admin"],
        "encrypt-credentials",
        {
            "action": "seal",
            "site_id": env.fleet.site_a,
            "name": f"zfs-path-{env.tag}",
            "kind": "ssh",
            "username": "zrepl",
            "secret": secret,
            "endpoints": [
                {"url": "ssh://zfs1.example.net", "tls": {"known_hosts": "/etc/rackpilot/known_hosts"}}
            ],
        },
    )
    assert status == 200, res
    row = q(
        env.conn,
        "select sealed_secret from public.credential_envelopes where credential_set_id = %s and key_id = %s",
        res["credential_set_id"],
        env.fleet.executor_key.kid,
    )[0]
    cred = Credential.from_plaintext(
        res["credential_set_id"], env.fleet.executor_key.open(row["sealed_secret"])
    )
    with pytest.raises(EndpointNotAllowed):
        release_secret(cred, "zfs1.example.net", 22, "pair")
