"""The executor's half of "a secret goes only where its sealer said": endpoint entries,
matching, the envelope carrying them, and the handlers refusing before any client exists."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from executor import secrets as sec
from executor.binding import (
    Credential,
    EndpointNotAllowed,
    EndpointSpecError,
    SealedEndpoint,
    Target,
    endpoint_entries,
)
from executor.log import REDACTED, SECRETS
from executor.steps import StepContext, StepEngine, StepError, StepSpec


def cred(*endpoints: Any, secret: dict[str, str] | None = None) -> Credential:
    plain = {"username": "root", "password": "pw-binding-1", **(secret or {})}
    return Credential.from_plaintext("c1", {**plain, "endpoints": endpoint_entries(endpoints)})


def allowed(c: Credential, address: str, tls: dict[str, Any] | None = None, **kw: Any) -> bool:
    try:
        c.release(Target.of(address, tls, **kw))
        return True
    except EndpointNotAllowed:
        return False


def test_exact_scheme_host_port_and_trust():
    c = cred({"url": "https://iDRAC-01.Example.", "tls": {"ca_bundle": "/ca.pem"}})
    assert allowed(c, "https://idrac-01.example:443", {"ca_bundle": "/ca.pem"})
    assert allowed(c, "idrac-01.example", {"ca_bundle": "/ca.pem"})  # bare host: https, 443
    assert not allowed(c, "https://idrac-01.example:8443", {"ca_bundle": "/ca.pem"})  # port
    assert not allowed(c, "https://idrac-02.example", {"ca_bundle": "/ca.pem"})  # host
    assert not allowed(c, "https://idrac-01.example.attacker.test", {"ca_bundle": "/ca.pem"})
    assert not allowed(c, "https://idrac-01.example", {"insecure": True})  # weaker trust
    assert not allowed(c, "https://idrac-01.example", {})  # other trust (system store)
    assert not allowed(c, "https://idrac-01.example", {"ca_bundle": "/other.pem"})  # other CA


def test_insecure_and_plain_http_only_when_sealed_so():
    c = cred({"url": "https://10.1.2.7", "tls": {"insecure": True}}, "http://127.0.0.1:8001")
    assert allowed(c, "10.1.2.7", {"insecure": True})
    assert not allowed(c, "10.1.2.7", {})  # sealed insecure is not "any trust"
    assert allowed(c, "http://127.0.0.1:8001", {"allow_plain_http": True})
    assert not allowed(c, "http://127.0.0.1:8002", {"allow_plain_http": True})
    assert not allowed(c, "https://127.0.0.1:8001", {"insecure": True})
    with pytest.raises(EndpointSpecError, match="loopback"):
        endpoint_entries(["http://10.1.2.7"])  # plain HTTP off loopback cannot even be sealed
    with pytest.raises(EndpointSpecError, match="choose one"):
        endpoint_entries([{"url": "https://x", "tls": {"insecure": True, "ca_bundle": "/ca.pem"}}])


def test_networks_contain_addresses_never_names():
    c = cred({"scheme": "https", "host": "10.1.2.0/24", "tls": {}})
    assert allowed(c, "10.1.2.200") and allowed(c, "https://10.1.2.1:443")
    assert not allowed(c, "10.1.3.1")
    assert not allowed(c, "idrac.example")  # a name could resolve anywhere
    with pytest.raises(EndpointSpecError):
        SealedEndpoint.parse({"scheme": "https", "host": "10.1.2.5/24"})  # host bits set


def test_ipv6_and_ssh():
    c = cred("https://[2001:db8::0:1]:8443", {"url": "ssh://esx-01.lab", "tls": {"known_hosts": "/kh"}})
    assert allowed(c, "https://[2001:db8::1]:8443")
    assert allowed(c, "esx-01.lab", {"known_hosts": "/kh"}, scheme="ssh", port=22)
    assert not allowed(c, "esx-01.lab", {"insecure_host_key": True}, scheme="ssh", port=22)
    assert not allowed(c, "esx-01.lab", {"known_hosts": "/kh"}, scheme="ssh", port=2222)


def test_no_endpoints_means_nowhere_and_the_error_is_specific():
    c = Credential.from_plaintext("old", {"username": "root", "password": "pw-binding-2"})
    with pytest.raises(EndpointNotAllowed, match="sealed without endpoints") as exc:
        c.release(Target.of("https://10.1.2.7"))
    assert isinstance(exc.value, StepError)  # the step fails with it; the job records its class
    assert "pw-binding-2" not in str(exc.value)
    c = cred("https://10.1.2.7")
    with pytest.raises(EndpointNotAllowed, match=r"https://10\.9\.9\.9:443 \(system\).*nothing was sent"):
        c.release(Target.of("https://10.9.9.9", name="srv01"))


def test_secrets_come_only_from_release():
    c = cred("https://10.1.2.7")
    assert c.get("username") == "root" and c.get("password") is None
    assert "pw-binding-1" not in repr(c)
    assert c.release(Target.of("10.1.2.7")) == {"username": "root", "password": "pw-binding-1"}


def test_the_envelope_carries_the_endpoints_authenticated():
    kp = sec.KeyPair(X25519PrivateKey.generate())
    env = sec.seal(
        kp.public_raw,
        {"username": "root", "password": "pw-binding-3"},
        endpoints=[{"url": "https://10.1.2.7", "tls": {"ca_bundle": "/ca.pem"}}],
    )
    plain = kp.open(env)
    assert plain["endpoints"] == [
        {"scheme": "https", "host": "10.1.2.7", "port": 443, "tls": {"ca_bundle": "/ca.pem"}}
    ]
    # secret values are registered for redaction; the endpoint list is not secret and is not
    assert SECRETS.redact("x pw-binding-3 x") == f"x {REDACTED} x"
    assert SECRETS.redact("10.1.2.7") == "10.1.2.7"
    # the endpoint list is inside the ciphertext: not readable, and not changeable without the tag failing
    assert "10.1.2.7" not in json.dumps(env)
    ct = bytearray(sec.unb64u(env["ct"]))
    ct[5] ^= 1
    with pytest.raises(sec.EnvelopeError, match="authentication"):
        kp.open({**env, "ct": sec.b64u(bytes(ct))})
    # a bad entry inside a (validly sealed) envelope is refused as a whole
    bad = sec.seal(kp.public_raw, {"username": "root", "password": "x"})
    bad_plain = {**kp.open(bad), "endpoints": [{"scheme": "gopher", "host": "x"}]}
    with pytest.raises(EndpointSpecError):
        Credential.from_plaintext("c", bad_plain)


# --- the handlers build no client for an endpoint the credential does not name ------------------------
def server(address: str, tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "s1",
        "name": "srv01",
        "idrac_address": address,
        "details": {"tls": tls},
        "credential_set_id": "c1",
    }


def test_dell_endpoint_for_checks_before_any_client(monkeypatch):
    from executor.handlers import _dell

    c = cred({"url": "http://127.0.0.1:8001", "tls": {"allow_plain_http": True}})
    ep = _dell.endpoint_for(server("http://127.0.0.1:8001", {"allow_plain_http": True}), c)
    assert ep.password == "pw-binding-1" and ep.username == "root"
    with pytest.raises(EndpointNotAllowed):
        _dell.endpoint_for(server("http://127.0.0.1:9999", {"allow_plain_http": True}), c)

    class Session:  # the job session's part the step context uses here (no control plane runs)
        job = {"id": "j1", "type": "firmware_update", "params": {}}

        def __init__(self):
            self.tasks: list[dict[str, Any]] = []

        async def call(self, fn, params):
            assert fn == "update_task"
            self.tasks.append(params)

        async def credentials(self, cid):
            return c

    session = Session()
    ctx = StepContext(StepEngine(), session, StepSpec("backup", lambda ctx: None), 0, {}, None, 1)
    with pytest.raises(EndpointNotAllowed):
        asyncio.run(_dell.endpoints(ctx, [server("http://127.0.0.1:9999", {"allow_plain_http": True})]))
    assert session.tasks[0]["p_status"] == "failed"
    assert session.tasks[0]["p_target_kind"] == "server" and session.tasks[0]["p_target_id"] == "s1"
    assert session.tasks[0]["p_error"].startswith("EndpointNotAllowed: ")


def test_vcenter_and_ome_endpoints_check_too(tmp_path):
    from executor.handlers._vsphere import TargetProfile
    from executor.handlers.ome import ome_endpoint

    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    c = cred({"url": "https://vc.lab", "tls": {"ca_bundle": str(ca)}}, "http://127.0.0.1:7001")
    vc = {"name": "vc", "address": "vc.lab", "details": {"tls": {"ca_bundle": str(ca)}}}
    assert TargetProfile.vcenter_endpoint(vc, c).password == "pw-binding-1"
    with pytest.raises(EndpointNotAllowed):
        TargetProfile.vcenter_endpoint({**vc, "details": {"tls": {"insecure": True}}}, c)
    with pytest.raises(EndpointNotAllowed):
        TargetProfile.vcenter_endpoint({**vc, "address": "https://vc.attacker.test"}, c)
    assert ome_endpoint({"name": "ome", "address": "http://127.0.0.1:7001"}, c).password == "pw-binding-1"
    with pytest.raises(EndpointNotAllowed):
        ome_endpoint({"name": "ome", "address": "http://127.0.0.1:7002"}, c)


def test_esxi_shell_checks_the_ssh_endpoint():
    from executor.handlers.esxi_upgrade import EsxiUpgradeHandler

    c = cred({"url": "ssh://127.0.0.1:2201", "tls": {"known_hosts": "/kh"}})

    class Ctx:  # the StepContext methods _shell uses
        job = {"credential_set_ids": ["c1"]}
        job_id = "j1"

        async def credentials(self, cid):
            return c

        async def select(self, table, cols, **kw):
            assert table == "credential_sets" and kw == {"id": ["c1"]}
            return [{"id": "c1", "kind": "esxi"}]

    h = EsxiUpgradeHandler()
    ok = {
        "name": "esx01",
        "details": {"ssh": {"address": "127.0.0.1", "port": 2201, "known_hosts": "/kh"}},
    }
    shell = asyncio.run(h._shell(Ctx(), ok))
    assert (shell.host, shell.port, shell.password) == ("127.0.0.1", 2201, "pw-binding-1")
    for ssh in (
        {"address": "127.0.0.1", "port": 2202, "known_hosts": "/kh"},
        {"address": "127.0.0.1", "port": 2201, "insecure_host_key": True},
    ):
        with pytest.raises(EndpointNotAllowed):
            asyncio.run(h._shell(Ctx(), {"name": "esx01", "details": {"ssh": ssh}}))


def test_only_selftest_reads_a_secret_without_an_endpoint():
    """Every handler that connects gets its secret from Credential.release (checked against
    the sealed endpoints); the unchecked accessor is the harness's selftest's alone, and no
    product module calls it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    users = sorted(
        str(p.relative_to(root))
        for folder in ("executor", "console", "devstack")
        for p in (root / folder).rglob("*.py")
        if re.search(r"\.unbound\(", p.read_text()) and p.name != "binding.py"
    )
    assert users == ["devstack/testing/selftest.py"]
    c = cred("https://10.1.2.7")
    assert c.unbound("password") == "pw-binding-1"
