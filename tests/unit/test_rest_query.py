"""The REST layer's query-string grammar and SQL generation, without a database.

Generated SQL must name only identifiers from the schema cache and carry request values
only as positions in the one text[] parameter."""

from __future__ import annotations

import pytest

from devstack.stack.rest import query as q
from devstack.stack.rest.errors import (
    AggregatesNotAllowed,
    NotAcceptable,
    NotImplementedFeature,
    ParseError,
    UnknownBodyColumn,
    UnknownColumn,
    status_for_sqlstate,
)
from devstack.stack.rest.schema import Column, Function, Relation, quote_ident
from devstack.stack.rest.service import _content_range, _Prefer, _single_accept, _split_qs


def rel() -> Relation:
    r = Relation("public", "items", "r", pk=["id"])
    for name, typ in (
        ("id", '"pg_catalog"."int8"'),
        ("name", '"pg_catalog"."text"'),
        ("qty", '"pg_catalog"."int4"'),
        ('we"ird', '"pg_catalog"."text"'),
    ):
        r.columns[name] = Column(name, typ, quote_ident(name))
    return r


def test_split_top_respects_quotes_and_parentheses():
    assert q.split_top('a,"b,c",in.(1,2),"x\\"y"') == ["a", '"b,c"', "in.(1,2)", '"x\\"y"']
    with pytest.raises(ParseError):
        q.split_top("(a,b")
    with pytest.raises(ParseError):
        q.split_top('"open')


def test_query_string_decoding_is_form_style():
    assert _split_qs(b"name=eq.a+b&x=in.(%22c%2Cd%22)&x=gt.1") == [
        ("name", "eq.a b"),
        ("x", 'in.("c,d")'),
        ("x", "gt.1"),
    ]


def test_filters_become_shape_plus_values():
    req = q.parse_query(
        [
            ("select", "id,label:name"),
            ("qty", "gte.3"),
            ("name", 'not.in.(a,"b,c")'),
            ("or", "(qty.is.null,and(name.like.a*,qty.lt.2))"),
            ("order", "qty.desc.nullsfirst,id"),
        ]
    )
    assert req.params == ["3", "a", "b,c", "a%", "2"]
    assert req.filters[0] == ("f", "qty", "gte", False, 1)
    assert req.filters[1] == ("f", "name", "in", True, (2, 3))
    sql = q.read_sql(rel(), req, single=False, count=True, limit_idx=req.add("10"), offset_idx=req.add("0"))
    assert '_t."qty" >= ($1[1])::"pg_catalog"."int4"' in sql
    assert 'not (_t."name" in (($1[2])::"pg_catalog"."text", ($1[3])::"pg_catalog"."text"))' in sql
    assert (
        '(_t."qty" is null or (_t."name"::text like $1[4] and _t."qty" < ($1[5])::"pg_catalog"."int4"))'
        in sql
    )
    assert 'order by _t."qty" desc nulls first, _t."id"' in sql
    assert '_t."name" as "label"' in sql
    assert "limit ($1[6])::bigint offset ($1[7])::bigint" in sql
    for value in ("3", "b,c", "a%"):
        assert f"'{value}'" not in sql


def test_same_shape_same_sql_whatever_the_values():
    def sql_for(value: str) -> str:
        req = q.parse_query([("name", f"eq.{value}")])
        return q.read_sql(rel(), req, False, False, req.add("1"), req.add("0"))

    assert sql_for("x") == sql_for("'; drop table items; --") == sql_for('"); select 1 --')


def test_identifiers_come_only_from_the_cache():
    r = rel()
    for pairs in (
        [("select", 'id,"name\\"; drop table x; --"')],
        [('id"; drop', "eq.1")],
        [("order", "nope.desc")],
        [("or", "(nope.eq.1)")],
    ):
        req = q.parse_query(pairs)
        with pytest.raises(UnknownColumn):
            q.read_sql(r, req, False, False, req.add("1"), req.add("0"))
    req = q.parse_query([("select", '"we\\"ird"'), ('"we\\"ird"', "eq.1")])
    sql = q.read_sql(r, req, False, False, req.add("1"), req.add("0"))
    assert '_t."we""ird"' in sql  # quoted by the cache, not by the request


@pytest.mark.parametrize(
    "pairs, error",
    [
        ([("qty", "nope.1")], ParseError),
        ([("qty", "eq")], ParseError),
        ([("qty", "is.maybe")], ParseError),
        ([("qty", "in.1,2")], ParseError),
        ([("qty", "like(some).{a}")], ParseError),
        (
            [("qty", "neq(any).{a}")],
            ParseError,
        ),  # PostgREST quantifies eq gt gte lt lte like ilike match imatch
        ([("qty", "eq(any).1")], ParseError),  # the value is an array literal
        ([("name", "fts().cat")], ParseError),
        ([("select", "a:...other(*)")], ParseError),  # a spread takes no alias
        ([("select", "other!a!b!c(*)")], ParseError),
        ([("select", "*,other(*")], ParseError),
        ([("select", "count()")], AggregatesNotAllowed),
        ([("select", "qty.sum()")], AggregatesNotAllowed),
        ([("select", "qty->a")], NotImplementedFeature),
        ([("limit", "-1")], ParseError),
        ([("offset", "x")], ParseError),
        ([("order", "qty.sideways")], ParseError),
        ([("or", "qty.eq.1")], ParseError),
        ([("or", "()")], ParseError),
        ([("name", "eq.a\x00b")], ParseError),
    ],
)
def test_bad_queries_are_rejected(pairs, error):
    with pytest.raises(error):
        q.parse_query(pairs)


def test_embedding_grammar():
    """select items nest as PostgREST's grammar: alias:name!hint!inner(...), ...spread(...);
    dotted keys address the embedded resource by name or alias."""
    req = q.parse_query(
        [
            ("select", 'id,site:sites!servers_site_id_fkey!inner(name,...regions(code)),notes(),"we,ird"'),
            ("site.name", "eq.x"),
            ("site.regions.order", "code.desc"),
            ("notes.limit", "2"),
            ("notes.offset", "1"),
            ("site.or", "(name.eq.a,name.eq.b)"),
            ("site.not.and", "(name.eq.c)"),
            ("order", "site(name).desc,id"),
        ]
    )
    assert req.select == (
        ("c", "id", None),
        (
            "e",
            "sites",
            "site",
            "servers_site_id_fkey",
            "inner",
            False,
            (("c", "name", None), ("e", "regions", None, None, None, True, (("c", "code", None),))),
        ),
        ("e", "notes", None, None, None, False, ()),
        ("c", "we,ird", None),
    )
    assert [f[0] for f in req.nested[("site",)].filters] == ["f", "or", "and"]
    assert req.nested[("site", "regions")].order == (("code", "desc", "", None),)
    assert (req.nested[("notes",)].limit, req.nested[("notes",)].offset) == (2, 1)
    assert req.order == (("name", "desc", "", "site"), ("id", "", "", None))
    req.bind_embeds(1000)
    assert req.params[req.embed_max_idx - 1] == "1000"
    assert req.params[req.nested[("notes",)].limit_idx - 1] == "2"


def test_remaining_operators():
    r = rel()
    req = q.parse_query(
        [
            ("qty", "sl.[1,5)"),
            ("qty", "adj.(1,2)"),
            ("name", "like(any).{a*,*b}"),
            ("name", "not.ilike(all).{A*}"),
            ("qty", "eq(any).{1,2}"),
            ("name", "fts(english).cat"),
        ]
    )
    sql = q.read_sql(r, req, False, False, req.add("1"), req.add("0"))
    assert '_t."qty" << ($1[1])::"pg_catalog"."int4"' in sql
    assert '_t."qty" -|- ($1[2])::"pg_catalog"."int4"' in sql
    assert '_t."name"::text like any(($1[3])::text[])' in sql and req.params[2] == "{a%,%b}"
    assert 'not (_t."name"::text ilike all(($1[4])::text[]))' in sql
    assert '_t."qty" = any(($1[5])::"pg_catalog"."int4"[])' in sql
    assert '_t."name" @@ to_tsquery(($1[6])::regconfig, $1[7])' in sql and req.params[5:7] == [
        "english",
        "cat",
    ]


def test_writes():
    r = rel()
    req = q.parse_query([("on_conflict", "name")])
    sql = q.insert_sql(r, req, ("id", "name"), req.add("[]"), True, False, False, "merge")
    assert 'json_populate_recordset(null::"public"."items", ($1[1])::json)' in sql
    assert 'on conflict ("name") do update set "id" = excluded."id"' in sql
    sql = q.insert_sql(r, q.parse_query([]), ("id", "name"), 1, False, False, False, "ignore")
    assert 'on conflict ("id") do nothing' in sql and "returning" not in sql
    with pytest.raises(UnknownBodyColumn):
        q.insert_sql(r, q.parse_query([]), ("nope",), 1, True, False, False, None)
    req = q.parse_query([("id", "eq.5")])
    sql = q.update_sql(r, req, ("qty",), req.add("{}"), True, False, False)
    assert sql.startswith('with _s as (update "public"."items" as _t set "qty" = _j."qty"')
    assert 'where _t."id" = ($1[1])::"pg_catalog"."int8" returning _t.*' in sql
    sql = q.delete_sql(r, q.parse_query([("id", "eq.5")]), False, False, True)
    assert "returning 1" in sql and "count(*), count(*)" in sql


def test_rpc_shapes():
    args = [Column("a", '"pg_catalog"."int4"', '"a"')]
    scalar = Function("public", "f", args, frozenset({"a"}), "scalar", "i")
    req = q.parse_query([])
    sql = q.rpc_sql(
        scalar, req, ("a",), True, (req.add('{"a":1}'),), False, False, req.add("1"), req.add("0")
    )
    assert 'json_to_record(($1[1])::json) as _a("a" "pg_catalog"."int4")' in sql
    assert '"public"."f"("a" => _a."a")' in sql and "to_json" in sql
    sql = q.rpc_sql(scalar, q.parse_query([]), ("a",), False, (1,), False, False, 2, 3)
    assert '"public"."f"("a" => ($1[1])::"pg_catalog"."int4")' in sql
    with pytest.raises(NotImplementedFeature):
        q.rpc_sql(scalar, q.parse_query([("a", "eq.1")]), (), False, (), False, False, 2, 3)
    rows = Function("public", "g", [], frozenset(), "setof_row", "s", {"x": Column("x", "int4", '"x"')})
    sql = q.rpc_sql(rows, q.parse_query([("x", "gt.1")]), (), True, (), False, True, 2, 3)
    assert sql.startswith('with _f as materialized (select _t.* from "public"."g"() _t)')
    assert "(select count(*) from _f _t where" in sql


def test_headers_and_ranges():
    assert _single_accept(None) is False
    assert _single_accept("application/json") is False
    assert _single_accept("application/vnd.pgrst.object+json;nulls=stripped") is True
    with pytest.raises(NotAcceptable):
        _single_accept("text/html")
    p = _Prefer("return=representation, count=exact,resolution=ignore-duplicates, missing=default")
    assert (p.representation, p.count, p.resolution) == (True, True, "ignore")
    assert _content_range((0, True), 0, 0) == "*/0"
    assert _content_range((10, False), 5, None) == "10-14/*"
    assert _content_range((0, True), 2, 7) == "0-1/7"


def test_sqlstate_status_mapping():
    assert status_for_sqlstate("42501", "anon") == 401
    assert status_for_sqlstate("42501", "authenticated") == 403
    assert [
        status_for_sqlstate(c, "x") for c in ("23505", "23503", "22P02", "23502", "P0001", "42P01", "42883")
    ] == [409, 409, 400, 400, 400, 404, 404]
    assert status_for_sqlstate("PT402", "x") == 402
    assert status_for_sqlstate("53300", "x") == 503
    assert status_for_sqlstate("XX000", "x") == 500
