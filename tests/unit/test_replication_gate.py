"""The maintenance gate: every job that takes a storage host down pauses when its replication lags."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from executor.handlers import esxi_upgrade, firmware, power, rolling_update, virtual_media
from executor.handlers._replication_gate import (
    TAKES_HOST_DOWN_POWER,
    current_lag,
    gate_servers,
    replication_lag_blockers,
    server_gate,
    skipped_servers,
)


class Control:
    def __init__(self, pairs):
        self.pairs = pairs

    async def select(self, table, columns, **filters):
        assert table == "replication_pairs"
        ((col, ids),) = filters.items()
        return [p for p in self.pairs if p.get(col) in ids]


def ctx_with(pairs):
    return SimpleNamespace(select=Control(pairs).select)  # the StepContext.select the gate uses


def pair(pid, *, lag_s, max_lag=3600, src="srv-1", dst="srv-9", enabled=True):
    at = None if lag_s is None else (datetime.now(UTC) - timedelta(seconds=lag_s)).isoformat()
    return {
        "id": pid,
        "name": f"pair-{pid}",
        "source_dataset": "tank/vm",
        "target_dataset": "backup/vm",
        "source_server_id": src,
        "target_server_id": dst,
        "max_lag_seconds": max_lag,
        "last_synced_snapshot_at": at,
        "enabled": enabled,
    }


HOSTS = [
    {"id": "h1", "name": "esx01", "server_id": "srv-1"},
    {"id": "h2", "name": "esx02", "server_id": "srv-2"},
]


def test_a_lagging_pair_blocks_its_storage_host_and_names_pair_and_lag():
    pairs = [
        pair("p1", lag_s=7300),
        pair("p2", lag_s=60, src="srv-2"),
        pair("p3", lag_s=None, src="srv-2"),
        pair("p4", lag_s=99999, src="srv-2", enabled=False),
    ]
    found = asyncio.run(replication_lag_blockers(ctx_with(pairs), HOSTS, [], {}))
    got = {(b.details["pair_id"], b.details["host_id"]) for b in found}
    assert got == {("p1", "h1"), ("p3", "h2")}  # p2 within policy, p4 disabled
    b1 = next(b for b in found if b.details["pair_id"] == "p1")
    assert b1.kind == "replication_lag" and "pair-p1" in b1.message and "2.0 h" in b1.message
    assert 7290 <= b1.details["lag_seconds"] <= 7400 and b1.details["max_lag_seconds"] == 3600
    b3 = next(b for b in found if b.details["pair_id"] == "p3")
    assert "never synced" in b3.message


def test_an_override_with_a_reason_lets_that_host_go():
    pairs = [pair("p1", lag_s=7300)]
    blockers = [{"id": "b1", "kind": "replication_lag", "host_id": "h1", "details": {"pair_id": "p1"}}]
    assert (
        asyncio.run(replication_lag_blockers(ctx_with(pairs), HOSTS, blockers, {"b1": "acknowledge"})) == []
    )
    # undecided: still blocked
    assert len(asyncio.run(replication_lag_blockers(ctx_with(pairs), HOSTS, blockers, {}))) == 1


def test_lag_is_the_age_of_the_newest_replicated_snapshot():
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    p = {"last_synced_snapshot_at": (now - timedelta(minutes=90)).isoformat()}
    assert current_lag(p, now.timestamp()) == 5400
    assert current_lag({"last_synced_snapshot_at": None}, now.timestamp()) is None


def test_the_rolling_update_blocker_scan_runs_the_gate():
    src = inspect.getsource(rolling_update.RollingClusterUpdateHandler.blocker_scan)
    assert "replication_lag_blockers(" in src and src.index("replication_lag_blockers(") < src.index(
        "BlockersFound("
    )


class Tables:
    """select() over a few in-memory tables, ``eq``/``in`` filters as the control client's."""

    def __init__(self, **tables):
        self.tables = tables

    async def select(self, table, columns, **filters):
        def keep(row):
            return all(
                (row.get(c) in v) if isinstance(v, list) else row.get(c) == v for c, v in filters.items()
            )

        return [r for r in self.tables.get(table, []) if keep(r)]


def server_ctx(pairs, blockers=(), resolutions=(), hosts=()):
    control = Tables(
        replication_pairs=pairs,
        job_blockers=list(blockers),
        blocker_resolutions=list(resolutions),
        esxi_hosts=list(hosts),
    )
    return SimpleNamespace(job_id="j1", select=control.select)


SERVERS = [{"id": "srv-1", "name": "store01"}, {"id": "srv-2", "name": "store02"}]


def test_server_jobs_name_the_server_and_its_esxi_host_when_it_has_one():
    pairs = [pair("p1", lag_s=7300), pair("p2", lag_s=9000, src="srv-2")]
    found, skip = asyncio.run(
        server_gate(server_ctx(pairs, hosts=[{"id": "h2", "server_id": "srv-2"}]), SERVERS)
    )
    by_pair = {b.details["pair_id"]: b.details for b in found}
    assert skip == set() and set(by_pair) == {"p1", "p2"}
    assert (
        by_pair["p1"]["server_id"] == "srv-1" and by_pair["p1"]["host_id"] is None
    )  # no ESXi host: server only
    assert by_pair["p2"]["host_id"] == "h2" and by_pair["p2"]["host_name"] == "store02"


def test_server_jobs_honour_acknowledge_and_skip_host_decisions():
    pairs = [pair("p1", lag_s=7300), pair("p2", lag_s=9000, src="srv-2")]
    blockers = [
        {
            "id": "b1",
            "job_id": "j1",
            "kind": "replication_lag",
            "host_id": None,
            "server_id": "srv-1",
            "details": {"pair_id": "p1", "server_id": "srv-1"},
        },
        {
            "id": "b2",
            "job_id": "j1",
            "kind": "replication_lag",
            "host_id": "h2",
            "server_id": "srv-2",
            "details": {"pair_id": "p2", "server_id": "srv-2"},
        },
    ]
    resolutions = [
        {"job_id": "j1", "blocker_id": "b1", "action": "acknowledge"},
        {"job_id": "j1", "blocker_id": "b2", "action": "skip_host"},
    ]
    found, skip = asyncio.run(server_gate(server_ctx(pairs, blockers, resolutions), SERVERS))
    assert found == [] and skip == {"srv-2"}
    # an override is per pair: another lagging pair on the same server still blocks
    found, _ = asyncio.run(
        server_gate(server_ctx([*pairs, pair("p3", lag_s=None)], blockers, resolutions), SERVERS)
    )
    assert [b.details["pair_id"] for b in found] == ["p3"]


def test_every_job_type_that_takes_a_storage_host_down_runs_the_gate_before_its_first_change():
    for fn, call in (
        (esxi_upgrade.EsxiUpgradeHandler.preflight, "replication_lag_blockers("),
        (firmware.FirmwareUpdateHandler.compliance, "server_gate("),
        (gate_servers, "server_gate("),
    ):
        src = inspect.getsource(fn)
        assert call in src and src.index(call) < src.index("BlockersFound("), fn.__qualname__
    for fn in (power.PowerOperationHandler.preflight, virtual_media.VirtualMediaHandler.preflight):
        assert "gate_servers(" in inspect.getsource(fn), fn.__qualname__
    assert "on" not in TAKES_HOST_DOWN_POWER
    assert TAKES_HOST_DOWN_POWER | {"on"} == set(power.ACTIONS)
    # a skipped server is left alone by the steps that change it
    assert "replication_skip" in inspect.getsource(skipped_servers)
    assert 'rec.get("skipped")' in inspect.getsource(firmware.FirmwareUpdateHandler._work)
    for fn in (
        power.PowerOperationHandler.apply_power,
        virtual_media.VirtualMediaHandler.media,
        virtual_media.VirtualMediaHandler.boot_once,
    ):
        assert "skipped_servers(ctx)" in inspect.getsource(fn), fn.__qualname__
