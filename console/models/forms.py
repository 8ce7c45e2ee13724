"""Form messages in words: what the executor's params models (pydantic) refuse, said the
way an operator reads it, never as a regular expression or a type name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

# what each constrained string must look like, by its pattern (executor/jobparams.py)
PATTERN_WORDS = [
    (r"^\^https\?://", "an http(s) URL such as https://downloads.example.com/catalog/Catalog.xml.gz"),
    (r"^\^\[0-9\]\[0-9A-Za-z", "a version such as 8.0.3 (digits first, then letters, digits, . + -)"),
    (r"^\^\[A-Za-z0-9\]\[A-Za-z0-9\._-\]", "a name of letters, digits, '.', '_' or '-' (no spaces)"),
    (r"^\^\[A-Za-z0-9\]\[A-Za-z0-9\.:-\]", "a host name or address (letters, digits, '.', ':' or '-')"),
    (r"0-9A-Fa-f:\.\]\+\(/", "an address, a range a-b, or a network in CIDR form such as 10.0.0.0/24"),
    (r"\]\?\[0-9\]\)%\$$", "a percentage such as 25%"),
]
# the member tags pydantic puts into the location of an error inside a union (failure_budget:
# int | str): not a place the operator knows
_UNION_MEMBER = re.compile(r"^(constrained-)?(int|str|float|bool)$")
LABELS = {
    "firmware.catalog_url": "catalog URL",
    "firmware.components": "components",
    "catalog_url": "catalog URL",
    "max_parallel_hosts": "hosts at once",
    "failure_budget": "failure budget",
    "blocker_default": "blocker policy",
    "vmotion_timeout_s": "evacuation budget (s)",
    "esxi.target_version": "ESXi version",
    "esxi.depot_url": "ESXi depot URL",
    "image_url": "image URL",
    "host_ids": "hosts",
    "server_ids": "servers",
}


def _label(loc: tuple[Any, ...]) -> str:
    key = ".".join(str(p) for p in _place(loc)) or "params"
    if key in LABELS:
        return LABELS[key]
    return key.rsplit(".", 1)[-1].replace("_", " ")


def _place(loc: tuple[Any, ...]) -> list[Any]:
    return [p for p in loc if not isinstance(p, int) and not _UNION_MEMBER.match(str(p))]


def _choices(expected: str) -> str:
    return ", ".join(re.findall(r"'([^']*)'", expected)) or expected


# pydantic error type -> the words after the field's label; {name}: the error's ctx value
_WORDS = {
    "greater_than_equal": "at least {ge}",
    "less_than_equal": "at most {le}",
    "greater_than": "more than {gt}",
    "less_than": "less than {lt}",
    "string_too_short": "at least {min_length} character(s)",
    "string_too_long": "at most {max_length} characters",
    "too_long": "at most {max_length} item(s)",
    "too_short": "at least {min_length} item(s)",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "yes or no",
    "bool_type": "yes or no",
    "uuid_parsing": "pick it from the list",
    "uuid_type": "pick it from the list",
    "extra_forbidden": "not a setting of this job type",
    "string_type": "text expected",
    "list_type": "a list expected",
}


class _Blank(dict[str, Any]):
    """An error's ctx for str.format_map: a value it lacks reads None, as ctx.get gave."""

    def __missing__(self, key: str) -> None:
        return None


def problem_text(err: Mapping[str, Any]) -> str:
    label, kind, ctx = _label(tuple(err.get("loc", ()))), err.get("type", ""), err.get("ctx") or {}
    if kind == "missing":
        return f"{label}: required"
    if kind in ("enum", "literal_error"):
        return f"{label}: choose one of {_choices(str(ctx.get('expected', '')))}"
    if kind == "string_pattern_mismatch":
        pat = str(ctx.get("pattern", ""))
        for rx, words in PATTERN_WORDS:
            if re.search(rx, pat):
                return f"{label}: {words}"
        return f"{label}: not in the expected form"
    said = _WORDS.get(kind)
    if said is not None:
        return f"{label}: {said.format_map(_Blank(ctx))}"
    msg = str(err.get("msg", "not valid"))
    msg = re.sub(r"^Value error, ", "", msg)
    return f"{label}: {msg[:1].lower() + msg[1:]}"


def pydantic_problems(exc: ValidationError) -> list[str]:
    """One line per problem; the members of a union that all refused one value make one line
    ("failure budget: a whole number, or a percentage such as 25%"), without the text member's
    "text expected" when a number was given."""
    out: list[str] = []
    union: dict[str, list[str]] = {}
    for e in exc.errors(include_url=False, include_input=False):
        loc = tuple(e.get("loc", ()))
        if len(_place(loc)) == len([p for p in loc if not isinstance(p, int)]):
            out.append(problem_text(e))
            continue
        label = _label(loc)
        if label not in union:
            union[label] = []
            out.append(label)  # its place among the lines; filled in below
        if e.get("type") != "string_type":
            union[label].append(problem_text(e).split(": ", 1)[1])
    return [f"{x}: {', or '.join(union[x]) or 'not valid'}" if x in union else x for x in out]
