"""Resource embedding through /rest/v1, as PostgREST documents it (docs.postgrest.org,
"Resource Embedding"): related rows come in the same request over the foreign keys the
schema cache read from the catalog, and RLS applies to every embedded table as the caller.

Each test names the documented behaviour it holds. supabase-py builds the request where it
has a method for it (select strings, ``foreign_table=``/``reference_table=``); raw HTTP
checks status codes and error bodies. Tables are created here (prefix ``rest_embed_``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import psycopg2
import pytest
from postgrest.exceptions import APIError

from supabase import ClientOptions, create_client

OWNER_A = str(uuid.uuid4())
OWNER_B = str(uuid.uuid4())

SCHEMA_SQL = f"""
create table public.rest_embed_sites (id int primary key, name text not null, region text);
create table public.rest_embed_servers (
  id int primary key,
  name text not null,
  site_id int references public.rest_embed_sites (id),
  backup_site_id int constraint rest_embed_servers_backup_fkey references public.rest_embed_sites (id)
);
-- one-to-one: the foreign key is the primary key
create table public.rest_embed_specs (
  server_id int primary key references public.rest_embed_servers (id), cpu text not null);
create table public.rest_embed_tags (id int primary key, label text not null);
-- many-to-many: the junction's primary key holds both foreign keys
create table public.rest_embed_server_tags (
  server_id int references public.rest_embed_servers (id),
  tag_id int references public.rest_embed_tags (id),
  primary key (server_id, tag_id));
create table public.rest_embed_notes (
  id int primary key, server_id int not null references public.rest_embed_servers (id),
  body text not null, owner uuid);
create table public.rest_embed_lonely (id int primary key);

do $$ declare t text; begin
  foreach t in array array['sites', 'servers', 'specs', 'tags', 'server_tags', 'lonely'] loop
    execute format('alter table public.rest_embed_%s enable row level security', t);
    execute format('create policy rest_embed_%s_read on public.rest_embed_%s for select to anon, authenticated '
                   'using (true)', t, t);
  end loop;
end $$;
alter table public.rest_embed_notes enable row level security;
create policy rest_embed_notes_own on public.rest_embed_notes for select to authenticated
  using (owner = auth.uid());
create policy rest_embed_servers_write on public.rest_embed_servers for insert to authenticated with check (true);

insert into public.rest_embed_sites values (1, 'ams', 'eu'), (2, 'fra', 'eu'), (3, 'nyc', 'us');
insert into public.rest_embed_servers values
  (10, 'ams-01', 1, 2), (11, 'ams-02', 1, null), (20, 'fra-01', 2, 1), (30, 'nyc-01', 3, null),
  (40, 'spare', null, null);
insert into public.rest_embed_specs values (10, 'epyc'), (20, 'xeon');
insert into public.rest_embed_tags values (1, 'gpu'), (2, 'ssd'), (3, 'legacy');
insert into public.rest_embed_server_tags values (10, 1), (10, 2), (20, 2), (30, 3);
insert into public.rest_embed_notes values
  (1, 10, 'a: fan noisy', '{OWNER_A}'), (2, 10, 'a: psu swapped', '{OWNER_A}'),
  (3, 10, 'b: secret', '{OWNER_B}'), (4, 20, 'a: ok', '{OWNER_A}');

create function public.rest_embed_servers_of(p_site int) returns setof public.rest_embed_servers
  language sql stable as $f$ select * from public.rest_embed_servers where site_id = p_site order by id $f$;
grant execute on function public.rest_embed_servers_of(int) to anon, authenticated;
"""
TEARDOWN_SQL = """
drop function if exists public.rest_embed_servers_of(int);
drop table if exists public.rest_embed_notes, public.rest_embed_server_tags, public.rest_embed_tags,
  public.rest_embed_specs, public.rest_embed_servers, public.rest_embed_sites, public.rest_embed_lonely;
"""
SERVERS = "/rest_embed_servers"
SITES = "/rest_embed_sites"


def mint(secret: str, sub: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "aud": "authenticated",
            "exp": now + 3600,
            "iat": now,
            "sub": sub,
            "role": "authenticated",
            "email": "embed@example.com",
            "app_metadata": {},
            "user_metadata": {},
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        },
        secret,
        algorithm="HS256",
    )


@pytest.fixture(scope="module")
def schema(stack, api_url, service_key) -> Iterator[None]:
    conn = psycopg2.connect(stack.pg.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
            cur.execute(SCHEMA_SQL)
        hdrs = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
        deadline = time.monotonic() + 15
        while True:  # the schema cache (relationships included) reloads on NOTIFY after DDL
            r = httpx.get(
                f"{api_url}/rest/v1{SERVERS}",
                params={"select": "id,rest_embed_specs(cpu)", "limit": "1"},
                headers=hdrs,
                timeout=5,
            )
            if r.status_code == 200:
                break
            assert time.monotonic() < deadline, (
                f"the REST schema cache never showed the test tables: {r.text}"
            )
            time.sleep(0.05)
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute(TEARDOWN_SQL)
        conn.close()


@pytest.fixture
def http(schema, api_url, service_key) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{api_url}/rest/v1",
        headers={"apikey": service_key, "Authorization": f"Bearer {service_key}"},
        timeout=10,
    ) as c:
        yield c


@pytest.fixture
def user_a(schema, api_url, anon_key, stack):
    token = mint(stack.secrets.jwt_secret, OWNER_A)
    return create_client(api_url, anon_key, ClientOptions(headers={"Authorization": f"Bearer {token}"}))


@pytest.fixture
def sb(schema, api_url, service_key):
    return create_client(api_url, service_key)


def get(http: httpx.Client, path: str, **params) -> list | dict:
    r = http.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def error(http: httpx.Client, path: str, status: int, **params) -> dict:
    r = http.get(path, params=params)
    assert r.status_code == status, r.text
    return r.json()


# --- cardinalities ----------------------------------------------------------------------------
def test_many_to_one_embeds_an_object_and_null_when_absent(http):
    """Many-to-one: the embedded resource is a JSON object ("to-one end"), null without a row."""
    rows = get(http, SERVERS, select="name,rest_embed_sites!site_id(name,region)", order="id")
    assert rows[0] == {"name": "ams-01", "rest_embed_sites": {"name": "ams", "region": "eu"}}
    assert rows[-1] == {"name": "spare", "rest_embed_sites": None}


def test_one_to_many_embeds_an_array_and_empty_array_when_none(http):
    """One-to-many: the embedded resource is a JSON array, [] when nothing refers back."""
    rows = get(
        http, SERVERS, select="id,rest_embed_notes(id)", order="id", **{"rest_embed_notes.order": "id"}
    )
    by_id = {r["id"]: r["rest_embed_notes"] for r in rows}
    assert by_id[10] == [{"id": 1}, {"id": 2}, {"id": 3}] and by_id[20] == [{"id": 4}] and by_id[30] == []


def test_one_to_one_embeds_an_object_both_ways(http):
    """One-to-one (the foreign key is also the primary key): an object from either side."""
    rows = get(http, SERVERS, select="id,rest_embed_specs(cpu)", order="id")
    assert [r["rest_embed_specs"] for r in rows] == [{"cpu": "epyc"}, None, {"cpu": "xeon"}, None, None]
    assert get(http, "/rest_embed_specs", select="cpu,rest_embed_servers(name)", order="server_id") == [
        {"cpu": "epyc", "rest_embed_servers": {"name": "ams-01"}},
        {"cpu": "xeon", "rest_embed_servers": {"name": "fra-01"}},
    ]


def test_many_to_many_through_the_junction_table(http):
    """Many-to-many: a join table whose primary key holds both foreign keys."""
    rows = get(
        http, SERVERS, select="id,rest_embed_tags(label)", order="id", **{"rest_embed_tags.order": "label"}
    )
    assert {r["id"]: [t["label"] for t in r["rest_embed_tags"]] for r in rows} == {
        10: ["gpu", "ssd"],
        11: [],
        20: ["ssd"],
        30: ["legacy"],
        40: [],
    }
    rows = get(
        http,
        "/rest_embed_tags",
        select="label,rest_embed_servers!rest_embed_server_tags(id)",
        order="id",
        **{"rest_embed_servers.order": "id"},
    )
    assert rows[1] == {"label": "ssd", "rest_embed_servers": [{"id": 10}, {"id": 20}]}


def test_nested_embedding(http):
    """Nested embedding: sites -> servers -> notes, each level shaped by its own params."""
    rows = get(
        http,
        SITES,
        select="name,rest_embed_servers!site_id(name,rest_embed_notes(body))",
        id="eq.1",
        **{
            "rest_embed_servers.order": "name.desc",
            "rest_embed_servers.rest_embed_notes.order": "id.desc",
            "rest_embed_servers.rest_embed_notes.limit": "1",
        },
    )
    assert rows == [
        {
            "name": "ams",
            "rest_embed_servers": [
                {"name": "ams-02", "rest_embed_notes": []},
                {"name": "ams-01", "rest_embed_notes": [{"body": "b: secret"}]},
            ],
        }
    ]


# --- disambiguation and errors ----------------------------------------------------------------
def test_ambiguous_embedding_is_300_pgrst201_with_the_candidates(http):
    """Two foreign keys to the same table: 300 Multiple Choices, PGRST201, details and hint."""
    body = error(http, SERVERS, 300, select="*,rest_embed_sites(*)")
    assert body["code"] == "PGRST201"
    assert body["message"] == (
        "Could not embed because more than one relationship was found for "
        "'rest_embed_servers' and 'rest_embed_sites'"
    )
    assert body["details"] == [
        {
            "cardinality": "many-to-one",
            "embedding": "rest_embed_servers with rest_embed_sites",
            "relationship": "rest_embed_servers_backup_fkey using rest_embed_servers(backup_site_id) "
            "and rest_embed_sites(id)",
        },
        {
            "cardinality": "many-to-one",
            "embedding": "rest_embed_servers with rest_embed_sites",
            "relationship": "rest_embed_servers_site_id_fkey using rest_embed_servers(site_id) and rest_embed_sites(id)",
        },
    ]
    assert body["hint"] == (
        "Try changing 'rest_embed_sites' to one of the following: "
        "'rest_embed_sites!rest_embed_servers_backup_fkey', "
        "'rest_embed_sites!rest_embed_servers_site_id_fkey'. "
        "Find the desired relationship in the 'details' key."
    )


def test_disambiguation_by_foreign_key_name_or_column(http):
    """!<fk> names the foreign key; a column of it (either side) works too, and the foreign
    key's column may stand for the target."""
    want = [{"name": "ams-01", "home": {"name": "ams"}, "backup": {"name": "fra"}}]
    for home, backup in (
        (
            "rest_embed_sites!rest_embed_servers_site_id_fkey",
            "rest_embed_sites!rest_embed_servers_backup_fkey",
        ),
        ("rest_embed_sites!site_id", "rest_embed_sites!backup_site_id"),
        ("site_id", "backup_site_id"),
    ):
        assert get(http, SERVERS, select=f"name,home:{home}(name),backup:{backup}(name)", id="eq.10") == want
    # the inverse one-to-many, disambiguated the same way
    rows = get(
        http,
        SITES,
        select="name,homed:rest_embed_servers!site_id(name),backing:rest_embed_servers!backup_site_id(name)",
        id="eq.2",
    )
    assert rows == [{"name": "fra", "homed": [{"name": "fra-01"}], "backing": [{"name": "ams-01"}]}]


def test_missing_relationship_is_400_pgrst200(http):
    body = error(http, SERVERS, 400, select="*,rest_embed_lonely(*)")
    assert body["code"] == "PGRST200"
    assert body["message"] == (
        "Could not find a relationship between 'rest_embed_servers' and "
        "'rest_embed_lonely' in the schema cache"
    )
    assert body["details"] == (
        "Searched for a foreign key relationship between 'rest_embed_servers' and "
        "'rest_embed_lonely' in the schema 'public', but no matches were found."
    )
    body = error(http, SERVERS, 400, select="*,rest_embed_sites!no_such_fkey(*)")
    assert body["code"] == "PGRST200" and "using the hint 'no_such_fkey'" in body["details"]
    body = error(http, SERVERS, 400, select="*,rest_embed_site(*)")
    assert body["hint"] == "Perhaps you meant 'rest_embed_sites' instead of 'rest_embed_site'."


def test_params_on_a_resource_not_embedded_are_pgrst108(http):
    body = error(http, SERVERS, 400, select="name", **{"rest_embed_notes.body": "eq.x"})
    assert body["code"] == "PGRST108"
    assert body["message"] == "'rest_embed_notes' is not an embedded resource in this request"
    assert error(http, SERVERS, 400, select="name", order="rest_embed_sites(name)")["code"] == "PGRST108"


# --- filters, order, limits on embedded resources ---------------------------------------------
def test_embedded_filters_shape_the_embedding_not_the_parents(http):
    """Embedded filters restrict the embedded rows; parents without a match stay, with []."""
    rows = get(
        http,
        SERVERS,
        select="id,rest_embed_notes(body)",
        order="id",
        id="in.(10,11)",
        **{"rest_embed_notes.body": "like.a:*", "rest_embed_notes.order": "body"},
    )
    assert rows == [
        {"id": 10, "rest_embed_notes": [{"body": "a: fan noisy"}, {"body": "a: psu swapped"}]},
        {"id": 11, "rest_embed_notes": []},
    ]
    rows = get(
        http,
        SERVERS,
        select="id,rest_embed_notes(id)",
        id="eq.10",
        **{"rest_embed_notes.or": "(id.eq.1,id.eq.3)", "rest_embed_notes.order": "id"},
    )
    assert rows == [{"id": 10, "rest_embed_notes": [{"id": 1}, {"id": 3}]}]
    # a to-one embedding that the filter rules out is null, the parent stays
    rows = get(
        http,
        SERVERS,
        select="id,rest_embed_sites!site_id(name)",
        id="in.(10,20)",
        order="id",
        **{"rest_embed_sites.name": "eq.ams"},
    )
    assert rows == [{"id": 10, "rest_embed_sites": {"name": "ams"}}, {"id": 20, "rest_embed_sites": None}]


def test_inner_filters_the_top_level(http):
    """!inner: only parents with a matching embedded row; counts agree."""
    r = http.get(
        SERVERS,
        params={
            "select": "id,rest_embed_notes!inner(id)",
            "rest_embed_notes.body": "like.a:*",
            "order": "id",
        },
        headers={"Prefer": "count=exact"},
    )
    assert r.status_code == 200
    assert [x["id"] for x in r.json()] == [10, 20]
    assert r.headers["content-range"] == "0-1/2"
    rows = get(
        http,
        SERVERS,
        select="id,rest_embed_sites!site_id!inner(region)",
        order="id",
        **{"rest_embed_sites.region": "eq.us"},
    )
    assert rows == [{"id": 30, "rest_embed_sites": {"region": "us"}}]


def test_null_filters_on_embedded_resources(http):
    """embed=not.is.null behaves as !inner; embed=is.null is an anti-join; both work in or=."""
    assert [
        r["id"]
        for r in get(
            http, SERVERS, select="id,rest_embed_specs(cpu)", order="id", rest_embed_specs="not.is.null"
        )
    ] == [10, 20]
    assert [
        r["id"]
        for r in get(http, SERVERS, select="id,rest_embed_notes()", order="id", rest_embed_notes="is.null")
    ] == [11, 30, 40]
    rows = get(
        http,
        SERVERS,
        select="id,rest_embed_specs(),rest_embed_tags()",
        order="id",
        **{
            "or": "(rest_embed_specs.not.is.null,rest_embed_tags.not.is.null)",
            "rest_embed_tags.label": "eq.legacy",
        },
    )
    assert rows == [{"id": 10}, {"id": 20}, {"id": 30}]  # empty embeds add no key


def test_embedded_order_limit_offset(http):
    rows = get(
        http,
        SERVERS,
        select="id,rest_embed_notes(id)",
        id="eq.10",
        **{
            "rest_embed_notes.order": "id.desc",
            "rest_embed_notes.limit": "2",
            "rest_embed_notes.offset": "1",
        },
    )
    assert rows == [{"id": 10, "rest_embed_notes": [{"id": 2}, {"id": 1}]}]


def test_top_level_order_by_a_to_one_embedding(http):
    """order=<embed>(col): sort the parents by a column of a many-to-one or one-to-one."""
    rows = get(
        http, SERVERS, select="id,site:rest_embed_sites!site_id(name)", order="site(name).desc.nullslast,id"
    )
    assert [r["id"] for r in rows] == [30, 20, 10, 11, 40]
    body = error(http, SITES, 400, select="id,rest_embed_servers!site_id(id)", order="rest_embed_servers(id)")
    assert body["code"] == "PGRST118"
    assert body["message"] == "A related order on 'rest_embed_servers' is not possible"


def test_aliases_name_the_key_and_the_path(http):
    """Aliases rename the embedded key; filters and orders then use the alias."""
    rows = get(
        http,
        SERVERS,
        select="id,n:rest_embed_notes(id)",
        id="eq.10",
        **{"n.order": "id.desc", "n.limit": "1"},
    )
    assert rows == [{"id": 10, "n": [{"id": 3}]}]


# --- spreads ---------------------------------------------------------------------------------
def test_spread_to_one_lifts_the_columns(http):
    rows = get(
        http,
        SERVERS,
        select="name,...rest_embed_sites!site_id(site:name,region)",
        id="in.(10,40)",
        order="id",
    )
    assert rows == [
        {"name": "ams-01", "site": "ams", "region": "eu"},
        {"name": "spare", "site": None, "region": None},
    ]


def test_spread_to_many_gives_correlated_arrays(http):
    rows = get(
        http,
        SITES,
        select="name,...rest_embed_servers!site_id(server_ids:id,server_names:name)",
        id="eq.1",
        **{"rest_embed_servers.order": "id.desc"},
    )
    assert rows == [{"name": "ams", "server_ids": [11, 10], "server_names": ["ams-02", "ams-01"]}]


# --- RLS, writes, rpc -------------------------------------------------------------------------
def test_rls_applies_to_embedded_tables_as_the_caller(user_a, api_url, anon_key, schema):
    """The embedded subqueries run as the caller: user A sees only A's notes embedded."""
    rows = (
        user_a.table("rest_embed_servers")
        .select("id, rest_embed_notes(body)")
        .eq("id", 10)
        .order("id", foreign_table="rest_embed_notes")
        .execute()
        .data
    )
    assert rows == [{"id": 10, "rest_embed_notes": [{"body": "a: fan noisy"}, {"body": "a: psu swapped"}]}]
    anon = create_client(api_url, anon_key)
    rows = anon.table("rest_embed_servers").select("id, rest_embed_notes(body)").eq("id", 10).execute().data
    assert rows == [{"id": 10, "rest_embed_notes": []}]
    rows = anon.table("rest_embed_servers").select("id, rest_embed_notes!inner(body)").execute().data
    assert rows == []


def test_supabase_py_builds_embedded_requests(sb):
    """The official client's select strings, filters on referenced tables, foreign_table
    order/limit and reference_table or= all reach the embedded resource."""
    rows = (
        sb.table("rest_embed_sites")
        .select("name, servers:rest_embed_servers!site_id(name)")
        .eq("id", 1)
        .order("name", desc=True, foreign_table="servers")
        .limit(1, foreign_table="servers")
        .execute()
        .data
    )
    assert rows == [{"name": "ams", "servers": [{"name": "ams-02"}]}]
    rows = (
        sb.table("rest_embed_servers")
        .select("id, rest_embed_tags!inner(label)")
        .eq("rest_embed_tags.label", "ssd")
        .order("id")
        .execute()
        .data
    )
    assert rows == [
        {"id": 10, "rest_embed_tags": [{"label": "ssd"}]},
        {"id": 20, "rest_embed_tags": [{"label": "ssd"}]},
    ]
    rows = (
        sb.table("rest_embed_servers")
        .select("id, rest_embed_notes(id)")
        .eq("id", 10)
        .or_("id.eq.2,id.eq.4", reference_table="rest_embed_notes")
        .execute()
        .data
    )
    assert rows == [{"id": 10, "rest_embed_notes": [{"id": 2}]}]
    with pytest.raises(APIError) as err:
        sb.table("rest_embed_servers").select("*, rest_embed_sites(*)").execute()
    assert err.value.code == "PGRST201"


def test_embedding_after_a_write(http):
    """Embedding on writes: the representation of the written rows embeds as a read would."""
    r = http.post(
        SERVERS,
        params={"select": "name,site:rest_embed_sites!site_id(name)"},
        json={"id": 99, "name": "new-01", "site_id": 3},
        headers={"Prefer": "return=representation"},
    )
    assert r.status_code == 201, r.text
    assert r.json() == [{"name": "new-01", "site": {"name": "nyc"}}]
    r = http.patch(
        SERVERS,
        params={"id": "eq.99", "select": "id,...rest_embed_sites!site_id(site:name)"},
        json={"site_id": 2},
        headers={"Prefer": "return=representation", "Accept": "application/vnd.pgrst.object+json"},
    )
    assert r.status_code == 200 and r.json() == {"id": 99, "site": "fra"}
    r = http.delete(
        SERVERS,
        params={"id": "eq.99", "select": "id,rest_embed_sites!site_id(name)"},
        headers={"Prefer": "return=representation"},
    )
    assert r.status_code == 200 and r.json() == [{"id": 99, "rest_embed_sites": {"name": "fra"}}]


def test_embedding_on_a_function_returning_table_rows(http):
    """Foreign key joins on table-valued functions: the result embeds like its table."""
    rows = get(http, "/rpc/rest_embed_servers_of", p_site="1", select="name,rest_embed_specs(cpu)")
    assert rows == [
        {"name": "ams-01", "rest_embed_specs": {"cpu": "epyc"}},
        {"name": "ams-02", "rest_embed_specs": None},
    ]
    r = http.post(
        "/rpc/rest_embed_servers_of", params={"select": "id,rest_embed_tags!inner(label)"}, json={"p_site": 1}
    )
    assert (
        r.status_code == 200
        and r.json() == [{"id": 10, "rest_embed_tags": [{"label": "gpu"}, {"label": "ssd"}]}]
        or r.json() == [{"id": 10, "rest_embed_tags": [{"label": "ssd"}, {"label": "gpu"}]}]
    )


def test_aggregates_are_refused_as_by_default(http):
    """PostgREST (and Supabase) keep aggregate functions off by default: PGRST123."""
    assert error(http, SERVERS, 400, select="count()")["code"] == "PGRST123"
    assert error(http, SERVERS, 400, select="id.sum()")["code"] == "PGRST123"
