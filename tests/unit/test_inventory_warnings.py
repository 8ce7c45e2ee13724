"""What an inventory finds odd becomes warnings stored on the server and shown with it:
the rules (`inventory_oddities`) and the console's notes column."""

from __future__ import annotations

from console.models.reports import FleetModel
from executor.handlers._dell import inventory_row
from executor.targets.redfish import FirmwareComponent, InventoryResult, SystemInfo, inventory_oddities


def info(**kw) -> SystemInfo:
    base = dict(
        model="PowerEdge R650",
        service_tag="ABC1234",
        serial="CN0001",
        manufacturer="Dell Inc.",
        power_state="On",
        bios_version="1.10.2",
        system_id="0A6B",
        generation_label="15G Monolithic",
    )
    return SystemInfo(**{**base, **kw})


FW = [
    FirmwareComponent("Installed-159-1.10.2", "BIOS", "159", "1.10.2", True),
    FirmwareComponent(
        "Installed-25227-7.10.30.00", "Integrated Dell Remote Access Controller", "25227", "7.10.30.00", True
    ),
]


def test_a_clean_idrac_has_nothing_to_say() -> None:
    assert inventory_oddities(info(), FW, 9, "15G Monolithic") == []
    ten = [FW[0], FirmwareComponent("Installed-25227-1.30.10.50", "iDRAC", "25227", "1.30.10.50", True)]
    assert inventory_oddities(info(generation_label="17G Monolithic"), ten, 10, "17G Monolithic") == []


def test_unsupported_generation_and_unknown_firmware_line() -> None:
    old = info(model="PowerEdge R630", generation_label="13G Monolithic", system_id="0600")
    w = inventory_oddities(old, FW, 9, "13G Monolithic")
    assert any(x.startswith("unsupported generation: 13G Monolithic (iDRAC8 or older)") for x in w), w
    odd = [FW[0], FirmwareComponent("Installed-25227-2.86", "iDRAC", "25227", "2.86.86.86", True)]
    w = inventory_oddities(info(), odd, 9, "15G Monolithic")
    assert w == [
        "iDRAC firmware 2.86.86.86 is outside the versions known for iDRAC9; generation-specific behaviour may be wrong"
    ]


def test_not_an_idrac_is_said_so() -> None:
    w = inventory_oddities(info(manufacturer="Contoso", system_id=None, generation_label=None), FW[:1], None)
    assert w[0].startswith("not a Dell iDRAC") and len(w) == 1  # no Dell-only complaints on top


def test_missing_and_unknown_components() -> None:
    fw = [
        FirmwareComponent("Installed-0-1.0", "Mystery device", "", "1.0", True),
        FirmwareComponent("Installed-105848-", "NIC", "105848", "", True),
    ]
    w = inventory_oddities(info(bios_version="", service_tag="", system_id=None), fw, 9, "15G Monolithic")
    assert w == [
        "missing component: the firmware inventory lists no iDRAC firmware",
        "missing component: no BIOS version reported",
        "no service tag reported: the server cannot be matched to OME or a catalog report",
        "no Dell SystemID: catalog compliance falls back to the model name",
        "unknown component: firmware 'Installed-0-1.0' carries no component id; no catalog matches it",
        "firmware NIC reports no version",
    ]


def test_generation_not_read_checks_only_what_needs_no_generation() -> None:
    # the asyncio fleet reader reads no service root: generation-specific checks are skipped
    assert inventory_oddities(info(system_id=None), FW) == []


def test_warnings_go_into_the_server_details_and_an_empty_list_clears_old_ones() -> None:
    inv = InventoryResult("t", True, info(), FW, warnings=["firmware inventory member /x: HTTP 404"])
    row = inventory_row("sid", inv)
    assert row["details"]["inventory_warnings"] == ["firmware inventory member /x: HTTP 404"]
    clean = inventory_row("sid", InventoryResult("t", True, info(), FW))
    assert clean["details"]["inventory_warnings"] == []  # merged into details: clears the old list


def test_console_notes_show_the_error_or_the_warnings() -> None:
    assert FleetModel.inventory_notes({"details": {}}) == ""
    assert FleetModel.inventory_notes({}) == ""
    assert (
        FleetModel.inventory_notes({"details": {"inventory_warnings": ["a", "b"], "inventory_error": None}})
        == "a; b"
    )
    assert FleetModel.inventory_notes(
        {"details": {"inventory_warnings": ["a"], "inventory_error": "TargetUnreachable: down"}}
    ) == ("inventory failed: TargetUnreachable: down")
