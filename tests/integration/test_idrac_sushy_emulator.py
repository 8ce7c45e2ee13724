"""The standard-Redfish part of rackpilot's client against an independent implementation:
sushy-tools' `sushy-emulator` with its fake driver (no SessionService, no Dell OEM, power
changes landing 1-11 s later, virtual media really downloaded)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import bcrypt
import pytest
import requests

from devstack.lab.idrac.testing import FileServer
from devstack.proc import spawn
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import RequestRejected
from executor.targets.redfish import RedfishClient

UUID = "2f0e3a7c-5b8d-4c1e-9a6f-0d2b4e6f8a10"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    d: Path = tmp_path_factory.mktemp("sushy-emulator")
    # bcrypt cost 4: the emulator checks the hash on every request (cost 12 caps it at ~5 req/s)
    (d / "htpasswd").write_text("admin:" + bcrypt.hashpw(b"emu-pw", bcrypt.gensalt(4)).decode() + "\n")
    (d / "state").mkdir()
    (d / "emulator.conf").write_text(
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(d / 'state')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': {UUID!r}, 'name': 'fake-r640', 'power_state': 'Off',"
        " 'nics': [{'mac': '00:5c:52:31:3a:9c', 'ip': '172.22.0.100'}]}]\n"
    )
    port = free_port()
    exe = Path(sys.executable).parent / "sushy-emulator"
    proc = spawn(
        new_session=False,
        argv=[str(exe), "--config", str(d / "emulator.conf"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(d / "emulator.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/redfish/v1", auth=("admin", "emu-pw"), timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("sushy-emulator did not start: " + (d / "emulator.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_standard_redfish_against_sushy_emulator(emulator: str) -> None:
    # real seconds: the emulator applies power changes 1-11 s after the request
    t = replace(Timeouts(), poll=0.25, power=30.0, retry_delay=0.2, connect=2.0, read=10.0)
    ep = Endpoint(emulator, "admin", "emu-pw", allow_plain_http=True)
    with FileServer({"/boot.iso": b"\0" * 4096}) as files, RedfishClient(ep, t, auth="basic") as c:
        assert c.dell is None  # no Dell OEM: LC gating is skipped, standard Redfish only
        info = c.system_info()
        assert info.system_id is None and info.power_state == "Off"
        r = c.power("on")
        assert (r.changed, r.state) == (True, "On")
        r = c.power("on")
        assert (r.changed, r.state) == (False, "On") and "already on" in r.message
        m = c.insert_media(files.url("boot.iso"))
        assert m.changed and files.hits.get("/boot.iso", 0) >= 1  # the emulator downloaded it
        assert c.insert_media(files.url("boot.iso")).changed is False
        # the fake driver stores every override as Continuous; the client must not pretend
        with pytest.raises(RequestRejected, match="did not honour a one-time override"):
            c.set_one_time_boot("Cd")
        assert c.eject_media().changed is True
        r = c.power("off")
        assert (r.changed, r.state) == (True, "Off")


def test_a_bmc_without_sessions_is_not_reported_as_a_credential_problem(emulator: str) -> None:
    """The emulator's fake driver has no SessionService: session authentication there must
    say so, not send the operator to check a password that is right."""
    from executor.targets.errors import UnsupportedTarget

    t = replace(Timeouts(), poll=0.25, retry_delay=0.2, connect=2.0, read=10.0, session_wait=0.0)
    ep = Endpoint(emulator, "admin", "emu-pw", allow_plain_http=True)
    with pytest.raises(UnsupportedTarget) as ei, RedfishClient(ep, t, auth="session") as c:
        c.power_state()
    assert "no Redfish SessionService" in str(ei.value) and "auth='basic'" in str(ei.value)
