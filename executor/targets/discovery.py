"""Finding iDRACs: address ranges, and the probe of one address.

The probe of an address, in order, with at most one Redfish session open on it:

1. ``GET /redfish/v1/`` without credentials (the service root is public by the Redfish
   specification). No answer: ``no_answer``; an answer that is not a Redfish service root:
   ``not_redfish``; a Redfish service of another vendor: ``not_dell``. This read carries no
   secret, so its TLS certificate is not checked (the trust that matters is the one the
   credential is presented over, below).
2. The credential sets, in the order the scan gives them. A set is presented to the
   address only when one of the endpoints sealed with it allows this scheme, host, port
   (:mod:`executor.binding`; an envelope may name a CIDR network), and over the TLS trust
   sealed for it. Sets whose envelope does not cover the address are not tried; when no set
   may be presented the address is ``credential_not_allowed``, when every one that may was
   refused it is ``wrong_credentials``. A full session table (RAC0218) is
   ``session_limit``: discovery never waits for a slot, the next scan finds it.
3. With a session: the system (model, service tag) and the manager (iDRAC model and
   firmware) are read, and the session is deleted in every case.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from ..binding import Credential, Target, trust_tls
from ..calllog import attach_requests
from .endpoint import Timeouts

MAX_ADDRESSES = 4096  # addresses one scan may probe (count)


class RangeError(ValueError):
    """An address range cannot be read, or the scan names too many addresses."""


def _count(entry: str) -> int:
    if "/" in entry:
        net = ipaddress.ip_network(entry, strict=False)
        return (
            net.num_addresses
            if net.num_addresses <= 2
            else net.num_addresses - (2 if net.version == 4 else 1)
        )
    if "-" in entry:
        a, b = (ipaddress.ip_address(x.strip()) for x in entry.split("-", 1))
        if a.version != b.version or int(b) < int(a):
            raise RangeError(
                f"range {entry!r}: the last address must be of the same family and not before the first"
            )
        return int(b) - int(a) + 1
    return 1


def _expand(entry: str) -> Iterator[str]:
    if "/" in entry:
        net = ipaddress.ip_network(entry, strict=False)
        yield from (str(h) for h in (net.hosts() if net.num_addresses > 2 else net))
    elif "-" in entry:
        a, b = (ipaddress.ip_address(x.strip()) for x in entry.split("-", 1))
        for i in range(int(a), int(b) + 1):
            yield str(ipaddress.ip_address(i))
    else:
        yield str(ipaddress.ip_address(entry))


def expand(ranges: Iterable[str], hosts: Iterable[str], limit: int = MAX_ADDRESSES) -> list[str]:
    """Every address the scan names, each once, in the order given: the usable hosts of
    CIDR networks (no network or broadcast address), first-last ranges, then the host list
    (IP addresses canonical, names lowercased). More than ``limit`` raises RangeError."""
    ranges, hosts = list(ranges), list(hosts)
    try:
        total = sum(_count(r) for r in ranges) + len(hosts)
    except ValueError as exc:
        raise RangeError(str(exc)) from None
    if total > limit:
        raise RangeError(f"the scan names {total} addresses; at most {limit} per scan (split the ranges)")
    out: dict[str, None] = {}
    for r in ranges:
        for a in _expand(r):
            out.setdefault(a, None)
    for h in hosts:
        try:
            out.setdefault(str(ipaddress.ip_address(h)), None)
        except ValueError:
            out.setdefault(h.lower().rstrip("."), None)
    if not out:
        raise RangeError("the scan names no address: give ranges or hosts")
    return list(out)


def netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def inventory_address(scheme: str, host: str, port: int) -> str:
    """How a discovered BMC's address is stored in servers.idrac_address."""
    return host if (scheme, port) == ("https", 443) else f"{scheme}://{netloc(host, port)}"


@dataclass
class Probe:
    """What one address turned out to be (``reason`` set: skipped, and why)."""

    address: str
    idrac_address: str
    reason: str | None = None
    message: str = ""
    service_tag: str | None = None
    model: str | None = None
    idrac_generation: str | None = None
    firmware_version: str | None = None
    credential_set_id: str | None = None
    tls: dict[str, Any] | None = None
    sessions_opened: int = 0
    sessions_closed: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        out = {
            "address": self.address,
            "idrac_address": self.idrac_address,
            "message": self.message,
            "details": self.details,
        }
        for k in (
            "reason",
            "service_tag",
            "model",
            "idrac_generation",
            "firmware_version",
            "credential_set_id",
            "tls",
        ):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


def generation(manager_model: str) -> str:
    """iDRAC generation from the manager's model ("14G Monolithic" -> iDRAC9)."""
    head = manager_model.strip().split(" ", 1)[0].upper()
    gen = {
        "12G": "iDRAC7",
        "13G": "iDRAC8",
        "14G": "iDRAC9",
        "15G": "iDRAC9",
        "16G": "iDRAC9",
        "17G": "iDRAC10",
    }.get(head)
    return f"{gen} ({manager_model})" if gen else manager_model or "unknown"


def _verify(trust: str) -> bool | str:
    if trust.startswith("ca_bundle:"):
        return trust.split(":", 1)[1]
    return trust == "system"


def _json(r: requests.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def probe(host: str, scheme: str, port: int, creds: list[Credential], timeouts: Timeouts) -> Probe:
    """Probe one address (see the module's docstring); never raises for what a BMC does."""
    base = f"{scheme}://{netloc(host, port)}"
    p = Probe(host, inventory_address(scheme, host, port))
    timeout = (timeouts.connect, timeouts.read)
    root = _dell_service_root(p, base, scheme, port, timeout)
    if root is None:
        return p
    p.details["redfish_version"] = root.get("RedfishVersion")
    sessions = ((root.get("Links") or {}).get("Sessions") or {}).get(
        "@odata.id"
    ) or "/redfish/v1/SessionService/Sessions"
    refused: list[str] = []
    allowed_any = False
    for cred in creds:
        sealed = next((e for e in cred.endpoints if e.allows(Target(scheme, host, port, e.trust))), None)
        if sealed is None:
            continue  # its envelope does not cover this address: never presented here
        allowed_any = True
        target = Target(scheme, host, port, sealed.trust, name=base)
        if _try_credential(p, cred, sealed, target, root, sessions, timeout):
            return p
        refused.append(cred.credential_id)
    if not allowed_any:
        p.reason = "credential_not_allowed"
        p.message = "none of the scan's credential sets is sealed for this address; none was presented"
    else:
        p.reason = "wrong_credentials"
        p.message = f"refused {len(refused)} credential set(s)"
        p.details["refused"] = refused
    return p


def _dell_service_root(p: Probe, base: str, scheme: str, port: int, timeout: Any) -> dict[str, Any] | None:
    """The Redfish service root at ``base``, read without credentials, when it is a Dell
    one; else None, with the probe's reason and message saying what answered instead."""
    with requests.Session() as anon:
        attach_requests(anon, base)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                r = anon.get(f"{base}/redfish/v1/", timeout=timeout, verify=False, allow_redirects=False)
        except requests.RequestException as exc:
            p.reason, p.message = "no_answer", f"no answer on {scheme} port {port} ({type(exc).__name__})"
            return None
    root = _json(r)
    if r.status_code != 200 or not isinstance(root, dict) or "RedfishVersion" not in root:
        p.reason, p.message = "not_redfish", f"HTTP {r.status_code} without a Redfish service root"
        return None
    vendor = str(root.get("Vendor") or "")
    if not (vendor.lower().startswith("dell") or "Dell" in (root.get("Oem") or {})):
        p.reason = "not_dell"
        p.message = (
            f"a Redfish service of {vendor or 'an unknown vendor'} ({root.get('Product') or 'no product'})"
        )
        return None
    return root


def _try_credential(
    p: Probe, cred: Credential, sealed: Any, target: Target, root: dict[str, Any], sessions: str, timeout: Any
) -> bool:
    """Sign in to ``target`` with one credential set sealed for it, identify the server and
    sign out. False when the BMC refused the credentials (the next set may be tried); True
    when the probe is decided: found, or with its reason."""
    base = target.name
    secret = cred.release(target)
    with requests.Session() as http:
        attach_requests(http, base)
        http.verify = _verify(sealed.trust) if target.scheme == "https" else True
        try:
            login = http.post(
                f"{base}{sessions}",
                json={"UserName": secret.get("username", ""), "Password": secret.get("password", "")},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError:
            p.reason = "error"
            p.message = f"TLS: the certificate is not trusted as credential {cred.credential_id} was sealed"
            return True
        except requests.RequestException as exc:
            p.reason, p.message = "no_answer", f"session login got no answer ({type(exc).__name__})"
            return True
        if login.status_code in (401, 403):
            return False
        token = _session_token(p, login)
        if token is None:
            return True
        p.sessions_opened += 1
        http.headers["X-Auth-Token"] = token
        try:
            _identify(http, base, root, timeout, p)
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
            p.reason, p.message = "error", f"reading the system failed ({type(exc).__name__})"
        finally:
            _sign_out(p, http, base, login.headers.get("Location"), timeout)
        if p.reason is None:
            p.credential_set_id = cred.credential_id
            p.tls = trust_tls(sealed.trust)
        return True


def _session_token(p: Probe, login: requests.Response) -> str | None:
    """The token of the session a login opened; None, with the probe's reason, when none was."""
    if login.status_code == 503 and "RAC0218" in str(_json(login)):
        p.reason, p.message = "session_limit", "the iDRAC's session table is full (RAC0218)"
        return None
    token = login.headers.get("X-Auth-Token")
    if login.status_code not in (200, 201) or not token:
        p.reason, p.message = "error", f"session login answered HTTP {login.status_code}"
        return None
    return token


def _sign_out(p: Probe, http: requests.Session, base: str, location: str | None, timeout: Any) -> None:
    """Delete the probe's session at ``location`` (a path, or a URL whose path is used)."""
    path = location.split("://", 1)[-1] if location else None
    if path and "/" in path and not path.startswith("/"):
        path = "/" + path.split("/", 1)[1]
    if path:
        try:
            if http.delete(f"{base}{path}", timeout=timeout).status_code < 400:
                p.sessions_closed += 1
        except requests.RequestException:
            pass  # the iDRAC expires it on its idle timer


def _identify(http: requests.Session, base: str, root: dict[str, Any], timeout: Any, p: Probe) -> None:
    def get(path: str) -> dict[str, Any]:
        r = http.get(f"{base}{path}", timeout=timeout)
        r.raise_for_status()
        return r.json()

    systems = get((root.get("Systems") or {}).get("@odata.id") or "/redfish/v1/Systems")
    system = get(systems["Members"][0]["@odata.id"])
    managers = get((root.get("Managers") or {}).get("@odata.id") or "/redfish/v1/Managers")
    manager = get(managers["Members"][0]["@odata.id"])
    # Dell puts the service tag in SKU; Oem.Dell.DellSystem.ChassisServiceTag on older firmware
    dell = ((system.get("Oem") or {}).get("Dell") or {}).get("DellSystem") or {}
    p.service_tag = str(system.get("SKU") or dell.get("ChassisServiceTag") or "").upper() or None
    p.model = str(system.get("Model") or "") or None
    p.firmware_version = str(manager.get("FirmwareVersion") or "") or None
    p.idrac_generation = generation(str(manager.get("Model") or ""))
