"""Firmware by multipart HTTP push (`MultipartHttpPushUri`) against the simulated iDRAC9 and
iDRAC10: the client prefers it when advertised and streams the package from disk; the lab
takes it as DSP0266 describes and refuses what a real iDRAC refuses (a body that is not
multipart, a missing or malformed part, bad UpdateParameters, a package larger than it
takes), queueing nothing for a refused push."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from devstack.lab.idrac import make_dup
from devstack.lab.idrac.testing import FileServer, running_lab
from executor.targets.catalog import Catalog
from executor.targets.dell import MultipartPackage
from executor.targets.endpoint import Endpoint, Timeouts
from executor.targets.errors import RequestRejected
from executor.targets.redfish import RedfishClient, http_session_of

SCALE = 400.0
T = replace(Timeouts().compressed(SCALE / 4), poll=0.02, retry_delay=0.01, connect=2.0, read=10.0)
CATALOG = Catalog.from_path(Path(__file__).resolve().parent.parent / "fixtures" / "catalog" / "Catalog.xml")
PUSH = "/redfish/v1/UpdateService/MultipartUpload"


def repository() -> dict[str, bytes]:
    return {f"/repo/{p.path}": make_dup(sorted(p.component_ids)[0], p.version) for p in CATALOG.packages}


@pytest.fixture(params=["idrac9", "idrac10"])
def lab(request):
    with running_lab(1, SCALE, personality=request.param) as lab, FileServer(repository()) as files:
        lab.files = files
        lab.repo = files.url("repo")
        yield lab
        assert lab.bmcs[0].own_sessions() == 0, "a Redfish session leaked"


def client(lab) -> RedfishClient:
    return RedfishClient(Endpoint(lab.url(0), "root", "calvin", allow_plain_http=True), T)


def packages(c: RedfishClient, repo: str):
    info = c.system_info()
    report = CATALOG.compliance(model=info.model, system_id=info.system_id, components=c.firmware_inventory())
    return report.update_packages(CATALOG.base_location, repo)


def test_push_is_preferred_when_advertised_and_updates_every_component(lab) -> None:
    bmc = lab.bmcs[0]
    with client(lab) as c:
        assert c.dell.multipart_push_uri() == PUSH
        pkgs = packages(c, lab.repo)
        assert pkgs, "the lab server has firmware older than the catalog"
        report = c.dell.update_firmware(pkgs)
        assert report.ok and report.rebooted, [
            (r.component_id, r.status, r.message) for r in report.components
        ]
        assert {r.status for r in report.components} == {"updated"}
    # every package went by push, none by SimpleUpdate's download
    assert [u["filename"] for u in bmc.uploads] == [p.image_uri.rsplit("/", 1)[-1] for p in bmc_order(pkgs)]
    for u in bmc.uploads:
        data = lab.files.files[
            "/repo/" + next(p.path for p in CATALOG.packages if p.path.endswith(u["filename"]))
        ]
        assert (u["size"], u["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    by_cid = {u["filename"]: u["params"] for u in bmc.uploads}
    for p in pkgs:
        params = by_cid[p.image_uri.rsplit("/", 1)[-1]]
        assert params["@Redfish.OperationApplyTime"] == ("OnReset" if p.reboot_required else "Immediate")
        if bmc.generation == 10:
            # iDRAC10: the device is named in Targets (PLDM devices are updated only so)
            assert params["Targets"] == [
                f"/redfish/v1/UpdateService/FirmwareInventory/Installed-{p.component_id}-{p_before(report, p)}"
            ]
        else:
            assert params["Targets"] == []  # as Dell's iDRAC9 scripts send it


def bmc_order(pkgs):
    return sorted(pkgs, key=lambda p: not p.reboot_required)


def p_before(report, p) -> str:
    return next(r.before for r in report.components if r.component_id == p.component_id)


def test_simple_update_when_no_push_uri_is_advertised(lab) -> None:
    bmc = lab.bmcs[0]
    bmc.multipart_push = False  # iDRAC9 firmware before 4.40
    with client(lab) as c:
        assert c.dell.multipart_push_uri() is None
        report = c.dell.update_firmware(packages(c, lab.repo))
        assert report.ok and {r.status for r in report.components} == {"updated"}
    assert bmc.uploads == []
    assert sum(lab.files.hits.values()) >= len(report.components)  # the iDRAC fetched them itself


def raw_post(c: RedfishClient, body: bytes, content_type: str):
    """The body as it is, past every check of the client, on its own session: the lab's refusals are read."""
    return http_session_of(c.conn).post(
        c.endpoint.url + PUSH, data=body, headers={"Content-Type": content_type}, timeout=10
    )


def form(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_lab_refuses_what_an_idrac_refuses_and_queues_nothing(lab) -> None:
    bmc = lab.bmcs[0]
    dup = make_dup("159", "9.9.9")
    good = json.dumps({"Targets": [], "@Redfish.OperationApplyTime": "OnReset"}).encode()
    cases = {
        "not multipart": ((dup, "application/octet-stream"), 415, "HeaderInvalid"),
        "no UpdateParameters": (form([("UpdateFile", "bios.exe", dup)]), 400, "MissingOrMalformedPart"),
        "no UpdateFile": (form([("UpdateParameters", None, good)]), 400, "MissingOrMalformedPart"),
        "empty UpdateFile": (
            form([("UpdateParameters", None, good), ("UpdateFile", "bios.exe", b"")]),
            400,
            "MissingOrMalformedPart",
        ),
        "truncated body": (
            (
                form([("UpdateParameters", None, good), ("UpdateFile", "b.exe", dup)])[0][:-40],
                "multipart/form-data; boundary=b0undary",
            ),
            400,
            "MissingOrMalformedPart",
        ),
        "parameters not JSON": (
            form([("UpdateParameters", None, b"{Targets: ["), ("UpdateFile", "bios.exe", dup)]),
            400,
            "MalformedJSON",
        ),
        "unknown parameter": (
            form([("UpdateParameters", None, b'{"ForceUpdate": true}'), ("UpdateFile", "bios.exe", dup)]),
            400,
            "ActionParameterUnknown",
        ),
        "bad apply time": (
            form(
                [
                    (
                        "UpdateParameters",
                        None,
                        b'{"@Redfish.OperationApplyTime": "AtMaintenanceWindowStart"}',
                    ),
                    ("UpdateFile", "bios.exe", dup),
                ]
            ),
            400,
            "ActionParameterValueNotInList",
        ),
        "unknown target": (
            form(
                [
                    ("UpdateParameters", None, b'{"Targets": ["/redfish/v1/Systems/System.Embedded.1"]}'),
                    ("UpdateFile", "bios.exe", dup),
                ]
            ),
            400,
            "ActionParameterValueNotInList",
        ),
        "unknown part": (
            form([("UpdateParameters", None, good), ("UpdateFile", "bios.exe", dup), ("Extra", None, b"x")]),
            400,
            "ActionParameterUnknown",
        ),
    }
    with client(lab) as c:
        jobs = len(bmc.jobs)
        for case, ((body, ctype), status, mid) in cases.items():
            r = raw_post(c, body, ctype)
            assert r.status_code == status, (case, r.status_code, r.text)
            ids = [i["MessageId"] for i in r.json()["error"]["@Message.ExtendedInfo"]]
            assert any(i.endswith("." + mid) for i in ids), (case, ids)
        bmc.upload_limit = 1024
        body, ctype = form([("UpdateParameters", None, good), ("UpdateFile", "bios.exe", dup)])
        r = raw_post(c, body, ctype)
        assert r.status_code == 413 and "PayloadTooLarge" in r.text
        assert (len(bmc.jobs), bmc.uploads) == (jobs, [])  # nothing queued for a refused push
        bmc.upload_limit = 2 * 1024**3
        # a package that is not one: accepted, then its job fails as SimpleUpdate's would
        r = raw_post(c, *form([("UpdateParameters", None, good), ("UpdateFile", "x.exe", b"MZ junk")]))
        assert r.status_code == 202 and r.headers["Location"].startswith("/redfish/v1/TaskService/Tasks/JID_")
        job = bmc.jobs[r.headers["Location"].rsplit("/", 1)[-1]]
        assert (job.state, job.message_id) == ("Failed", "RED004")


def test_client_reports_a_refused_push(lab, tmp_path) -> None:
    bmc = lab.bmcs[0]
    bmc.upload_limit = 1024
    with client(lab) as c:
        with pytest.raises(RequestRejected) as err:
            c.dell.stage_package(
                lab.files.url(f"repo/{CATALOG.packages[1].path}"), component_id="159", reboot_required=True
            )
        assert "PayloadTooLarge" in str(err.value) and "calvin" not in str(err.value)
        with pytest.raises(RequestRejected) as err:
            c.dell.stage_package(lab.files.url("repo/missing.exe"), component_id="159")
        assert "HTTP 404" in str(err.value)
    assert bmc.uploads == [] and not any(j.job_type == "FirmwareUpdate" for j in bmc.jobs.values())


def test_push_streams_a_large_package_without_holding_it(lab, tmp_path) -> None:
    """A 48 MiB package goes out and is taken in chunks: neither the client's body nor the
    lab's reader holds it whole (peak traced memory of the push well under its size)."""
    bmc = lab.bmcs[0]
    size = 48 * 1024 * 1024
    pkg = tmp_path / "BIOS_big.EXE"
    with pkg.open("wb") as f:
        f.write(make_dup("159", "9.9.9"))
        f.truncate(size)
    sha = hashlib.sha256()
    with pkg.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    body = MultipartPackage({"Targets": []}, pkg, pkg.name)
    assert len(body) == len(b"".join(body)) > size  # the length sent is the length read
    body.close()
    with client(lab) as c:
        push = c.dell.multipart_push_uri()
        tracemalloc.start()
        try:
            jid = c.dell.push_update(pkg, uri=push, apply_time="OnReset")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert jid.startswith("JID_")
    assert bmc.uploads[-1]["size"] == size and bmc.uploads[-1]["sha256"] == sha.hexdigest()
    assert peak < size // 4, f"peak {peak} bytes while pushing {size}"


def test_dmtf_redfish_utilities_push_is_taken(lab, tmp_path) -> None:
    """The lab judged by a client it did not write: the DMTF's own redfish_utilities
    (behind rf_update.py) pushes a package the way the specification says, and the lab
    queues the update it asks for; then logs out (a 204 on iDRAC10)."""
    import redfish
    from redfish_utilities.update import multipart_push_update, operation_apply_times

    bmc = lab.bmcs[0]
    bios = next(c for c in bmc.components if c.component_id == "159")
    pkg = tmp_path / "BIOS_DMTF.EXE"
    pkg.write_bytes(make_dup("159", "99.0.0"))
    ctx = redfish.redfish_client(base_url=lab.url(0), username="root", password="calvin", timeout=10)
    ctx.login(auth="session")
    try:
        target = f"/redfish/v1/UpdateService/FirmwareInventory/Installed-159-{bios.version}"
        r = multipart_push_update(ctx, str(pkg), targets=[target], apply_time=operation_apply_times.ON_RESET)
        assert r.status == 202, r.text
        jid = r.getheader("Location").rsplit("/", 1)[-1]
    finally:
        ctx.logout()
    assert bmc.uploads[-1]["filename"] == "BIOS_DMTF.EXE" and bmc.uploads[-1]["params"]["Targets"] == [target]
    bmc.tick()
    job = bmc.jobs[jid]
    assert job.component is bios and job.new_version == "99.0.0"
