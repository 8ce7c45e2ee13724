"""The product (``executor/``, ``console/``) imports nothing of the harness (issue 13, item 5).

The harness is ``devstack/`` (the local stack, the lab, the demo, and ``devstack/testing/``:
the safety invariants, the ``selftest`` handler, the benchmark-only fleet inventory),
``tests/`` and ``bench/``. Where the product reaches the harness at all it does so through
an entry point the harness declares in pyproject.toml: the ``selftest`` handler
(``rackpilot.test_handlers``, loaded only with ``RACKPILOT_ENABLE_SELFTEST``) and the
``rackpilot dev|lab|demo`` subcommands (``rackpilot.commands``).

Two checks: every import statement of every product module, lazy ones inside functions
included, and every module name given to ``importlib.import_module``; then every product
module imported in a fresh interpreter, after which no harness module may be loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("executor", "console")
HARNESS = ("devstack", "tests", "bench")


def _is_harness(module: str) -> bool:
    return module.split(".")[0] in HARNESS


def harness_imports(source: str, filename: str) -> list[str]:
    """``file:line module`` for each import of a harness module in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        found += [f"{filename}:{node.lineno} {n}" for n in names if _is_harness(n)]
    return found


def product_modules() -> list[str]:
    out = []
    for pkg in PRODUCT:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_no_product_module_imports_the_harness():
    found = []
    for pkg in PRODUCT:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found += harness_imports(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_check_sees_lazy_and_dynamic_imports():
    src = (
        "import os\nfrom executor import steps\nfrom . import x\n"
        "def f():\n    from devstack.testing import invariants\n"
        "    import tests.unit.executor_double\n"
        "    importlib.import_module('devstack.testing.selftest')\n"
        "    return __import__('bench.fleet_inventory')\n"
    )
    assert harness_imports(src, "m.py") == [
        "m.py:5 devstack.testing",
        "m.py:6 tests.unit.executor_double",
        "m.py:7 devstack.testing.selftest",
        "m.py:8 bench.fleet_inventory",
    ]


def test_importing_the_whole_product_loads_no_harness_module():
    modules = product_modules()
    assert "executor.runner" in modules and "console.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {HARNESS!r}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_the_harness_reaches_the_product_only_through_its_entry_points():
    """The entry points that lead into the harness are the two groups the product loads, and
    each names a module that exists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    into_harness = {
        group: {name: value for name, value in eps.items() if _is_harness(value.split(":")[0])}
        for group, eps in project.get("entry-points", {}).items()
    }
    assert {g for g, eps in into_harness.items() if eps} == {"rackpilot.commands", "rackpilot.test_handlers"}
    assert into_harness["rackpilot.test_handlers"] == {
        "selftest": "devstack.testing.selftest:SelftestHandler"
    }
    assert set(into_harness["rackpilot.commands"]) == {"dev", "lab", "demo"}
    for eps in into_harness.values():
        for value in eps.values():
            assert (ROOT / (value.split(":")[0].replace(".", "/") + ".py")).is_file(), value


def test_hello_is_a_test_function_that_no_deploy_takes():
    """``hello`` (the contract tests' function) lives in supabase/functions/tests/functions/,
    which the local stack serves and ``supabase functions deploy`` never reads: the CLI
    deploys the top-level folders of supabase/functions/ and the ones config.toml declares.
    (A static check: a real deploy needs a hosted project.)"""
    functions = ROOT / "supabase" / "functions"
    deployed = {p.parent.name for p in functions.glob("*/index.ts")}
    top_level = {p.name for p in functions.iterdir() if p.is_dir()}
    declared = set(tomllib.loads((ROOT / "supabase" / "config.toml").read_text())["functions"])
    assert "hello" not in top_level | declared
    assert (functions / "tests" / "functions" / "hello" / "handler.ts").is_file()
    assert list((functions / "tests" / "functions").glob("*/index.ts")) == []  # no entry point to deploy
    # the stack would serve the product's function under a shared name: none is shared
    test_functions = {p.parent.name for p in (functions / "tests" / "functions").glob("*/handler.ts")}
    assert test_functions == {"hello"} and not test_functions & top_level
    assert deployed == declared  # every deployed function's verify_jwt is set in config.toml
