"""Arbitrary strings thrown at every place a request names something or carries a value:
column names, filter operators and values, select, order, or=(), table and rpc names,
body keys, the columns/on_conflict parameters and the Accept-Profile header.

The answer is always a 4xx or the correct result, never a 5xx, and no row ever changes
(every write here is built so that a correct server must refuse it or touch nothing).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCHEMA_SQL = """
create table public.rest_contract_fuzz (
  id int primary key,
  name text not null,
  qty int
);
alter table public.rest_contract_fuzz enable row level security;
insert into public.rest_contract_fuzz values (1, 'alpha', 1), (2, 'be''ta', 2), (3, 'ga,m"ma', null);
create function public.rest_contract_fuzz_fn(a int) returns int language sql immutable as $$ select a $$;
"""
TEARDOWN_SQL = """
drop function if exists public.rest_contract_fuzz_fn(int);
drop table if exists public.rest_contract_fuzz;
"""
NAMES = ["alpha", "be'ta", 'ga,m"ma']
SNAPSHOT_SQL = "select id, name, qty from public.rest_contract_fuzz order by id"
ORIGINAL = [(1, "alpha", 1), (2, "be'ta", 2), (3, 'ga,m"ma', None)]

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
# what PostgREST syntax is made of, so examples reach the parser's corners quickly
syntax = st.text(st.sampled_from(list('.,:()"\\*!-> eqnotinisltgdlikeordanull0123456789_name')), max_size=30)
anything = st.one_of(
    text, syntax, st.sampled_from(["id", "name", "qty", "*", "name.desc", "eq.1", "in.(1,2)"])
)
# h11 refuses header values with surrounding whitespace, so the client could not send them
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)


@pytest.fixture(scope="module")
def fuzz_db(stack, api_url, service_key) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
            cur.execute(SCHEMA_SQL)
        hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
        deadline = time.monotonic() + 15
        while True:
            r = httpx.post(f"{api_url}/rest/v1/rpc/rest_contract_fuzz_fn", headers=hdrs, json={"a": 1})
            t = httpx.get(f"{api_url}/rest/v1/rest_contract_fuzz?limit=0", headers=hdrs)
            if r.status_code == 200 and t.status_code == 200:
                break
            assert time.monotonic() < deadline, "REST schema cache never showed the fuzz objects"
            time.sleep(0.05)
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
        conn.close()


@pytest.fixture(scope="module")
def http(fuzz_db, api_url, service_key) -> Iterator[httpx.Client]:
    # service_role bypasses RLS: any change a request could make would be visible
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    with httpx.Client(base_url=f"{api_url}/rest/v1", headers=hdrs, timeout=10) as client:
        yield client


def check(r: httpx.Response, db) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"code", "message", "details", "hint"}
        assert "Traceback" not in r.text
    with db.cursor() as cur:
        cur.execute(SNAPSHOT_SQL)
        assert cur.fetchall() == ORIGINAL


@FUZZ
@given(column=anything, op=anything, value=anything)
def test_filter_keys_operators_and_values(http, fuzz_db, column, op, value):
    check(http.get("/rest_contract_fuzz", params=[(column, f"{op}.{value}")]), fuzz_db)


@FUZZ
@given(value=st.one_of(text, syntax, st.sampled_from(NAMES)))
def test_eq_filter_value_gives_the_correct_rows(http, fuzz_db, value):
    r = http.get("/rest_contract_fuzz", params={"select": "name", "name": f"eq.{value}"})
    check(r, fuzz_db)
    if "\x00" in value:
        assert r.status_code == 400
    else:
        assert r.status_code == 200
        assert r.json() == ([{"name": value}] if value in NAMES else [])


@FUZZ
@given(values=st.lists(st.one_of(text, st.sampled_from(NAMES)), max_size=5))
def test_in_filter_gives_the_correct_rows(http, fuzz_db, values):
    def q(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    r = http.get(
        "/rest_contract_fuzz",
        params={"select": "name", "name": f"in.({','.join(q(v) for v in values)})", "order": "id"},
    )
    check(r, fuzz_db)
    if any("\x00" in v for v in values):
        assert r.status_code == 400
    else:
        assert r.status_code == 200
        assert [row["name"] for row in r.json()] == [n for n in NAMES if n in values]


@FUZZ
@given(select=anything, order=anything, logic=anything)
def test_select_order_and_logic(http, fuzz_db, select, order, logic):
    check(http.get("/rest_contract_fuzz", params={"select": select}), fuzz_db)
    check(http.get("/rest_contract_fuzz", params={"order": order}), fuzz_db)
    check(http.get("/rest_contract_fuzz", params={"or": logic}), fuzz_db)
    check(http.get("/rest_contract_fuzz", params={"or": f"({logic})"}), fuzz_db)


@FUZZ
@given(table=anything, fn=anything, arg=anything, value=anything)
def test_table_and_rpc_names(http, fuzz_db, table, fn, arg, value):
    check(http.get(f"/{quote(table, safe='')}"), fuzz_db)
    check(http.post(f"/rpc/{quote(fn, safe='')}", json={arg: value}), fuzz_db)
    check(http.get(f"/rpc/{quote(fn, safe='')}", params={arg: value}), fuzz_db)
    check(http.post("/rpc/rest_contract_fuzz_fn", json={arg: value}), fuzz_db)
    check(http.get("/rpc/rest_contract_fuzz_fn", params={"a": value}), fuzz_db)


@FUZZ
@given(profile=header_text, accept=header_text)
def test_schema_and_accept_headers(http, fuzz_db, profile, accept):
    check(http.get("/rest_contract_fuzz", headers={"Accept-Profile": profile}), fuzz_db)
    check(http.get("/rest_contract_fuzz", headers={"Accept": accept}), fuzz_db)
    check(
        http.patch("/rest_contract_fuzz?id=eq.-1", headers={"Content-Profile": profile}, json={"qty": 9}),
        fuzz_db,
    )


@FUZZ
@given(
    key=anything,
    value=st.one_of(text, st.integers(), st.none()),
    column=anything,
    columns=anything,
    conflict=anything,
)
def test_writes_never_change_rows(http, fuzz_db, key, value, column, columns, conflict):
    # an update whose filter matches nothing, with an arbitrary body key
    check(http.patch("/rest_contract_fuzz", params={"id": "eq.-1"}, json={key: value}), fuzz_db)
    # a delete whose filter is arbitrary but can never be true together with id=eq.-1
    check(http.delete("/rest_contract_fuzz", params=[("id", "eq.-1"), (column, f"eq.{value}")]), fuzz_db)
    # inserts that must fail: id 1 exists (409) or id/name missing (400), whatever columns says
    check(
        http.post(
            "/rest_contract_fuzz", params={"columns": columns}, json=[{"id": 1, "name": "x", key: value}]
        ),
        fuzz_db,
    )
    check(
        http.post("/rest_contract_fuzz", params={"on_conflict": conflict}, json={"id": 1, "name": "x"}),
        fuzz_db,
    )
