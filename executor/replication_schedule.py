"""Due replication pairs get their ``replication_sync`` job.

The decision is SQL's (``executor_schedule_replication`` -> ``schedule_replication_jobs``,
migration 20261206160000_replication.sql): it takes an advisory lock and the pair rows, so
every executor of a site may call it at once and each due pair still gets exactly one
job. The executor only provides the clock: this loop calls it every
``replication_poll_interval`` seconds (executor/config.py, ``RACKPILOT_REPLICATION_POLL_INTERVAL``,
default :data:`SCHEDULE_INTERVAL_S`) while the executor takes ``replication_sync`` jobs.
Why not pg_cron alone: the local stack has no pg_cron, and a site whose executor is down
could not run the jobs anyway (hosted projects may schedule the same SQL function with
pg_cron as well; the two never duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("rackpilot.executor.replication_schedule")

SCHEDULE_INTERVAL_S = 30.0  # seconds between two scheduling calls (schedules are minutes at least)


async def schedule_once(control: Any, executor_id: str) -> int:
    """Create the jobs of the site's due pairs; the number created."""
    n = await control.call("executor_schedule_replication", {"p_executor_id": executor_id}, retry=False)
    if n:
        log.info("replication jobs scheduled", extra={"jobs": n})
    return int(n or 0)


async def schedule_loop(
    control: Any, executor_id: str, stop: asyncio.Event, interval: float = SCHEDULE_INTERVAL_S
) -> None:
    while not stop.is_set():
        try:
            await schedule_once(control, executor_id)
        except Exception as exc:  # noqa: BLE001 - the next round retries; the executor goes on
            log.warning("replication scheduling failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
