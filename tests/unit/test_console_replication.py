"""Console replication view: lag as the gate computes it, the lag plot's series, sync now
through create-job, and dataset names validated before anything is sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.errors import ValidationFailed
from console.models.replication import ReplicationModel
from console.widgets.replication import ReplicationView, lag_svg


class Query:
    def __init__(self, api, table):
        self.api, self.table, self.ops = api, table, []

    def __getattr__(self, name):
        def op(*a, **k):
            self.ops.append((name, a, k))
            return self

        return op


class FakeApi:
    def __init__(self, pairs, runs):
        self.data = {"replication_pairs": pairs, "replication_runs": runs}
        self.inserted, self.jobs = [], []

    def _rest(self, what, build):
        client = type("C", (), {"table": lambda _s, t: Query(self, t)})()
        q = build(client)
        if any(name == "insert" for name, _, _ in q.ops):
            self.inserted.append(q.ops[0][1][0])
            return [{"id": "new"}]
        return [dict(r) for r in self.data[q.table]]

    def create_job(self, job_type, params, **kw):
        self.jobs.append((job_type, params))
        return {"job_id": "j1", "plan": {}}


NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
PAIRS = [
    {
        "id": "p1",
        "name": "vm",
        "source_host": "a",
        "source_dataset": "tank/vm",
        "target_host": "b",
        "target_dataset": "backup/vm",
        "enabled": True,
        "max_lag_seconds": 3600,
        "schedule": "@hourly",
        "last_synced_snapshot_at": (NOW - timedelta(hours=3)).isoformat(),
        "last_bytes": 123,
        "last_success_at": NOW.isoformat(),
    },
    {
        "id": "p2",
        "name": "db",
        "source_host": "a",
        "source_dataset": "tank/db",
        "target_host": "b",
        "target_dataset": "backup/db",
        "enabled": True,
        "max_lag_seconds": 3600,
        "schedule": "@hourly",
        "last_synced_snapshot_at": (NOW - timedelta(minutes=5)).isoformat(),
    },
]
RUNS = [
    {
        "finished_at": "2026-12-06T10:00:00",
        "lag_seconds": 30,
        "bytes": 5,
        "status": "succeeded",
        "kind": "full",
    },
    {
        "finished_at": "2026-12-06T11:00:00",
        "lag_seconds": None,
        "bytes": 0,
        "status": "failed",
        "kind": "none",
    },
    {
        "finished_at": "2026-12-06T11:30:00",
        "lag_seconds": 45,
        "bytes": 7,
        "status": "succeeded",
        "kind": "incremental",
    },
]


def test_pairs_with_lag_and_the_lag_series():
    m = ReplicationModel(FakeApi(PAIRS, RUNS))
    rows = {r["name"]: r for r in m.pairs(now=NOW.timestamp())}
    assert rows["vm"]["current_lag_seconds"] == 3 * 3600 and rows["vm"]["lagging"]
    assert rows["db"]["current_lag_seconds"] == 300 and not rows["db"]["lagging"]
    s = m.lag_series("p1")
    assert s["lag_s"] == [30, 45] and s["failures"] == ["2026-12-06T11:00:00"]
    assert "<polyline" in lag_svg(s)


def test_the_lag_plot_is_the_console_chart_with_the_allowed_lag():
    s = {
        "x": ["2026-12-06T10:00:00", "2026-12-06T11:00:00", "2026-12-06T12:00:00"],
        "lag_s": [600, 5400, 9000],
    }
    svg = lag_svg(s, 7200)
    # drawn by console/widgets/charts.py: its classes, its legend, one line per series
    assert svg.startswith("<svg") and 'class="rp-chart rp-lines rp-lag-plot"' in svg
    assert svg.count('class="rp-line"') == 2 and ">lag<" in svg and ">allowed lag<" in svg
    assert " h<" in svg and ">12-06 12h<" in svg  # hours for a lag of hours; month-day and hour as labels
    assert "now at most 2.5 h" in svg
    assert lag_svg({"x": [], "lag_s": []}, 7200) == "<i>no successful sync yet</i>"
    # minutes for small lags, and no allowed line when the pair has none
    svg = lag_svg({"x": ["a", "b"], "lag_s": [300, 900]})
    assert svg.count('class="rp-line"') == 1 and " min<" in svg
    # names are escaped like every chart's
    assert "<script>" not in lag_svg({"x": ["<script>"], "lag_s": [5]})


def test_sync_now_goes_through_create_job():
    api = FakeApi(PAIRS, RUNS)
    view = ReplicationView(ReplicationModel(api))
    view.load()
    assert "behind policy" in view.table.value and "rp-replication" in view.table.value
    view.pair.value = "p1"
    view._sync(False)
    assert api.jobs == [("replication_sync", {"replication_pair_ids": ["p1"], "dry_run": False})]
    assert "rp-lag-plot" in view.plot.value


@pytest.mark.parametrize(
    "bad", ["tank/a;reboot", "tank/$(id)", "tank/a b", "tank/../x", "tank/a\x00", "tank//a"]
)
def test_dataset_names_are_validated_before_anything_is_sent(bad):
    api = FakeApi(PAIRS, RUNS)
    with pytest.raises(ValidationFailed):
        ReplicationModel(api).register_pair(
            site_id="s",
            name="n",
            source_host="a",
            source_dataset=bad,
            target_host="b",
            target_dataset="backup/x",
        )
    assert api.inserted == []
    ReplicationModel(api).register_pair(
        site_id="s",
        name="n",
        source_host="a",
        source_dataset="tank/ok",
        target_host="b",
        target_dataset="backup/ok",
        retention_grid="24x1h",
    )
    assert api.inserted and api.inserted[0]["source_dataset"] == "tank/ok"


@pytest.mark.parametrize(
    "field",
    ["name", "source_host", "source_dataset", "target_host", "target_dataset", "schedule", "retention_grid"],
)
def test_a_nul_in_any_text_field_is_refused_naming_the_field(field):
    """REST direct would refuse it with 22P05 'unsupported Unicode escape sequence', which
    names no field (docs/replication.md): the console refuses it first, naming the field."""
    api = FakeApi(PAIRS, RUNS)
    good = {
        "site_id": "s",
        "name": "n",
        "source_host": "a",
        "source_dataset": "tank/ok",
        "target_host": "b",
        "target_dataset": "backup/ok",
        "schedule": "@hourly",
        "retention_grid": "24x1h",
    }
    with pytest.raises(ValidationFailed) as err:
        ReplicationModel(api).register_pair(**{**good, field: good[field][:1] + "\x00" + good[field][1:]})
    assert str(err.value).startswith(f"{field}: ") and "NUL" in str(err.value), str(err.value)
    assert api.inserted == []
