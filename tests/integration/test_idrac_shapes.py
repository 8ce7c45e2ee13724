"""The simulator's Dell payloads carry every key of the real iDRAC samples that ship in
the installed `sushy` package (sushy/tests/oem/dell/unit/json_samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import sushy

from devstack.lab.idrac import Lab, LabThread

SAMPLES = Path(sushy.__file__).parent / "tests" / "oem" / "dell" / "unit" / "json_samples"

# Keys of the real samples the simulator deliberately leaves out: services rackpilot never
# calls (licences, vFlash, switch connections, persistent storage, RAID service links).
NOT_SIMULATED = {
    "Links.Oem.Dell.DellLicenseCollection", "Links.Oem.Dell.DellLicenseManagementService",
    "Links.Oem.Dell.DellPersistentStorageService", "Links.Oem.Dell.DellSwitchConnectionCollection",
    "Links.Oem.Dell.DellvFlashCollection", "Actions.Oem.DellManager.v1_0_0#DellManager.ResetToDefaults",
    "Actions.Oem.OemManager.v1_0_0#OemManager.ImportSystemConfigurationPreview",
}


def missing_keys(sample, actual, path: str = "") -> list[str]:
    """Keys present in `sample` but absent from `actual`, recursively through dicts and
    the first element of lists of dicts."""
    out: list[str] = []
    if isinstance(sample, dict) and isinstance(actual, dict):
        for k, v in sample.items():
            p = f"{path}.{k}" if path else k
            if p in NOT_SIMULATED:
                continue
            if k not in actual:
                out.append(p)
            else:
                out += missing_keys(v, actual[k], p)
    elif isinstance(sample, list) and isinstance(actual, list) and sample and actual:
        if isinstance(sample[0], dict) and isinstance(actual[0], dict):
            out += missing_keys(sample[0], actual[0], path + "[]")
    return out


def load(name: str):
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture(scope="module")
def bmc():
    assert SAMPLES.is_dir(), f"sushy's Dell samples are missing at {SAMPLES}"
    lab = Lab(1, time_scale=1000)
    with LabThread(lab):
        s = requests.Session()
        s.auth = ("root", "calvin")
        yield lab, s, lab.url(0)


def get(bmc, path: str, status: int = 200):
    _, s, url = bmc
    r = s.get(url + path, timeout=5)
    assert r.status_code == status, (path, r.status_code, r.text[:300])
    return r.json()


@pytest.mark.parametrize("sample,path", [
    ("root.json", "/redfish/v1"),
    ("manager_collection.json", "/redfish/v1/Managers"),
    ("job_service.json", "/redfish/v1/Dell/Managers/iDRAC.Embedded.1/DellJobService"),
    ("lifecycle_service.json", "/redfish/v1/Dell/Managers/iDRAC.Embedded.1/DellLCService"),
    ("idrac_card_service.json", "/redfish/v1/Dell/Managers/iDRAC.Embedded.1/DelliDRACCardService"),
])
def test_static_resources_have_sample_keys(bmc, sample: str, path: str) -> None:
    assert missing_keys(load(sample), get(bmc, path)) == []


def test_manager_and_system_have_sample_keys(bmc) -> None:
    mgr = get(bmc, "/redfish/v1/Managers/iDRAC.Embedded.1")
    sample = load("manager.json")
    # the Oem.Dell.DelliDRACCard block is informational; compare the rest in full
    sample["Oem"]["Dell"]["DelliDRACCard"] = {}
    assert missing_keys(sample, mgr) == []
    system = get(bmc, "/redfish/v1/Systems/System.Embedded.1")
    sys_sample = load("system.json")
    top_missing = [k for k in sys_sample if k not in system]
    assert top_missing == []
    assert missing_keys(sys_sample["Boot"], system["Boot"]) == []
    assert missing_keys(sys_sample["Actions"], system["Actions"]) == []


def test_jobs_tasks_and_errors_have_sample_keys(bmc) -> None:
    lab, s, url = bmc
    r = s.post(url + "/redfish/v1/Managers/iDRAC.Embedded.1/Actions/Oem/EID_674_Manager.ExportSystemConfiguration",
               json={"ExportFormat": "JSON", "ShareParameters": {"Target": "ALL"}}, timeout=5)
    assert r.status_code == 202
    task_path = r.headers["Location"]
    jid = task_path.rsplit("/", 1)[-1]
    running = s.get(url + task_path, timeout=5)
    assert running.status_code == 202  # still running: 202 with the task document
    assert missing_keys(load("task.json"), running.json()) == []
    job = get(bmc, f"/redfish/v1/Managers/iDRAC.Embedded.1/Jobs/{jid}")
    assert missing_keys(load("job.json"), job) == []
    col = get(bmc, "/redfish/v1/Managers/iDRAC.Embedded.1/Jobs?$expand=.($levels=1)")
    assert missing_keys(load("job_collection_expanded.json"), col) == []
    # profile of a finished export
    lab.bmcs[0].timing.scp_export = 0
    import time
    deadline = time.time() + 5
    while (done := s.get(url + task_path, timeout=5)).status_code == 202 and time.time() < deadline:
        time.sleep(0.05)
    profile = done.json()
    sample = load("export_configuration_nic_bios.json")
    assert missing_keys(sample, profile) == []
    # LC068 / RAC0679 error bodies
    lab.bmcs[0].inject(config_error="LC068")
    err = s.post(url + "/redfish/v1/Managers/iDRAC.Embedded.1/Actions/Oem/EID_674_Manager.ImportSystemConfiguration",
                 json={"ImportBuffer": "{}", "ShutdownType": "NoReboot"}, timeout=5)
    assert err.status_code == 400
    assert missing_keys(load("error_pending_job.json"), err.json()) == []
    assert err.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith("LC068")
    lab.bmcs[0].inject(config_error="RAC0679")
    err = s.post(url + "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                 json={"ImageURI": "http://127.0.0.1:9/x.exe", "TransferProtocol": "HTTP"}, timeout=5)
    assert missing_keys(load("error_running_job.json"), err.json()) == []
    assert err.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith("RAC0679")
    lab.bmcs[0].clear_faults()


def test_sushy_dell_extension_reads_the_simulator(bmc) -> None:
    _, _, url = bmc
    root = sushy.Sushy(url, username="root", password="calvin", auth=None)
    try:
        ext = root.get_manager("/redfish/v1/Managers/iDRAC.Embedded.1").get_oem_extension("Dell")
        assert ext.lifecycle_service.is_idrac_ready() is True
        assert {str(v.value) for v in ext.get_allowed_export_target_values()} >= {"ALL", "BIOS", "IDRAC"}
        assert ext.job_collection.get_unfinished_jobs() == []
    finally:
        root._auth.close()


def test_command_line_lab_and_control_api(tmp_path) -> None:
    """`python -m devstack.lab.idrac` in another process, driven through `/_lab/`."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "devstack.lab.idrac", "--count", "3", "--base-port", str(base),
                             "--time-scale", "100"], stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        if not ready.get("ready"):
            pytest.skip(f"port range {base}.. taken: {ready}")
        assert ready["ports"] == [base, base + 2]
        last = f"http://127.0.0.1:{base + 2}"
        assert requests.get(last + "/redfish/v1/Systems", auth=("root", "calvin"), timeout=5).status_code == 200
        r = requests.post(last + "/_lab/faults", json={"server_errors": 1}, timeout=5)
        assert r.status_code == 200
        assert requests.get(last + "/redfish/v1/Systems", auth=("root", "calvin"), timeout=5).status_code == 500
        assert requests.post(last + "/_lab/faults", json={"bogus": 1}, timeout=5).status_code == 400
        requests.post(last + "/_lab/exhaust-sessions", timeout=5)
        login = requests.post(last + "/redfish/v1/SessionService/Sessions",
                              json={"UserName": "root", "Password": "calvin"}, timeout=5)
        assert login.status_code == 503
        assert login.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "IDRAC.2.8.RAC0218"
        fleet = requests.get(f"http://127.0.0.1:{base}/_lab/fleet", timeout=5).json()
        assert fleet["count"] == 3 and fleet["sessions"] == 0
    finally:
        proc.terminate()
        proc.wait(10)
