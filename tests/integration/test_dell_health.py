"""Pre-flight gates of a Dell host (executor/targets/dell_health.py) against the simulated
iDRAC, each failing through the lab's fault injection: Lifecycle Controller busy, a job
running, jobs scheduled or failed, the iDRAC unreachable or refusing the credentials, and the
catalog unreachable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.lab.idrac.health import add_event, set_health
from devstack.lab.idrac.testing import running_lab
from devstack.policies import _load_yaml
from executor.handlers.rolling_update import RollingClusterUpdateHandler
from executor.targets.dell_health import (
    BLOCK,
    GATES,
    OK,
    WARN,
    apply_policy,
    catalog_gate,
    gate_policy,
    idrac_gates,
    readiness_score,
    worst,
)
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.redfish import RedfishClient

SCALE = 400.0
CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "catalog" / "Catalog.xml"
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=5.0, retries=0)


@pytest.fixture
def lab():
    with running_lab(1, SCALE) as lab:
        yield lab


def gates(lab, password: str = "calvin"):
    client = RedfishClient(Endpoint(lab.url(0), "root", password, allow_plain_http=True), T)
    got, opened = idrac_gates(client.__enter__, lc_wait=0.3)
    if opened is not None:
        opened.__exit__(None, None, None)
    return {g.name: g for g in got}, worst(got)


def test_a_healthy_idrac_passes_every_gate(lab) -> None:
    g, verdict = gates(lab)
    assert verdict == OK and set(g) == {"reachability", "lifecycle", "job_queue"}


def test_lifecycle_controller_busy_blocks(lab) -> None:
    lab.bmcs[0].inject(lc_stuck_busy=True)
    g, verdict = gates(lab)
    assert verdict == BLOCK and g["lifecycle"].status == BLOCK and "InUse" in g["lifecycle"].reason


def test_a_running_job_blocks_scheduled_and_failed_jobs_warn(lab) -> None:
    bmc = lab.bmcs[0]
    [sched] = bmc.add_stale_jobs(1, "Scheduled")
    [failed] = bmc.add_stale_jobs(1, "Failed", "Unable to apply the BIOS settings.")
    g, verdict = gates(lab)
    assert verdict == WARN and g["job_queue"].status == WARN
    assert sched in g["job_queue"].reason and "Unable to apply the BIOS settings." in g["job_queue"].reason
    [running] = bmc.add_stale_jobs(1, "Running")
    g, verdict = gates(lab)
    assert verdict == BLOCK and g["job_queue"].status == BLOCK and running in g["job_queue"].reason


def test_unreachable_or_wrong_credentials_block(lab) -> None:
    g, verdict = gates(lab, password="wrong")
    assert (
        verdict == BLOCK and g["reachability"].status == BLOCK and "credentials" in g["reachability"].reason
    )
    lab.bmcs[0].inject(unreachable=True)
    g, verdict = gates(lab)
    assert verdict == BLOCK and list(g) == ["reachability"] and "unreachable" in g["reachability"].reason


def test_catalog_unreachable_blocks() -> None:
    gate, cat = catalog_gate(lambda: RollingClusterUpdateHandler._catalog("http://127.0.0.1:9/Catalog.xml"))
    assert cat is None and gate.status == BLOCK and "cannot fetch the firmware catalog" in gate.reason


# ---- hardware gates (psu, thermal, storage, memory, events), each failed through the lab -----------
def hw(lab, days: float = 7):
    client = RedfishClient(Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True), T)
    got, opened = idrac_gates(client.__enter__, lc_wait=0.3, event_days=days)
    opened.__exit__(None, None, None)
    return {g.name: g for g in got}, got


def test_a_healthy_server_passes_every_hardware_gate(lab) -> None:
    g, got = hw(lab)
    assert [x.name for x in got] == [n for n in GATES if n in g]
    assert {n: x.status for n, x in g.items()} == dict.fromkeys(g, OK)
    assert set(g) >= {"psu", "thermal", "storage", "memory", "events"} and readiness_score(got) == 100
    assert "1 virtual disk(s) and 2 drive(s) OK" in g["storage"].reason


@pytest.mark.parametrize(
    ("gate", "fault", "words"),
    [
        ("psu", {"psu_failed": 1}, "PS2 Status Critical; PSU Redundancy lost"),
        ("thermal", {"inlet_c": 48.0}, "System Board Inlet Temp 48.0 °C (critical at 47 °C)"),
        ("thermal", {"fan_failed": 1}, "System Board Fan1A Critical"),
        ("storage", {"vdisk": "Degraded"}, "virtual disk Disk.Virtual.0:RAID.Integrated.1-1 Degraded"),
        ("storage", {"vdisk": "Rebuilding"}, "Rebuilding (Rebuilding 40%)"),
        ("storage", {"predicted_failures": 1}, "predicts failure"),
        ("memory", {"memory": "Critical"}, "DIMM.Socket.A1 Critical"),
    ],
)
def test_each_hardware_fault_blocks_its_gate_only(lab, gate, fault, words) -> None:
    set_health(lab.bmcs[0], **fault)
    g, got = hw(lab)
    assert g[gate].status == BLOCK and words in g[gate].reason, g[gate]
    assert [x.name for x in got if x.status != OK] == [gate] and readiness_score(got) == 0


def test_warnings_lower_the_readiness_score(lab) -> None:
    set_health(lab.bmcs[0], inlet_c=43.0, memory="Warning")
    g, got = hw(lab)
    assert g["thermal"].status == WARN and g["memory"].status == WARN and "correctable" in g["memory"].reason
    assert worst(got) == WARN and readiness_score(got) == 80


def test_critical_events_block_within_the_window_only(lab) -> None:
    add_event(
        lab.bmcs[0], "Critical", "CPU 1 machine check error detected.", days_ago=12, message_id="CPU0000"
    )
    g, _ = hw(lab, days=7)
    assert g["events"].status == OK  # 12 days ago: outside a 7-day window
    g, _ = hw(lab, days=14)
    assert g["events"].status == BLOCK and "CPU0000 CPU 1 machine check error detected." in g["events"].reason
    add_event(
        lab.bmcs[0],
        "Critical",
        "The power supply redundancy is lost.",
        days_ago=1,
        log="Lclog",
        message_id="PSU0003",
    )
    g, _ = hw(lab, days=7)
    assert g["events"].status == BLOCK and "Lclog" in g["events"].reason and "PSU0003" in g["events"].reason


def test_the_safety_policy_decides_which_gates_block(lab) -> None:
    set_health(lab.bmcs[0], psu_failed=1)
    _, got = hw(lab)
    shipped = gate_policy(load_policy()["job_types"]["rolling_cluster_update"]["gates"])
    assert set(shipped) == set(GATES)  # safety.yaml names every gate
    assert worst(apply_policy(got, shipped)) == BLOCK
    relaxed = apply_policy(got, {**shipped, "psu": "warn"})
    psu = next(x for x in relaxed if x.name == "psu")
    assert worst(relaxed) == WARN and psu.status == WARN and "warn only: safety policy" in psu.reason
    with pytest.raises(ValueError, match="unknown gate"):
        gate_policy({"psus": "warn"})
    with pytest.raises(ValueError, match="must be block or warn"):
        gate_policy({"psu": "ignore"})


def load_policy():
    return _load_yaml(Path(__file__).resolve().parents[2] / "policies" / "safety.yaml")


def test_catalog_sha256_pin_is_verified() -> None:
    import hashlib

    from executor.targets.catalog import Catalog

    data = CATALOG.read_bytes()
    cat = Catalog.from_bytes(data, "test")
    gate, got = catalog_gate(lambda: (cat, data), sha256=hashlib.sha256(data).hexdigest())
    assert gate.status == OK and "SHA-256 verified" in gate.reason and got is cat
    gate, got = catalog_gate(lambda: (cat, data), sha256="0" * 64)
    assert gate.status == BLOCK and got is None and "is not the pinned" in gate.reason
    gate, _ = catalog_gate(lambda: (cat, data))
    assert gate.status == WARN and "no SHA-256 pin" in gate.reason
