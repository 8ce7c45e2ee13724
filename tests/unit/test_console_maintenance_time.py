"""Time in maintenance per host: the rolling update's record on the host task
(executor/host_maintenance.py) and the Reports chart drawn from it (issue 19)."""

from __future__ import annotations

import datetime as dt

from console.models.reports import maintenance_chart
from console.widgets.reports import draw_chart
from executor.host_maintenance import KEY, maintenance_span, stamp_entered, stamp_exited

T0 = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def test_a_stay_is_entered_then_exited_and_a_resume_keeps_the_first_entry():
    d: dict = {}
    stamp_exited(d, at(1))  # never entered: nothing to close
    assert KEY not in d and maintenance_span(d) is None
    stamp_entered(d, at(0))
    assert maintenance_span(d) == (T0, None)  # still in maintenance
    stamp_entered(d, at(5))  # a resumed host enters again without having left: the first entry stands
    stamp_exited(d, at(12))
    stamp_exited(d, at(30))  # a second exit does not move the first
    assert maintenance_span(d) == (T0, T0 + dt.timedelta(minutes=12))
    stamp_entered(d, at(40))  # a new stay after the exit starts a new record
    assert maintenance_span(d) == (T0 + dt.timedelta(minutes=40), None)


def test_unreadable_records_are_no_stay():
    for details in (None, {}, {KEY: "x"}, {KEY: {}}, {KEY: {"entered": "yesterday"}}, [1]):
        assert maintenance_span(details) is None, details
    # an exit before the entry (a clock that went back) counts as not exited, not as negative time
    assert maintenance_span({KEY: {"entered": at(10), "exited": at(5)}}) == (
        T0 + dt.timedelta(minutes=10),
        None,
    )
    # a naive timestamp is read as UTC
    assert maintenance_span({KEY: {"entered": "2026-12-07T03:00:00"}}) == (T0, None)


def test_the_chart_sums_each_hosts_stays_and_counts_an_open_one_up_to_now():
    stays = [
        {"host": "esx-02", "job_id": "j1", "entered": T0, "exited": T0 + dt.timedelta(minutes=12)},
        {"host": "esx-01", "job_id": "j1", "entered": T0, "exited": T0 + dt.timedelta(minutes=7, seconds=30)},
        {"host": "esx-01", "job_id": "j2", "entered": T0, "exited": T0 + dt.timedelta(minutes=3)},
        {"host": "esx-03", "job_id": "j2", "entered": T0, "exited": None},
    ]
    spec = maintenance_chart(stays, now=T0 + dt.timedelta(minutes=20))
    assert spec == {
        "kind": "stacked",
        "labels": ["esx-01", "esx-02", "esx-03"],
        "title": "time in maintenance per host",
        "unit": " min",
        "series": {
            "in maintenance (entered to exited)": [10.5, 12.0, 0.0],
            "still in maintenance (so far)": [0.0, 0.0, 20.0],
        },
    }
    svg = draw_chart(spec)
    assert "time in maintenance per host" in svg and svg.count('<rect class="rp-bar"') == 6
    assert "esx-02 in maintenance (entered to exited): 12 min" in svg
    # no open stay: one series only; nothing recorded: no chart
    assert list(maintenance_chart(stays[:3], now=T0)["series"]) == ["in maintenance (entered to exited)"]  # type: ignore[index]
    assert maintenance_chart([]) is None
