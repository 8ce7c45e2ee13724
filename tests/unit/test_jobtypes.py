"""executor/jobtypes.py: one declaration per job type, and the copies made from it that
need no database (the SQL copies are checked in tests/integration/test_job_type_places.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from devstack import policies
from executor import handlers, jobparams, jobtypes
from executor.jobtypes import HostsOut, JobTypeDeclarationError, JobTypeSpec, Risk
from executor.vocabulary import TEST_ONLY_JOB_TYPES, JobType, TaskTargetKind

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "supabase" / "migrations"


def test_every_vocabulary_type_is_declared_once_in_the_enum_order():
    assert list(jobtypes.REGISTRY) == list(JobType)
    assert all(s.job_type is t for t, s in jobtypes.REGISTRY.items())
    assert set(jobtypes.CREATABLE) == set(JobType) - TEST_ONLY_JOB_TYPES


def test_a_declaration_that_breaks_a_rule_is_refused_naming_the_type():
    good = jobtypes.REGISTRY
    cases = [
        (
            (*good.values(), good[JobType.SCP_BACKUP]),
            "scp_backup is declared twice",
        ),
        (
            tuple(s for t, s in good.items() if t is not JobType.DIRECTORY_SYNC),
            "without a declaration: directory_sync",
        ),
        (
            tuple(
                JobTypeSpec(t, s.params, s.handler, Risk.HIGH, False) if t is JobType.SCP_BACKUP else s
                for t, s in good.items()
            ),
            "scp_backup: a high-risk type must require a maintenance window",
        ),
        (
            tuple(
                JobTypeSpec(t, s.params, s.handler, s.risk, s.requires_window, HostsOut(param="max_paralel"))
                if t is JobType.FIRMWARE_UPDATE
                else s
                for t, s in good.items()
            ),
            "firmware_update: hosts_out.param max_paralel is no params field",
        ),
        (
            tuple(
                JobTypeSpec(t, None, s.handler, s.risk, s.requires_window) if t is JobType.SCP_BACKUP else s
                for t, s in good.items()
            ),
            "scp_backup: only a test-only type has no params model",
        ),
    ]
    for specs, message in cases:
        with pytest.raises(JobTypeDeclarationError, match=re.escape(message)):
            jobtypes._registry(specs)


def test_target_kinds_come_from_the_params_models_x_target_fields():
    kinds = {t.value: s.target_kinds for t, s in jobtypes.REGISTRY.items()}
    assert kinds["rolling_cluster_update"] == ("cluster", "host")
    assert kinds["scp_backup"] == ("server",)
    assert kinds["firmware_compliance"] == ("ome_instance", "server", "site")
    assert kinds["selftest"] == ()
    known = {k.value for k in jobparams.TargetKind}
    assert all(set(k) <= known and (k or t == "selftest") for t, k in kinds.items())


def test_vm_operation_is_a_medium_risk_vm_job_that_takes_no_host_out():
    # the update wizard's pre-flight fixes: disruptive for the VM's workload (medium), but no
    # host leaves service and no window is needed to fix a VM before the update's window
    s = jobtypes.REGISTRY[JobType.VM_OPERATION]
    assert (s.risk, s.requires_window, s.takes_hosts_out) == (Risk.MEDIUM, False, False)
    assert s.target_kinds == ("vm",) and s.handler == "vm_operation"
    assert s.console is jobtypes.ConsoleForm.WIZARD and JobType.VM_OPERATION not in jobtypes.FORM_TYPES
    assert jobtypes.json_schemas()["job_type_rules"]["vm_operation"]["plan"] == {"tasks": "targets"}
    # every kind a job can target is a kind a task can be about
    assert {k.value for k in jobparams.TargetKind} <= {k.value for k in TaskTargetKind}


def test_the_params_model_of_a_type_is_its_declared_one():
    for t in jobtypes.CREATABLE:
        assert jobtypes.model_for(t) is jobtypes.REGISTRY[t].params
    with pytest.raises(jobparams.UnknownJobTypeError, match="'selftest'"):
        jobtypes.model_for("selftest")


def test_the_builtin_handler_modules_are_the_declared_ones_and_handle_their_type():
    declared = {t: s.handler for t, s in jobtypes.REGISTRY.items() if s.handler is not None}
    assert set(declared) == set(JobType) - TEST_ONLY_JOB_TYPES
    assert handlers.BUILTIN_MODULES == tuple(f"executor.handlers.{m}" for m in declared.values())
    assert sorted(handlers.load_builtin()) == sorted(t.value for t in declared)
    modules = {t.value: handlers.get(t).__module__ for t in declared}
    wrong = {t: m for t, m in modules.items() if m != f"executor.handlers.{declared[JobType(t)]}"}
    assert wrong == {}, f"handled by another module than declared: {wrong}"
    # each handler names its type by the vocabulary's member, not by a string of its own
    spelled = {t.value: handlers.get(t).job_type for t in declared}
    assert {t for t, v in spelled.items() if v is not JobType(t)} == set()


def test_safety_yaml_holds_the_limits_of_every_type_and_nothing_the_declarations_hold():
    data = yaml.safe_load((ROOT / "policies" / "safety.yaml").read_text())
    assert set(data["job_types"]) == {t.value for t in JobType}
    for t, spec in data["job_types"].items():
        assert not set(spec) & set(policies.DECLARED_FIELDS), t
    loaded = policies.load_safety()
    for t, s in jobtypes.REGISTRY.items():
        p = loaded[t.value]
        assert (p.risk, p.requires_window, p.takes_hosts_out) == (
            s.risk.value,
            s.requires_window,
            s.takes_hosts_out,
        )


def test_safety_yaml_naming_a_declared_field_or_an_unknown_type_is_refused(tmp_path):
    data = yaml.safe_load((ROOT / "policies" / "safety.yaml").read_text())
    data["job_types"]["scp_backup"]["risk"] = "high"
    path = tmp_path / "safety.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        policies.SafetyPolicyError, match=r"scp_backup: risk belong to the job type's declaration"
    ):
        policies.load_safety(path)
    del data["job_types"]["scp_backup"]["risk"]
    data["job_types"]["scp_restore"] = data["job_types"]["scp_backup"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(policies.SafetyPolicyError, match=r"scp_restore: not a rackpilot job type"):
        policies.load_safety(path)


def test_the_newest_safety_policies_migration_is_what_the_declarations_generate():
    """A change to a declaration or to safety.yaml ships with a migration made by
    ``python -m devstack.policies safety-migration``; the database test then finds the rows."""
    newest = max(
        (p for p in MIGRATIONS.glob("*.sql") if "insert into public.safety_policies" in p.read_text()),
        key=lambda p: p.name,
    )
    assert newest.read_text() == policies.safety_migration(), (
        f"{newest.name} does not upsert what executor/jobtypes.py and policies/safety.yaml say: add a "
        "migration made with python -m devstack.policies safety-migration supabase/migrations/<version>_<what>.sql"
    )
