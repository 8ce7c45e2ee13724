"""The executor uses sushy through its public API only (issue 13, item 6).

A private name of sushy (``_actions``, ``_firmware_inventory_path``, ``_auth``, ``_conn``,
``_session``, ``_session_resource_id``, ...) can change in any sushy release without
notice. The names are read from the installed sushy itself: every ``_name`` (one leading
underscore) it defines or uses anywhere. A module of ``executor/`` that reaches such a name
on anything but its own ``self``/``cls`` (``obj._name``, ``getattr(obj, "_name")``), or
imports a private name or module of sushy, fails here with file and line.

One place is allowed, with its reason at the place: ``http_session_of`` in
``executor/targets/redfish.py`` (sushy's Connector has no public handle on its
requests.Session). A second use of it anywhere fails too.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import sushy

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR = ROOT / "executor"
SUSHY = Path(sushy.__file__).resolve().parent

#: (file relative to the repository, enclosing function, private name): the allowed uses
ALLOWED = {("executor/targets/redfish.py", "http_session_of", "_session")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@cache
def sushy_private_names() -> frozenset[str]:
    """Every single-underscore name sushy defines or reads (its own tests aside)."""
    names: set[str] = set()
    for f in SUSHY.rglob("*.py"):
        if "tests" in f.relative_to(SUSHY).parts:
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(n for n in names if _private(n))


def problems(source: str, filename: str = "<module>") -> list[str]:
    """Each use of a private sushy name in `source`, as 'file:line: what' (allowed ones aside)."""
    private = sushy_private_names()
    tree = ast.parse(source, filename)
    out: list[tuple[int, str]] = []
    enclosing: dict[ast.AST, str] = {}
    # ast.walk meets an outer function before its inner ones, so the innermost name wins
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(fn):
                if inner is not fn:
                    enclosing[inner] = fn.name

    def say(node: ast.AST, name: str, what: str) -> None:
        if (filename, enclosing.get(node, ""), name) in ALLOWED:
            return
        line = getattr(node, "lineno", 0)
        out.append((line, f"{filename}:{line}: {what}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue  # the object's own attribute, not sushy's
            say(node, node.attr, f"{ast.unparse(node)}: {node.attr} is private to sushy; use its public API")
        elif isinstance(node, ast.Call):
            fn = node.func
            if (
                isinstance(fn, ast.Name)
                and fn.id in ("getattr", "hasattr", "setattr", "delattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in private
            ):
                say(node, str(node.args[1].value), f"{fn.id}(..., {node.args[1].value!r}): private to sushy")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sushy":
            if any(_private(part) for part in (node.module or "").split(".")):
                say(node, node.module or "", f"from {node.module} import ...: a private sushy module")
            for alias in node.names:
                if _private(alias.name):
                    say(node, alias.name, f"from {node.module} import {alias.name}: private to sushy")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sushy" and any(_private(p) for p in alias.name.split(".")):
                    say(node, alias.name, f"import {alias.name}: a private sushy module")
    return [text for _, text in sorted(out, key=lambda o: o[0])]


def test_the_private_names_are_read_from_the_installed_sushy() -> None:
    names = sushy_private_names()
    # the ones the Redfish client used to reach for, and the connector's session
    assert {
        "_actions",
        "_firmware_inventory_path",
        "_auth",
        "_conn",
        "_session",
        "_session_resource_id",
    } <= names
    assert all(_private(n) for n in names)


def test_the_executor_uses_no_private_sushy_name() -> None:
    found: list[str] = []
    for path in sorted(EXECUTOR.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found += problems(path.read_text(encoding="utf-8"), rel)
    assert found == [], "\n".join(found)


def test_the_one_allowed_use_is_still_needed_and_still_alone() -> None:
    """The allowance is not a blanket: the same name elsewhere in the same file fails, and
    the allowed function still exists (drop it from ALLOWED when it goes)."""
    rel = "executor/targets/redfish.py"
    source = (ROOT / rel).read_text(encoding="utf-8")
    assert "def http_session_of(" in source
    assert problems("def other(conn):\n    return conn._session\n", rel) == [
        f"{rel}:2: conn._session: _session is private to sushy; use its public API"
    ]


def test_each_way_of_reaching_a_private_name_is_caught() -> None:
    bad = """
import sushy._private_mod
from sushy.resources import _helpers
from sushy.auth import _private_thing
def power(sys_, us, root, auth, client):
    client.conn.post(sys_._actions.reset.target_uri, data={})
    path = us._firmware_inventory_path
    root._auth = None
    sid = getattr(auth, "_session_resource_id", None)
    setattr(root, "_conn", None)
    return client.conn._session
"""
    found = problems(bad, "x.py")
    assert found == [
        "x.py:2: import sushy._private_mod: a private sushy module",
        "x.py:3: from sushy.resources import _helpers: private to sushy",
        "x.py:4: from sushy.auth import _private_thing: private to sushy",
        "x.py:6: sys_._actions: _actions is private to sushy; use its public API",
        "x.py:7: us._firmware_inventory_path: _firmware_inventory_path is private to sushy; use its public API",
        "x.py:8: root._auth: _auth is private to sushy; use its public API",
        "x.py:9: getattr(..., '_session_resource_id'): private to sushy",
        "x.py:10: setattr(..., '_conn'): private to sushy",
        "x.py:11: client.conn._session: _session is private to sushy; use its public API",
    ], found


def test_public_names_and_an_objects_own_private_attributes_pass() -> None:
    ok = """
class Client:
    def __init__(self):
        self._conn = None
        self._auth = None
    def inventory(self, us, sys_):
        path = us.json["FirmwareInventory"]["@odata.id"]
        sys_.reset_system(sys_.get_allowed_reset_system_values().pop())
        return self._conn, cls_helper(self._auth), path
    def _media_slot(self):
        return self._media_slot
"""
    assert problems(ok, "ok.py") == []
