"""The directory sync as a scheduled ``directory_sync`` job (issue 17, "Directory sync").

Real: Debian's slapd on loopback over LDAPS (devstack/lab/ldap.py's tree), the local stack
(``idm-login`` direct path, ``schedules``, ``create-job``'s planning), and two real
``python -m executor`` processes of one site holding the same key, configured with
``RACKPILOT_IDM_*`` in their environment as the identity agent's settings are. Nothing
is simulated.

A user removed from the admin group in the directory loses admin, and their refresh token,
when the site's default "directory sync" schedule fires; the job's result holds the counts
and no password is anywhere; the two executors make exactly one job of the occurrence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from console.identity import directory_login
from devstack.lab.ldap import BASE_DN, LabDirectory, group_roles, user_dn
from executor.secrets import seal, unb64u
from tests.e2e.executor_harness import Harness, wait_until
from tests.integration.pgutil import INSERT_SEALED_CREDENTIAL


@pytest.fixture()
def world(stack, tmp_path: Path):
    h = Harness(stack, tmp_path)
    ldap = LabDirectory(tmp_path / "ldap").start()
    try:
        yield h, ldap
    finally:
        h.close()
        ldap.stop()


def _refresh(h: Harness, session: dict) -> httpx.Response:
    return httpx.post(
        f"{h.env['SUPABASE_URL']}/auth/v1/token?grant_type=refresh_token",
        headers={"apikey": h.env["SUPABASE_ANON_KEY"]},
        json={"refresh_token": session["refresh_token"]},
        timeout=30,
    )


def _role(h: Harness, uid: str) -> str | None:
    rows = h.query(
        "select ur.role::text as role from public.directory_identities d "
        "left join public.user_roles ur on ur.user_id = d.user_id where d.subject = %s",
        user_dn(uid).lower(),
    )
    return rows[0]["role"] if rows else None


def test_the_scheduled_directory_sync_job_takes_a_removed_admins_role_and_refresh_token(world):
    h, ldap = world
    # the site's directory (direct sign-in) and its mapping; the service role creates it, so
    # its default "directory sync" schedule is made disabled, with no owner
    h.query(
        "insert into public.directory_configs (site_id, mode, uris, ca_pem, bind_dn_template, base_dn) "
        "values (%s, 'direct', %s, %s, %s, %s)",
        h.site_id,
        [ldap.ldaps_uri],
        ldap.ca_pem,
        f"uid={{username}},ou=people,{BASE_DN}",
        BASE_DN,
    )
    for m in group_roles():
        h.query(
            "insert into public.directory_group_roles (site_id, group_dn, role) values (%s, %s, %s)",
            h.site_id,
            m["group"],
            m["role"],
        )
    sched = h.one(
        "select id, job_type::text as job_type, params, recurrence, enabled, owner_id "
        "from public.job_schedules where site_id = %s and name = 'directory sync'",
        h.site_id,
    )
    assert (sched["job_type"], sched["params"], sched["recurrence"], sched["enabled"], sched["owner_id"]) == (
        "directory_sync",
        {"site_id": str(h.site_id)},
        "@hourly",
        False,
        None,
    )

    def login(uid: str) -> dict:
        return directory_login(
            h.env["SUPABASE_URL"], h.env["SUPABASE_ANON_KEY"], h.site_name, uid, ldap.passwords[uid]
        )

    alice, erin = login("alice"), login("erin")  # alice: nested admin; erin: a direct member
    assert (alice["role"], erin["role"]) == ("admin", "admin")

    # two executors of the site, one key (as after a host was replaced), the directory in
    # their environment; the bind account sealed to that key, for the directory's URI only
    idm = {
        "idm_uris": ldap.ldaps_uri,
        "idm_ca_file": str(ldap.ca_file),
        "idm_bind_dn_template": f"uid={{username}},ou=people,{BASE_DN}",
        "idm_base_dn": BASE_DN,
        "idm_bind_credential": "directory-sync",
        "schedule_fire_interval": 1,
    }
    a = h.spawn("a", **idm)
    a.wait_log("registered", timeout=60)
    key = h.one("select public_key, key_id from public.executors where site_id = %s", h.site_id)
    state_b = h.tmp / "b" / "state"
    state_b.mkdir(parents=True, mode=0o700)
    shutil.copy(h.tmp / "a" / "state" / "executor_key.pem", state_b / "executor_key.pem")
    b = h.spawn("b", **idm)
    b.wait_log("registered", timeout=60)
    bind_dn = f"uid=sync,ou=services,{BASE_DN}"
    # the envelope console.identity.seal_bind_credential writes (endpoints: the directory URIs)
    envelope = seal(
        unb64u(key["public_key"]),
        {"username": bind_dn, "password": ldap.passwords["sync"], "endpoints": [{"url": ldap.ldaps_uri}]},  # type: ignore[dict-item]
    )
    h.query(
        INSERT_SEALED_CREDENTIAL,
        h.site_id,
        "directory-sync",
        "ldap",
        bind_dn,
        key["key_id"],
        json.dumps(envelope),
    )

    # erin leaves the admin group in the directory
    ldap.remove_member("admins", user_dn("erin"))
    assert _role(h, "erin") == "admin"  # rackpilot does not know yet

    # an admin (alice) reviews the default and enables it, becoming its owner; it is due now
    admin_id = h.one(
        "select user_id from public.directory_identities where subject = %s", user_dn("alice").lower()
    )["user_id"]
    h.query(
        "update public.job_schedules set enabled = true, owner_id = %s where id = %s", admin_id, sched["id"]
    )
    h.query("update public.job_schedules set next_run_at = now() where id = %s", sched["id"])
    runs = wait_until(
        lambda: h.query("select * from public.schedule_runs where schedule_id = %s", sched["id"]),
        90,
        "an executor to fire the directory sync",
        interval=0.5,
    )
    assert [r["status"] for r in runs] == ["created"], runs
    job = h.wait_status(str(runs[0]["job_id"]), ("completed", "failed"), 90)
    assert job["status"] == "completed", (job["error"], h.steps(job["id"]))
    assert job["type"] == "directory_sync"

    # the occurrence made one job, whichever executor fired it, and is no longer due
    assert len(h.query("select 1 from public.schedule_runs where schedule_id = %s", sched["id"])) == 1
    assert (
        len(h.query("select 1 from public.jobs where site_id = %s and type = 'directory_sync'", h.site_id))
        == 1
    )
    assert h.one("select next_run_at > now() as later from public.job_schedules where id = %s", sched["id"])[
        "later"
    ]

    # erin lost admin and her refresh token; alice kept hers
    assert _role(h, "erin") is None
    assert _role(h, "alice") == "admin"
    assert _refresh(h, erin["session"]).status_code >= 400
    assert _refresh(h, alice["session"]).status_code == 200

    # the result holds the counts (in the job's result and its step's)
    counts = job["result"]["checkpoint"]["sync"]
    assert counts["users_seen"] == 2, counts
    assert counts["roles_removed"] == 1 and counts["sessions_revoked"] >= 1, counts
    assert counts["refresh_tokens_revoked"] >= 1, counts  # erin's, unused until then
    assert counts["groups"] == len(group_roles()) and counts["members"] >= 2, counts
    (step,) = h.steps(job["id"])
    assert step["details"]["result"] == counts
    audit = h.query(
        "select new_data from public.audit_log where action = 'idm.sync' and row_id = %s", str(h.site_id)
    )
    assert len(audit) == 1, audit  # one audited run
    assert (
        audit[0]["new_data"]["users"],
        audit[0]["new_data"]["sessions_revoked"],
        audit[0]["new_data"]["refresh_tokens_revoked"],
    ) == (counts["users_seen"], counts["sessions_revoked"], counts["refresh_tokens_revoked"])

    # no password anywhere: job, steps, schedule run, audit, the executors' logs
    everywhere = json.dumps(
        [
            h.query("select * from public.jobs where id = %s", job["id"]),
            h.steps(job["id"]),
            runs,
            audit,
        ],
        default=str,
    ) + "".join(p.log_text() for p in (a, b))
    for secret in (ldap.passwords["sync"], ldap.passwords["alice"], ldap.passwords["erin"]):
        assert secret not in everywhere


def test_an_admin_who_configures_a_directory_owns_its_enabled_hourly_sync(world):
    """The default made for an admin's directory configuration runs as that admin at once;
    made by the service role it waits, disabled and unowned, for someone to enable it."""
    from supabase import create_client

    h, ldap = world
    h.query(
        "insert into public.directory_configs (site_id, mode, uris, ca_pem, bind_dn_template, base_dn) "
        "values (%s, 'direct', %s, %s, %s, %s)",
        h.site_id,
        [ldap.ldaps_uri],
        ldap.ca_pem,
        f"uid={{username}},ou=people,{BASE_DN}",
        BASE_DN,
    )
    for m in group_roles():
        h.query(
            "insert into public.directory_group_roles (site_id, group_dn, role) values (%s, %s, %s)",
            h.site_id,
            m["group"],
            m["role"],
        )
    res = directory_login(
        h.env["SUPABASE_URL"], h.env["SUPABASE_ANON_KEY"], h.site_name, "alice", ldap.passwords["alice"]
    )
    assert res["role"] == "admin"
    admin = create_client(h.env["SUPABASE_URL"], h.env["SUPABASE_ANON_KEY"])
    admin.auth.set_session(res["session"]["access_token"], res["session"]["refresh_token"])
    other = h.one("insert into public.sites (name) values (%s) returning id", f"{h.site_name}-2")["id"]
    admin.table("directory_configs").insert({"site_id": str(other), "mode": "executor"}).execute()
    alice_id = h.one(
        "select user_id from public.directory_identities where subject = %s", user_dn("alice").lower()
    )["user_id"]
    row = h.one(
        "select job_type::text as job_type, recurrence, enabled, owner_id, next_run_at is not null as due "
        "from public.job_schedules where site_id = %s and name = 'directory sync'",
        other,
    )
    assert row == {
        "job_type": "directory_sync",
        "recurrence": "@hourly",
        "enabled": True,
        "owner_id": alice_id,
        "due": True,
    }
    # once per site: a second configuration of it (deleted and made again) adds no second schedule
    h.query("delete from public.directory_configs where site_id = %s", other)
    admin.table("directory_configs").insert({"site_id": str(other), "mode": "executor"}).execute()
    assert (
        len(
            h.query(
                "select 1 from public.job_schedules where site_id = %s and job_type = 'directory_sync'", other
            )
        )
        == 1
    )
