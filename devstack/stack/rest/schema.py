"""The schema cache: tables, views, columns and functions of the exposed schemas.

Every identifier the REST layer writes into SQL comes from here, already quoted. The
cache is rebuilt whenever Postgres sends ``NOTIFY pgrst, 'reload schema'`` (the
platform's DDL event triggers, ``supabase db reset`` and ``rackpilot dev reset`` do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # schema-qualified, quoted type name usable in a cast, e.g. "pg_catalog"."int4"
    quoted: str
    # the column's DEFAULT as SQL (from the catalog, never from a request): what an insert
    # with Prefer: missing=default stores for a key a row leaves out; "null" when none
    default: str = "null"
    generated: bool = False  # GENERATED ALWAYS AS (...) STORED: never written


@dataclass
class Relation:
    schema: str
    name: str
    kind: str  # pg_class.relkind
    columns: dict[str, Column] = field(default_factory=dict)
    pk: list[str] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass
class Function:
    schema: str
    name: str
    args: list[Column]  # input arguments in declaration order
    required: frozenset[str]  # input arguments without a default
    kind: str  # scalar | row | setof_scalar | setof_row | void
    volatility: str  # i | s | v
    columns: dict[str, Column] = field(default_factory=dict)  # of row / setof_row results
    supported: bool = True

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def arg_names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.args)


@dataclass
class SchemaCache:
    schemas: list[str]
    relations: dict[tuple[str, str], Relation] = field(default_factory=dict)
    functions: dict[tuple[str, str], list[Function]] = field(default_factory=dict)

    def arg_names(self, schema: str, name: str) -> frozenset[str]:
        out: set[str] = set()
        for fn in self.functions.get((schema, name), ()):
            out |= fn.arg_names
        return frozenset(out)


_TYPE = "format('%I.%I', tn.nspname, t.typname)"

_RELATIONS_SQL = f"""
select c.oid, n.nspname, c.relname, c.relkind::text as relkind, a.attname, {_TYPE} as typ,
       case when a.attidentity <> '' then format('nextval(%L::regclass)', pg_get_serial_sequence(
                                                   format('%I.%I', n.nspname, c.relname), a.attname))
            when a.attgenerated = '' then pg_get_expr(d.adbin, d.adrelid) end as def,
       a.attgenerated <> '' as generated
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
left join pg_type t on t.oid = a.atttypid
left join pg_namespace tn on tn.oid = t.typnamespace
where n.nspname = any($1::text[]) and c.relkind in ('r', 'v', 'm', 'f', 'p')
order by c.oid, a.attnum
"""

_PK_SQL = """
select con.conrelid, array(select a.attname from unnest(con.conkey) with ordinality k(num, ord)
                           join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num
                           order by k.ord)::text[] as cols
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
where con.contype = 'p' and n.nspname = any($1::text[])
"""

_FUNCTIONS_SQL = f"""
select p.oid, n.nspname, p.proname, p.provolatile::text as volatility, p.proretset,
       rt.typname = 'void' and rtn.nspname = 'pg_catalog' as returns_void,
       rt.typname = 'record' and rtn.nspname = 'pg_catalog' as returns_record,
       rt.typrelid,
       coalesce(p.proargmodes::text[], array[]::text[]) as modes,
       coalesce(p.proargnames, array[]::text[]) as names,
       array(select {_TYPE} from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             with ordinality u(oid, ord)
             join pg_type t on t.oid = u.oid join pg_namespace tn on tn.oid = t.typnamespace
             order by u.ord)::text[] as types,
       p.pronargdefaults
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
join pg_namespace rtn on rtn.oid = rt.typnamespace
where n.nspname = any($1::text[]) and p.prokind = 'f'
"""

_COMPOSITE_SQL = f"""
select a.attrelid, a.attname, {_TYPE} as typ
from pg_attribute a
join pg_type t on t.oid = a.atttypid
join pg_namespace tn on tn.oid = t.typnamespace
where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped
order by a.attrelid, a.attnum
"""


def _type_cast(typ: str) -> str:
    # format('%I.%I') already quotes where needed; casts use it verbatim
    return typ


async def load_schema_cache(conn: Any, schemas: list[str]) -> SchemaCache:
    """Introspect the exposed schemas over an asyncpg connection."""
    cache = SchemaCache(schemas=list(schemas))
    by_oid: dict[int, Relation] = {}
    for r in await conn.fetch(_RELATIONS_SQL, schemas):
        rel = by_oid.get(r["oid"])
        if rel is None:
            rel = by_oid[r["oid"]] = Relation(r["nspname"], r["relname"], r["relkind"])
            cache.relations[(rel.schema, rel.name)] = rel
        if r["attname"] is not None:
            rel.columns[r["attname"]] = Column(r["attname"], _type_cast(r["typ"]), quote_ident(r["attname"]),
                                               r["def"] or "null", bool(r["generated"]))
    for r in await conn.fetch(_PK_SQL, schemas):
        rel = by_oid.get(r["conrelid"])
        if rel is not None:
            rel.pk = list(r["cols"])

    rows = await conn.fetch(_FUNCTIONS_SQL, schemas)
    composite_oids = sorted({r["typrelid"] for r in rows if r["typrelid"]})
    composites: dict[int, dict[str, Column]] = {}
    if composite_oids:
        for r in await conn.fetch(_COMPOSITE_SQL, composite_oids):
            composites.setdefault(r["attrelid"], {})[r["attname"]] = Column(
                r["attname"], _type_cast(r["typ"]), quote_ident(r["attname"]))
    for r in rows:
        fn = _function_from_row(r, composites)
        cache.functions.setdefault((fn.schema, fn.name), []).append(fn)
    return cache


def _function_from_row(r: Any, composites: dict[int, dict[str, Column]]) -> Function:
    types: list[str] = list(r["types"])
    modes: list[str] = list(r["modes"]) or ["i"] * len(types)
    names: list[str] = list(r["names"]) + [""] * (len(types) - len(r["names"]))
    args: list[Column] = []
    outs: dict[str, Column] = {}
    supported = True
    for name, mode, typ in zip(names, modes, types, strict=False):
        if mode in ("i", "b"):
            if not name:
                supported = False  # PostgREST calls functions with named arguments only
            args.append(Column(name, _type_cast(typ), quote_ident(name)))
        elif mode == "v":
            supported = False  # variadic arguments are outside the supported subset
        if mode in ("o", "b", "t") and name:
            outs[name] = Column(name, _type_cast(typ), quote_ident(name))
    ndefaults = r["pronargdefaults"] or 0
    required = frozenset(a.name for a in args[: len(args) - ndefaults])
    columns: dict[str, Column] = {}
    if r["returns_void"]:
        kind = "void"
    elif r["typrelid"]:
        columns = composites.get(r["typrelid"], {})
        kind = "setof_row" if r["proretset"] else "row"
    elif r["returns_record"]:
        if not outs:
            supported = False  # an untyped record needs a column list the client cannot send
        columns = outs
        kind = "setof_row" if r["proretset"] else "row"
    else:
        kind = "setof_scalar" if r["proretset"] else "scalar"
    return Function(r["nspname"], r["proname"], args, required, kind, r["volatility"], columns, supported)
