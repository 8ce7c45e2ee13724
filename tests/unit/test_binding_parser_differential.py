"""Hostile review: the host the executor checks is the host the HTTP client reaches.

executor.binding.Target.of reads an inventory address with urllib.parse.urlsplit; the
Redfish client (sushy on requests/urllib3) and the OME/vSphere clients (httpx) parse the
same string again when they connect. Where the parsers disagree, a credential sealed for
10.1.2.7 was released for ``https://evil.example\\@10.1.2.7`` (urlsplit: host 10.1.2.7) and
then sent by requests to evil.example (urllib3 reads the backslash as the start of the
path). The address is written by admins and by the service role, i.e. by exactly the
compromised control plane docs/security.md says cannot redirect a secret.
"""

from __future__ import annotations

import httpx
import pytest
import urllib3

from executor.binding import Credential, EndpointNotAllowed, EndpointSpecError, Target
from executor.handlers._dell import DellHandlerError, endpoint_for

SEALED = [
    {"scheme": "https", "host": "10.1.2.7", "port": 443, "tls": {}},
    {"scheme": "https", "host": "10.1.3.0/24", "port": 443, "tls": {"insecure": True}},
    {"scheme": "http", "host": "127.0.0.1", "port": 8001, "tls": {"allow_plain_http": True}},
]

TRICKY = [
    "https://evil.example\\@10.1.2.7",
    "https://evil.example:443\\@10.1.2.7",
    "https://10.1.2.7\\@evil.example",
    "https://evil.example%40@10.1.2.7",
    "https://user@evil.example@10.1.2.7",
    "https://evil.example@10.1.2.7",
    "https://10.1.2.7 @evil.example",
    "https://10.1.2.7\t.evil.example",
    "https://10.1.2.7%2f@evil.example",
    "https://10.1.2.7.",
    "https://10.1.3.9.",
    "http://127.0.0.1:9999\\@127.0.0.1:8001",
]


def cred() -> Credential:
    return Credential.from_plaintext("c1", {"username": "root", "password": "calvin", "endpoints": SEALED})


@pytest.mark.parametrize("address", TRICKY)
def test_target_host_is_what_the_http_clients_connect_to(address: str):
    try:
        t = Target.of(address, {})
    except EndpointSpecError:
        return  # refused: nothing is released
    url = address if "://" in address else f"https://{address}"
    assert urllib3.util.parse_url(url).host == t.host, (address, t.host)
    assert httpx.URL(url).host == t.host, (address, t.host)


@pytest.mark.parametrize("address", TRICKY)
def test_a_tricky_idrac_address_gets_no_password(address: str):
    tls = {"allow_plain_http": True} if address.startswith("http://") else {}
    server = {"name": "s1", "idrac_address": address, "details": {"tls": tls}}
    with pytest.raises((EndpointNotAllowed, DellHandlerError, EndpointSpecError)):
        ep = endpoint_for(server, cred())
        pytest.fail(
            f"{address!r}: released to {ep.url} (requests connects to "
            f"{urllib3.util.parse_url(ep.url + '/redfish/v1').host})"
        )


def test_plain_addresses_still_match():
    c = cred()
    assert c.allowed(Target.of("10.1.2.7", {}))
    assert c.allowed(Target.of("https://10.1.2.7:443/", {}))
    assert c.allowed(Target.of("https://10.1.3.9", {"insecure": True}))
    assert c.allowed(Target.of("http://127.0.0.1:8001", {"allow_plain_http": True}))
    assert c.allowed(Target.of("ssh://[fe80::1]:22", {"insecure_host_key": True})) is None
