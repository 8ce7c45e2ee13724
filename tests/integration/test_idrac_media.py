"""Virtual media and one-time boot against the simulated iDRAC (the BMC fetches the image
from a loopback HTTP share), with Lifecycle Controller gating."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devstack.lab.idrac.testing import FileServer, running_lab
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import LifecycleControllerNotReady, RequestRejected
from executor.targets.redfish import RedfishClient

SCALE = 400.0
# Budgets compressed 4x less than the lab's clock (headroom on a loaded 2-core machine);
# polls stay fast. Tests that expect a timeout set the budget they need.
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0)


@pytest.fixture
def lab():
    with (
        running_lab(1, SCALE) as lab,
        FileServer({"/iso/esxi.iso": b"ISO" * 1000, "/iso/tools.iso": b"T" * 100}) as files,
    ):
        lab.files = files
        yield lab
        assert lab.bmcs[0].own_sessions() == 0, "a Redfish session leaked"


def client(lab, t: Timeouts = T) -> RedfishClient:
    return RedfishClient(Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True), t)


def test_insert_eject_idempotent_and_replace(lab) -> None:
    iso, tools = lab.files.url("iso/esxi.iso"), lab.files.url("iso/tools.iso")
    vm = lab.bmcs[0].virtual_media["CD"]
    with client(lab) as c:
        r = c.insert_media(iso)
        assert (r.slot, r.changed, r.image) == ("CD", True, iso) and vm["Image"] == iso
        assert lab.files.hits["/iso/esxi.iso"] >= 1  # the BMC really fetched the image
        r = c.insert_media(iso)
        assert r.changed is False and "already mounted" in r.message
        r = c.insert_media(tools)  # a different image: eject, then insert
        assert r.changed is True and vm["Image"] == tools
        r = c.eject_media()
        assert r.changed is True and vm["Inserted"] is False
        r = c.eject_media()
        assert r.changed is False and "nothing mounted" in r.message


def test_unfetchable_image_is_refused_with_the_bmc_reason(lab) -> None:
    with client(lab) as c, pytest.raises(RequestRejected) as ei:
        c.insert_media(lab.files.url("iso/missing.iso"))
    msg = str(ei.value)
    assert "RAC0720" in msg and "insert virtual media" in msg and "Unable to locate" in msg
    assert lab.bmcs[0].virtual_media["CD"]["Inserted"] is False


def test_boot_from_media_sets_one_time_boot_and_reboots_into_it(lab) -> None:
    bmc = lab.bmcs[0]
    boots = bmc.boot_count
    with client(lab) as c:
        media, power = c.boot_from_media(lab.files.url("iso/esxi.iso"))
        assert media.changed and power is not None and power.state == "On"
    assert bmc.boot_count == boots + 1
    # the override was consumed by that boot, as a one-time override must be
    assert bmc.boot_override["BootSourceOverrideEnabled"] == "Disabled"


def test_configuration_waits_for_the_lifecycle_controller_after_a_reboot(lab) -> None:
    bmc = lab.bmcs[0]
    with client(lab) as c:
        c.power("reset")
        assert c.dell.lc_status().ready is False  # still in POST / LC starting
        c.set_one_time_boot("Pxe")  # gated: waits for Ready instead of failing with SYS518
        assert bmc.boot_override["BootSourceOverrideTarget"] == "Pxe"
        assert c.dell.lc_status().ready is True


def test_lifecycle_controller_stuck_busy(lab) -> None:
    lab.bmcs[0].inject(lc_stuck_busy=True)
    with client(lab, replace(T, lc_ready=0.3)) as c, pytest.raises(LifecycleControllerNotReady) as ei:
        c.insert_media(lab.files.url("iso/esxi.iso"))
    msg = str(ei.value)
    assert "LCStatus=InUse" in msg and "insert virtual media" in msg and "clear the job queue" in msg
