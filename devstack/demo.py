"""``rackpilot demo``: rackpilot's main job, a rolling cluster firmware update, end to end
on the local stack and the simulated data centre.

Every step goes through the same paths an operator's would, with the official clients:

 1. the local stack comes up (created and migrated on first use); demo users exist;
 2. the simulated data centre starts: PowerEdge iDRACs linked to a vCenter cluster, and a
    Dell firmware repository whose catalog is newer than what the servers run;
 3. an executor starts for the demo site, registers, and wakes through Realtime;
 4. the admin seals the lab's credentials to the executor's key (``encrypt-credentials``)
    and registers the vCenter and its servers (REST, under RLS);
 5. the operator syncs the vCenter inventory (``create-job`` ``vcenter_sync``);
 6. an approver requests a maintenance window, cannot approve it themself (four eyes), and
    the admin approves it;
 7. the operator dry-runs, then creates the rolling update (``create-job``) and watches
    its steps stream in over Realtime until it completes;
 8. the firmware versions before and after, the safety invariants (DESIGN.md §5) and the
    audit chain are checked and printed.

Without ``--once`` everything stays up until Ctrl-C, then stops cleanly. With ``--once``
the demo stops what it started and exits 0, or non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

DEMO_USERS = {
    "operator@rackpilot.local": "operator",
    "approver@rackpilot.local": "approver",
    "admin@rackpilot.local": "admin",
    "viewer@rackpilot.local": "viewer",
}
SITE_NAME = "demo"
LAB_SCALE = 200.0  # the lab's clock runs this many times faster than real time
LAB_CLUSTER = {"name": "prod-a", "hosts": 4, "vms_per_host": 2, "host_memory_mb": 262144, "vm_memory_mb": 2048,
               "ha": {"enabled": True, "admission_control": True, "failover_level": 1}}
# simulated seconds; shortened where they only add waiting
LAB_TIMING = {"scp_export": 60.0, "idrac_down": 60.0, "lc_after_idrac_reset": 20.0, "fw_download": 20.0}
JOB_TIMEOUT_S = 600  # how long the demo waits for the rolling update (seconds)


class DemoError(RuntimeError):
    pass


def say(step: str, detail: str = "") -> None:
    print(f"  \u2713 {step}" + (f" \u2014 {detail}" if detail else ""), flush=True)


def _demo_passwords(st) -> dict[str, str]:
    """Demo users' passwords, generated once per stack and kept 0600 in its state folder."""
    path = st.cfg.state_dir / "demo-users.json"
    if path.exists():
        return json.loads(path.read_text())
    data = {email: secrets.token_urlsafe(12) for email in DEMO_USERS}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    return data


class Executor:
    """The demo site's executor, as a child process (``python -m executor``)."""

    def __init__(self, st, time_scale: float):
        self.dir = st.cfg.state_dir / "demo-executor"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.log = self.dir / "executor.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
        env.update({
            "RACKPILOT_SUPABASE_URL": st.env()["SUPABASE_URL"],
            "RACKPILOT_SUPABASE_KEY": st.env()["SUPABASE_SERVICE_ROLE_KEY"],
            "RACKPILOT_SITE": SITE_NAME,
            "RACKPILOT_EXECUTOR_NAME": "demo-executor",
            "RACKPILOT_STATE_DIR": str(self.dir / "state"),
            "RACKPILOT_LOG_FILE": str(self.log),
            "RACKPILOT_LOG_LEVEL": "INFO",
            "RACKPILOT_POLICY_PATH": str(st.cfg.project_root / "policies" / "safety.yaml"),
            "RACKPILOT_TARGET_TIME_SCALE": str(time_scale),
            "RACKPILOT_POLL_INTERVAL": "2",
            "RACKPILOT_HEARTBEAT_INTERVAL": "2",
        })
        out = open(self.dir / "executor.stdout", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "executor"], env=env, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=st.cfg.project_root, start_new_session=True)
        out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Demo:
    def __init__(self, st, passwords: dict[str, str]):
        self.st = st
        self.env = st.env()
        self.passwords = passwords
        self.dc = None
        self.executor: Executor | None = None
        self.clients: dict[str, Any] = {}

    # --- helpers -------------------------------------------------------------------------------
    async def client(self, email: str):
        from supabase import acreate_client

        if email not in self.clients:
            c = await acreate_client(self.env["SUPABASE_URL"], self.env["SUPABASE_ANON_KEY"])
            await c.auth.sign_in_with_password({"email": email, "password": self.passwords[email]})
            self.clients[email] = c
        return self.clients[email]

    async def invoke(self, email: str, fn: str, body: dict[str, Any]) -> dict[str, Any]:
        from supabase_functions.errors import FunctionsHttpError

        c = await self.client(email)
        try:
            raw = await c.functions.invoke(fn, invoke_options={"body": body})
        except FunctionsHttpError as exc:
            raise DemoError(f"{fn} refused: {exc.message}") from None
        return json.loads(raw)

    async def wait_job(self, email: str, job_id: str, timeout: float, on_step=None) -> dict[str, Any]:
        """Follow a job over Realtime (jobs + workflow_executions) until it ends."""
        c = await self.client(email)
        done = asyncio.get_running_loop().create_future()
        seen: dict[str, str] = {}

        def on_job(payload: dict) -> None:
            rec = payload["data"]["record"]
            if rec["status"] in ("completed", "failed", "cancelled", "paused") and not done.done():
                done.set_result(rec)

        def on_wf(payload: dict) -> None:
            rec = payload["data"]["record"]
            key = f"{rec.get('step_key') or rec.get('name')}"
            if seen.get(key) != rec.get("status"):
                seen[key] = rec.get("status")
                if on_step:
                    on_step(rec)

        subscribed = asyncio.Event()
        ch = c.channel(f"demo-job-{job_id}")
        ch.on_postgres_changes("UPDATE", schema="public", table="jobs", filter=f"id=eq.{job_id}", callback=on_job)
        ch.on_postgres_changes("*", schema="public", table="workflow_executions", filter=f"job_id=eq.{job_id}",
                               callback=on_wf)
        await ch.subscribe(lambda status, err=None: subscribed.set() if str(status).endswith("SUBSCRIBED") else None)
        await asyncio.wait_for(subscribed.wait(), 15)
        try:
            # the job may have ended before the subscription was in place
            row = (await c.table("jobs").select("id,status,error,result").eq("id", job_id).single().execute()).data
            if row["status"] in ("completed", "failed", "cancelled", "paused"):
                return row
            return await asyncio.wait_for(done, timeout)
        finally:
            await c.remove_channel(ch)

    def cluster_settings(self) -> dict[str, Any]:
        """The demo cluster's HA/DRS settings as vCenter reports them now."""
        from executor.targets.endpoint import Endpoint
        from executor.targets.vsphere import VSphereClient

        vc = self.dc.vcenter
        ep = Endpoint(f"https://{vc.host}:{vc.port}", vc.username, vc.password, ca_bundle=str(vc.ca_file))
        with VSphereClient(ep) as client:
            return client.read_cluster_settings(client.inventory().cluster_by_name(LAB_CLUSTER["name"]).moid)

    # --- the stages ----------------------------------------------------------------------------
    def start_lab(self) -> None:
        from devstack.lab.datacentre import DataCentre

        t0 = time.perf_counter()
        self.dc = DataCentre([LAB_CLUSTER], time_scale=LAB_SCALE, timing=LAB_TIMING, migrate_ms=5,
                             migrate_ms_per_gb=2, workdir=self.st.cfg.state_dir / "demo-lab")
        self.dc.start()
        hosts = [h["name"] for h in self.dc.vcenter.lab_hosts()]
        say("lab", f"vCenter {self.dc.vcenter.url}, cluster {LAB_CLUSTER['name']} with {len(hosts)} ESXi hosts "
                   f"on {len(hosts)} simulated iDRACs, firmware repository {self.dc.catalog_url} "
                   f"(clock x{LAB_SCALE:.0f}, started in {time.perf_counter() - t0:.1f} s)")

    async def start_executor(self) -> dict[str, Any]:
        self.executor = Executor(self.st, self.dc.executor_time_scale)
        admin = await self.client("admin@rackpilot.local")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.executor.proc.poll() is not None:
                raise DemoError(f"the executor exited with {self.executor.proc.returncode}; see {self.executor.log}")
            rows = (await admin.table("executors").select("id,name,key_id,version,last_heartbeat_at")
                    .eq("name", "demo-executor").execute()).data
            if rows and rows[0].get("key_id"):
                say("executor", f"registered as {rows[0]['name']} (key {rows[0]['key_id'][:12]}\u2026), "
                                f"log {self.executor.log}")
                return rows[0]
            await asyncio.sleep(0.3)
        raise DemoError("the executor did not register within 60 s")

    async def register_lab(self, site_id: str) -> dict[str, Any]:
        admin = "admin@rackpilot.local"
        vc = self.dc.vcenter
        sealed_vc = await self.invoke(admin, "encrypt-credentials", {
            "action": "seal", "site_id": site_id, "name": "lab-vcenter", "kind": "vcenter",
            "username": vc.username, "secret": vc.password})
        sealed_idrac = await self.invoke(admin, "encrypt-credentials", {
            "action": "seal", "site_id": site_id, "name": "lab-idrac", "kind": "idrac",
            "username": "root", "secret": self.dc.idrac_password})
        say("credentials", f"vCenter and iDRAC secrets sealed to {len(sealed_vc['key_ids'])} executor key(s); "
                           "only envelopes are stored")
        c = await self.client(admin)
        vcenter = (await c.table("vcenters").insert({
            "site_id": site_id, "name": "lab-vcenter", "address": f"https://{vc.host}:{vc.port}",
            "credential_set_id": sealed_vc["credential_set_id"], "details": {"tls": self.dc.vcenter_tls()},
        }).execute()).data[0]
        servers = []
        for host, i in self.dc.host_bmc.items():
            bmc = self.dc.idrac.bmcs[i]
            servers.append({"site_id": site_id, "name": f"{host}-srv", "idrac_address": self.dc.idrac.url(i),
                            "service_tag": bmc.service_tag, "model": bmc.model,
                            "credential_set_id": sealed_idrac["credential_set_id"],
                            "details": {"tls": self.dc.idrac_tls()}})
        rows = (await c.table("servers").insert(servers).execute()).data
        say("inventory", f"vCenter and {len(rows)} PowerEdge servers registered by the admin")
        return {"vcenter_id": vcenter["id"], "servers": {r["name"][:-4]: r["id"] for r in rows}}

    async def sync(self, site_id: str, vcenter_id: str) -> str:
        op = "operator@rackpilot.local"
        t0 = time.perf_counter()
        job = await self.invoke(op, "create-job", {"type": "vcenter_sync", "site_id": site_id,
                                                  "params": {"vcenter_id": vcenter_id}})
        row = await self.wait_job(op, job["job_id"], 120)
        if row["status"] != "completed":
            raise DemoError(f"vcenter_sync ended {row['status']}: {row.get('error')}")
        c = await self.client(op)
        cluster = (await c.table("clusters").select("id,name").eq("name", LAB_CLUSTER["name"]).single().execute()).data
        hosts = (await c.table("esxi_hosts").select("name,server_id").eq("cluster_id", cluster["id"]).execute()).data
        linked = sum(1 for h in hosts if h.get("server_id"))
        say("vcenter_sync", f"job {job['job_id'][:8]} completed in {time.perf_counter() - t0:.1f} s: cluster "
                            f"{cluster['name']}, {len(hosts)} hosts, {linked} linked to their servers")
        return cluster["id"]

    async def window(self, site_id: str, cluster_id: str) -> str:
        now = dt.datetime.now(dt.UTC)
        requester, approver = "approver@rackpilot.local", "admin@rackpilot.local"
        created = await self.invoke(requester, "maintenance-windows", {
            "action": "create", "site_id": site_id, "cluster_id": cluster_id, "title": "prod-a firmware",
            "reason": "quarterly BIOS/iDRAC/NIC baseline", "starts_at": (now + dt.timedelta(seconds=5)).isoformat(),
            "ends_at": (now + dt.timedelta(hours=2)).isoformat()})
        window_id = created["window_id"]
        try:
            await self.invoke(requester, "maintenance-windows", {"action": "approve", "window_id": window_id})
        except DemoError as exc:
            refusal = str(exc)
        else:
            raise DemoError("the requester approved their own window: four-eyes is broken")
        await self.invoke(approver, "maintenance-windows", {"action": "approve", "window_id": window_id})
        say("maintenance window", f"requested by {requester}, self-approval refused ({refusal}), "
                                  f"approved by {approver}")
        return window_id

    async def rolling_update(self, site_id: str, cluster_id: str, window_id: str) -> dict[str, Any]:
        op = "operator@rackpilot.local"
        body = {"type": "rolling_cluster_update", "site_id": site_id, "maintenance_window_id": window_id,
                "params": {"cluster_id": cluster_id, "firmware": {"catalog_url": self.dc.catalog_url},
                           "max_parallel_hosts": 1, "failure_budget": 0}}
        plan = await self.invoke(op, "create-job", {**body, "dry_run": True})
        say("dry run", f"plan for {len(plan['plan'].get('tasks', []))} targets, nothing written")
        t0 = time.perf_counter()
        created = await self.invoke(op, "create-job", body)
        job_id = created["job_id"]
        say("rolling_cluster_update", f"job {job_id} created (it starts when the window opens); "
                                      "following it over Realtime:")

        def on_step(rec: dict) -> None:
            status = rec.get("status")
            if status in ("completed", "failed", "paused"):
                det = rec.get("details") or {}
                extra = ""
                if isinstance(det, dict) and det.get("host"):
                    extra = f" [{det['host']}]"
                took = ""
                if rec.get("started_at") and rec.get("finished_at"):
                    a = dt.datetime.fromisoformat(rec["started_at"])
                    b = dt.datetime.fromisoformat(rec["finished_at"])
                    took = f" in {(b - a).total_seconds():.1f} s"
                print(f"      step {rec.get('seq', '?'):>2} {rec.get('name')}{extra}: {status}{took}", flush=True)

        row = await self.wait_job(op, job_id, JOB_TIMEOUT_S, on_step=on_step)
        if row["status"] != "completed":
            raise DemoError(f"the rolling update ended {row['status']}: {row.get('error')}")
        say("rolling_cluster_update", f"completed in {time.perf_counter() - t0:.1f} s")
        return {"job_id": job_id, "seconds": round(time.perf_counter() - t0, 1)}

    def check(self, job_id: str, servers: dict[str, str], before: dict[str, dict[str, str]],
              settings_before: dict[str, Any]) -> dict[str, Any]:
        import psycopg2
        import psycopg2.extras

        from executor import invariants as inv

        after = {h: {c.component_id: c.version for c in self.dc.bmc(h).components} for h in before}
        changed = {h: sorted(k for k in after[h] if after[h][k] != before[h].get(k)) for h in before}
        for h in sorted(changed):
            print(f"      {h}: {len(changed[h])} components updated "
                  + ", ".join(f"{k} {before[h][k]}\u2192{after[h][k]}" for k in changed[h][:3])
                  + ("\u2026" if len(changed[h]) > 3 else ""), flush=True)
        if not all(changed.values()):
            raise DemoError("a host's firmware did not change")

        conn = psycopg2.connect(self.env["SUPABASE_DB_URL"])
        conn.autocommit = True

        def q(sql: str, *args: Any) -> list[dict[str, Any]]:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(sql, args)
                return [dict(r) for r in cur.fetchall()] if cur.description else []

        try:
            settings_now = self.cluster_settings()
            in_mm = [h["name"] for h in self.dc.vcenter.lab_hosts() if h["in_maintenance"]]
            flashes = {h: list(self.dc.bmc(h).flashes) for h in before}
            violations = [
                *inv.settings_restored(q, job_id, settings_now, settings_before),
                *inv.backup_before_flash(q, flashes, servers),
                *inv.window_respected(q, job_id),
                *inv.non_resumable_once(q, job_id),
                *inv.no_host_left_out(q, job_id, in_mm),
            ]
            if violations:
                raise DemoError("safety invariants violated: " + "; ".join(violations))
            say("invariants", "HA/DRS restored as recorded, an SCP backup before every flash, ran inside the "
                              "approved window, no non-resumable step twice, no host left in maintenance")
            broken = q("select * from public.verify_audit_chain()")  # one row per broken link
            if broken:
                raise DemoError(f"audit chain broken: {broken[0]}")
            audited = q("select count(*) as n from public.audit_log")[0]["n"]
            say("audit", f"{audited} audit entries, hash chain verified")
        finally:
            conn.close()
        return {"hosts_updated": len(changed), "components_updated": sum(len(v) for v in changed.values())}

    async def run(self) -> dict[str, Any]:
        op = await self.client("operator@rackpilot.local")
        site = (await op.table("sites").select("id,name").eq("name", SITE_NAME).single().execute()).data
        say("auth", f"demo users signed in; the operator sees site {site['name']!r}")
        await self.start_executor()
        reg = await self.register_lab(site["id"])
        cluster_id = await self.sync(site["id"], reg["vcenter_id"])
        window_id = await self.window(site["id"], cluster_id)

        settings_before = self.cluster_settings()
        before = {h: {c.component_id: c.version for c in self.dc.bmc(h).components} for h in reg["servers"]}
        result = await self.rolling_update(site["id"], cluster_id, window_id)
        result.update(self.check(result["job_id"], {h: str(s) for h, s in reg["servers"].items()}, before,
                                 settings_before))
        return result

    async def close_clients(self) -> None:
        for c in self.clients.values():
            try:
                await c.auth.sign_out()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.clients.clear()

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.stop()
            self.executor = None
        if self.dc is not None:
            self.dc.stop()
            self.dc = None


def run_demo(once: bool = False) -> int:
    from devstack.cli import add_user
    from devstack.stack.stack import Stack, StackError

    st = Stack()
    print(f"rackpilot demo \u2014 local stack in {st.cfg.state_dir}", flush=True)
    started_here = not st.healthy()
    demo: Demo | None = None
    code = 0
    try:
        # a fresh schema each run: the demo registers its own lab inventory
        st.up(reset=True)
        say("stack", f"Postgres on 127.0.0.1:{st.cfg.db_port}, gateway on {st.cfg.api_url} "
                     "(REST, Auth, Realtime, Functions); migrations and seed applied by the Supabase CLI")
        passwords = _demo_passwords(st)
        for email, role in DEMO_USERS.items():
            add_user(st, email, role, passwords[email])
        say("users", ", ".join(f"{e} ({r})" for e, r in DEMO_USERS.items())
            + f"; passwords in {st.cfg.state_dir / 'demo-users.json'} (mode 0600)")
        print("\n# .env for the official clients and the executor (rackpilot dev env)")
        for k, v in st.env().items():
            print(f"{k}={v}")
        print(flush=True)
        demo = Demo(st, passwords)
        demo.start_lab()

        async def main() -> dict[str, Any]:
            try:
                return await demo.run()
            finally:
                await demo.close_clients()

        result = asyncio.run(main())
        print(f"\nmain job OK: {json.dumps(result)}", flush=True)
    except (StackError, DemoError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    if code == 0 and not once:
        print("\neverything stays up: the stack, the lab and the executor. Open the notebooks with "
              "the demo users' passwords (see above). Press Ctrl-C to stop.", flush=True)
        stop = {"flag": False}

        def _stop(*_: Any) -> None:
            stop["flag"] = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stop["flag"]:
            time.sleep(0.2)
        print("\nstopping\u2026", flush=True)
    if demo is not None:
        demo.stop()
    if started_here or not once:
        st.down()
    return code

