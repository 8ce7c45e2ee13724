"""Every ``RACKPILOT_*`` environment variable the code reads is a documented setting, with
its unit and default (issue 13, item 7).

The code: every source file under executor/, console/, devstack/, supabase/functions/,
bench/ and scripts/ (a name is "read" wherever it is spelled: through os.environ,
os.getenv, Deno.env.get, a pydantic-settings field or a message telling the operator to
set it). The tables:

* ``executor/config.py``: the executor's options (``RACKPILOT_`` + the field in capitals), each
  with its unit, default and meaning on its pydantic Field;
* ``docs/identity.md``: the directory agent's options (``RACKPILOT_IDM_`` + the option);
* ``devstack/stack/config.py``: the local stack's variables;
* ``docs/environment.md``: everything else.

A table row must give a unit and a default (not blank); the executor's rows are made from
its fields, so here each field must give both.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("executor", "console", "devstack", "supabase/functions", "bench", "scripts")
CODE_SUFFIXES = {".py", ".ts", ".sh", ".js", ".mjs"}
NAME = re.compile(r"\bRACKPILOT_[A-Z0-9_]*[A-Z0-9]\b(?!_)")
PREFIX = re.compile(r"\bRACKPILOT_(?:[A-Z0-9]+_)+(?![A-Z0-9])")

#: names spelled as a prefix only, and where their variables are documented
PREFIXES = {
    "RACKPILOT_IDM_": "docs/identity.md (the directory agent's options)",
    "RACKPILOT_TEST_UNSET_": "a Deno test's name for a variable that is never set",
}
IDM_HEADER = "| option (`RACKPILOT_IDM_`"


def code_files() -> list[Path]:
    out = []
    for d in CODE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if (
                p.is_file()
                and p.suffix in CODE_SUFFIXES
                and "node_modules" not in p.parts
                and "__pycache__" not in p.parts
            ):
                out.append(p)
    return out


def names_read() -> dict[str, list[str]]:
    """variable -> the files that spell it."""
    out: dict[str, list[str]] = {}
    for p in code_files():
        for name in set(NAME.findall(p.read_text(errors="replace"))):
            out.setdefault(name, []).append(str(p.relative_to(ROOT)))
    return out


def prefixes_read() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in code_files():
        for name in set(PREFIX.findall(p.read_text(errors="replace"))):
            if name != "RACKPILOT_":
                out.setdefault(name, []).append(str(p.relative_to(ROOT)))
    return out


def executor_table() -> dict[str, tuple[str, str]]:
    """RACKPILOT_<OPTION> -> (unit, default), from the fields of executor/config.py."""
    from executor.config import option_rows

    return {"RACKPILOT_" + r["option"].upper(): (r["unit"], r["default"]) for r in option_rows()}


def markdown_rows(
    path: Path, prefix: str = "", *, unit_col: int, default_col: int, header: str = "| variable |"
) -> dict[str, tuple[str, str]]:
    """name -> (unit, default) from the rows of the Markdown tables of ``path`` whose header
    line starts with ``header``; the name is the first cell, in backquotes."""
    rows: dict[str, tuple[str, str]] = {}
    in_table = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table:
            in_table = line.startswith(header)
            continue
        if set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        m = re.match(r"^`+([A-Za-z0-9_]+)`+", cells[0])
        if m:
            rows[prefix + m.group(1).upper()] = (cells[unit_col], cells[default_col])
    return rows


def documented() -> dict[str, tuple[str, str, str]]:
    """name -> (table, unit, default)."""
    out: dict[str, tuple[str, str, str]] = {}
    for name, (unit, default) in executor_table().items():
        out[name] = ("executor/config.py", unit, default)
    for name, (unit, default) in markdown_rows(
        ROOT / "docs" / "identity.md", "RACKPILOT_IDM_", unit_col=1, default_col=2, header=IDM_HEADER
    ).items():
        out.setdefault(name, ("docs/identity.md", unit, default))
    for name, (unit, default) in markdown_rows(
        ROOT / "devstack" / "stack" / "config.py", unit_col=2, default_col=3
    ).items():
        out.setdefault(name, ("devstack/stack/config.py", unit, default))
    for name, (unit, default) in markdown_rows(
        ROOT / "docs" / "environment.md", unit_col=2, default_col=3
    ).items():
        out.setdefault(name, ("docs/environment.md", unit, default))
    return {k: v for k, v in out.items() if k.startswith("RACKPILOT_")}


def test_every_variable_read_is_documented():
    docs = documented()
    missing = [
        f"{name} (read in {', '.join(files)})"
        for name, files in sorted(names_read().items())
        if name not in docs
    ]
    assert missing == [], "undocumented: add a row to a settings table:\n" + "\n".join(missing)


def test_every_documented_variable_has_unit_and_default():
    incomplete = [
        f"{name} in {table}: unit {unit!r}, default {default!r}"
        for name, (table, unit, default) in sorted(documented().items())
        if not unit or not default
    ]
    assert incomplete == []


def test_prefixes_are_known():
    unknown = [
        f"{p} (in {', '.join(files)})" for p, files in sorted(prefixes_read().items()) if p not in PREFIXES
    ]
    assert unknown == [], "a RACKPILOT_ prefix whose variables no table documents:\n" + "\n".join(unknown)


def test_executor_settings_fields_are_rows():
    from executor.config import ExecutorSettings

    rows = executor_table()
    missing = [f for f in ExecutorSettings.model_fields if "RACKPILOT_" + f.upper() not in rows]
    assert missing == []
    assert len(rows) >= 30  # the table was parsed at all


def test_identity_settings_fields_are_rows():
    from executor.identity import IdentitySettings

    rows = markdown_rows(
        ROOT / "docs" / "identity.md", "RACKPILOT_IDM_", unit_col=1, default_col=2, header=IDM_HEADER
    )
    assert [f for f in IdentitySettings.model_fields if "RACKPILOT_IDM_" + f.upper() not in rows] == []
