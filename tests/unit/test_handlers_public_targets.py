"""Handlers use the target clients' public methods only (issue 13, items 1 and 6).

A handler in ``executor/handlers/`` that reaches a private attribute of another object
(``dell._post``, ``client._media_slot``, ``DellOEM._job_id_from``, ...) ties itself to a
target's insides; the target gives it a public method instead. Its own ``self``/``cls``
and the handler package's private modules (``from ._dell import ...``) are its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ROOT / "executor" / "handlers"


def problems(source: str, filename: str = "<handler>") -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            out.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(node)}: private to its object"))
    return [text for _, text in sorted(out)]


def test_no_handler_reaches_a_private_attribute_of_a_target() -> None:
    found: list[str] = []
    for path in sorted(HANDLERS.rglob("*.py")):
        found += problems(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert found == [], "\n".join(found)


def test_the_ways_it_was_done_are_caught_and_the_public_ones_pass() -> None:
    bad = """
from ._dell import call
async def run(dell, c, DellOEM):
    await call(c._media_slot, "CD")
    jid = DellOEM._job_id_from({}, {})
    return dell._post("/x", {})
"""
    assert problems(bad, "h.py") == [
        "h.py:4: c._media_slot: private to its object",
        "h.py:5: DellOEM._job_id_from: private to its object",
        "h.py:6: dell._post: private to its object",
    ]
    good = """
from ._dell import call
class H:
    async def run(self, dell, c, DellOEM):
        await call(c.media_slot, "CD")
        self._seen = DellOEM.job_id_from({}, {})
        return dell.post_action("/x", {}), self._seen
"""
    assert problems(good, "h.py") == []
