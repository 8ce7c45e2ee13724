"""scripts/tools.toml is the one list of external programs rackpilot runs. These tests hold the
code to it (scripts/tools_scan.py reads every Python module, shell script and the Makefile), hold
the list to the code (no entry nothing uses), show that the scanner does catch an undeclared
program, and show that scripts/setup.sh installs what the list names and that the check names the
missing tool with its package."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


check_tools = _load("check_tools")
tools_scan = _load("tools_scan")
INV = check_tools.load()
HOW = (
    "declare it in scripts/tools.toml with the package that provides it (apt/pip/npm), so "
    "scripts/setup.sh installs it and the tool check covers it"
)


def undeclared(uses, inv=INV) -> list[str]:
    """One line per use of a program the inventory does not declare (file:line first)."""
    dynamic = {(d.file, d.expr) for d in inv.dynamic}
    out = []
    for use in uses:
        if use.kind == "unresolved":
            if (use.file, use.tool) not in dynamic:
                out.append(
                    f"{use.file}:{use.line}: runs a program the scanner cannot name: {use.tool} "
                    "(spell it out, or explain it under [[dynamic]] in scripts/tools.toml)"
                )
        elif use.tool != "python" and inv.tool_named(use.tool) is None:
            what = f"python -m {use.tool}" if use.kind == "module" else use.tool
            out.append(f"{use.file}:{use.line}: runs {what}, which scripts/tools.toml does not declare")
    return out


@pytest.fixture(scope="module")
def repo_uses():
    return tools_scan.scan_repo(ROOT)


# --- the code against the list ------------------------------------------------------------------
def test_every_program_the_code_runs_is_declared(repo_uses):
    missing = undeclared(repo_uses)
    assert not missing, "\n".join(missing) + "\n" + HOW


def test_modules_run_with_python_m_are_declared_as_modules(repo_uses):
    wrong = [
        f"{u.file}:{u.line}: python -m {u.tool}"
        for u in repo_uses
        if u.kind == "module" and (t := INV.tool_named(u.tool)) is not None and not t.module
    ]
    assert not wrong, "declare these with module = true:\n" + "\n".join(wrong)


def test_every_declared_tool_is_used_or_says_why_not(repo_uses):
    used = {t.name for u in repo_uses if u.kind != "unresolved" and (t := INV.tool_named(u.tool))}
    unused = [name for name, tool in INV.tools.items() if name not in used and not tool.indirect]
    assert not unused, (
        f"scripts/tools.toml declares tools nothing runs: {unused} (remove them, or say `indirect`)"
    )


def test_every_dynamic_entry_still_matches_the_code(repo_uses):
    seen = {(u.file, u.tool) for u in repo_uses if u.kind == "unresolved"}
    stale = [f"{d.file}: {d.expr}" for d in INV.dynamic if (d.file, d.expr) not in seen]
    assert not stale, "[[dynamic]] entries that match no code any more:\n" + "\n".join(stale)


def test_the_scan_sees_the_known_programs(repo_uses):
    """A scanner that found nothing would pass the tests above: it must find these."""
    found = {(u.file, u.tool) for u in repo_uses}
    for expected in [
        ("scripts/test.sh", "pg_prove"),
        ("scripts/test.sh", "deno"),
        ("scripts/test.sh", "pytest"),
        ("devstack/stack/postgres.py", "initdb"),
        ("devstack/stack/postgres.py", "pg_ctl"),
        ("devstack/stack/postgres.py", "psql"),
        ("devstack/stack/postgres.py", "pg_isready"),
        ("devstack/stack/postgres.py", "runuser"),
        ("devstack/lab/esxi_ssh.py", "sshd"),
        ("devstack/lab/esxi_ssh.py", "ssh-keygen"),
        ("devstack/lab/vcenter.py", "go"),
        ("devstack/stack/stack.py", "supabase"),
        ("bench/rest_throughput.py", "wrk"),
        ("tests/browser/jlab.py", "chromium"),
        ("tests/browser/jlab.py", "chromedriver"),
        ("tests/browser/jlab.py", "jupyterlab"),
        ("tests/integration/test_functions_credentials.py", "pg_dump"),
        ("tests/integration/test_idrac_sushy_emulator.py", "sushy-emulator"),
        ("Makefile", "ruff"),
        ("scripts/setup.sh", "npm"),
    ]:
        assert expected in found, f"the scanner no longer sees {expected[1]} in {expected[0]}"


# --- the scanner is honest: undeclared programs in synthetic code fail, with file:line -------------
PY_SNIPPET = """\
import os, shutil, subprocess, sys
from pathlib import Path

FROB = "/usr/sbin/frobd"
KIT = Path(os.environ.get("KIT_BIN", "/opt/kit/bin"))
GRINDER = "grinder"


def run(argv):
    return subprocess.run(argv, check=True)


class Thing:
    def _cmd(self, argv):
        argv = ["nsenter", "-t", "1", "--", *argv]
        return subprocess.run(argv)

    def go(self):
        subprocess.Popen([FROB, "-D"])
        self._cmd(["zorkctl", "status"])
        run([GRINDER, "--fine"])
        exe = KIT / "kitctl"
        subprocess.run([str(exe), "up"])
        if shutil.which("quuxify") is None:
            pass
        subprocess.run([sys.executable, "-m", "notaninstalledmodule"])
        subprocess.run(["sleep", "1"])
        subprocess.run(self.make_argv())
"""


def test_python_scanner_catches_undeclared_programs():
    uses = tools_scan.scan_python("pkg/thing.py", PY_SNIPPET)
    by_tool = {u.tool: u for u in uses}
    for tool, line in [
        ("frobd", 4),
        ("frobd", 19),
        ("nsenter", 15),
        ("zorkctl", 20),
        ("grinder", 21),
        ("kitctl", 23),
        ("quuxify", 24),
        ("notaninstalledmodule", 26),
        ("sleep", 27),
    ]:
        assert tool in by_tool, f"missed {tool}: {uses}"
        assert any(u.line == line for u in uses if u.tool == tool), (
            tool,
            [u for u in uses if u.tool == tool],
        )
    assert ("self.make_argv()", "unresolved") in {(u.tool, u.kind) for u in uses}
    errors = undeclared(uses)
    assert "pkg/thing.py:4: runs frobd, which scripts/tools.toml does not declare" in errors
    assert (
        "pkg/thing.py:26: runs python -m notaninstalledmodule, which scripts/tools.toml does not declare"
        in errors
    )
    assert any(
        e.startswith("pkg/thing.py:28: runs a program the scanner cannot name: self.make_argv()")
        for e in errors
    )
    assert not any(":27:" in e for e in errors), "sleep is declared (coreutils)"


def test_python_scanner_follows_a_wrapper_into_another_module():
    helper = "import subprocess\n\ndef spawn(argv, *, quiet=True):\n    return subprocess.Popen(argv)\n"
    user = "from pkg.helper import spawn\nfrom pkg import helper\n\nspawn(['blorp', '-x'])\nhelper.spawn(['flarn'])\n"
    uses = tools_scan.scan_python_modules({"pkg/helper.py": helper, "pkg/user.py": user})
    assert {("pkg/user.py", 4, "blorp"), ("pkg/user.py", 5, "flarn")} <= {
        (u.file, u.line, u.tool) for u in uses
    }
    assert not [u for u in uses if u.kind == "unresolved"], uses


SH_SNIPPET = """\
#!/bin/sh
set -eu
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
TOOLS=(frobnicate not-a-command)
helper() { echo hi; }
for t in "${TOOLS[@]}"; do helper "$t"; done
$SUDO zorkctl start >/dev/null 2>&1 || true
BIN=/opt/thing/bin/thingd
"$BIN" --check && echo ok
out="$(blargh --version | cut -d' ' -f2)"
command -v quuxify >/dev/null || exit 1
PY=.venv/bin/python
"$PY" -m notaninstalledmodule \\
  --flag
sleep 1
"""


def test_shell_scanner_catches_undeclared_programs():
    uses = tools_scan.scan_shell("scripts/x.sh", SH_SNIPPET)
    got = {(u.line, u.tool) for u in uses}
    for line, tool in [
        (1, "sh"),
        (4, "id"),
        (8, "zorkctl"),
        (8, "sudo"),
        (10, "thingd"),
        (11, "blargh"),
        (11, "cut"),
        (12, "quuxify"),
        (14, "notaninstalledmodule"),
        (16, "sleep"),
    ]:
        assert (line, tool) in got, f"missed {tool} at line {line}: {sorted(got)}"
    names = {u.tool for u in uses}
    assert not names & {"frobnicate", "not-a-command", "helper", "echo", "true", "exit", "set", "[", "for"}, (
        names
    )
    errors = undeclared(uses)
    assert "scripts/x.sh:8: runs zorkctl, which scripts/tools.toml does not declare" in errors
    assert "scripts/x.sh:11: runs blargh, which scripts/tools.toml does not declare" in errors
    assert not any(":16:" in e or ":4:" in e for e in errors), errors


def test_makefile_scanner_expands_variables_and_catches_undeclared_programs():
    mk = (
        "SHELL := /bin/bash\nVENV := .venv\nGRIND = /usr/local/bin/grind\n\nall:\n\t@$(GRIND) --all\n"
        "\t-$(VENV)/bin/ruff check .\n\tfor f in *.x; do frob $$f; done\n"
    )
    uses = tools_scan.scan_makefile("Makefile", mk)
    assert {(1, "bash"), (6, "grind"), (7, "ruff"), (8, "frob")} <= {(u.line, u.tool) for u in uses}
    assert "Makefile:6: runs grind, which scripts/tools.toml does not declare" in undeclared(uses)


def test_a_program_of_the_repository_is_not_an_external_tool():
    uses = tools_scan.scan_shell("Makefile", "bench/run_all --quick\n", repo_paths={"bench/run_all"})
    assert not uses


# --- the list against the installer --------------------------------------------------------------
def test_pip_and_npm_tools_come_from_the_manifests_setup_installs():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(py["dependencies"]) + [r for extra in py["optional-dependencies"].values() for r in extra]
    names = {
        r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        for r in reqs
    }
    npm = json.loads((ROOT / "package.json").read_text())
    npm_names = set(npm.get("dependencies", {})) | set(npm.get("devDependencies", {}))
    for tool in INV.tools.values():
        if tool.source == "pip":
            assert tool.package.lower() in names, (
                f"{tool.name}: PyPI package {tool.package} is not in pyproject.toml"
            )
        if tool.source == "npm":
            assert tool.package in npm_names, (
                f"{tool.name}: npm package {tool.package} is not in package.json"
            )


def test_setup_has_no_package_list_of_its_own():
    """apt-get install in setup.sh installs the list's packages, or bootstraps python3 (declared)."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [
        ln.split(" install ", 1)[1].split()
        for ln in setup.splitlines()
        if "apt-get" in ln and " install " in ln and not ln.lstrip().startswith("#")
    ]
    assert installs
    for words in installs:
        pkgs = [w for w in words if not w.startswith("-") and not w.startswith(">")]
        assert pkgs in (['"${missing[@]}"'], ["python3"]), pkgs
    assert INV.tool_named("python3").package == "python3"
    assert "scripts/check_tools.py apt-missing" in setup
    assert "scripts/check_tools.py check" in setup.split("# 5.")[-1], "setup must end by checking every tool"


def _fakebin(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH where dpkg says nothing is installed, node is too old and apt-get records what it is asked."""
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "apt-get.log"
    scripts = {
        "dpkg-query": "#!/bin/sh\nexit 1\n",
        "node": "#!/bin/sh\nexit 1\n",
        "apt-get": f'#!/bin/sh\necho "$@" >> {record}\ncase " $* " in *" install "*) exit 97;; esac\n',
        "sudo": '#!/bin/sh\nexec "$@"\n',
        "python3": f'#!/bin/sh\nexec {sys.executable} "$@"\n',
    }
    for name, body in scripts.items():
        (fake / name).write_text(body)
        (fake / name).chmod(0o755)
    return fake, record


def test_setup_installs_every_declared_apt_package(tmp_path):
    fake, record = _fakebin(tmp_path)
    env = {**os.environ, "PATH": f"{fake}:/usr/bin:/bin:/usr/sbin:/sbin"}
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 97, (res.returncode, res.stderr)
    lines = record.read_text().splitlines()
    install = next(ln for ln in lines if " install " in f" {ln} ")
    asked = {w for w in f" {install}".split(" install ", 1)[1].split() if not w.startswith("-")}
    euid = os.geteuid()
    expected = {t.package for t in INV.tools.values() if t.source == "apt" and t.applies(euid)}
    expected |= {p.package for p in INV.packages.values()}
    assert asked == expected, f"not installed by setup: {expected - asked}; not declared: {asked - expected}"
    assert "libtap-parser-sourcehandler-pgtap-perl" in asked  # pg_prove, the tool that started this


# --- the check's message -------------------------------------------------------------------------
def test_the_check_names_the_missing_tool_and_its_package(tmp_path):
    toml = tmp_path / "tools.toml"
    toml.write_text(
        textwrap.dedent("""\
        [tools]
        pg_prove = { apt = "libtap-parser-sourcehandler-pgtap-perl", path = "/nonexistent/pg_prove" }
        deno = { pip = "deno" }
        supabase = { npm = "supabase" }
        jupyterlab = { pip = "jupyterlab", module = true }
        sh = { apt = "dash" }
        [packages]
        wal2json = { apt = "postgresql-15-wal2json", file = "/nonexistent/wal2json.so" }
        """)
    )
    inv = check_tools.load(toml)
    found = check_tools.problems(inv, root=tmp_path)  # an empty folder: no .venv, no node_modules
    assert (
        "missing tool pg_prove at /nonexistent/pg_prove: install Debian package "
        "libtap-parser-sourcehandler-pgtap-perl (apt-get install libtap-parser-sourcehandler-pgtap-perl, "
        "or run scripts/setup.sh)"
    ) in found
    assert any(p.startswith("missing tool deno: install PyPI package deno into .venv") for p in found), found
    assert any(p.startswith("missing tool supabase: install npm package supabase") for p in found), found
    assert any(p.startswith("missing tool jupyterlab (python -m jupyterlab in .venv)") for p in found), found
    assert any(
        p.startswith("missing Debian package postgresql-15-wal2json (wal2json: no /nonexistent/wal2json.so)")
        for p in found
    ), found
    assert not any("tool sh" in p for p in found)
    assert len(found) == 5


def test_the_check_command_fails_with_the_message(tmp_path):
    toml = tmp_path / "tools.toml"
    toml.write_text('[tools]\nfrobnicate = { apt = "frobnicate-utils", path = "/nonexistent/frobnicate" }\n')
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_tools.py"), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RACKPILOT_TOOLS_FILE": str(toml)},
    )
    assert res.returncode == 1
    assert (
        "missing tool frobnicate at /nonexistent/frobnicate: install Debian package frobnicate-utils"
        in res.stderr
    )
    assert "apt-get install -y frobnicate-utils" in res.stderr
