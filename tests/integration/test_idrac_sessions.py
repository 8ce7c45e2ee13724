"""Redfish session discipline and TLS choice against the simulated iDRAC: one reused
session per BMC, always deleted; RAC0218 session exhaustion; explicit TLS modes."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest

from devstack.lab.idrac.testing import running_lab, self_signed_cert
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import SessionLimitReached, TargetError, TLSConfigurationError
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


def ep(lab) -> Endpoint:
    return Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True)


def test_one_session_reused_and_deleted(lab) -> None:
    bmc = lab.bmcs[0]
    with RedfishClient(ep(lab), T) as c:
        assert bmc.own_sessions() == 1
        c.system_info()
        c.firmware_inventory()
        c.power("on")
        c.dell.lc_status()
        assert c.session_uri and c.session_uri.startswith("/redfish/v1/SessionService/Sessions/")
    assert (bmc.sessions_created, bmc.sessions_deleted, bmc.peak_sessions) == (1, 1, 1)


def test_session_deleted_when_the_work_fails(lab) -> None:
    with pytest.raises(RuntimeError):
        with RedfishClient(ep(lab), T) as c:
            c.power_state()
            raise RuntimeError("handler failed half-way")
    assert lab.bmcs[0].sessions_deleted == 1


def test_session_exhaustion_is_reported_as_rac0218(lab) -> None:
    bmc = lab.bmcs[0]
    bmc.exhaust_sessions()  # another tool leaked all 8 sessions
    t0 = time.monotonic()
    with pytest.raises(SessionLimitReached) as ei:
        with RedfishClient(ep(lab), replace(T, session_wait=0.3)):
            pass
    assert time.monotonic() - t0 >= 0.3  # waited for a free slot before giving up
    msg = str(ei.value)
    assert "RAC0218" in msg and "open session" in msg and "another tool" in msg
    assert len(bmc.sessions) == 8 and bmc.own_sessions() == 0


def test_session_exhaustion_recovers_when_leaked_sessions_expire(lab) -> None:
    bmc = lab.bmcs[0]
    bmc.timing.session_idle = 120.0  # 0.3 s real at this scale
    bmc.exhaust_sessions()
    with RedfishClient(ep(lab), replace(T, session_wait=5.0)) as c:
        assert c.power_state() == "On"
    assert bmc.sessions_created == 1


def test_expired_session_is_renewed_and_the_renewal_deleted(lab) -> None:
    bmc = lab.bmcs[0]
    with RedfishClient(ep(lab), T) as c:
        c.power_state()
        bmc.timing.session_idle = 20.0  # 50 ms real
        time.sleep(0.1)
        bmc.tick()  # the BMC drops our idle session
        assert bmc.own_sessions() == 0
        assert c.power_state() == "On"  # sushy re-authenticates on 401
        assert bmc.own_sessions() == 1
    assert bmc.sessions_created == 2 and bmc.sessions_deleted == 1


def test_plain_http_must_be_asked_for() -> None:
    with pytest.raises(TLSConfigurationError, match="allow_plain_http"):
        Endpoint("http://127.0.0.1:9", "root", "calvin")
    with pytest.raises(TLSConfigurationError, match="choose one"):
        Endpoint("https://127.0.0.1:9", "root", "calvin", insecure=True, ca_bundle="/etc/hostname")
    with pytest.raises(TLSConfigurationError, match="does not exist"):
        Endpoint("https://127.0.0.1:9", "root", "calvin", ca_bundle="/nonexistent/ca.pem")
    e = Endpoint("10.0.0.5", "root", "secret")
    assert (e.url, e.tls_mode, e.verify) == ("https://10.0.0.5", "https-verify-system-ca", True)
    assert "secret" not in repr(e)


def test_tls_self_signed_needs_ca_bundle_or_explicit_insecure(tmp_path, caplog) -> None:
    import ssl

    cert, key = self_signed_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with running_lab(1, SCALE, ssl_context=ctx) as lab:
        url = lab.url(0)
        assert url.startswith("https://")
        with pytest.raises(TLSConfigurationError) as ei:
            with RedfishClient(Endpoint(url, "root", "calvin"), T):
                pass
        assert "not trusted" in str(ei.value) and "CA bundle" in str(ei.value)
        with RedfishClient(Endpoint(url, "root", "calvin", ca_bundle=str(cert)), T) as c:
            assert c.power_state() == "On"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rackpilot.targets.redfish"):
            with RedfishClient(Endpoint(url, "root", "calvin", insecure=True), T) as c:
                assert c.power_state() == "On"
        assert any("https-insecure-no-verify" in r.getMessage() for r in caplog.records)
        assert lab.bmcs[0].own_sessions() == 0


def test_errors_never_carry_the_password(lab) -> None:
    lab.bmcs[0].inject(unreachable=True)
    secret = "calvin"
    with pytest.raises(TargetError) as ei:
        with RedfishClient(ep(lab), T):
            pass
    assert secret not in str(ei.value)
    lab.bmcs[0].clear_faults()


def test_a_device_that_does_not_speak_redfish() -> None:
    from devstack.lab.idrac.testing import FileServer
    from executor.targets.errors import RequestRejected

    with FileServer({"/redfish/v1": b"<html>login page</html>"}) as web:
        with pytest.raises(RequestRejected, match="unexpected answer from the BMC"):
            with RedfishClient(
                Endpoint(f"http://127.0.0.1:{web.port}", "root", "calvin", allow_plain_http=True), T
            ):
                pass
