"""Print the code-health figures of the product and its harness as one JSON line.

    .venv/bin/python scripts/code_health.py                 # executor/ console/ devstack/
    .venv/bin/python scripts/code_health.py --list          # and name each function counted
    .venv/bin/python scripts/code_health.py executor        # other folders

Figures (the ones the code-health reviews quote, issue 13):
- funcs_over_80: functions and methods (nested ones too) whose ``def`` spans more than 80
  lines, from the first line of the ``def`` (decorators not counted) to its last line,
  found by walking each file's AST;
- radon_D, radon_E, radon_F: the blocks radon grades D, E and F, as
  ``radon cc -n D <folders>`` lists them (functions, methods and classes, closures folded
  into their parent; radon is pinned in the dev dependencies).

The duplicate-pair count comes from the `duplicates` command of the developers' tool
library, which is not part of the project, so it is not measured here.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from pathlib import Path

from radon.cli import Config
from radon.cli.harvest import CCHarvester
from radon.complexity import cc_rank

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("executor", "console", "devstack")
LONG = 80


def python_files(folders: list[str]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        base = ROOT / folder
        files += sorted(p for p in base.rglob("*.py") if not any(part.startswith(".") for part in p.parts))
    return files


def long_functions(files: list[Path], limit: int = LONG) -> list[str]:
    """``path:line name (N lines)`` for each def spanning more than ``limit`` lines."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                span = (node.end_lineno or node.lineno) - node.lineno + 1
                if span > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({span} lines)")
    return found


def radon_grades(folders: list[str]) -> list[tuple[str, str]]:
    """(grade, ``path:line name (complexity)``) for each block radon grades D or worse."""
    config = Config(
        min="D",
        max="F",
        exclude=None,
        ignore=None,
        show_complexity=True,
        average=False,
        total_average=False,
        order=lambda block: block.lineno,
        no_assert=False,
        show_closures=False,
        include_ipynb=False,
        ipynb_cells=False,
    )
    harvester = CCHarvester([str(ROOT / f) for f in folders], config)
    graded = []
    for filename, blocks in harvester.results:
        if isinstance(blocks, dict):  # radon's answer for a file it could not parse
            raise SystemExit(f"radon could not read {filename}: {blocks.get('error')}")
        # radon's blocks: every function and method (a class's methods are listed on their
        # own as well as under the class) and every class, as the CLI prints them
        for b in blocks:
            grade = cc_rank(b.complexity)
            if grade in ("D", "E", "F"):
                rel = Path(filename).resolve().relative_to(ROOT)
                graded.append((grade, f"{rel}:{b.lineno} {b.fullname} ({b.complexity})"))
    return graded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", default=list(FOLDERS), help="folders below the repository root")
    ap.add_argument("--list", action="store_true", help="name each counted function on stderr")
    args = ap.parse_args(argv)
    long = long_functions(python_files(args.folders))
    graded = radon_grades(args.folders)
    grades = Counter(g for g, _ in graded)
    print(
        json.dumps(
            {
                "folders": args.folders,
                "funcs_over_80": len(long),
                "radon_D": grades["D"],
                "radon_E": grades["E"],
                "radon_F": grades["F"],
            }
        )
    )
    if args.list:
        for line in long:
            print(f"over {LONG}: {line}", file=sys.stderr)
        for grade, line in sorted(graded):
            print(f"radon {grade}: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
