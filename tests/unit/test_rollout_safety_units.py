"""Rollout safety rules that need no lab (issue 14): vSAN clusters go one host at a time
whatever the safety policy and the job ask, the failure budget as a count or a percentage,
the gate policy checked, and policies/safety.yaml naming every gate once."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from executor.handlers.rolling_update import RollingClusterUpdateHandler
from executor.jobparams import RollingClusterUpdateParams
from executor.steps import StepError
from executor.targets.dell_health import GATES, Gate, apply_policy, gate_policy, readiness_score

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"cluster_id": str(uuid.uuid4()), "firmware": {"catalog_url": "http://repo/Catalog.xml"}}


def ctx(policy_max: int, checkpoint: dict, gates: dict | None = None, **params):
    jt = {"max_hosts_out_per_cluster": policy_max}
    if gates is not None:
        jt["gates"] = gates
    return SimpleNamespace(
        engine=SimpleNamespace(policy=SimpleNamespace(data={"job_types": {"rolling_cluster_update": jt}})),
        checkpoint=checkpoint,
        params={**PARAMS, **params},
    )


def test_vsan_goes_one_host_at_a_time_whatever_the_policy_says() -> None:
    h = RollingClusterUpdateHandler()
    assert h._max_out(ctx(4, {"capacity_bound": 3}, max_parallel_hosts=4)) == 3
    assert h._max_out(ctx(4, {"capacity_bound": 3, "vsan": True}, max_parallel_hosts=4)) == 1
    assert h._max_out(ctx(16, {"vsan": True}, max_parallel_hosts=16)) == 1


@pytest.mark.parametrize(
    ("budget", "planned", "allowed"),
    [(0, 8, 0), (2, 8, 2), ("25%", 8, 2), ("25%", 3, 0), ("50%", 5, 2), ("100%", 4, 4), ("0%", 9, 0)],
)
def test_failure_budget_count_or_percentage(budget, planned, allowed) -> None:
    p = RollingClusterUpdateParams.model_validate({**PARAMS, "failure_budget": budget})
    assert p.failure_budget_hosts(planned) == allowed


@pytest.mark.parametrize("bad", ["101%", "25", "%", -1, 65, "a%"])
def test_failure_budget_refuses_what_is_neither(bad) -> None:
    with pytest.raises(ValueError, match="failure_budget"):
        RollingClusterUpdateParams.model_validate({**PARAMS, "failure_budget": bad})


def test_maintenance_retry_and_vsan_options_have_documented_bounds() -> None:
    p = RollingClusterUpdateParams.model_validate(PARAMS)
    assert (p.maintenance_retries, p.maintenance_retry_delay_s) == (1, 60)
    assert (p.vsan_object_action, p.vsan_resync_timeout_s, p.event_days) == (
        "ensureObjectAccessibility",
        3600,
        7,
    )
    for field, bad in (
        ("maintenance_retries", 11),
        ("maintenance_retry_delay_s", -1),
        ("vsan_object_action", "x"),
    ):
        with pytest.raises(ValueError, match=field):
            RollingClusterUpdateParams.model_validate({**PARAMS, field: bad})


def test_safety_yaml_names_every_gate_once_and_the_handler_refuses_a_bad_one() -> None:
    data = yaml.safe_load((ROOT / "policies" / "safety.yaml").read_text())
    gates = data["job_types"]["rolling_cluster_update"]["gates"]
    assert list(gates) == list(GATES) and set(gates.values()) <= {"block", "warn"}
    h = RollingClusterUpdateHandler()
    assert h._gates_policy(ctx(1, {}, gates)) == gates
    with pytest.raises(StepError, match="unknown gate"):
        h._gates_policy(ctx(1, {}, {**gates, "fans": "warn"}))
    assert gate_policy(None) == dict.fromkeys(GATES, "block")  # a gate left out blocks


def test_policy_demotes_blocks_only_and_the_score_follows() -> None:
    gates = [Gate("psu", "block", "PS2 Critical"), Gate("thermal", "warn", "43 °C"), Gate("memory", "ok", "")]
    assert readiness_score(gates) == 0
    relaxed = apply_policy(gates, {"psu": "warn", "thermal": "block"})
    assert [g.status for g in relaxed] == ["warn", "warn", "ok"] and readiness_score(relaxed) == 80
