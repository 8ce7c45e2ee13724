"""The rolling update wizard: cluster -> options -> pre-flight (dry run) -> confirm -> create.

A state machine over ``console.api``. Options are validated with the executor's own
params model (``executor.jobparams``), so the form accepts exactly what ``create-job`` and
the executor accept. The pre-flight step is both the operator's report (cluster settings,
hosts, VMs that will block maintenance mode, firmware compliance, executors, activity on
the cluster) and the server's dry run of the job; a problem that would make the real
request fail is a blocking check, and the wizard will not go on to confirmation.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from console.api import Api, Row
from console.errors import ConsoleError, ValidationFailed
from console.models.common import Observable, parse_ts
from console.models.forms import pydantic_problems
from console.models.preflight import VM_FIX_NOW, PreflightReport, build_preflight
from console.roles import ROLES
from executor.jobparams import BlockerDefault, RollingClusterUpdateParams


class Step(StrEnum):
    CLUSTER = "cluster"
    OPTIONS = "options"
    PREFLIGHT = "preflight"
    CONFIRM = "confirm"
    DONE = "done"


ORDER = [Step.CLUSTER, Step.OPTIONS, Step.PREFLIGHT, Step.CONFIRM, Step.DONE]

# what the pre-flight offers for a VM that would block maintenance mode, before the job starts
VM_PLANS = {
    "ask": "ask me when the job meets it",
    "power_off_vm": "power it off when its host's turn comes (back on after the host)",
    "skip_host": "leave its host out of this update",
}


__all__ = ["ConsoleError", "Step", "UpdateWizard", "pydantic_problems"]


class UpdateWizard(Observable):
    """Drives one rolling cluster update request. Every transition either succeeds and moves
    ``step`` on, or raises a ConsoleError and leaves the state as it was."""

    DEFAULTS: dict[str, Any] = {
        "catalog_url": "",
        "components": [],
        "allow_downgrade": False,
        "host_ids": [],
        "max_parallel_hosts": 1,
        "failure_budget": 0,
        "blocker_default": BlockerDefault.ASK.value,
        "vmotion_timeout_s": 1800,
        "stage_firmware": True,
        "stage_ahead": True,
        "esxi_target_version": "",
        "esxi_depot_url": "",
        "maintenance_window_id": None,
        "scheduled_for": None,
        "description": "",
        "priority": 50,
    }

    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api
        self.step = Step.CLUSTER
        self.clusters: list[Row] = []
        self.catalogs: list[Row] = []
        self.cluster: Row | None = None
        self.hosts: list[Row] = []
        self.windows: list[Row] = []
        self.options: dict[str, Any] = dict(self.DEFAULTS)
        self.report: PreflightReport | None = None
        self.result: Row | None = None
        # pre-flight decisions per blocking VM id ("power_off_vm"), sent through
        # resolve-blockers when the job pauses for that VM; blockers already decided that way
        self.vm_plans: dict[str, str] = {}
        self.vm_plans_applied: set[str] = set()
        # pre-flight fixes carried out at once, per blocking VM id: the vm_operation job
        # ({job_id, action, vm, status, error}), followed until it ends
        self.vm_fix_jobs: dict[str, dict[str, Any]] = {}

    # -- step 1 ------------------------------------------------------------------------
    def load_clusters(self, site_id: str | None = None) -> list[Row]:
        self.clusters = self.api.clusters(site_id)
        self.changed()
        return self.clusters

    def load_inventory(self, site_id: str | None = None) -> None:
        """Clusters, and the Dell catalogs registered for their sites (the catalog picker)."""
        self.clusters = self.api.clusters(site_id)
        try:
            self.catalogs = self.api._rest(
                "firmware catalogs",
                lambda c: (
                    c.table("firmware_catalogs")
                    .select("id,site_id,name,url,version,fetched_at")
                    .order("name")
                ),
            )
        except ConsoleError:
            self.catalogs = []
        self.changed()

    def site_catalogs(self) -> list[Row]:
        sid = (self.cluster or {}).get("site_id")
        return [c for c in self.catalogs if not sid or c.get("site_id") == sid]

    def cluster_hosts(self, cluster_id: str) -> list[Row]:
        """The hosts of a cluster, for the host picker of the first step."""
        return self.api.hosts(cluster_id) if cluster_id else []

    def choose_cluster(
        self, cluster_id: str, *, host_ids: list[str] | None = None, catalog_url: str | None = None
    ) -> None:
        if self.step not in (Step.CLUSTER, Step.OPTIONS):
            raise ValidationFailed(
                f"the cluster is chosen at the first step, not at {self.step}",
                ["go back to the cluster step first"],
            )
        if not cluster_id:
            raise ValidationFailed("choose a cluster", ["no cluster chosen"])
        cluster = self.api.cluster(cluster_id)
        self.cluster = cluster
        self.hosts = self.api.hosts(cluster_id)
        self.windows = self.usable_windows(
            self.api.windows(site_id=cluster["site_id"], statuses=["approved"])
        )
        self.options = dict(self.DEFAULTS)
        if self.windows:
            self.options["maintenance_window_id"] = self.windows[0]["id"]
        cats = self.site_catalogs()
        self.options["catalog_url"] = (
            catalog_url if catalog_url is not None else (cats[0]["url"] if cats else "")
        )
        known = {h["id"] for h in self.hosts}
        self.options["host_ids"] = [h for h in (host_ids or []) if h in known]
        self.report = None
        self.vm_plans = {}
        self.step = Step.OPTIONS
        self.changed()

    def usable_windows(self, windows: list[Row]) -> list[Row]:
        """Approved windows for this cluster (or its whole site) that have not ended."""
        now = dt.datetime.now(dt.UTC)
        cid = self.cluster["id"] if self.cluster else None
        return [
            w
            for w in windows
            if w.get("cluster_id") in (None, cid) and (parse_ts(w.get("ends_at")) or now) > now
        ]

    # -- step 2 ------------------------------------------------------------------------
    def set_options(self, **values: Any) -> None:
        if self.step not in (Step.OPTIONS, Step.PREFLIGHT, Step.CONFIRM):
            raise ValidationFailed("choose a cluster first", ["no cluster chosen"])
        unknown = sorted(set(values) - set(self.DEFAULTS))
        if unknown:
            raise ValidationFailed(
                f"unknown option(s): {', '.join(unknown)}", [f"{k}: unknown option" for k in unknown]
            )
        candidate = {**self.options, **values}
        self._params(candidate)  # raises ValidationFailed, leaving options unchanged
        self.options = candidate
        if self.step != Step.OPTIONS:  # changed options invalidate an earlier pre-flight
            self.step, self.report = Step.OPTIONS, None
        self.changed()

    def params(self) -> dict[str, Any]:
        return self._params(self.options)

    def _params(self, o: dict[str, Any]) -> dict[str, Any]:
        """The job's parameters from the options ``o``, checked by the wizard and by the job
        type's model; ValidationFailed lists every problem, the wizard's own first."""
        if self.cluster is None:
            raise ValidationFailed("choose a cluster first", ["no cluster chosen"])
        doc = self._document(o)
        problems = self._problems(o, doc)
        try:
            model = RollingClusterUpdateParams.model_validate(doc)
        except ValidationError as exc:
            said = {p.split(":", 1)[0] for p in problems}
            problems.extend(p for p in pydantic_problems(exc) if p.split(":", 1)[0] not in said)
            model = None
        if problems or model is None:
            raise ValidationFailed("the update options are not valid: " + "; ".join(problems), problems)
        return model.model_dump(mode="json", exclude_none=True)

    def _document(self, o: dict[str, Any]) -> dict[str, Any]:
        """The parameters document as the options give it (not checked yet)."""
        assert self.cluster is not None
        comps = o.get("components") or []
        if isinstance(comps, str):
            comps = [c.strip() for c in comps.replace(";", ",").split(",") if c.strip()]
        doc: dict[str, Any] = {
            "cluster_id": self.cluster["id"],
            "host_ids": list(o.get("host_ids") or []),
            "firmware": {
                "catalog_url": (o.get("catalog_url") or "").strip(),
                "components": comps,
                "allow_downgrade": bool(o.get("allow_downgrade")),
            },
            "max_parallel_hosts": o.get("max_parallel_hosts"),
            "failure_budget": o.get("failure_budget"),
            "blocker_default": o.get("blocker_default"),
            "vmotion_timeout_s": o.get("vmotion_timeout_s"),
            "stage_firmware": bool(o.get("stage_firmware")),
            "stage_ahead": bool(o.get("stage_ahead")),
        }
        tv, du = (o.get("esxi_target_version") or "").strip(), (o.get("esxi_depot_url") or "").strip()
        if tv or du:
            doc["esxi"] = {"target_version": tv, "depot_url": du}
        return doc

    def _problems(self, o: dict[str, Any], doc: dict[str, Any]) -> list[str]:
        """What the wizard itself finds wrong, in the form's words and order (the model's
        findings are added after, for the fields not named here)."""
        assert self.cluster is not None
        problems: list[str] = []
        if not doc["firmware"]["catalog_url"]:
            problems.append(
                "catalog URL: choose a catalog, or enter the Dell catalog URL (http(s)://…/Catalog.xml)"
            )
        esxi = doc.get("esxi")
        if esxi and not (esxi["target_version"] and esxi["depot_url"]):
            problems.append("ESXi: give both the target version and the depot URL, or neither")
        known = {h["id"] for h in self.hosts}
        strangers = [h for h in doc["host_ids"] if h not in known]
        if strangers:
            problems.append(f"hosts: {len(strangers)} host(s) are not in cluster {self.cluster.get('name')}")
        prio = o.get("priority")
        if not isinstance(prio, int) or not 0 <= prio <= 100:
            problems.append("priority: a whole number from 0 to 100")
        if o.get("scheduled_for") and parse_ts(o["scheduled_for"]) is None:
            problems.append("start at: a time such as 2026-12-01T22:00:00Z")
        if len(o.get("description") or "") > 2000:
            problems.append("description: at most 2000 characters")
        return problems

    def request_fields(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {"priority": o["priority"]}
        if o.get("maintenance_window_id"):
            out["maintenance_window_id"] = o["maintenance_window_id"]
        if o.get("scheduled_for"):
            out["scheduled_for"] = parse_ts(o["scheduled_for"]).isoformat()  # type: ignore[union-attr]
        if o.get("description"):
            out["description"] = o["description"]
        return out

    # -- step 3 ------------------------------------------------------------------------
    def run_preflight(self) -> PreflightReport:
        if self.step not in (Step.OPTIONS, Step.PREFLIGHT, Step.CONFIRM):
            raise ValidationFailed("choose a cluster and options first", ["no cluster chosen"])
        params = self.params()
        assert self.cluster is not None
        self.report = build_preflight(
            self.api, self.cluster, self.hosts, params, self.options, self.request_fields()
        )
        self.step = Step.PREFLIGHT
        self.changed()
        return self.report

    def plan_vm(self, vm_id: str, plan: str) -> str:
        """The pre-flight's offer for a blocking VM, before anything starts, and what it did
        in words. ``skip_host`` leaves the VM's host out of the job's hosts at once and runs
        the pre-flight again; ``power_off_vm`` is decided now and sent through resolve-blockers
        (as the signed-in user) when the job pauses for that VM; ``ask`` takes it back."""
        if self.step not in (Step.PREFLIGHT, Step.CONFIRM) or self.report is None:
            raise ValidationFailed("run the pre-flight check first", ["no pre-flight report"])
        if plan not in VM_PLANS:
            raise ValidationFailed(
                f"unknown choice {plan!r}: {', '.join(VM_PLANS)}", [f"choice: one of {', '.join(VM_PLANS)}"]
            )
        vm = next((v for v in self.report.vm_blockers if v["vm_id"] == vm_id), None)
        if vm is None:
            raise ValidationFailed(
                "that VM is not among the pre-flight's blocking VMs (run the pre-flight again?)",
                ["VM: not a blocking VM of this pre-flight"],
            )
        if plan == "ask":
            self.vm_plans.pop(vm_id, None)
            self.changed()
            return f"{vm['vm']}: the job will pause and ask you when it reaches {vm['host']}"
        if plan == "power_off_vm":
            self.vm_plans[vm_id] = plan
            self.changed()
            return (
                f"{vm['vm']}: will be powered off when the update reaches {vm['host']} and powered "
                "back on after it (sent as your blocker decision when the job pauses for it)"
            )
        chosen = list(self.options.get("host_ids") or []) or [h["id"] for h in self.hosts]
        left = [h for h in chosen if h != vm["host_id"]]
        if not left:
            raise ValidationFailed(
                f"leaving {vm['host']} out leaves no host to update",
                [f"{vm['host']}: the only host of this update"],
            )
        if len(left) == len(chosen):
            return f"{vm['host']} is already left out of this update"
        self.options = {**self.options, "host_ids": left}
        self.vm_plans = {k: v for k, v in self.vm_plans.items() if k != vm_id}
        self.step = Step.OPTIONS  # the hosts changed: the earlier pre-flight no longer holds
        self.run_preflight()
        return (
            f"{vm['host']} is left out of this update (because of {vm['vm']}); "
            f"{len(left)} host(s) remain and the pre-flight ran again"
        )

    @property
    def may_fix_now(self) -> bool:
        """Whether the signed-in user may create the fix jobs (operators and above; create-job
        refuses viewers anyway)."""
        role = getattr(getattr(self.api, "session", None), "role", None)
        return role in ROLES and ROLES.index(role) >= ROLES.index("operator")

    def fix_vm_now(self, vm_id: str, action: str) -> str:
        """Fix a blocking VM at once, before the update starts: a ``vm_operation`` job
        (``power_off``, or ``disconnect_media`` where that clears its blocker) created through
        create-job as the signed-in user, never a call to vCenter from here. The site's
        executor runs it and refreshes the VM's inventory row; :meth:`vm_fix_progress`
        follows it and runs the pre-flight again when it completes. Returns what was done."""
        if self.step not in (Step.PREFLIGHT, Step.CONFIRM) or self.report is None:
            raise ValidationFailed("run the pre-flight check first", ["no pre-flight report"])
        vm = next((v for v in self.report.vm_blockers if v["vm_id"] == vm_id), None)
        if vm is None:
            raise ValidationFailed(
                "that VM is not among the pre-flight's blocking VMs (run the pre-flight again?)",
                ["VM: not a blocking VM of this pre-flight"],
            )
        offered = vm.get("fix_now") or []
        if action not in offered:
            words = " or ".join(VM_FIX_NOW[a] for a in offered)
            raise ValidationFailed(
                f"{vm['vm']}: {VM_FIX_NOW.get(action, repr(action))} would not clear its blocker; {words}",
                [f"fix: one of {', '.join(offered)}"],
            )
        running = self.vm_fix_jobs.get(vm_id)
        if running and running["status"] in ("pending", "running", "paused"):
            raise ValidationFailed(
                f"{vm['vm']}: a fix is already under way (job {running['job_id'][:8]})",
                ["fix: already under way"],
            )
        res = self.api.create_job(
            "vm_operation",
            {"vm_ids": [vm_id], "action": action},
            description=f"server update pre-flight fix of {vm['vm']}: {action}",
        )
        jid = str(res["job_id"])
        self.vm_fix_jobs[vm_id] = {
            "job_id": jid,
            "action": action,
            "vm": vm["vm"],
            "status": str(res.get("status") or "pending"),
            "error": None,
        }
        self.changed()
        return (
            f"{vm['vm']}: {VM_FIX_NOW[action].replace(' now', '')} - job {jid[:8]} created; "
            "the pre-flight runs again when it completes"
        )

    def vm_fix_progress(self) -> list[str]:
        """Read the status of every fix not yet ended; when one completed, run the pre-flight
        again (its VM no longer blocks). Returns what changed, in words."""
        out: list[str] = []
        rerun = False
        for fx in self.vm_fix_jobs.values():
            if fx["status"] in ("completed", "failed", "cancelled"):
                continue
            job = self.api.job(fx["job_id"])
            status = str(job.get("status"))
            if status == fx["status"]:
                continue
            fx["status"], fx["error"] = status, job.get("error")
            if status == "completed":
                rerun = True
                out.append(f"{fx['vm']}: {VM_FIX_NOW[fx['action']].replace(' now', '')} - done")
            elif status in ("failed", "cancelled"):
                out.append(f"{fx['vm']}: the fix {status}: {fx['error'] or 'no reason given'}")
            else:
                out.append(f"{fx['vm']}: the fix (job {fx['job_id'][:8]}) is {status}")
        if rerun and self.step in (Step.PREFLIGHT, Step.CONFIRM):
            self.run_preflight()
            out.append("the pre-flight ran again")
        elif out:
            self.changed()
        return out

    def apply_vm_plans(self) -> str | None:
        """When the created job is paused for blockers of VMs decided in the pre-flight,
        send those decisions through resolve-blockers (resuming the job when they were the
        last ones open). Returns what happened in words, or None when there was nothing to do."""
        jid = str((self.result or {}).get("job_id") or "")
        planned = {v for v, p in self.vm_plans.items() if p == "power_off_vm"}
        if not jid or not planned:
            return None
        from console.models.blockers import BlockerWizard

        bw = BlockerWizard(self.api, jid)
        bw.load()
        if not bw.paused_for_blockers:
            return None
        todo = [b for b in bw.blockers if b.get("vm_id") in planned and b["id"] not in self.vm_plans_applied]
        if not todo:
            return None
        for b in todo:
            bw.decide(b["id"], "power_off_vm", note="decided in the server update wizard's pre-flight")
        names = ", ".join(sorted({bw.vm_names.get(b["vm_id"], "?") for b in todo}))
        res = bw.save(resume=bw.complete)
        self.vm_plans_applied |= {b["id"] for b in todo}
        left = len(res.get("open_blockers") or [])
        return f"as decided in the pre-flight: power off {names} recorded; " + (
            "the job resumed"
            if res.get("resumed")
            else f"{left} other blocker(s) still need your decision (Decide blockers below)"
        )

    # -- step 4 ------------------------------------------------------------------------
    def confirm(self, typed_cluster_name: str) -> None:
        """High-risk work: the operator types the cluster's name to confirm."""
        if self.step != Step.PREFLIGHT or self.report is None:
            raise ValidationFailed("run the pre-flight check first", ["no pre-flight report"])
        if not self.report.ok:
            raise ValidationFailed(
                "the pre-flight check found blocking problems: "
                + "; ".join(c.detail for c in self.report.blocking()),
                [c.detail for c in self.report.blocking()],
            )
        assert self.cluster is not None
        if (typed_cluster_name or "").strip() != self.cluster["name"]:
            raise ValidationFailed(
                f"type the cluster name {self.cluster['name']!r} exactly to confirm",
                ["confirmation does not match the cluster name"],
            )
        self.step = Step.CONFIRM
        self.changed()

    # -- step 5 ------------------------------------------------------------------------
    def create(self) -> Row:
        if self.step != Step.CONFIRM:
            raise ValidationFailed("confirm the update first", ["not confirmed"])
        res = self.api.create_job("rolling_cluster_update", self.params(), **self.request_fields())
        self.result = res
        self.step = Step.DONE
        self.changed()
        return res

    def back(self) -> None:
        i = ORDER.index(self.step)
        if self.step == Step.DONE or i == 0:
            return
        self.step = ORDER[i - 1]
        if self.step in (Step.CLUSTER, Step.OPTIONS):
            self.report = None
        self.changed()

    def reset(self) -> None:
        observers = self._observers
        self.__init__(self.api)  # type: ignore[misc]
        self._observers = observers
        self.changed()
