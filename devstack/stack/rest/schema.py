"""The schema cache: tables, views, columns, functions and foreign-key relationships of
the exposed schemas.

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
    display: str = ""  # format_type(), e.g. "timestamp with time zone" (the OpenAPI format)
    not_null: bool = False


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
    # the table or view whose row type the function returns: its relationships are the
    # result's, so rpc results can embed (PostgREST's "foreign key joins on functions")
    returns: tuple[str, str] | None = None

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def arg_names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.args)


@dataclass(frozen=True)
class Relationship:
    """A foreign-key relationship from ``table`` to ``ftable``, as PostgREST derives them:
    each foreign key gives a many-to-one (one-to-one when its columns are a primary key or
    unique) and the inverse one-to-many (one-to-one); a table whose primary key holds two
    foreign keys' columns joins the tables they reference many-to-many."""

    table: tuple[str, str]
    ftable: tuple[str, str]
    cardinality: str  # m2o | o2m | o2o | m2m
    constraint: str  # the foreign key's name (m2m: the one from the junction to `table`)
    columns: tuple[tuple[str, str], ...]  # (column of table, column of ftable); not m2m
    is_self: bool = False
    # m2m: the junction table, its foreign key to ftable, and its columns paired with
    # the columns of table (source) and of ftable (target) they reference
    junction: tuple[str, str] | None = None
    constraint2: str = ""
    junction_source: tuple[tuple[str, str], ...] = ()
    junction_target: tuple[tuple[str, str], ...] = ()

    @property
    def to_one(self) -> bool:
        return self.cardinality in ("m2o", "o2o")

    def describe(self) -> dict[str, str]:
        """The ``details`` entry of PostgREST's ambiguous-embedding error (PGRST201)."""

        def cols(names) -> str:
            return "(" + ", ".join(names) + ")"

        out = {
            "cardinality": {
                "m2o": "many-to-one",
                "o2m": "one-to-many",
                "o2o": "one-to-one",
                "m2m": "many-to-many",
            }[self.cardinality],
            "embedding": f"{self.table[1]} with {self.ftable[1]}",
        }
        if self.junction is not None:
            out["relationship"] = (
                f"{self.junction[1]} using {self.constraint}{cols(c for c, _ in self.junction_source)}"
                f" and {self.constraint2}{cols(c for c, _ in self.junction_target)}"
            )
        else:
            out["relationship"] = (
                f"{self.constraint} using {self.table[1]}{cols(c for c, _ in self.columns)}"
                f" and {self.ftable[1]}{cols(f for _, f in self.columns)}"
            )
        return out

    def hint_name(self) -> str:
        return f"{self.ftable[1]}!{self.junction[1] if self.junction else self.constraint}"


@dataclass
class SchemaCache:
    schemas: list[str]
    relations: dict[tuple[str, str], Relation] = field(default_factory=dict)
    functions: dict[tuple[str, str], list[Function]] = field(default_factory=dict)
    # relationships by the table they start from
    relationships: dict[tuple[str, str], list[Relationship]] = field(default_factory=dict)

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
       a.attgenerated <> '' as generated,
       format_type(a.atttypid, null) as display, a.attnotnull as not_null
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

# Foreign keys between relations of the exposed schemas (constraints of partitions that
# merely inherit their parent's are left out, as PostgREST does), with whether the
# referencing columns are also a primary key or unique (one-to-one)
_FOREIGN_KEYS_SQL = """
select con.conname, n1.nspname as schema, t1.relname as name, n2.nspname as fschema, t2.relname as fname,
       array(select a.attname from unnest(con.conkey) with ordinality k(num, ord)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num order by k.ord)::text[] as cols,
       array(select a.attname from unnest(con.confkey) with ordinality k(num, ord)
             join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.num order by k.ord)::text[] as fcols,
       exists(select 1 from pg_constraint u
              where u.conrelid = con.conrelid and u.contype in ('p', 'u')
                and (select array_agg(x order by x) from unnest(u.conkey) x)
                    = (select array_agg(x order by x) from unnest(con.conkey) x)) as one_to_one
from pg_constraint con
join pg_class t1 on t1.oid = con.conrelid
join pg_namespace n1 on n1.oid = t1.relnamespace
join pg_class t2 on t2.oid = con.confrelid
join pg_namespace n2 on n2.oid = t2.relnamespace
where con.contype = 'f' and con.conparentid = 0
  and n1.nspname = any($1::text[]) and n2.nspname = any($1::text[])
order by con.conrelid, con.conname
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
            rel.columns[r["attname"]] = Column(
                r["attname"],
                _type_cast(r["typ"]),
                quote_ident(r["attname"]),
                r["def"] or "null",
                bool(r["generated"]),
                r["display"] or "",
                bool(r["not_null"]),
            )
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
                r["attname"], _type_cast(r["typ"]), quote_ident(r["attname"])
            )
    for r in rows:
        fn = _function_from_row(r, composites)
        returned = by_oid.get(r["typrelid"]) if r["typrelid"] else None
        if returned is not None:
            fn.returns = (returned.schema, returned.name)
        cache.functions.setdefault((fn.schema, fn.name), []).append(fn)
    cache.relationships = build_relationships(await conn.fetch(_FOREIGN_KEYS_SQL, schemas), cache.relations)
    return cache


def build_relationships(
    fks: list[Any], relations: dict[tuple[str, str], Relation]
) -> dict[tuple[str, str], list[Relationship]]:
    """PostgREST's relationships from the foreign keys: many-to-one (or one-to-one) along
    each key, the inverse one-to-many (or one-to-one), and many-to-many through a junction
    table whose primary key holds the columns of two of its foreign keys."""
    rels: list[Relationship] = []
    m2o: list[Relationship] = []
    for fk in fks:
        table, ftable = (fk["schema"], fk["name"]), (fk["fschema"], fk["fname"])
        pairs = tuple(zip(fk["cols"], fk["fcols"], strict=True))
        is_self = table == ftable
        if fk["one_to_one"]:
            rels.append(Relationship(table, ftable, "o2o", fk["conname"], pairs, is_self))
            rels.append(
                Relationship(ftable, table, "o2o", fk["conname"], tuple((b, a) for a, b in pairs), is_self)
            )
        else:
            forward = Relationship(table, ftable, "m2o", fk["conname"], pairs, is_self)
            m2o.append(forward)
            rels.append(forward)
            rels.append(
                Relationship(ftable, table, "o2m", fk["conname"], tuple((b, a) for a, b in pairs), is_self)
            )
    by_table: dict[tuple[str, str], list[Relationship]] = {}
    for r in m2o:
        by_table.setdefault(r.table, []).append(r)
    for junction, keys in by_table.items():
        rel = relations.get(junction)
        pk = set(rel.pk) if rel else set()
        for k1 in keys:
            for k2 in keys:
                if k1.constraint == k2.constraint:
                    continue
                if not {c for c, _ in k1.columns} | {c for c, _ in k2.columns} <= pk:
                    continue
                rels.append(
                    Relationship(
                        k1.ftable,
                        k2.ftable,
                        "m2m",
                        k1.constraint,
                        (),
                        k1.ftable == k2.ftable,
                        junction,
                        k2.constraint,
                        k1.columns,
                        k2.columns,
                    )
                )
    out: dict[tuple[str, str], list[Relationship]] = {}
    for r in rels:
        if r.table in relations and r.ftable in relations:
            out.setdefault(r.table, []).append(r)
    return out


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
