"""Every place that names a job type names the same ones, and says of it what its one
declaration (``executor/jobtypes.py``) says (issue 13, item 2's drift test).

Most places are made from the declarations (job-schemas.json with its ``job_type_rules``,
the handler modules, the console's form types, the safety_policies upsert); the others are
copies this test reads: the SQL enum and table, safety.yaml's types, jobs.ts. It fails
naming the place and the type when a place lacks a type it should have, or names one
rackpilot does not have, and naming the type and the field when a row of
``public.safety_policies`` differs from what the declarations and safety.yaml generate.

The vocabulary (``executor/vocabulary.py``, held to ``pg_enum`` by test_vocabulary.py) is
the reference. ``selftest`` (``TEST_ONLY_JOB_TYPES``) is the executor's own probe: the
database, the safety policy and the handler registry know it; create-job, its schemas and
the console do not. A place that names only some types by design (jobs.ts) must name only
real ones.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

from executor.jobtypes import REGISTRY, ConsoleForm
from executor.vocabulary import TEST_ONLY_JOB_TYPES, JobType
from tests.integration.pgutil import connect

ROOT = Path(__file__).resolve().parents[2]
JOBS_TS = ROOT / "supabase" / "functions" / "_shared" / "jobs.ts"
SCHEMAS = ROOT / "supabase" / "functions" / "_shared" / "job-schemas.json"
SAFETY_YAML = ROOT / "policies" / "safety.yaml"

ALL = {t.value for t in JobType}
CREATABLE = ALL - {t.value for t in TEST_ONLY_JOB_TYPES}


# -- the places ---------------------------------------------------------------------------------


def declared_params_models() -> set[str]:
    return {t.value for t, s in REGISTRY.items() if s.params is not None}


def declared_hosts_out() -> set[str]:
    return {t.value for t, s in REGISTRY.items() if s.takes_hosts_out}


def job_schemas_json() -> set[str]:
    return set(json.loads(SCHEMAS.read_text())["job_types"])


def job_schemas_json_rules() -> set[str]:
    return set(json.loads(SCHEMAS.read_text())["job_type_rules"])


def jobs_ts_named() -> set[str]:
    """Types jobs.ts compares a job's type with, or lists in a set of types."""
    src = JOBS_TS.read_text()
    named = set(re.findall(r"\b(?:type|jobType)\s*[!=]==\s*\"([^\"]+)\"", src))
    for body in re.findall(r"_JOB_TYPES\b[^=]*=\s*new Set\(\[([^\]]*)\]", src):
        named |= set(re.findall(r"\"([^\"]+)\"", body))
    return named


def plan_job_hosts_out_rules() -> set[str]:
    """Types job-schemas.json gives planJob a hosts-out-at-once hint for."""
    rules = json.loads(SCHEMAS.read_text())["job_type_rules"]
    return {t for t, r in rules.items() if "hosts_out" in r["plan"]}


def sql_job_type_enum(db_url: str) -> set[str]:
    return set(
        _query(
            db_url,
            """select e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid
                                  where t.typname = 'job_type' and t.typnamespace = 'public'::regnamespace""",
        )
    )


def sql_safety_policies(db_url: str) -> set[str]:
    return set(_query(db_url, "select job_type::text from public.safety_policies"))


def _query(db_url: str, sql: str) -> list[str]:
    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def safety_yaml() -> set[str]:
    """The types safety.yaml has limits for (read as written: load_safety refuses a type
    that is not declared, and this test names it instead)."""
    import yaml

    return set(yaml.safe_load(SAFETY_YAML.read_text())["job_types"])


def handler_registry() -> set[str]:
    """The built-in handlers' types, and the test-only handler's (the harness's, registered
    only on an executor started with enable_selftest; not registered here, so as to change
    nothing)."""
    from devstack.testing.selftest import SelftestHandler
    from executor import handlers

    return set(handlers.load_builtin()) | {SelftestHandler.job_type}


def console_form_types() -> set[str]:
    from console.models.job_form import FORM_JOB_TYPES

    return set(FORM_JOB_TYPES)


def console_created_elsewhere() -> set[str]:
    """Types a console model creates by name (a wizard, or a button of a screen)."""
    wizards = set()
    for path in (ROOT / "console" / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "create_job"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                wizards.add(node.args[0].value)
    return wizards


def console_forms() -> set[str]:
    """The generic job form's types plus the types a dedicated wizard creates."""
    return console_form_types() | console_created_elsewhere()


# -- the check ----------------------------------------------------------------------------------


def compare(place: str, found: set[str], expected: set[str], *, subset: bool = False) -> list[str]:
    """Problems naming the place and the type; ``subset``: the place may name fewer."""
    out = [
        f"{place}: names {t!r}, which is not a rackpilot job type"
        if t not in ALL
        else f"{place}: names {t!r}, which does not belong here"
        for t in sorted(found - expected)
    ]
    if not subset:
        out += [f"{place}: lacks {t!r}" for t in sorted(expected - found)]
    return out


def places(db_url: str) -> list[tuple[str, set[str], set[str], bool]]:
    """(place, the types it names, the types it should name, may it name fewer)."""
    hosts_out = declared_hosts_out()
    by_console = {f: {t.value for t, s in REGISTRY.items() if s.console is f} for f in ConsoleForm}
    return [
        (
            "executor/jobtypes.py (declarations with a params model)",
            declared_params_models(),
            CREATABLE,
            False,
        ),
        ("supabase/functions/_shared/job-schemas.json job_types", job_schemas_json(), CREATABLE, False),
        (
            "supabase/functions/_shared/job-schemas.json job_type_rules",
            job_schemas_json_rules(),
            CREATABLE,
            False,
        ),
        (
            "supabase/functions/_shared/jobs.ts (type comparisons and type sets)",
            jobs_ts_named(),
            CREATABLE,
            True,
        ),
        (
            "supabase/functions/_shared/job-schemas.json hosts_out hints (the types that take hosts out)",
            plan_job_hosts_out_rules(),
            hosts_out,
            False,
        ),
        ("SQL enum public.job_type", sql_job_type_enum(db_url), ALL, False),
        ("SQL table public.safety_policies", sql_safety_policies(db_url), ALL, False),
        ("policies/safety.yaml", safety_yaml(), ALL, False),
        ("executor handler registry (executor.handlers.load_builtin)", handler_registry(), ALL, False),
        (
            "console job forms (console/models: job_form.FORM_JOB_TYPES and the wizards)",
            console_forms(),
            CREATABLE,
            False,
        ),
        (
            "console generic job form (job_form.FORM_JOB_TYPES)",
            console_form_types(),
            by_console[ConsoleForm.FORM],
            False,
        ),
        (
            "console wizards (create_job calls in console/models) for the types declared with one",
            console_created_elsewhere() & by_console[ConsoleForm.WIZARD],
            by_console[ConsoleForm.WIZARD],
            False,
        ),
    ]


def test_every_place_names_the_same_job_types(db_url):
    problems = []
    for place, found, expected, subset in places(db_url):
        problems += compare(place, found, expected, subset=subset)
    assert problems == [], "\n".join(problems)


def safety_row_drift(sql: dict[str, tuple], declared: dict[str, tuple]) -> list[str]:
    """Each field of a public.safety_policies row that differs from what the declarations
    (executor/jobtypes.py) and safety.yaml generate, named by type and column."""
    from devstack.policies import DECLARED_FIELDS, SAFETY_COLUMNS

    out = [f"public.safety_policies: no row for {t!r}" for t in sorted(set(declared) - set(sql))]
    out += [
        f"public.safety_policies: a row for {t!r}, which is not declared"
        for t in sorted(set(sql) - set(declared))
    ]
    for t in sorted(set(sql) & set(declared)):
        for col, got, want in zip(SAFETY_COLUMNS, sql[t], declared[t], strict=True):
            if got != want:
                source = "executor/jobtypes.py" if col in DECLARED_FIELDS else "policies/safety.yaml"
                out.append(f"public.safety_policies {t}.{col}: {got!r} in SQL, {want!r} in {source}")
    return out


def test_risk_levels_are_the_sql_enum(db_url):
    from executor.jobtypes import Risk

    sql = _query(
        db_url,
        """select e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid
            where t.typname = 'risk_level' and t.typnamespace = 'public'::regnamespace order by e.enumsortorder""",
    )
    assert sql == [r.value for r in Risk], f"public.risk_level {sql} != executor.jobtypes.Risk"


def test_sql_safety_policies_are_the_declared_rows(db_url):
    from devstack.policies import SAFETY_COLUMNS, load_safety

    conn = connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"select {', '.join(SAFETY_COLUMNS)} from public.safety_policies")
            sql = {r[0]: tuple(r) for r in cur.fetchall()}
    finally:
        conn.close()
    declared = {t: p.row() for t, p in load_safety(SAFETY_YAML).items()}
    problems = safety_row_drift(sql, declared)
    assert problems == [], "\n".join(problems)


def test_safety_row_drift_names_type_and_field():
    row = ("scp_backup", "low", False, False, None, None, 60, 1200, 3600, 5)
    assert safety_row_drift({"scp_backup": row}, {"scp_backup": row}) == []
    assert safety_row_drift(
        {"scp_backup": ("scp_backup", "medium", *row[2:8], 7200, 5), "scp_restore": row},
        {"scp_backup": row, "selftest": row},
    ) == [
        "public.safety_policies: no row for 'selftest'",
        "public.safety_policies: a row for 'scp_restore', which is not declared",
        "public.safety_policies scp_backup.risk: 'medium' in SQL, 'low' in executor/jobtypes.py",
        "public.safety_policies scp_backup.job_timeout_seconds: 7200 in SQL, 3600 in policies/safety.yaml",
    ]


def test_job_schemas_json_is_generated_from_jobparams():
    spec = importlib.util.spec_from_file_location("gen_job_schemas", ROOT / "scripts" / "gen_job_schemas.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert SCHEMAS.read_text() == gen.render(), "job-schemas.json is stale: run scripts/gen_job_schemas.py"


@pytest.mark.parametrize(
    "found,expected,subset,want",
    [
        ({"a_b"}, {"a_b", "scp_backup"}, False, ["here: lacks 'scp_backup'"]),
        (
            {"scp_backup", "scp_restore"},
            {"scp_backup"},
            False,
            ["here: names 'scp_restore', which is not a rackpilot job type"],
        ),
        ({"selftest"}, {"scp_backup"}, True, ["here: names 'selftest', which does not belong here"]),
    ],
)
def test_compare_names_place_and_type(found, expected, subset, want):
    assert compare("here", found, expected, subset=subset) == want
