"""docs/console.md lists every screenshot the browser tests save, and nothing else: the names
come from the ``shot(driver, folder, name)`` calls in tests/browser/ (a name made per screen or
per notebook is expanded from the screen registry and notebooks/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from console import screens

ROOT = Path(__file__).resolve().parents[2]
# the parts of a name made in a loop, and what they range over
EXPANSIONS = {
    "screen-": lambda: [s.key for s in screens.all_screens()],
    "notebook-": lambda: [p.stem for p in (ROOT / "notebooks").glob("*.ipynb")],
}


def saved_names() -> set[str]:
    names: set[str] = set()
    for path in sorted((ROOT / "tests" / "browser").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "shot"):
                continue
            arg = node.args[2] if len(node.args) > 2 else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(f"{arg.value}.png")
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                assert prefix in EXPANSIONS and len(arg.values) == 2, (
                    f"{path.name}:{node.lineno}: a screenshot name this test cannot expand"
                )
                names |= {f"{prefix}{x}.png" for x in EXPANSIONS[prefix]()}
            else:
                raise AssertionError(f"{path.name}:{node.lineno}: a screenshot name this test cannot read")
    return names


def test_docs_console_lists_every_screenshot_the_browser_tests_save():
    saved = saved_names()
    assert len(saved) >= 30 and "screen-schedules.png" in saved and "notebook-05_reports.png" in saved
    doc = (ROOT / "docs" / "console.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_-]+\.png)` \| \S", doc, flags=re.M))
    assert not saved - listed, f"saved but not listed in docs/console.md: {sorted(saved - listed)}"
    assert not listed - saved, f"listed in docs/console.md but never saved: {sorted(listed - saved)}"
