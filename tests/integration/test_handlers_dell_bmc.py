"""Dell handlers through the real executor and stack against the simulated iDRAC lab, once
per iDRAC generation (iDRAC9 and iDRAC10): power_operation, virtual_media_mount, scp_backup
and firmware_update. For each: success, an idempotent rerun, every injected fault ending in
its specific error on the job, and no Redfish session left behind (the simulator's session
table)."""

from __future__ import annotations

import base64
import json
import time
from xml.etree import ElementTree as ET

import pytest

from supabase import create_client
from tests.integration._handlers_dell import PERSONALITIES, DellEnv


@pytest.fixture(scope="module", params=PERSONALITIES)
def env(stack, request):
    e = DellEnv(stack, personality=request.param)
    try:
        yield e
    finally:
        e.close()


def no_leaks(env: DellEnv, *bmcs) -> None:
    for b in bmcs:
        assert b.own_sessions() == 0, f"BMC {b.index} kept {b.own_sessions()} Redfish session(s)"


def result_of(env: DellEnv, job: dict, sid: str) -> dict:
    return env.tasks(job["id"])[sid]["result"]


# --- power -------------------------------------------------------------------------------------
def test_power_off_on_restart_and_idempotent_rerun(env: DellEnv) -> None:
    b, sid = env.take()
    job = env.run("power_operation", {"server_ids": [sid], "action": "force_off"})
    assert job["status"] == "completed", job["error"]
    assert b.power_state == "Off" and env.server(sid)["power_state"] == "off"
    r = result_of(env, job, sid)
    assert r["changed"] is True and r["state"] == "Off"
    # already off: a success that says nothing was done
    again = env.run("power_operation", {"server_ids": [sid], "action": "graceful_shutdown"})
    assert again["status"] == "completed", again["error"]
    r = result_of(env, again, sid)
    assert r["changed"] is False and "already off" in r["message"]
    on = env.run("power_operation", {"server_ids": [sid], "action": "on"})
    assert on["status"] == "completed" and b.power_state == "On"
    boots = b.boot_count
    restart = env.run("power_operation", {"server_ids": [sid], "action": "force_restart"})
    assert restart["status"] == "completed", restart["error"]
    assert b.boot_count == boots + 1 and result_of(env, restart, sid)["message"] == "restarted; host is On"
    steps = env.steps(restart["id"])
    assert steps["apply_power"]["resumable"] is False  # a restart must never run twice
    assert env.steps(on["id"])["apply_power"]["resumable"] is True
    no_leaks(env, b)


def test_power_faults_end_in_specific_errors(env: DellEnv) -> None:
    cases = {}
    b, sid = env.take()
    b.inject(unreachable=True)
    cases["TargetUnreachable"] = (b, env.create_job("power_operation", {"server_ids": [sid], "action": "on"}))
    b, sid = env.take()
    b.inject(server_errors=-1)
    cases["TargetServerError"] = (
        b,
        env.create_job("power_operation", {"server_ids": [sid], "action": "force_off"}),
    )
    b, sid = env.take()
    b.timing.session_idle = 1e9  # the other tool keeps its sessions busy: they never expire here
    b.exhaust_sessions()
    cases["SessionLimitReached"] = (
        b,
        env.create_job("power_operation", {"server_ids": [sid], "action": "on"}),
    )
    b, sid = env.take()
    b.inject(graceful_ignored=True)
    cases["OperationTimedOut"] = (
        b,
        env.create_job("power_operation", {"server_ids": [sid], "action": "graceful_shutdown"}),
    )
    b, sid = env.take()
    b.password = "changed-by-someone"
    cases["AuthenticationFailed"] = (
        b,
        env.create_job("power_operation", {"server_ids": [sid], "action": "on"}),
    )
    b, sid = env.take()  # plain HTTP is for the loopback lab only: never to a real network address
    env.h.query("update public.servers set idrac_address = 'http://10.0.0.9' where id = %s", sid)
    cases["DellHandlerError"] = (b, env.create_job("power_operation", {"server_ids": [sid], "action": "on"}))
    jobs = env.wait_all([j for _, j in cases.values()])
    for (kind, (bmc, _)), job in zip(cases.items(), jobs, strict=True):
        assert job["status"] == "failed", (kind, job)
        assert job["error"].startswith(kind + ":"), (kind, job["error"])
        assert f"srv{bmc.index:02d}" in job["error"], job["error"]  # names the server
        assert "calvin" not in job["error"]
        no_leaks(env, bmc)
    ignored = jobs[3]
    assert "use force_off / force_restart" in ignored["error"] and "no progress" in ignored["error"]
    assert "RAC0218" in jobs[2]["error"]
    assert "plain HTTP is allowed only to a loopback address" in jobs[5]["error"]


def test_power_several_servers_one_failing_reports_each(env: DellEnv) -> None:
    (b1, s1), (b2, s2), (b3, s3) = env.take(), env.take(), env.take()
    b2.inject(unreachable=True)
    job = env.run("power_operation", {"server_ids": [s1, s2, s3], "action": "force_off"})
    assert job["status"] == "failed"
    assert job["error"].startswith(f"ServersFailed: 1 of 3 server(s) failed; first: srv{b2.index:02d}")
    assert "TargetUnreachable" in job["error"]
    tasks = env.tasks(job["id"])
    assert [tasks[s]["status"] for s in (s1, s2, s3)] == ["completed", "failed", "completed"]
    assert (b1.power_state, b2.power_state, b3.power_state) == ("Off", "On", "Off")  # the others went on
    no_leaks(env, b1, b3)


# --- virtual media ------------------------------------------------------------------------------
def test_virtual_media_mount_boot_once_rerun_and_eject(env: DellEnv) -> None:
    b, sid = env.take()
    url = env.files.url("iso/installer.iso")
    boots = b.boot_count
    job = env.run("virtual_media_mount", {"server_ids": [sid], "image_url": url, "boot_once": True})
    assert job["status"] == "completed", job["error"]
    assert b.virtual_media[env.cd]["Image"] == url and b.virtual_media[env.cd]["Inserted"]
    assert (
        b.boot_count == boots + 1
    )  # restarted into the image; the one-time override is consumed by the boot
    assert b.boot_override["BootSourceOverrideEnabled"] == "Disabled"
    assert b.boot_log[-1] == "VirtualCD"  # the host booted the image, not the physical drive
    assert env.steps(job["id"])["boot_once"]["resumable"] is False
    again = env.run("virtual_media_mount", {"server_ids": [sid], "image_url": url})
    assert again["status"] == "completed"
    assert result_of(env, again, sid)["media"]["changed"] is False
    # eject refuses someone else's image, then ejects ours, then has nothing to do
    other = env.files.url("iso/other.iso")
    refused = env.run("virtual_media_mount", {"server_ids": [sid], "image_url": other, "eject": True})
    assert refused["status"] == "failed" and refused["error"].startswith("RequestRejected:")
    assert "left mounted" in refused["error"] and b.virtual_media[env.cd]["Inserted"]
    out = env.run("virtual_media_mount", {"server_ids": [sid], "image_url": url, "eject": True})
    assert out["status"] == "completed" and not b.virtual_media[env.cd]["Inserted"]
    out2 = env.run("virtual_media_mount", {"server_ids": [sid], "image_url": url, "eject": True})
    assert out2["status"] == "completed" and result_of(env, out2, sid)["media"]["changed"] is False
    no_leaks(env, b)


def test_virtual_media_faults(env: DellEnv) -> None:
    url = env.files.url("iso/installer.iso")
    b1, s1 = env.take()
    b1.inject(lc_stuck_busy=True)
    j1 = env.create_job("virtual_media_mount", {"server_ids": [s1], "image_url": url})
    b2, s2 = env.take()
    j2 = env.create_job(
        "virtual_media_mount", {"server_ids": [s2], "image_url": env.files.url("iso/missing.iso")}
    )
    b3, s3 = env.take()
    j3 = env.create_job(
        "virtual_media_mount", {"server_ids": [s3], "image_url": url, "write_protected": False}
    )
    r1, r2, r3 = env.wait_all([j1, j2, j3])
    assert r1["status"] == "failed" and r1["error"].startswith("LifecycleControllerNotReady:"), r1["error"]
    assert (
        r2["status"] == "failed" and r2["error"].startswith("RequestRejected:") and "RAC0720" in r2["error"]
    )
    assert r3["status"] == "failed" and "write_protected=false is not supported" in r3["error"]
    assert not b2.virtual_media[env.cd]["Inserted"] and not b3.virtual_media[env.cd]["Inserted"]
    no_leaks(env, b1, b2, b3)


# --- SCP backup ---------------------------------------------------------------------------------
def test_scp_backup_stored_retrievable_and_diffed(env: DellEnv, stack) -> None:
    b, sid = env.take()
    job = env.run("scp_backup", {"server_ids": [sid]})
    assert job["status"] == "completed", job["error"]
    first = result_of(env, job, sid)
    assert first["diff"] is None and first["format"] == "XML"
    arts = env.artifacts(sid)
    assert len(arts) == 1 and str(arts[0]["id"]) == first["artifact_id"]
    assert arts[0]["sha256"] == first["sha256"] and arts[0]["size_bytes"] == first["size_bytes"]
    root = ET.fromstring(bytes(arts[0]["content"]))
    assert root.get("ServiceTag") == b.service_tag
    assert {c.get("FQDD") for c in root.iter("Component")} == {"BIOS.Setup.1-1", "iDRAC.Embedded.1"}
    # a configuration change between two backups shows up in the second one's diff
    b.attributes["BIOS.Setup.1-1"]["SysProfile"] = "PerfPerWattOptimizedOs"
    second = env.run("scp_backup", {"server_ids": [sid], "export_format": "JSON"})
    assert second["status"] == "completed", second["error"]
    d = result_of(env, second, sid)
    assert d["previous_artifact_id"] == first["artifact_id"] and d["content_type"] == "application/json"
    assert d["diff"]["changes"] == [
        {
            "change": "changed",
            "fqdd": "BIOS.Setup.1-1",
            "name": "SysProfile",
            "old": "PerfOptimized",
            "new": "PerfPerWattOptimizedOs",
        }
    ]
    # an unchanged configuration: a new artifact (new timestamp), an empty diff
    third = env.run("scp_backup", {"server_ids": [sid]})
    assert result_of(env, third, sid)["diff"]["unchanged"] is True and len(env.artifacts(sid)) == 3
    # retrievable through REST by an operator (access.yaml: artifacts select for operators)
    from devstack.cli import add_user

    email = f"op-{env.h.site_name}@example.test"
    add_user(stack, email, "operator", "dell-test-pw-1")
    op = create_client(env.h.env["SUPABASE_URL"], env.h.env["SUPABASE_ANON_KEY"])
    op.auth.sign_in_with_password({"email": email, "password": "dell-test-pw-1"})
    rows = (
        op.table("artifacts").select("id,sha256,size_bytes,content").eq("id", d["artifact_id"]).execute().data
    )
    assert len(rows) == 1
    raw = rows[0]["content"]
    content = bytes.fromhex(raw[2:]) if raw.startswith("\\x") else base64.b64decode(raw)
    assert json.loads(content)["SystemConfiguration"]["ServiceTag"] == b.service_tag
    assert rows[0]["sha256"] == d["sha256"]
    no_leaks(env, b)


def test_scp_backup_faults(env: DellEnv) -> None:
    cases = {
        "LifecycleControllerNotReady": {"lc_stuck_busy": True},
        "JobFailed": {"job_outcome": "fail"},
        "JobStuck": {"job_outcome": "stuck"},
        "PendingConfiguration": {"config_error": "LC068"},
        "JobAlreadyRunning": {"config_error": "RAC0679"},
        "TargetUnreachable": {"unreachable": True},
    }
    started = {}
    for kind, fault in cases.items():
        b, sid = env.take()
        b.inject(**fault)
        started[kind] = (b, sid, env.create_job("scp_backup", {"server_ids": [sid]}))
    jobs = env.wait_all([j for _, _, j in started.values()])
    for (kind, (b, sid, _)), job in zip(started.items(), jobs, strict=True):
        assert job["status"] == "failed", (kind, job)
        assert job["error"].startswith(kind + ":"), (kind, job["error"])
        assert env.artifacts(sid) == []  # nothing stored for a failed export
        no_leaks(env, b)
    assert "LC068" in jobs[3]["error"] and "RAC0679" in jobs[4]["error"]


# --- firmware -------------------------------------------------------------------------------------
def fw(env: DellEnv, sid: str, catalog: str = "repo/Catalog.xml", **kw) -> dict:
    return {"server_ids": [sid], "firmware": {"catalog_url": env.files.url(catalog)}, **kw}


def test_firmware_dry_run_update_with_backup_one_reboot_and_rerun(env: DellEnv) -> None:
    b, sid = env.take(env.model, old=True)
    win = env.window()
    dry = env.run("firmware_update", fw(env, sid, dry_run=True), maintenance_window_id=win)
    assert dry["status"] == "completed", dry["error"]
    rec = dry["result"]["checkpoint"]["servers"][sid]
    want = env.fw
    assert [
        (x["component_id"], x["before"], x["target"], x["criticality"], x["reboot_required"])
        for x in rec["components"]
    ] == [
        ("159", *want["159"], "Urgent", True),
        ("104298", *want["104298"], "Optional", True),
        ("105848", *want["105848"], "Recommended", True),
        ("25227", *want["25227"], "Recommended", False),
    ]
    assert (
        b.components[0].version == want["159"][0] and env.artifacts(sid) == []
    )  # the dry run changed nothing
    assert env.steps(dry["id"])["stage"]["status"] == "completed"  # ran as a no-op
    boots = b.boot_count
    job = env.run("firmware_update", fw(env, sid), maintenance_window_id=win, timeout=90)
    assert job["status"] == "completed", job["error"]
    assert b.boot_count == boots + 1  # every staged package applied by one reboot
    comps = {
        x["component_id"]: (x["before"], x["after"], x["status"])
        for x in job["result"]["checkpoint"]["servers"][sid]["components"]
    }
    assert comps == {cid: (*want[cid], "updated") for cid in want}
    # every package pushed to the MultipartHttpPushUri both iDRACs advertise, and iDRAC10
    # told which device each is for (PLDM devices are updated only when named in Targets)
    comps_rec = job["result"]["checkpoint"]["servers"][sid]["components"]
    assert {x["transfer"] for x in comps_rec} == {"multipart"}
    assert len(b.uploads) == 4
    if env.personality == "idrac10":
        assert all(len(u["params"]["Targets"]) == 1 for u in b.uploads)
    # invariant 4: a fresh SCP backup was stored before the first flash
    steps = env.steps(job["id"])
    arts = env.artifacts(sid)
    assert len(arts) == 1 and arts[0]["job_id"] == job["id"]
    assert arts[0]["created_at"] < steps["stage"]["started_at"]
    assert {k: s["resumable"] for k, s in steps.items()} == {
        "compliance": True,
        "scp_backup": True,
        "prepare_queue": True,
        "stage": False,
        "reboot": False,
        "apply": True,
        "verify": True,
        "drop_staged": True,
    }
    assert env.firmware(sid)["159"] == want["159"][1] and env.server(sid)["bios_version"] == want["159"][1]
    # idempotent rerun: nothing to do is a success; no job, no reboot, no new backup
    jobs, boots = len(b.jobs), b.boot_count
    again = env.run("firmware_update", fw(env, sid), maintenance_window_id=win)
    assert again["status"] == "completed", again["error"]
    assert again["result"]["checkpoint"]["servers"][sid]["nothing_to_do"] is True
    assert (len(b.jobs), b.boot_count, len(env.artifacts(sid))) == (jobs, boots, 1)
    no_leaks(env, b)


def test_firmware_one_failing_component_leaves_per_component_result(env: DellEnv) -> None:
    b, sid = env.take(env.model, old=True)
    env.fake_backup(sid)
    job = env.run(
        "firmware_update",
        fw(env, sid, "repo/gz/Catalog.xml.gz"),
        maintenance_window_id=env.window(),
        timeout=90,
    )
    assert job["status"] == "failed"
    assert job["error"].startswith("JobFailed:") and "1 of 4 component(s) failed" in job["error"]
    assert "Broadcom" in job["error"] or "Ethernet" in job["error"]
    comps = {x["component_id"]: x for x in job["result"]["checkpoint"]["servers"][sid]["components"]}
    assert {k: x["status"] for k, x in comps.items()} == {
        "159": "updated",
        "25227": "updated",
        "104298": "updated",
        "105848": "failed",
    }
    assert comps["105848"]["after"] == env.fw["105848"][0] and comps["105848"]["job_state"] == "Failed"
    task = env.tasks(job["id"])[sid]
    assert task["status"] == "failed"
    assert {x["component_id"]: x["status"] for x in task["result"]["components"]}["105848"] == "failed"
    assert len(env.artifacts(sid)) == 1  # the fresh backup was used, not retaken
    no_leaks(env, b)


def test_firmware_faults(env: DellEnv) -> None:
    win = env.window()
    started = {}

    def start(kind: str, setup, params=None) -> None:
        b, sid = env.take(env.model, old=True)
        env.fake_backup(sid)
        setup(b)
        started[kind] = (
            b,
            sid,
            env.create_job(
                "firmware_update", params(sid) if params else fw(env, sid), maintenance_window_id=win
            ),
        )

    start("FirmwareVerificationFailed", lambda b: b.inject(wrong_firmware_version=True))
    start("JobStuck", lambda b: b.inject(job_outcome="stuck"))
    start("PendingConfiguration", lambda b: b.inject(config_error="LC068"))
    start("LifecycleControllerNotReady", lambda b: b.inject(lc_stuck_busy=True))
    start("CatalogError", lambda b: None, lambda sid: fw(env, sid, "repo/missing/Catalog.xml"))
    start("OperationTimedOut", lambda b: b.inject(graceful_ignored=True))  # the reboot never happens
    jobs = env.wait_all([j for _, _, j in started.values()], timeout=120)
    for (kind, (b, _sid, _)), job in zip(started.items(), jobs, strict=True):
        assert job["status"] == "failed", (kind, job)
        assert job["error"].startswith(kind + ":"), (kind, job["error"])
        no_leaks(env, b)
    assert "still {} (wanted {})".format(*env.fw["159"]) in jobs[0]["error"]
    assert "LC068" in jobs[2]["error"] and "HTTP 404" in jobs[4]["error"]
    # the reboot failed: the staged jobs were dropped, not left to fire at a later reboot
    b, sid, job_id = started["OperationTimedOut"]
    assert [j for j in b.jobs.values() if j.job_type == "FirmwareUpdate" and j.state == "Scheduled"] == []
    drop = env.steps(job_id)["drop_staged"]
    assert (
        drop["status"] == "completed"
        and len(drop["details"]["result"]["dropped"][f"srv{b.index:02d}-{env.h.site_name}"]) == 3
    )
    assert b.components[1].version == env.fw["25227"][1]  # iDRAC firmware applies at once, without the reboot


def test_firmware_clears_a_wedged_queue_with_force_then_updates(env: DellEnv) -> None:
    b, sid = env.take(env.model, old=True)
    env.fake_backup(sid)
    stale = b.add_stale_jobs(2)
    b.inject(queue_stuck=True)  # JID_CLEARALL leaves them: escalate to JID_CLEARALL_FORCE
    job = env.run(
        "firmware_update",
        {
            **fw(env, sid),
            "firmware": {"catalog_url": env.files.url("repo/Catalog.xml"), "components": ["BIOS"]},
        },
        maintenance_window_id=env.window(),
        timeout=90,
    )
    assert job["status"] == "completed", job["error"]
    rec = job["result"]["checkpoint"]["servers"][sid]
    assert rec["queue"]["forced"] is True and sorted(rec["queue"]["removed"]) == sorted(stale)
    assert [x["component_id"] for x in rec["components"]] == ["159"]  # the component filter held
    assert b.components[0].version == env.fw["159"][1] and b.components[1].version == env.fw["25227"][0]
    no_leaks(env, b)


def test_executor_log_never_shows_the_bmc_password(env: DellEnv) -> None:
    time.sleep(0.2)
    assert "calvin" not in env.proc.log_text()
