"""esxcli over SSH, for the ESXi upgrade (asyncssh).

`EsxiShell` runs the few esxcli commands an upgrade needs on one ESXi host and parses
their text output into plain data. The host key is never trusted silently: give a
known_hosts file, or set `insecure_host_key=True` explicitly (logged on every connect).
Each call opens its own connection: an upgrade runs a handful of commands minutes apart,
across a reboot, so a long-lived connection would only go stale.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field

import asyncssh

from .errors import AuthenticationFailed, RequestRejected, TargetUnreachable, TLSConfigurationError

log = logging.getLogger("rackpilot.targets.esxcli")

_ERROR_CODE = re.compile(r"^\[(\w+)\]", re.MULTILINE)
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z ]*?):\s?(.*)$")


class EsxcliError(RequestRejected):
    """esxcli refused or failed; `code` is its bracketed error class (e.g. `MaintenanceMode`,
    `NoMatchError`, `MetadataDownloadError`) or '' when it gave none."""

    def __init__(self, message: str, *, code: str = "", exit_status: int | None = None, **kw):
        self.code = code
        self.exit_status = exit_status
        super().__init__(message, **kw)


@dataclass(frozen=True)
class EsxiVersion:
    product: str
    version: str
    build: str  # the number only ("22380479"), without "Releasebuild-"
    update: str
    patch: str


@dataclass(frozen=True)
class UpdateResult:
    message: str
    reboot_required: bool
    vibs_installed: list[str] = field(default_factory=list)
    vibs_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.vibs_installed or self.vibs_removed)


def parse_fields(text: str) -> dict[str, str]:
    """`   Key: value` lines of esxcli's default output format."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m:
            out.setdefault(m.group(1).strip(), m.group(2).strip())
    return out


def parse_version(text: str) -> EsxiVersion:
    f = parse_fields(text)
    if "Version" not in f or "Build" not in f:
        raise ValueError("not the output of 'esxcli system version get'")
    return EsxiVersion(
        product=f.get("Product", ""),
        version=f["Version"],
        build=f["Build"].removeprefix("Releasebuild-"),
        update=f.get("Update", ""),
        patch=f.get("Patch", ""),
    )


def parse_update(text: str) -> UpdateResult:
    f = parse_fields(text)
    if "Reboot Required" not in f:
        raise ValueError("not the output of 'esxcli software profile update'")
    return UpdateResult(
        message=f.get("Message", ""),
        reboot_required=f["Reboot Required"].lower() == "true",
        vibs_installed=f.get("VIBs Installed", "").replace(",", " ").split(),
        vibs_removed=f.get("VIBs Removed", "").replace(",", " ").split(),
    )


@dataclass(frozen=True)
class EsxiShell:
    host: str
    username: str
    port: int = 22
    client_keys: tuple[str, ...] = ()  # private key files
    password: str | None = field(default=None, repr=False)
    known_hosts: str | None = None
    insecure_host_key: bool = False
    connect_timeout: float = 30.0
    command_timeout: float = 1800.0  # a profile update downloads and installs an image
    name: str | None = None

    def __post_init__(self) -> None:
        if bool(self.known_hosts) == self.insecure_host_key:
            raise TLSConfigurationError(
                "give a known_hosts file or set insecure_host_key=True (exactly one)",
                target=self.display,
                hint="an SSH host key is never trusted silently",
            )
        if not self.client_keys and not self.password:
            raise AuthenticationFailed("no SSH key or password given", target=self.display, hint="")

    @property
    def display(self) -> str:
        return self.name or f"{self.host}:{self.port}"

    async def run(self, command: str, operation: str) -> str:
        """Run one command; return its standard output, or raise EsxcliError/TargetUnreachable."""
        if self.insecure_host_key:
            log.warning("ssh %s: host key not verified (explicitly configured)", self.display)
        try:
            async with asyncssh.connect(
                self.host,
                self.port,
                username=self.username,
                password=self.password,
                client_keys=list(self.client_keys) or None,
                known_hosts=None if self.insecure_host_key else self.known_hosts,
                connect_timeout=self.connect_timeout,
            ) as conn:
                result = await conn.run(command, check=False, timeout=self.command_timeout)
        except asyncssh.PermissionDenied:
            raise AuthenticationFailed("the host refused the SSH credentials", target=self.display,
                                       operation=operation) from None  # fmt: skip
        except asyncssh.HostKeyNotVerifiable as e:
            raise TLSConfigurationError(f"SSH host key not trusted: {e.reason}", target=self.display,
                                        operation=operation) from None  # fmt: skip
        except asyncssh.TimeoutError:
            raise TargetUnreachable(f"'{command}' did not finish in {self.command_timeout:g}s",
                                    target=self.display, operation=operation) from None  # fmt: skip
        except (OSError, asyncssh.Error) as e:
            raise TargetUnreachable(f"SSH failed: {e}", target=self.display, operation=operation) from None
        stdout = str(result.stdout or "")
        stderr = str(result.stderr or "")
        if result.exit_status == 255:
            # The ssh convention for "the connection broke": a host going down, for one.
            raise TargetUnreachable(f"connection closed: {stderr.strip()}", target=self.display,
                                    operation=operation)  # fmt: skip
        if result.exit_status != 0:
            text = (stderr or stdout).strip()
            m = _ERROR_CODE.search(text)
            raise EsxcliError(
                text.splitlines()[1].strip() if m and len(text.splitlines()) > 1 else text,
                code=m.group(1) if m else "",
                exit_status=result.exit_status,
                target=self.display,
                operation=operation,
            )
        return stdout

    async def version(self) -> EsxiVersion:
        return parse_version(await self.run("esxcli system version get", "esxi version"))

    async def profile_name(self) -> str:
        out = await self.run("esxcli software profile get", "esxi image profile")
        return parse_fields(out).get("Name", out.splitlines()[0].strip() if out else "")

    async def in_maintenance(self) -> bool:
        out = (await self.run("esxcli system maintenanceMode get", "esxi maintenance mode")).strip()
        if out not in ("Enabled", "Disabled"):
            raise EsxcliError(f"unexpected maintenance mode output {out!r}", target=self.display)
        return out == "Enabled"

    async def profile_update(self, depot: str, profile: str) -> UpdateResult:
        """Install an image profile from a depot (URL or zip path on the host)."""
        if not depot or not profile:
            raise ValueError("depot and profile are required")
        cmd = f"esxcli software profile update -d {shlex.quote(depot)} -p {shlex.quote(profile)}"
        return parse_update(await self.run(cmd, "esxi profile update"))

    async def reboot(self, reason: str) -> None:
        """Reboot through esxcli, which insists on maintenance mode (a safety net)."""
        await self.run(f"esxcli system shutdown reboot -r {shlex.quote(reason)}", "esxi reboot")


__all__ = ["EsxiShell", "EsxiVersion", "UpdateResult", "EsxcliError", "parse_version", "parse_update",
           "parse_fields"]  # fmt: skip
