"""Due job schedules get their jobs: the executor is the clock, create-job's code decides.

Every :func:`fire_interval` seconds the executor asks the ``schedules`` edge function to fire
its site's due schedules (``POST /functions/v1/schedules {"action": "fire", "site_id"}``,
with its service key). The function creates each job through create-job's own planning and
its one SQL write, as the schedule's owner, and records the occurrence in the same
transaction (migration 20261206200200_job_schedules.sql), so every executor of a site may
call it at once: an occurrence still creates exactly one job, and a crash before the commit
leaves it due for the next call.

``RACKPILOT_SCHEDULE_FIRE_INTERVAL`` (seconds, default 15; 0 turns the loop off, e.g. when
pg_cron calls the function instead) is read from the environment like
``RACKPILOT_TARGET_TIME_SCALE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

log = logging.getLogger("rackpilot.executor.schedules")

DEFAULT_INTERVAL_S = 15.0  # seconds between two fire calls (cron's resolution is a minute)


def fire_interval() -> float:
    raw = os.environ.get("RACKPILOT_SCHEDULE_FIRE_INTERVAL", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning(
            "RACKPILOT_SCHEDULE_FIRE_INTERVAL=%r is not a number; using %s s", raw, DEFAULT_INTERVAL_S
        )
        return DEFAULT_INTERVAL_S


async def fire_once(control: Any, site_id: str) -> list[dict[str, Any]]:
    """Fire the site's due schedules; what each occurrence did."""
    client = await control.start()
    res = await client.functions.invoke(
        "schedules", invoke_options={"body": {"action": "fire", "site_id": site_id}, "responseType": "json"}
    )
    fired = (res or {}).get("fired") or [] if isinstance(res, dict) else []
    for f in fired:
        log.info(
            "schedule fired",
            extra={
                "schedule": f.get("schedule_id"),
                "status": f.get("status"),
                "job": f.get("job_id"),
                "code": f.get("code"),
            },
        )
    return fired


async def fire_loop(control: Any, site_id: str, stop: asyncio.Event, interval: float | None = None) -> None:
    every = fire_interval() if interval is None else interval
    if every <= 0:
        return
    while not stop.is_set():
        try:
            await fire_once(control, site_id)
        except Exception as exc:  # noqa: BLE001 - the next round retries; the executor goes on
            log.warning("firing schedules failed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
