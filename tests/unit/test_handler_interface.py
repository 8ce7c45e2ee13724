"""Handlers reach the control plane only through StepContext (issue 13, item 1).

``StepContext`` offers ``rpc``, ``select``, ``update_task``, ``put_artifact``,
``save_progress``/``progress_of``, ``credentials`` and the operator's flags. A handler
module in ``executor/handlers/`` that touches the job session itself (its private
``_write``, its ``runner`` and the control-plane client behind it), defines its own
rpc/select/task/artifact helper, or sends ``update_task``/``put_artifact`` by name instead
of through the typed methods, fails here with file, line and what to use instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ROOT / "executor" / "handlers"

#: attributes of the session (or of what hangs off it) a handler must not reach for
SESSION_ATTRS = {"session", "runner", "_write", "control"}
#: names of the control-plane helpers StepContext provides: a handler defining one is a copy
HELPER_NAMES = {
    "rpc",
    "write",
    "select",
    "control",
    "update_task",
    "task",
    "put_artifact",
    "store_artifact",
}
#: RPCs that have a typed StepContext method
TYPED_RPCS = {"update_task": "ctx.update_task", "put_artifact": "ctx.put_artifact"}


def problems(source: str, filename: str = "<handler>") -> list[str]:
    tree = ast.parse(source, filename)
    out: list[str] = []

    def say(node: ast.AST, what: str) -> None:
        out.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in SESSION_ATTRS:
                say(node, f".{node.attr}: a handler uses StepContext's methods, not the job session")
            elif node.attr.startswith("_") and not node.attr.startswith("__"):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id == "ctx":
                    say(node, f".{node.attr}: private attribute of the step context or its session")
        elif isinstance(node, ast.Call):
            fn = node.func
            if (
                isinstance(fn, ast.Name)
                and fn.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in SESSION_ATTRS
            ):
                say(node, f"{fn.id}(..., {node.args[1].value!r}): reaches into the job session")
            if (
                isinstance(fn, ast.Attribute)
                and fn.attr in ("rpc", "call")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in TYPED_RPCS
            ):
                say(node, f"{fn.attr}({node.args[0].value!r}, ...): use {TYPED_RPCS[node.args[0].value]}()")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.strip("_") in HELPER_NAMES:
                say(
                    node,
                    f"def {node.name}: a copy of a StepContext helper (ctx.rpc, select, update_task, ...)",
                )
            params = {a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs}
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("rpc", "call", "_write")
                    and call.args
                    and isinstance(call.args[0], ast.Name)
                    and call.args[0].id in params
                ):
                    say(node, f"def {node.name}: a generic RPC helper (forwards its {call.args[0].id!r})")
    return out


#: debt, named: what a module still does, and why it cannot use the step context yet. A
#: module doing anything else, or doing this no more (then delete its entry), fails the test.
KNOWN = {
    # The directory sync binds with the executor's own sealed ldap credential
    # (idm_bind_credential, idm_apply_sync: executor-scoped RPCs, not the job's) through the
    # runner's control-plane client; StepContext has no executor-scoped method for it yet.
    "executor/handlers/directory_sync.py": {
        "getattr(..., 'runner'): reaches into the job session",
        ".session: a handler uses StepContext's methods, not the job session",
        ".control: a handler uses StepContext's methods, not the job session",
    },
}


def handler_files() -> list[Path]:
    return sorted(HANDLERS.glob("*.py"))


def test_handlers_use_only_the_step_context():
    assert handler_files(), "no handler modules found"
    found, known_seen = [], set()
    for f in handler_files():
        name = str(f.relative_to(ROOT))
        for p in problems(f.read_text(), name):
            what = p.split(": ", 1)[1]
            if what in KNOWN.get(name, set()):
                known_seen.add((name, what))
            else:
                found.append(p)
    assert found == [], "\n".join(found)
    stale = sorted(f"{n}: {w}" for n, ws in KNOWN.items() for w in ws if (n, w) not in known_seen)
    assert stale == [], "no longer done - delete from KNOWN:\n" + "\n".join(stale)


# --- the check itself finds what it is for ------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # the copies this test replaced (executor/handlers/_vsphere.py, _dell.py before issue 13)
        (
            "async def write(ctx, fn, **params):\n    return await ctx.session._write(fn, params)\n",
            ["def write", ".session", "._write", "generic RPC helper"],
        ),
        (
            "def control(ctx):\n    runner = getattr(ctx.session, 'runner', None)\n    return runner.control\n",
            ["def control", ".session", "getattr(..., 'runner')", ".control"],
        ),
        (
            "async def send(ctx, name, p):\n    return await ctx.rpc(name, p)\n",
            ["generic RPC helper (forwards its 'name')"],
        ),
        ("async def f(ctx):\n    await ctx.rpc('update_task', {})\n", ["use ctx.update_task()"]),
        ("async def f(ctx):\n    await ctx.rpc('put_artifact', {})\n", ["use ctx.put_artifact()"]),
        ("async def f(ctx):\n    return ctx._slow_noticed\n", ["private attribute"]),
        ("async def _select(ctx, t, c):\n    return []\n", ["def _select"]),
    ],
)
def test_the_check_names_each_way_around(source, expected):
    found = problems(source)
    for words in expected:
        assert any(words in p for p in found), (words, found)


def test_the_check_passes_the_interface():
    clean = (
        "async def f(ctx, s):\n"
        "    rows = await ctx.select('servers', 'id,name', id='1')\n"
        "    await ctx.rpc('executor_touch_ome_instance', {'p_ome_instance_id': '1'})\n"
        "    await ctx.update_task(TaskTargetKind.SERVER, s, TaskStatus.RUNNING)\n"
        "    art = await ctx.put_artifact('scp_backup', b'x', content_type='application/xml')\n"
        "    if ctx.cancel_requested or ctx.fenced:\n"
        "        return rows, art, await ctx.progress_of('stage')\n"
    )
    assert problems(clean) == []
