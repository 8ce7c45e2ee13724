"""The replication schedule's interval is an executor option (``replication_poll_interval``)."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from pydantic import ValidationError

from executor import runner
from executor.config import ExecutorSettings
from executor.replication_schedule import SCHEDULE_INTERVAL_S, schedule_loop

BASE = {"supabase_url": "http://127.0.0.1:1", "supabase_key": "k", "site": "s"}


def test_the_option_has_its_documented_default_and_bounds(monkeypatch, tmp_path):
    assert (
        ExecutorSettings(**BASE, state_dir=tmp_path).replication_poll_interval == SCHEDULE_INTERVAL_S == 30.0
    )
    monkeypatch.setenv("RACKPILOT_REPLICATION_POLL_INTERVAL", "120")
    assert ExecutorSettings(**BASE, state_dir=tmp_path).replication_poll_interval == 120.0
    for bad in ("0", "0.5", "7200"):
        monkeypatch.setenv("RACKPILOT_REPLICATION_POLL_INTERVAL", bad)
        with pytest.raises(ValidationError):
            ExecutorSettings(**BASE, state_dir=tmp_path)


def test_the_executor_hands_the_option_to_the_schedule_loop():
    src = inspect.getsource(runner)
    assert "interval=self.s.replication_poll_interval" in src[src.index("schedule_loop(") :]


def test_the_loop_asks_sql_once_per_interval_until_stopped():
    class Control:
        def __init__(self):
            self.calls = 0

        async def call(self, fn, params, retry=True):
            assert (
                fn == "executor_schedule_replication" and params == {"p_executor_id": "e1"} and retry is False
            )
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("control plane away")  # a failed round does not end the loop
            return 0

    async def go():
        control, stop = Control(), asyncio.Event()
        task = asyncio.create_task(schedule_loop(control, "e1", stop, interval=0.01))
        async with asyncio.timeout(10):
            while control.calls < 4:
                await asyncio.sleep(0.005)
        stop.set()
        async with asyncio.timeout(10):
            await task
        return control.calls

    assert asyncio.run(go()) >= 4
