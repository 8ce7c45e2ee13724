"""Where a sealed secret may go: the endpoints named inside its envelope.

A credential is sealed by an admin together with the list of endpoints it may be
presented to (see the plaintext format in :mod:`executor.secrets`). The list travels
inside the authenticated ciphertext, so neither an operator nor the control plane can
change it without the admin sealing again. Before any connection that would carry the
secret, the executor describes the connection it is about to make - scheme, host, port
and TLS trust, taken from the inventory row - as a :class:`Target`, and
:meth:`Credential.release` hands out the secret only when one sealed endpoint allows it.
Otherwise it raises :class:`EndpointNotAllowed` and nothing is sent anywhere.

Endpoint entries (canonical form, inside the envelope)::

    {"scheme": "https", "host": "idrac-01.example", "port": 443, "tls": {}}
    {"scheme": "https", "host": "10.1.2.0/24",      "port": 443, "tls": {"ca_bundle": "/etc/rackpilot/idrac-ca.pem"}}
    {"scheme": "https", "host": "10.1.2.7",         "port": 443, "tls": {"insecure": true}}
    {"scheme": "http",  "host": "127.0.0.1",        "port": 8000, "tls": {"allow_plain_http": true}}
    {"scheme": "ssh",   "host": "esx-01.example",   "port": 22,  "tls": {"known_hosts": "/etc/rackpilot/known_hosts"}}

* ``host``: a DNS name (compared case-insensitively, exactly: no wildcards), an IP
  address, or an IP network in CIDR form (every address inside it). A DNS name matches
  only that name, never the address it resolves to.
* ``port``: the exact TCP port (default 443 for https, 80 for http, 22 for ssh).
* ``tls``: the trust the connection must use, exactly. https: ``{}`` (the system trust
  store), ``{"ca_bundle": path}`` (a bundle on the executor host) or ``{"insecure": true}``
  (no certificate check: only ever an explicit choice in the envelope). http: ``{}`` or
  ``{"allow_plain_http": true}``, and only for loopback hosts. ssh: ``{"known_hosts":
  path}`` or ``{"insecure_host_key": true}``.

The trust must match as well as the address: an endpoint sealed with a CA bundle is not
presentable over ``insecure`` TLS, nor over plain HTTP, to the same host and port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import ExecutorError
from .steps import StepError

DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22}
_NETLOC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]")
MAX_ENDPOINTS = 4096


class CredentialBindingError(StepError):
    """Root of the refusals to present a sealed secret (a job step fails with it)."""


class EndpointNotAllowed(CredentialBindingError):
    """The connection about to be made is not among the endpoints sealed with the secret.

    Raised before anything connects: the secret is not presented. The fix is an admin's:
    reseal the credential naming this endpoint (``encrypt-credentials`` reseal), or put
    the target's address and TLS trust back to what was sealed."""


class EndpointSpecError(ExecutorError, ValueError):
    """An endpoint entry is malformed (in an envelope, or given to the sealing helper)."""


def _host(text: Any) -> str:
    """Canonical host: an IP address or network in its compressed form, a DNS name
    lowercased without a trailing dot."""
    if not isinstance(text, str) or not text.strip():
        raise EndpointSpecError("endpoint host must be a non-empty string")
    h = text.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if "/" in h:
        try:
            return str(ipaddress.ip_network(h, strict=True))
        except ValueError as exc:
            raise EndpointSpecError(f"endpoint host {text!r} is not a valid IP network: {exc}") from None
    h = h.lower().rstrip(".")
    if not h or len(h) > 253 or any(c in h for c in " /\\@:*?#"):
        raise EndpointSpecError(f"endpoint host {text!r} is not a host name, IP address or CIDR network")
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return h
    # "10.1.2.7." is a DNS name to the resolver (looked up, not parsed): it must not match 10.1.2.7
    raise EndpointSpecError(
        f"endpoint host {text!r} is an IP address with a trailing dot, which is looked up in DNS"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        net = ipaddress.ip_network(host, strict=False)
    except ValueError:
        return False
    return net.network_address.is_loopback and net.broadcast_address.is_loopback


def trust_of(scheme: str, tls: Mapping[str, Any] | None) -> str:
    """The TLS trust of a connection as one comparable word: ``system``,
    ``ca_bundle:<path>``, ``insecure``, ``plain-http``, ``known_hosts:<path>`` or
    ``insecure-host-key``. Contradictory or unknown settings raise EndpointSpecError."""
    tls = dict(tls or {})
    if scheme == "ssh":
        known, insecure = tls.pop("known_hosts", None), tls.pop("insecure_host_key", False)
        if tls:
            raise EndpointSpecError(f"unknown ssh trust settings {sorted(tls)}")
        if bool(known) == bool(insecure):
            raise EndpointSpecError(
                "an ssh endpoint needs known_hosts or insecure_host_key=true (exactly one)"
            )
        if known:
            if not isinstance(known, str):
                raise EndpointSpecError("known_hosts must be a path")
            return f"known_hosts:{known}"
        return "insecure-host-key"
    ca, insecure, plain = (
        tls.pop("ca_bundle", None),
        tls.pop("insecure", False),
        tls.pop("allow_plain_http", False),
    )
    if tls:
        raise EndpointSpecError(f"unknown TLS settings {sorted(tls)}")
    if scheme == "http":
        if ca or insecure or plain not in (True, False):
            raise EndpointSpecError("a plain-HTTP endpoint takes no TLS settings (or allow_plain_http: true)")
        return "plain-http"
    if plain:
        raise EndpointSpecError("allow_plain_http is for http:// endpoints only")
    if ca and insecure:
        raise EndpointSpecError("both a CA bundle and insecure=true were given; choose one")
    if ca:
        if not isinstance(ca, str):
            raise EndpointSpecError("ca_bundle must be a path")
        return f"ca_bundle:{ca}"
    if insecure is not False and insecure is not True:
        raise EndpointSpecError("insecure must be true or false")
    return "insecure" if insecure else "system"


@dataclass(frozen=True)
class SealedEndpoint:
    """One endpoint entry of an envelope, validated."""

    scheme: str
    host: str  # canonical: name, IP address or CIDR network
    port: int
    trust: str  # see trust_of

    @classmethod
    def parse(cls, entry: Any) -> SealedEndpoint:
        if not isinstance(entry, Mapping):
            raise EndpointSpecError("an endpoint entry must be an object")
        extra = set(entry) - {"scheme", "host", "port", "tls"}
        if extra:
            raise EndpointSpecError(f"unknown endpoint fields {sorted(extra)}")
        scheme = entry.get("scheme")
        if scheme not in DEFAULT_PORTS:
            raise EndpointSpecError(f"endpoint scheme must be one of {sorted(DEFAULT_PORTS)}, got {scheme!r}")
        host = _host(entry.get("host"))
        port = entry.get("port", DEFAULT_PORTS[scheme])
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise EndpointSpecError(f"endpoint port must be 1..65535, got {port!r}")
        tls = entry.get("tls") or {}
        if not isinstance(tls, Mapping):
            raise EndpointSpecError("endpoint tls must be an object")
        trust = trust_of(scheme, tls)
        if trust == "plain-http" and not _is_loopback(host):
            raise EndpointSpecError(f"plain HTTP may be sealed only for loopback hosts, not {host}")
        return cls(scheme, host, port, trust)

    def allows(self, target: Target) -> bool:
        if (self.scheme, self.port, self.trust) != (target.scheme, target.port, target.trust):
            return False
        if self.host == target.host:
            return True
        if "/" in self.host:
            try:
                return ipaddress.ip_address(target.host) in ipaddress.ip_network(self.host)
            except ValueError:
                return False  # a DNS name is never inside a network: it could resolve anywhere
        return False

    def describe(self) -> str:
        return f"{self.scheme}://{_netloc(self.host, self.port)} ({self.trust})"

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "host": self.host, "port": self.port, "tls": trust_tls(self.trust)}


def trust_tls(trust: str) -> dict[str, Any]:
    """The ``tls`` object of a trust word (the inverse of :func:`trust_of`)."""
    if trust.startswith("ca_bundle:"):
        return {"ca_bundle": trust.split(":", 1)[1]}
    if trust.startswith("known_hosts:"):
        return {"known_hosts": trust.split(":", 1)[1]}
    return {
        "system": {},
        "insecure": {"insecure": True},
        "plain-http": {"allow_plain_http": True},
        "insecure-host-key": {"insecure_host_key": True},
    }[trust]


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and "/" not in host else f"{host}:{port}"


@dataclass(frozen=True)
class Target:
    """The connection the executor is about to make, as the inventory row describes it."""

    scheme: str
    host: str
    port: int
    trust: str
    name: str = ""

    @classmethod
    def of(
        cls,
        address: str,
        tls: Mapping[str, Any] | None = None,
        *,
        scheme: str | None = None,
        port: int | None = None,
        name: str = "",
    ) -> Target:
        """From an inventory address (``host``, ``host:port`` or a URL) and its TLS choice.
        ``scheme`` is the default when the address names none (https)."""
        text = str(address).strip()
        if any(not 0x21 <= ord(c) <= 0x7E or c == "\\" for c in text):
            # urlsplit and the HTTP clients disagree about such addresses (urllib3 reads
            # "https://evil\\@10.1.2.7" as host evil, urlsplit as 10.1.2.7): the check must
            # be about the host the connection will really reach
            raise EndpointSpecError(
                f"{address!r}: an address holds no spaces, control characters or backslashes"
            )
        if "://" not in text:
            text = f"{scheme or 'https'}://{text}"
        parts = urlsplit(text)
        sch = parts.scheme.lower()
        if sch not in DEFAULT_PORTS or not parts.hostname:
            raise EndpointSpecError(f"cannot tell scheme, host and port of {address!r}")
        if "@" in parts.netloc or not set(parts.netloc) <= _NETLOC_CHARS:
            raise EndpointSpecError(
                f"{address!r}: an address is scheme://host[:port]; user info and escapes "
                f"are refused (a client could read another host from them)"
            )
        try:
            p = parts.port
        except ValueError:
            raise EndpointSpecError(f"bad port in {address!r}") from None
        p = port if port is not None else p if p is not None else DEFAULT_PORTS[sch]
        host = _host(parts.hostname)
        if "/" in host:
            raise EndpointSpecError(f"{address!r} names a network, not a host")
        return cls(sch, host, int(p), trust_of(sch, tls), name)

    def describe(self) -> str:
        return f"{self.scheme}://{_netloc(self.host, self.port)} ({self.trust})"


@dataclass(frozen=True)
class Credential:
    """An opened credential: its secret fields and the endpoints they may be presented to.

    The secret values are reachable only through :meth:`release`, which checks the
    target first. ``username`` is not secret (the control plane stores it too)."""

    credential_id: str
    username: str
    endpoints: tuple[SealedEndpoint, ...]
    _secret: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_plaintext(
        cls, credential_id: str, plain: Mapping[str, Any], *, username: str = ""
    ) -> Credential:
        raw = plain.get("endpoints", [])
        if not isinstance(raw, list) or len(raw) > MAX_ENDPOINTS:
            raise EndpointSpecError(f"endpoints must be a list of at most {MAX_ENDPOINTS} entries")
        eps = tuple(SealedEndpoint.parse(e) for e in raw)
        secret = {k: v for k, v in plain.items() if k != "endpoints"}
        if not all(isinstance(v, str) for v in secret.values()):
            raise EndpointSpecError("the secret's fields must be strings")
        return cls(str(credential_id), str(secret.get("username") or username or ""), eps, secret)

    def allowed(self, target: Target) -> SealedEndpoint | None:
        return next((e for e in self.endpoints if e.allows(target)), None)

    def check(self, target: Target) -> SealedEndpoint:
        """The sealed endpoint that allows ``target``, or :class:`EndpointNotAllowed`."""
        ep = self.allowed(target)
        if ep is not None:
            return ep
        who = f"{target.name} " if target.name else ""
        if not self.endpoints:
            raise EndpointNotAllowed(
                f"credential {self.credential_id} was sealed without endpoints, so it is presented nowhere; "
                f"not sending it to {who}{target.describe()} (an admin reseals it naming its endpoints)"
            )
        near = [
            e for e in self.endpoints if e.allows(Target(e.scheme, target.host, e.port, e.trust))
        ]  # same host, other port/scheme/trust
        shown = near or list(self.endpoints)
        listed = ", ".join(e.describe() for e in shown[:3]) + (" ..." if len(shown) > 3 else "")
        raise EndpointNotAllowed(
            f"credential {self.credential_id} may not be presented to {who}{target.describe()}: it is not among "
            f"the {len(self.endpoints)} endpoint(s) sealed with it ({'sealed for this host: ' if near else 'e.g. '}"
            f"{listed}); nothing was sent. An admin reseals the credential naming this endpoint, or restores "
            f"the target's address and TLS settings"
        )

    def release(self, target: Target) -> dict[str, str]:
        """The secret fields, for ``target`` only; raises EndpointNotAllowed otherwise."""
        self.check(target)
        out = dict(self._secret)
        out.setdefault("username", self.username)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """Non-secret fields only (``username``); secrets come from :meth:`release`."""
        return self.username if key == "username" else default

    def unbound(self, key: str) -> str | None:
        """A secret field for code that presents it to no endpoint at all: only the harness's
        ``selftest`` job's redaction check (devstack/testing/selftest.py) uses it
        (tests/unit/test_credential_binding.py holds every other caller to :meth:`release`)."""
        return self._secret.get(key)

    def summary(self) -> list[str]:
        return [e.describe() for e in self.endpoints]


def endpoint_entries(endpoints: Iterable[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
    """Canonical envelope entries from ``{"url", "tls"}``, ``{"scheme", "host", "port", "tls"}``
    or bare URL strings (for the Python sealing helper and tools)."""
    out = []
    for e in endpoints:
        if isinstance(e, str):
            e = {"url": e}
        if "url" in e:
            extra = set(e) - {"url", "tls"}
            if extra:
                raise EndpointSpecError(f"unknown endpoint fields {sorted(extra)}")
            t = Target.of(str(e["url"]), e.get("tls") or {})
            e = {"scheme": t.scheme, "host": t.host, "port": t.port, "tls": dict(e.get("tls") or {})}
        out.append(SealedEndpoint.parse(e).as_dict())
    return out
