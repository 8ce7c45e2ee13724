"""The maintenance gate: a rolling update pauses on a storage host whose replication lags."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from executor.handlers import rolling_update
from executor.handlers._replication_gate import current_lag, replication_lag_blockers


class Control:
    def __init__(self, pairs):
        self.pairs = pairs

    async def select(self, table, columns, **filters):
        assert table == "replication_pairs"
        (col, ids), = filters.items()
        return [p for p in self.pairs if p.get(col) in ids]


def ctx_with(pairs):
    return SimpleNamespace(session=SimpleNamespace(runner=SimpleNamespace(control=Control(pairs))))


def pair(pid, *, lag_s, max_lag=3600, src="srv-1", dst="srv-9", enabled=True):
    at = None if lag_s is None else (datetime.now(UTC) - timedelta(seconds=lag_s)).isoformat()
    return {"id": pid, "name": f"pair-{pid}", "source_dataset": "tank/vm", "target_dataset": "backup/vm",
            "source_server_id": src, "target_server_id": dst, "max_lag_seconds": max_lag,
            "last_synced_snapshot_at": at, "enabled": enabled}


HOSTS = [{"id": "h1", "name": "esx01", "server_id": "srv-1"}, {"id": "h2", "name": "esx02", "server_id": "srv-2"}]


def test_a_lagging_pair_blocks_its_storage_host_and_names_pair_and_lag():
    pairs = [pair("p1", lag_s=7300), pair("p2", lag_s=60, src="srv-2"), pair("p3", lag_s=None, src="srv-2"),
             pair("p4", lag_s=99999, src="srv-2", enabled=False)]
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
    assert asyncio.run(replication_lag_blockers(ctx_with(pairs), HOSTS, blockers, {"b1": "acknowledge"})) == []
    # undecided: still blocked
    assert len(asyncio.run(replication_lag_blockers(ctx_with(pairs), HOSTS, blockers, {}))) == 1


def test_lag_is_the_age_of_the_newest_replicated_snapshot():
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    p = {"last_synced_snapshot_at": (now - timedelta(minutes=90)).isoformat()}
    assert current_lag(p, now.timestamp()) == 5400
    assert current_lag({"last_synced_snapshot_at": None}, now.timestamp()) is None


def test_the_rolling_update_blocker_scan_runs_the_gate():
    src = inspect.getsource(rolling_update.RollingClusterUpdateHandler.blocker_scan)
    assert "replication_lag_blockers(" in src and src.index("replication_lag_blockers(") < src.index("BlockersFound(")
