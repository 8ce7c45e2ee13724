"""The N+1 capacity bound of a rolling update (executor/targets/dell_health.capacity_bound):
the hosts left must hold the running VMs' memory plus HA's failover capacity, the largest
hosts assumed out first, and the reasoning is said in words for the pre-flight report."""

from __future__ import annotations

from executor.targets.dell_health import capacity_bound

GIB = 1024
HOSTS = {f"esx{i}": 256 * GIB for i in range(1, 5)}  # 4 x 256 GiB
HA_HOSTS = {
    "enabled": True,
    "admission_control_enabled": True,
    "admission_control_policy": {"type": "failover_level", "failover_level": 1},
}


def test_without_ha_reserve_the_rest_must_hold_the_vms():
    assert capacity_bound(HOSTS, 200 * GIB, {"enabled": True, "admission_control_enabled": False})[0] == 3
    assert capacity_bound(HOSTS, 600 * GIB, None)[0] == 1


def test_ha_failover_hosts_are_kept_free():
    bound, gate = capacity_bound(HOSTS, 300 * GIB, HA_HOSTS)
    why = gate.reason
    # 2 out: 2 left, 1 kept for failover, 256 GiB < 300 GiB; 1 out: 3 left, 2 x 256 = 512 GiB
    assert bound == 1
    assert "keeps 1 host(s) of failover capacity" in why and "at most 1 host(s) out at once" in why


def test_ha_percentage_is_kept_free():
    ha = {
        "enabled": True,
        "admission_control_enabled": True,
        "admission_control_policy": {"type": "resources_percent", "memory_percent": 50},
    }
    assert capacity_bound(HOSTS, 200 * GIB, ha)[0] == 2  # 2 left: 512 GiB, half free = 256 GiB


def test_the_largest_hosts_go_out_first():
    bound, gate = capacity_bound({"big": 1024 * GIB, "a": 128 * GIB, "b": 128 * GIB}, 300 * GIB, None)
    assert (bound, gate.status) == (0, "block")


def test_a_cluster_that_cannot_lose_one_host_says_so():
    bound, gate = capacity_bound(HOSTS, 800 * GIB, HA_HOSTS)
    assert (bound, gate.status) == (0, "block")
    assert "not even one host can go out" in gate.reason and "800 GiB" in gate.reason


def test_two_hosts_with_a_failover_level_go_one_at_a_time_with_a_warning():
    bound, gate = capacity_bound({"a": 256 * GIB, "b": 256 * GIB}, 8 * GIB, HA_HOSTS)
    assert (bound, gate.status) == (1, "warn") and "not HA's failover capacity" in gate.reason
