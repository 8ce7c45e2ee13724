"""The live database against policies/access.yaml, cell by cell.

The matrix is derived from the YAML: every table and view in it x every role (anon plus
the four application roles) x select/insert/update/delete. For each cell the test really
attempts the operation as a user holding that role, the way the REST layer would run it
(`set local role authenticated` plus `request.jwt.claims`), inside one transaction as the
database owner with a savepoint per attempt, and rolls everything back at the end.

- select: allowed when the fixture row is visible; refused when it is not or the
  statement fails with insufficient_privilege (42501).
- insert: allowed when the row goes in; refused only by 42501 (any other error is a bug
  in the schema or in this test and fails it).
- update / delete: allowed when exactly the fixture row is affected; refused when no row
  is (RLS hides it) or 42501.
Views are read-only: a write is refused by 42501 or by "cannot change view" (55000).
"""

from __future__ import annotations

import hashlib
import json
import uuid

import psycopg2
import pytest

from devstack.policies import OPERATIONS, load_access

from .pgutil import connect

DENIED_CODES = {"42501"}
VIEW_WRITE_CODES = {"42501", "55000"}


def _u() -> str:
    return str(uuid.uuid4())


class World:
    """Fixture rows for every table, created as the database owner."""

    def __init__(self, cur):
        self.cur = cur
        self.ids: dict[str, str] = {}

    def one(self, sql: str, params: dict | tuple = ()) -> str:
        self.cur.execute(sql, params)
        return str(self.cur.fetchone()[0])

    def build(self, users: dict[str, str]) -> None:
        i = self.ids
        i["site"] = self.one(
            "insert into public.sites (name) values (%s) returning id", (f"acl-{uuid.uuid4().hex[:8]}",)
        )
        i["site2"] = self.one(
            "insert into public.sites (name) values (%s) returning id", (f"acl-{uuid.uuid4().hex[:8]}",)
        )
        key = "-----BEGIN PUBLIC KEY-----" + "A" * 40
        i["executor"] = self.one(
            "insert into public.executors (site_id, name, public_key, key_id) "
            "values (%s, 'ex', %s, 'k1') returning id",
            (i["site"], key),
        )
        i["executor2"] = self.one(
            "insert into public.executors (site_id, name, public_key, key_id) "
            "values (%s, 'ex2', %s, 'k1') returning id",
            (i["site"], key),
        )
        for n in ("cred", "cred2"):
            i[n] = self.one(
                "insert into public.credential_sets (site_id, name, kind, username) "
                "values (%s, %s, 'idrac', 'root') returning id",
                (i["site"], n),
            )
        for n in ("envelope", "envelope2"):
            self.cur.execute(
                "insert into public.credential_envelopes (credential_set_id, executor_id, key_id, "
                "sealed_secret) values (%s, %s, %s, 'sealed-envelope-ciphertext')",
                (i["cred"], i["executor"], n),
            )
        for n in ("server", "server2"):
            i[n] = self.one(
                "insert into public.servers (site_id, name, idrac_address, model) "
                "values (%s, %s, %s, 'R650') returning id",
                (i["site"], n, f"10.0.0.{len(i)}"),
            )
        for n in ("vcenter", "vcenter2"):
            i[n] = self.one(
                "insert into public.vcenters (site_id, name, address) values (%s, %s, %s) returning id",
                (i["site"], n, f"{n}.test"),
            )
        for n in ("cluster", "cluster2"):
            i[n] = self.one(
                "insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, %s, %s) "
                "returning id",
                (i["vcenter"], i["site"], n, f"domain-{n}"),
            )
        for n in ("host", "host2"):
            i[n] = self.one(
                "insert into public.esxi_hosts (vcenter_id, cluster_id, server_id, name, moref) "
                "values (%s, %s, %s, %s, %s) returning id",
                (i["vcenter"], i["cluster"], i["server"] if n == "host" else None, n, f"host-{n}"),
            )
        for n in ("vm", "vm2"):
            i[n] = self.one(
                "insert into public.vms (vcenter_id, host_id, name, moref) values (%s, %s, %s, %s) "
                "returning id",
                (i["vcenter"], i["host"], n, f"vm-{n}"),
            )
        for n in ("catalog", "catalog2"):
            i[n] = self.one(
                "insert into public.firmware_catalogs (site_id, name, url) values (%s, %s, "
                "'https://downloads.test/Catalog.xml') returning id",
                (i["site"], n),
            )
        for n in ("package", "package2"):
            i[n] = self.one(
                "insert into public.firmware_packages (catalog_id, component, model, version, path) "
                "values (%s, %s, 'R650', '2.19.1', 'bios.exe') returning id",
                (i["catalog"], n),
            )
        for comp in ("package", "package2"):
            self.cur.execute(
                "insert into public.server_firmware (server_id, component, version) values (%s, %s, '2.10.0')",
                (i["server"], comp),
            )
        for n in ("fwhist", "fwhist2"):
            i[n] = self.one(
                "insert into public.firmware_compliance_history (site_id, server_id, verdict) "
                "values (%s, %s, 'outdated') returning id",
                (i["site"], i["server"]),
            )
        for n in ("ome", "ome2"):
            i[n] = self.one(
                "insert into public.ome_instances (site_id, name, address) values (%s, %s, %s) returning id",
                (i["site"], n, f"{n}.test"),
            )
        for n in ("pair", "pair2"):
            i[n] = self.one(
                "insert into public.replication_pairs (site_id, name, source_host, source_dataset, "
                "target_host, target_dataset) values (%s, %s, 'zfs1', 'tank/vm', 'zfs2', %s) returning id",
                (i["site"], n, f"backup/{n}"),
            )
        for n in ("run", "run2"):
            i[n] = self.one(
                "insert into public.replication_runs (pair_id, site_id, status, kind, bytes) "
                "values (%s, %s, 'succeeded', 'incremental', 1) returning id",
                (i["pair"], i["site"]),
            )
        i["safety"] = self.one(
            "insert into public.cluster_safety_status (cluster_id, status, hosts_total, "
            "hosts_in_maintenance) values (%s, 'safe', 4, 0) returning id",
            (i["cluster"],),
        )
        i["window"] = self.one(
            "insert into public.maintenance_windows (site_id, title, starts_at, ends_at, requested_by) "
            "values (%s, 'w', now(), now() + interval '1 hour', %s) returning id",
            (i["site"], users["operator"]),
        )
        i["job"] = self.one(
            "insert into public.jobs (type, site_id, cluster_id, created_by) "
            "values ('selftest', %s, %s, %s) returning id",
            (i["site"], i["cluster"], users["operator"]),
        )
        i["task"] = self.one(
            "insert into public.job_tasks (job_id, target_kind, target_id, target_name) "
            "values (%s, 'server', %s, 'server') returning id",
            (i["job"], i["server"]),
        )
        i["step"] = self.one(
            "insert into public.workflow_executions (job_id, seq, step_key, name) "
            "values (%s, 0, 'preflight', 'Pre-flight') returning id",
            (i["job"],),
        )
        for n in ("blocker", "blocker2", "blocker3"):
            i[n] = self.one(
                "insert into public.job_blockers (job_id, kind, vm_id, host_id, description) "
                "values (%s, 'cdrom_connected', %s, %s, 'CD-ROM connected') returning id",
                (i["job"], i["vm"], i["host"]),
            )
        i["resolution"] = self.one(
            "insert into public.blocker_resolutions (blocker_id, job_id, action) "
            "values (%s, %s, 'acknowledge') returning id",
            (i["blocker3"], i["job"]),
        )
        content = b"<SystemConfiguration/>"
        i["artifact"] = self.one(
            "insert into public.artifacts (job_id, server_id, kind, content_type, sha256, size_bytes, "
            "content) values (%s, %s, 'scp_backup', 'application/xml', %s, %s, %s) returning id",
            (
                i["job"],
                i["server"],
                hashlib.sha256(content).hexdigest(),
                len(content),
                psycopg2.Binary(content),
            ),
        )
        i["audit"] = self.one("select max(id) from public.audit_log")
        # fleet intake (20261206200100_fleet_intake.sql)
        for n in ("disc", "disc2"):
            i[n] = self.one(
                "insert into public.discovery_results (job_id, site_id, address, outcome, reason) "
                "values (%s, %s, %s, 'skipped', 'no_answer') returning id",
                (i["job"], i["site"], n),
            )
        for n in ("sched", "sched2"):
            i[n] = self.one(
                "insert into public.job_schedules (site_id, name, job_type, recurrence, owner_id) "
                "values (%s, %s, 'inventory_refresh', '@daily', %s) returning id",
                (i["site"], n, users["operator"]),
            )
        i["wseries"] = self.one(
            "insert into public.maintenance_window_series (site_id, title, recurrence, "
            "duration_minutes, requested_by) values (%s, 's', '0 2 * * 6', 60, %s) returning id",
            (i["site"], users["operator"]),
        )
        i["fwcat"] = self.one(
            "insert into public.firmware_catalogs (site_id, name, url) "
            "values (%s, 'acl-cat', 'https://example.test/Catalog.xml') returning id",
            (i["site"],),
        )
        for n in ("baseline", "baseline2"):
            i[n] = self.one(
                "insert into public.firmware_baselines (site_id, catalog_id, name) values (%s, %s, %s) "
                "returning id",
                (i["site"], i["fwcat"], n),
            )
        for days, n in ((1, "srun"), (2, "srun2")):
            i[n] = self.one(
                "insert into public.schedule_runs (schedule_id, occurrence_at, status) "
                "values (%s, now() - make_interval(days => %s), 'missed') returning id",
                (i["sched"], days),
            )
        for n in ("call", "call2"):
            i[n] = self.one(
                "insert into public.bmc_calls (job_id, site_id, target, protocol, method, path, status, "
                "duration_ms, at) values (%s, %s, 'idrac', 'redfish', 'GET', '/redfish/v1', 200, 3, now()) "
                "returning id",
                (i["job"], i["site"]),
            )
        i["setting"] = self.one(
            "insert into public.notification_settings (name, channel, target, events) "
            "values ('ops', 'email', 'ops@example.test', '{job_failed}') returning id"
        )
        i["outbox"] = self.one(
            "insert into public.notification_outbox (event_kind, payload) "
            "values ('job_failed', '{}') returning id"
        )
        # identity (20261206170100_identity.sql)
        self.cur.execute(
            "insert into public.directory_configs (site_id, mode) values (%s, 'executor')", (i["site"],)
        )
        i["group_role"] = self.one(
            "insert into public.directory_group_roles (site_id, group_dn, role) "
            "values (%s, 'cn=ops,dc=t', 'operator') returning id",
            (i["site"],),
        )
        self.cur.execute(
            "insert into public.directory_identities (user_id, site_id, subject, username) "
            "values (%s, %s, 'uid=other,dc=t', 'other')",
            (users["other"], i["site"]),
        )
        i["idm_request"] = self.one(
            "insert into public.idm_login_requests (site_id, executor_id, key_id, challenge, "
            "expires_at) values (%s, %s, 'k1', %s, now() + interval '1 minute') returning id",
            (i["site"], i["executor"], "c" * 43),
        )
        # a client's failed break-glass attempts (20261206170100_identity.sql)
        i["bg_lockout"] = f"matrix-{uuid.uuid4().hex[:8]}"
        self.cur.execute(
            "insert into public.breakglass_lockouts (account_name, client, failed_attempts) "
            "values (%s, '127.0.0.9', 1)",
            (i["bg_lockout"],),
        )
        # a client's failed directory sign-ins (20261206170100_identity.sql)
        self.cur.execute(
            "insert into public.idm_sign_in_failures (site_id, client, failures) values (%s, '127.0.0.9', 1)",
            (i["site"],),
        )
        # a break-glass account has an auth user of its own, which never holds a user_roles row
        i["bg_user"] = self.one(
            "insert into auth.users (email) values (%s) returning id",
            (f"acl-bg-{uuid.uuid4().hex[:6]}@t.invalid",),
        )
        i["bg_account"] = self.one(
            "insert into public.breakglass_accounts (name, user_id, secret_hash) values "
            "('acl-bg', %s, %s) returning id",
            (i["bg_user"], BG_HASH),
        )
        i["bg_session"] = self.one(
            "insert into public.breakglass_sessions (account_id, user_id, auth_session_id, role, "
            "reason, expires_at) values (%s, %s, gen_random_uuid(), 'admin', 'access matrix test', "
            "now() + interval '1 minute') returning id",
            (i["bg_account"], i["bg_user"]),
        )


BG_HASH = "scrypt$16384$8$1$" + "A" * 22 + "$" + "A" * 43  # the shape of a break-glass hash


def statements(w: dict[str, str], users: dict[str, str]) -> dict[str, dict[str, tuple[str, tuple]]]:
    """Per relation: a select that finds the fixture row, an insert of a valid fresh row, an
    update and a delete aimed at exactly one row."""
    s = w
    sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""
    rel: dict[str, dict[str, tuple[str, tuple]]] = {
        "user_roles": {
            "select": ("select user_id from public.user_roles where user_id = %s", (users["other"],)),
            "insert": (
                "insert into public.user_roles (user_id, role) values (%s, 'viewer')",
                (users["spare"],),
            ),
            "update": ("update public.user_roles set role = role where user_id = %s", (users["other"],)),
            "delete": ("delete from public.user_roles where user_id = %s", (users["other"],)),
        },
        "sites": {
            "select": ("select id from public.sites where id = %s", (s["site"],)),
            "insert": ("insert into public.sites (name) values (%s)", (f"n-{uuid.uuid4().hex[:8]}",)),
            "update": ("update public.sites set description = description where id = %s", (s["site"],)),
            "delete": ("delete from public.sites where id = %s", (s["site2"],)),
        },
        "executors": {
            "select": ("select id from public.executors where id = %s", (s["executor"],)),
            "insert": (
                "insert into public.executors (site_id, name, public_key, key_id) values (%s, 'x', %s, 'k')",
                (s["site"], "P" * 40),
            ),
            "update": ("update public.executors set status = status where id = %s", (s["executor"],)),
            "delete": ("delete from public.executors where id = %s", (s["executor2"],)),
        },
        "credential_sets": {
            "select": (
                "select id, name, kind, username from public.credential_sets where id = %s",
                (s["cred"],),
            ),
            "insert": (
                "insert into public.credential_sets (site_id, name, kind, username) "
                "values (%s, 'new', 'vcenter', 'admin')",
                (s["site"],),
            ),
            "update": ("update public.credential_sets set name = name where id = %s", (s["cred"],)),
            "delete": ("delete from public.credential_sets where id = %s", (s["cred2"],)),
        },
        "credential_envelopes": {
            "select": (
                "select key_id from public.credential_envelopes where credential_set_id = %s and key_id = 'envelope'",
                (s["cred"],),
            ),
            "insert": (
                "insert into public.credential_envelopes (credential_set_id, executor_id, key_id, sealed_secret) "
                "values (%s, %s, 'k-new', 'sealed-envelope-ciphertext')",
                (s["cred"], s["executor"]),
            ),
            "update": (
                "update public.credential_envelopes set key_id = key_id where credential_set_id = %s "
                "and key_id = 'envelope'",
                (s["cred"],),
            ),
            "delete": (
                "delete from public.credential_envelopes where credential_set_id = %s and key_id = 'envelope2'",
                (s["cred"],),
            ),
        },
        "servers": {
            "select": ("select id from public.servers where id = %s", (s["server"],)),
            "insert": (
                "insert into public.servers (site_id, name, idrac_address) values (%s, 'new', '10.9.9.9')",
                (s["site"],),
            ),
            "update": ("update public.servers set name = name where id = %s", (s["server"],)),
            "delete": ("delete from public.servers where id = %s", (s["server2"],)),
        },
        "vcenters": {
            "select": ("select id from public.vcenters where id = %s", (s["vcenter"],)),
            "insert": (
                "insert into public.vcenters (site_id, name, address) values (%s, 'new', 'new.test')",
                (s["site"],),
            ),
            "update": ("update public.vcenters set name = name where id = %s", (s["vcenter"],)),
            "delete": ("delete from public.vcenters where id = %s", (s["vcenter2"],)),
        },
        "clusters": {
            "select": ("select id from public.clusters where id = %s", (s["cluster"],)),
            "insert": (
                "insert into public.clusters (vcenter_id, site_id, name, moref) values (%s, %s, 'n', 'domain-n')",
                (s["vcenter"], s["site"]),
            ),
            "update": ("update public.clusters set name = name where id = %s", (s["cluster"],)),
            "delete": ("delete from public.clusters where id = %s", (s["cluster2"],)),
        },
        "esxi_hosts": {
            "select": ("select id from public.esxi_hosts where id = %s", (s["host"],)),
            "insert": (
                "insert into public.esxi_hosts (vcenter_id, name, moref) values (%s, 'n', 'host-n')",
                (s["vcenter"],),
            ),
            "update": ("update public.esxi_hosts set name = name where id = %s", (s["host"],)),
            "delete": ("delete from public.esxi_hosts where id = %s", (s["host2"],)),
        },
        "vms": {
            "select": ("select id from public.vms where id = %s", (s["vm"],)),
            "insert": (
                "insert into public.vms (vcenter_id, name, moref) values (%s, 'n', 'vm-n')",
                (s["vcenter"],),
            ),
            "update": ("update public.vms set name = name where id = %s", (s["vm"],)),
            "delete": ("delete from public.vms where id = %s", (s["vm2"],)),
        },
        "firmware_catalogs": {
            "select": ("select id from public.firmware_catalogs where id = %s", (s["catalog"],)),
            "insert": (
                "insert into public.firmware_catalogs (site_id, name, url) values (%s, 'n', 'https://x.test/c.xml')",
                (s["site"],),
            ),
            "update": ("update public.firmware_catalogs set name = name where id = %s", (s["catalog"],)),
            "delete": ("delete from public.firmware_catalogs where id = %s", (s["catalog2"],)),
        },
        "firmware_packages": {
            "select": ("select id from public.firmware_packages where id = %s", (s["package"],)),
            "insert": (
                "insert into public.firmware_packages (catalog_id, component, version, path) "
                "values (%s, 'NIC', '1.0', 'nic.exe')",
                (s["catalog"],),
            ),
            "update": ("update public.firmware_packages set path = path where id = %s", (s["package"],)),
            "delete": ("delete from public.firmware_packages where id = %s", (s["package2"],)),
        },
        "server_firmware": {
            "select": (
                "select server_id from public.server_firmware where server_id = %s and component = 'package'",
                (s["server"],),
            ),
            "insert": (
                "insert into public.server_firmware (server_id, component, version) values (%s, 'NEW', '1')",
                (s["server"],),
            ),
            "update": (
                "update public.server_firmware set version = version where server_id = %s and component = 'package'",
                (s["server"],),
            ),
            "delete": (
                "delete from public.server_firmware where server_id = %s and component = 'package2'",
                (s["server"],),
            ),
        },
        "firmware_compliance_history": {
            "select": ("select id from public.firmware_compliance_history where id = %s", (s["fwhist"],)),
            "insert": (
                "insert into public.firmware_compliance_history (site_id, server_id, verdict) "
                "values (%s, %s, 'compliant')",
                (s["site"], s["server"]),
            ),
            "update": (
                "update public.firmware_compliance_history set verdict = verdict where id = %s",
                (s["fwhist"],),
            ),
            "delete": ("delete from public.firmware_compliance_history where id = %s", (s["fwhist2"],)),
        },
        "ome_instances": {
            "select": ("select id from public.ome_instances where id = %s", (s["ome"],)),
            "insert": (
                "insert into public.ome_instances (site_id, name, address) values (%s, 'n', 'n.test')",
                (s["site"],),
            ),
            "update": ("update public.ome_instances set name = name where id = %s", (s["ome"],)),
            "delete": ("delete from public.ome_instances where id = %s", (s["ome2"],)),
        },
        "replication_pairs": {
            "select": ("select id from public.replication_pairs where id = %s", (s["pair"],)),
            "insert": (
                "insert into public.replication_pairs (site_id, name, source_host, source_dataset, target_host, "
                "target_dataset) values (%s, 'n', 'a', 'tank/a', 'b', 'tank/b')",
                (s["site"],),
            ),
            "update": ("update public.replication_pairs set name = name where id = %s", (s["pair"],)),
            "delete": ("delete from public.replication_pairs where id = %s", (s["pair2"],)),
        },
        "replication_runs": {
            "select": ("select id from public.replication_runs where id = %s", (s["run"],)),
            "insert": (
                "insert into public.replication_runs (pair_id, site_id, status, kind) "
                "values (%s, %s, 'succeeded', 'none')",
                (s["pair"], s["site"]),
            ),
            "update": ("update public.replication_runs set bytes = bytes where id = %s", (s["run"],)),
            "delete": ("delete from public.replication_runs where id = %s", (s["run2"],)),
        },
        "cluster_safety_status": {
            "select": ("select id from public.cluster_safety_status where id = %s", (s["safety"],)),
            "insert": (
                "insert into public.cluster_safety_status (cluster_id, status, hosts_total, hosts_in_maintenance) "
                "values (%s, 'safe', 1, 0)",
                (s["cluster"],),
            ),
            "update": (
                "update public.cluster_safety_status set status = status where id = %s",
                (s["safety"],),
            ),
            "delete": ("delete from public.cluster_safety_status where id = %s", (s["safety"],)),
        },
        "discovery_results": {
            "select": ("select id from public.discovery_results where id = %s", (s["disc"],)),
            "insert": (
                "insert into public.discovery_results (job_id, site_id, address, outcome, reason) "
                "values (%s, %s, 'x', 'skipped', 'no_answer')",
                (s["job"], s["site"]),
            ),
            "update": ("update public.discovery_results set message = message where id = %s", (s["disc"],)),
            "delete": ("delete from public.discovery_results where id = %s", (s["disc2"],)),
        },
        "job_schedules": {
            "select": ("select id from public.job_schedules where id = %s", (s["sched"],)),
            "insert": (
                "insert into public.job_schedules (site_id, name, job_type, recurrence) "
                "values (%s, 'acl-new', 'vcenter_sync', '@hourly')",
                (s["site"],),
            ),
            "update": ("update public.job_schedules set enabled = enabled where id = %s", (s["sched"],)),
            "delete": ("delete from public.job_schedules where id = %s", (s["sched2"],)),
        },
        "firmware_baselines": {
            "select": ("select id from public.firmware_baselines where id = %s", (s["baseline"],)),
            "insert": (
                "insert into public.firmware_baselines (site_id, catalog_id, name) values (%s, %s, 'acl-new')",
                (s["site"], s["fwcat"]),
            ),
            "update": ("update public.firmware_baselines set name = name where id = %s", (s["baseline"],)),
            "delete": ("delete from public.firmware_baselines where id = %s", (s["baseline2"],)),
        },
        "maintenance_window_series": {
            "select": ("select id from public.maintenance_window_series where id = %s", (s["wseries"],)),
            "insert": (
                "insert into public.maintenance_window_series (site_id, title, recurrence, duration_minutes) "
                "values (%s, 'n', '0 3 * * 6', 30)",
                (s["site"],),
            ),
            "update": (
                "update public.maintenance_window_series set title = title where id = %s",
                (s["wseries"],),
            ),
            "delete": ("delete from public.maintenance_window_series where id = %s", (s["wseries"],)),
        },
        "schedule_runs": {
            "select": ("select id from public.schedule_runs where id = %s", (s["srun"],)),
            "insert": (
                "insert into public.schedule_runs (schedule_id, occurrence_at, status) "
                "values (%s, now(), 'missed')",
                (s["sched"],),
            ),
            "update": ("update public.schedule_runs set error = error where id = %s", (s["srun"],)),
            "delete": ("delete from public.schedule_runs where id = %s", (s["srun2"],)),
        },
        "bmc_calls": {
            "select": ("select id from public.bmc_calls where id = %s", (s["call"],)),
            "insert": (
                "insert into public.bmc_calls (job_id, site_id, target, protocol, method, path, duration_ms, at) "
                "values (%s, %s, 't', 'redfish', 'GET', '/', 1, now())",
                (s["job"], s["site"]),
            ),
            "update": ("update public.bmc_calls set duration_ms = duration_ms where id = %s", (s["call"],)),
            "delete": ("delete from public.bmc_calls where id = %s", (s["call2"],)),
        },
        "safety_policies": {
            "select": ("select job_type from public.safety_policies where job_type = 'selftest'", ()),
            "insert": (
                "insert into public.safety_policies (job_type, risk, requires_window, takes_hosts_out, "
                "lease_seconds, step_timeout_seconds, job_timeout_seconds, max_attempts) "
                "values ('selftest', 'low', false, false, 30, 60, 300, 3)",
                (),
            ),
            "update": (
                "update public.safety_policies set max_attempts = max_attempts where job_type = 'selftest'",
                (),
            ),
            "delete": ("delete from public.safety_policies where job_type = 'selftest'", ()),
        },
        "maintenance_windows": {
            "select": ("select id from public.maintenance_windows where id = %s", (s["window"],)),
            "insert": (
                "insert into public.maintenance_windows (site_id, title, starts_at, ends_at) "
                "values (%s, 'n', now(), now() + interval '1 hour')",
                (s["site"],),
            ),
            "update": ("update public.maintenance_windows set title = title where id = %s", (s["window"],)),
            "delete": ("delete from public.maintenance_windows where id = %s", (s["window"],)),
        },
        "jobs": {
            "select": ("select id from public.jobs where id = %s", (s["job"],)),
            "insert": ("insert into public.jobs (type, site_id) values ('selftest', %s)", (s["site"],)),
            "update": ("update public.jobs set priority = priority where id = %s", (s["job"],)),
            "delete": ("delete from public.jobs where id = %s", (s["job"],)),
        },
        "job_tasks": {
            "select": ("select id from public.job_tasks where id = %s", (s["task"],)),
            "insert": (
                "insert into public.job_tasks (job_id, target_kind, target_id) values (%s, 'host', %s)",
                (s["job"], s["host"]),
            ),
            "update": ("update public.job_tasks set progress = progress where id = %s", (s["task"],)),
            "delete": ("delete from public.job_tasks where id = %s", (s["task"],)),
        },
        "workflow_executions": {
            "select": ("select id from public.workflow_executions where id = %s", (s["step"],)),
            "insert": (
                "insert into public.workflow_executions (job_id, seq, step_key, name) values (%s, 1, 'n', 'n')",
                (s["job"],),
            ),
            "update": ("update public.workflow_executions set name = name where id = %s", (s["step"],)),
            "delete": ("delete from public.workflow_executions where id = %s", (s["step"],)),
        },
        "job_blockers": {
            "select": ("select id from public.job_blockers where id = %s", (s["blocker"],)),
            "insert": (
                "insert into public.job_blockers (job_id, kind, description) values (%s, 'other', 'n')",
                (s["job"],),
            ),
            "update": (
                "update public.job_blockers set description = description where id = %s",
                (s["blocker"],),
            ),
            "delete": ("delete from public.job_blockers where id = %s", (s["blocker"],)),
        },
        "blocker_resolutions": {
            "select": ("select id from public.blocker_resolutions where id = %s", (s["resolution"],)),
            "insert": (
                "insert into public.blocker_resolutions (blocker_id, action) values (%s, 'acknowledge')",
                (s["blocker2"],),
            ),
            "update": ("update public.blocker_resolutions set note = note where id = %s", (s["resolution"],)),
            "delete": ("delete from public.blocker_resolutions where id = %s", (s["resolution"],)),
        },
        "artifacts": {
            "select": ("select id from public.artifacts where id = %s", (s["artifact"],)),
            "insert": (
                "insert into public.artifacts (kind, sha256, size_bytes, content) values ('log', %s, 0, '')",
                (sha,),
            ),
            "update": (
                "update public.artifacts set content_type = content_type where id = %s",
                (s["artifact"],),
            ),
            "delete": ("delete from public.artifacts where id = %s", (s["artifact"],)),
        },
        "audit_log": {
            "select": ("select id from public.audit_log where id = %s", (s["audit"],)),
            "insert": (
                "insert into public.audit_log (actor_kind, actor_role, action, prev_hash, hash) "
                "values ('user', 'x', 'forged', %s, %s)",
                (sha, sha),
            ),
            "update": ("update public.audit_log set note = note where id = %s", (s["audit"],)),
            "delete": ("delete from public.audit_log where id = %s", (s["audit"],)),
        },
        "notification_settings": {
            "select": ("select id from public.notification_settings where id = %s", (s["setting"],)),
            "insert": (
                "insert into public.notification_settings (name, channel, target, events) "
                "values ('n', 'webhook', 'https://hooks.test/x', '{job_failed}')",
                (),
            ),
            "update": ("update public.notification_settings set name = name where id = %s", (s["setting"],)),
            "delete": ("delete from public.notification_settings where id = %s", (s["setting"],)),
        },
        "notification_outbox": {
            "select": ("select id from public.notification_outbox where id = %s", (s["outbox"],)),
            "insert": (
                "insert into public.notification_outbox (event_kind, payload) values ('job_failed', '{}')",
                (),
            ),
            "update": (
                "update public.notification_outbox set attempts = attempts where id = %s",
                (s["outbox"],),
            ),
            "delete": ("delete from public.notification_outbox where id = %s", (s["outbox"],)),
        },
        "directory_configs": {
            "select": ("select site_id from public.directory_configs where site_id = %s", (s["site"],)),
            "insert": (
                "insert into public.directory_configs (site_id, mode) values (%s, 'executor')",
                (s["site2"],),
            ),
            "update": ("update public.directory_configs set mode = mode where site_id = %s", (s["site"],)),
            "delete": ("delete from public.directory_configs where site_id = %s", (s["site"],)),
        },
        "directory_group_roles": {
            "select": ("select id from public.directory_group_roles where id = %s", (s["group_role"],)),
            "insert": (
                "insert into public.directory_group_roles (site_id, group_dn, role) "
                "values (%s, 'cn=admins,dc=t', 'admin')",
                (s["site"],),
            ),
            "update": (
                "update public.directory_group_roles set role = role where id = %s",
                (s["group_role"],),
            ),
            "delete": ("delete from public.directory_group_roles where id = %s", (s["group_role"],)),
        },
        "directory_identities": {
            "select": (
                "select user_id from public.directory_identities where user_id = %s",
                (users["other"],),
            ),
            "insert": (
                "insert into public.directory_identities (user_id, site_id, subject, username) "
                "values (%s, %s, 'uid=spare,dc=t', 'spare')",
                (users["spare"], s["site"]),
            ),
            "update": (
                "update public.directory_identities set username = username where user_id = %s",
                (users["other"],),
            ),
            "delete": ("delete from public.directory_identities where user_id = %s", (users["other"],)),
        },
        "idm_login_requests": {
            "select": ("select id from public.idm_login_requests where id = %s", (s["idm_request"],)),
            "insert": (
                "insert into public.idm_login_requests (site_id, executor_id, key_id, challenge, expires_at) "
                "values (%s, %s, 'k1', %s, now())",
                (s["site"], s["executor"], "d" * 43),
            ),
            "update": (
                "update public.idm_login_requests set status = status where id = %s",
                (s["idm_request"],),
            ),
            "delete": ("delete from public.idm_login_requests where id = %s", (s["idm_request"],)),
        },
        "breakglass_accounts": {
            "select": (
                "select id, name, role from public.breakglass_accounts where id = %s",
                (s["bg_account"],),
            ),
            "insert": (
                "insert into public.breakglass_accounts (name, user_id, secret_hash) values ('acl-bg2', %s, %s)",
                (users["other"], BG_HASH),
            ),
            "update": ("update public.breakglass_accounts set role = role where id = %s", (s["bg_account"],)),
            "delete": ("delete from public.breakglass_accounts where id = %s", (s["bg_account"],)),
        },
        "breakglass_sessions": {
            "select": ("select id from public.breakglass_sessions where id = %s", (s["bg_session"],)),
            "insert": (
                "insert into public.breakglass_sessions (account_id, user_id, auth_session_id, role, reason, "
                "expires_at) values (%s, %s, gen_random_uuid(), 'admin', 'a forged grant', now() + interval '1 hour')",
                (s["bg_account"], users["other"]),
            ),
            "update": (
                "update public.breakglass_sessions set expires_at = expires_at where id = %s",
                (s["bg_session"],),
            ),
            "delete": ("delete from public.breakglass_sessions where id = %s", (s["bg_session"],)),
        },
        "breakglass_lockouts": {
            "select": (
                "select client from public.breakglass_lockouts where account_name = %s",
                (s["bg_lockout"],),
            ),
            "insert": (
                "insert into public.breakglass_lockouts (account_name, client) values (%s, 'forged')",
                (s["bg_lockout"],),
            ),
            "update": (
                "update public.breakglass_lockouts set locked_until = null where account_name = %s",
                (s["bg_lockout"],),
            ),
            "delete": ("delete from public.breakglass_lockouts where account_name = %s", (s["bg_lockout"],)),
        },
        "idm_sign_in_failures": {
            "select": (
                "select client from public.idm_sign_in_failures where site_id = %s",
                (s["site"],),
            ),
            "insert": (
                "insert into public.idm_sign_in_failures (site_id, client) values (%s, 'forged')",
                (s["site"],),
            ),
            "update": (
                "update public.idm_sign_in_failures set failures = 0 where site_id = %s",
                (s["site"],),
            ),
            "delete": ("delete from public.idm_sign_in_failures where site_id = %s", (s["site"],)),
        },
        "identity_policy": {
            "select": ("select id from public.identity_policy", ()),
            "insert": ("insert into public.identity_policy default values", ()),
            "update": (
                "update public.identity_policy set breakglass_max_failures = breakglass_max_failures",
                (),
            ),
            "delete": ("delete from public.identity_policy", ()),
        },
    }
    return rel


def view_statements(name: str) -> dict[str, tuple[str, tuple]]:
    return {
        "select": (f"select 1 from public.{name} limit 1", ()),
        "insert": (f"insert into public.{name} default values", ()),
        "update": (f"update public.{name} set {VIEW_COLUMN[name]} = {VIEW_COLUMN[name]}", ()),
        "delete": (f"delete from public.{name}", ()),
    }


VIEW_COLUMN = {
    "v_job_stats_by_type": "type",
    "v_job_stats_by_week": "type",
    "v_job_stats_by_user": "user_id",
    "v_host_history": "target_name",
    "v_open_blockers": "kind",
    "v_executor_health": "name",
    "v_firmware_compliance": "component",
    "v_firmware_compliance_history": "verdict",
    "v_job_waits": "waiting_for",
    "v_bmc_calls": "path",
    "v_schedules": "name",
}


def attempt(
    cur, role: str, uid: str | None, op: str, sql: str, params: tuple, is_view: bool
) -> tuple[bool, str]:
    """Run one statement as the role; returns (allowed, how)."""
    cur.execute("savepoint cell")
    try:
        if uid is None:
            cur.execute("set local role anon")
            cur.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"role": "anon"}),))
        else:
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": uid, "role": "authenticated"}),),
            )
        try:
            cur.execute(sql, params)
        except psycopg2.Error as exc:
            allowed_codes = VIEW_WRITE_CODES if (is_view and op != "select") else DENIED_CODES
            if exc.pgcode in allowed_codes:
                return False, f"refused ({exc.pgcode})"
            raise AssertionError(f"{op} as {role}: unexpected error {exc.pgcode}: {exc.pgerror}") from exc
        if op == "select":
            return len(cur.fetchall()) > 0, f"{cur.rowcount} rows"
        if op == "insert":
            return True, "inserted"
        if cur.rowcount > 1:
            raise AssertionError(f"{op} as {role} touched {cur.rowcount} rows; the statement must aim at one")
        return cur.rowcount == 1, f"{cur.rowcount} rows"
    finally:
        cur.execute("rollback to savepoint cell")


@pytest.fixture
def txn(db_url):
    conn = connect(db_url, autocommit=False)
    try:
        yield conn.cursor()
    finally:
        conn.rollback()
        conn.close()


def test_access_matrix_matches_policy(txn):
    policy = load_access()
    cur = txn
    cur.execute("""select c.relname, case c.relkind when 'v' then 'view' else 'table' end
                     from pg_class c join pg_namespace n on n.oid = c.relnamespace
                    where n.nspname = 'public' and c.relkind in ('r', 'v', 'p', 'm')""")
    live = dict(cur.fetchall())
    assert set(live) == set(policy.relations), (
        f"missing from access.yaml: {sorted(set(live) - set(policy.relations))}; "
        f"not in the database: {sorted(set(policy.relations) - set(live))}"
    )
    for name, rel in policy.relations.items():
        assert live[name] == rel.kind, (
            f"{name} is a {live[name]} in the database, a {rel.kind} in access.yaml"
        )

    users: dict[str, str | None] = {"anon": None}
    for role in policy.roles:
        if role == "anon":
            continue
        cur.execute(
            "insert into auth.users (email) values (%s) returning id",
            (f"acl-{role}-{uuid.uuid4().hex[:6]}@t.invalid",),
        )
        users[role] = str(cur.fetchone()[0])
        cur.execute("insert into public.user_roles (user_id, role) values (%s, %s)", (users[role], role))
    extra = {}
    for n, role in (("other", "viewer"), ("spare", None)):
        cur.execute(
            "insert into auth.users (email) values (%s) returning id",
            (f"acl-{n}-{uuid.uuid4().hex[:6]}@t.invalid",),
        )
        extra[n] = str(cur.fetchone()[0])
        if role:
            cur.execute("insert into public.user_roles (user_id, role) values (%s, %s)", (extra[n], role))
    world = World(cur)
    world.build({**users, **extra})
    table_sql = statements(world.ids, extra)

    mismatches: list[str] = []
    checked = 0
    for name, role, op in policy.cells():
        rel = policy.relations[name]
        if rel.kind == "table" and name not in table_sql:
            raise AssertionError(f"{name} is in access.yaml but this test has no statements for it: add them")
        sql, params = (view_statements(name) if rel.kind == "view" else table_sql[name])[op]
        allowed, how = attempt(cur, role, users[role], op, sql, params, rel.kind == "view")
        checked += 1
        if allowed != rel.allows(role, op):
            mismatches.append(
                f"{name}.{op} as {role}: expected {'allowed' if rel.allows(role, op) else 'refused'}, "
                f"got {how}"
            )
    # select_own: the role sees its own row (and, by the select cells above, nobody else's)
    for name, rel in policy.relations.items():
        for role in rel.select_own:
            assert name == "user_roles", "select_own is defined for user_roles only"
            allowed, how = attempt(
                cur,
                role,
                users[role],
                "select",
                "select user_id from public.user_roles where user_id = %s",
                (users[role],),
                False,
            )
            checked += 1
            if not allowed:
                mismatches.append(f"{name}.select_own as {role}: own row not visible ({how})")
    assert not mismatches, "\n".join(mismatches)
    assert checked == len(policy.cells()) + sum(len(r.select_own) for r in policy.relations.values())
    print(
        f"\naccess matrix: {checked} cells checked ({len(policy.relations)} relations x {len(policy.roles)} roles "
        f"x {len(OPERATIONS)} operations + select_own)"
    )


def test_functions_executable_by_api_roles_match_policy(txn):
    """policies/access.yaml `functions_executable`: exactly the listed public functions are
    executable by anon and by authenticated (each is an RPC for them). Trigger functions
    are left out: they cannot be called, and need no EXECUTE grant to fire."""
    import yaml

    from devstack.policies import POLICY_DIR

    allowed = yaml.safe_load((POLICY_DIR / "access.yaml").read_text())["functions_executable"]
    cur = txn
    for role in ("anon", "authenticated"):
        cur.execute(
            """select format('%%s(%%s)', p.proname, oidvectortypes(p.proargtypes))
                         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                        where n.nspname = 'public' and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)
                          and has_function_privilege(%s, p.oid, 'EXECUTE')""",
            (role,),
        )
        live = {r[0].replace(", ", ",") for r in cur.fetchall()}
        expected = set(allowed.get(role) or {})
        assert live == expected, (
            f"{role} may execute functions access.yaml does not allow: {sorted(live - expected)}; "
            f"allowed there but not executable: {sorted(expected - live)}"
        )


def test_credential_ciphertext_is_unreadable_to_every_user_role(txn):
    cur = txn
    # every ciphertext column, wherever it lives, is withheld from the API user roles
    cur.execute("""select c.table_name, c.column_name, r.role
                     from information_schema.columns c
                     cross join (values ('anon'), ('authenticated')) r(role)
                    where c.table_schema = 'public' and c.column_name = 'sealed_secret'
                      and has_column_privilege(r.role, format('public.%I', c.table_name), c.column_name, 'SELECT')""")
    assert cur.fetchall() == []
    cur.execute("insert into public.sites (name) values (%s) returning id", (f"cred-{uuid.uuid4().hex[:8]}",))
    site = cur.fetchone()[0]
    cur.execute(
        "insert into public.credential_sets (site_id, name, kind, username) "
        "values (%s, 'c', 'idrac', 'root') returning id",
        (site,),
    )
    cred = cur.fetchone()[0]
    # the envelopes are the only copy of the secret
    cur.execute(
        "select column_name from information_schema.columns where table_schema = 'public' "
        "and table_name = 'credential_sets' and column_name in ('sealed_secret', 'key_id')"
    )
    assert cur.fetchall() == []
    cur.execute(
        "insert into public.credential_envelopes (credential_set_id, key_id, sealed_secret) "
        "values (%s, 'k1', 'sealed-envelope-ciphertext')",
        (cred,),
    )
    for role in ("viewer", "operator", "approver", "admin"):
        cur.execute(
            "insert into auth.users (email) values (%s) returning id",
            (f"c-{uuid.uuid4().hex[:8]}@t.invalid",),
        )
        uid = str(cur.fetchone()[0])
        cur.execute("insert into public.user_roles (user_id, role) values (%s, %s)", (uid, role))
        for sql in (
            "select sealed_secret from public.credential_envelopes where credential_set_id = %s",
            "select * from public.credential_envelopes where credential_set_id = %s",
            "select to_jsonb(e) from public.credential_envelopes e where credential_set_id = %s",
        ):
            cur.execute("savepoint s")
            cur.execute("set local role authenticated")
            cur.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": uid, "role": "authenticated"}),),
            )
            with pytest.raises(psycopg2.Error) as err:
                cur.execute(sql, (cred,))
            assert err.value.pgcode == "42501", (role, sql, err.value.pgerror)
            cur.execute("rollback to savepoint s")
        # the ciphertext does not leak through the audit log either
        cur.execute(
            "select count(*) filter (where new_data ? 'sealed_secret' or old_data ? 'sealed_secret'), count(*) "
            "from public.audit_log where table_name = 'credential_envelopes' and new_data ->> 'credential_set_id' = %s",
            (str(cred),),
        )
        assert cur.fetchone() == (0, 1)


# --- bindings: who may change how a target is reached and which credential it presents -----------
BINDING_VALUES = {
    "idrac_address": "'10.66.66.66'",
    "address": "'attacker.test'",
    "source_host": "'zfs-evil'",
    "target_host": "'zfs-evil2'",
    "details.tls": "'{\"insecure\": true}'::jsonb",
    "details.ssh": '\'{"address": "attacker.test", "insecure_host_key": true}\'::jsonb',
    "endpoints": '\'[{"scheme": "https", "host": "attacker.test", "port": 443, "tls": {}}]\'::jsonb',
    "username": "'other-account'",
}
BINDING_ROWS = {
    "servers": "server",
    "vcenters": "vcenter",
    "ome_instances": "ome",
    "esxi_hosts": "host",
    "replication_pairs": "pair",
    "credential_sets": "cred",
}


def binding_update(table: str, column: str, ids: dict[str, str]) -> tuple[str, tuple]:
    """An update that changes exactly ``column`` (a dotted name reaches into jsonb) of the fixture row."""
    row = ids[BINDING_ROWS[table]]
    if column == "credential_set_id":
        # the fixture rows have none, or cred: bind the other one
        return (
            f"update public.{table} set credential_set_id = case when credential_set_id = %s then %s::uuid "
            f"else %s::uuid end where id = %s",
            (ids["cred"], ids["cred2"], ids["cred"], row),
        )
    if "." in column:
        col, key = column.split(".", 1)
        return (
            f"update public.{table} set {col} = jsonb_set({col}, '{{{key}}}', {BINDING_VALUES[column]}) "
            f"where id = %s",
            (row,),
        )
    return f"update public.{table} set {column} = {BINDING_VALUES[column]} where id = %s", (row,)


def binding_insert(table: str, ids: dict[str, str]) -> tuple[str, tuple] | None:
    """An insert of a row already bound to a credential (None: the table has no such column)."""
    return {
        "servers": (
            "insert into public.servers (site_id, name, idrac_address, credential_set_id) "
            "values (%s, 'bound', '10.9.9.8', %s)",
            (ids["site"], ids["cred"]),
        ),
        "vcenters": (
            "insert into public.vcenters (site_id, name, address, credential_set_id) "
            "values (%s, 'bound', 'bound.test', %s)",
            (ids["site"], ids["cred"]),
        ),
        "ome_instances": (
            "insert into public.ome_instances (site_id, name, address, credential_set_id) "
            "values (%s, 'bound', 'bound.test', %s)",
            (ids["site"], ids["cred"]),
        ),
        "replication_pairs": (
            "insert into public.replication_pairs (site_id, name, source_host, source_dataset, "
            "target_host, target_dataset, credential_set_id) values (%s, 'bound', 'a', 'tank/a', "
            "'b', 'tank/b', %s)",
            (ids["site"], ids["cred"]),
        ),
        "credential_sets": (
            "insert into public.credential_sets (site_id, name, kind, username, "
            f"endpoints) values (%s, 'bound', 'idrac', 'root', {BINDING_VALUES['endpoints']})",
            (ids["site"],),
        ),
    }.get(table)


def test_bindings_match_policy(txn):
    """policies/access.yaml `bindings`: every binding column, changed alone, as every role;
    and a row inserted already bound to a credential. A role may do it when it is in
    `change` and the table lets it update (insert) at all."""
    import yaml

    from devstack.policies import POLICY_DIR

    raw = yaml.safe_load((POLICY_DIR / "access.yaml").read_text())
    bindings = raw["bindings"]
    policy = load_access()
    cur = txn
    users: dict[str, str | None] = {"anon": None}
    for role in policy.roles:
        if role == "anon":
            continue
        cur.execute(
            "insert into auth.users (email) values (%s) returning id",
            (f"bind-{role}-{uuid.uuid4().hex[:6]}@t.invalid",),
        )
        users[role] = str(cur.fetchone()[0])
        cur.execute("insert into public.user_roles (user_id, role) values (%s, %s)", (users[role], role))
    world = World(cur)
    world.build({**users, "other": users["viewer"], "spare": users["viewer"]})
    ids = world.ids
    mismatches, checked = [], 0
    for table, spec in bindings.items():
        assert table in policy.relations, f"bindings names {table}, which access.yaml's tables do not list"
        change = set(spec["change"])
        for column in spec["columns"]:
            sql, params = binding_update(table, column, ids)
            for role in policy.roles:
                allowed, how = attempt(cur, role, users[role], "update", sql, params, False)
                expected = role in change and policy.relations[table].allows(role, "update")
                checked += 1
                if allowed != expected:
                    mismatches.append(
                        f"{table}.{column} changed as {role}: expected "
                        f"{'allowed' if expected else 'refused'}, got {how}"
                    )
        ins = binding_insert(table, ids)
        if ins is not None:
            for role in policy.roles:
                allowed, how = attempt(cur, role, users[role], "insert", ins[0], ins[1], False)
                expected = role in change and policy.relations[table].allows(role, "insert")
                checked += 1
                if allowed != expected:
                    mismatches.append(
                        f"{table} inserted bound to a credential as {role}: expected "
                        f"{'allowed' if expected else 'refused'}, got {how}"
                    )
    assert not mismatches, "\n".join(mismatches)
    # the rest of a row stays the operators' (the matrix's update cells): e.g. a server's name and model
    allowed, how = attempt(
        cur,
        "operator",
        users["operator"],
        "update",
        "update public.servers set name = 'renamed', model = 'R760', "
        'details = details || \'{"rack": "A1"}\'::jsonb where id = %s',
        (ids["server"],),
        False,
    )
    assert allowed, how
    print(f"\nbindings: {checked} cells checked")
