"""The ESXi SSH test endpoint (real OpenSSH sshd on loopback, asyncssh as the client):
the esxcli upgrade flow, standalone and kept in step with the simulated vCenter."""

from __future__ import annotations

import asyncio
import time

import asyncssh
import pytest

from devstack.lab.esxi_ssh import EsxiSshLab
from devstack.lab.vcenter import VcsimLab
from executor.targets.endpoint import Endpoint
from executor.targets.errors import TargetUnreachable, TLSConfigurationError
from executor.targets.esxcli import EsxcliError, EsxiShell, EsxiVersion
from executor.targets.vsphere import VSphereClient, VSphereTimeouts

DEPOT = "https://depot.lab.local/esxi8/index.xml"
TARGET = "ESXi-8.0U2-22380479-standard"
DEPOTS = {DEPOT: {TARGET: {"version": "8.0.2", "build": "22380479"}}}


async def run(lab: EsxiSshLab, host: str, command: str) -> asyncssh.SSHCompletedProcess:
    async with asyncssh.connect(
        "127.0.0.1",
        lab.ports[host],
        username=lab.username,
        client_keys=[str(lab.client_key)],
        known_hosts=str(lab.known_hosts),
    ) as conn:
        return await conn.run(command, check=False)


async def wait_up(lab: EsxiSshLab, host: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (await run(lab, host, "esxcli system version get")).exit_status == 255:
        assert time.monotonic() < deadline, "host did not come back"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def esxi():
    # The reboot window must outlast one SSH round trip on a busy machine (~0.1 s, more under load).
    with EsxiSshLab(hosts={"esx-a": {}, "esx-b": {}}, depots=DEPOTS, reboot_seconds=2.5) as lab:
        yield lab


async def test_upgrade_changes_version_only_after_reboot(esxi):
    out = await run(esxi, "esx-a", "esxcli system version get")
    assert (
        out.exit_status == 0
        and "Version: 7.0.3" in out.stdout
        and "Build: Releasebuild-21930508" in out.stdout
    )
    update = f"esxcli software profile update -d {DEPOT} -p {TARGET}"

    refused = await run(esxi, "esx-a", update)
    assert refused.exit_status == 1 and "[MaintenanceMode]" in refused.stderr
    assert (await run(esxi, "esx-a", "esxcli system maintenanceMode set -e true")).exit_status == 0
    assert (await run(esxi, "esx-a", "esxcli system maintenanceMode get")).stdout == "Enabled\n"

    bad_depot = await run(
        esxi, "esx-a", f"esxcli software profile update -d https://nowhere/x.xml -p {TARGET}"
    )
    assert bad_depot.exit_status == 1 and "[MetadataDownloadError]" in bad_depot.stderr
    bad_profile = await run(esxi, "esx-a", f"esxcli software profile update -d {DEPOT} -p ESXi-9-nope")
    assert bad_profile.exit_status == 1 and "[NoMatchError]" in bad_profile.stderr

    done = await run(esxi, "esx-a", update)
    assert done.exit_status == 0 and "Reboot Required: true" in done.stdout
    assert "Build: Releasebuild-21930508" in (await run(esxi, "esx-a", "esxcli system version get")).stdout
    assert TARGET in (await run(esxi, "esx-a", "esxcli software profile get")).stdout

    assert (await run(esxi, "esx-a", "reboot")).exit_status == 0
    assert (await run(esxi, "esx-a", "esxcli system version get")).exit_status == 255  # rebooting
    await wait_up(esxi, "esx-a")
    after = await run(esxi, "esx-a", "esxcli system version get")
    assert "Version: 8.0.2" in after.stdout and "Build: Releasebuild-22380479" in after.stdout
    assert (await run(esxi, "esx-a", "esxcli system maintenanceMode get")).stdout == "Enabled\n"
    again = await run(esxi, "esx-a", update)
    assert again.exit_status == 0 and "Host is not changed" in again.stdout

    # The other host was not touched.
    assert "Version: 7.0.3" in (await run(esxi, "esx-b", "esxcli system version get")).stdout
    assert (await run(esxi, "esx-b", "esxcli system shutdown reboot -r upgrade")).exit_status == 1
    assert (await run(esxi, "esx-b", "rm -rf /")).exit_status == 127


async def test_endpoint_rejects_unknown_keys(esxi, tmp_path):
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(
            "127.0.0.1", esxi.ports["esx-a"], username=esxi.username,
            client_keys=[stranger], known_hosts=str(esxi.known_hosts),
        ):  # fmt: skip
            pass


async def test_upgrade_flow_is_seen_by_vcenter():
    """The esxi_upgrade sequence through rackpilot's clients: pyvmomi for maintenance and
    the build check, esxcli over SSH for the image update and the reboot."""
    spec = {"clusters": [{"name": "c1", "hosts": 3, "vms_per_host": 1, "ha": {"enabled": False}}]}
    timeouts = VSphereTimeouts(connect=10, task=20, stall=20, host_reconnect=20, poll=0.05)
    with VcsimLab.from_spec(spec) as vc:
        ep = Endpoint(url=f"https://{vc.host}:{vc.port}", username=vc.username, password=vc.password,
                      ca_bundle=str(vc.ca_file))  # fmt: skip
        with EsxiSshLab(hosts={"c1-esx01": {}}, depots=DEPOTS, reboot_seconds=2.0, vcsim=vc) as esxi:
            shell = EsxiShell("127.0.0.1", esxi.username, port=esxi.ports["c1-esx01"],
                              client_keys=(str(esxi.client_key),), known_hosts=str(esxi.known_hosts))  # fmt: skip
            with VSphereClient(ep, timeouts) as client:
                host = client.inventory().host_by_name("c1-esx01")
                with pytest.raises(EsxcliError) as refused:
                    await shell.profile_update(DEPOT, TARGET)
                assert refused.value.code == "MaintenanceMode"
                with pytest.raises(EsxcliError) as refused:
                    await shell.reboot("upgrade")
                await asyncio.to_thread(client.enter_maintenance, host.moid, 10)
                # Maintenance entered through vCenter is what esxcli reports on the host.
                assert await shell.in_maintenance()
                with pytest.raises(EsxcliError) as missing:
                    await shell.profile_update(DEPOT, "ESXi-9-nope")
                assert missing.value.code == "NoMatchError"
                result = await shell.profile_update(DEPOT, TARGET)
                assert result.reboot_required and result.changed
                assert (
                    (await shell.version()).build == "21930508" == client.host(host.moid).build
                )  # staged only
                before = client.host(host.moid).boot_time
                await shell.reboot("rackpilot esxi_upgrade")
                assert client.host(host.moid).connection_state == "notResponding"
                with pytest.raises(TargetUnreachable):
                    await shell.version()
                back = await asyncio.to_thread(
                    client.wait_for_host, host.moid, timeout=10, booted_after=before
                )
                assert (back.version, back.build, back.in_maintenance) == ("8.0.2", "22380479", True)
                await wait_up(esxi, "c1-esx01")
                assert await shell.version() == EsxiVersion("VMware ESXi", "8.0.2", "22380479", "2", "0")
                assert not (await shell.profile_update(DEPOT, TARGET)).reboot_required  # idempotent
                await asyncio.to_thread(client.exit_maintenance, host.moid)
                assert not await shell.in_maintenance()


def test_shell_needs_an_explicit_host_key_choice():
    with pytest.raises(TLSConfigurationError):
        EsxiShell("127.0.0.1", "root", client_keys=("k",))
    with pytest.raises(TLSConfigurationError):
        EsxiShell("127.0.0.1", "root", client_keys=("k",), known_hosts="kh", insecure_host_key=True)
