"""postgres_changes filters (``col=op.value``), evaluated against a change's record.

Supported as Supabase Realtime does: ``eq``, ``neq``, ``lt``, ``lte``, ``gt``, ``gte`` and
``in`` (``status=in.(queued,running)``). Values are compared after conversion to the
column's type (numbers numerically, timestamps as instants, uuids case-insensitively,
everything else as text); a NULL column never matches, as in SQL. Other operators, ``not.``
and several filters joined by commas (Supabase ANDs them) are refused with a FilterError,
never taken for a value that matches nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .errors import FilterError
from .values import INT_TYPES, NUMERIC_TYPES

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
MAX_FILTER_CHARS = 1024  # longest filter string accepted (characters)
MAX_IN_VALUES = 100  # most values in an in.(...) list (count; Supabase allows 100)


@dataclass(frozen=True, slots=True)
class Filter:
    column: str
    op: str
    values: tuple[str, ...]  # one value, or the list of ``in``

    def matches(self, record: dict[str, Any], types: dict[str, str]) -> bool:
        if self.column not in record:
            return False
        actual = record[self.column]
        if actual is None:
            return False
        typname = types.get(self.column, "text")
        try:
            left = _coerce(typname, actual)
            rights = [_coerce(typname, v) for v in self.values]
        except (ValueError, TypeError):
            return False
        op = self.op
        try:
            if op == "eq":
                return left == rights[0]
            if op == "neq":
                return left != rights[0]
            if op == "in":
                return left in rights
            if op == "lt":
                return left < rights[0]
            if op == "lte":
                return left <= rights[0]
            if op == "gt":
                return left > rights[0]
            if op == "gte":
                return left >= rights[0]
        except TypeError:  # e.g. comparing naive and aware timestamps
            return False
        return False


def parse_filter(text: str) -> Filter:
    """Parse ``col=op.value``; raise FilterError with a message the client can show."""
    if not isinstance(text, str) or not text:
        raise FilterError("filter must be a non-empty string of the form column=operator.value")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is longer than {MAX_FILTER_CHARS} characters")
    if _has_top_level_comma(text):
        raise FilterError(
            f"invalid filter {text!r}: several filters joined by commas are not supported by the "
            "rackpilot local stack; use one filter per binding"
        )
    column, sep, rest = text.partition("=")
    column = column.strip()
    if not sep or not column:
        raise FilterError(f"invalid filter {text!r}: expected column=operator.value")
    op, dot, value = rest.partition(".")
    if not dot or op not in OPERATORS:
        raise FilterError(f"invalid filter {text!r}: operator must be one of {', '.join(OPERATORS)}")
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise FilterError(f"invalid filter {text!r}: in expects a list such as in.(a,b)")
        values = tuple(_split_list(value[1:-1]))
        if not values:
            raise FilterError(f"invalid filter {text!r}: in needs at least one value")
        if len(values) > MAX_IN_VALUES:
            raise FilterError(f"invalid filter {text!r}: in accepts at most {MAX_IN_VALUES} values")
        return Filter(column, op, values)
    return Filter(column, op, (_unquote(value),))


def _has_top_level_comma(text: str) -> bool:
    """A comma outside parentheses and double quotes (Supabase splits filters there)."""
    depth, quoted, prev = 0, False, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"' and prev in (".", "(", ","):
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            return True
        prev = ch
        i += 1
    return False


def _split_list(body: str) -> list[str]:
    """``a,"b,c",d`` → ["a", "b,c", "d"] (PostgREST-style quoting)."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted and i + 1 < len(body):
            i += 1
            buf.append(body[i])
        elif ch == "," and not quoted:
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    tail = "".join(buf).strip()
    if tail or out:
        out.append(tail)
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _coerce(typname: str, value: Any) -> Any:
    if typname in NUMERIC_TYPES:
        if isinstance(value, bool):
            raise TypeError("boolean is not a number")
        if isinstance(value, (int, float)):
            return value
        text = str(value)
        return int(text) if typname in INT_TYPES else float(text)
    if typname == "bool":
        if isinstance(value, bool):
            return value
        low = str(value).lower()
        if low in ("t", "true", "1", "yes", "on"):
            return True
        if low in ("f", "false", "0", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typname in ("timestamptz", "timestamp", "date"):
        text = str(value).replace(" ", "T")
        if typname == "date":
            return dt.date.fromisoformat(text[:10])
        moment = dt.datetime.fromisoformat(text)
        if typname == "timestamptz" and moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment
    if typname == "uuid":
        return str(value).lower()
    if isinstance(value, (dict, list)):
        import orjson

        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
