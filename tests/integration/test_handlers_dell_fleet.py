"""Fleet-wide Dell jobs through the real executor and stack: ``inventory_refresh`` over many
simulated BMCs with bounded concurrency, and ``firmware_compliance`` against the
multi-model catalog fixture (via the iDRACs) and against the simulated OpenManage
Enterprise. Both feed ``servers`` and ``server_firmware``; no session is left behind."""

from __future__ import annotations

import json

import pytest

from devstack.lab.ome import OMESim
from tests.integration._handlers_dell import CATALOG, PERSONALITIES, DellEnv, run_in


@pytest.fixture(scope="module", params=PERSONALITIES)
def env(stack, request):
    e = DellEnv(stack, bmcs=24, personality=request.param)
    try:
        yield e
    finally:
        e.close()


def sim_packages() -> list[dict]:
    return [
        {
            "component_id": cid,
            "version": p.version,
            "name": p.name,
            "criticality": p.criticality,
            "reboot_required": p.reboot_required,
            "system_ids": sorted(p.system_ids),
            "path": p.path,
        }
        for p in CATALOG.packages
        for cid in p.component_ids
    ]


def test_inventory_refresh_many_bmcs_bounded_with_failures_recorded(env: DellEnv) -> None:
    taken = [env.take() for _ in range(10)]
    dead, full = taken[3], taken[7]
    dead[0].inject(unreachable=True)
    full[0].timing.session_idle = 1e9  # another tool holds every session (RAC0218) and keeps them busy
    full[0].exhaust_sessions()
    ids = [sid for _, sid in taken]
    job = env.run("inventory_refresh", {"server_ids": ids, "max_parallel": 3})
    assert job["status"] == "completed", job["error"]
    collect = env.steps(job["id"])["collect"]["details"]["result"]
    assert (collect["servers"], collect["ok"], collect["failed"]) == (10, 8, 2)
    assert collect["failed_by_kind"] == {"TargetUnreachable": 1, "SessionLimitReached": 1}
    for b, sid in taken:
        row = env.server(sid)
        if (b, sid) in (dead, full):
            assert row["last_seen_at"] is None and row["details"]["inventory_error"], row
            assert env.firmware(sid) == {}
            continue
        assert (row["model"], row["service_tag"], row["power_state"]) == (b.model, b.service_tag, "on")
        assert row["bios_version"] == b.components[0].version and row["details"]["inventory_error"] is None
        assert row["details"]["inventory_warnings"] == []  # nothing odd about a healthy lab iDRAC
        assert env.firmware(sid) == {c.component_id: c.version for c in b.components}
        assert b.own_sessions() == 0 and b.peak_sessions <= 1
    assert "RAC0218" in env.server(full[1])["details"]["inventory_error"]
    # the run's compliance snapshot (the database's, when the job ended): the 8 servers it
    # read, each with the 4 components it read; the two it could not read have none
    hist = env.h.query(
        "select server_id::text, components from public.firmware_compliance_history where job_id = %s",
        job["id"],
    )
    assert sorted(h["server_id"] for h in hist) == sorted(
        str(sid) for _, sid in taken if (_, sid) not in (dead, full)
    )
    assert {h["components"] for h in hist} == {4}
    # rerun: the same inventory, no duplicate rows; a repaired BMC is picked up
    dead[0].clear_faults()
    again = env.run("inventory_refresh", {"server_ids": ids, "max_parallel": 3})
    assert again["status"] == "completed"
    assert env.firmware(dead[1]) == {c.component_id: c.version for c in dead[0].components}
    assert env.server(dead[1])["details"]["inventory_error"] is None
    assert (
        env.h.one("select count(*) n from public.server_firmware where server_id = any(%s::uuid[])", ids)["n"]
        == 9 * 4
    )
    assert all(b.own_sessions() == 0 for b, _ in taken)


def test_inventory_refresh_fails_when_no_bmc_answers(env: DellEnv) -> None:
    b, sid = env.take()
    b.inject(server_errors=-1)
    job = env.run("inventory_refresh", {"server_ids": [sid]})
    assert job["status"] == "failed"
    assert job["error"].startswith("ServersFailed: 1 of 1 server(s) failed") and "HTTP 500" in job["error"]
    bad = env.run("inventory_refresh", {"server_ids": [sid], "max_parallel": 0})
    assert bad["status"] == "failed" and "max_parallel" in bad["error"] and env.steps(bad["id"]) == {}


def test_catalog_compliance_across_models(env: DellEnv) -> None:
    if env.personality == "idrac10":
        return compliance_17g(env)
    servers = {m: env.take(f"PowerEdge {m}") for m in ("R640", "R740", "R650", "R750")}
    ids = [sid for _, sid in servers.values()]
    job = env.run(
        "firmware_compliance", {"catalog_url": env.files.url("repo/gz/Catalog.xml.gz"), "server_ids": ids}
    )
    assert job["status"] == "completed", job["error"]
    recs = job["result"]["checkpoint"]["servers"]
    rows = {m: {c["component_id"]: c for c in recs[sid]["components"]} for m, (_, sid) in servers.items()}
    r640 = rows["R640"]  # old firmware
    assert {k: (c["status"], c["target"]) for k, c in r640.items()} == {
        "159": ("update", "2.17.1"),
        "25227": ("update", "6.10.30.00"),
        "104298": ("update", "51.16.0-4076"),
        "105848": ("update", "22.31.6"),
    }
    assert r640["159"]["criticality"] == "Urgent" and r640["159"]["reboot_required"] is True
    assert r640["25227"]["reboot_required"] is False
    assert recs[servers["R740"][1]]["compliant"] is True  # current firmware, shared 14G packages
    r650 = rows["R650"]
    assert r650["159"]["target"] == "1.10.2" and r650["104298"]["status"] == "not_in_catalog"
    r750 = rows["R750"]  # current firmware; listed on one BIOS package and the NIC package only
    assert {k: c["status"] for k, c in r750.items()} == {
        "159": "current",
        "25227": "not_in_catalog",
        "104298": "not_in_catalog",
        "105848": "current",
    }
    for m, (b, sid) in servers.items():
        row = env.server(sid)
        assert row["details"]["firmware_compliance"]["status"] == (
            "compliant" if m in ("R740", "R750") else "updates_available"
        )
        assert env.firmware(sid) == {c.component_id: c.version for c in b.components}
        assert b.own_sessions() == 0
    art = env.h.one(
        "select content_type, content from public.artifacts where id = %s",
        job["result"]["checkpoint"]["report_artifact_id"],
    )
    assert art["content_type"] == "application/json"
    assert json.loads(bytes(art["content"]))["servers"][servers["R650"][1]]["model"] == "PowerEdge R650"


def compliance_17g(env: DellEnv) -> None:
    """17G servers with iDRAC10: an R670 with old firmware gets the 17G BIOS and iDRAC10
    packages and the shared PERC and NIC ones; an R770 with current firmware is compliant."""
    servers = {"R670": env.take("PowerEdge R670", old=True), "R770": env.take("PowerEdge R770", old=False)}
    ids = [sid for _, sid in servers.values()]
    job = env.run(
        "firmware_compliance", {"catalog_url": env.files.url("repo/gz/Catalog.xml.gz"), "server_ids": ids}
    )
    assert job["status"] == "completed", job["error"]
    recs = job["result"]["checkpoint"]["servers"]
    r670 = {c["component_id"]: c for c in recs[servers["R670"][1]]["components"]}
    assert {k: (c["status"], c["current"], c["target"]) for k, c in r670.items()} == {
        cid: ("update", old, new) for cid, (old, new) in env.fw.items()
    }
    assert r670["159"]["criticality"] == "Urgent" and r670["25227"]["reboot_required"] is False
    assert recs[servers["R770"][1]]["compliant"] is True
    for m, (b, sid) in servers.items():
        row = env.server(sid)
        assert row["details"]["firmware_compliance"]["status"] == (
            "compliant" if m == "R770" else "updates_available"
        )
        assert env.firmware(sid) == {c.component_id: c.version for c in b.components}
        assert b.own_sessions() == 0


@pytest.fixture
def ome(env: DellEnv):
    devices = OMESim.lab_devices(5)
    for d in devices:
        d.service_tag = f"O{d.service_tag}{env.h.site_name[-4:]}".upper()[:10]
    sim = OMESim(devices=devices, packages=sim_packages(), page_size=2, time_scale=400.0, job_seconds=40.0)
    run_in(env.lt, sim.start())
    cred = env.credential(f"ome-{sim.port}", "ome", "admin", "ome-lab-pw", endpoints=[sim.url])
    inst = env.h.one(
        "insert into public.ome_instances (site_id, name, address, credential_set_id) "
        "values (%s, %s, %s, %s) returning id",
        env.h.site_id,
        f"ome-{sim.port}",
        sim.url,
        cred,
    )["id"]
    sim.instance_id, sim.cred = str(inst), cred
    yield sim
    run_in(env.lt, sim.stop())
    assert sim.own_sessions() == 0, "an OME API session leaked"


def test_ome_inventory_and_compliance_feed_servers(env: DellEnv, ome: OMESim) -> None:
    devices = sorted(ome.devices.values(), key=lambda d: d.id)
    # rackpilot knows three of the five servers OME manages
    sids = {}
    for d in devices[:3]:
        sids[d.id] = str(
            env.h.one(
                "insert into public.servers (site_id, name, idrac_address, service_tag) "
                "values (%s, %s, %s, %s) returning id",
                env.h.site_id,
                f"ome-{d.service_tag}",
                f"10.9.{d.id % 250}.1",
                d.service_tag,
            )["id"]
        )
    job = env.run("firmware_compliance", {"ome_instance_id": ome.instance_id}, creds=[ome.cred])
    assert job["status"] == "completed", job["error"]
    inv = env.steps(job["id"])["ome_inventory"]["details"]["result"]
    assert (inv["devices"], inv["matched"]) == (5, 3) and len(inv["unmatched_service_tags"]) == 2
    for d in devices[:3]:
        row = env.server(sids[d.id])
        assert row["model"] == d.model and row["power_state"] == "on" and row["last_seen_at"] is not None
        assert env.firmware(sids[d.id]) == {c["ComponentId"]: c["Version"] for c in d.components}
        assert d.last_inventory != "2026-01-01 00:00:00.000"  # the OME inventory job ran
        comp = row["details"]["firmware_compliance"]
        ours = CATALOG.compliance(
            model=d.model,
            system_id=d.system_id,
            components=[(c["ComponentId"], c["Name"], c["Version"]) for c in d.components],
        )
        assert comp["updates"] == len(ours.updates) and comp["status"] == (
            "OK"
            if ours.compliant
            else "CRITICAL"
            if any(u.criticality == "Urgent" for u in ours.updates)
            else "WARNING"
        )
    report = json.loads(
        bytes(
            env.h.one(
                "select content from public.artifacts where id = %s",
                job["result"]["checkpoint"]["report_artifact_id"],
            )["content"]
        )
    )
    assert report["baseline"] == "rackpilot-baseline" and len(report["devices"]) == 5
    assert env.h.one("select last_sync_at from public.ome_instances where id = %s", ome.instance_id)[
        "last_sync_at"
    ]
    # rerun: same answer
    again = env.run("firmware_compliance", {"ome_instance_id": ome.instance_id}, creds=[ome.cred])
    assert again["status"] == "completed"
    assert ome.sessions_created == ome.sessions_deleted


def test_ome_faults(env: DellEnv, ome: OMESim) -> None:
    ome.inject(job_outcome="fail")
    failed = env.run("firmware_compliance", {"ome_instance_id": ome.instance_id}, creds=[ome.cred])
    assert failed["status"] == "failed" and failed["error"].startswith("JobFailed:"), failed["error"]
    assert "refresh inventory" in failed["error"]
    ome.inject(job_outcome="stuck")
    stuck = env.run("firmware_compliance", {"ome_instance_id": ome.instance_id}, creds=[ome.cred])
    assert stuck["status"] == "failed" and stuck["error"].startswith("JobStuck:"), stuck["error"]
    ome.inject(job_outcome="", unreachable=True)
    down = env.run("firmware_compliance", {"ome_instance_id": ome.instance_id}, creds=[ome.cred])
    assert down["status"] == "failed" and down["error"].startswith("TargetUnreachable:"), down["error"]
    ome.inject(unreachable=False)
    both = env.run(
        "firmware_compliance",
        {"ome_instance_id": ome.instance_id, "catalog_url": env.files.url("repo/Catalog.xml")},
        creds=[ome.cred],
    )
    assert both["status"] == "failed" and "exactly one source" in both["error"]


def test_inventory_refresh_never_copies_a_service_tag_another_server_holds(env: DellEnv) -> None:
    b, sid = env.take()
    dup = env.h.one(
        "insert into public.servers (site_id, name, idrac_address, service_tag) values (%s, %s, %s, %s) "
        "returning id",
        env.h.site_id,
        f"dup-{b.index}",
        "10.99.0.1",
        b.service_tag,
    )["id"]
    job = env.run("inventory_refresh", {"server_ids": [sid]})
    assert job["status"] == "completed", job["error"]  # one duplicate does not refuse the batch
    row = env.server(sid)
    assert row["service_tag"] is None and row["details"]["service_tag_conflict"] == str(dup)
    assert row["model"] == b.model and len(env.firmware(sid)) == 4


def test_inventory_refresh_stores_what_it_found_odd_on_the_server(env: DellEnv) -> None:
    """A firmware member the BMC links but does not serve: the rest of the inventory is
    stored, the server's details carry the warning (the console shows it with the server),
    the job's result lists it; a clean read clears it again."""
    (b, sid), (clean, csid) = env.take(), env.take()
    nic = next(c for c in b.components if c.component_id == "105848")
    member = f"/redfish/v1/UpdateService/FirmwareInventory/Installed-{nic.component_id}-{nic.version}"
    b.inject(broken_paths=(member,))
    job = env.run("inventory_refresh", {"server_ids": [sid, csid]})
    assert job["status"] == "completed", job["error"]
    row = env.server(sid)
    assert row["details"]["inventory_error"] is None and row["last_seen_at"] is not None
    [warning] = row["details"]["inventory_warnings"]
    assert warning.startswith(f"firmware inventory member {member}:") and "404" in warning
    assert env.firmware(sid) == {c.component_id: c.version for c in b.components if c is not nic}
    assert env.server(csid)["details"]["inventory_warnings"] == []
    result = env.steps(job["id"])["collect"]["details"]["result"]
    assert result["warnings"] == {row["name"]: [warning]}
    b.clear_faults()
    again = env.run("inventory_refresh", {"server_ids": [sid]})
    assert again["status"] == "completed"
    assert env.server(sid)["details"]["inventory_warnings"] == []
    assert b.own_sessions() == 0 and clean.own_sessions() == 0
