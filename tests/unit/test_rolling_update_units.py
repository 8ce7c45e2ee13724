"""Units of the rolling update that decide on their own: whether a failed host is back out of
maintenance. The vCenter here is a UNIT-TEST STAND-IN holding one host's state: the lab's
vCenter cannot be made to keep a host in maintenance after a successful exit task or to
keep it disconnected past a wait, which is what these cases need. The rolling update runs
against the lab end to end in tests/e2e/test_rolling_update.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from executor.handlers.rolling_update import RollingClusterUpdateHandler
from executor.targets.errors import OperationTimedOut


@dataclass
class _Host:
    connection_state: str = "connected"
    in_maintenance: bool = True


@dataclass
class StandInVCenter:
    state: _Host = field(default_factory=_Host)
    comes_back: bool = True
    exit_sticks: bool = True
    powered_on: list[str] = field(default_factory=list)

    def host(self, moref: str) -> _Host:
        return _Host(self.state.connection_state, self.state.in_maintenance)

    def wait_for_host(self, moref: str) -> _Host:
        if not self.comes_back:
            raise OperationTimedOut(
                "host esx1 is notResponding, not connected, after 600s", operation="wait for host"
            )
        self.state.connection_state = "connected"
        return self.host(moref)

    def end_maintenance_tasks(self, moref: str, task_ids: list[str]) -> list[dict[str, str]]:
        return []  # no evacuation under way (the e2e test cancels a real one in the lab)

    def exit_maintenance(self, moref: str) -> None:
        if self.exit_sticks:
            self.state.in_maintenance = False

    def power_on_vm(self, vm: str) -> None:
        self.powered_on.append(vm)


HOST = {"moref": "host-1", "name": "esx1"}


def test_bring_back_reports_a_host_brought_out_of_maintenance():
    vc = StandInVCenter()
    assert RollingClusterUpdateHandler._bring_back(vc, HOST, ["vm-1"], {}) is False
    assert not vc.state.in_maintenance and vc.powered_on == ["vm-1"]


def test_bring_back_says_true_when_the_host_does_not_come_back():
    vc = StandInVCenter(state=_Host(connection_state="notResponding"), comes_back=False)
    assert RollingClusterUpdateHandler._bring_back(vc, HOST, ["vm-1"], {}) is True
    assert vc.powered_on == []  # its VMs stay off until the host is out


def test_bring_back_reads_the_state_back_instead_of_assuming():
    vc = StandInVCenter(exit_sticks=False)  # the exit task ended, the host is still in maintenance
    assert RollingClusterUpdateHandler._bring_back(vc, HOST, ["vm-1"], {}) is True
    assert vc.powered_on == []


def test_every_host_phase_has_words_and_a_colour_in_the_console_monitor():
    """The rollout's phases are declared once (HostPhase); the monitor's timeline names and
    colours each of them, so a new phase cannot reach the console as a bare key."""
    from console.models.monitor import PHASE_COLOURS, PHASES
    from executor.handlers.rolling_update import HostPhase

    assert set(PHASES) == {str(p) for p in HostPhase}
    assert {str(p) for p in HostPhase} <= set(PHASE_COLOURS)


def test_rollout_progress_is_one_typed_store_and_reads_the_older_shape():
    from executor.handlers.rolling_update import (
        AFTER_FLASH,
        BEFORE_APPLY,
        HostCheckpoint,
        HostPhase,
        RolloutProgress,
    )
    from executor.vocabulary import TaskStatus

    p = RolloutProgress()
    cp = p.host("h1")
    cp.phase, cp.boot_before, cp.maintenance_by_job = HostPhase.APPLY, "2026-12-07T00:00:00Z", True
    again = RolloutProgress.model_validate(p.dump())  # what a resumed step reads back
    assert again.hosts["h1"] == cp and again.hosts["h1"].phase in AFTER_FLASH
    assert again.hosts["h1"].task_status == TaskStatus.RUNNING
    # the task shows the checkpoint; nothing is read back from it
    assert cp.display()["phase"] == "apply" and cp.display()["maintenance_by_job"] is True
    # a checkpoint refuses a field it does not declare, and a phase it does not know
    for bad in ({"phase": "apply", "detail": 1}, {"phase": "flashing"}):
        try:
            HostCheckpoint.model_validate(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
    # progress saved before the model (phase by host id only) still resumes in place
    old = RolloutProgress.model_validate({"done": ["a"], "failed": [], "phase": {"b": "maintenance"}})
    assert (
        old.done == ["a"]
        and old.phase_of("b") == HostPhase.MAINTENANCE
        and old.phase_of("c") == HostPhase.QUEUED
    )
    assert HostPhase.MAINTENANCE in BEFORE_APPLY and not BEFORE_APPLY & AFTER_FLASH
    assert HostCheckpoint(phase=HostPhase.BACKED_UP).task_status == TaskStatus.PENDING
    assert HostCheckpoint(phase=HostPhase.SKIPPED).task_status == TaskStatus.SKIPPED
