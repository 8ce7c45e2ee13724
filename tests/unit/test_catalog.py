"""Dell catalog parsing and per-component compliance against a multi-model fixture."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from devstack.lab.idrac.bmc import MODELS, default_components
from executor.targets.catalog import Catalog, version_key
from executor.targets.errors import CatalogError, TargetError

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "catalog" / "Catalog.xml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_path(FIXTURE)


def rows(report):
    return {c.component_id: c for c in report.components}


def test_parses_manifest_and_packages(catalog: Catalog) -> None:
    assert catalog.base_location == "downloads.example.invalid"
    assert catalog.version == "26.10.01"
    assert len(catalog.packages) == 9
    idrac = next(p for p in catalog.packages if p.package_id == "IDRAC_61030")
    assert idrac.version == "6.10.30.00"  # vendorVersion, what the iDRAC reports, not dellVersion "A00"
    assert idrac.component_ids == {"25227"}
    assert idrac.system_ids == {"0716", "0715", "0A6B"}
    assert idrac.models == {"R640", "R740", "R650"}
    assert idrac.reboot_required is False
    assert idrac.criticality == "Recommended"
    assert (
        idrac.url(catalog.base_location)
        == "https://downloads.example.invalid/FOLDER4/iDRAC_6.10.30.00_A00.EXE"
    )
    assert (
        idrac.url(catalog.base_location, "http://127.0.0.1:9/repo/")
        == "http://127.0.0.1:9/repo/FOLDER4/iDRAC_6.10.30.00_A00.EXE"
    )


def test_gzip_catalog_is_detected_by_content(tmp_path: Path, catalog: Catalog) -> None:
    gz = tmp_path / "Catalog.xml.gz"
    gz.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    same = Catalog.from_path(gz)
    assert same.packages == catalog.packages
    # a gzip served under the plain name still parses
    misnamed = tmp_path / "Catalog.xml"
    misnamed.write_bytes(gz.read_bytes())
    assert Catalog.from_path(misnamed).packages == catalog.packages


@pytest.mark.parametrize(
    "lower,higher",
    [
        ("2.15.1", "2.17.1"),
        ("2.9.9", "2.10.0"),
        ("51.13.0-3485", "51.16.0-4076"),
        ("5.00.10.20", "6.10.30.00"),
        ("A06", "A07"),
        ("1.6.5", "1.10.2"),
    ],
)
def test_version_order(lower: str, higher: str) -> None:
    assert version_key(lower) < version_key(higher)
    assert version_key("6.10.30.00") == version_key("6.10.30.00")


def test_r640_old_firmware_needs_updates_with_newest_package(catalog: Catalog) -> None:
    comps = default_components("PowerEdge R640", 0)  # the lab's older firmware set
    rep = catalog.compliance(
        model="PowerEdge R640",
        system_id=MODELS["PowerEdge R640"],
        components=[(c.component_id, c.name, c.version) for c in comps],
    )
    r = rows(rep)
    assert r["159"].status == "update" and r["159"].target == "2.17.1"  # newest of two BIOS packages
    assert r["159"].criticality == "Urgent" and r["159"].reboot_required is True
    assert r["25227"].status == "update" and r["25227"].target == "6.10.30.00"
    assert r["25227"].reboot_required is False
    assert r["104298"].status == "update" and r["104298"].criticality == "Optional"
    assert r["105848"].status == "update" and r["105848"].target == "22.31.6"
    assert "27763" not in r  # CPLD package exists, but the component is not installed
    assert not rep.compliant and rep.reboot_required
    assert [c.component_id for c in rep.updates] == ["159", "25227", "104298", "105848"]


def test_r640_current_firmware_is_compliant(catalog: Catalog) -> None:
    comps = default_components("PowerEdge R640", 1)
    rep = catalog.compliance(
        model="PowerEdge R640",
        system_id="0716",
        components=[(c.component_id, c.name, c.version) for c in comps],
    )
    assert rep.compliant
    assert {c.status for c in rep.components} == {"current"}
    assert rep.as_rows()[0] == {
        "component_id": "159",
        "name": "BIOS",
        "current": "2.17.1",
        "target": "2.17.1",
        "status": "current",
        "criticality": "Urgent",
        "reboot_required": True,
    }


def test_r650_gets_its_own_bios_and_no_perc_package(catalog: Catalog) -> None:
    comps = default_components("PowerEdge R650", 0)
    r = rows(
        catalog.compliance(
            model="PowerEdge R650",
            system_id="0a6b",
            components=[(c.component_id, c.name, c.version) for c in comps],
        )
    )
    assert r["159"].target == "1.10.2"  # the 15G BIOS, never the 14G 2.17.1
    assert r["104298"].status == "not_in_catalog" and r["104298"].target is None
    assert r["25227"].status == "update"


def test_r750_only_matches_packages_listing_it(catalog: Catalog) -> None:
    r = rows(
        catalog.compliance(
            model="PowerEdge R750",
            system_id="0A6C",
            components=[
                ("159", "BIOS", "1.10.2"),
                ("25227", "iDRAC", "6.00.00.00"),
                ("105848", "NIC", "23.0.0"),
            ],
        )
    )
    assert r["159"].status == "current"
    assert r["25227"].status == "not_in_catalog"
    assert r["105848"].status == "newer_than_catalog" and r["105848"].target == "22.31.6"


def test_model_name_fallback_without_system_id(catalog: Catalog) -> None:
    pk = catalog.best_for("159", None, "PowerEdge R740")
    assert pk is not None and pk.version == "2.17.1"
    assert catalog.best_for("159", None, "PowerEdge R999") is None
    assert len(catalog.packages_for("0716")) == 6


def test_catalog_age(catalog: Catalog) -> None:
    import datetime as dt

    assert catalog.age_days(dt.datetime(2026, 10, 11, 8, tzinfo=dt.UTC)) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
        (b"<Manifest><SoftwareComponent></Manifest>", "not a valid catalog XML"),
        (b"<?xml version='1.0'?><html/>", "expected <Manifest>"),
    ],
)
def test_bad_catalogs_raise_specific_errors(data: bytes, needle: str) -> None:
    with pytest.raises(CatalogError) as ei:
        Catalog.from_bytes(data, source="upload")
    assert needle in str(ei.value) and "upload" in str(ei.value)
    assert isinstance(ei.value, TargetError)


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog"):
        Catalog.from_path(tmp_path / "nope.xml")
