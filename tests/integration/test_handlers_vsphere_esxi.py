"""``esxi_upgrade`` through a real executor process on the real local stack: a simulated
vCenter whose hosts answer ``esxcli`` over a real sshd (linked: the SSH reboot is vCenter's
reboot). Two hosts are upgraded one by one; a host already at the target is skipped. The
upgrade is asked for as an operator does, through create-job, which attaches the site's
esxi credential set the executor logs in with. A replication pair lagging on one host's
server pauses the upgrade first (the replication gate); an override with a reason lets it go."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from devstack.cli import add_user
from devstack.lab.datacentre import DataCentre
from devstack.testing.invariants import no_host_left_out, non_resumable_once
from executor.secrets import seal, unb64u
from supabase import create_client
from tests.e2e.executor_harness import Harness
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL

DEPOT = "https://depot.lab.local/esxi8/index.xml"
TARGET = "ESXi-8.0U2-22380479-standard"
DEPOTS = {DEPOT: {TARGET: {"version": "8.0.2", "build": "22380479"}}}


def test_esxi_upgrade_host_by_host(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-esxi-"))
    dc = DataCentre(
        [{"name": "e1", "hosts": 3, "vms_per_host": 2, "host_memory_mb": 65536, "vm_memory_mb": 2048}],
        time_scale=400,
        esxi_ssh=True,
        depots=DEPOTS,
        esxi_reboot_seconds=0.5,
    )
    h = Harness(stack, tmp)
    try:
        dc.start()
        ex = h.spawn("esxi-a", target_time_scale=100, realtime_enabled="false", poll_interval=0.3)
        ex.wait_log("registered", timeout=30)
        key = h.one("select public_key, key_id from public.executors where site_id = %s", h.site_id)
        reg = dc.register(h.query, h.site_id, key["public_key"], key["key_id"])
        envelope = seal(
            unb64u(key["public_key"]),
            {"username": dc.ssh.username, "private_key": Path(dc.ssh.client_key).read_text()},
            endpoints=[
                {"url": f"ssh://127.0.0.1:{port}", "tls": {"known_hosts": str(dc.ssh.known_hosts)}}
                for port in dc.ssh.ports.values()
            ],
        )
        ssh_cred = h.one(
            INSERT_SEALED_CREDENTIAL,
            h.site_id,
            "esxi-ssh",
            "esxi",
            dc.ssh.username,
            key["key_id"],
            json.dumps(envelope),
        )["id"]
        creds = [str(c) for c in [*reg["credential_set_ids"], ssh_cred]]
        sync = (
            h.client.table("jobs")
            .insert(
                {
                    "type": "vcenter_sync",
                    "site_id": h.site_id,
                    "credential_set_ids": creds,
                    "params": {"vcenter_id": str(reg["vcenter_id"])},
                }
            )
            .execute()
            .data[0]["id"]
        )
        assert h.wait_status(sync, ("completed", "failed"), 60)["status"] == "completed"
        hosts = {
            r["name"]: str(r["id"])
            for r in h.query(
                "select id, name from public.esxi_hosts where vcenter_id = %s", reg["vcenter_id"]
            )
        }
        for name, port in dc.ssh.ports.items():
            h.query(
                "update public.esxi_hosts set details = %s where id = %s",
                json.dumps(
                    {"ssh": {"address": "127.0.0.1", "port": port, "known_hosts": str(dc.ssh.known_hosts)}}
                ),
                hosts[name],
            )
        # e1-esx03 already runs the target: it is skipped, not rebooted
        dc.vcenter.reboot_host("e1-esx03", seconds=0, version="8.0.2", build="22380479")
        dc.vcenter.wait_host("e1-esx03", "connected", 10)
        window = h.one(
            "insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by) "
            "values (%s, 'esxi', now() - interval '1 minute', now() + interval '1 hour', "
            "gen_random_uuid()) returning id",
            h.site_id,
        )["id"]
        h.query(
            "update public.maintenance_windows set status = 'approved', approved_by = gen_random_uuid() "
            "where id = %s",
            window,
        )
        # a replication pair on e1-esx02's server lags beyond its policy: the replication gate
        # (docs/replication.md) pauses the upgrade before any host is touched
        h.query(
            "insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
            "target_dataset, source_server_id, max_lag_seconds, schedule, last_synced_snapshot_at) "
            "select %s, 'esxi-gate', 'zfs1', 'tank/esx', 'zfs2', 'backup/esx', server_id, 3600, 'manual', "
            "now() - interval '3 hours' from public.esxi_hosts where id = %s",
            h.site_id,
            hosts["e1-esx02"],
        )
        email = f"esxi-operator-{h.site_name}@lab.test"
        add_user(stack, email, "operator", "esxi-operator-pw-1")
        operator = create_client(h.env["SUPABASE_URL"], h.env["SUPABASE_ANON_KEY"])
        operator.auth.sign_in_with_password({"email": email, "password": "esxi-operator-pw-1"})
        created = operator.functions.invoke(
            "create-job",
            {
                "body": {
                    "type": "esxi_upgrade",
                    "maintenance_window_id": str(window),
                    "params": {
                        "host_ids": [hosts["e1-esx01"], hosts["e1-esx02"], hosts["e1-esx03"]],
                        "image": {"target_version": "8.0.2", "depot_url": DEPOT, "profile_name": TARGET},
                    },
                },
                "responseType": "json",
            },
        )
        job_id = created["job_id"]
        assert str(ssh_cred) in created["plan"]["credential_set_ids"]
        job = h.wait_status(job_id, ("completed", "failed", "paused"), 120)
        assert job["status"] == "paused" and job["pause_reason"] == "blockers", job
        [blk] = h.query(
            "select id, host_id::text as host_id, description from public.job_blockers "
            "where job_id = %s and kind = 'replication_lag'",
            job_id,
        )
        assert blk["host_id"] == hosts["e1-esx02"] and "esxi-gate" in blk["description"], blk
        assert "3.0 h" in blk["description"]
        assert all(x["reboots"] == 0 for x in dc.vcenter.lab_hosts() if x["name"] in ("e1-esx01", "e1-esx02"))
        res = operator.functions.invoke(
            "resolve-blockers",
            {
                "body": {
                    "job_id": job_id,
                    "decisions": [
                        {
                            "blocker_id": str(blk["id"]),
                            "decision": "acknowledge",
                            "note": "replica checked by hand",
                        }
                    ],
                },
                "responseType": "json",
            },
        )
        assert res["resumed"] is True, res
        job = h.wait_status(job_id, ("completed", "failed", "paused"), 120)
        assert job["status"] == "completed", job["error"]
        tasks = {
            r["target_name"]: r for r in h.query("select * from public.job_tasks where job_id = %s", job_id)
        }
        assert [tasks[n]["status"] for n in ("e1-esx01", "e1-esx02", "e1-esx03")] == [
            "completed",
            "completed",
            "skipped",
        ]
        lab = {x["name"]: x for x in dc.vcenter.lab_hosts()}
        for n in ("e1-esx01", "e1-esx02"):
            assert (lab[n]["version"], lab[n]["build"], lab[n]["reboots"]) == ("8.0.2", "22380479", 1), lab[n]
            assert not lab[n]["in_maintenance"]
            assert tasks[n]["details"]["after"] == {"version": "8.0.2", "build": "22380479"}
        assert lab["e1-esx03"]["reboots"] == 1  # only the test's own reboot
        q = h.query
        assert non_resumable_once(q, job_id) == []
        assert no_host_left_out(q, job_id, [x for x, v in lab.items() if v["in_maintenance"]]) == []
    finally:
        h.close()
        dc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
