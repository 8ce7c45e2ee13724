"""How rackpilot reaches a management endpoint (iDRAC, OME): address, credentials, TLS
choice, and the timeouts of every wait.

TLS is never a silent choice. The default is HTTPS with certificate verification against
the system trust store; a per-target CA bundle is the normal way to trust self-signed
iDRAC certificates. Skipping verification (`insecure=True`) or speaking plain HTTP
(`allow_plain_http=True`, for the loopback lab) must be asked for, is shown by
`tls_mode`, and is logged as a warning every time a client opens the endpoint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

from .errors import TLSConfigurationError


@dataclass(frozen=True)
class Endpoint:
    url: str  # https://host[:port]; a bare host means https
    username: str
    password: str = field(repr=False)
    ca_bundle: str | None = None  # PEM file (or c_rehash'd directory) trusted for this target only
    insecure: bool = False  # accept any certificate; visible in tls_mode and logged on every open
    allow_plain_http: bool = False  # plain HTTP; meant for the loopback lab; logged on every open
    name: str | None = None  # how operators know the target (defaults to host:port)

    def __post_init__(self) -> None:
        url = self.url if "://" in self.url else f"https://{self.url}"
        parts = urlsplit(url)
        who = self.name or parts.netloc or self.url
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TLSConfigurationError(
                f"endpoint URL must be https://host[:port], got {self.url!r}", target=who, hint=""
            )
        if parts.scheme == "http":
            if not self.allow_plain_http:
                raise TLSConfigurationError(
                    "plain HTTP was given but not allowed; credentials would cross the network in clear",
                    target=who,
                    hint="use https, or set allow_plain_http=True for a loopback lab",
                )
            if self.insecure or self.ca_bundle:
                raise TLSConfigurationError(
                    "insecure/ca_bundle make no sense for a plain-HTTP endpoint", target=who, hint=""
                )
        if self.insecure and self.ca_bundle:
            raise TLSConfigurationError(
                "both a CA bundle and insecure=True were given; choose one", target=who, hint=""
            )
        if self.ca_bundle and not os.path.exists(self.ca_bundle):
            raise TLSConfigurationError(f"CA bundle {self.ca_bundle} does not exist", target=who, hint="")
        object.__setattr__(self, "url", f"{parts.scheme}://{parts.netloc}")

    @property
    def display(self) -> str:
        return self.name or urlsplit(self.url).netloc

    @property
    def verify(self) -> bool | str:
        """The value requests/httpx expect: True, a CA path, or False (insecure)."""
        if self.ca_bundle:
            return self.ca_bundle
        return not self.insecure

    @property
    def tls_mode(self) -> str:
        if self.url.startswith("http://"):
            return "plain-http"
        if self.insecure:
            return "https-insecure-no-verify"
        if self.ca_bundle:
            return f"https-verify-ca-bundle:{self.ca_bundle}"
        return "https-verify-system-ca"

    def announce(self, log: logging.Logger) -> None:
        """Log the transport choice; loudly when it is not verified HTTPS."""
        if self.tls_mode in ("plain-http", "https-insecure-no-verify"):
            log.warning(
                "target %s: %s (explicitly configured; certificates are not checked)",
                self.display,
                self.tls_mode,
            )
        else:
            log.debug("target %s: %s", self.display, self.tls_mode)


@dataclass(frozen=True)
class Timeouts:
    """Every wait of the target clients, in seconds unless stated. Defaults are sized for
    real PowerEdge servers (field notes, Ironic and Dell's own scripts); the lab compresses
    them with `compressed(time_scale)` so the logic sees the same sequence of states."""

    connect: float = 10.0  # TCP connect per request; fails fast on a dead BMC
    read: float = 60.0  # per HTTP request, from sent to answered
    power: float = 300.0  # confirmed power state (PowerEdge graceful reboot budget: 5 min)
    lc_ready: float = 900.0  # Lifecycle Controller Ready after POST/reset (POST + LC ≈ minutes)
    job: float = 1800.0  # one Dell firmware/config job (Dell scripts wait 30 min per job)
    scp: float = 1200.0  # SCP export/import task (5-10 min in the field, doubled)
    stall: float = 900.0  # a job whose state and percent do not change this long is stuck
    idrac_reset: float = 600.0  # iDRAC unreachable 2-3 min after a reset, then LC start-up
    session_wait: float = 120.0  # keep retrying a session while another tool holds all (RAC0218)
    poll: float = 5.0  # between two polls of a job, task, power or LC state
    retry_delay: float = 2.0  # between transport retries (connection errors, 5xx on GET)
    retries: int = 2  # transport retries per request (count, not seconds)

    def compressed(self, factor: float) -> Timeouts:
        """All durations divided by `factor` (retries unchanged) for time-scaled labs."""
        changes = {f.name: getattr(self, f.name) / factor for f in fields(self) if f.name != "retries"}
        return replace(self, **changes)
