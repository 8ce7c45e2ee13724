"""Fleet intake screens' models (issue 18): discovery results, the BMC call log, schedules
and firmware catalogs. Plain Python over :class:`console.api.Api`; the views are in
``console/widgets/intake.py``.

Every write goes where the control plane decides: scans, catalog refreshes through
create-job; a schedule's template through the schedules function (action save: create-job's
checks of the params, targets and site, then the write); enabling a schedule, catalogs and
baselines through REST under RLS (operators); the BMC call log is read-only (operators and
up may read it).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from console.api import Api, Row
from console.errors import ValidationFailed
from console.models.common import short_id
from console.models.job_form import JobForm

SKIP_WORDS = {  # discovery_results.reason, in words
    "no_answer": "no answer",
    "not_redfish": "not a Redfish service",
    "not_dell": "not a Dell iDRAC",
    "wrong_credentials": "wrong credentials",
    "credential_not_allowed": "no credential set may be sent there",
    "duplicate_service_tag": "service tag already registered at another address",
    "session_limit": "session limit",
    "error": "probe error",
}
CATALOG_STATUS_WORDS = {
    "never": "not refreshed yet",
    "ok": "current",
    "moved": "moved: update its URL",
    "stale": "stale: the catalog is old",
    "failed": "last refresh failed",
}


def _site(b: Any, site_id: str | None) -> Any:
    return b.eq("site_id", site_id) if site_id else b


class DiscoveryModel:
    """What each discovery scan found at each address, and scans started from here."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def scans(self, site_id: str | None = None, limit: int = 20) -> list[Row]:
        return self.api._rest(
            "discovery scans",
            lambda c: (
                _site(
                    c.table("jobs").select("id,status,created_at,params,result").eq("type", "discovery_scan"),
                    site_id,
                )
                .order("created_at", desc=True)
                .limit(limit)
            ),
        )

    def results(self, job_id: str) -> list[Row]:
        rows = self.api._rest(
            "discovery results",
            lambda c: (
                c.table("discovery_results")
                .select(
                    "id,address,outcome,reason,service_tag,model,idrac_generation,firmware_version,message,server_id"
                )
                .eq("job_id", job_id)
                .order("address")
            ),
        )
        for r in rows:
            r["why"] = SKIP_WORDS.get(str(r.get("reason") or ""), r.get("reason") or "")
        return rows

    @staticmethod
    def tally(rows: list[Row]) -> dict[str, int]:
        """Addresses per outcome, skipped ones per reason in words."""
        out: Counter[str] = Counter()
        for r in rows:
            out["skipped: " + r["why"] if r.get("outcome") == "skipped" else str(r.get("outcome"))] += 1
        return dict(sorted(out.items()))

    def scan(
        self,
        *,
        site_id: str,
        ranges: list[str],
        hosts: list[str],
        credential_set_ids: list[str],
        dry_run: bool = True,
        port: int = 443,
    ) -> Row:
        problems = []
        if not ranges and not hosts:
            problems.append("ranges or hosts: name at least one address range or host")
        if not credential_set_ids:
            problems.append("credential sets: choose at least one, in the order to try them")
        if problems:
            raise ValidationFailed("the scan is incomplete", problems)
        return self.api.create_job(
            "discovery_scan",
            {
                "site_id": site_id,
                "ranges": ranges,
                "hosts": hosts,
                "credential_set_ids": credential_set_ids,
                "port": port,
                "dry_run": dry_run,
            },
        )


class CallLogModel:
    """The BMC call log of a job or a site (v_bmc_calls: no bodies, secrets never stored)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def calls(
        self,
        *,
        job_id: str | None = None,
        site_id: str | None = None,
        failed_only: bool = False,
        limit: int = 500,
    ) -> list[Row]:
        def q(c: Any) -> Any:
            b = c.table("v_bmc_calls").select(
                "id,job_id,job_type,step,target,protocol,method,path,status,duration_ms,message_id,error,at,failed"
            )
            if job_id:
                b = b.eq("job_id", job_id)
            b = _site(b, site_id)
            if failed_only:
                b = b.eq("failed", True)
            return b.order("at", desc=True).limit(limit)

        return self.api._rest("BMC call log", q)

    @staticmethod
    def summary(rows: list[Row]) -> dict[str, Any]:
        durations = sorted(int(r.get("duration_ms") or 0) for r in rows)
        return {
            "calls": len(rows),
            "failed": sum(1 for r in rows if r.get("failed")),
            "targets": len({r.get("target") for r in rows}),
            "p95_ms": durations[int(0.95 * (len(durations) - 1))] if durations else None,
        }


class ScheduleParamsForm(JobForm):
    """The params of a scheduled job, checked as the job form checks them (the executor's own
    model, problems in words), for every type a schedule may run: a schedule has no wizard, so
    rolling updates are typed here too."""

    def __init__(self, api: Api, job_types: list[str] | tuple[str, ...], job_type: str | None = None) -> None:
        self.job_types = tuple(job_types)
        super().__init__(api, job_type or self.job_types[0])

    def choose(self, job_type: str) -> None:
        if job_type not in self.job_types:
            raise ValidationFailed(
                f"a schedule runs one of {', '.join(self.job_types)}",
                [f"job type: {job_type} is not one of them"],
            )
        self.job_type = job_type
        self.plan, self._planned, self.result = None, None, None
        self.changed()


class SchedulesModel:
    """Job schedules (v_schedules) and their runs; save, enable and disable."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def schedules(self, site_id: str | None = None) -> list[Row]:
        return self.api._rest(
            "schedules", lambda c: _site(c.table("v_schedules").select("*"), site_id).order("name")
        )

    def runs(self, schedule_id: str, limit: int = 50) -> list[Row]:
        return self.api._rest(
            "schedule runs",
            lambda c: (
                c.table("schedule_runs")
                .select("occurrence_at,status,job_id,code,error")
                .eq("schedule_id", schedule_id)
                .order("occurrence_at", desc=True)
                .limit(limit)
            ),
        )

    def save(
        self,
        *,
        site_id: str,
        name: str,
        job_type: str,
        params: dict[str, Any],
        recurrence: str,
        timezone: str = "UTC",
        missed_policy: str = "skip",
        window_series_id: str | None = None,
    ) -> Row:
        problems = []
        if not name.strip():
            problems.append("name: give the schedule a name")
        if not recurrence.strip():
            problems.append("recurrence: a cron expression, @hourly/@daily/@weekly or an RRULE")
        if missed_policy not in ("skip", "run_once"):
            problems.append("missed runs: skip or run_once")
        try:  # the params as the job form checks them, so a schedule never fires a refused job
            params = ScheduleParamsForm(self.api, [job_type]).params(params)
        except ValidationFailed as exc:
            problems += exc.problems
        if problems:
            raise ValidationFailed("the schedule is incomplete: " + "; ".join(problems), problems)
        body: dict[str, Any] = {
            "action": "save",
            "site_id": site_id,
            "name": name.strip(),
            "job_type": job_type,
            "params": params,
            "recurrence": recurrence.strip(),
            "timezone": timezone,
            "missed_policy": missed_policy,
        }
        if window_series_id:
            body["window_series_id"] = window_series_id
        # the schedules function runs create-job's checks and writes the row (no direct insert)
        schedule: Row = self.api.invoke("schedules", body)["schedule"]
        return schedule

    def set_enabled(self, schedule_id: str, enabled: bool) -> Row:
        return self.api._rest(
            "schedule", lambda c: c.table("job_schedules").update({"enabled": enabled}).eq("id", schedule_id)
        )[0]


class CatalogsModel:
    """Registered firmware catalogs with their last refresh, baselines, and refresh jobs."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def catalogs(self, site_id: str | None = None) -> list[Row]:
        rows = self.api._rest(
            "firmware catalogs",
            lambda c: _site(
                c.table("firmware_catalogs").select(
                    "id,site_id,name,url,tls_verify,expected_sha256,signature_status,compressed,component_count,"
                    "catalog_date,fetched_at,last_status,last_error,moved_to,version"
                ),
                site_id,
            ).order("name"),
        )
        for r in rows:
            r["state"] = CATALOG_STATUS_WORDS.get(str(r.get("last_status")), str(r.get("last_status")))
        return rows

    def baselines(self, site_id: str | None = None) -> list[Row]:
        return self.api._rest(
            "firmware baselines",
            lambda c: _site(
                c.table("firmware_baselines").select("id,site_id,catalog_id,name,components,description"),
                site_id,
            ).order("name"),
        )

    def register(
        self,
        *,
        site_id: str,
        name: str,
        url: str,
        tls_verify: bool = True,
        expected_sha256: str | None = None,
    ) -> Row:
        problems = []
        if not url.startswith(("https://", "http://")):
            problems.append("url: the catalog's http(s) URL (Catalog.xml or Catalog.xml.gz)")
        if expected_sha256 and (
            len(expected_sha256) != 64 or any(ch not in "0123456789abcdef" for ch in expected_sha256)
        ):
            problems.append("pin: 64 lower-case hex digits, or empty")
        if not name.strip():
            problems.append("name: give the catalog a name")
        if problems:
            raise ValidationFailed("the catalog is incomplete", problems)
        row = {
            "site_id": site_id,
            "name": name.strip(),
            "url": url,
            "tls_verify": tls_verify,
            "expected_sha256": expected_sha256 or None,
        }
        return self.api._rest("register catalog", lambda c: c.table("firmware_catalogs").insert(row))[0]

    def add_baseline(self, *, site_id: str, catalog_id: str, name: str, components: list[str]) -> Row:
        row = {"site_id": site_id, "catalog_id": catalog_id, "name": name.strip(), "components": components}
        return self.api._rest("add baseline", lambda c: c.table("firmware_baselines").insert(row))[0]

    def refresh(self, catalog_id: str, stale_after_days: int = 180) -> Row:
        return self.api.create_job(
            "catalog_refresh", {"catalog_id": catalog_id, "stale_after_days": stale_after_days}
        )


def label(row: Row, key: str = "name") -> str:
    return str(row.get(key) or short_id(row.get("id")))
