"""Power operations against the simulated iDRAC: confirmed states, idempotence, faults,
and no leaked Redfish sessions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devstack.lab.idrac.testing import running_lab
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import (
    AuthenticationFailed,
    OperationTimedOut,
    TargetServerError,
    TargetUnreachable,
)
from executor.targets.redfish import RedfishClient

SCALE = 400.0
# Budgets compressed 4x less than the lab's clock (headroom on a loaded 2-core machine);
# polls stay fast. Tests that expect a timeout set the budget they need.
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0)


@pytest.fixture
def lab():
    with running_lab(1, SCALE) as lab:
        yield lab
        assert lab.bmcs[0].own_sessions() == 0, "a Redfish session leaked"


def ep(lab, password: str = "calvin") -> Endpoint:
    return Endpoint(lab.url(0), "root", password, allow_plain_http=True)


def test_power_actions_confirm_state_and_are_idempotent(lab) -> None:
    bmc = lab.bmcs[0]
    with RedfishClient(ep(lab), T) as c:
        r = c.power("on")
        assert (r.changed, r.state) == (False, "On") and "already on" in r.message
        r = c.power("graceful_shutdown")
        assert (r.changed, r.state) == (True, "Off")
        r = c.power("off")
        assert (r.changed, r.state) == (False, "Off") and "already off" in r.message
        boots = bmc.boot_count
        r = c.power("on")
        assert (r.changed, r.state) == (True, "On") and bmc.boot_count == boots + 1
        for action in ("reset", "cycle", "graceful_restart"):
            before = bmc.boot_count
            r = c.power(action)
            assert (r.changed, r.state) == (True, "On"), action
            assert bmc.boot_count == before + 1, f"{action} did not restart the host"
        r = c.power("off")
        assert (r.changed, r.state) == (True, "Off")
    assert bmc.sessions_created == 1  # one session reused for every call


def test_restart_of_a_powered_off_host_powers_it_on(lab) -> None:
    lab.bmcs[0].power_state = "Off"
    with RedfishClient(ep(lab), T) as c:
        r = c.power("reset")
        assert (r.changed, r.state) == (True, "On") and "powered on instead" in r.message


def test_graceful_shutdown_ignored_by_the_os_times_out_readably(lab) -> None:
    lab.bmcs[0].inject(graceful_ignored=True)
    with RedfishClient(ep(lab), replace(T, power=0.4)) as c, pytest.raises(OperationTimedOut) as ei:
        c.power("graceful_shutdown")
    msg = str(ei.value)
    assert "power graceful_shutdown" in msg and "not Off" in msg and "ACPI" in msg


def test_unreachable_bmc(lab) -> None:
    lab.bmcs[0].inject(unreachable=True)
    with pytest.raises(TargetUnreachable) as ei:
        with RedfishClient(ep(lab), T) as c:
            c.power("on")
    assert "open session" in str(ei.value) and f"127.0.0.1:{lab.bmcs[0].port}" in str(ei.value)


def test_bmc_lost_mid_run_is_unreachable_not_a_traceback(lab) -> None:
    with pytest.raises(TargetUnreachable, match="power on"):
        with RedfishClient(ep(lab), T) as c:
            c.power_state()
            lab.bmcs[0].inject(unreachable=True)
            c.power("on")
    # the session could not be deleted while the BMC was gone; it expires on the BMC's idle timer
    lab.bmcs[0].clear_faults()
    lab.bmcs[0].timing.session_idle = 0.0
    lab.bmcs[0].tick()


def test_transient_5xx_is_retried_and_persistent_5xx_is_reported(lab) -> None:
    bmc = lab.bmcs[0]
    with RedfishClient(ep(lab), T) as c:
        bmc.inject(server_errors=1)
        assert c.power_state() == "On"  # GET retried past one HTTP 500
        bmc.inject(server_errors=-1)
        with pytest.raises(TargetServerError) as ei:
            c.power_state()
        assert "HTTP 500" in str(ei.value) and "SYS446" in str(ei.value)
        bmc.clear_faults()


def test_slow_bmc_beyond_read_timeout(lab) -> None:
    lab.bmcs[0].inject(slow_seconds=0.2)
    with pytest.raises(TargetUnreachable, match="read timeout"):
        with RedfishClient(ep(lab), replace(T, read=0.08)) as c:
            c.power_state()
    # slow but within the timeout works
    with RedfishClient(ep(lab), replace(T, read=3.0)) as c:
        assert c.power_state() == "On"
    lab.bmcs[0].clear_faults()


def test_wrong_password(lab) -> None:
    with pytest.raises(AuthenticationFailed) as ei:
        with RedfishClient(ep(lab, "wrong"), T):
            pass
    assert "credentials" in str(ei.value) and "wrong" not in str(ei.value)
    assert lab.bmcs[0].sessions_created == 0


def test_a_restart_in_mid_post_gets_a_full_post(lab) -> None:
    """The POST of a boot ends only that boot: a host restarted while still in POST (an
    operator powers on, then restarts at once) stays in POST for the next boot's full
    length, not just what was left of the first one (which hid the restart)."""
    import time

    bmc = lab.bmcs[0]
    bmc.timing.post = 200.0  # 0.5 s real
    bmc.timing.power_on = 80.0  # 0.2 s: the first POST has 0.3 s left when the second boot starts

    def status() -> str:
        bmc.tick()
        return bmc.server_status

    with RedfishClient(ep(lab), T) as c:
        c.power("off")
        boots = bmc.boot_count
        c.power("on", wait=False)
    deadline = time.monotonic() + 10
    while not (status() == "InPOST" and bmc.boot_count == boots + 1):
        assert time.monotonic() < deadline, "the host never booted"
        time.sleep(0.002)
    with bmc.lock:
        bmc._power_down(0.0, then_on=True)  # restart at once, the first POST not over
    boots = bmc.boot_count
    while not (status() == "InPOST" and bmc.boot_count == boots + 1):
        assert time.monotonic() < deadline, "the restart never booted"
        time.sleep(0.002)
    second_post = time.monotonic()
    while status() == "InPOST":
        time.sleep(0.002)
    # the whole POST of the second boot (0.5 s real), not the rest of the first one's
    assert time.monotonic() - second_post >= 0.45
