"""Turn wal2json (format-version 2) column values into the JSON values Supabase sends.

Supabase Realtime builds ``record``/``old_record`` with ``to_jsonb`` of the row, so:
numbers and booleans are JSON numbers/booleans (wal2json already emits them so),
json/jsonb values are embedded JSON (wal2json emits their text), timestamps use the ISO
form ``2024-01-02T03:04:05.123456+00:00`` (wal2json emits Postgres' text form with a
space and a short offset), and arrays are JSON arrays (wal2json emits array literals).
Every other type stays the string Postgres prints. ``columns[].type`` is ``pg_type.typname``
(``int8``, ``timestamptz``, ``_text``), which is what the clients' converters expect.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

NUMERIC_TYPES = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric", "oid"})
INT_TYPES = frozenset({"int2", "int4", "int8", "oid"})
JSON_TYPES = frozenset({"json", "jsonb"})


def loads(data: bytes | str) -> Any:
    """orjson, falling back to the stdlib for integers beyond 64 bits (numeric columns)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        import json

        return json.loads(data)


def iso_timestamp(text: str) -> str:
    """``2024-01-02 03:04:05.12+00`` → ``2024-01-02T03:04:05.12+00:00`` (to_jsonb's form)."""
    if len(text) < 11 or text[10] != " ":
        return text  # infinity, -infinity, BC dates: leave as Postgres prints them
    out = text[:10] + "T" + text[11:]
    # a bare hour offset (+00, -05) gets its minutes, as to_jsonb prints it
    tail = out[-3:]
    if len(out) > 19 and tail[0] in "+-" and tail[1:].isdigit() and out[-6] not in "+-" and out[-4] != ":":
        out += ":00"
    return out


def commit_timestamp(text: str | None) -> str:
    """wal2json's commit time → Supabase's ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds)."""
    if not text:
        moment = dt.datetime.now(dt.UTC)
    else:
        try:
            moment = dt.datetime.fromisoformat(text).astimezone(dt.UTC)
        except ValueError:
            moment = dt.datetime.now(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_array(text: str) -> list | str:
    """A Postgres array literal (``{a,"b c",NULL,{1,2}}``) → nested lists of str/None.

    Returns the text unchanged if it is not a well-formed literal."""
    s = text
    if s.startswith("["):  # explicit bounds: [0:2]={...}
        eq = s.find("=")
        if eq < 0:
            return text
        s = s[eq + 1 :]
    if not s.startswith("{"):
        return text
    pos = 0
    n = len(s)

    def parse_level() -> list:
        nonlocal pos
        assert s[pos] == "{"
        pos += 1
        items: list = []
        if pos < n and s[pos] == "}":
            pos += 1
            return items
        while pos < n:
            ch = s[pos]
            if ch == "{":
                items.append(parse_level())
            elif ch == '"':
                pos += 1
                buf = []
                while pos < n and s[pos] != '"':
                    if s[pos] == "\\" and pos + 1 < n:
                        pos += 1
                    buf.append(s[pos])
                    pos += 1
                pos += 1  # closing quote
                items.append("".join(buf))
            else:
                start = pos
                while pos < n and s[pos] not in ",}":
                    pos += 1
                raw = s[start:pos].strip()
                items.append(None if raw.upper() == "NULL" else raw)
            if pos >= n:
                raise ValueError("unterminated array")
            if s[pos] == ",":
                pos += 1
            elif s[pos] == "}":
                pos += 1
                return items
            else:
                raise ValueError("bad array delimiter")
        raise ValueError("unterminated array")

    try:
        result = parse_level()
    except (ValueError, AssertionError, IndexError):
        return text
    return result


def _scalar_from_text(typname: str, text: str | None) -> Any:
    """An array element (always text in a literal) → its JSON value."""
    if text is None:
        return None
    if typname in NUMERIC_TYPES:
        try:
            return int(text) if typname in INT_TYPES else _number(text)
        except ValueError:
            return text
    if typname == "bool":
        return text in ("t", "true")
    if typname in JSON_TYPES:
        try:
            return loads(text)
        except ValueError:
            return text
    if typname in ("timestamptz", "timestamp"):
        return iso_timestamp(text)
    return text


def _number(text: str) -> Any:
    f = float(text)
    if f.is_integer() and "." not in text and "e" not in text.lower():
        return int(text)
    return f


def _elements(typname: str, items: list) -> list:
    return [_elements(typname, x) if isinstance(x, list) else _scalar_from_text(typname, x) for x in items]


def convert(typname: str, value: Any) -> Any:
    """One wal2json column value → the value Supabase puts in ``record``."""
    if value is None or not isinstance(value, str):
        return value  # numbers, booleans and nulls are already typed by wal2json
    if typname in JSON_TYPES:
        try:
            return loads(value)
        except ValueError:
            return value
    if typname in ("timestamptz", "timestamp"):
        return iso_timestamp(value)
    if typname.startswith("_"):
        parsed = parse_array(value)
        if isinstance(parsed, list):
            return _elements(typname[1:], parsed)
        return value
    if typname in NUMERIC_TYPES:  # NaN / Infinity arrive quoted
        return value
    return value
