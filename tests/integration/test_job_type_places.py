"""Every place that names a job type names the same ones (issue 13, item 2's drift test).

Until one declaration per job type generates the others, a job type is spelled in each of
the places below, and this test reads them all. It fails naming the place and the type when
a place lacks a type it should have, or names one rackpilot does not have.

The vocabulary (``executor/vocabulary.py``, held to ``pg_enum`` by test_vocabulary.py) is
the reference. ``selftest`` (``TEST_ONLY_JOB_TYPES``) is the executor's own probe: the
database, the safety policy and the handler registry know it; create-job, its schemas and
the console do not. A place that names only some types by design (the per-type branches
of ``planJob``) must name only real ones, and must name every type that takes hosts out.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

from executor.vocabulary import TEST_ONLY_JOB_TYPES, JobType
from tests.integration.pgutil import connect

ROOT = Path(__file__).resolve().parents[2]
JOBS_TS = ROOT / "supabase" / "functions" / "_shared" / "jobs.ts"
SCHEMAS = ROOT / "supabase" / "functions" / "_shared" / "job-schemas.json"
SAFETY_YAML = ROOT / "policies" / "safety.yaml"

ALL = {t.value for t in JobType}
CREATABLE = ALL - {t.value for t in TEST_ONLY_JOB_TYPES}


# -- the places ---------------------------------------------------------------------------------


def jobparams_models() -> set[str]:
    from executor.jobparams import MODELS

    return {str(t) for t in MODELS}


def job_schemas_json() -> set[str]:
    return set(json.loads(SCHEMAS.read_text())["job_types"])


def _plan_job_source() -> str:
    src = JOBS_TS.read_text()
    start = src.index("export async function planJob(")
    end = src.find("\nexport ", start + 1)
    return src[start : end if end > 0 else len(src)]


def jobs_ts_named() -> set[str]:
    """Types jobs.ts compares a job's type with, or lists in a set of types."""
    src = JOBS_TS.read_text()
    named = set(re.findall(r"\b(?:type|jobType)\s*[!=]==\s*\"([^\"]+)\"", src))
    for body in re.findall(r"_JOB_TYPES\b[^=]*=\s*new Set\(\[([^\]]*)\]", src):
        named |= set(re.findall(r"\"([^\"]+)\"", body))
    return named


def plan_job_hosts_out_rules() -> set[str]:
    """Types planJob gives a hosts-out-at-once rule (a branch, or the comment of the default)."""
    body = _plan_job_source()
    return {t for t in ALL if re.search(rf"\b{t}\b", body)}


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
    from devstack.policies import load_safety

    return set(load_safety(SAFETY_YAML))


def safety_yaml_hosts_out() -> set[str]:
    from devstack.policies import load_safety

    return {t for t, p in load_safety(SAFETY_YAML).items() if p.takes_hosts_out}


def handler_registry() -> set[str]:
    """The built-in handlers' types, and the test-only handler's (the harness's, registered
    only on an executor started with enable_selftest; not registered here, so as to change
    nothing)."""
    from devstack.testing.selftest import SelftestHandler
    from executor import handlers

    return set(handlers.load_builtin()) | {SelftestHandler.job_type}


def console_forms() -> set[str]:
    """The generic job form's types plus the types a dedicated wizard creates."""
    from console.models.job_form import FORM_JOB_TYPES

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
    return set(FORM_JOB_TYPES) | wizards


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
    hosts_out = safety_yaml_hosts_out()
    return [
        ("executor/jobparams.py MODELS", jobparams_models(), CREATABLE, False),
        ("supabase/functions/_shared/job-schemas.json", job_schemas_json(), CREATABLE, False),
        (
            "supabase/functions/_shared/jobs.ts (type comparisons and type sets)",
            jobs_ts_named(),
            CREATABLE,
            True,
        ),
        (
            "supabase/functions/_shared/jobs.ts planJob (hosts out at once, per type that takes hosts out)",
            plan_job_hosts_out_rules() & hosts_out,
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
    ]


def test_every_place_names_the_same_job_types(db_url):
    problems = []
    for place, found, expected, subset in places(db_url):
        problems += compare(place, found, expected, subset=subset)
    assert problems == [], "\n".join(problems)


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
