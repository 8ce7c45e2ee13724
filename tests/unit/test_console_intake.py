"""The fleet intake screens without a stack (console/models/intake.py, console/widgets/intake.py):
discovery results with skip reasons in words, the BMC call log, schedules and catalogs, each
registered in the frame; the queries they send are recorded by a fake REST client."""

from __future__ import annotations

from typing import Any

import pytest

from console import screens
from console.errors import ValidationFailed
from console.models.intake import CallLogModel, CatalogsModel, DiscoveryModel, SchedulesModel
from console.widgets.intake import CallLogView, CatalogsView, DiscoveryView, SchedulesView

SITE = "11111111-1111-4111-8111-111111111111"
VCENTER = "88888888-8888-4888-8888-888888888888"


class Query:
    """Records a supabase-py builder chain and answers the table's canned rows."""

    def __init__(self, api: FakeApi, table: str) -> None:
        self.api, self.table, self.ops = api, table, []

    def __getattr__(self, name: str) -> Any:
        def op(*args: Any, **kw: Any) -> Query:
            self.ops.append((name, args))
            return self

        return op


class Client:
    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def table(self, name: str) -> Query:
        q = Query(self.api, name)
        self.api.queries.append(q)
        return q


class FakeApi:
    def __init__(self, rows: dict[str, list[dict]]) -> None:
        self.rows, self.queries, self.jobs = rows, [], []
        self.invoked: list[tuple[str, dict]] = []  # edge function calls (schedules' save)
        self.client = Client(self)

    def invoke(self, name: str, body: dict) -> dict:
        self.invoked.append((name, body))
        return {"schedule": {"id": "new", **{k: v for k, v in body.items() if k != "action"}}}

    def _rest(self, what: str, build: Any) -> list[dict]:
        q = build(self.client)
        return [dict(r) for r in self.rows.get(q.table, [])] or [{"id": "new"}]

    def create_job(self, job_type: str, params: dict, **kw: Any) -> dict:
        self.jobs.append((job_type, params))
        return {"job_id": "22222222-2222-4222-8222-222222222222"}

    def inventory(self, kind: str) -> list[dict]:  # the job form's target pickers
        return [dict(r) for r in self.rows.get(f"inventory:{kind}", [])]

    def sites(self) -> list[dict]:
        return [{"id": SITE, "name": "site-a"}]


def test_discovery_results_say_why_an_address_was_skipped_and_a_scan_is_checked_first():
    api = FakeApi(
        {
            "jobs": [
                {
                    "id": "j1",
                    "status": "completed",
                    "created_at": "2026-12-07T01:00:00Z",
                    "params": {"dry_run": True},
                }
            ],
            "discovery_results": [
                {"address": "10.0.0.1", "outcome": "registered", "reason": None},
                {"address": "10.0.0.2", "outcome": "skipped", "reason": "wrong_credentials"},
                {"address": "10.0.0.3", "outcome": "skipped", "reason": "duplicate_service_tag"},
            ],
        }
    )
    v = DiscoveryView(DiscoveryModel(api), SITE, [{"id": "c1", "name": "root", "kind": "idrac"}])
    v.load()
    assert "skipped: wrong credentials: 1" in v.tally.value and "registered: 1" in v.tally.value
    assert "service tag already registered at another address" in v.table.value
    assert v.scan_pick.label.endswith("dry run")
    with pytest.raises(ValidationFailed) as exc:
        DiscoveryModel(api).scan(site_id=SITE, ranges=[], hosts=[], credential_set_ids=[])
    assert len(exc.value.problems) == 2
    # ranges and credentials are list editors: a bad entry is refused in words as it is added
    v.ranges.entry.value = "10.0.0.0/33x"
    v.ranges.add.click()
    assert "CIDR form such as 10.0.0.0/24" in v.ranges.status.value and v.ranges.value == []
    v.ranges.entry.value = "10.0.0.0/30"
    v.ranges.add.click()
    assert [label for label, _ in v.creds.entry.options] == ["— choose —", "root"]  # by name
    v.creds.entry.value = "c1"
    v.creds.add.click()
    v.dry.click()
    assert api.jobs[-1] == (
        "discovery_scan",
        {
            "site_id": SITE,
            "ranges": ["10.0.0.0/30"],
            "hosts": [],
            "credential_set_ids": ["c1"],
            "port": 443,
            "dry_run": True,
        },
    )
    assert "created (dry run)" in v.status.value


def test_call_log_filters_by_job_and_failure_and_sums_up():
    rows = [
        {
            "id": 1,
            "job_id": "j1",
            "target": "10.0.0.1",
            "method": "GET",
            "path": "/redfish/v1",
            "status": 200,
            "duration_ms": 12,
            "failed": False,
            "at": "2026-12-07T01:00:00Z",
        },
        {
            "id": 2,
            "job_id": "j1",
            "target": "10.0.0.1",
            "method": "POST",
            "path": "/redfish/v1/x",
            "status": 400,
            "duration_ms": 40,
            "failed": True,
            "message_id": "IDRAC.2.8.SYS011",
            "at": "2026-12-07T01:00:01Z",
        },
    ]
    api = FakeApi({"v_bmc_calls": rows})
    v = CallLogView(CallLogModel(api), job_id="j1")
    v.failed.value = True
    v.load()
    assert ("eq", ("job_id", "j1")) in api.queries[-1].ops and ("eq", ("failed", True)) in api.queries[-1].ops
    assert "2 call(s), 1 failed, 1 BMC(s), p95 12 ms" in v.head.value
    assert "IDRAC.2.8.SYS011" in v.table.value and "rp-failed" in v.table.value


def test_schedules_list_runs_and_a_new_schedule_is_validated_in_words():
    api = FakeApi(
        {
            "v_schedules": [
                {
                    "schedule_id": "s1",
                    "name": "nightly inventory",
                    "job_type": "inventory_refresh",
                    "recurrence": "0 1 * * *",
                    "enabled": False,
                    "next_run_at": None,
                    "last_status": "failed",
                    "last_error": "forbidden",
                }
            ],
            "schedule_runs": [{"occurrence_at": "2026-12-07T01:00:00Z", "status": "created", "job_id": "j9"}],
        }
    )
    v = SchedulesView(SchedulesModel(api), SITE)
    v.load()
    assert "nightly inventory" in v.table.value and "forbidden" in v.table.value
    v.pick.value = "s1"
    assert "created" in v.runs.value
    v.enable.click()
    assert ("update", ({"enabled": True},)) in api.queries[-2].ops or any(
        ("update", ({"enabled": True},)) in q.ops for q in api.queries
    )
    with pytest.raises(ValidationFailed) as exc:
        SchedulesModel(api).save(site_id=SITE, name=" ", job_type="vcenter_sync", params={}, recurrence="")
    # the name, the recurrence and the params, each in words, and nothing written
    assert [p.split(":")[0] for p in exc.value.problems] == ["name", "recurrence", "vcenter id"]
    assert not api.invoked


def test_a_new_schedules_params_are_the_job_forms_typed_fields_checked_in_words():
    import ipywidgets as w

    server = "33333333-3333-4333-8333-333333333333"
    api = FakeApi({"inventory:server": [{"id": server, "name": "r740-01"}]})
    v = SchedulesView(SchedulesModel(api), SITE, ["inventory_refresh", "vcenter_sync", "power_operation"])
    assert v.job_type.value == "inventory_refresh"
    v.job_type.value = "power_operation"
    # typed fields from the executor's model, targets picked by name: no JSON box anywhere
    fields = v.form._inputs
    assert isinstance(fields["action"], w.Dropdown) and "force_off" in [
        o[1] for o in fields["action"].options
    ]
    assert isinstance(fields["timeout_s"], w.BoundedIntText)
    assert [o[0] for o in v.form._pick["server_ids"].options] == ["r740-01"]

    def widgets(x):
        yield x
        for c in getattr(x, "children", ()):
            yield from widgets(c)

    assert not any(isinstance(x, w.Textarea) for x in widgets(v))
    v.name.value, v.recurrence.value = "nightly off", "0 3 * * *"
    v.save.click()  # no server, no action: refused in words next to Save, nothing written
    assert "servers: at least 1 item(s)" in v.status.value and "action: required" in v.status.value
    assert "should" not in v.status.value and "pattern" not in v.status.value  # no pydantic text
    assert not api.invoked and not any(q.table == "job_schedules" for q in api.queries)
    v.form._pick["server_ids"].value = (server,)
    fields["action"].value = "force_off"
    v.save.click()
    assert "saved" in v.status.value
    # saved through the schedules function (create-job's checks), never a REST insert
    assert not any(q.table == "job_schedules" for q in api.queries)
    [(fn, row)] = api.invoked
    assert (fn, row["action"]) == ("schedules", "save")
    assert (row["name"], row["job_type"], row["recurrence"]) == (
        "nightly off",
        "power_operation",
        "0 3 * * *",
    )
    assert row["params"] == {
        "server_ids": [server],
        "action": "force_off",
        "wait_for_state": True,
        "timeout_s": 600,
    }


def test_a_schedule_opened_for_no_site_asks_for_one_by_name_and_names_each_rows_site():
    """The app frame opens Schedules for no site in particular: the new schedule's site is
    picked by name (Save says so in words until it is), and the table names each row's site."""
    api = FakeApi(
        {
            "v_schedules": [
                {
                    "schedule_id": "s1",
                    "site_id": SITE,
                    "name": "nightly inventory",
                    "job_type": "inventory_refresh",
                }
            ],
            "inventory:vcenter": [{"id": VCENTER, "name": "vc-a"}],
        }
    )
    v = SchedulesView(SchedulesModel(api), None, ["vcenter_sync"])
    v.load()
    assert "site-a" in v.table.value and SITE not in v.table.value
    assert v.site.value is None and v.site.label == "— site —"
    v.name.value, v.recurrence.value = "hourly sync", "@hourly"
    v.form._pick["vcenter_id"].value = None
    v.save.click()
    assert "site: choose the site the schedule belongs to" in v.status.value
    assert not api.invoked and not any(q.table == "job_schedules" for q in api.queries)
    v.site.value = SITE
    v.save.click()  # the params are still incomplete: refused in words, next to Save
    assert "vcenter id: " in v.status.value and "saved" not in v.status.value
    v.form._pick["vcenter_id"].value = VCENTER
    v.save.click()
    assert "saved" in v.status.value
    [(fn, body)] = api.invoked
    assert fn == "schedules" and body["site_id"] == SITE and body["params"]["vcenter_id"] == VCENTER


def test_catalogs_show_the_last_refresh_in_words_and_refresh_through_create_job():
    api = FakeApi(
        {
            "firmware_catalogs": [
                {
                    "id": "c1",
                    "name": "dell",
                    "url": "https://x/Catalog.xml.gz",
                    "last_status": "moved",
                    "last_error": "the catalog moved to https://y/Catalog.xml.gz; update its URL",
                    "compressed": True,
                },
                {"id": "c2", "name": "mirror", "url": "https://m/Catalog.xml", "last_status": "never"},
            ],
            "firmware_baselines": [
                {"id": "b1", "catalog_id": "c1", "name": "bios only", "components": ["BIOS"]}
            ],
        }
    )
    v = CatalogsView(CatalogsModel(api), SITE)
    v.load()
    assert "moved: update its URL" in v.table.value and "not refreshed yet" in v.table.value
    assert "bios only" in v.baselines.value and "BIOS" in v.baselines.value
    v.pick.value = "c1"
    v.refresh_job.click()
    assert api.jobs[-1] == ("catalog_refresh", {"catalog_id": "c1", "stale_after_days": 180})
    with pytest.raises(ValidationFailed) as exc:
        CatalogsModel(api).register(site_id=SITE, name="x", url="ftp://x", expected_sha256="nothex")
    assert len(exc.value.problems) == 2


def test_the_intake_screens_are_in_the_frame():
    keys = lambda role: {s.key for s in screens.screens_for(role)}  # noqa: E731
    assert {"catalogs", "schedules"} <= keys("viewer") and not {"discovery", "calls"} & keys("viewer")
    assert {"discovery", "calls", "catalogs", "schedules"} <= keys("operator")


def test_every_schedulable_type_is_typed_and_a_count_or_percentage_is_refused_in_words():
    """No job type a schedule may run falls back to a JSON box; the rolling update's failure
    budget (a count or a percentage) is one text box whose refusals are words, not the
    union's member names."""
    import ipywidgets as w

    from console.models.form_fields import collect, field_specs
    from console.models.intake import ScheduleParamsForm
    from executor.vocabulary import TEST_ONLY_JOB_TYPES, JobType

    kinds = {
        (t.value, s.name): s.kind
        for t in JobType
        if t not in TEST_ONLY_JOB_TYPES
        for s in field_specs(t.value)
    }
    assert [k for k, kind in kinds.items() if kind == "json"] == []
    assert kinds[("rolling_cluster_update", "failure_budget")] == "count_or_text"

    cluster = "55555555-5555-4555-8555-555555555555"
    api = FakeApi(
        {
            "inventory:cluster": [{"id": cluster, "name": "prod-a"}],
            "firmware_catalogs": [{"id": "66666666-6666-4666-8666-666666666666", "name": "dell"}],
            "firmware_baselines": [{"id": "77777777-7777-4777-8777-777777777777", "name": "bios"}],
        }
    )
    spec = next(s for s in field_specs("rolling_cluster_update") if s.name == "failure_budget")
    form = ScheduleParamsForm(api, ["rolling_cluster_update"])
    base = {"cluster_id": cluster, "firmware": {"catalog_url": "https://downloads.example.com/Catalog.xml"}}
    for text, want in (("3", 3), (" 25% ", "25%")):
        assert form.params({**base, **collect([spec], {"failure_budget": text})})["failure_budget"] == want
    for text, words in (
        ("abc", "failure budget: a whole number, or a percentage such as 25%"),
        ("101%", "failure budget: a whole number, or a percentage such as 25%"),
        ("65", "failure budget: at most 64"),
    ):
        with pytest.raises(ValidationFailed) as exc:
            form.params({**base, **collect([spec], {"failure_budget": text})})
        assert exc.value.problems == [words], text

    v = SchedulesView(SchedulesModel(api), SITE, ["inventory_refresh", "rolling_cluster_update"])
    v.job_type.value = "rolling_cluster_update"
    assert type(v.form._inputs["failure_budget"]) is w.Text and v.form._inputs["failure_budget"].value == "0"
    assert [o[0] for o in v.form._pick["cluster_id"].options][-1] == "prod-a"
