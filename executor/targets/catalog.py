"""Dell firmware catalogs (`Catalog.xml`, or the same gzip-compressed as `Catalog.xml.gz`):
parsing, matching packages to a server's model and installed components, and per-component
compliance (current version, target version, criticality, reboot needed), which doubles as
the dry run of a firmware update.

Matching follows how Dell's own tools read the catalog: a `SoftwareComponent` applies to a
server when one of its `SupportedSystems/Brand/Model/@systemID` equals the server's Dell
SystemID (Redfish `Oem.Dell.DellSystem.SystemID`, as 4 hex digits) — or, when the SystemID
is unknown, when the model name matches — and to a component when one of its
`SupportedDevices/Device/@componentID` equals the installed component's id (Redfish
`SoftwareId`). Among several applicable packages the highest version wins.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from .errors import CatalogError

# Catalog criticality codes (`Criticality/@value`).
CRITICALITY = {"0": "Optional", "1": "Recommended", "2": "Urgent", "3": "Urgent"}
_SEG = re.compile(r"[A-Za-z]+|\d+")


def version_key(version: str) -> tuple[tuple[int, Any], ...]:
    """Order Dell versions ("2.19.1", "51.16.0-4076", "A07", "6.10.30.00"): numeric segments
    compare as numbers, letters as text, and numbers sort after letters (A07 < 1.0)."""
    return tuple((1, int(s)) if s.isdigit() else (0, s.upper()) for s in _SEG.findall(version or ""))


def _display(el: ET.Element | None) -> str:
    if el is None:
        return ""
    d = el.find("Display")
    return (d.text or "").strip() if d is not None else (el.text or "").strip()


def _model_name(model: str) -> str:
    return re.sub(r"^(Dell\s+)?PowerEdge\s+", "", model.strip(), flags=re.I).upper()


@dataclass(frozen=True)
class CatalogPackage:
    package_id: str
    name: str
    version: str  # vendorVersion: what the device reports after the update
    path: str
    component_type: str  # BIOS | FRMW | DRVR | APAC ...
    category: str
    criticality: str  # Optional | Recommended | Urgent
    reboot_required: bool
    component_ids: frozenset[str]
    system_ids: frozenset[str]  # upper-case hex, e.g. "0716"
    models: frozenset[str]  # upper-case model names, e.g. "R640"
    release_date: str = ""
    hash_md5: str = ""
    size: int = 0

    def applies_to(self, system_id: str | None, model: str | None) -> bool:
        if system_id:
            return system_id.upper() in self.system_ids
        return bool(model) and _model_name(model or "") in self.models

    def url(self, base_location: str, base_url: str | None = None) -> str:
        """Download URL: under `base_url` (a local repository mirror) if given, else under
        the catalog's baseLocation (https:// added when it has no scheme)."""
        base = base_url or base_location
        if base and "://" not in base:
            base = f"https://{base}"
        return f"{base.rstrip('/')}/{self.path.lstrip('/')}"


@dataclass
class UpdatePackage:
    """One package to apply to one server (what `DellOEM.update_firmware` takes)."""

    image_uri: str
    component_id: str
    target_version: str
    name: str = ""
    reboot_required: bool = True


@dataclass
class ComponentCompliance:
    component_id: str
    name: str
    current: str
    target: str | None
    status: str  # current | update | newer_than_catalog | not_in_catalog
    criticality: str | None = None
    reboot_required: bool | None = None
    package: CatalogPackage | None = None


@dataclass
class ComplianceReport:
    model: str
    system_id: str | None
    components: list[ComponentCompliance] = field(default_factory=list)

    @property
    def updates(self) -> list[ComponentCompliance]:
        return [c for c in self.components if c.status == "update"]

    @property
    def compliant(self) -> bool:
        return not self.updates

    @property
    def reboot_required(self) -> bool:
        return any(c.reboot_required for c in self.updates)

    def update_packages(self, base_location: str, base_url: str | None = None) -> list[UpdatePackage]:
        """The packages that bring this server to compliance (empty when compliant)."""
        return [
            UpdatePackage(
                c.package.url(base_location, base_url),
                c.component_id,
                c.package.version,
                c.name,
                c.package.reboot_required,
            )
            for c in self.updates
            if c.package
        ]

    def as_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "component_id": c.component_id,
                "name": c.name,
                "current": c.current,
                "target": c.target,
                "status": c.status,
                "criticality": c.criticality,
                "reboot_required": c.reboot_required,
            }
            for c in self.components
        ]


@dataclass
class Catalog:
    base_location: str
    version: str
    date_time: str
    packages: list[CatalogPackage]

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path) -> Catalog:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CatalogError(f"cannot read catalog {p}: {exc.strerror}", operation="load catalog") from None
        return cls.from_bytes(data, source=str(p))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "catalog") -> Catalog:
        """Parse `Catalog.xml` or `Catalog.xml.gz` (detected by content, not by name: Dell
        has moved and renamed its catalogs more than once). Catalogs are UTF-16 or UTF-8;
        the XML declaration says which."""
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                raise CatalogError(f"{source}: corrupt gzip data ({exc})", operation="load catalog") from None
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise CatalogError(
                f"{source}: not a valid catalog XML document ({exc})", operation="load catalog"
            ) from None
        if root.tag != "Manifest":
            raise CatalogError(
                f"{source}: root element is <{root.tag}>, expected <Manifest>", operation="load catalog"
            )
        pkgs = [cls._package(sc) for sc in root.iter("SoftwareComponent")]
        return cls(root.get("baseLocation", ""), root.get("version", ""), root.get("dateTime", ""), pkgs)

    @staticmethod
    def _package(sc: ET.Element) -> CatalogPackage:
        systems: set[str] = set()
        models: set[str] = set()
        for m in sc.iterfind("SupportedSystems/Brand/Model"):
            if m.get("systemID"):
                systems.add(m.get("systemID", "").upper())
            name = _display(m)
            if name:
                models.add(_model_name(name))
        crit = sc.find("Criticality")
        crit_value = crit.get("value", "") if crit is not None else ""
        ctype = sc.find("ComponentType")
        cat = sc.find("Category")
        return CatalogPackage(
            package_id=sc.get("packageID", ""),
            name=_display(sc.find("Name")),
            version=sc.get("vendorVersion") or sc.get("dellVersion") or "",
            path=sc.get("path", ""),
            component_type=ctype.get("value", "") if ctype is not None else "",
            category=_display(cat),
            criticality=CRITICALITY.get(crit_value, _display(crit) or "Optional"),
            reboot_required=sc.get("rebootRequired", "true").lower() == "true",
            component_ids=frozenset(
                d.get("componentID", "")
                for d in sc.iterfind("SupportedDevices/Device")
                if d.get("componentID")
            ),
            system_ids=frozenset(systems),
            models=frozenset(models),
            release_date=sc.get("releaseDate", ""),
            hash_md5=sc.get("hashMD5", ""),
            size=int(sc.get("size", "0") or 0),
        )

    # ---- queries ----------------------------------------------------------------------------
    def age_days(self, now: dt.datetime | None = None) -> float | None:
        """Days since the catalog was published (None if undated): stale catalogs mislead."""
        try:
            stamp = dt.datetime.fromisoformat(self.date_time.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return ((now or dt.datetime.now(dt.UTC)) - stamp).total_seconds() / 86400

    def packages_for(self, system_id: str | None = None, model: str | None = None) -> list[CatalogPackage]:
        return [p for p in self.packages if p.applies_to(system_id, model)]

    def best_for(
        self, component_id: str, system_id: str | None = None, model: str | None = None
    ) -> CatalogPackage | None:
        cands = [p for p in self.packages_for(system_id, model) if component_id in p.component_ids]
        return max(cands, key=lambda p: version_key(p.version), default=None)

    def compliance(self, *, model: str, system_id: str | None, components: Iterable[Any]) -> ComplianceReport:
        """Per installed component: current vs the catalog's newest applicable version.
        `components` are objects with component_id, name, version (e.g. FirmwareComponent)
        or (component_id, name, version) tuples."""
        report = ComplianceReport(model, system_id)
        seen: set[str] = set()
        for comp in components:
            cid, name, version = (
                comp if isinstance(comp, tuple) else (comp.component_id, comp.name, comp.version)
            )
            if not cid or cid in seen:
                continue
            seen.add(cid)
            pkg = self.best_for(cid, system_id, model)
            if pkg is None:
                report.components.append(ComponentCompliance(cid, name, version, None, "not_in_catalog"))
                continue
            cur, tgt = version_key(version), version_key(pkg.version)
            status = "current" if cur == tgt else ("update" if cur < tgt else "newer_than_catalog")
            report.components.append(
                ComponentCompliance(
                    cid, name, version, pkg.version, status, pkg.criticality, pkg.reboot_required, pkg
                )
            )
        return report
