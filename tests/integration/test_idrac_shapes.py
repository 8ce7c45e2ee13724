"""The simulator's Dell payloads against the real iDRAC samples that ship in the installed
`sushy` package (sushy/tests/oem/dell/unit/json_samples), both ways and for both
personalities: every key of a sample is served (unless listed as not simulated), with a
value of the same JSON type, and nothing is served that the sample lacks unless listed as
added (with the reason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import sushy

from devstack.lab.idrac import Lab, LabThread

SAMPLES = Path(sushy.__file__).parent / "tests" / "oem" / "dell" / "unit" / "json_samples"

# Keys of the real samples the simulator deliberately leaves out: services rackpilot never
# calls (licences, vFlash, switch connections, persistent storage), and what current
# firmware no longer serves.
NOT_SIMULATED = {
    "Links.Oem.Dell.DellLicenseCollection",
    "Links.Oem.Dell.DellLicenseManagementService",
    "Links.Oem.Dell.DellPersistentStorageService",
    "Links.Oem.Dell.DellSwitchConnectionCollection",
    "Links.Oem.Dell.DellvFlashCollection",
    "Actions.Oem.DellManager.v1_0_0#DellManager.ResetToDefaults",
    "Actions.Oem.OemManager.v1_0_0#OemManager.ImportSystemConfigurationPreview",
    "Fabrics",  # rack servers: no fabric to manage, so not linked
    "SimpleStorage",  # iDRAC10 only: removed from the system (Storage replaces it)
    "VirtualMedia",  # iDRAC10 only: moved from the manager to the system
    "HttpPushUri",  # iDRAC10 only: no HTTP push; ImageURI or multipart upload
}
# Keys the simulator serves beyond the samples (older firmware than the lab plays), each
# standard Redfish of current firmware.
ADDED = {
    "ProtocolFeaturesSupported.OnlyMemberQuery",
    "ProtocolFeaturesSupported.TopSkipQuery",
    "ProtocolFeaturesSupported.ExcerptQuery",
    "Vendor",
    "UUID",  # service root of Redfish 1.17
    "LocationIndicatorActive",  # replaces IndicatorLED since ComputerSystem 1.13
    "VirtualMedia",
    "@Redfish.Settings",
    "@odata.etag",  # iDRAC10 system
    "MultipartHttpPushUri",  # iDRAC10 update service
    "Links.ComputerSystems@odata.count",
    "Links.ManagedBy@odata.count",
    "Members@odata.count",  # required of every Redfish collection
}
# Keys whose type differs from the sample for a stated reason.
TYPE_DIFFERENCES = {
    "CompletionTime",  # null in a running job's sample, a timestamp once finished
}


def compare(sample, actual, path: str = "") -> list[str]:
    """Differences between `sample` and `actual`: missing keys, extra keys and type
    changes, recursively through dicts and the first element of lists of dicts."""
    out: list[str] = []
    if isinstance(sample, dict) and isinstance(actual, dict):
        for k, v in sample.items():
            p = f"{path}.{k}" if path else k
            if p in NOT_SIMULATED or k in NOT_SIMULATED:
                continue
            if k not in actual:
                out.append(f"missing {p}")
            else:
                out += compare(v, actual[k], p)
        for k in actual:
            p = f"{path}.{k}" if path else k
            if k not in sample and p not in ADDED and k not in ADDED:
                out.append(f"invented {p}")
    elif isinstance(sample, list) and isinstance(actual, list):
        if sample and actual and isinstance(sample[0], dict) and isinstance(actual[0], dict):
            out += compare(sample[0], actual[0], path + "[]")
    elif sample is not None and actual is not None and type(sample) is not type(actual):
        if path.rsplit(".", 1)[-1] not in TYPE_DIFFERENCES:
            out.append(f"type of {path}: sample {type(sample).__name__}, lab {type(actual).__name__}")
    return out


def load(name: str):
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture(scope="module", params=["idrac9", "idrac10"])
def bmc(request):
    assert SAMPLES.is_dir(), f"sushy's Dell samples are missing at {SAMPLES}"
    lab = Lab(1, time_scale=1000, personality=request.param)
    with LabThread(lab):
        s = requests.Session()
        r = s.post(
            lab.url(0) + "/redfish/v1/SessionService/Sessions",
            json={"UserName": "root", "Password": "calvin"},
            timeout=5,
        )
        s.headers["X-Auth-Token"] = r.headers["X-Auth-Token"]
        yield lab, s, lab.url(0)


def get(bmc, path: str, status: int = 200):
    _, s, url = bmc
    r = s.get(url + path, timeout=5)
    assert r.status_code == status, (path, r.status_code, r.text[:300])
    return r.json()


@pytest.mark.parametrize(
    "sample,path",
    [
        ("root.json", "/redfish/v1"),
        ("manager_collection.json", "/redfish/v1/Managers"),
        ("job_service.json", "/redfish/v1/Dell/Managers/iDRAC.Embedded.1/DellJobService"),
        ("lifecycle_service.json", "/redfish/v1/Dell/Managers/iDRAC.Embedded.1/DellLCService"),
        ("idrac_card_service.json", "/redfish/v1/Dell/Managers/iDRAC.Embedded.1/DelliDRACCardService"),
    ],
)
def test_static_resources_match_the_samples(bmc, sample: str, path: str) -> None:
    assert compare(load(sample), get(bmc, path)) == []


def test_manager_and_system_match_the_samples(bmc) -> None:
    lab = bmc[0]
    mgr = get(bmc, "/redfish/v1/Managers/iDRAC.Embedded.1")
    sample = load("manager.json")
    # the sample's Oem.Dell.DelliDRACCard lists many informational fields; compare the rest
    sample["Oem"]["Dell"]["DelliDRACCard"] = {
        k: v
        for k, v in sample["Oem"]["Dell"]["DelliDRACCard"].items()
        if k in mgr["Oem"]["Dell"]["DelliDRACCard"]
    }
    if lab.bmcs[0].generation == 10:
        # iDRAC10 renames the SCP actions (OemManager.*, not EID_674_Manager.*)
        oem = sample["Actions"]["Oem"]
        for k in list(oem):
            if k.startswith("OemManager.v1_0_0#") and not k.endswith("Preview"):
                oem["#" + k.split("#", 1)[1]] = oem.pop(k)
    assert compare(sample, mgr) == []
    system = get(bmc, "/redfish/v1/Systems/System.Embedded.1")
    assert compare(load("system.json"), system) == []
    dell = system["Oem"]["Dell"]["DellSystem"]
    assert len(dell) >= 35 and dell["SystemID"] == int(lab.bmcs[0].system_id, 16)


def test_jobs_tasks_errors_and_profiles_match_the_samples(bmc) -> None:
    lab, s, url = bmc
    mgr = get(bmc, "/redfish/v1/Managers/iDRAC.Embedded.1")
    export = next(
        v["target"] for k, v in mgr["Actions"]["Oem"].items() if k.endswith("ExportSystemConfiguration")
    )
    imp = next(
        v["target"] for k, v in mgr["Actions"]["Oem"].items() if k.endswith("ImportSystemConfiguration")
    )
    lab.bmcs[0].timing.scp_export = 1e6
    r = s.post(url + export, json={"ExportFormat": "JSON", "ShareParameters": {"Target": "ALL"}}, timeout=5)
    assert r.status_code == 202
    task_path = r.headers["Location"]
    jid = task_path.rsplit("/", 1)[-1]
    running = s.get(url + task_path, timeout=5)
    assert running.status_code == 202  # still running: 202 with the task document
    assert compare(load("task.json"), running.json()) == []
    job = get(bmc, f"/redfish/v1/Managers/iDRAC.Embedded.1/Jobs/{jid}")
    assert compare(load("job.json"), job) == []
    assert "." not in job["MessageId"]  # jobs carry bare ids (the task carries them prefixed)
    col = get(bmc, "/redfish/v1/Managers/iDRAC.Embedded.1/Jobs?$expand=.($levels=1)")
    assert compare(load("job_collection_expanded.json"), col) == []
    # the profile of a finished export
    lab.bmcs[0].delete_job_queue("JID_CLEARALL_FORCE")
    lab.bmcs[0].lc_ready_at = 0
    lab.bmcs[0].timing.scp_export = 0
    r = s.post(url + export, json={"ExportFormat": "JSON", "ShareParameters": {"Target": "ALL"}}, timeout=5)
    task_path = r.headers["Location"]
    import time

    deadline = time.time() + 5
    while (done := s.get(url + task_path, timeout=5)).status_code == 202 and time.time() < deadline:
        time.sleep(0.05)
    profile = done.json()
    assert compare(load("export_configuration_nic_bios.json"), profile) == []
    flags = {
        a["Set On Import"] for c in profile["SystemConfiguration"]["Components"] for a in c["Attributes"]
    }
    assert flags == {"True", "False"}  # read-only attributes are exported but not set on import
    # LC068 / RAC0679 error bodies, MessageArgs typed as Dell writes them
    lab.bmcs[0].inject(config_error="LC068")
    err = s.post(url + imp, json={"ImportBuffer": "{}", "ShutdownType": "NoReboot"}, timeout=5)
    assert err.status_code == 400
    assert compare(load("error_pending_job.json"), err.json()) == []
    assert err.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith("LC068")
    lab.bmcs[0].inject(config_error="RAC0679")
    err = s.post(
        url + "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
        json={"ImageURI": "http://127.0.0.1:9/x.exe", "TransferProtocol": "HTTP"},
        timeout=5,
    )
    assert compare(load("error_running_job.json"), err.json()) == []
    assert err.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith("RAC0679")
    lab.bmcs[0].clear_faults()


def test_sushy_dell_extension_reads_the_simulator(bmc) -> None:
    _, _, url = bmc
    root = sushy.Sushy(url, auth=sushy.auth.SessionAuth("root", "calvin"))
    try:
        ext = root.get_manager("/redfish/v1/Managers/iDRAC.Embedded.1").get_oem_extension("Dell")
        assert ext.lifecycle_service.is_idrac_ready() is True
        assert {str(v.value) for v in ext.get_allowed_export_target_values()} >= {"ALL", "BIOS", "IDRAC"}
        assert ext.job_collection.get_unfinished_jobs() == []
        assert ext.import_system_configuration_uri.endswith("ImportSystemConfiguration")
    finally:
        root._auth.close()


def test_command_line_lab_and_control_api(tmp_path) -> None:
    """`python -m devstack.lab.idrac` in another process, driven through `/_lab/`."""
    import socket
    import subprocess
    import sys

    def start() -> tuple[int, subprocess.Popen, dict]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.lab.idrac",
                "--count",
                "3",
                "--base-port",
                str(base),
                "--time-scale",
                "100",
                "--personality",
                "mixed",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        return base, proc, json.loads(proc.stdout.readline() or "{}")

    # the ports after a free one may be taken meanwhile (other tests' servers come and go):
    # the lab says so and exits, and another range is tried
    for _ in range(5):
        base, proc, ready = start()
        if ready.get("ready"):
            break
        proc.wait(10)
    try:
        assert ready.get("ready"), f"5 port ranges taken, the last {base}..: {ready}"
        assert ready["ports"] == [base, base + 2]
        last = f"http://127.0.0.1:{base + 2}"
        assert (
            requests.get(last + "/redfish/v1/Systems", auth=("root", "calvin"), timeout=5).status_code == 200
        )
        assert (
            requests.get(f"http://127.0.0.1:{base + 1}/_lab/state", timeout=5).json()["personality"]
            == "idrac10"
        )
        r = requests.post(last + "/_lab/faults", json={"server_errors": 1}, timeout=5)
        assert r.status_code == 200
        assert (
            requests.get(last + "/redfish/v1/Systems", auth=("root", "calvin"), timeout=5).status_code == 500
        )
        assert requests.post(last + "/_lab/faults", json={"bogus": 1}, timeout=5).status_code == 400
        requests.post(last + "/_lab/exhaust-sessions", timeout=5)
        login = requests.post(
            last + "/redfish/v1/SessionService/Sessions",
            json={"UserName": "root", "Password": "calvin"},
            timeout=5,
        )
        assert login.status_code == 503
        assert login.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "IDRAC.2.8.RAC0218"
        fleet = requests.get(f"http://127.0.0.1:{base}/_lab/fleet", timeout=5).json()
        assert fleet["count"] == 3 and fleet["sessions"] == 0
    finally:
        proc.terminate()
        proc.wait(10)
