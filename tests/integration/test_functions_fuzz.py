"""Property-based fuzzing of create-job through the local stack.

Hypothesis generates request bodies from the committed job schemas (mostly valid, with
targets drawn from the real fleet, other sites, unknown ids and garbage, and every field
occasionally replaced by a wrong value), plus bodies that are not JSON objects at all.
Each one is posted to /functions/v1/create-job as an operator. The property:

- the answer is a 2xx or a 4xx with {"error", "code", "details"}, never a 5xx;
- a 201 wrote exactly one job, whose stored params the executor's pydantic models accept,
  with one task per scope target, all at the job's site;
- a 200 is a dry run and wrote nothing; a 4xx wrote nothing (jobs, tasks, audit rows).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.jobtypes import parse_params
from tests.integration._functions_support import FnEnv, close_env, insert_window, make_env, q

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = json.loads((ROOT / "supabase" / "functions" / "_shared" / "job-schemas.json").read_text())
JOB_TYPES = sorted(SCHEMAS["job_types"])
FUZZ_EXAMPLES = 2000  # generated bodies per run (each one a real request)

URLS = [
    "https://downloads.example.com/Catalog.xml.gz",
    "http://10.0.0.5/isos/esxi.iso",
    "https://d/x.zip",
    "ftp://nope",
    "https://",
    "https://a b",
    "javascript:alert(1)",
]
VERSIONS = ["8.0.3", "7.0u3", "latest", "", "9" * 70]
NAMES = ["BIOS", "iDRAC", "rackpilot", "-bad", "a" * 130, "with space"]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=12)
)
json_any = st.recursive(
    json_leaf,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
    max_leaves=6,
)


class Pools:
    def __init__(self, env: FnEnv):
        f = env.fleet
        hosts = [h for hs in f.hosts.values() for h in hs]
        servers = list(f.host_servers.values()) + [f.standalone_server]
        self.ids = {
            "server": servers + [f.server_b],
            "host": hosts,
            "cluster": list(f.clusters),
            "vcenter": [f.vcenter],
            "replication_pair": [f.replication_pair],
        }
        self.everything = sum(self.ids.values(), [])
        self.site_a, self.site_b = f.site_a, f.site_b


def mostly(
    valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any], n: int = 9
) -> st.SearchStrategy[Any]:
    """``valid`` about n times in n+1, else ``wrong``: most bodies must get past the first check.
    The coin is a true random number: Hypothesis' own choices (and the Randoms it seeds)
    lean towards boundary values and would make nearly every body invalid; the failing
    body is printed in the assertion, so a failure stays reproducible by hand."""
    return st.randoms(use_true_random=True).flatmap(lambda r: valid if r.random() < n / (n + 1) else wrong)


def _ids(pools: Pools, kind: str | None) -> st.SearchStrategy[str]:
    own = pools.ids.get(kind or "", [])
    choices = [st.sampled_from(own)] * 6 if own else []
    return st.one_of(
        *choices,
        st.sampled_from(pools.everything),
        st.uuids().map(str),
        st.sampled_from(own or pools.everything).map(str.upper),
        st.just("not-a-uuid"),
    )


def _from_schema(schema: dict, root: dict, pools: Pools, kind: str | None = None) -> st.SearchStrategy[Any]:
    """Mostly-valid values for ``schema``; every branch sometimes yields a wrong one."""
    if "$ref" in schema:
        return _from_schema(root["$defs"][schema["$ref"].split("/")[-1]], root, pools, kind)
    kind = schema.get("x-target", kind)
    wrong = json_any
    if "anyOf" in schema:
        return st.one_of(*[_from_schema(s, root, pools, kind) for s in schema["anyOf"]])
    if "enum" in schema:
        return mostly(st.sampled_from(schema["enum"]), wrong)
    t = schema.get("type")
    if t == "string":
        if schema.get("format") == "uuid":
            return _ids(pools, kind)
        if "pattern" in schema and "http" in schema["pattern"]:
            return st.sampled_from(URLS)
        if schema.get("pattern", "").startswith("^[0-9]"):
            return st.sampled_from(VERSIONS)
        return mostly(st.sampled_from(NAMES), st.one_of(st.text(max_size=8), wrong), 4)
    if t == "integer":
        lo, hi = schema.get("minimum", -5), schema.get("maximum", 100)
        return mostly(st.integers(lo, hi), st.one_of(st.integers(lo - 3, hi + 3), wrong))
    if t == "boolean":
        return mostly(st.booleans(), wrong)
    if t == "null":
        return st.none()
    if t == "array":
        item = _from_schema(schema.get("items", {}), root, pools, kind)
        lo, hi = schema.get("minItems", 0), min(schema.get("maxItems", 4), 4)
        return mostly(
            st.lists(item, min_size=lo, max_size=max(lo, hi)),
            st.one_of(st.lists(item, min_size=0, max_size=hi + 1), wrong),
            6,
        )
    if t == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))

        subs = {name: _from_schema(sub, root, pools, kind) for name, sub in props.items()}

        @st.composite
        def obj(draw):
            rnd = draw(st.randoms(use_true_random=True))
            out = {}
            for name, sub in subs.items():
                present = rnd.random() < (0.97 if name in required else 0.4)
                if present:
                    out[name] = draw(sub)
            if rnd.random() < 0.02:
                out[draw(st.text(min_size=1, max_size=6))] = draw(json_leaf)
            return out

        return mostly(obj(), wrong, 19)
    return wrong


_PARAMS: dict[str, st.SearchStrategy[Any]] = {}


@st.composite
def bodies(draw, pools: Pools, windows: list[str]):
    rnd = draw(st.randoms(use_true_random=True))
    if rnd.random() < 0.03:  # not a JSON object at all
        return draw(st.one_of(st.binary(max_size=40), st.sampled_from([b"{", b"[]", b"null", b'"x"', b"{}"])))
    job_type = draw(mostly(st.sampled_from(JOB_TYPES), st.text(max_size=10), 19))
    schema = SCHEMAS["job_types"].get(job_type) or SCHEMAS["job_types"]["scp_backup"]
    key = job_type if job_type in SCHEMAS["job_types"] else "scp_backup"
    if key not in _PARAMS:
        _PARAMS[key] = _from_schema(schema, schema, pools)
    body: dict[str, Any] = {"type": job_type, "params": draw(_PARAMS[key])}
    now = dt.datetime.now(dt.UTC)
    later = (now + dt.timedelta(minutes=5)).isoformat()
    optional = {
        # a fair coin from the true random source: Hypothesis' own booleans lean to False,
        # and one CI run met 4 dry runs in 2000 bodies
        "dry_run": mostly(st.randoms(use_true_random=True).map(lambda r: r.random() < 0.5), json_leaf),
        "maintenance_window_id": mostly(
            st.sampled_from(windows), st.one_of(st.none(), st.uuids().map(str), json_leaf), 4
        ),
        "scheduled_for": mostly(
            st.just(later),
            st.sampled_from(
                [(now - dt.timedelta(days=1)).isoformat(), "2026-13-40T00:00:00Z", "tomorrow", 5]
            ),
        ),
        "priority": mostly(st.integers(0, 100), st.one_of(st.integers(-5, 105), json_leaf)),
        "description": mostly(st.text(max_size=30), json_leaf),
        "site_id": mostly(
            st.sampled_from([pools.site_a, pools.site_b]), st.one_of(st.uuids().map(str), json_leaf), 4
        ),
    }
    for key, strat in optional.items():
        if rnd.random() < (0.5 if key == "dry_run" else 0.3):
            body[key] = draw(strat)
    if rnd.random() < 0.03:
        del body[draw(st.sampled_from(["type", "params"]))]
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def env(stack):
    e = make_env(stack)
    yield e
    close_env(e)


def _written(env: FnEnv) -> tuple[int, int, int]:
    f = env.fleet
    row = q(
        env.conn,
        """
        select (select count(*) from public.jobs where site_id in (%s, %s))::int as jobs,
               (select count(*) from public.job_tasks t join public.jobs j on j.id = t.job_id
                 where j.site_id in (%s, %s))::int as tasks,
               (select count(*) from public.audit_log where actor_id = %s)::int as audit""",
        f.site_a,
        f.site_b,
        f.site_a,
        f.site_b,
        env.users["operator"].user_id,
    )[0]
    return row["jobs"], row["tasks"], row["audit"]


def test_create_job_fuzz(env: FnEnv):
    f, u = env.fleet, env.users
    now = dt.datetime.now(dt.UTC)
    approved = insert_window(
        env.conn,
        f.site_a,
        u["viewer"].user_id,
        "approved",
        starts=now.isoformat(),
        ends=(now + dt.timedelta(hours=6)).isoformat(),
        approved_by=u["approver"].user_id,
    )
    requested = insert_window(env.conn, f.site_a, u["viewer"].user_id)
    pools = Pools(env)
    _PARAMS.clear()  # strategies hold this fleet's ids
    token = u["operator"].token
    stats: Counter[str] = Counter()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(body=bodies(pools, [approved, requested]))
    def one(body: bytes):
        before = _written(env)
        status, data = env.raw.call("create-job", None, token, raw=body)
        after = _written(env)
        stats["cases"] += 1
        stats[str(status)] += 1
        assert status < 500, (status, data, body[:300])
        if status == 201:
            job = q(
                env.conn,
                "select type::text, site_id, params, scope from public.jobs where id = %s",
                data["job_id"],
            )
            assert job, data
            job = job[0]
            parse_params(job["type"], job["params"])  # the executor's models accept what was stored
            targets = job["scope"]["targets"]
            tasks = q(
                env.conn,
                "select target_kind::text, target_id from public.job_tasks where job_id = %s order by seq",
                data["job_id"],
            )
            assert len(tasks) == len(targets) >= 1
            assert after == (before[0] + 1, before[1] + len(tasks), after[2]) and after[2] > before[2]
            stats[f"created:{job['type']}"] += 1
        elif status == 200:
            assert data.get("dry_run") is True and data["plan"]["tasks"], data
            assert after == before, "a dry run wrote rows"
        else:
            assert 400 <= status < 500 and set(data) == {"error", "code", "details"}, (status, data)
            assert after == before, f"{status} {data['code']} wrote rows"
            stats[f"code:{data['code']}"] += 1

    started = time.monotonic()
    one()
    elapsed = time.monotonic() - started
    created = sum(v for k, v in stats.items() if k.startswith("created:"))
    print(
        f"\ncreate-job fuzz: {stats['cases']} cases in {elapsed:.0f}s; {stats['201']} created, {stats['200']} dry runs, "
        f"{sum(v for k, v in stats.items() if k.startswith('code:'))} refused; "
        f"codes: {dict(sorted((k[5:], v) for k, v in stats.items() if k.startswith('code:')))}"
    )
    assert stats["cases"] >= FUZZ_EXAMPLES * 0.9
    # the generator must reach both sides of the property, not only the refusals
    assert created >= 20 and stats["200"] >= 5, dict(stats)
