"""vsphere_sync_inventory() called as an executor calls it, on the real local stack: the
content-hash path (only stale VMs are asked for; a row changed by anyone but the sync is
asked for again), the vm_morefs path an executor of the previous release still sends, and
bad input refused with nothing changed."""

from __future__ import annotations

import json

import psycopg2
import pytest

from .pgutil import act_as, connect, create_user, private_site, register_executor


def vm(moref: str, host: str = "host-1", power: str = "on", sync_hash: str | None = None) -> dict:
    row = {"moref": moref, "name": f"name-{moref}", "host_moref": host, "power_state": power, "details": {}}
    if sync_hash is not None:
        row["sync_hash"] = sync_hash
    return row


@pytest.fixture
def world(db_url):
    conn = connect(db_url)
    with private_site(db_url, "vsync") as site, conn.cursor() as cur:
        ex = register_executor(cur, site, "ex", job_types=["vcenter_sync"])
        cur.execute(
            "insert into public.vcenters (site_id, name, address) values (%s, 'vc', 'vc.test.invalid') returning id",
            (site,),
        )
        vc = cur.fetchone()[0]
        cur.execute(
            "insert into public.jobs (type, site_id, params) values ('vcenter_sync', %s, %s)",
            (site, json.dumps({"vcenter_id": str(vc)})),
        )
        cur.execute("select job_id, lease_epoch from public.claim_jobs(%s, 1)", (ex,))
        ((job, epoch),) = cur.fetchall()

        def call(part: dict) -> dict:
            cur.execute(
                "select public.vsphere_sync_inventory(%s, %s, %s, %s, %s, false)",
                (ex, job, epoch, vc, json.dumps(part)),
            )
            return cur.fetchone()[0]

        def vms() -> dict:
            cur.execute(
                "select moref, power_state::text, sync_hash, missing_since is not null as gone "
                "from public.vms where vcenter_id = %s",
                (vc,),
            )
            return {m: (p, h, g) for m, p, h, g in cur.fetchall()}

        vms.vcenter_id = vc  # type: ignore[attr-defined]  # morefs repeat across vCenters

        base = {
            "version": "8.0.2",
            "clusters": [{"moref": "domain-c1", "name": "c1", "details": {}}],
            "hosts": [{"moref": "host-1", "name": "esx1", "cluster_moref": "domain-c1",
                       "connection_state": "connected", "power_state": "on"}],
        }  # fmt: skip

        def synced_at() -> object:
            cur.execute("select last_sync_at from public.vcenters where id = %s", (vc,))
            return cur.fetchone()[0]

        try:
            yield conn, cur, call, vms, base, synced_at
        finally:
            conn.autocommit = True
            cur.execute("delete from public.vcenters where id = %s", (vc,))
    conn.close()


def test_hashes_ask_only_for_stale_vms(world, db_url):
    conn, cur, call, vms, base, _ = world
    first = call({**base, "vm_hashes": {"vm-1": "h1", "vm-2": "h2", "vm-3": "h3"}})
    assert first["vms_stale"] == ["vm-1", "vm-2", "vm-3"] and first["vms"]["seen"] == 3
    sent = call({"vms": [vm("vm-1", sync_hash="h1"), vm("vm-2", sync_hash="h2"), vm("vm-3", sync_hash="h3")]})
    assert sent["vms"]["changed"] == 3
    # nothing changed: nothing asked for, nothing written
    again = call({**base, "vm_hashes": {"vm-1": "h1", "vm-2": "h2", "vm-3": "h3"}})
    assert again["vms_stale"] == [] and again["vms"] == {"seen": 3, "changed": 0, "missing": 0}
    # vm-2 changed in vCenter (new hash), vm-3 vanished, vm-4 is new
    moved = call({**base, "vm_hashes": {"vm-1": "h1", "vm-2": "h2b", "vm-4": "h4"}})
    assert moved["vms_stale"] == ["vm-2", "vm-4"] and moved["vms"]["missing"] == 1
    call({"vms": [vm("vm-2", power="off", sync_hash="h2b"), vm("vm-4", sync_hash="h4")]})
    assert vms() == {"vm-1": ("on", "h1", False), "vm-2": ("off", "h2b", False), "vm-3": ("on", "h3", True),
                     "vm-4": ("on", "h4", False)}  # fmt: skip
    # vm-3 comes back unchanged: its row is marked missing, so it is asked for again
    back = call({**base, "vm_hashes": {"vm-1": "h1", "vm-2": "h2b", "vm-3": "h3", "vm-4": "h4"}})
    assert back["vms_stale"] == ["vm-3"]
    call({"vms": [vm("vm-3", sync_hash="h3")]})
    assert vms()["vm-3"] == ("on", "h3", False)

    # an admin corrects vm-1 through the API (even setting a hash): the hash goes, and the
    # next sync asks for vm-1 and puts the vCenter's value back
    admin = create_user(cur, "admin")
    try:
        conn.autocommit = False
        act_as(cur, admin)
        # this vCenter's vm-1 only: other tests' vCenters have a vm-1 too (a full run met 2 rows)
        cur.execute(
            "update public.vms set power_state = 'off', sync_hash = 'forged' where moref = 'vm-1' and vcenter_id = %s",
            (vms.vcenter_id,),
        )
        assert cur.rowcount == 1
        conn.commit()
        conn.autocommit = True
        assert vms()["vm-1"] == ("off", None, False)
        fixed = call({**base, "vm_hashes": {"vm-1": "h1", "vm-2": "h2b", "vm-3": "h3", "vm-4": "h4"}})
        assert fixed["vms_stale"] == ["vm-1"]
        call({"vms": [vm("vm-1", sync_hash="h1")]})
        assert vms()["vm-1"] == ("on", "h1", False)
    finally:
        conn.rollback()  # a failure mid-transaction must not leave its row locks to the teardown
        conn.autocommit = True
        cur.execute("delete from auth.users where id = %s", (admin,))


def test_vm_morefs_of_the_previous_release_still_work(world):
    conn, cur, call, vms, base, _ = world
    call(base)
    call({"vms": [vm("vm-1"), vm("vm-2")]})
    done = call({"vm_morefs": ["vm-1"]})
    assert done["vms"] == {"seen": 1, "changed": 0, "missing": 1} and done["vms_stale"] == []
    assert vms() == {"vm-1": ("on", None, False), "vm-2": ("on", None, True)}


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"vm_hashes": ["vm-1"]}, "vm_hashes must be an object of moref -> hash strings"),
        ({"vm_hashes": {"vm-1": 7}}, "vm_hashes must be an object of moref -> hash strings"),
        ({"vm_hashes": {"vm-1": "h"}, "vm_morefs": ["vm-1"]}, "send vm_morefs or vm_hashes, not both"),
    ],
)
def test_bad_hashes_are_refused_and_change_nothing(world, part, message):
    conn, cur, call, vms, base, synced_at = world
    call(base)
    call({"vms": [vm("vm-1", sync_hash="h1"), vm("vm-2", sync_hash="h2")]})
    before = (synced_at(), vms())
    with pytest.raises(psycopg2.Error) as err:
        call({**base, **part})
    assert err.value.pgcode == "22023" and message in err.value.pgerror
    assert (synced_at(), vms()) == before
