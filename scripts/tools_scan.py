"""Finds the external programs rackpilot's code runs, so tests/unit/test_tool_inventory.py can
hold them to scripts/tools.toml.

What counts as running (or needing) a program:
  Python  subprocess.run/Popen/call/check_call/check_output, os.exec*/spawn*/system,
          asyncio.create_subprocess_exec/_shell, and local functions that pass their argument on
          to one of those (argv: a list literal, or a name assigned a list in the same function);
          shutil.which("x"); a path constant /usr/bin/x, /usr/sbin/x, /usr/lib/postgresql/15/bin/x;
          a path built as `<something>/bin/x` or `.bin/x` (PG_BIN / "initdb", .venv/bin/deno);
          `python -m module` for a module that is neither local nor the standard library.
          Names are followed through assignments in the same function and at module level.
  shell   the command word of every simple command (after assignments, sudo/$SUDO, exec, env,
          nohup, timeout, xargs), `command -v x`, $(...) and `...` bodies, the #! interpreter;
          variables are followed through assignments and `for` lists in the same file.
  Makefile  recipe lines, with make variables expanded, scanned as shell; SHELL.
  TypeScript  new Deno.Command("x").
A program whose name cannot be read from the code is reported as unresolved (kind "unresolved",
with its expression) so that it must be explained in tools.toml's [[dynamic]].
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "<?>"
PYTHON = "<python>/bin/python"  # sys.executable
MAX_CANDIDATES = 32


@dataclass(frozen=True, order=True)
class Use:
    file: str
    line: int
    tool: str  # program name, module name (kind "module") or the expression (kind "unresolved")
    kind: str  # exec | module | unresolved

    def __str__(self) -> str:
        what = {"exec": "runs", "module": "runs python -m", "unresolved": "runs an unresolved program"}[
            self.kind
        ]
        return f"{self.file}:{self.line}: {what} {self.tool}"


def program_name(value: str) -> str | None:
    """The program a resolved path or name denotes, or None when it cannot be told."""
    if value == PYTHON:
        return "python"
    base = value.rstrip("/").rsplit("/", 1)[-1]
    if not base or UNKNOWN in base or base.startswith("-"):
        return None
    return base


def is_python(name: str | None) -> bool:
    return bool(name) and re.fullmatch(r"python(3(\.\d+)?)?", name) is not None


BIN_PATH = re.compile(r"(^|/)(s?bin|\.bin)/[^/]+$")
ABS_BIN_CONST = re.compile(r"/(usr/)?(local/)?(s?bin|lib/postgresql/\d+/bin)/[\w.+-]+")


# =========================================================================================
# Python
# =========================================================================================
SUBPROCESS_ARGV = {"run", "Popen", "call", "check_call", "check_output"}
SHELL_STRING = {
    "os.system",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "create_subprocess_shell",
    "asyncio.create_subprocess_shell",
    "os.popen",
}
PROGRAM_FIRST = {"create_subprocess_exec", "asyncio.create_subprocess_exec"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


class _PyModule:
    def __init__(self, rel: str, source: str, local_modules: set[str], wrappers: dict[str, tuple[int, str]]):
        self.rel = rel
        self.module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        self.tree = ast.parse(source)
        self.local_modules = local_modules
        self.wrappers = wrappers  # shared across the repository: call key -> (argv position, argv name)
        self.uses: list[Use] = []
        self.consts: dict[str, list[ast.expr]] = {}
        for node in self.tree.body:
            for target, value in _assignments(node):
                self.consts.setdefault(target, []).append(value)
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent
        self.functions = [
            n for n in ast.walk(self.tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        self.imports = self._imports()

    # --- names ----------------------------------------------------------------------------
    def _imports(self) -> dict[str, str]:
        out: dict[str, str] = {}
        package = self.module.rsplit(".", 1)[0] if "." in self.module else ""
        if self.rel.endswith("__init__.py"):
            package = self.module
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        out[a.asname] = a.name
                    else:
                        out[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".") if package else []
                    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                for a in node.names:
                    out[a.asname or a.name] = f"{base}.{a.name}" if base else a.name
        return out

    def key_of_def(self, fn) -> str:
        parent = self.parents.get(fn)
        if isinstance(parent, ast.ClassDef):
            if fn.name == "__init__":
                return f"{self.module}.{parent.name}"
            return f"{self.module}.<method>.{fn.name}"
        return f"{self.module}.{fn.name}"

    def key_of_call(self, func: ast.expr) -> str | None:
        if isinstance(func, ast.Name):
            if func.id in self.imports:
                return self.imports[func.id]
            return f"{self.module}.{func.id}"
        if isinstance(func, ast.Attribute):
            base = dotted(func.value)
            if base in ("self", "cls"):
                return f"{self.module}.<method>.{func.attr}"
            head, _, rest = base.partition(".")
            if head in self.imports:
                return ".".join(x for x in (self.imports[head], rest, func.attr) if x)
        return None

    # --- scopes ------------------------------------------------------------------------
    def enclosing_function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None

    @staticmethod
    def params(fn) -> list[str]:
        a = fn.args
        names = [p.arg for p in (*a.posonlyargs, *a.args)]
        if names and names[0] in ("self", "cls"):
            names = names[1:]
        return names + [p.arg for p in a.kwonlyargs] + ([a.vararg.arg] if a.vararg else [])

    def owner(self, fn, name: str):
        """The function (fn or one enclosing it) where `name` is a parameter or assigned."""
        while fn is not None:
            if name in self.params(fn) or any(t == name for n in ast.walk(fn) for t, _ in _assignments(n)):
                return fn
            fn = self.enclosing_function(fn)
        return None

    def local_values(self, fn, name: str) -> list[ast.expr]:
        fn = self.owner(fn, name)
        if fn is None:
            return []
        return [v for n in ast.walk(fn) for t, v in _assignments(n) if t == name]

    def is_param(self, fn, name: str):
        """The function whose parameter `name` is, if it is one."""
        fn = self.owner(fn, name)
        return fn if fn is not None and name in self.params(fn) else None

    # --- resolution ---------------------------------------------------------------------
    def resolve(self, node: ast.expr, fn, depth: int = 0) -> set[str]:
        if depth > 8:
            return {UNKNOWN}
        r = lambda n: self.resolve(n, fn, depth + 1)  # noqa: E731
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.Name):
            values = self.local_values(fn, node.id)
            if not values and self.is_param(fn, node.id):
                return {UNKNOWN}
            values = values or self.consts.get(node.id, [])
            out = set().union(*(r(v) for v in values)) if values else {UNKNOWN}
            return _cap(out)
        if isinstance(node, ast.NamedExpr):
            return r(node.value)
        if isinstance(node, ast.Attribute):
            if dotted(node) == "sys.executable":
                return {PYTHON}
            if node.attr == "parent":
                return {v.rsplit("/", 1)[0] if "/" in v else UNKNOWN for v in r(node.value)}
            return {UNKNOWN}
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            if (
                name
                in (
                    "str",
                    "Path",
                    "pathlib.Path",
                    "os.fspath",
                    "shutil.which",
                    "os.path.abspath",
                    "os.path.realpath",
                )
                and node.args
            ):
                parts = [r(a) for a in node.args]
                out = parts[0]
                for p in parts[1:]:
                    out = {f"{a}/{b}" for a in out for b in p}
                return _cap(out)
            if name in ("os.environ.get", "os.getenv") and len(node.args) > 1:
                return r(node.args[1])
            if isinstance(node.func, ast.Attribute) and node.func.attr in (
                "resolve",
                "absolute",
                "expanduser",
            ):
                return r(node.func.value)
            return {UNKNOWN}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return _cap({f"{a}/{b}" for a in r(node.left) for b in r(node.right)})
        if isinstance(node, ast.BoolOp):
            return _cap(set().union(*(r(v) for v in node.values)))
        if isinstance(node, ast.IfExp):
            return r(node.body) | r(node.orelse)
        return {UNKNOWN}

    def argv_lists(self, node: ast.expr, fn, depth: int = 0) -> tuple[list[list[ast.expr]], set[str]]:
        """The argv list literals `node` may be, and the parameters it may pass on as an argv."""
        if depth > 6:
            return [], set()
        if isinstance(node, (ast.List, ast.Tuple)):
            through = set()
            elts = list(node.elts)
            for k, e in enumerate(elts):  # [..., "--", *argv]: the program after -- is the caller's
                if (
                    isinstance(e, ast.Starred)
                    and isinstance(e.value, ast.Name)
                    and (k == 0 or (isinstance(elts[k - 1], ast.Constant) and elts[k - 1].value == "--"))
                ):
                    if self.is_param(fn, e.value.id):
                        through.add(e.value.id)
            if (
                elts
                and isinstance(elts[0], ast.Name)
                and self.is_param(fn, elts[0].id)
                and self.local_values(fn, elts[0].id) == []
            ):
                pass  # a program parameter, not an argv: resolved (or not) as a program
            return [elts], through
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.argv_lists(node.left, fn, depth + 1)
        if isinstance(node, ast.Starred):
            return self.argv_lists(node.value, fn, depth + 1)
        if isinstance(node, ast.Name):
            through = {node.id} if self.is_param(fn, node.id) else set()
            lists: list[list[ast.expr]] = []
            values = self.local_values(fn, node.id) or ([] if through else self.consts.get(node.id, []))
            for value in values:
                more, th = self.argv_lists(value, fn, depth + 1)
                lists += more
                through |= th
            return lists, through
        return [], set()

    # --- run sites --------------------------------------------------------------------------
    def run_site(self, call: ast.Call) -> tuple[ast.expr | None, bool]:
        """(argv or program expression, is_program) when `call` runs a program."""
        name = dotted(call.func)
        last = name.rsplit(".", 1)[-1]
        first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "args"), None)
        if (name.startswith("subprocess.") and last in SUBPROCESS_ARGV) or name == "Popen":
            return first, False
        if name in PROGRAM_FIRST or re.fullmatch(r"os\.(exec|spawn)[lv]p?e?", name):
            if name.startswith("os.spawn") and len(call.args) > 1:
                return call.args[1], True
            return first, True
        key = self.key_of_call(call.func)
        if key in self.wrappers:
            idx, pname = self.wrappers[key]
            if len(call.args) > idx and not any(isinstance(a, ast.Starred) for a in call.args[: idx + 1]):
                return call.args[idx], False
            return next((k.value for k in call.keywords if k.arg == pname), None), False
        return None, False

    def find_wrappers(self) -> bool:
        """Register the functions that run an argv they are given; True if any is new."""
        new = False
        for call in (n for n in ast.walk(self.tree) if isinstance(n, ast.Call)):
            argv, is_program = self.run_site(call)
            if argv is None or is_program:
                continue
            fn = self.enclosing_function(call)
            _, through = self.argv_lists(argv, fn)
            for pname in through:
                owner = self.is_param(fn, pname)
                key = self.key_of_def(owner)
                params = self.params(owner)
                if key not in self.wrappers:
                    self.wrappers[key] = (params.index(pname), pname)
                    new = True
        return new

    # --- the scan -------------------------------------------------------------------------
    def add(self, node: ast.AST, tool: str, kind: str = "exec") -> None:
        self.uses.append(Use(self.rel, getattr(node, "lineno", 0), tool, kind))

    def add_program(self, node: ast.expr, fn, rest: list[ast.expr] | None = None) -> None:
        if isinstance(node, ast.Starred):
            return  # a wrapper passing its argv on: the callers are scanned
        values = self.resolve(node, fn)
        names = {program_name(v) for v in values if not self.is_repo_file(v)}
        names.discard(None)
        if not names:
            if not any(self.is_repo_file(v) for v in values):
                self.add(node, ast.unparse(node), "unresolved")
            return
        for name in sorted(names):
            if is_python(name) and rest and len(rest) >= 2:
                flag, module = rest[0], rest[1]
                if isinstance(flag, ast.Constant) and flag.value == "-m" and isinstance(module, ast.Constant):
                    top = str(module.value).split(".")[0]
                    if top not in self.local_modules and top not in sys.stdlib_module_names:
                        self.add(node, top, "module")
            self.add(node, name)

    repo_paths: set[str] = set()

    def is_repo_file(self, value: str) -> bool:
        return _is_repo_file(value, self.repo_paths)

    def scan(self) -> list[Use]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                self._scan_call(node)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                parent = self.parents.get(node)
                if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
                    continue  # the outermost path expression speaks for the chain
                for v in self.resolve(node, self.enclosing_function(node)):
                    if BIN_PATH.search(v) and (name := program_name(v)):
                        self.add(node, name)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ABS_BIN_CONST.fullmatch(node.value):
                    self.add(node, program_name(node.value) or node.value)
        return sorted(set(self.uses))

    def _scan_call(self, call: ast.Call) -> None:
        fn = self.enclosing_function(call)
        name = dotted(call.func)
        if name == "shutil.which" and call.args:
            values = self.resolve(call.args[0], fn)
            for v in values:  # a lookup of a name the code does not spell out runs nothing
                if (prog := program_name(v)) is not None:
                    self.add(call, prog)
            return
        if name in SHELL_STRING or name.rsplit(".", 1)[-1] in {"create_subprocess_shell"}:
            arg = call.args[0] if call.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                for use in scan_shell(self.rel, arg.value, first_line=call.lineno):
                    self.uses.append(Use(self.rel, call.lineno, use.tool, use.kind))
            elif arg is not None:
                self.add(arg, ast.unparse(arg), "unresolved")
            return
        argv, is_program = self.run_site(call)
        if argv is None:
            return
        if is_program:
            self.add_program(argv, fn)
            return
        lists, through = self.argv_lists(argv, fn)
        if not lists and not through:
            self.add(argv, ast.unparse(argv), "unresolved")
        for elts in lists:
            if elts:
                self.add_program(elts[0], fn, elts[1:])


def _is_repo_file(value: str, repo_paths: set[str]) -> bool:
    """A program that is a file of this repository (bench/run_all) is no external tool."""
    rel = value
    while rel.startswith((UNKNOWN + "/", "./")):
        rel = rel.split("/", 1)[1]
    return bool(rel) and UNKNOWN not in rel and rel in repo_paths


def _assignments(node: ast.AST) -> Iterable[tuple[str, ast.expr]]:
    if isinstance(node, ast.Assign):
        for t in node.targets:
            if isinstance(t, ast.Name):
                yield t.id, node.value
            elif isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for tt, vv in zip(t.elts, node.value.elts, strict=False):
                    if isinstance(tt, ast.Name):
                        yield tt.id, vv
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        yield node.target.id, node.value
    elif isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
        yield node.target.id, node.value


def _cap(values: set[str]) -> set[str]:
    return values if len(values) <= MAX_CANDIDATES else {UNKNOWN}


def scan_python(
    rel: str,
    source: str,
    local_modules: Iterable[str] = (),
    wrappers: dict[str, tuple[int, str]] | None = None,
    repo_paths: Iterable[str] = (),
) -> list[Use]:
    """One module on its own (wrappers found in it only, unless a shared registry is given)."""
    return scan_python_modules({rel: source}, local_modules, wrappers, repo_paths)


def scan_python_modules(
    sources: dict[str, str],
    local_modules: Iterable[str] = (),
    wrappers: dict[str, tuple[int, str]] | None = None,
    repo_paths: Iterable[str] = (),
) -> list[Use]:
    """Several modules together, so a function in one that runs the argv it is given (e.g.
    devstack.proc.spawn) makes its callers' argv in the others count."""
    wrappers = {} if wrappers is None else wrappers
    modules, uses = [], []
    for rel, source in sources.items():
        try:
            m = _PyModule(rel, source, set(local_modules), wrappers)
        except SyntaxError as e:
            uses.append(Use(rel, e.lineno or 0, f"unparseable Python: {e.msg}", "unresolved"))
            continue
        m.repo_paths = set(repo_paths)
        modules.append(m)
    while any([m.find_wrappers() for m in modules]):
        pass
    for m in modules:
        uses += m.scan()
    return sorted(set(uses))


# =========================================================================================
# shell
# =========================================================================================
BUILTINS = set(
    """
: . [ [[ ]] alias bg bind break builtin caller cd compgen complete continue declare dirs disown echo
enable eval exit export false fc fg getopts hash help history jobs kill let local logout mapfile popd
printf pushd pwd read readarray readonly return set shift shopt source suspend test times trap true type
typeset ulimit umask unalias unset wait
""".split()
)
KEYWORDS = {
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "do",
    "done",
    "while",
    "until",
    "!",
    "{",
    "}",
    "time",
    "in",
    "esac",
}
WRAPPERS = {"sudo", "exec", "env", "nohup", "timeout", "xargs", "nice", "command"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "\n", ";;", "|&"}
ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?\+?=(.*)$", re.S)
REDIRECT = re.compile(r"^\d*(>>?|<<?<?|>&|<&|&>>?)")
SUBST = "\x00"  # stands for the value of a $(...) in a word


@dataclass
class _Tok:
    kind: str  # word | op
    text: str
    line: int


def _matching(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the `close` that balances text[i-1] == open_, skipping quotes."""
    depth = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = text.find("'", i + 1) + 1 or len(text)
            continue
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                if text[j] == "\\":
                    j += 1
                elif text.startswith("$(", j):
                    j = _matching(text, j + 2, "(", ")") - 1
                j += 1
            i = j + 1
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def _tokenize(text: str, first_line: int, subs: list[tuple[str, int]]) -> list[_Tok]:
    toks: list[_Tok] = []
    word: list[str] = []
    line = first_line
    word_line = line
    i = 0

    def flush() -> None:
        if word:
            toks.append(_Tok("word", "".join(word), word_line))
            word.clear()

    def take_subst(start: int, end: int, body: str) -> None:
        nonlocal line
        subs.append((body, line))
        word.append(SUBST)

    while i < len(text):
        c = text[i]
        if c == "\\" and text.startswith("\\\n", i):
            line += 1
            i += 2
            continue
        if c == "\\":
            if not word:
                word_line = line
            word.append(text[i : i + 2])
            i += 2
            continue
        if c in " \t":
            flush()
            i += 1
            continue
        if c == "\n":
            flush()
            toks.append(_Tok("op", "\n", line))
            line += 1
            i += 1
            continue
        if c == "#" and not word:
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        if not word:
            word_line = line
        if c == "'":
            j = text.find("'", i + 1)
            j = len(text) if j < 0 else j
            word.append(text[i : j + 1])
            line += text.count("\n", i, j + 1)
            i = j + 1
            continue
        if c == '"':
            j = i + 1
            parts = ['"']
            while j < len(text) and text[j] != '"':
                if text[j] == "\\":
                    parts.append(text[j : j + 2])
                    j += 2
                    continue
                if text.startswith("$((", j):
                    k = _matching(text, j + 3, "(", ")") + 1
                    parts.append(SUBST)
                    j = k
                    continue
                if text.startswith("$(", j):
                    k = _matching(text, j + 2, "(", ")")
                    subs.append((text[j + 2 : k - 1], line + text.count("\n", i, j)))
                    parts.append(SUBST)
                    j = k
                    continue
                if text[j] == "`":
                    k = text.find("`", j + 1)
                    k = len(text) if k < 0 else k
                    subs.append((text[j + 1 : k], line))
                    parts.append(SUBST)
                    j = k + 1
                    continue
                parts.append(text[j])
                j += 1
            parts.append('"')
            word.append("".join(parts))
            line += text.count("\n", i, j + 1)
            i = j + 1
            continue
        if text.startswith("$((", i):
            k = _matching(text, i + 3, "(", ")") + 1
            word.append(SUBST)
            line += text.count("\n", i, k)
            i = k
            continue
        if text.startswith("$(", i):
            k = _matching(text, i + 2, "(", ")")
            subs.append((text[i + 2 : k - 1], line))
            word.append(SUBST)
            line += text.count("\n", i, k)
            i = k
            continue
        if c == "`":
            k = text.find("`", i + 1)
            k = len(text) if k < 0 else k
            subs.append((text[i + 1 : k], line))
            word.append(SUBST)
            i = k + 1
            continue
        if text.startswith("${", i):
            k = _matching(text, i + 2, "{", "}")
            word.append(text[i:k])
            i = k
            continue
        if c in "<>" and text.startswith(("<(", ">("), i):  # process substitution
            k = _matching(text, i + 2, "(", ")")
            subs.append((text[i + 2 : k - 1], line))
            word.append(SUBST)
            i = k
            continue
        if c in ";&|()":
            if c == "&" and (word and word[-1][-1:] in "<>" or text.startswith("&>", i)):
                word.append(c)
                i += 1
                continue
            flush()
            op = text[i : i + 2] if text[i : i + 2] in ("&&", "||", ";;", "|&") else c
            toks.append(_Tok("op", op, line))
            i += len(op)
            continue
        word.append(c)
        i += 1
    flush()
    return toks


class _Shell:
    def __init__(self, rel: str, variables: dict[str, list[str]] | None = None):
        self.rel = rel
        self.vars: dict[str, list[str]] = {k: list(v) for k, v in (variables or {}).items()}
        self.functions: set[str] = set()
        self.uses: list[Use] = []

    def expand(self, raw: str, depth: int = 0) -> set[str]:
        """The values a word may have: quotes removed, variables replaced."""
        if depth > 6:
            return {UNKNOWN}
        results = {""}
        i = 0
        quote = ""
        while i < len(raw):
            c = raw[i]
            piece: set[str]
            if c == "'" and not quote:
                j = raw.find("'", i + 1)
                j = len(raw) if j < 0 else j
                piece, i = {raw[i + 1 : j]}, j + 1
            elif c == '"':
                quote = "" if quote else '"'
                i += 1
                continue
            elif c == "\\":
                piece, i = {raw[i + 1 : i + 2]}, i + 2
            elif c == SUBST:
                piece, i = {UNKNOWN}, i + 1
            elif c == "$":
                m = re.match(
                    r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=+?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$.",
                    raw[i:],
                )
                name = m.group(1) or m.group(4)
                piece = set()
                if name:
                    for v in self.vars.get(name, [UNKNOWN]):
                        piece |= self.expand(v, depth + 1) if v != UNKNOWN else {UNKNOWN}
                    if m.group(2) and m.group(2).lstrip(":") in "-=" and m.group(3) is not None:
                        piece |= self.expand(m.group(3), depth + 1) if m.group(3) else {""}
                else:
                    piece = {UNKNOWN}
                i += m.end()
            else:
                piece, i = {c}, i + 1
            results = {a + b for a in results for b in piece}
            if len(results) > MAX_CANDIDATES:
                return {UNKNOWN}
        return results

    def add(self, line: int, tool: str, kind: str = "exec") -> None:
        self.uses.append(Use(self.rel, line, tool, kind))

    def scan(self, text: str, first_line: int = 1) -> list[Use]:
        if first_line == 1 and text.startswith("#!"):
            parts = text.splitlines()[0][2:].split()
            for p in parts[:2]:
                if name := program_name(p):
                    self.add(1, name)
        self._scan(text, first_line)
        return sorted(set(self.uses))

    def _scan(self, text: str, first_line: int) -> None:
        subs: list[tuple[str, int]] = []
        toks = _tokenize(text, first_line, subs)
        self._collect_assignments(toks)
        self._commands(toks)
        for body, line in subs:
            self._scan(body, line)

    def _collect_assignments(self, toks: list[_Tok]) -> None:
        expect = True
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.kind == "op":
                expect = t.text in SEPARATORS
            elif t.text == "for" and i + 2 < len(toks) and toks[i + 2].text == "in":
                var, j, values = toks[i + 1].text, i + 3, []
                while j < len(toks) and toks[j].kind == "word" and toks[j].text not in ("do",):
                    values.append(toks[j].text)
                    j += 1
                self.vars.setdefault(var, []).extend(values)
                i = j
                continue
            elif t.text in ("local", "export", "readonly", "declare") or t.text in KEYWORDS:
                pass
            elif expect and (m := ASSIGN.match(t.text)):
                value = m.group(3)
                if value == "" and i + 1 < len(toks) and toks[i + 1].text == "(":  # NAME=( ... ): an array
                    value = UNKNOWN
                    i = _array_end(toks, i + 1)
                self.vars.setdefault(m.group(1), []).append(value)
            else:
                expect = False
            i += 1
        for a, b, c in zip(toks, toks[1:], toks[2:], strict=False):
            if a.kind == "word" and b.text == "(" and c.text == ")":
                self.functions.add(a.text)
        for a, b in zip(toks, toks[1:], strict=False):
            if a.text == "function" and b.kind == "word":
                self.functions.add(b.text.rstrip("()"))

    def _commands(self, toks: list[_Tok]) -> None:
        i = 0
        expect = True
        while i < len(toks):
            t = toks[i]
            if t.kind == "op":
                expect = t.text in SEPARATORS
                i += 1
                continue
            if not expect:
                i += 1
                continue
            text = t.text
            if text == "for" or text == "case":
                # skip the loop's word list / the case patterns up to do / esac
                stop = "do" if text == "for" else "esac"
                while i < len(toks) and toks[i].text != stop:
                    i += 1
                i += 1
                expect = True
                continue
            if text == "function":
                i += 2
                continue
            if (
                (m := ASSIGN.match(text))
                and m.group(3) == ""
                and i + 1 < len(toks)
                and toks[i + 1].text == "("
            ):
                i = _array_end(toks, i + 1) + 1  # NAME=( words ): data, not commands
                continue
            if text in KEYWORDS or ASSIGN.match(text) or text in ("local", "export", "readonly", "declare"):
                if text in ("local", "export", "readonly", "declare"):
                    expect = False
                i += 1
                continue
            if REDIRECT.match(text):
                i += 1 if REDIRECT.fullmatch(text) is None else 2
                continue
            if text == "[[":
                while i < len(toks) and toks[i].text != "]]":
                    i += 1
                i += 1
                expect = False
                continue
            if i + 2 < len(toks) and toks[i + 1].text == "(" and toks[i + 2].text == ")":
                i += 3  # a function definition
                continue
            i = self._command(toks, i)
            expect = False

    def _command(self, toks: list[_Tok], i: int) -> int:
        """Record the program toks[i] runs (through wrappers); return the index after it."""
        t = toks[i]
        values = self.expand(t.text)
        if any(_is_repo_file(v, self.repo_paths) for v in values):
            return i + 1  # a program of this repository
        names = {program_name(v) for v in values if v != ""}
        wrapper_ok = "" in values  # e.g. $SUDO that may be empty
        names.discard(None)
        if not names and not wrapper_ok:
            self.add(t.line, t.text.replace(SUBST, "$(...)"), "unresolved")
            return i + 1
        is_wrapper = bool(names & WRAPPERS) or (wrapper_ok and names <= WRAPPERS)  # $SUDO: "" or sudo
        for name in sorted(names):
            if name in BUILTINS or name in self.functions or name in KEYWORDS:
                continue
            if name in ("exec", "command"):
                continue
            self.add(t.line, name)
            if is_python(name):
                rest = [x.text for x in toks[i + 1 : i + 3]]
                if len(rest) == 2 and rest[0] == "-m":
                    mod = "".join(self.expand(rest[1]) - {UNKNOWN}).split(".")[0]
                    if mod and mod not in sys.stdlib_module_names and mod not in self.local_modules:
                        self.add(t.line, mod, "module")
        if not is_wrapper:
            return i + 1
        j = i + 1
        if "command" in names:
            if j < len(toks) and toks[j].text in ("-v", "-V"):
                if j + 1 < len(toks) and toks[j + 1].kind == "word":
                    k = self._command(toks, j + 1)
                    return k
                return j + 1
        while (
            j < len(toks)
            and toks[j].kind == "word"
            and (
                toks[j].text.startswith("-")
                or ASSIGN.match(toks[j].text)
                or re.fullmatch(r"\d+[smh]?", toks[j].text)
            )
        ):
            j += 1
        if j < len(toks) and toks[j].kind == "word":
            return self._command(toks, j)
        return j

    local_modules: set[str] = set()
    repo_paths: set[str] = set()


def _array_end(toks: list[_Tok], i: int) -> int:
    """Index of the ")" closing the array whose "(" is toks[i]."""
    while i < len(toks) and not (toks[i].kind == "op" and toks[i].text == ")"):
        i += 1
    return i


def scan_shell(
    rel: str,
    text: str,
    first_line: int = 1,
    variables: dict[str, list[str]] | None = None,
    local_modules: Iterable[str] = (),
    repo_paths: Iterable[str] = (),
) -> list[Use]:
    sh = _Shell(rel, variables)
    sh.local_modules = set(local_modules)
    sh.repo_paths = set(repo_paths)
    return sh.scan(text, first_line)


# =========================================================================================
# Makefile, TypeScript
# =========================================================================================
MAKE_ASSIGN = re.compile(
    r"^(?:export\s+|override\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*(?::{1,3}=|\?=|\+=|=)\s*(.*)$"
)


def scan_makefile(
    rel: str, text: str, local_modules: Iterable[str] = (), repo_paths: Iterable[str] = ()
) -> list[Use]:
    lines = text.splitlines()
    make_vars: dict[str, str] = {"CURDIR": UNKNOWN, "MAKE": "make"}
    uses: list[Use] = []
    for line in lines:
        if not line.startswith("\t") and (m := MAKE_ASSIGN.match(line)):
            make_vars[m.group(1)] = m.group(2).strip()

    def mexpand(s: str, depth: int = 0) -> str:
        if depth > 8:
            return s

        def sub(m: re.Match) -> str:
            inner = m.group(1) or m.group(2)
            if inner in make_vars:
                return mexpand(make_vars[inner], depth + 1)
            return UNKNOWN

        s = s.replace("$$", "\x01")
        s = re.sub(r"\$\(([^()\s]+)\)|\$\{([^{}\s]+)\}", sub, s)
        return s.replace("\x01", "$")

    if "SHELL" in make_vars and (name := program_name(mexpand(make_vars["SHELL"]))):
        uses.append(
            Use(
                rel, next(n for n, ln in enumerate(lines, 1) if ln.lstrip().startswith("SHELL")), name, "exec"
            )
        )
    n = 0
    while n < len(lines):
        line = lines[n]
        start = n + 1
        if line.startswith("\t"):
            recipe = line[1:]
            while recipe.endswith("\\") and n + 1 < len(lines):
                n += 1
                recipe = recipe[:-1] + " " + lines[n].lstrip("\t")
            recipe = recipe.lstrip("@-+ ")
            uses += scan_shell(
                rel, mexpand(recipe), first_line=start, local_modules=local_modules, repo_paths=repo_paths
            )
        n += 1
    return uses


DENO_COMMAND = re.compile(r"new\s+Deno\.Command\(\s*([\"'`])([^\"'`]+)\1")


def scan_typescript(rel: str, text: str) -> list[Use]:
    uses = []
    for m in DENO_COMMAND.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        name = program_name(m.group(2))
        uses.append(Use(rel, line, name, "exec") if name else Use(rel, line, m.group(2), "unresolved"))
    return uses


# =========================================================================================
# the repository
# =========================================================================================
def repo_files(root: Path) -> list[str]:
    """Tracked files and new ones not ignored (so a new script is held to the list before its commit)."""
    res = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(p for p in set(res.stdout.split("\0")) if p and (root / p).is_file())


def local_modules(root: Path) -> set[str]:
    return (
        {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
        | {p.stem for p in root.glob("*.py")}
        | {"scripts"}
    )


def kind_of(root: Path, rel: str) -> str | None:
    name = rel.rsplit("/", 1)[-1]
    if rel.endswith(".py"):
        return "python"
    if name == "Makefile" or rel.endswith(".mk"):
        return "make"
    if rel.endswith(".sh") or rel.endswith(".bash"):
        return "shell"
    if rel.endswith(".ts") and not rel.endswith(".d.ts"):
        return "ts"
    try:
        with open(root / rel, "rb") as fh:
            head = fh.readline(200)
    except OSError:
        return None
    if head.startswith(b"#!"):
        if re.search(rb"\b(ba|da|z|k)?sh\b", head):
            return "shell"
        if b"python" in head:
            return "python"
    return None


def scan_repo(root: Path, files: Iterable[str] | None = None) -> list[Use]:
    """Every use in the repository's files (or in `files`, paths relative to root)."""
    mods = local_modules(root)
    rels = repo_files(root) if files is None else list(files)
    paths = set(repo_files(root)) | set(rels)
    python: dict[str, str] = {}
    uses: list[Use] = []
    for rel in rels:
        kind = kind_of(root, rel)
        if kind is None:
            continue
        text = (root / rel).read_text(errors="replace")
        if kind == "python":
            python[rel] = text
        elif kind == "make":
            uses += scan_makefile(rel, text, mods, paths)
        elif kind == "shell":
            uses += scan_shell(rel, text, local_modules=mods, repo_paths=paths)
        else:
            uses += scan_typescript(rel, text)
    uses += scan_python_modules(python, mods, repo_paths=paths)
    return sorted(set(uses))


if __name__ == "__main__":
    here = Path(__file__).resolve().parents[1]
    for use in scan_repo(here):
        print(use)
