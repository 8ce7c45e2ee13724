"""/rest/v1 operators and representations beyond the basics, each as PostgREST documents it:
range operators, the (any)/(all) modifiers, full-text search with a language, text/csv,
the execution plan (Accept: application/vnd.pgrst.plan) and the OpenAPI document at the root.
supabase-py builds the request wherever it has a method for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg2
import pytest
from postgrest.exceptions import APIError

from supabase import create_client

SCHEMA_SQL = """
create table public.rest_media_items (
  id int primary key,
  name text not null,
  span int4range,
  body text,
  note text default 'n/a'
);
alter table public.rest_media_items enable row level security;
create policy rest_media_items_all on public.rest_media_items for all to authenticated using (true) with check (true);
insert into public.rest_media_items values
  (1, 'alpha', '[1,5)', 'the cats are running', null),
  (2, 'Beta, "two"', '[5,10)', 'a dog ran', 'x'),
  (3, 'gamma', '[20,30)', 'cats and dogs', 'y');
create function public.rest_media_items_named(p text) returns setof public.rest_media_items
  language sql stable as $$ select * from public.rest_media_items where name like p order by id $$;
grant execute on function public.rest_media_items_named(text) to authenticated;
"""
TEARDOWN_SQL = """
drop function if exists public.rest_media_items_named(text);
drop table if exists public.rest_media_items;
"""
T = "/rest_media_items"


@pytest.fixture(scope="module")
def db(stack) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def schema(db, api_url, service_key) -> Iterator[None]:
    with db.cursor() as cur:
        cur.execute(TEARDOWN_SQL)
        cur.execute(SCHEMA_SQL)
    hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    deadline = time.monotonic() + 15
    while True:  # the schema cache reloads on NOTIFY after DDL; the OpenAPI paths show it
        r = httpx.get(f"{api_url}/rest/v1/", headers=hdrs, timeout=5)
        if r.status_code == 200 and T in r.json().get("paths", {}):
            break
        assert time.monotonic() < deadline, "the REST schema cache never showed the test table"
        time.sleep(0.05)
    yield
    with db.cursor() as cur:
        cur.execute(TEARDOWN_SQL)


@pytest.fixture
def sb(schema, api_url, service_key):
    return create_client(api_url, service_key)


@pytest.fixture
def http(schema, api_url, service_key) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{api_url}/rest/v1",
        headers={"apikey": service_key, "Authorization": f"Bearer {service_key}"},
        timeout=10,
    ) as c:
        yield c


def ids(rows: list[dict]) -> list[int]:
    return sorted(r["id"] for r in rows)


# --- operators --------------------------------------------------------------------------------
def test_range_operators(sb):
    """sl << (strictly left), sr >> (strictly right), nxr &< (does not extend right),
    nxl &> (does not extend left), adj -|- (adjacent), with the range in the column's syntax."""
    t = lambda: sb.table("rest_media_items").select("id")  # noqa: E731
    assert ids(t().range_lt("span", (10, 20)).execute().data) == [1, 2]  # sl
    assert ids(t().range_gt("span", (1, 6)).execute().data) == [3]  # sr
    assert ids(t().range_lte("span", (0, 10)).execute().data) == [1, 2]  # nxr
    assert ids(t().range_gte("span", (4, 40)).execute().data) == [2, 3]  # nxl
    assert ids(t().range_adjacent("span", (9, 20)).execute().data) == [2, 3]  # adj: (9,20) is [10,20)


def test_like_and_ilike_any_all(sb):
    """like(any)/like(all)/ilike(any)/ilike(all) take an array of patterns ({a*,b*})."""
    t = lambda: sb.table("rest_media_items").select("id")  # noqa: E731
    assert ids(t().like_any_of("name", "al*,ga*").execute().data) == [1, 3]
    assert ids(t().like_all_of("name", "*a*,*m*").execute().data) == [3]
    assert ids(t().ilike_any_of("name", "beta*,ALPHA").execute().data) == [1, 2]
    assert ids(t().ilike_all_of("body", "*CAT*,*DOG*").execute().data) == [3]
    assert ids(t().filter("id", "eq(any)", "{1,3}").execute().data) == [1, 3]
    assert ids(t().filter("id", "gt(all)", "{1,2}").execute().data) == [3]
    assert ids(t().not_.filter("name", "like(any)", "{a*,g*}").execute().data) == [2]
    assert ids(t().or_("name.like(any).{al*,ga*},id.eq(any).{2}").execute().data) == [1, 2, 3]


def test_full_text_search_with_a_language(sb):
    """fts(english): the language is the text search configuration (stemming: cats -> cat)."""
    rows = (
        sb.table("rest_media_items")
        .select("id")
        .text_search("body", "cat", options={"config": "english"})
        .execute()
    )
    assert ids(rows.data) == [1, 3]
    rows = (
        sb.table("rest_media_items")
        .select("id")
        .text_search("body", "dogs running", options={"type": "web_search", "config": "english"})
        .execute()
    )
    assert ids(rows.data) == []


def test_bad_modifiers_are_pgrst100(http):
    for value in ("neq(any).{1}", "eq(some).{1}", "eq(any).1"):
        r = http.get(T, params={"id": value})
        assert r.status_code == 400 and r.json()["code"] == "PGRST100", value


# --- text/csv ---------------------------------------------------------------------------------
def test_csv_response(sb, http):
    """Accept: text/csv: a header of the column names, then one CRLF-separated line per row,
    values in Postgres's text form, quoted where needed, NULL empty."""
    res = sb.table("rest_media_items").select("id,name,note").order("id").csv().execute()
    assert res.data == 'id,name,note\r\n1,alpha,\r\n2,"Beta, ""two""",x\r\n3,gamma,y'
    r = http.get(T, params={"select": "id", "id": "eq.0"}, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv") and r.text == "\r\n"
    r = http.get(
        "/rpc/rest_media_items_named", params={"p": "%a", "select": "id,name"}, headers={"Accept": "text/csv"}
    )
    assert r.status_code == 200 and r.text == "id,name\r\n1,alpha\r\n3,gamma"
    r = http.post(
        T,
        json={"id": 9, "name": "csv"},
        params={"select": "id,name"},
        headers={"Accept": "text/csv", "Prefer": "return=representation, tx=rollback"},
    )
    assert r.status_code == 201 and r.text == "id,name\r\n9,csv"
    http.delete(T, params={"id": "eq.9"})


# --- execution plan ---------------------------------------------------------------------------
def test_plan_is_refused_while_db_plan_enabled_is_off(http):
    """db-plan-enabled is false by default (PostgREST and Supabase): the plan media type is
    not available, 406 PGRST107."""
    r = http.get(T, headers={"Accept": "application/vnd.pgrst.plan"})
    assert r.status_code == 406 and r.json()["code"] == "PGRST107"


@pytest.fixture
def plan_enabled(db, http) -> Iterator[None]:
    """pgrst.db_plan_enabled on the authenticator role, then NOTIFY pgrst 'reload config',
    as Supabase documents enabling explain()."""
    with db.cursor() as cur:
        cur.execute("alter role authenticator set pgrst.db_plan_enabled to 'true'")
        cur.execute("notify pgrst, 'reload config'")
    try:
        deadline = time.monotonic() + 10
        while http.get(T, headers={"Accept": "application/vnd.pgrst.plan"}).status_code != 200:
            assert time.monotonic() < deadline, "the plan never became available"
            time.sleep(0.05)
        yield
    finally:
        with db.cursor() as cur:
            cur.execute("alter role authenticator reset pgrst.db_plan_enabled")
            cur.execute("notify pgrst, 'reload config'")


def test_explain_text_and_json(plan_enabled, sb, http):
    """Accept: application/vnd.pgrst.plan[+json]; options=analyze|verbose|...: the plan of
    the request's query, run as the caller."""
    plan = sb.table("rest_media_items").select("*").eq("id", 1).explain().execute()
    assert "Aggregate" in str(plan) and "rest_media_items" in str(plan)
    r = http.get(
        T,
        params={"id": "eq.1"},
        headers={"Accept": "application/vnd.pgrst.plan+json; options=analyze|verbose"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('application/vnd.pgrst.plan+json; for="application/json"')
    doc = r.json()
    assert doc[0]["Plan"]["Node Type"] == "Aggregate" and "Actual Rows" in doc[0]["Plan"]
    r = http.get(T, headers={"Accept": "application/vnd.pgrst.plan; options=nonsense"})
    assert r.status_code == 406


# --- OpenAPI ----------------------------------------------------------------------------------
def test_root_serves_the_openapi_document(http):
    """GET / answers PostgREST's OpenAPI 2.0 description of the exposed schema."""
    r = http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openapi+json")
    doc = r.json()
    assert doc["swagger"] == "2.0"
    assert {"get", "post", "patch", "delete"} <= set(doc["paths"][T])
    assert set(doc["paths"]["/rpc/rest_media_items_named"]) == {"get", "post"}
    d = doc["definitions"]["rest_media_items"]
    assert d["required"] == ["id", "name"]
    assert d["properties"]["id"] == {
        "format": "integer",
        "type": "integer",
        "description": "Note:\nThis is a Primary Key.<pk/>",
    }
    assert d["properties"]["span"]["format"] == "int4range"
    assert d["properties"]["note"]["default"] == "'n/a'::text"
    assert http.post("/", json={}).status_code == 405


def test_errors_stay_json_whatever_the_accept(sb):
    with pytest.raises(APIError) as err:
        sb.table("rest_media_items").select("nope").csv().execute()
    assert err.value.code == "42703"
