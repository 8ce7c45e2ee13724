"""`rackpilot lab up|status|down`: the coherent data centre as one background process -
every ESXi host maps to a BMC (service tag, address), and a restart through a host's iDRAC
takes that host "not responding" in vCenter for the length of the reboot."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.redfish import RedfishClient

ROOT = Path(__file__).resolve().parents[2]


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devstack.cli", "lab", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )


def test_lab_up_status_down(tmp_path):
    env = dict(os.environ, RACKPILOT_LAB_DIR=str(tmp_path / "lab"))
    config = tmp_path / "dc.json"
    config.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c1", "hosts": 2, "vms_per_host": 1}],
                "time_scale": 200,
                "esxi_ssh": True,
                "ome": True,
            }
        )
    )
    up = cli(env, "up", "--config", str(config))
    try:
        assert up.returncode == 0, up.stderr
        d = json.loads(up.stdout)["description"]
        assert sorted(x["name"] for x in d["hosts"]) == ["c1-esx01", "c1-esx02"]
        assert {"url", "control_url", "ca_file"} <= set(d["vcenter"]) and d["ome"]["url"]
        assert all(x["ssh_port"] for x in d["hosts"])
        again = cli(env, "up", "--config", str(config))  # idempotent: the same lab
        assert json.loads(again.stdout)["pid"] == json.loads(up.stdout)["pid"]
        ctx = ssl.create_default_context(cafile=d["vcenter"]["ca_file"])

        def vc_host(name: str) -> dict:
            with urllib.request.urlopen(f"{d['vcenter']['control_url']}/hosts/{name}", context=ctx) as r:
                return json.loads(r.read())

        host = d["hosts"][0]
        assert vc_host(host["name"])["service_tag"] == host["service_tag"]
        assert vc_host(host["name"])["bmc_address"] == host["bmc_url"]
        password = Path(d["idrac"]["password_file"]).read_text()
        ep = Endpoint(host["bmc_url"], "root", password, allow_plain_http=True)
        with RedfishClient(ep, Timeouts().compressed(50)) as c:
            c.power("reset", wait=False)
        seen = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            {"notResponding", "connected"} <= seen and vc_host(host["name"])["reboots"] == 1
        ):
            seen.add(vc_host(host["name"])["connection_state"])
            time.sleep(0.02)
        assert "notResponding" in seen and vc_host(host["name"])["connection_state"] == "connected"
        assert vc_host(d["hosts"][1]["name"])["reboots"] == 0  # only the restarted server's host
        status = json.loads(cli(env, "status").stdout)
        assert status["running"] and status["description"]["hosts"] == d["hosts"]
    finally:
        down = cli(env, "down")
    assert down.returncode == 0 and "lab stopped" in down.stderr
    assert json.loads(cli(env, "status").stdout)["running"] is False
