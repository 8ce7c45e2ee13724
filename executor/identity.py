"""The executor's identity agent: directory sign-in where the directory is reachable, and
the directory sync. ``python -m executor.identity`` runs it beside the executor (same host,
same env file, same key); docs/identity.md tells the design.

Sign-in (executor path)
-----------------------
The console seals ``{username, password, challenge}`` to this executor's X25519 key (the
envelope of :mod:`executor.secrets`); ``idm-login`` stores it with its own ephemeral public
key (``verifier_pk``) in ``idm_login_requests``. This agent, woken through Realtime (and
polling ``idm_pending_logins`` as the fallback), opens the envelope **in memory only**,
refuses it unless its challenge is the request's (a replayed envelope names an old one),
binds to the directory over LDAPS or StartTLS with its own settings (never the control
plane's: nobody who can write a table can redirect a password), reads the user's entry and
groups, and answers ``idm_answer_login`` with the result as a JSON text and

    mac = HMAC-SHA256(HKDF-SHA256(X25519(executor_private, verifier_pk),
                                  salt = verifier_pk || executor_public, info = INFO),
                      INFO + "|" + request_id + "|" + answer)

which ``idm-login`` checks against the registered executor key. The password is never
logged (it is not even put in the redaction registry: that would keep every user's
password in memory for the life of the process) and never leaves this process.

Sync
----
Not this agent's: the ``directory_sync`` job (:mod:`executor.handlers.directory_sync`),
which the executor runs when the site's schedule "directory sync" fires, does it with the
same settings through :func:`sync_directory`: it binds with the site's ``ldap`` credential
set (sealed to the executor's key; ``RACKPILOT_IDM_BIND_CREDENTIAL`` names it), reads the
members of every mapped group (``directory_group_roles``, nested groups followed, accounts
matching ``disabled_filter`` and entries that no longer exist left out) and sends the
complete member -> [mapped group] map to ``idm_apply_sync``, which works out each role from
the site's mapping, updates directory roles and revokes the sessions of users who lost one.
Any read error fails the run: a partial map would take roles away wrongly.
``--sync-once`` runs one sync from this command line (checking a new bind account).

Settings (environment, ``RACKPILOT_IDM_`` + the upper-case name; the executor's own
``RACKPILOT_*`` settings give the control plane, site and key):

=====================  =======  ===========================================  ==========================================
option                 unit     default                                      meaning
=====================  =======  ===========================================  ==========================================
uris                   URLs     (required)                                   ``ldaps://host:port`` or ``ldap://host:port`` (with starttls), comma-separated, tried in order (failover)
starttls               bool     false                                        upgrade ``ldap://`` connections with StartTLS (plain binds are refused)
ca_file                path     (system trust)                               CA bundle the directory's certificate must chain to
preset                 choice   (none)                                       ``openldap``, ``freeipa`` or ``ad``: defaults for the five settings below and ``disabled_filter`` (executor/data/directory_presets.yaml)
suffix                 DN       (none)                                       the directory's naming context (``dc=example,dc=org``) the preset's ``{suffix}`` and ``{domain}`` stand for
bind_dn_template       text     the preset's, else required                  the user's bind DN, ``{username}`` escaped per RFC 4514 (or ``{username}@domain`` for AD)
base_dn                DN       the preset's, else required                  where the user's entry is searched
user_filter            filter   the preset's, else ``(&(objectClass=inetOrgPerson)(uid={username}))``  the user's entry, ``{username}`` escaped per RFC 4515
group_base_dn          DN       the preset's, else ``base_dn``               where groups are searched
nesting                choice   the preset's, else ``search``                ``memberof`` (FreeIPA), ``search`` (member= loop), ``ad`` (1.2.840.113556.1.4.1941)
disabled_filter        filter   the preset's, else (none)                    matches a disabled account: refused at sign-in (``account_disabled``) and left out by the sync
mail_attribute         name     the preset's, else ``mail``                  the user's e-mail address (AD without mail: ``userPrincipalName``)
display_name_attribute name     the preset's, else ``displayName``           the user's name (``cn`` when it is empty)
member_of_attribute    name     the preset's, else ``memberOf``              the user's groups (``nesting = memberof``)
member_attribute       name     the preset's, else ``member``                a group's members (``uniqueMember`` is read too)
connect_timeout        s        3.0                                          TCP+TLS connect timeout per server
op_timeout             s        5.0                                          timeout of one LDAP operation
poll_interval          s        2.0                                          pending-request poll when Realtime is quiet or down
bind_credential        name     (none: no sync)                              the site's ``ldap`` credential set the ``directory_sync`` job binds with
=====================  =======  ===========================================  ==========================================
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

import ldap3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from realtime.types import RealtimePostgresChangesListenEvent

from . import ExecutorError
from .config import ExecutorSettings, load_settings
from .control import ControlPlane
from .directory_presets import preset_values
from .log import SECRETS, setup_logging
from .secrets import AAD_PREFIX, ALG, KeyPair, _derive, load_or_create, unb64u

log = logging.getLogger("rackpilot.executor.identity")

ANSWER_INFO = "rackpilot-idm-answer-v1"
PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
MAX_GROUPS = 1000  # groups read per user or members per group before reading stops
MAX_NESTING = 16  # nested group levels followed
MAX_ENVELOPE_BYTES = 16 * 1024
MAX_CONCURRENT_BINDS = (
    8  # sign-ins bound at once; a flood of requests queues instead of hammering the directory
)


class IdentityError(ExecutorError):
    """Root of identity agent failures."""


class DirectoryFailure(IdentityError):
    """A sign-in or sync the directory refused; ``code`` is what idm-login reports."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


ATTRIBUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}|[0-9]+(\.[0-9]+)+")


def _attr(entry: dict[str, Any], name: str) -> Any:
    """An attribute of a search entry by name, in any case (servers answer in their own)."""
    low = name.lower()
    return next((v for k, v in entry.items() if k.lower() == low), None)


def _valid_filter(flt: str) -> bool:
    depth = 0
    for i, c in enumerate(flt):
        if c == "(" and (i == 0 or flt[i - 1] != "\\"):
            depth += 1
        elif c == ")" and flt[i - 1] != "\\":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and flt.startswith("(") and flt.endswith(")") and len(flt) <= 1024


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RACKPILOT_IDM_", extra="ignore", env_file=None)

    # NoDecode: the environment gives a comma-separated list (the validator below splits it)
    uris: Annotated[list[str], NoDecode] = Field(min_length=1, max_length=8)
    starttls: bool = False
    ca_file: Path | None = None
    preset: Literal["openldap", "freeipa", "ad"] | None = None
    suffix: str | None = None
    bind_dn_template: str = ""
    base_dn: str = ""
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    group_base_dn: str | None = None
    nesting: Literal["memberof", "search", "ad"] = "search"
    disabled_filter: str | None = None
    mail_attribute: str = "mail"
    display_name_attribute: str = "displayName"
    member_of_attribute: str = "memberOf"
    member_attribute: str = "member"
    connect_timeout: float = Field(default=3.0, gt=0, le=60)
    op_timeout: float = Field(default=5.0, gt=0, le=60)
    poll_interval: float = Field(default=2.0, gt=0, le=60)
    bind_credential: str | None = None

    @field_validator("uris", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.startswith("["):
            return [u.strip() for u in v.split(",") if u.strip()]
        return v

    @field_validator("uris")
    @classmethod
    def _tls_only(cls, v: list[str]) -> list[str]:
        for uri in v:
            parts = urlsplit(uri)
            if parts.scheme not in ("ldaps", "ldap") or not parts.hostname:
                raise ValueError(f"{uri!r}: use ldaps://host[:port] or ldap://host[:port] with starttls")
        return v

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """A preset fills what is not set explicitly."""
        if isinstance(data, dict) and data.get("preset"):
            for k, v in preset_values(str(data["preset"]), data.get("suffix")).items():
                if data.get(k) in (None, ""):
                    data[k] = v
        return data

    @field_validator("bind_dn_template", "user_filter")
    @classmethod
    def _has_username(cls, v: str) -> str:
        if v and "{username}" not in v:
            raise ValueError("must contain {username}")
        return v

    @field_validator("mail_attribute", "display_name_attribute", "member_of_attribute", "member_attribute")
    @classmethod
    def _attribute(cls, v: str) -> str:
        if not ATTRIBUTE_RE.fullmatch(v):
            raise ValueError("must be an LDAP attribute name (letters, digits, hyphens) or an OID")
        return v

    @field_validator("user_filter", "disabled_filter")
    @classmethod
    def _filter(cls, v: str | None) -> str | None:
        if v is not None and not _valid_filter(v):
            raise ValueError("must be one parenthesised LDAP filter of at most 1024 characters")
        return v

    @model_validator(mode="after")
    def _required(self) -> IdentitySettings:
        missing = [k for k in ("bind_dn_template", "base_dn") if not getattr(self, k)]
        if missing:
            raise ValueError(
                f"{' and '.join('RACKPILOT_IDM_' + k.upper() for k in missing)} required "
                "(or RACKPILOT_IDM_PRESET with RACKPILOT_IDM_SUFFIX)"
            )
        return self


# --- crypto ------------------------------------------------------------------------------
def _rows(data: Any) -> list[dict[str, Any]]:
    """The rows of a PostgREST select: a JSON array of objects."""
    return cast(list[dict[str, Any]], data or [])


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def open_envelope(keys: KeyPair, envelope: dict[str, Any] | str) -> dict[str, Any]:
    """Decrypt an envelope sealed to ``keys`` without registering its values anywhere."""
    if isinstance(envelope, str):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise IdentityError("envelope is too large")
        envelope = json.loads(envelope)
    if not isinstance(envelope, dict) or envelope.get("v") != 1 or envelope.get("alg") != ALG:
        raise IdentityError("not a version 1 envelope")
    if envelope.get("kid") != keys.kid:
        raise IdentityError("envelope is sealed to another key")
    epk, nonce, ct = unb64u(envelope.get("epk")), unb64u(envelope.get("nonce")), unb64u(envelope.get("ct"))
    if len(epk) != 32 or len(nonce) != 12 or len(ct) < 16:
        raise IdentityError("envelope fields have the wrong length")
    key = _derive(keys.private.exchange(X25519PublicKey.from_public_bytes(epk)), epk, keys.public_raw)
    try:
        plain = AESGCM(key).decrypt(nonce, ct, (AAD_PREFIX + keys.kid).encode())
    except InvalidTag as exc:
        raise IdentityError("envelope failed authentication") from exc
    data = json.loads(plain)
    if not isinstance(data, dict):
        raise IdentityError("envelope plaintext is not an object")
    return data


def answer_mac(keys: KeyPair, verifier_pk: str, request_id: str, answer: str) -> str:
    peer = unb64u(verifier_pk)
    if len(peer) != 32:
        raise IdentityError("verifier key has the wrong length")
    shared = keys.private.exchange(X25519PublicKey.from_public_bytes(peer))
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=peer + keys.public_raw, info=ANSWER_INFO.encode()
    ).derive(shared)
    return b64u(hmac.new(key, f"{ANSWER_INFO}|{request_id}|{answer}".encode(), hashlib.sha256).digest())


# --- the directory -----------------------------------------------------------------------
def _ppolicy_error(result: dict[str, Any]) -> int | None:
    """The ppolicy response's error code (draft-behera: [1] ENUMERATED), if any."""
    ctrl = (result.get("controls") or {}).get(PPOLICY_OID) or {}
    value = ctrl.get("value") or b""
    # SEQUENCE { warning [0] OPTIONAL, error [1] ENUMERATED OPTIONAL }: find tag 0x81
    i = 2
    while i + 1 < len(value):
        tag, length = value[i], value[i + 1]
        if tag == 0x81 and length == 1 and i + 2 < len(value):
            return value[i + 2]
        i += 2 + length
    return None


@dataclass
class DirectoryUser:
    subject: str
    username: str
    email: str | None
    display_name: str | None
    groups: list[str]


class Directory:
    """Blocking LDAP operations (ldap3); the agent runs them in worker threads."""

    def __init__(self, s: IdentitySettings):
        self.s = s
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=str(s.ca_file) if s.ca_file else None,
        )
        self.servers: list[tuple[str, ldap3.Server]] = []
        for uri in s.uris:
            parts = urlsplit(uri)
            secure = parts.scheme == "ldaps"
            self.servers.append(
                (
                    uri,
                    ldap3.Server(
                        parts.hostname or "",  # never empty: IdentitySettings checked every URI
                        port=parts.port or (636 if secure else 389),
                        use_ssl=secure,
                        tls=tls,
                        connect_timeout=s.connect_timeout,
                        get_info=ldap3.NONE,
                    ),
                )
            )

    def _bind(self, user: str, password: str) -> ldap3.Connection:
        """A bound connection to the first reachable server; DirectoryFailure otherwise."""
        if not password:
            # an empty password is an unauthenticated bind (RFC 4513 5.1.2): never
            raise DirectoryFailure("invalid_credentials", "invalid username or password")
        last = "none tried"
        for uri, server in self.servers:
            # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds (a float raises struct.error)
            conn = ldap3.Connection(
                server,
                user=user,
                password=password,
                receive_timeout=max(1, round(self.s.op_timeout)),
                read_only=True,
                raise_exceptions=False,
                auto_referrals=False,
            )
            try:
                conn.open()
                if not server.ssl:
                    if not self.s.starttls:
                        raise DirectoryFailure(
                            "directory_error", "refusing a plain LDAP bind: use ldaps:// or starttls"
                        )
                    if not conn.start_tls():
                        raise ldap_exc.LDAPStartTLSError("StartTLS refused")
                ok = conn.bind(controls=[(PPOLICY_OID, False, None)])
            except DirectoryFailure:
                conn.unbind()
                raise
            except (
                ldap_exc.LDAPSocketOpenError,
                ldap_exc.LDAPSocketReceiveError,
                ldap_exc.LDAPSocketSendError,
                ldap_exc.LDAPStartTLSError,
                ldap_exc.LDAPSessionTerminatedByServerError,
                OSError,
                ssl.SSLError,
            ) as exc:
                last = f"{uri}: {type(exc).__name__}"
                with contextlib.suppress(Exception):
                    conn.unbind()
                continue  # failover
            if ok:
                return conn
            result = dict(conn.result or {})
            with contextlib.suppress(Exception):
                conn.unbind()
            if result.get("result") == 49:
                if _ppolicy_error(result) == 1:
                    raise DirectoryFailure("account_locked", "the directory account is locked")
                raise DirectoryFailure("invalid_credentials", "invalid username or password")
            raise DirectoryFailure("directory_error", f"bind refused ({result.get('description')})")
        raise DirectoryFailure("directory_unreachable", f"no directory server could be reached ({last})")

    def _search(
        self,
        conn: ldap3.Connection,
        base: str,
        flt: str,
        attrs: list[str],
        scope: Any = ldap3.SUBTREE,
        limit: int = MAX_GROUPS,
    ) -> list[dict[str, Any]]:
        ok = conn.search(base, flt, search_scope=scope, attributes=attrs, size_limit=limit)
        if not ok and (conn.result or {}).get("result") not in (0, 4, 32):  # success, sizeLimit, noSuchObject
            raise DirectoryFailure(
                "directory_error", f"search refused ({(conn.result or {}).get('description')})"
            )
        return [
            {"dn": e["dn"], **e.get("attributes", {})}
            for e in (conn.response or [])
            if e.get("type") == "searchResEntry"
        ]

    def _groups_of(self, conn: ldap3.Connection, dn: str, member_of: list[str]) -> list[str]:
        base = self.s.group_base_dn or self.s.base_dn
        seen: dict[str, str] = {}
        if self.s.nesting == "ad":
            for e in self._search(
                conn, base, f"(member:1.2.840.113556.1.4.1941:={escape_filter_chars(dn)})", []
            ):
                seen.setdefault(e["dn"].lower(), e["dn"])
            return list(seen.values())
        for g in member_of:
            seen.setdefault(g.lower(), g)
        if self.s.nesting == "memberof":
            return list(seen.values())
        expanded = {dn.lower()}
        frontier = [dn]
        for _ in range(MAX_NESTING):
            if not frontier or len(seen) >= MAX_GROUPS:
                break
            member = self.s.member_attribute
            terms = "".join(f"({member}={escape_filter_chars(m)})" for m in frontier)
            flt = f"(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))(|{terms}))"
            frontier = []
            for e in self._search(conn, base, flt, []):
                seen.setdefault(e["dn"].lower(), e["dn"])
                if e["dn"].lower() not in expanded:
                    expanded.add(e["dn"].lower())
                    frontier.append(e["dn"])
        return list(seen.values())

    def sign_in(self, username: str, password: str) -> DirectoryUser:
        if (
            not isinstance(username, str)
            or not 1 <= len(username) <= 256
            or any(ord(c) < 0x20 for c in username)
        ):
            raise DirectoryFailure("invalid_credentials", "invalid username or password")
        conn = self._bind(self.s.bind_dn_template.replace("{username}", escape_rdn(username)), password)
        try:
            entries = self._search(
                conn,
                self.s.base_dn,
                self.s.user_filter.replace("{username}", escape_filter_chars(username)),
                [self.s.mail_attribute, "cn", self.s.display_name_attribute, self.s.member_of_attribute],
                limit=2,
            )
            if len(entries) != 1:
                raise DirectoryFailure("user_not_found", "the directory has no single entry for this user")
            e = entries[0]
            if self.s.disabled_filter and self._search(
                conn, e["dn"], self.s.disabled_filter, [], scope=ldap3.BASE, limit=1
            ):
                # FreeIPA and AD refuse such a bind themselves; a directory that does not is
                # refused here (and the sync leaves the account out)
                raise DirectoryFailure("account_disabled", "the directory account is disabled")

            def first(v: Any) -> str | None:
                if isinstance(v, list):
                    return str(v[0]) if v else None
                return str(v) if v else None

            member_of = _attr(e, self.s.member_of_attribute) or []
            groups = self._groups_of(
                conn, e["dn"], [str(g) for g in (member_of if isinstance(member_of, list) else [member_of])]
            )
            return DirectoryUser(
                subject=e["dn"],
                username=username,
                email=first(_attr(e, self.s.mail_attribute)),
                display_name=first(_attr(e, self.s.display_name_attribute)) or first(_attr(e, "cn")),
                groups=groups,
            )
        finally:
            with contextlib.suppress(Exception):
                conn.unbind()

    def members(self, bind_dn: str, password: str, groups: list[str]) -> dict[str, list[str]]:
        """Every enabled user in the mapped ``groups`` (nested followed) -> the mapped groups
        they are in. The roles are the database's to work out (directory_group_roles)."""
        out: dict[str, list[str]] = {}
        conn = self._bind(bind_dn, password)
        try:
            for group in groups:
                for user in self._members_of(conn, group):
                    out.setdefault(user.lower(), []).append(group)
        finally:
            with contextlib.suppress(Exception):
                conn.unbind()
        return out

    def _members_of(self, conn: ldap3.Connection, group: str) -> list[str]:
        enabled = f"(!{self.s.disabled_filter})" if self.s.disabled_filter else ""
        if self.s.nesting == "ad":
            flt = f"(&(objectClass=person)(memberOf:1.2.840.113556.1.4.1941:={escape_filter_chars(group)}){enabled})"
            return [e["dn"] for e in self._search(conn, self.s.base_dn, flt, [])]
        # a member is a group (followed), an enabled account (kept), or neither: a disabled
        # account, or a DN whose entry is gone (left out)
        member_filter = (
            f"(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group){enabled})"
            if enabled
            else "(objectClass=*)"
        )
        users: list[str] = []
        seen: set[str] = set()
        frontier = [group]
        for _ in range(MAX_NESTING):
            if not frontier:
                break
            nxt: list[str] = []
            for g in frontier:
                if g.lower() in seen:
                    continue
                seen.add(g.lower())
                found = self._search(
                    conn,
                    g,
                    "(objectClass=*)",
                    ["objectClass", self.s.member_attribute, "uniqueMember"],
                    scope=ldap3.BASE,
                    limit=1,
                )
                if not found:
                    raise DirectoryFailure("directory_error", f"mapped group {g} cannot be read")
                for m in [
                    *(_attr(found[0], self.s.member_attribute) or []),
                    *(_attr(found[0], "uniqueMember") or []),
                ]:
                    nxt.append(str(m))
            frontier = []
            for m in nxt:
                if m.lower() in seen:
                    continue
                entry = self._search(conn, m, member_filter, ["objectClass"], scope=ldap3.BASE, limit=1)
                classes = {str(c).lower() for c in (entry[0].get("objectClass") or [])} if entry else set()
                if classes & {"groupofnames", "groupofuniquenames", "group"}:
                    frontier.append(m)
                elif entry:
                    seen.add(m.lower())
                    users.append(m)
        return users


# --- the sync ----------------------------------------------------------------------------
async def sync_directory(
    control: ControlPlane,
    keys: KeyPair,
    executor_id: str,
    site_id: str,
    idm: IdentitySettings,
    directory: Directory | None = None,
) -> dict[str, Any]:
    """One directory sync of the site: bind with the site's sealed ``ldap`` credential set
    (``idm.bind_credential``), read the members of every mapped group, apply them with
    ``idm_apply_sync``. Answers the counts: ``groups`` (mapped groups read), ``members``
    (enabled accounts found in them), ``users_seen`` (directory identities of the site),
    ``roles_changed`` (roles set or changed), ``roles_removed`` (roles taken away),
    ``sessions_revoked`` (sessions ended), ``refresh_tokens_revoked`` (the still usable
    refresh tokens those sessions held). No password is in
    the answer, nor in a log line (the bind password is redacted from every one)."""
    if not idm.bind_credential:
        raise IdentityError(
            "RACKPILOT_IDM_BIND_CREDENTIAL names no ldap credential set of the site: nothing to bind with"
        )
    rows = await control.call(
        "idm_bind_credential", {"p_executor_id": executor_id, "p_name": idm.bind_credential}, retry=False
    )
    if not rows:
        raise IdentityError("the bind credential has no envelope for this executor's key")
    secret = open_envelope(keys, rows[0]["sealed_secret"])
    password = secret.get("password")
    if not isinstance(password, str):
        raise IdentityError("the bind credential holds no password")
    SECRETS.add(password)  # a long-lived service secret: redact it from every log line
    endpoints = secret.get("endpoints")
    if isinstance(endpoints, list) and endpoints:
        hosts = {str(e.get("host", "")).lower() for e in endpoints if isinstance(e, dict)}
        hosts |= {urlsplit(str(e.get("url", e))).hostname or "" for e in endpoints}
        for uri in idm.uris:
            if (urlsplit(uri).hostname or "").lower() not in hosts:
                raise IdentityError(
                    f"the bind credential may not be presented to {uri} (not among its endpoints)"
                )
    mapped = await control.call("idm_mapped_groups", {"p_site_id": site_id}, retry=False) or []
    members = await asyncio.to_thread(
        (directory or Directory(idm)).members,
        rows[0]["username"],
        password,
        [m["group_dn"] for m in mapped],
    )
    applied = (
        await control.call(
            "idm_apply_sync", {"p_executor_id": executor_id, "p_members": members}, retry=False
        )
        or {}
    )
    counts = {
        "groups": len(mapped),
        "members": len(members),
        "users_seen": int(applied.get("users", 0)),
        "roles_changed": int(applied.get("changed", 0)),
        "roles_removed": int(applied.get("removed", 0)),
        "sessions_revoked": int(applied.get("sessions_revoked", 0)),
        "refresh_tokens_revoked": int(applied.get("refresh_tokens_revoked", 0)),
    }
    log.info("directory sync applied", extra=counts)
    return counts


# --- the agent ---------------------------------------------------------------------------
class IdentityAgent:
    def __init__(self, settings: ExecutorSettings, idm: IdentitySettings, keys: KeyPair):
        self.settings = settings
        self.idm = idm
        self.keys = keys
        self.directory = Directory(idm)
        self.control = ControlPlane(settings)
        self.executor_id: str | None = None
        self.site_id: str | None = None
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self._busy: set[str] = set()
        self._binds = asyncio.Semaphore(MAX_CONCURRENT_BINDS)
        self.answered = 0

    async def identify(self) -> None:
        """This executor's registration (the executor itself registers; we find it by key)."""
        client = await self.control.start()
        sites = _rows(
            (await client.table("sites").select("id").eq("name", self.settings.site).execute()).data
        )
        if not sites:
            raise IdentityError(f"unknown site {self.settings.site!r}")
        self.site_id = sites[0]["id"]
        rows = _rows(
            (
                await client.table("executors")
                .select("id")
                .eq("site_id", self.site_id)
                .eq("key_id", self.keys.kid)
                .eq("status", "active")
                .execute()
            ).data
        )
        if not rows:
            raise IdentityError(
                f"no active executor of site {self.settings.site} holds key {self.keys.kid}: "
                "start the executor first"
            )
        self.executor_id = rows[0]["id"]

    async def handle(self, req: dict[str, Any]) -> None:
        rid = str(req["id"])
        if rid in self._busy:
            return
        self._busy.add(rid)
        t0 = time.perf_counter()
        try:
            answer: dict[str, Any] = {
                "v": 1,
                "request_id": rid,
                "challenge": req["challenge"],
                "site_id": str(req["site_id"]),
                "ok": False,
                "error": None,
            }
            try:
                secret = open_envelope(self.keys, req["envelope"] or "")
                if not hmac.compare_digest(str(secret.get("challenge", "")), str(req["challenge"])):
                    raise DirectoryFailure(
                        "stale_request", "the envelope was sealed for another sign-in request"
                    )
                username, password = secret.get("username"), secret.get("password")
                if not isinstance(username, str) or not isinstance(password, str):
                    raise DirectoryFailure("bad_request", "the envelope holds no username and password")
                secret.clear()
                async with self._binds:
                    user = await asyncio.to_thread(self.directory.sign_in, username, password)
                del password
                answer.update(
                    ok=True,
                    subject=user.subject,
                    username=user.username,
                    email=user.email,
                    display_name=user.display_name,
                    groups=user.groups,
                )
            except DirectoryFailure as exc:
                answer["error"] = exc.code
            except (IdentityError, ValueError, KeyError) as exc:
                log.warning("sign-in request %s unreadable: %s", rid, type(exc).__name__)
                answer["error"] = "bad_request"
            text = json.dumps(answer, separators=(",", ":"))
            mac = answer_mac(self.keys, req["verifier_pk"], rid, text)
            await self.control.call(
                "idm_answer_login",
                {"p_executor_id": self.executor_id, "p_request_id": rid, "p_answer": text, "p_mac": mac},
                retry=False,
            )
            self.answered += 1
            log.info(
                "directory sign-in answered",
                extra={
                    "request_id": rid,
                    "ok": answer["ok"],
                    "error": answer["error"],
                    "ms": round((time.perf_counter() - t0) * 1000, 1),
                },
            )
        except Exception as exc:  # noqa: BLE001 - one request must not stop the agent
            # typically a second wake for a request already answered (Realtime and the poll both saw it)
            log.info("sign-in request %s not answered here: %s", rid, type(exc).__name__)
        finally:
            self._busy.discard(rid)

    async def poll_once(self) -> int:
        rows = (
            await self.control.call("idm_pending_logins", {"p_executor_id": self.executor_id}, retry=False)
            or []
        )
        for r in rows:
            asyncio.create_task(self.handle(r))
        return len(rows)

    def _on_change(self, payload: Any) -> None:
        data = payload.get("data", payload) if isinstance(payload, dict) else {}
        if (data.get("record") or {}).get("status") == "pending":
            self.wake.set()

    async def realtime_loop(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                client = await self.control.start()
                channel = client.channel(f"rackpilot-identity-{self.executor_id}")
                channel.on_postgres_changes(
                    RealtimePostgresChangesListenEvent.Update,
                    schema="public",
                    table="idm_login_requests",
                    filter=f"executor_id=eq.{self.executor_id}",
                    callback=self._on_change,
                )
                joined = asyncio.Event()

                def on_state(state: Any, err: Exception | None, joined: asyncio.Event = joined) -> None:
                    if getattr(state, "value", str(state)) == "SUBSCRIBED":
                        joined.set()
                        self.wake.set()

                await channel.subscribe(on_state)
                await asyncio.wait_for(joined.wait(), timeout=10)
                delay = 1.0
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=2.0)
                    if not client.realtime.is_connected:
                        raise ConnectionError("realtime socket closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers us
                log.warning("identity realtime unavailable (%s); polling", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)

    async def login_loop(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.idm.poll_interval)
            self.wake.clear()
            try:
                await self.poll_once()
            except Exception as exc:  # noqa: BLE001
                log.warning("pending sign-in poll failed: %s", type(exc).__name__)

    async def sync_once(self) -> dict[str, Any]:
        """One directory sync (as the ``directory_sync`` job runs it)."""
        if self.executor_id is None or self.site_id is None:
            raise IdentityError("identify() first")
        return await sync_directory(
            self.control, self.keys, self.executor_id, self.site_id, self.idm, self.directory
        )

    async def run(self) -> None:
        await self.identify()
        log.info("identity agent ready", extra={"executor_id": self.executor_id, "uris": self.idm.uris})
        tasks = [asyncio.create_task(self.login_loop())]
        if self.settings.realtime_enabled:
            tasks.append(asyncio.create_task(self.realtime_loop()))
        try:
            await self.stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.control.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m executor.identity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env-file", help="env file with RACKPILOT_* and RACKPILOT_IDM_* settings")
    ap.add_argument("--sync-once", action="store_true", help="run one directory sync and exit")
    args = ap.parse_args(argv)
    settings = load_settings(args.env_file)
    idm = IdentitySettings(_env_file=args.env_file) if args.env_file else IdentitySettings()  # type: ignore[call-arg]
    setup_logging(settings.log_level, settings.log_file)
    if not settings.key_path.exists():
        # never a key of its own: it answers with the executor's registered key or not at all
        print(
            f"{settings.key_path} does not exist: start the executor first (it creates the key)",
            file=sys.stderr,
        )
        return 2
    keys, _created = load_or_create(settings.key_path)
    agent = IdentityAgent(settings, idm, keys)

    async def go() -> int:
        if args.sync_once:
            await agent.identify()
            print(json.dumps(await agent.sync_once()))
            await agent.control.close()
            return 0
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop.set)
        await agent.run()
        return 0

    return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
