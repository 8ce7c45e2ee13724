"""Every process the executor starts goes through executor/childproc.py, so none outlives it.

childproc.spawn gives each child the kernel's parent-death signal (and the setgid
ssh-agent, whose exec clears it, a watch on the executor's pipe: executor/targets/ssh.py),
so a child dies with the executor even when the executor is SIGKILLed. Because of that the
demo stops its executor without sweeping the processes that name its folder
(devstack/demo.py). This test holds every module of executor/ to it: no other way of
starting a process (subprocess.*, os.system/popen/spawn*/exec*/fork, asyncio's subprocess
functions, pty, multiprocessing) appears outside childproc.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EXECUTOR = Path(__file__).resolve().parents[2] / "executor"
ALLOWED = {EXECUTOR / "childproc.py"}

STARTERS = {
    "subprocess": {"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"},
    "os": {
        "system",
        "popen",
        "fork",
        "forkpty",
        "posix_spawn",
        "posix_spawnp",
        *(f"spawn{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
        *(f"exec{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
    },
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "pty": {"spawn", "fork"},
}
MODULES = {"multiprocessing", "concurrent.futures.process"}
LOOP_METHODS = {"subprocess_exec", "subprocess_shell"}


def _annotations(tree: ast.AST) -> set[int]:
    """ids of the nodes inside type annotations (``subprocess.Popen | None`` starts nothing)."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            roots.append(node.returns)
    return {id(n) for r in roots for n in ast.walk(r)}


def process_starts(source: str) -> list[str]:
    """``module.name`` (or ``from module import name``) uses that start a process."""
    tree = ast.parse(source)
    typing_only = _annotations(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.attr in STARTERS.get(node.value.id, ()):
                found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
            elif node.attr in LOOP_METHODS:
                found.append(f"<loop>.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in MODULES or node.module.startswith("multiprocessing."):
                found.append(f"from {node.module} import ... (line {node.lineno})")
            for alias in node.names:
                if alias.name in STARTERS.get(node.module, ()):
                    found.append(f"from {node.module} import {alias.name} (line {node.lineno})")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES or alias.name.startswith("multiprocessing."):
                    found.append(f"import {alias.name} (line {node.lineno})")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import subprocess\nsubprocess.run(['ssh-add', '-L'])",
        "import asyncio, subprocess\nasyncio.to_thread(subprocess.run, ['x'])",
        "from subprocess import Popen",
        "import os\nos.execvp('x', ['x'])",
        "import asyncio\nasyncio.create_subprocess_exec('x')",
        "loop.subprocess_exec(factory, 'x')",
        "import multiprocessing",
    ],
)
def test_the_scan_sees_each_way_of_starting_a_process(snippet):
    assert process_starts(snippet), snippet


def test_the_scan_leaves_the_ordinary_alone():
    src = (
        "import subprocess, os\n"
        "p: subprocess.Popen | None = None\n"
        "def f(x: set[subprocess.Popen]) -> subprocess.Popen: ...\n"
        "subprocess.PIPE\n"
        "os.getpid()\n"
        "os.killpg(1, 9)\n"
        "os.environ.get('PATH')\n"
    )
    assert process_starts(src) == []


def test_every_child_of_the_executor_is_started_through_childproc():
    offenders = {}
    for path in sorted(EXECUTOR.rglob("*.py")):
        if path in ALLOWED:
            continue
        starts = process_starts(path.read_text())
        if starts:
            offenders[str(path.relative_to(EXECUTOR.parent))] = starts
    assert not offenders, f"start these through executor.childproc.spawn: {offenders}"
