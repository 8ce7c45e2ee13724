"""PostgREST query-string grammar -> an abstract request, and that request -> SQL.

Parsing splits a request into a *shape* (hashable: relation, columns, operators, the
positions of values) and its *values* (a list of strings). Only the shape decides the
SQL text, so the service caches generated SQL by shape. Values travel only as elements
of the single ``text[]`` parameter and are cast in SQL to the column's type taken from
the schema cache, e.g. ``_t."id" = ($1[3])::"pg_catalog"."uuid"``. Every identifier in the
SQL comes from the schema cache, already quoted; nothing from the request is spliced in.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .errors import (
    AggregatesNotAllowed,
    AmbiguousRelationship,
    NoRelationship,
    NotEmbedded,
    NotImplementedFeature,
    ParseError,
    RelatedOrderNotToOne,
    UnknownBodyColumn,
    UnknownColumn,
)
from .schema import Column, Function, Relation, Relationship, SchemaCache, quote_ident

# operator -> SQL comparison; values are cast to the column's type
CMP_OPS = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "isdistinct": "is distinct from",
    # containment and overlap of arrays, jsonb and ranges (value in the column's syntax)
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    # range positions: strictly left/right of, does not extend right/left of, adjacent
    "sl": "<<",
    "sr": ">>",
    "nxr": "&<",
    "nxl": "&>",
    "adj": "-|-",
}
# operators that take PostgREST's (any)/(all) modifier, with an array literal value:
# eq(any).{1,2} is "= any('{1,2}')", like(all).{a*,*b} is "like all('{a%,%b}')"
QUANTIFIABLE = frozenset({"eq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"})
# full-text search: column @@ <function>(value)
FTS_OPS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
# pattern operators compare the column's text form
TEXT_OPS = {"like": "like", "ilike": "ilike", "match": "~", "imatch": "~*"}
IS_VALUES = {
    "null": "is null",
    "not_null": "is not null",
    "true": "is true",
    "false": "is false",
    "unknown": "is unknown",
}
MAX_IN_VALUES = 1000  # values in one in.(...) list
MAX_FILTER_DEPTH = 16  # nesting of or/and groups
MAX_EMBED_DEPTH = 16  # nesting of embedded resources in select
AGGREGATES = ("count", "sum", "avg", "max", "min")


@dataclass
class Nested:
    """Filters, order and range of one embedded resource (``sites.name=eq.x``,
    ``sites.order=name``, ``sites.limit=2``), by its path of names or aliases."""

    filters: list = field(default_factory=list)
    order: tuple = ()
    limit: int | None = None
    offset: int = 0
    limit_idx: int | None = None
    offset_idx: int | None = None


@dataclass
class Request:
    """What the query string asks for; ``shape`` keys the SQL cache.

    ``select`` items: ``("*",)``, ``("c", column, alias)`` and, for an embedded resource,
    ``("e", name, alias, hint, join, spread, children)`` (``join`` "inner" or None)."""

    select: tuple = (("*",),)
    filters: tuple = ()
    order: tuple = ()
    limit: int | None = None
    offset: int = 0
    columns: tuple[str, ...] | None = None
    on_conflict: tuple[str, ...] | None = None
    params: list[str | None] = field(default_factory=list)
    nested: dict[tuple[str, ...], Nested] = field(default_factory=dict)
    embed_max_idx: int | None = None  # max_rows for embedded resources without a limit
    embeds: bool = False  # the select embeds a resource (set by parse_query)

    def add(self, value: str | None) -> int:
        if value is not None and "\x00" in value:
            raise ParseError("Values may not contain NUL characters")
        self.params.append(value)
        return len(self.params)  # SQL arrays are 1-based

    def bind_embeds(self, max_rows: int) -> None:
        """Parameter positions of the embedded resources' limits and offsets (max_rows
        caps each embedded list, as PostgREST caps every level of a read)."""
        if not self.embeds and not self.nested:
            return
        self.embed_max_idx = self.add(str(max_rows))
        for path in sorted(self.nested):
            n = self.nested[path]
            if n.limit is not None or n.offset:
                n.limit_idx = self.add(str(max_rows if n.limit is None else min(n.limit, max_rows)))
                n.offset_idx = self.add(str(n.offset))

    def nested_key(self) -> tuple:
        if not self.nested:
            return ()
        return tuple(
            (p, tuple(n.filters), n.order, n.limit_idx, n.offset_idx) for p, n in sorted(self.nested.items())
        )

    def sub(self, path: tuple[str, ...]) -> Nested:
        n = self.nested.get(path)
        if n is None:
            n = self.nested[path] = Nested()
        return n


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
        rest = item[i + 1 :]
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
        raise ParseError(
            f'"{expr}" is not of the form operator.value', hint="Filters look like column=eq.value"
        )
    base, paren, modifier = op.partition("(")
    if paren:
        if not modifier.endswith(")"):
            raise ParseError(f'"{op}" is not a valid operator')
        modifier = modifier[:-1]
        if base in FTS_OPS:
            # fts(english).cat: the text search configuration travels as a value too
            if not modifier:
                raise ParseError(f'"{op}" names no text search configuration')
            if in_logic:
                value = _unquote(value)
            return ("f", column, base, negate, (req.add(modifier), req.add(value)))
        if base not in QUANTIFIABLE or modifier not in ("any", "all"):
            raise ParseError(
                f'"{op}" is not a valid operator',
                hint="(any) and (all) modify eq, gt, gte, lt, lte, like, ilike, match and imatch",
            )
        if in_logic:
            value = _unquote(value)
        if not (value.startswith("{") and value.endswith("}")):
            raise ParseError(
                f'"{value}" is not an array of the form {{a,b}}',
                hint=f"{op} takes an array literal, e.g. {base}({modifier}).{{a,b}}",
            )
        if base in ("like", "ilike"):
            value = value.replace("*", "%")
        return ("f", column, f"{base}:{modifier}", negate, req.add(value))
    if base in CMP_OPS or base in TEXT_OPS or base in FTS_OPS:
        if in_logic:
            value = _unquote(value)
        if base in ("like", "ilike"):
            value = value.replace("*", "%")  # PostgREST's URL-safe wildcard
        return ("f", column, base, negate, req.add(value))
    if op == "is":
        kw = value.lower()
        if kw not in IS_VALUES:
            raise ParseError(
                f'"{value}" is not a valid value for the is operator',
                hint="Use is.null, is.not_null, is.true, is.false or is.unknown",
            )
        return ("f", column, "is", negate, kw)
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise ParseError(f'"{value}" is not a list of the form (a,b,c)')
        inner = value[1:-1]
        items = [] if inner == "" else split_top(inner)
        if len(items) > MAX_IN_VALUES:
            raise ParseError(f"An in.() list may hold at most {MAX_IN_VALUES} values")
        return ("f", column, "in", negate, tuple(req.add(_unquote(v)) for v in items))
    raise ParseError(
        f'Unknown operator "{op}"',
        hint="Supported: " + ", ".join([*CMP_OPS, *TEXT_OPS, *FTS_OPS, "is", "in"]),
    )


def _parse_logic(req: Request, kind: str, negate: bool, text: str, depth: int) -> tuple:
    if depth > MAX_FILTER_DEPTH:
        raise ParseError("Logic filters are nested too deeply")
    if not (text.startswith("(") and text.endswith(")")):
        raise ParseError(
            f'"{text}" is not a parenthesised list of conditions', hint="Write or=(a.eq.1,b.eq.2)"
        )
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
                children.append(_parse_logic(req, word, neg, body[len(word) :], depth + 1))
                break
        else:
            column, rest = _split_name(item)
            children.append(_parse_op(req, column, rest, in_logic=True))
    return (kind, negate, tuple(children))


STAR_SELECT = (("*",),)


def _parse_select(text: str, depth: int = 0) -> tuple:
    """``select=`` -> items; an embedded resource is ``[alias:]name[!hint][!inner|!left](...)``
    or the spread ``...name[!hint][!inner](...)``, nesting to any depth."""
    if text == "*":
        return STAR_SELECT  # the common case, as the general path below parses it
    if text.strip() == "":
        return (("*",),) if depth == 0 else ()
    if depth > MAX_EMBED_DEPTH:
        raise ParseError("Embedded resources are nested too deeply")
    items = []
    for raw in split_top(text):
        item = raw.strip()
        if not item:
            raise ParseError(f'Empty item in select "{text}"')
        if item.endswith(")") and "(" in item:
            items.append(_parse_embed(item, depth))
            continue
        if "->" in item or "::" in item:
            raise NotImplementedFeature(
                "JSON paths and casts in select are not supported", details=f"select item {item!r}"
            )
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
        if "(" in name or ")" in name or name.startswith("..."):
            raise ParseError(f'"{raw}" is not a valid select item')
        items.append(("c", name, alias))
    return tuple(items)


def _parse_embed(item: str, depth: int) -> tuple:
    open_at = _first_open_paren(item)
    head, inner = item[:open_at].strip(), item[open_at + 1 : -1]
    spread = head.startswith("...")
    if spread:
        head = head[3:]
    alias = None
    if not head.startswith('"') and ":" in head.split("!", 1)[0]:
        alias, _, head = head.partition(":")
        if spread or not alias or head.startswith("..."):
            raise ParseError(
                f'"{item}" is not a valid embedded resource',
                hint="Write alias:table(columns) or ...table(columns)",
            )
    name_part, *params = _split_bang(head)
    name = _unquote(name_part)
    if not name:
        raise ParseError(f'"{item}" names no resource to embed')
    if (name in AGGREGATES and inner == "" and not params) or (
        "." in name and name.rsplit(".", 1)[1] in AGGREGATES and not name_part.startswith('"')
    ):
        raise AggregatesNotAllowed("Use of aggregate functions is not allowed")
    hint = join = None
    if len(params) > 2:
        raise ParseError(f'"{item}" has more than a hint and a join type')
    for p in params:
        if p in ("inner", "left"):
            if join is not None:
                raise ParseError(f'"{item}" has two join types')
            join = p
        elif hint is None and p:
            hint = _unquote(p)
        else:
            raise ParseError(f'"{item}" is not a valid embedded resource')
    return (
        "e",
        name,
        alias,
        hint,
        "inner" if join == "inner" else None,
        spread,
        _parse_select(inner, depth + 1),
    )


def _first_open_paren(item: str) -> int:
    quoted = False
    i = 0
    while i < len(item):
        ch = item[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            return i
        i += 1
    raise ParseError(f'"{item}" is not a valid select item')


def _split_bang(head: str) -> list[str]:
    """``name!hint!inner`` -> parts, ``!`` inside double quotes kept."""
    parts, start, quoted, i = [], 0, False, 0
    while i < len(head):
        ch = head[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "!":
            parts.append(head[start:i])
            start = i + 1
        i += 1
    parts.append(head[start:])
    return parts


def _split_path(key: str) -> list[str]:
    """``a.b."c.d"`` -> ["a", "b", "c.d"]: a parameter's embedding path and last word."""
    if '"' not in key:
        return key.split(".")
    parts, start, quoted, i = [], 0, False, 0
    while i < len(key):
        ch = key[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ".":
            parts.append(_unquote(key[start:i]))
            start = i + 1
        i += 1
    if quoted:
        raise ParseError(f'Unterminated quoted name in "{key}"')
    parts.append(_unquote(key[start:]))
    return parts


def _parse_order(text: str) -> tuple:
    """Items ``(column, direction, nulls, embed)``; ``embed`` names the to-one embedded
    resource of ``order=sites(name).desc``, else None."""
    out = []
    for raw in split_top(text):
        if not raw:
            raise ParseError("Empty item in order")
        embed = None
        if not raw.startswith('"') and "(" in raw:
            at = raw.index("(")
            close = raw.find(")", at)
            if close < 0:
                raise ParseError(f'"{raw}" is not a valid order item')
            embed = _unquote(raw[:at])
            name = _unquote(raw[at + 1 : close])
            rest = raw[close + 1 :]
            if rest and not rest.startswith("."):
                raise ParseError(f'"{raw}" is not a valid order item')
            rest = rest[1:]
            if not embed or not name:
                raise ParseError(f'"{raw}" is not a valid order item')
        else:
            name, rest = _split_name(raw)
        direction = nulls = ""
        for mod in rest.split(".") if rest else []:
            if mod in ("asc", "desc") and not direction and not nulls:
                direction = mod
            elif mod in ("nullsfirst", "nullslast") and not nulls:
                nulls = mod
            else:
                raise ParseError(
                    f'"{raw}" is not a valid order item',
                    hint="Write order=col.asc|desc[.nullsfirst|.nullslast]",
                )
        out.append((name, direction, nulls, embed))
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
    ``rpc_args`` are skipped (GET rpc passes arguments in the query string). A key with a
    path (``sites.name``, ``sites.order``, ``sites.limit``, ``sites.or``) applies to the
    embedded resource of that name or alias."""
    req = Request()
    filters: list[tuple] = []
    for key, value in pairs:
        if key in rpc_args:
            continue
        if key == "select":
            req.select = _parse_select(value)
            req.embeds = req.select is not STAR_SELECT and any(item[0] == "e" for item in req.select)
        elif key == "columns":
            req.columns = _parse_column_list("columns", value)
        elif key == "on_conflict":
            req.on_conflict = _parse_column_list("on_conflict", value)
        elif "." not in key and key not in ("or", "and", "order", "limit", "offset"):
            # the common case first: a filter on a column of the resource itself
            column = _unquote(key) if key.startswith('"') else key
            if not column:
                raise ParseError("Empty column name in a filter")
            filters.append(_parse_op(req, column, value, in_logic=False))
        else:
            words = _split_path(key) if "." in key else [_unquote(key)]
            last = words[-1]
            path = tuple(words[:-1])
            if last in ("or", "and") and not key.endswith('"'):
                neg = bool(path) and path[-1] == "not"
                if neg:
                    path = path[:-1]
                node = _parse_logic(req, last, neg, value, 0)
                (req.sub(path).filters if path else filters).append(node)
            elif last == "order" and not key.endswith('"'):
                order = _parse_order(value)
                if path:
                    req.sub(path).order = order
                else:
                    req.order = order
            elif last in ("limit", "offset") and not key.endswith('"'):
                n = _parse_int(last, value)
                target = req.sub(path) if path else req
                setattr(target, last, n)
            else:
                if not last:
                    raise ParseError("Empty column name in a filter")
                if any(not w for w in path):
                    raise ParseError(f'"{key}" is not a valid filter key')
                node = _parse_op(req, last, value, in_logic=False)
                (req.sub(path).filters if path else filters).append(node)
    req.filters = tuple(filters)
    return req


# --- SQL generation ---------------------------------------------------------------------


def _column(cols: dict[str, Column], name: str, relname: str) -> Column:
    col = cols.get(name)
    if col is None:
        if "->" in name:
            raise NotImplementedFeature(
                "JSON path filters are not supported by this REST layer", details=f"column {name!r}"
            )
        raise UnknownColumn(f"column {relname}.{name} does not exist")
    return col


def _filter_sql(
    node: tuple,
    cols: dict[str, Column],
    relname: str,
    alias: str = "_t",
    embeds: dict[str, str] | None = None,
) -> str:
    """One filter node as SQL on ``alias``. ``embeds`` maps the names of embedded resources
    to an expression that is NULL when the resource is absent: ``sites=is.null`` and
    ``sites=not.is.null`` test that (PostgREST's null filtering on embedded resources)."""
    kind = node[0]
    if kind == "f":
        _, name, op, negate, payload = node
        if embeds and op == "is" and payload == "null" and name in embeds:
            sql = f"{embeds[name]} is null"
            return f"not ({sql})" if negate else sql
        col = _column(cols, name, relname)
        ref = f"{alias}.{col.quoted}"
        if op in CMP_OPS:
            sql = f"{ref} {CMP_OPS[op]} ($1[{payload}])::{col.type}"
        elif op in TEXT_OPS:
            sql = f"{ref}::text {TEXT_OPS[op]} $1[{payload}]"
        elif op in FTS_OPS:
            if isinstance(payload, tuple):  # with a text search configuration
                sql = f"{ref} @@ {FTS_OPS[op]}(($1[{payload[0]}])::regconfig, $1[{payload[1]}])"
            else:
                sql = f"{ref} @@ {FTS_OPS[op]}($1[{payload}])"
        elif op == "is":
            sql = f"{ref} {IS_VALUES[payload]}"
        elif op == "in":
            if not payload:
                sql = "false"
            else:
                sql = f"{ref} in (" + ", ".join(f"($1[{i}])::{col.type}" for i in payload) + ")"
        else:  # quantified: base:any / base:all, the value an array literal
            base, quant = op.split(":")
            if base in TEXT_OPS:
                sql = f"{ref}::text {TEXT_OPS[base]} {quant}(($1[{payload}])::text[])"
            else:
                sql = f"{ref} {CMP_OPS[base]} {quant}(($1[{payload}])::{col.type}[])"
        return f"not ({sql})" if negate else sql
    _, negate, children = node
    joiner = " or " if kind == "or" else " and "
    sql = "(" + joiner.join(_filter_sql(c, cols, relname, alias, embeds) for c in children) + ")"
    return f"not {sql}" if negate else sql


def where_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    if not req.filters:
        return ""
    return " where " + " and ".join(_filter_sql(f, cols, relname) for f in req.filters)


def _order_sql(
    order: tuple,
    cols: dict[str, Column],
    relname: str,
    alias: str = "_t",
    embeds: dict[str, _Embed] | None = None,
) -> str:
    if not order:
        return ""
    items = []
    for name, direction, nulls, embed in order:
        if embed is None:
            s = f"{alias}.{_column(cols, name, relname).quoted}"
        else:
            e = (embeds or {}).get(embed)
            if e is None:
                raise NotEmbedded(
                    f"'{embed}' is not an embedded resource in this request",
                    hint=f"Verify that '{embed}' is included in the 'select' query parameter.",
                )
            if not e.rel.to_one:
                raise RelatedOrderNotToOne(
                    f"A related order on '{embed}' is not possible",
                    details=f"'{relname}' and '{embed}' do not form a many-to-one or one-to-one relationship",
                )
            s = f"{e.alias}.{_column(e.target.columns, name, e.target.name).quoted}"
        if direction:
            s += " " + direction
        if nulls:
            s += " nulls first" if nulls == "nullsfirst" else " nulls last"
        items.append(s)
    return " order by " + ", ".join(items)


def order_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    return _order_sql(req.order, cols, relname)


def select_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    return ", ".join(_select_items(req.select, cols, relname, "_t"))


def _select_items(select: tuple, cols: dict[str, Column], relname: str, alias: str) -> list[str]:
    items = []
    for item in select:
        if item[0] == "*":
            items.append(f"{alias}.*")
        elif item[0] == "c":
            _, name, label = item
            col = _column(cols, name, relname)
            items.append(f"{alias}.{col.quoted} as {quote_ident(label or name)}")
    return items


def returning_sql(req: Request, cols: dict[str, Column], relname: str) -> str:
    return select_sql(req, cols, relname)


CSV = "csv"  # passed as ``single``: answer text/csv instead of JSON


def _body(single: bool | str) -> str:
    if single == CSV:
        # PostgREST's CSV: a header of the first row's keys, then each row in Postgres's
        # record text form without its parentheses (NULL empty, quoted where needed), CRLF
        return (
            "coalesce(array_to_string(array(select json_object_keys(json_agg(_s)->0)), ','), '')"
            " || chr(13) || chr(10) || coalesce(string_agg(substr(_s::text, 2, length(_s::text) - 2),"
            " chr(13) || chr(10)), '')"
        )
    return "(json_agg(_s)->0)::text" if single else "coalesce(json_agg(_s), '[]')::text"


# --- resource embedding -----------------------------------------------------------------


@dataclass
class _Embed:
    """An embedded resource while its query is generated."""

    out: str  # its key in the parent's object: alias or name
    rel: Relationship
    target: Relation
    alias: str  # the lateral subquery's alias in the parent's FROM
    agg: str  # to-many: the json_agg column of that subquery
    spread: bool
    inner: bool
    empty: bool  # name() with no columns: joins and filters, adds nothing
    names: list[str]  # the columns its query returns (what a spread lifts)


def find_relationship(
    cache: SchemaCache, origin: tuple[str, str], target: str, hint: str | None
) -> Relationship:
    """The relationship ``origin`` -> ``target`` as PostgREST's findRel picks it: by the
    target table's name (narrowed by a hint naming the foreign key, one of its columns
    on either side, or the junction table of a many-to-many), or by a foreign key's name
    or column standing for the target. None: PGRST200; several: PGRST201 (300)."""
    schema = origin[0]
    candidates = [r for r in cache.relationships.get(origin, ()) if r.ftable[0] == schema]

    def fk_col(r: Relationship, name: str) -> bool:
        return r.junction is None and len(r.columns) == 1 and r.columns[0][0] == name

    def fk_ref_col(r: Relationship, name: str) -> bool:
        return r.junction is None and len(r.columns) == 1 and r.columns[0][1] == name

    def constraint(r: Relationship, name: str) -> bool:
        return r.junction is None and r.constraint == name

    found = []
    for r in candidates:
        if r.is_self:
            if hint is None:
                ok = (target == r.ftable[1] and r.cardinality == "o2m") or (
                    fk_col(r, target) and r.cardinality == "m2o"
                )
            else:
                ok = target == r.ftable[1] and r.cardinality == "o2m" and fk_ref_col(r, hint)
        elif hint is None:
            ok = target == r.ftable[1] or constraint(r, target) or fk_col(r, target)
        else:
            ok = target == r.ftable[1] and (
                constraint(r, hint)
                or fk_col(r, hint)
                or fk_ref_col(r, hint)
                or (r.junction is not None and r.junction[1] == hint)
            )
        if ok:
            found.append(r)
    if len(found) == 1:
        return found[0]
    if found:
        raise AmbiguousRelationship(
            f"Could not embed because more than one relationship was found for '{origin[1]}' and '{target}'",
            details=[r.describe() for r in found],
            hint=f"Try changing '{target}' to one of the following: "
            + ", ".join(f"'{r.hint_name()}'" for r in found)
            + ". Find the desired relationship in the 'details' key.",
        )
    using = f"' using the hint '{hint}" if hint else ""
    raise NoRelationship(
        f"Could not find a relationship between '{origin[1]}' and '{target}' in the schema cache",
        details=f"Searched for a foreign key relationship between '{origin[1]}' and '{target}{using}' "
        f"in the schema '{schema}', but no matches were found.",
        hint=_perhaps(cache, origin, target),
    )


def _perhaps(cache: SchemaCache, origin: tuple[str, str], target: str) -> str | None:
    if origin in cache.relationships:
        names = sorted(
            {r.ftable[1] for r in cache.relationships[origin] if r.ftable[0] == origin[0]} - {target}
        )
        wrong = target
    else:
        names = sorted({n for s, n in cache.relationships if s == origin[0]})
        wrong = origin[1]
    close = difflib.get_close_matches(wrong, names, n=1, cutoff=0.6)
    return f"Perhaps you meant '{close[0]}' instead of '{wrong}'." if close else None


class _Embedder:
    """Generates one level of a read (and, recursively, its embedded resources) as
    PostgREST does: each embedded resource is a LATERAL subquery joined to its parent's
    rows on the foreign key, to-one ones as ``row_to_json(...)``, to-many ones aggregated
    with ``json_agg`` (``[]`` when empty). The subqueries read the tables as the caller,
    so RLS applies to every embedded table."""

    def __init__(self, cache: SchemaCache | None, req: Request):
        self.cache = cache
        self.req = req
        self.n = 0
        self.used: set[tuple[str, ...]] = set()
        self.root_filtered = False  # !inner or a null filter at the root: counts need the joins

    def level(
        self,
        origin: tuple[str, str] | None,
        relname: str,
        cols: dict[str, Column],
        source: str,
        alias: str,
        select: tuple,
        filters: tuple,
        order: tuple,
        tail: str,
        path: tuple[str, ...] = (),
        conds: tuple[str, ...] = (),
    ) -> tuple[str, list[str]]:
        """``select ... from source [lateral joins] where ... order by ... tail`` and the
        names of the columns it returns."""
        plain = _select_items(select, cols, relname, alias)
        names: list[str] = []
        for item in select:
            if item[0] == "*":
                names.extend(cols)
            elif item[0] == "c":
                names.append(item[2] or item[1])
        embeds: dict[str, _Embed] = {}
        joins: list[str] = []
        outs: list[str] = []
        for item in select:
            if item[0] != "e":
                continue
            e, join = self.child(item, origin, relname, alias, path)
            embeds[e.out] = e
            joins.append(join)
            if e.spread:
                outs.extend(f"{e.alias}.{quote_ident(n)} as {quote_ident(n)}" for n in e.names)
                names.extend(e.names)
            elif not e.empty:
                if e.rel.to_one:
                    outs.append(f"row_to_json({e.alias}.*)::jsonb as {quote_ident(e.out)}")
                else:
                    outs.append(f"coalesce({e.alias}.{e.agg}, '[]') as {quote_ident(e.out)}")
                names.append(e.out)
        if not plain and not outs and not embeds:
            plain = [f"{alias}.*"]  # name() embeds the whole row; the parent decides what shows
            names = list(cols)
        absent = {
            out: (f"row_to_json({e.alias}.*)" if e.rel.to_one else f"{e.alias}.{e.agg}")
            for out, e in embeds.items()
        }
        where = [_filter_sql(f, cols, relname, alias, absent) for f in filters] + list(conds)
        if not path and (
            any(e.inner for e in embeds.values()) or any(_uses_embed(f, absent) for f in filters)
        ):
            self.root_filtered = True
        sql = (
            f"select {', '.join(plain + outs)} from {source}{''.join(joins)}"
            + (" where " + " and ".join(where) if where else "")
            + _order_sql(order, cols, relname, alias, embeds)
            + tail
        )
        return sql, names

    def child(
        self, item: tuple, origin: tuple[str, str] | None, relname: str, parent: str, path: tuple[str, ...]
    ) -> tuple[_Embed, str]:
        _, name, label, hint, join, spread, select = item
        if self.cache is None or origin is None:
            raise NoRelationship(
                f"Could not find a relationship between '{relname}' and '{name}' in the schema cache",
                details=f"'{relname}' is not a table or view with foreign keys",
            )
        rel = find_relationship(self.cache, origin, name, hint)
        target = self.cache.relations[rel.ftable]
        self.n += 1
        k = self.n
        t, e = f"_rp_t{k}", f"_rp_e{k}"
        out = label or name
        sub_path = (*path, out)
        self.used.add(sub_path)
        nested = self.req.nested.get(sub_path) or Nested()
        source = f"{target.qualified} {t}"
        if rel.junction is not None:
            junction = self.cache.relations[rel.junction]
            j = f"_rp_j{k}"
            source += f", {junction.qualified} {j}"
            conds = tuple(
                [f"{j}.{quote_ident(jc)} = {t}.{quote_ident(fc)}" for jc, fc in rel.junction_target]
                + [f"{j}.{quote_ident(jc)} = {parent}.{quote_ident(c)}" for jc, c in rel.junction_source]
            )
        else:
            conds = tuple(f"{t}.{quote_ident(fc)} = {parent}.{quote_ident(c)}" for c, fc in rel.columns)
        if nested.limit_idx is not None:
            tail = f" limit ($1[{nested.limit_idx}])::bigint offset ($1[{nested.offset_idx}])::bigint"
        else:
            tail = f" limit ($1[{self.req.embed_max_idx}])::bigint"
        empty = not select
        sql, names = self.level(
            rel.ftable,
            target.name,
            target.columns,
            source,
            t,
            select,
            tuple(nested.filters),
            nested.order,
            tail,
            sub_path,
            conds,
        )
        if empty:
            names = []
        inner = join == "inner"
        emb = _Embed(out, rel, target, e, f"_rp_a{k}", spread, inner, empty and not spread, names)
        kind = "inner" if inner else "left"
        if rel.to_one:
            return emb, f" {kind} join lateral ({sql}) {e} on true"
        rows = f"_rp_r{k}"
        aggs = [f"json_agg({rows})::jsonb as {emb.agg}"]
        if spread:  # to-many spread: one correlated array per column
            aggs += [
                f"coalesce(json_agg({rows}.{quote_ident(n)}), '[]')::jsonb as {quote_ident(n)}" for n in names
            ]
        on = f"{e}.{emb.agg} is not null" if inner else "true"
        return emb, f" {kind} join lateral (select {', '.join(aggs)} from ({sql}) {rows}) {e} on {on}"

    def check_paths(self) -> None:
        """Every ``path.col=...``, ``path.order`` and ``path.limit`` must name an embedded
        resource of the select (PGRST108)."""
        for path in self.req.nested:
            if path in self.used:
                continue
            depth = 0
            while depth < len(path) and path[: depth + 1] in self.used:
                depth += 1
            name = path[depth]
            raise NotEmbedded(
                f"'{name}' is not an embedded resource in this request",
                hint=f"Verify that '{name}' is included in the 'select' query parameter.",
            )


def _uses_embed(node: tuple, absent: dict[str, str]) -> bool:
    if node[0] == "f":
        return node[2] == "is" and node[4] == "null" and node[1] in absent
    return any(_uses_embed(c, absent) for c in node[2])


def read_sql(
    rel: Relation,
    req: Request,
    single: bool,
    count: bool,
    limit_idx: int,
    offset_idx: int,
    cache: SchemaCache | None = None,
) -> str:
    tail = f" limit ($1[{limit_idx}])::bigint offset ($1[{offset_idx}])::bigint"
    if not req.embeds and not req.nested:
        where = where_sql(req, rel.columns, rel.name)
        inner = (
            f"select {select_sql(req, rel.columns, rel.name)} from {rel.qualified} _t{where}"
            f"{order_sql(req, rel.columns, rel.name)}{tail}"
        )
        total = f"(select count(*) from {rel.qualified} _t{where})" if count else "null::bigint"
        return f"select {_body(single)}, count(*), {total} from ({inner}) _s"
    emb = _Embedder(cache, req)
    origin = (rel.schema, rel.name)
    inner, _ = emb.level(
        origin, rel.name, rel.columns, f"{rel.qualified} _t", "_t", req.select, req.filters, req.order, tail
    )
    emb.check_paths()
    total = "null::bigint"
    if count:
        if emb.root_filtered:
            # !inner and null filters on embedded resources decide which rows count
            counted, _ = _Embedder(cache, req).level(
                origin, rel.name, rel.columns, f"{rel.qualified} _t", "_t", req.select, req.filters, (), ""
            )
            total = f"(select count(*) from ({counted}) _c)"
        else:
            total = f"(select count(*) from {rel.qualified} _t{where_sql(req, rel.columns, rel.name)})"
    return f"select {_body(single)}, count(*), {total} from ({inner}) _s"


def _embedded_representation(req: Request, rel: Relation, cache: SchemaCache | None, source: str) -> str:
    """The representation of written rows (``source``, aliased _t) with their embedded
    resources; the statement's own filters already chose the rows."""
    emb = _Embedder(cache, req)
    sql, _ = emb.level((rel.schema, rel.name), rel.name, rel.columns, source, "_t", req.select, (), (), "")
    emb.check_paths()
    return sql


def _check_body_columns(rel: Relation, names: tuple[str, ...]) -> list[Column]:
    out = []
    for n in names:
        col = rel.columns.get(n)
        if col is None:
            raise UnknownBodyColumn(f"Could not find the '{n}' column of '{rel.name}' in the schema cache")
        out.append(col)
    return out


def _write_tail(
    req: Request,
    rel: Relation,
    representation: bool,
    single: bool,
    count: bool,
    statement: str,
    cache: SchemaCache | None = None,
) -> str:
    total = "count(*)" if count else "null::bigint"
    if req.embeds or req.nested:
        # the written rows with their embedded resources (PostgREST's embedding on writes)
        shown = _embedded_representation(req, rel, cache, "_w _t")
        if representation:
            return (
                f"with _w as ({statement} returning _t.*) "
                f"select {_body(single)}, count(*), {total} from ({shown}) _s"
            )
    if representation:
        ret = f" returning {returning_sql(req, rel.columns, rel.name)}"
        return f"with _s as ({statement}{ret}) select {_body(single)}, count(*), {total} from _s"
    if count or single:
        return f"with _s as ({statement} returning 1) select null::text, count(*), {total} from _s"
    return f"with _s as ({statement}) select null::text, null::bigint, null::bigint"


def insert_sql(
    rel: Relation,
    req: Request,
    columns: tuple[str, ...],
    body_idx: int,
    representation: bool,
    single: bool,
    count: bool,
    upsert: str | None,
    missing_default: bool = False,
    cache: SchemaCache | None = None,
) -> str:
    """``missing_default`` (Prefer: missing=default): a key that a row leaves out takes the
    column's DEFAULT, as PostgREST does; otherwise it is NULL."""
    cols = _check_body_columns(rel, columns)
    names = ", ".join(c.quoted for c in cols)
    if cols and missing_default:
        values = ", ".join(
            f"case when _e.j::jsonb ? {_sql_literal(c.name)} then _r.{c.quoted} else {c.default} end"
            for c in cols
        )
        stmt = (
            f"insert into {rel.qualified} as _t ({names}) select {values} "
            f"from json_array_elements(($1[{body_idx}])::json) with ordinality _e(j, n) "
            f"cross join lateral json_populate_record(null::{rel.qualified}, _e.j) _r order by _e.n"
        )
    elif cols:
        stmt = (
            f"insert into {rel.qualified} as _t ({names}) select {names} "
            f"from json_populate_recordset(null::{rel.qualified}, ($1[{body_idx}])::json)"
        )
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
    return _write_tail(req, rel, representation, single, count, stmt, cache)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def update_sql(
    rel: Relation,
    req: Request,
    columns: tuple[str, ...],
    body_idx: int,
    representation: bool,
    single: bool,
    count: bool,
    limit_idx: int | None = None,
    offset_idx: int | None = None,
    cache: SchemaCache | None = None,
) -> str:
    cols = _check_body_columns(rel, columns)
    where = _write_where(rel, req, limit_idx, offset_idx)
    if not cols:
        # an empty patch changes nothing; answer with the rows it would have touched
        stmt = f"select _t.* from {rel.qualified} _t{where}"
        if req.embeds or req.nested:
            shown = _embedded_representation(req, rel, cache, "_w _t")
            if representation:
                return f"with _w as ({stmt}) select {_body(single)}, count(*), null::bigint from ({shown}) _s"
        if representation:
            return (
                f"with _s as (select {returning_sql(req, rel.columns, rel.name)} from {rel.qualified} _t"
                f"{where}) select {_body(single)}, count(*), null::bigint from _s"
            )
        return f"with _s as ({stmt}) select null::text, count(*), null::bigint from _s"
    sets = ", ".join(f"{c.quoted} = _j.{c.quoted}" for c in cols)
    stmt = (
        f"update {rel.qualified} as _t set {sets} "
        f"from json_populate_record(null::{rel.qualified}, ($1[{body_idx}])::json) _j"
    )
    stmt += (" where " + where[len(" where ") :]) if where else ""
    return _write_tail(req, rel, representation, single, count, stmt, cache)


def _write_where(rel: Relation, req: Request, limit_idx: int | None, offset_idx: int | None) -> str:
    """The WHERE of an update or delete. With ``limit`` (and ``offset``, ``order``) the
    statement touches only those rows, as PostgREST's limited updates and deletes do: the
    rows are picked by ``ctid`` in a subquery with the same filters."""
    where = where_sql(req, rel.columns, rel.name)
    if limit_idx is None:
        return where
    if rel.kind not in ("r", "p"):
        raise NotImplementedFeature(
            "limit on an update or delete is only available on tables", details=f"{rel.name!r} is a view"
        )
    pick = (
        f"select _t.ctid from {rel.qualified} _t{where}{order_sql(req, rel.columns, rel.name)}"
        f" limit ($1[{limit_idx}])::bigint offset ($1[{offset_idx}])::bigint"
    )
    return f" where _t.ctid = any(array({pick}))"


def delete_sql(
    rel: Relation,
    req: Request,
    representation: bool,
    single: bool,
    count: bool,
    limit_idx: int | None = None,
    offset_idx: int | None = None,
    cache: SchemaCache | None = None,
) -> str:
    stmt = f"delete from {rel.qualified} as _t{_write_where(rel, req, limit_idx, offset_idx)}"
    return _write_tail(req, rel, representation, single, count, stmt, cache)


def rpc_sql(
    fn: Function,
    req: Request,
    arg_names: tuple[str, ...],
    from_json: bool,
    arg_idx: tuple[int, ...],
    single: bool,
    count: bool,
    limit_idx: int,
    offset_idx: int,
    cache: SchemaCache | None = None,
) -> str:
    """Call ``fn`` with named arguments: from a JSON object (POST, via json_to_record so
    nested arrays and objects convert as PostgREST converts them) or from query-string
    text values (GET), each cast to the argument's declared type. The statement's shape
    follows what the function returns (``_RPC_BY_KIND``). Set-returning calls and calls
    returning rows run once in a materialized CTE, so count=exact never calls a volatile
    function twice."""
    source, call = _rpc_call(fn, arg_names, from_json, arg_idx)
    lim = f" limit ($1[{limit_idx}])::bigint offset ($1[{offset_idx}])::bigint"
    c = _RpcCall(fn, req, source, call, single, count, lim, cache)
    return _RPC_BY_KIND.get(fn.kind, _rpc_rows_sql)(c)


@dataclass(frozen=True)
class _RpcCall:
    """What every shape of an rpc statement is made from."""

    fn: Function
    req: Request
    source: str  # "json_to_record(...) as _a(...), " for a JSON body with arguments, else ""
    call: str  # the call itself: "schema"."fn"("a" => ...)
    single: bool | str  # True: one object; CSV: text/csv
    count: bool  # count=exact: the total too
    lim: str  # the limit and offset clause
    cache: SchemaCache | None

    @property
    def frm(self) -> str:
        """The argument record as a FROM clause, for calls in a select list."""
        return f" from {self.source[:-2]}" if self.source else ""


def _rpc_call(
    fn: Function, arg_names: tuple[str, ...], from_json: bool, arg_idx: tuple[int, ...]
) -> tuple[str, str]:
    """(source, call): the JSON argument record the call reads from ("" for none) and the
    call with its named arguments."""
    args = {a.name: a for a in fn.args}
    used = [args[n] for n in arg_names]
    source = ""
    if from_json and used:
        defs = ", ".join(f"{a.quoted} {a.type}" for a in used)
        source = f"json_to_record(($1[{arg_idx[0]}])::json) as _a({defs}), "
        call_args = ", ".join(f"{a.quoted} => _a.{a.quoted}" for a in used)
    else:
        call_args = ", ".join(
            f"{a.quoted} => ($1[{i}])::{a.type}" for a, i in zip(used, arg_idx, strict=True)
        )
    return source, f"{fn.qualified}({call_args})"


def _refuse_shaping(c: _RpcCall) -> None:
    """A function that does not return rows cannot be filtered, ordered or selected from."""
    req = c.req
    if req.filters or req.order or req.select != (("*",),) or req.nested:
        raise NotImplementedFeature(
            "Only functions returning rows can be filtered, ordered or have columns selected",
            details=f"function {c.fn.name!r}",
        )


def _rpc_void_sql(c: _RpcCall) -> str:
    _refuse_shaping(c)
    return f"select null::text, null::bigint, null::bigint from (select {c.call}{c.frm}) _v"


def _rpc_scalar_sql(c: _RpcCall) -> str:
    _refuse_shaping(c)
    return (
        f"select coalesce(to_json(_v._r)::text, 'null'), 1::bigint, null::bigint "
        f"from (select {c.call} as _r{c.frm}) _v"
    )


def _rpc_setof_scalar_sql(c: _RpcCall) -> str:
    _refuse_shaping(c)
    cte = f"with _f as materialized (select _t._r from {c.source}{c.call} as _t(_r)) "
    total = "(select count(*) from _f)" if c.count else "null::bigint"
    body = "(json_agg(_s._r)->0)::text" if c.single else "coalesce(json_agg(_s._r), '[]')::text"
    return f"{cte}select {body}, count(*), {total} from (select _f._r from _f{c.lim}) _s"


def _rpc_rows_sql(c: _RpcCall) -> str:
    """row / setof_row: a relation the request may select from, filter and order."""
    fn, req = c.fn, c.req
    cols = fn.columns
    where = where_sql(req, cols, fn.name)
    cte = f"with _f as materialized (select _t.* from {c.source}{c.call} _t) "
    if req.embeds or req.nested:
        return _rpc_embed_sql(c, cte, where)
    inner = f"select {select_sql(req, cols, fn.name)} from _f _t{where}{order_sql(req, cols, fn.name)}"
    if fn.kind == "row" and not c.single:
        # a function returning one composite answers with the object itself
        return (
            f"{cte}select coalesce((json_agg(_s)->0)::text, 'null'), count(*), null::bigint from ({inner}) _s"
        )
    total = f"(select count(*) from _f _t{where})" if c.count else "null::bigint"
    return f"{cte}select {_body(c.single)}, count(*), {total} from ({inner}{c.lim}) _s"


def _rpc_embed_sql(c: _RpcCall, cte: str, where: str) -> str:
    """Rows of a function returning a table's rows, embedding along that table's
    relationships."""
    fn, req, cache = c.fn, c.req, c.cache
    cols = fn.columns
    emb = _Embedder(cache, req)
    tail = c.lim if fn.kind == "setof_row" or c.single else ""
    inner, _ = emb.level(fn.returns, fn.name, cols, "_f _t", "_t", req.select, req.filters, req.order, tail)
    emb.check_paths()
    if fn.kind == "row" and not c.single:
        return (
            f"{cte}select coalesce((json_agg(_s)->0)::text, 'null'), count(*), null::bigint from ({inner}) _s"
        )
    total = "null::bigint"
    if c.count and emb.root_filtered:
        counted, _ = _Embedder(cache, req).level(
            fn.returns, fn.name, cols, "_f _t", "_t", req.select, req.filters, (), ""
        )
        total = f"(select count(*) from ({counted}) _c)"
    elif c.count:
        total = f"(select count(*) from _f _t{where})"
    return f"{cte}select {_body(c.single)}, count(*), {total} from ({inner}) _s"


_RPC_BY_KIND = {
    "void": _rpc_void_sql,
    "scalar": _rpc_scalar_sql,
    "setof_scalar": _rpc_setof_scalar_sql,
    "row": _rpc_rows_sql,
    "setof_row": _rpc_rows_sql,
}
