"""BMC settle options and decisions (executor/targets/bmc_settle.py). The client here is a
UNIT-TEST STAND-IN scripted poll by poll (answers, LC state, job percent), to hold the
counting and the stalled-versus-slow rule exactly; the lab exercises the same code end to end
in tests/e2e/test_rolling_update.py (kill -9 mid-flash with the BMC unreachable)."""

from __future__ import annotations

import pytest

from executor.targets.bmc_settle import BMCNotSettled, SettleOptions, settle
from executor.targets.dell import DellJob, LCStatus
from executor.targets.errors import TargetUnreachable

FAST = SettleOptions(consecutive=3, interval=0.001, stall=0.05, ceiling=5)


class Scripted:
    """Each poll takes the next entry: None = no answer, else (lc_ready, running job percent)."""

    def __init__(self, script):
        self.script = list(script)
        self.cur = None

    def connect(self):
        self.cur = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if self.cur is None:
            raise TargetUnreachable("connection refused", operation="open session")
        return self

    def power_state(self):
        return "On"

    def require_dell(self, what):
        return self

    def lc_status(self):
        ready = self.cur[0]
        return LCStatus(
            "Ready" if ready else "NotReady", "Ready", "OutOfPOST", "Ready" if ready else "NotReady"
        )

    def jobs(self):
        pct = self.cur[1]
        return [] if pct is None else [DellJob("JID_1", "fw", "FirmwareUpdate", "Running", pct, "", "")]


def test_options_have_defaults_units_and_follow_the_time_scale():
    assert SettleOptions() == SettleOptions(3, 30.0, 300.0, 2400.0)
    o = SettleOptions.from_env(
        10, {"RACKPILOT_BMC_SETTLE_CONSECUTIVE": "5", "RACKPILOT_BMC_SETTLE_INTERVAL_S": "20"}
    )
    assert (o.consecutive, o.interval, o.stall) == (5, 2.0, 30.0)
    with pytest.raises(ValueError, match="positive"):
        SettleOptions.from_env(1, {"RACKPILOT_BMC_SETTLE_STALL_S": "0"})


def test_one_good_answer_between_refusals_is_not_settled():
    c = Scripted([None, (True, None), None, (True, None), (True, None), (True, None)])
    res = settle(c.connect, FAST)
    assert res.polls == 6 and res.unreachable_polls == 2 and res.good_in_a_row == 3


def test_a_running_job_that_progresses_is_slow_not_stalled():
    c = Scripted([(False, p) for p in range(0, 100, 1)] + [(True, None)])
    res = settle(c.connect, SettleOptions(3, 0.001, 0.05, 5))
    assert res.polls >= 100


def test_a_silent_bmc_is_stalled():
    with pytest.raises(BMCNotSettled, match="stalled"):
        settle(Scripted([None]).connect, FAST)
