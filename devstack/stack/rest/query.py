"""PostgREST query-string grammar -> an abstract request, and that request -> SQL.

Parsing splits a request into a *shape* (hashable: relation, columns, operators, the
positions of values) and its *values* (a list of strings). Only the shape decides the
SQL text, so the service caches generated SQL by shape. Values travel only as elements
of the single ``text[]`` parameter and are cast in SQL to the column's type taken from
the schema cache, e.g. ``_t."id" = ($1[3])::"pg_catalog"."uuid"``. Every identifier in the
SQL comes from the schema cache, already quoted; nothing from the request is spliced in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import (
    NotImplementedFeature,
    ParseError,
    UnknownBodyColumn,
    UnknownColumn,
)
from .schema import Column, Function, Relation, quote_ident

# operator -> SQL comparison; values are cast to the column's type
CMP_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
           "isdistinct": "is distinct from",
           # containment and overlap of arrays, jsonb and ranges (value in the column's syntax)
           "cs": "@>", "cd": "<@", "ov": "&&"}
# full-text search: column @@ <function>(value)
FTS_OPS = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery",
           "wfts": "websearch_to_tsquery"}
# pattern operators compare the column's text form
TEXT_OPS = {"like": "like", "ilike": "ilike", "match": "~", "imatch": "~*"}
IS_VALUES = {"null": "is null", "not_null": "is not null", "true": "is true", "false": "is false",
             "unknown": "is unknown"}
# PostgREST operators outside the supported subset: a clear PGRST127, not a parse error
KNOWN_UNSUPPORTED_OPS = frozenset({"sl", "sr", "nxl", "nxr", "adj"})
RESERVED = frozenset({"select", "order", "limit", "offset", "columns", "on_conflict", "or", "and"})
MAX_IN_VALUES = 1000  # values in one in.(...) list
MAX_FILTER_DEPTH = 16  # nesting of or/and groups


@dataclass
class Request:
    """What the query string asks for; ``shape`` keys the SQL cache."""

    select: tuple = (("*",),)
    filters: tuple = ()
    order: tuple = ()
    limit: int | None = None
    offset: int = 0
    columns: tuple[str, ...] | None = None
    on_conflict: tuple[str, ...] | None = None
    params: list[str | None] = field(default_factory=list)

    def add(self, value: str | None) -> int:
        if value is not None and "\x00" in value:
            raise ParseError("Values may not contain NUL characters")
        self.params.append(value)
        return len(self.params)  # SQL arrays are 1-based


def _unquote(token: str) -> str:
    """A possibly double-quoted token of the grammar, with backslash escapes."""
    if len(token) >= 2 and token[0] == '"' and token[-1] == '"':
        out: list[str] = []
        it = iter(token[1:-1])
        for ch in it:
            if ch == "\\":
                ch = next(it, "")
            out.append(ch)
        return "".join(out)
    return token


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside double quotes, parentheses and ``{...}`` array literals
    (``tags.cs.{a,b}`` inside ``or=(...)``), as PostgREST's grammar does. Other values with
    reserved characters, range literals such as ``[1,5)`` among them, are double-quoted."""
    parts: list[str] = []
    depth = 0
    literal = 0  # nesting of {}
    quoted = False
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "{":
            literal += 1
        elif ch == "}" and literal:
            literal -= 1
        elif literal:
            pass  # inside an array literal, parentheses and separators are data
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ParseError(f'Unbalanced parentheses in "{text}"')
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted or depth != 0 or literal != 0:
        raise ParseError(f'Unbalanced quotes, parentheses or braces in "{text}"')
    parts.append(text[start:])
    return parts


def _split_name(item: str) -> tuple[str, str]:
    """``name.rest`` where name may be double-quoted."""
    if item.startswith('"'):
        i = 1
        while i < len(item):
            if item[i] == "\\":
                i += 2
                continue
            if item[i] == '"':
                break
            i += 1
        else:
            raise ParseError(f'Unterminated quoted name in "{item}"')
        name = _unquote(item[: i + 1])
        rest = item[i + 1:]
        if rest and not rest.startswith("."):
            raise ParseError(f'Unexpected text after quoted name in "{item}"')
        return name, rest[1:]
    name, _, rest = item.partition(".")
    return name, rest


def _parse_op(req: Request, column: str, expr: str, in_logic: bool) -> tuple:
    """``[not.]op.value`` applied to ``column`` -> a filter node."""
    negate = False
    op, dot, value = expr.partition(".")
    if op == "not":
        negate = True
        op, dot, value = value.partition(".")
    if not dot:
        raise ParseError(f'"{expr}" is not of the form operator.value',
                         hint="Filters look like column=eq.value")
    base = op.split("(", 1)[0]
    if "(" in op:
        raise NotImplementedFeature("Operator modifiers such as like(any) are not supported",
                                    details=f"operator {op!r}")
    if base in CMP_OPS or base in TEXT_OPS or base in FTS_OPS:
        if in_logic:
            value = _unquote(value)
        if base in ("like", "ilike"):
            value = value.replace("*", "%")  # PostgREST's URL-safe wildcard
        return ("f", column, base, negate, req.add(value))
    if op == "is":
        kw = value.lower()
        if kw not in IS_VALUES:
            raise ParseError(f'"{value}" is not a valid value for the is operator',
                             hint="Use is.null, is.not_null, is.true, is.false or is.unknown")
        return ("f", column, "is", negate, kw)
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise ParseError(f'"{value}" is not a list of the form (a,b,c)')
        inner = value[1:-1]
        items = [] if inner == "" else split_top(inner)
        if len(items) > MAX_IN_VALUES:
            raise ParseError(f"An in.() list may hold at most {MAX_IN_VALUES} values")
        return ("f", column, "in", negate, tuple(req.add(_unquote(v)) for v in items))
    if op in KNOWN_UNSUPPORTED_OPS:
        raise NotImplementedFeature(f'The operator "{op}" is not supported by this REST layer',
                                    details=f"supported: {', '.join([*CMP_OPS, *TEXT_OPS, *FTS_OPS, 'is', 'in'])}")
    raise ParseError(f'Unknown operator "{op}"',
                     hint="Supported: " + ", ".join([*CMP_OPS, *TEXT_OPS, *FTS_OPS, "is", "in"]))


def _parse_logic(req: Request, kind: str, negate: bool, text: str, depth: int) -> tuple:
    if depth > MAX_FILTER_DEPTH:
        raise ParseError("Logic filters are nested too deeply")
    if not (text.startswith("(") and text.endswith(")")):
        raise ParseError(f'"{text}" is not a parenthesised list of conditions',
                         hint="Write or=(a.eq.1,b.eq.2)")
    children = []
    for item in split_top(text[1:-1]):
        if not item:
            raise ParseError("Empty condition in a logic filter")
        neg = False
        body = item
        if body.startswith("not."):
            neg, body = True, body[4:]
        for word in ("and", "or"):
            if body.startswith(word + "("):
                children.append(_parse_logic(req, word, neg, body[len(word):], depth + 1))
                break
        else:
            column, rest = _split_name(item)
            children.append(_parse_op(req, column, rest, in_logic=True))
    return (kind, negate, tuple(children))


def _parse_select(text: str) -> tuple:
    if text.strip() == "":
        return (("*",),)
    items = []
    for raw in split_top(text):
        item = raw.strip()
        if "(" in item or item.startswith("..."):
            raise NotImplementedFeature(
                "Resource embedding is not supported by this REST layer",
                details=f"select item {item!r}", hint="Query each table separately, or use an rpc")
        if "->" in item or "::" in item:
            raise NotImplementedFeature("JSON paths and casts in select are not supported",
                                        details=f"select item {item!r}")
        if item == "*":
            items.append(("*",))
            continue
        alias = None
        if ":" in item and not item.startswith('"'):
            alias, _, item = item.partition(":")
            if not alias:
                raise ParseError(f'Empty alias in select item "{raw}"')
        name = _unquote(item)
        if not name:
            raise ParseError("Empty column name in select")
        items.append(("c", name, alias))
    return tuple(items)


def _parse_order(text: str) -> tuple:
    out = []
    for raw in split_top(text):
        if not raw:
            raise ParseError("Empty item in order")
        name, rest = _split_name(raw)
        direction = nulls = ""
        for mod in (rest.split(".") if rest else []):
            if mod in ("asc", "desc") and not direction and not nulls:
                direction = mod
            elif mod in ("nullsfirst", "nullslast") and not nulls:
                nulls = mod
            else:
                raise ParseError(f'"{raw}" is not a valid order item',
                                 hint="Write order=col.asc|desc[.nullsfirst|.nullslast]")
        out.append((name, direction, nulls))
    return tuple(out)


def _parse_int(key: str, value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise ParseError(f'"{value}" is not a valid {key}', hint=f"{key} takes a non-negative integer")
    return int(value)


def _parse_column_list(key: str, value: str) -> tuple[str, ...]:
    names = tuple(_unquote(v.strip()) for v in split_top(value))
    if not names or any(not n for n in names):
        raise ParseError(f'"{value}" is not a valid {key} list')
    return names


def parse_query(pairs: list[tuple[str, str]], rpc_args: frozenset[str] = frozenset()) -> Request:
    """Parse the query-string pairs of a table or rpc request. Pairs whose key is in
    ``rpc_args`` are skipped (GET rpc passes arguments in the query string)."""
    req = Request()
    filters: list[tuple] = []
    for key, value in pairs:
        if key in rpc_args:
            continue
        if key == "select":
            req.select = _parse_select(value)
        elif key == "order":
            req.order = _parse_order(value)
        elif key == "limit":
            req.limit = _parse_int("limit", value)
        elif key == "offset":
            req.offset = _parse_int("offset", value)
        elif key == "columns":
            req.columns = _parse_column_list("columns", value)
        elif key == "on_conflict":
            req.on_conflict = _parse_column_list("on_conflict", value)
        elif key in ("or", "and", "not.or", "not.and"):
            neg = key.startswith("not.")
            filters.append(_parse_logic(req, key.removeprefix("not."), neg, value, 0))
        else:
            if "." in key and not key.startswith('"'):
                head, _, tail = key.rpartition(".")
                if tail in RESERVED:
                    raise NotImplementedFeature("Resource embedding is not supported by this REST layer",
                                                details=f"query parameter {key!r}")
            column = _unquote(key)
            if not column:
                raise ParseError("Empty column name in a filter")
            filters.append(_parse_op(req, column, value, in_logic=False))
    req.filters = tuple(filters)
    return req


# --- SQL generation ---------------------------------------------------------------------

def _column(cols: dict[str, Column], name: str, relname: str) -> Column:
    col = cols.get(name)
    if col is None:
        if "->" in name:
            raise NotImplementedFeature("JSON path filters are not supported by this REST layer",
                                        details=f"column {name!r}")
        raise UnknownColumn(f"column {relname}.{name} does not exist")
    return col


def _filter_sql(node: tuple, cols: dict[str, Column], relname: str) -> str:
    kind = node[0]
    if kind == "f":
        _, name, op, negate, payload = node
        col = _column(cols, name, relname)
        ref = f"_t.{col.quoted}"
        if op in CMP_OPS:
            sql = f"{ref} {CMP_OPS[op]} ($1[{payload}])::{col.type}"
        elif op in TEXT_OPS:
            sql = f"{ref}::text {TEXT_OPS[op]} $1[{payload}]"
        elif op in FTS_OPS:
            sql = f"{ref} @@ {FTS_OPS[op]}($1[{payload}])"
        elif op == "is":
            sql = f"{ref} {IS_VALUES[payload]}"
        else:  # in
            if not payload:
                sql = "false"
            else:
                sql = f"{ref} in (" + ", ".join(f"($1[{i}])::{col.type}" for i in payload) + ")"
        return f"not ({sql})" if negate else sql
    _, negate, children = node
    joiner = " or " if kind == "or" else " and "
    sql = "(" + joiner.join(_filter_sql(c, cols, relname) for c in children) + ")"
    return f"not {sql}" if negate else sql


def where_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    if not req.filters:
        return ""
    return " where " + " and ".join(_filter_sql(f, cols, relname) for f in req.filters)


def order_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    if not req.order:
        return ""
    items = []
    for name, direction, nulls in req.order:
        col = _column(cols, name, relname)
        s = f"_t.{col.quoted}"
        if direction:
            s += " " + direction
        if nulls:
            s += " nulls first" if nulls == "nullsfirst" else " nulls last"
        items.append(s)
    return " order by " + ", ".join(items)


def select_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    items = []
    for item in req.select:
        if item[0] == "*":
            items.append("_t.*")
            continue
        _, name, alias = item
        col = _column(cols, name, relname)
        items.append(f"_t.{col.quoted} as {quote_ident(alias or name)}")
    return ", ".join(items)


def returning_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    return select_sql(req, cols, relname)


def _body(single: bool) -> str:
    return "(json_agg(_s)->0)::text" if single else "coalesce(json_agg(_s), '[]')::text"


def read_sql(rel: Relation, req: Request, single: bool, count: bool, limit_idx: int, offset_idx: int) -> str:
    where = where_sql(req, rel.columns, rel.name)
    inner = (f"select {select_sql(req, rel.columns, rel.name)} from {rel.qualified} _t{where}"
             f"{order_sql(req, rel.columns, rel.name)}"
             f" limit ($1[{limit_idx}])::bigint offset ($1[{offset_idx}])::bigint")
    total = f"(select count(*) from {rel.qualified} _t{where})" if count else "null::bigint"
    return f"select {_body(single)}, count(*), {total} from ({inner}) _s"


def _check_body_columns(rel: Relation, names: tuple[str, ...]) -> list[Column]:
    out = []
    for n in names:
        col = rel.columns.get(n)
        if col is None:
            raise UnknownBodyColumn(f"Could not find the '{n}' column of '{rel.name}' in the schema cache")
        out.append(col)
    return out


def _write_tail(req: Request, rel: Relation, representation: bool, single: bool, count: bool,
                statement: str) -> str:
    total = "count(*)" if count else "null::bigint"
    if representation:
        ret = f" returning {returning_sql(req, rel.columns, rel.name)}"
        return f"with _s as ({statement}{ret}) select {_body(single)}, count(*), {total} from _s"
    if count or single:
        return f"with _s as ({statement} returning 1) select null::text, count(*), {total} from _s"
    return f"with _s as ({statement}) select null::text, null::bigint, null::bigint"


def insert_sql(rel: Relation, req: Request, columns: tuple[str, ...], body_idx: int, representation: bool,
               single: bool, count: bool, upsert: str | None, missing_default: bool = False) -> str:
    """``missing_default`` (Prefer: missing=default): a key that a row leaves out takes the
    column's DEFAULT, as PostgREST does; otherwise it is NULL."""
    cols = _check_body_columns(rel, columns)
    names = ", ".join(c.quoted for c in cols)
    if cols and missing_default:
        values = ", ".join(f"case when _e.j::jsonb ? {_sql_literal(c.name)} then _r.{c.quoted} else {c.default} end"
                           for c in cols)
        stmt = (f"insert into {rel.qualified} as _t ({names}) select {values} "
                f"from json_array_elements(($1[{body_idx}])::json) with ordinality _e(j, n) "
                f"cross join lateral json_populate_record(null::{rel.qualified}, _e.j) _r order by _e.n")
    elif cols:
        stmt = (f"insert into {rel.qualified} as _t ({names}) select {names} "
                f"from json_populate_recordset(null::{rel.qualified}, ($1[{body_idx}])::json)")
    else:
        stmt = f"insert into {rel.qualified} as _t default values"
    if upsert:
        conflict = req.on_conflict or tuple(rel.pk)
        if not conflict:
            raise ParseError(f"Table '{rel.name}' has no primary key: pass on_conflict for an upsert")
        target = ", ".join(c.quoted for c in _check_body_columns(rel, conflict))
        updates = [c for c in cols if c.name not in conflict]
        if upsert == "ignore" or not updates:
            stmt += f" on conflict ({target}) do nothing"
        else:
            sets = ", ".join(f"{c.quoted} = excluded.{c.quoted}" for c in updates)
            stmt += f" on conflict ({target}) do update set {sets}"
    return _write_tail(req, rel, representation, single, count, stmt)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def update_sql(rel: Relation, req: Request, columns: tuple[str, ...], body_idx: int, representation: bool,
               single: bool, count: bool, limit_idx: int | None = None, offset_idx: int | None = None) -> str:
    cols = _check_body_columns(rel, columns)
    where = _write_where(rel, req, limit_idx, offset_idx)
    if not cols:
        # an empty patch changes nothing; answer with the rows it would have touched
        stmt = f"select _t.* from {rel.qualified} _t{where}"
        if representation:
            return (f"with _s as (select {returning_sql(req, rel.columns, rel.name)} from {rel.qualified} _t"
                    f"{where}) select {_body(single)}, count(*), null::bigint from _s")
        return f"with _s as ({stmt}) select null::text, count(*), null::bigint from _s"
    sets = ", ".join(f"{c.quoted} = _j.{c.quoted}" for c in cols)
    stmt = (f"update {rel.qualified} as _t set {sets} "
            f"from json_populate_record(null::{rel.qualified}, ($1[{body_idx}])::json) _j")
    stmt += (" where " + where[len(" where "):]) if where else ""
    return _write_tail(req, rel, representation, single, count, stmt)


def _write_where(rel: Relation, req: Request, limit_idx: int | None, offset_idx: int | None) -> str:
    """The WHERE of an update or delete. With ``limit`` (and ``offset``, ``order``) the
    statement touches only those rows, as PostgREST's limited updates and deletes do: the
    rows are picked by ``ctid`` in a subquery with the same filters."""
    where = where_sql(req, rel.columns, rel.name)
    if limit_idx is None:
        return where
    if rel.kind not in ("r", "p"):
        raise NotImplementedFeature("limit on an update or delete is only available on tables",
                                    details=f"{rel.name!r} is a view")
    pick = (f"select _t.ctid from {rel.qualified} _t{where}{order_sql(req, rel.columns, rel.name)}"
            f" limit ($1[{limit_idx}])::bigint offset ($1[{offset_idx}])::bigint")
    return f" where _t.ctid = any(array({pick}))"


def delete_sql(rel: Relation, req: Request, representation: bool, single: bool, count: bool,
               limit_idx: int | None = None, offset_idx: int | None = None) -> str:
    stmt = f"delete from {rel.qualified} as _t{_write_where(rel, req, limit_idx, offset_idx)}"
    return _write_tail(req, rel, representation, single, count, stmt)


def rpc_sql(fn: Function, req: Request, arg_names: tuple[str, ...], from_json: bool, arg_idx: tuple[int, ...],
            single: bool, count: bool, limit_idx: int, offset_idx: int) -> str:
    """Call ``fn`` with named arguments: from a JSON object (POST, via json_to_record so
    nested arrays and objects convert as PostgREST converts them) or from query-string
    text values (GET), each cast to the argument's declared type."""
    args = {a.name: a for a in fn.args}
    used = [args[n] for n in arg_names]
    source = ""
    if from_json and used:
        defs = ", ".join(f"{a.quoted} {a.type}" for a in used)
        source = f"json_to_record(($1[{arg_idx[0]}])::json) as _a({defs}), "
        call_args = ", ".join(f"{a.quoted} => _a.{a.quoted}" for a in used)
    else:
        call_args = ", ".join(f"{a.quoted} => ($1[{i}])::{a.type}" for a, i in zip(used, arg_idx, strict=True))
    call = f"{fn.qualified}({call_args})"
    frm = f" from {source[:-2]}" if source else ""
    if fn.kind in ("void", "scalar", "setof_scalar"):
        if req.filters or req.order or req.select != (("*",),):
            raise NotImplementedFeature("Only functions returning rows can be filtered, ordered or "
                                        "have columns selected", details=f"function {fn.name!r}")
    if fn.kind == "void":
        return f"select null::text, null::bigint, null::bigint from (select {call}{frm}) _v"
    if fn.kind == "scalar":
        return (f"select coalesce(to_json(_v._r)::text, 'null'), 1::bigint, null::bigint "
                f"from (select {call} as _r{frm}) _v")
    # Set-returning calls run once in a materialized CTE, so count=exact never calls a
    # volatile function twice.
    lim = f" limit ($1[{limit_idx}])::bigint offset ($1[{offset_idx}])::bigint"
    if fn.kind == "setof_scalar":
        cte = f"with _f as materialized (select _t._r from {source}{call} as _t(_r)) "
        total = "(select count(*) from _f)" if count else "null::bigint"
        body = "(json_agg(_s._r)->0)::text" if single else "coalesce(json_agg(_s._r), '[]')::text"
        return f"{cte}select {body}, count(*), {total} from (select _f._r from _f{lim}) _s"
    # row / setof_row: a relation the request may select from, filter and order
    cols = fn.columns
    where = where_sql(req, cols, fn.name)
    cte = f"with _f as materialized (select _t.* from {source}{call} _t) "
    inner = f"select {select_sql(req, cols, fn.name)} from _f _t{where}{order_sql(req, cols, fn.name)}"
    if fn.kind == "row" and not single:
        # a function returning one composite answers with the object itself
        return f"{cte}select coalesce((json_agg(_s)->0)::text, 'null'), count(*), null::bigint from ({inner}) _s"
    total = f"(select count(*) from _f _t{where})" if count else "null::bigint"
    return f"{cte}select {_body(single)}, count(*), {total} from ({inner}{lim}) _s"
