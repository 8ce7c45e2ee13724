"""The client against both iDRAC personalities of the lab: generation detection, session-only
authentication on iDRAC10, SCP through the renamed actions and TaskService, firmware with
PLDM Targets, the virtual-media boot each iDRAC supports, ResetType checked against
AllowableValues, and an inventory that degrades per sub-resource."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devstack.lab.idrac import make_dup
from devstack.lab.idrac.testing import FileServer, running_lab
from executor.targets.catalog import UpdatePackage
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import AuthenticationFailed, UnsupportedTarget
from executor.targets.redfish import RedfishClient

SCALE = 400.0
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0)
ISO = b"\0" * 2048 + b"CD001 installer"


@pytest.fixture(params=["idrac9", "idrac10"])
def lab(request):
    with running_lab(1, SCALE, personality=request.param) as lab, FileServer({"/iso/os.iso": ISO}) as files:
        lab.files = files
        yield lab
        assert lab.bmcs[0].own_sessions() == 0, "a Redfish session leaked"


def client(lab, **kw) -> RedfishClient:
    return RedfishClient(Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True), T, **kw)


def test_generation_is_read_from_the_service_root_and_firmware(lab) -> None:
    with client(lab) as c:
        assert c.generation == lab.bmcs[0].generation
        assert c.dell is not None


def test_basic_authentication_only_where_the_idrac_offers_it(lab) -> None:
    b = lab.bmcs[0]
    if b.generation == 9:
        with client(lab, auth="basic") as c:
            assert c.power_state() == "On"
        return
    with pytest.raises(AuthenticationFailed) as ei, client(lab, auth="basic") as c:
        c.power_state()
    assert "iDRAC10 refuses Basic authentication by default" in str(ei.value)
    b.inject(basic_auth=True)  # an administrator enabled it
    with client(lab, auth="basic") as c:
        assert c.power_state() == "On"


def test_scp_export_and_import_through_each_generations_actions(lab) -> None:
    b = lab.bmcs[0]
    b.timing.scp_export = b.timing.scp_import = 2.0
    with client(lab) as c:
        exported = c.dell.export_scp()
        assert exported.profile["SystemConfiguration"]["ServiceTag"] == b.service_tag
        profile = exported.profile
        for comp in profile["SystemConfiguration"]["Components"]:
            for a in comp["Attributes"]:
                if a["Name"] == "SysProfile":
                    a["Value"] = "PerfPerWattOptimizedOs"
        job = c.dell.import_scp(profile, shutdown="Forced")
        assert job.state == "Completed"
        assert b.attributes["BIOS.Setup.1-1"]["SysProfile"] == "PerfPerWattOptimizedOs"
        # read-only attributes ("Set On Import": "False") are never applied
        assert b.attributes["BIOS.Setup.1-1"].get("SystemServiceTag") is None


def test_firmware_names_pldm_targets_on_idrac10(lab) -> None:
    b = lab.bmcs[0]
    nic = next(x for x in b.components if x.device == "NIC")
    with FileServer({"/nic.bin": make_dup(nic.component_id, "99.1.1")}) as files, client(lab) as c:
        pkg = UpdatePackage(files.url("nic.bin"), nic.component_id, "99.1.1", nic.name, reboot_required=True)
        report = c.dell.update_firmware([pkg])
        assert report.ok and report.rebooted, report
    job = next(j for j in b.jobs.values() if j.job_type == "FirmwareUpdate")
    if b.generation == 10:
        assert job.targets == [
            f"/redfish/v1/UpdateService/FirmwareInventory/Installed-{nic.component_id}-"
            f"{report.components[0].before}"
        ]
    else:
        assert job.targets == []  # iDRAC9 takes no Targets


def test_pldm_update_without_targets_fails_on_idrac10(lab) -> None:
    b = lab.bmcs[0]
    if b.generation == 9:
        pytest.skip("iDRAC9 updates every device without Targets")
    nic = next(x for x in b.components if x.device == "NIC")
    with FileServer({"/nic.bin": make_dup(nic.component_id, "99.1.1")}) as files, client(lab) as c:
        jid = c.dell.simple_update(files.url("nic.bin"))  # no target named
        with pytest.raises(Exception, match="PLDM"):
            c.dell.wait_job(jid)


def test_virtual_media_boot_reaches_the_virtual_cd(lab) -> None:
    b = lab.bmcs[0]
    with client(lab) as c:
        media, power = c.boot_from_media(lab.files.url("iso/os.iso"))
        assert media.changed and power is not None and power.state == "On"
    assert b.boot_log[-1] == "VirtualCD", b.boot_log


def test_standard_cd_override_is_the_physical_drive_on_idrac9(lab) -> None:
    """Why the client takes the Dell OEM path on iDRAC9: the lab boots the physical optical
    drive (none here, so the disk) for the standard Cd target, as iDRAC9 does."""
    b = lab.bmcs[0]
    with client(lab) as c:
        c.insert_media(lab.files.url("iso/os.iso"))
        c.set_one_time_boot("Cd")
        c.power("reset")
    assert b.boot_log[-1] == ("Hdd" if b.generation == 9 else "VirtualCD")


def test_reset_type_is_checked_against_allowable_values(lab) -> None:
    b = lab.bmcs[0]
    b.inject(reset_types=("On", "ForceOff", "ForceRestart"))
    before = b.requests
    with client(lab) as c, pytest.raises(UnsupportedTarget) as ei:
        c.power("graceful_restart")
    assert "does not offer ResetType GracefulRestart" in str(ei.value) and "ForceRestart" in str(ei.value)
    assert b.power_state == "On" and b.requests > before


def test_inventory_degrades_per_sub_resource(lab) -> None:
    b = lab.bmcs[0]
    nic = next(x for x in b.components if x.device == "NIC")
    b.inject(
        broken_paths=(
            f"/redfish/v1/UpdateService/FirmwareInventory/Installed-{nic.component_id}-{nic.version}",
        )
    )
    with client(lab) as c:
        # no $expand here: the member is read one by one and the broken one becomes a warning
        c.root.json["ProtocolFeaturesSupported"]["ExpandQuery"]["Levels"] = False
        inv = c.inventory()
    assert inv.ok and inv.system is not None
    assert {f.component_id for f in inv.firmware} == {x.component_id for x in b.components} - {
        nic.component_id
    }
    assert len(inv.warnings) == 1 and nic.component_id in inv.warnings[0]
    b.inject(broken_paths=("/redfish/v1/UpdateService/FirmwareInventory",))
    with client(lab) as c:
        c.root.json["ProtocolFeaturesSupported"]["ExpandQuery"]["Levels"] = False
        inv = c.inventory()
    assert inv.ok and inv.firmware == [] and "firmware inventory unavailable" in inv.warnings[0]
