"""encrypt-credentials end to end: envelopes made by the Deno function open with the
executor's Python opener (executor/secrets.py, `cryptography`) and its private key, with no
other key, and the plaintext is nowhere in the database (a full pg_dump and the server
log) or in the stack's logs (gateway + Deno functions output)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from executor.secrets import EnvelopeError, KeyPair
from supabase import create_client
from tests.integration._functions_support import FnEnv, close_env, insert_job, invoke, make_env, q

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def _secret() -> str:
    # unique per run, so a hit in the logs or dump can only come from this test
    return f"pw-{uuid.uuid4().hex}-Zq!"


def _envelopes(env: FnEnv, cred_id: str) -> dict[str, str]:
    rows = q(
        env.conn,
        "select key_id, sealed_secret from public.credential_envelopes where credential_set_id = %s",
        cred_id,
    )
    return {r["key_id"]: r["sealed_secret"] for r in rows}


def _scan_everywhere(env: FnEnv, needle: str) -> list[str]:
    """Where ``needle`` appears: a full dump of the database, and every file under logs/."""
    hits = []
    dump = subprocess.run(
        [PG_DUMP, "--data-only", "--no-owner", env.stack.pg.dsn()], capture_output=True, text=True, check=True
    ).stdout
    assert "credential_envelopes" in dump and len(dump) > 10_000, "the dump must cover the data"
    if needle in dump:
        hits.append("pg_dump")
    log_dir = env.stack.cfg.log_dir
    logs = sorted(p for p in log_dir.rglob("*") if p.is_file())
    assert any(p.name == "gateway.log" for p in logs), f"no gateway log under {log_dir}"
    for p in logs:
        if needle.encode() in p.read_bytes():
            hits.append(str(p))
    # Postgres' own log lives beside the cluster when the stack puts it there
    for p in env.stack.cfg.state_dir.rglob("*.log"):
        if p.is_file() and needle.encode() in p.read_bytes() and str(p) not in hits:
            hits.append(str(p))
    return hits


def test_sealed_credentials_open_only_with_the_executors_key_and_leak_nowhere(env: FnEnv):
    admin = env.users["admin"]
    secret = _secret()
    status, res = invoke(
        admin,
        "encrypt-credentials",
        {
            "action": "seal",
            "site_id": env.fleet.site_a,
            "name": "idrac-root",
            "kind": "idrac",
            "username": "root",
            "secret": secret,
            "endpoints": [
                {"url": "https://iDRAC-01.lab.", "tls": {"ca_bundle": "/etc/rackpilot/idrac-ca.pem"}},
                {"scheme": "https", "host": "10.40.0.0/24", "tls": {"insecure": True}},
            ],
        },
    )
    assert status == 200, res
    assert secret not in json.dumps(res)
    cred = res["credential_set_id"]
    assert res["key_ids"] == [env.fleet.executor_key.kid]

    # the set names the secret; its only copy is the envelope sealed to the executor's key
    assert (
        q(env.conn, "select username from public.credential_sets where id = %s", cred)[0]["username"]
        == "root"
    )
    [row] = q(
        env.conn,
        "select key_id, sealed_secret from public.credential_envelopes where credential_set_id = %s",
        cred,
    )
    assert row["key_id"] == env.fleet.executor_key.kid
    assert secret not in row["sealed_secret"]
    # the executor's own opener, with its private key
    sealed_endpoints = [
        {
            "scheme": "https",
            "host": "idrac-01.lab",
            "port": 443,
            "tls": {"ca_bundle": "/etc/rackpilot/idrac-ca.pem"},
        },
        {"scheme": "https", "host": "10.40.0.0/24", "port": 443, "tls": {"insecure": True}},
    ]
    assert env.fleet.executor_key.open(row["sealed_secret"]) == {
        "username": "root",
        "password": secret,
        "endpoints": sealed_endpoints,
    }
    # the endpoints are canonical inside the envelope, and a readable copy is kept for display
    assert res["endpoints"] == sealed_endpoints
    assert (
        q(env.conn, "select endpoints from public.credential_sets where id = %s", cred)[0]["endpoints"]
        == sealed_endpoints
    )
    for text in _envelopes(env, cred).values():
        assert env.fleet.executor_key.open(json.loads(text))["password"] == secret
    # any other key: refused (named key mismatch), and even forcing the kid cannot decrypt
    stranger = KeyPair(X25519PrivateKey.generate())
    with pytest.raises(EnvelopeError):
        stranger.open(row["sealed_secret"])
    forced = {**json.loads(row["sealed_secret"]), "kid": stranger.kid}
    with pytest.raises(EnvelopeError, match="authentication"):
        stranger.open(forced)

    # users cannot read the ciphertext either: the column is not granted to them
    status, _ = invoke(
        env.users["operator"], "encrypt-credentials", {"action": "status", "site_id": env.fleet.site_a}
    )
    assert status == 403
    assert _scan_everywhere(env, secret) == []


def test_reseal_after_key_rotation_and_the_executor_rpc(env: FnEnv, supabase_env):
    admin = env.users["admin"]
    first, second = _secret(), _secret()
    status, res = invoke(
        admin,
        "encrypt-credentials",
        {
            "action": "seal",
            "site_id": env.fleet.site_a,
            "name": "vc-admin",
            "kind": "vcenter",
            "username": "administrator@vsphere.local",
            "secret": first,
            "endpoints": [{"url": "https://vc.lab:443"}],
        },
    )
    assert status == 200, res
    cred = res["credential_set_id"]

    # a second executor joins the site with its own key: the set is now stale for it
    new_key = KeyPair(X25519PrivateKey.generate())
    new_exec = str(
        q(
            env.conn,
            "insert into public.executors (site_id, name, public_key, key_id) "
            "values (%s, %s, %s, %s) returning id",
            env.fleet.site_a,
            f"exec2-{env.tag}",
            new_key.public_b64,
            new_key.kid,
        )[0]["id"]
    )
    status, st = invoke(admin, "encrypt-credentials", {"action": "status", "site_id": env.fleet.site_a})
    assert status == 200
    mine = next(s for s in st["credential_sets"] if s["id"] == cred)
    assert mine["stale"] is True and new_key.kid in st["executor_key_ids"]

    # the admin re-enters the secret (rotated at the same time): sealed to both keys
    status, res = invoke(
        admin,
        "encrypt-credentials",
        {
            "action": "reseal",
            "credential_set_id": cred,
            "secret": second,
            "endpoints": [{"url": "https://vc2.lab"}],
        },
    )
    assert status == 200, res
    assert sorted(res["key_ids"]) == sorted([env.fleet.executor_key.kid, new_key.kid])
    envs = _envelopes(env, cred)
    assert new_key.open(envs[new_key.kid])["password"] == second
    assert env.fleet.executor_key.open(envs[env.fleet.executor_key.kid])["password"] == second
    with pytest.raises(EnvelopeError):
        new_key.open(envs[env.fleet.executor_key.kid])
    status, st = invoke(admin, "encrypt-credentials", {"action": "status", "site_id": env.fleet.site_a})
    assert not next(s for s in st["credential_sets"] if s["id"] == cred)["stale"]

    # the new executor fetches its own envelope for a job it holds (service key, REST RPC)
    job = insert_job(env.conn, env.fleet, "pending")
    q(env.conn, "update public.jobs set credential_set_ids = array[%s]::uuid[] where id = %s", cred, job)
    q(
        env.conn,
        "update public.jobs set status = 'running', claimed_by = %s, lease_expires_at = now() + interval '1 min' "
        "where id = %s",
        new_exec,
        job,
    )
    service = create_client(supabase_env["SUPABASE_URL"], supabase_env["SUPABASE_SERVICE_ROLE_KEY"])
    got = (
        service.rpc(
            "get_job_credential_envelope",
            {"p_executor_id": new_exec, "p_job_id": job, "p_epoch": 0, "p_credential_set_id": cred},
        )
        .execute()
        .data
    )
    assert new_key.open(got[0]["sealed_secret"]) == {
        "username": "administrator@vsphere.local",
        "password": second,
        "endpoints": [{"scheme": "https", "host": "vc2.lab", "port": 443, "tls": {}}],
    }
    assert _scan_everywhere(env, first) == [] and _scan_everywhere(env, second) == []
    # positive control: the scan does find what is stored in the clear (the username)
    assert "pg_dump" in _scan_everywhere(env, "administrator@vsphere.local")
