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
