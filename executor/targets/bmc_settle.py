"""BMC settle: judge a BMC and its host only once they have answered well several times in a
row (after OpenStack Ironic, which waits for 3 good answers 30 s apart, 300 s at most, after
a firmware update).

After a reboot, an iDRAC reset, a flash, or an executor crash in the middle of one of them,
a single good answer proves little: an iDRAC that has just come back answers one request,
restarts a service and drops the next; the Lifecycle Controller reports Ready between two
of its own jobs. :func:`settle` polls through the client's public methods (power state, LC
status, job queue) and returns once ``consecutive`` polls in a row found the BMC answering,
the Lifecycle Controller ready and no iDRAC job running.

Timeouts follow progress: ``stall`` (seconds) bounds a wait in which nothing changes (the
BMC silent, the LC status and every running job's state and percent the same); while
something changes the wait goes on, bounded only by ``ceiling`` (seconds) overall. So a
stalled BMC is told from a slow one.

Options (environment; the lab's time scale compresses the seconds like every other wait):

====================================  =======  =====================================================
RACKPILOT_BMC_SETTLE_CONSECUTIVE      3        good answers in a row (count)
RACKPILOT_BMC_SETTLE_INTERVAL_S       30       seconds between two polls
RACKPILOT_BMC_SETTLE_STALL_S          300      seconds without any change before giving up (stalled)
RACKPILOT_BMC_SETTLE_CEILING_S        2400     seconds at most, progress or not (slow)
====================================  =======  =====================================================
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import TargetError

ENV = {
    "consecutive": "RACKPILOT_BMC_SETTLE_CONSECUTIVE",
    "interval": "RACKPILOT_BMC_SETTLE_INTERVAL_S",
    "stall": "RACKPILOT_BMC_SETTLE_STALL_S",
    "ceiling": "RACKPILOT_BMC_SETTLE_CEILING_S",
}


class BMCNotSettled(TargetError):
    """The BMC did not answer well ``consecutive`` times in a row in time."""


@dataclass(frozen=True)
class SettleOptions:
    consecutive: int = 3  # good answers in a row (count)
    interval: float = 30.0  # seconds between two polls
    stall: float = 300.0  # seconds without any change: stalled
    ceiling: float = 2400.0  # seconds overall, even while progressing: too slow

    @classmethod
    def from_env(cls, time_scale: float = 1.0, env: Mapping[str, str] | None = None) -> SettleOptions:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                value = int(raw) if name == "consecutive" else float(raw)
            except ValueError:
                raise ValueError(f"{var} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{var} must be positive")
            values[name] = value
        opts = cls(**values)
        if time_scale != 1:
            opts = replace(
                opts,
                interval=opts.interval / time_scale,
                stall=opts.stall / time_scale,
                ceiling=opts.ceiling / time_scale,
            )
        return opts


@dataclass
class SettleResult:
    polls: int = 0
    good_in_a_row: int = 0
    seconds: float = 0.0
    unreachable_polls: int = 0
    history: list[str] = field(default_factory=list)  # what each poll saw, in words (last 20)


def _poll(connect: Callable[[], Any]) -> tuple[bool, Any, str]:
    """One look at the BMC: (good, progress marker, what was seen)."""
    try:
        client = connect()  # a BMC still rebooting refuses even the session
        power = client.power_state()
        dell = client.require_dell("BMC settle")
        lc = dell.lc_status()
        jobs = dell.jobs()
    except TargetError as exc:
        return False, ("unreachable",), f"no answer: {type(exc).__name__}"
    running = [j for j in jobs if not j.finished and j.state != "Scheduled"]
    marker = (power, lc.lc_status, lc.server_status, tuple((j.id, j.state, j.percent) for j in running))
    if not lc.ready:
        return False, marker, f"LC {lc.lc_status}, server {lc.server_status}"
    if running:
        return False, marker, "jobs running: " + ", ".join(f"{j.id} {j.state} {j.percent}%" for j in running)
    return True, marker, f"ok (power {power})"


def settle(connect: Callable[[], Any], opts: SettleOptions, *, what: str = "BMC") -> SettleResult:
    """``connect`` returns the BMC's (open) Redfish client, raising a target error while it
    cannot. Block until ``opts.consecutive`` good polls in a row; raise :class:`BMCNotSettled`
    when nothing changed for ``opts.stall`` seconds or after ``opts.ceiling`` seconds."""
    res = SettleResult()
    start = last_change = time.monotonic()
    last_marker: Any = object()
    while True:
        good, marker, seen = _poll(connect)
        now = time.monotonic()
        res.polls += 1
        res.unreachable_polls += marker == ("unreachable",)
        res.history = [*res.history, seen][-20:]
        res.good_in_a_row = res.good_in_a_row + 1 if good else 0
        if res.good_in_a_row >= opts.consecutive:
            res.seconds = round(now - start, 3)
            return res
        if marker != last_marker:
            last_marker, last_change = marker, now
        if not good and now - last_change > opts.stall:
            raise BMCNotSettled(
                f"{what}: stalled, nothing changed for {opts.stall:g}s (last: {seen})", operation="BMC settle"
            )
        if now - start > opts.ceiling:
            raise BMCNotSettled(
                f"{what}: still not settled after {opts.ceiling:g}s (last: {seen})", operation="BMC settle"
            )
        time.sleep(opts.interval)
