"""Thin typed calls to rackpilot's edge functions and REST reads, as the signed-in user.

Every failure becomes a ``console.errors`` class carrying the control plane's own words:
functions answer ``{"error", "code", "details"}`` and PostgREST ``{code, message, details,
hint}``; supabase-py keeps only the message of a function error, so the whole body is read
from the HTTP response it wraps. Authorisation is the control plane's job (role checks in
the functions, RLS underneath); the console shows the refusal, it does not pre-empt it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

import httpx
from postgrest.exceptions import APIError
from supabase_functions.errors import FunctionsError, FunctionsHttpError, FunctionsRelayError

from console.errors import (
    AccessDenied,
    Conflict,
    ConsoleError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)
from console.session import Session

Row = dict[str, Any]
JobAction = Literal["pause", "resume", "cancel", "retry", "force_resume"]
WindowDecision = Literal["approve", "reject", "cancel"]
Decision = Literal["power_off_vm", "migrate_manually_done", "skip_host", "abort", "recheck", "acknowledge"]

# recheck and acknowledge answer the replication gate only (replication_lag blockers, docs/replication.md)
DECISIONS: tuple[str, ...] = (
    "power_off_vm",
    "migrate_manually_done",
    "skip_host",
    "abort",
    "recheck",
    "acknowledge",
)
REPORT_VIEWS: tuple[str, ...] = (
    "v_job_stats_by_type",
    "v_job_stats_by_week",
    "v_job_stats_by_user",
    "v_host_history",
    "v_open_blockers",
    "v_executor_health",
    "v_firmware_compliance",
    "v_firmware_compliance_history",
)
JOB_COLUMNS = (
    "id,type,status,pause_reason,site_id,cluster_id,description,created_by,created_at,started_at,"
    "finished_at,scheduled_for,priority,maintenance_window_id,error,lease_expires_at,"
    "cancel_requested_at,pause_requested_at,attempts,scope"
)
TASK_COLUMNS = (
    "id,job_id,target_kind,target_id,target_name,seq,status,progress,details,error,started_at,"
    "finished_at,updated_at"
)
STEP_COLUMNS = (
    "id,job_id,task_id,seq,step_key,name,status,details,error,attempts,started_at,finished_at,updated_at"
)
BLOCKER_COLUMNS = "id,job_id,kind,host_id,vm_id,server_id,description,details,status,detected_at,resolved_at"


def issues_words(details: Any, limit: int = 5) -> str:
    """A function's schema issues (``{"issues": [{"path": "/params/x", "message": ...}]}``) in
    words: which field and what is wrong, so "the params do not match the schema" says which
    param; a pattern is not quoted (an operator does not read regular expressions)."""
    issues = details.get("issues") if isinstance(details, dict) else None
    if not isinstance(issues, list):
        return ""
    out = []
    for i in issues[:limit]:
        if not isinstance(i, dict):
            continue
        path = str(i.get("path") or "").removeprefix("/params").strip("/")
        field = path.replace("/", " → ") or "the request"
        msg = str(i.get("message") or "is not valid")
        if msg.startswith("does not match the pattern"):
            msg = "is not in the expected form"
        out.append(f"{field}: {msg}")
    more = len(issues) - limit
    return "; ".join(out) + (f" (and {more} more)" if more > 0 else "")


def error_for(status: int | None, code: str, message: str, details: Any = None) -> ConsoleError:
    """The console error class for an HTTP status (or a PostgREST/SQLSTATE code)."""
    kw = {"code": code, "status": status, "details": details}
    if status in (401, 403) or code == "42501":
        return AccessDenied(message, **kw)
    if status == 404 or code in ("PGRST116", "PGRST205", "PGRST202"):
        return NotFound(message, **kw)
    if status == 409 or code in ("23505", "23503"):
        return Conflict(message, **kw)
    if status is not None and status >= 500:
        return ServiceUnavailable(message, **kw)
    return InvalidRequest(message, **kw)


class Api:
    """The control plane as one user sees it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- plumbing --------------------------------------------------------------------
    def invoke(self, name: str, body: dict[str, Any]) -> Row:
        """POST ``body`` to edge function ``name``; its JSON answer, or a ConsoleError."""
        client = self.session.client
        try:
            data = client.functions.invoke(name, {"body": body, "responseType": "json"})
        except FunctionsHttpError as exc:
            raise self._function_error(name, exc) from None
        except FunctionsRelayError as exc:
            raise ServiceUnavailable(
                f"{name}: the gateway could not run the function (HTTP {exc.status})",
                code="relay_error",
                status=exc.status,
            ) from None
        except FunctionsError as exc:
            raise ServiceUnavailable(
                f"{name}: {exc.message}", code="function_error", status=exc.status
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"{name}: the control plane is unreachable ({type(exc).__name__})", code="unreachable"
            ) from None
        if not isinstance(data, dict):
            raise ServiceUnavailable(f"{name}: unexpected answer", code="bad_answer")
        return data

    @staticmethod
    def _function_error(name: str, exc: FunctionsHttpError) -> ConsoleError:
        body: Any = None
        cause = exc.__cause__
        resp = getattr(cause, "response", None)
        if resp is not None:
            try:
                body = resp.json()
            except ValueError:
                body = None
        if isinstance(body, dict) and "error" in body:
            words = issues_words(body.get("details"))
            return error_for(
                exc.status,
                str(body.get("code") or "error"),
                f"{name}: {body['error']}" + (f": {words}" if words else ""),
                body.get("details"),
            )
        return error_for(exc.status, "error", f"{name}: {exc.message}")

    def _rest(self, what: str, build) -> list[Row]:
        try:
            res = build(self.session.client).execute()
        except APIError as exc:
            code = str(exc.code or "")
            status = {"42501": 403, "PGRST116": 406}.get(code)
            raise error_for(
                status, code or "rest_error", f"{what}: {exc.message or 'refused'}", exc.details
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"{what}: the control plane is unreachable ({type(exc).__name__})", code="unreachable"
            ) from None
        data = res.data
        return data if isinstance(data, list) else [data]

    # -- jobs ------------------------------------------------------------------------
    def create_job(
        self,
        job_type: str,
        params: dict[str, Any],
        *,
        dry_run: bool = False,
        site_id: str | None = None,
        maintenance_window_id: str | None = None,
        scheduled_for: str | None = None,
        priority: int | None = None,
        description: str | None = None,
    ) -> Row:
        """201 ``{job_id, status, plan}``; with ``dry_run`` ``{dry_run: true, plan}``, nothing written."""
        body: dict[str, Any] = {"type": job_type, "params": params}
        for k, v in (
            ("site_id", site_id),
            ("maintenance_window_id", maintenance_window_id),
            ("scheduled_for", scheduled_for),
            ("priority", priority),
            ("description", description),
        ):
            if v is not None:
                body[k] = v
        if dry_run:
            body["dry_run"] = True
        return self.invoke("create-job", body)

    def job_control(self, action: JobAction, job_id: str, *, reason: str | None = None) -> Row:
        body: dict[str, Any] = {"action": action, "job_id": job_id}
        if reason:
            body["reason"] = reason
        return self.invoke("job-control", body)

    def resolve_blockers(
        self, job_id: str, decisions: list[dict[str, str]], *, resume: bool | None = None
    ) -> Row:
        body: dict[str, Any] = {"job_id": job_id, "decisions": decisions}
        if resume is not None:
            body["resume"] = resume
        return self.invoke("resolve-blockers", body)

    def jobs(
        self,
        *,
        limit: int = 50,
        statuses: Iterable[str] | None = None,
        job_type: str | None = None,
        site_id: str | None = None,
    ) -> list[Row]:
        def q(c):
            b = c.table("jobs").select(JOB_COLUMNS)
            if statuses:
                b = b.in_("status", list(statuses))
            if job_type:
                b = b.eq("type", job_type)
            if site_id:
                b = b.eq("site_id", site_id)
            return b.order("created_at", desc=True).limit(limit)

        return self._rest("jobs", q)

    def job(self, job_id: str) -> Row:
        rows = self._rest("job", lambda c: c.table("jobs").select(JOB_COLUMNS).eq("id", job_id).limit(1))
        if not rows:
            raise NotFound(f"job {job_id} does not exist or is not visible to you", code="job_not_found")
        return rows[0]

    def job_full(self, job_id: str) -> Row:
        """One job with its tasks, steps and blockers in one request (resource embedding):
        the row carries ``job_tasks``, ``workflow_executions`` and ``job_blockers`` lists."""
        rows = self._rest(
            "job",
            lambda c: (
                c.table("jobs")
                .select(
                    # the hint names the foreign key column: workflow_executions also reaches jobs through job_tasks
                    f"{JOB_COLUMNS},job_tasks!job_id({TASK_COLUMNS}),workflow_executions!job_id({STEP_COLUMNS}),"
                    f"job_blockers!job_id({BLOCKER_COLUMNS})"
                )
                .eq("id", job_id)
                .order("seq", foreign_table="job_tasks")
                .order("seq", foreign_table="workflow_executions")
                .order("detected_at", foreign_table="job_blockers")
                .limit(1)
            ),
        )
        if not rows:
            raise NotFound(f"job {job_id} does not exist or is not visible to you", code="job_not_found")
        return rows[0]

    def job_steps(self, job_id: str) -> list[Row]:
        return self._rest(
            "workflow steps",
            lambda c: (
                c.table("workflow_executions")
                .select(
                    "id,job_id,task_id,seq,step_key,name,status,details,error,attempts,started_at,finished_at,updated_at"
                )
                .eq("job_id", job_id)
                .order("seq")
            ),
        )

    def job_tasks(self, job_id: str) -> list[Row]:
        return self._rest(
            "job tasks",
            lambda c: (
                c.table("job_tasks")
                .select(
                    "id,job_id,target_kind,target_id,target_name,seq,status,progress,error,started_at,finished_at"
                )
                .eq("job_id", job_id)
                .order("seq")
            ),
        )

    def job_blockers(self, job_id: str, *, open_only: bool = False) -> list[Row]:
        def q(c):
            b = (
                c.table("job_blockers")
                .select(
                    "id,job_id,kind,host_id,vm_id,server_id,description,details,status,detected_at,resolved_at"
                )
                .eq("job_id", job_id)
            )
            if open_only:
                b = b.eq("status", "open")
            return b.order("detected_at").order("id")

        return self._rest("blockers", q)

    def blocker_resolutions(self, job_id: str) -> list[Row]:
        return self._rest(
            "blocker decisions",
            lambda c: (
                c.table("blocker_resolutions")
                .select("blocker_id,action,note,resolved_by,created_at")
                .eq("job_id", job_id)
            ),
        )

    # -- inventory ---------------------------------------------------------------------
    def sites(self) -> list[Row]:
        return self._rest(
            "sites", lambda c: c.table("sites").select("id,name,description,timezone").order("name")
        )

    def clusters(self, site_id: str | None = None) -> list[Row]:
        def q(c):
            b = c.table("clusters").select(
                "id,name,site_id,vcenter_id,ha_enabled,ha_admission_control,"
                "drs_enabled,drs_automation,last_sync_at"
            )
            return (b.eq("site_id", site_id) if site_id else b).order("name")

        return self._rest("clusters", q)

    def cluster(self, cluster_id: str) -> Row:
        rows = self._rest(
            "cluster",
            lambda c: (
                c.table("clusters")
                .select(
                    "id,name,site_id,vcenter_id,ha_enabled,ha_admission_control,drs_enabled,drs_automation,details,"
                    "last_sync_at"
                )
                .eq("id", cluster_id)
                .limit(1)
            ),
        )
        if not rows:
            raise NotFound(
                f"cluster {cluster_id} does not exist or is not visible to you", code="cluster_not_found"
            )
        return rows[0]

    def hosts(self, cluster_id: str | None = None) -> list[Row]:
        def q(c):
            b = c.table("esxi_hosts").select(
                "id,name,cluster_id,server_id,esxi_version,esxi_build,"
                "connection_state,in_maintenance,power_state,last_sync_at"
            )
            return (b.eq("cluster_id", cluster_id) if cluster_id else b).order("name")

        return self._rest("hosts", q)

    def vms_on_hosts(self, host_ids: list[str]) -> list[Row]:
        if not host_ids:
            return []
        return self._rest(
            "VMs",
            lambda c: (
                c.table("vms")
                .select(
                    "id,name,host_id,power_state,has_usb_passthrough,has_pci_passthrough,has_vgpu,ft_enabled,"
                    "cdrom_connected,on_local_storage"
                )
                .in_("host_id", host_ids)
                .order("name")
            ),
        )

    def vms(self, vm_ids: list[str]) -> list[Row]:
        if not vm_ids:
            return []
        return self._rest(
            "VMs", lambda c: c.table("vms").select("id,name,host_id,power_state").in_("id", vm_ids)
        )

    def servers(self, site_id: str | None = None, ids: list[str] | None = None) -> list[Row]:
        def q(c):
            b = c.table("servers").select(
                "id,name,site_id,idrac_address,service_tag,model,bios_version,"
                "idrac_version,lc_version,power_state,health,last_seen_at,details"
            )
            if site_id:
                b = b.eq("site_id", site_id)
            if ids is not None:
                b = b.in_("id", ids)
            return b.order("name")

        if ids is not None and not ids:
            return []
        return self._rest("servers", q)

    def inventory(self, kind: str, site_id: str | None = None) -> list[Row]:
        """id/name (and site) rows of a target kind, for pickers: server, host, cluster,
        vcenter, replication_pair, site, ome_instance, firmware_catalog (every x-target kind
        of the job forms)."""
        table = {
            "server": "servers",
            "host": "esxi_hosts",
            "cluster": "clusters",
            "vcenter": "vcenters",
            "replication_pair": "replication_pairs",
            "site": "sites",
            "ome_instance": "ome_instances",
            "firmware_catalog": "firmware_catalogs",
        }.get(kind)
        if table is None:
            raise InvalidRequest(f"unknown target kind {kind!r}", code="unknown_target_kind")
        cols = "id,name" if table in ("esxi_hosts", "sites") else "id,name,site_id"

        def q(c):
            b = c.table(table).select(cols)
            if site_id and table not in ("esxi_hosts", "sites"):
                b = b.eq("site_id", site_id)
            return b.order("name")

        return self._rest(f"{kind} inventory", q)

    def executors(self) -> list[Row]:
        return self._rest("executors", lambda c: c.table("v_executor_health").select("*").order("name"))

    def last_preflight_report(self, cluster_id: str) -> Row | None:
        """The stored pre-flight report (gates per host, vSAN, capacity, what will change) of
        the newest rolling update of a cluster that stored one, with ``job_id`` and ``at``;
        None when none did."""
        jobs = self._rest(
            "jobs",
            lambda c: (
                c.table("jobs")
                .select("id")
                .eq("cluster_id", cluster_id)
                .eq("type", "rolling_cluster_update")
                .order("created_at", desc=True)
                .limit(20)
            ),
        )
        if not jobs:
            return None
        arts = self._rest(
            "pre-flight reports",
            lambda c: (
                c.table("artifacts")
                .select("job_id,content,created_at")
                .eq("kind", "preflight_report")
                .in_("job_id", [j["id"] for j in jobs])
                .order("created_at", desc=True)
                .limit(1)
            ),
        )
        if not arts:
            return None
        raw = arts[0].get("content")
        data = bytes.fromhex(raw[2:]) if isinstance(raw, str) and raw.startswith("\\x") else raw
        try:
            report = json.loads(data) if data else {}
        except (TypeError, ValueError):
            return None
        return {**report, "job_id": arts[0]["job_id"], "at": arts[0]["created_at"]}

    def safety_policies(self) -> list[Row]:
        return self._rest(
            "safety policies", lambda c: c.table("safety_policies").select("*").order("job_type")
        )

    # -- maintenance windows -------------------------------------------------------------
    def windows(
        self, *, site_id: str | None = None, statuses: Iterable[str] | None = None, limit: int = 100
    ) -> list[Row]:
        def q(c):
            b = c.table("maintenance_windows").select(
                "id,site_id,cluster_id,title,reason,starts_at,ends_at,status,requested_by,approved_by,decided_at,"
                "decision_note,created_at"
            )
            if site_id:
                b = b.eq("site_id", site_id)
            if statuses:
                b = b.in_("status", list(statuses))
            return b.order("starts_at", desc=True).limit(limit)

        return self._rest("maintenance windows", q)

    def create_window(
        self,
        *,
        site_id: str,
        title: str,
        starts_at: str,
        ends_at: str,
        cluster_id: str | None = None,
        reason: str = "",
    ) -> Row:
        body: dict[str, Any] = {
            "action": "create",
            "site_id": site_id,
            "title": title,
            "starts_at": starts_at,
            "ends_at": ends_at,
        }
        if cluster_id:
            body["cluster_id"] = cluster_id
        if reason:
            body["reason"] = reason
        return self.invoke("maintenance-windows", body)

    def decide_window(self, action: WindowDecision, window_id: str, note: str = "") -> Row:
        body: dict[str, Any] = {"action": action, "window_id": window_id}
        if note:
            body["note"] = note
        return self.invoke("maintenance-windows", body)

    # -- credentials (admin) -------------------------------------------------------------
    def seal_credential(
        self, *, site_id: str, name: str, kind: str, username: str, secret: str, endpoints: list[Row]
    ) -> Row:
        """The secret goes into this one request body and nowhere else; the answer carries
        only ids (the function never returns the secret). ``endpoints`` ({url, tls}) are
        sealed with it: the executor presents the secret to no other endpoint."""
        return self.invoke(
            "encrypt-credentials",
            {
                "action": "seal",
                "site_id": site_id,
                "name": name,
                "kind": kind,
                "username": username,
                "secret": secret,
                "endpoints": endpoints,
            },
        )

    def reseal_credential(
        self, *, credential_set_id: str, secret: str, endpoints: list[Row], username: str | None = None
    ) -> Row:
        body: dict[str, Any] = {
            "action": "reseal",
            "credential_set_id": credential_set_id,
            "secret": secret,
            "endpoints": endpoints,
        }
        if username:
            body["username"] = username
        return self.invoke("encrypt-credentials", body)

    def credential_status(self, site_id: str) -> Row:
        return self.invoke("encrypt-credentials", {"action": "status", "site_id": site_id})

    # -- notification settings (admin) ---------------------------------------------------
    def notification_settings(self, site_id: str | None = None) -> Row:
        body: dict[str, Any] = {"action": "list"}
        if site_id:
            body["site_id"] = site_id
        return self.invoke("notification-settings", body)

    def upsert_notification_settings(self, settings: list[dict[str, Any]]) -> Row:
        return self.invoke("notification-settings", {"action": "upsert", "settings": settings})

    def delete_notification_settings(self, ids: list[str]) -> Row:
        return self.invoke("notification-settings", {"action": "delete", "ids": ids})

    # -- reports -----------------------------------------------------------------------
    def report(self, view: str, *, limit: int = 1000, filters: dict[str, str] | None = None) -> list[Row]:
        if view not in REPORT_VIEWS:
            raise InvalidRequest(
                f"unknown report {view!r}; choose one of {', '.join(REPORT_VIEWS)}", code="unknown_report"
            )

        def q(c):
            b = c.table(view).select("*")
            for k, v in (filters or {}).items():
                b = b.eq(k, v)
            return b.limit(limit)

        return self._rest(view, q)
