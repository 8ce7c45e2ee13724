#!/usr/bin/env python3
"""Checks that every external program rackpilot runs is present (the list: scripts/tools.toml).

    check_tools.py check          every tool and package present? Otherwise name each missing one
                                  with the package that provides it, and exit 1
    check_tools.py apt-missing    the Debian packages scripts/setup.sh must install (one line)
    check_tools.py apt-packages   every Debian package the list names (one per line)

Standard library only (Python >= 3.11 for tomllib): setup.sh runs it before .venv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS_FILE = Path(os.environ.get("RACKPILOT_TOOLS_FILE") or ROOT / "scripts" / "tools.toml")  # the env: tests
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # not on a non-root user's PATH, but where sshd & co live
PROBE_TIMEOUT_S = 30
SOURCES = ("apt", "pip", "npm")


@dataclass(frozen=True)
class Tool:
    name: str
    source: str  # apt | pip | npm
    package: str
    path: str | None = None
    module: bool = False
    aliases: tuple[str, ...] = ()
    probe: tuple[str, ...] = ()
    when: str | None = None  # root | non-root
    any_vendor: bool = False
    indirect: str | None = None
    used_by: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def applies(self, euid: int) -> bool:
        return self.when is None or (self.when == "root") == (euid == 0)


@dataclass(frozen=True)
class Package:
    """A Debian package that puts no program on PATH; `file` proves it is installed."""

    name: str
    package: str
    file: str
    used_by: str = ""


@dataclass(frozen=True)
class Dynamic:
    file: str
    expr: str
    why: str


@dataclass
class Inventory:
    tools: dict[str, Tool] = field(default_factory=dict)
    packages: dict[str, Package] = field(default_factory=dict)
    dynamic: list[Dynamic] = field(default_factory=list)

    def tool_named(self, name: str) -> Tool | None:
        for tool in self.tools.values():
            if name in tool.names:
                return tool
        return None

    def apt_packages(self) -> list[str]:
        """Every Debian package named, in file order, without repeats."""
        names = [t.package for t in self.tools.values() if t.source == "apt"]
        names += [p.package for p in self.packages.values()]
        return list(dict.fromkeys(names))


def load(path: Path | None = None) -> Inventory:
    path = path or TOOLS_FILE
    data = tomllib.loads(path.read_text())
    inv = Inventory()
    known = {"path", "module", "aliases", "probe", "when", "any_vendor", "indirect", "used_by", *SOURCES}
    for name, spec in data.get("tools", {}).items():
        sources = [s for s in SOURCES if s in spec]
        if len(sources) != 1:
            raise ValueError(f"{path.name}: tool {name} needs exactly one of apt/pip/npm, has {sources}")
        if unknown := set(spec) - known:
            raise ValueError(f"{path.name}: tool {name} has unknown keys {sorted(unknown)}")
        if spec.get("when") not in (None, "root", "non-root"):
            raise ValueError(f"{path.name}: tool {name}: when must be root or non-root")
        inv.tools[name] = Tool(
            name=name,
            source=sources[0],
            package=spec[sources[0]],
            path=spec.get("path"),
            module=bool(spec.get("module")),
            aliases=tuple(spec.get("aliases", ())),
            probe=tuple(spec.get("probe", ())),
            when=spec.get("when"),
            any_vendor=bool(spec.get("any_vendor")),
            indirect=spec.get("indirect"),
            used_by=spec.get("used_by", ""),
        )
    for name, spec in data.get("packages", {}).items():
        if set(spec) - {"apt", "file", "used_by"} or "apt" not in spec or "file" not in spec:
            raise ValueError(f"{path.name}: package {name} needs apt and file (and optionally used_by)")
        inv.packages[name] = Package(
            name=name, package=spec["apt"], file=spec["file"], used_by=spec.get("used_by", "")
        )
    for spec in data.get("dynamic", []):
        inv.dynamic.append(Dynamic(file=spec["file"], expr=spec["expr"], why=spec["why"]))
    return inv


# --- checking ----------------------------------------------------------------------------
def locate(tool: Tool, root: Path = ROOT) -> str | None:
    """The program's path, or None when it is not there."""
    if tool.path:
        p = Path(tool.path) if tool.path.startswith("/") else root / tool.path
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    if tool.source == "pip":
        p = root / ".venv" / "bin" / tool.name
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    if tool.source == "npm":
        p = root / "node_modules" / ".bin" / tool.name
        return str(p) if p.exists() and os.access(p, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(tool.name, path=search)


def missing_modules(modules: list[str], root: Path = ROOT) -> list[str]:
    """Of these modules, the ones .venv's Python cannot find (one interpreter start for all)."""
    if not modules:
        return []
    python = root / ".venv" / "bin" / "python"
    if not python.exists():
        return list(modules)
    code = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    res = subprocess.run(
        [str(python), "-c", code, *modules], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
    )
    if res.returncode != 0:
        return list(modules)
    return res.stdout.split()


def probe_ok(tool: Tool, exe: str) -> bool:
    argv = [exe, *tool.probe[1:]]
    try:
        return subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT_S).returncode == 0
    except OSError:
        return False


def how_to_install(source: str, package: str) -> str:
    if source == "apt":
        return f"install Debian package {package} (apt-get install {package}, or run scripts/setup.sh)"
    if source == "pip":
        return (
            f"install PyPI package {package} into .venv "
            f"(it is in pyproject.toml: run scripts/setup.sh, or .venv/bin/pip install -e '.[dev]')"
        )
    return f"install npm package {package} (it is in package.json: run scripts/setup.sh, or npm ci)"


def problems(inv: Inventory, root: Path = ROOT, euid: int | None = None) -> list[str]:
    """One line per missing or broken tool or package, naming what provides it."""
    euid = os.geteuid() if euid is None else euid
    out: list[str] = []
    tools = [t for t in inv.tools.values() if t.applies(euid)]
    gone = set(missing_modules([t.name for t in tools if t.module], root))
    for tool in tools:
        if tool.module:
            if tool.name in gone:
                out.append(
                    f"missing tool {tool.name} (python -m {tool.name} in .venv): "
                    + how_to_install(tool.source, tool.package)
                )
            continue
        exe = locate(tool, root)
        where = f" at {tool.path}" if tool.path else ""
        if exe is None:
            out.append(f"missing tool {tool.name}{where}: " + how_to_install(tool.source, tool.package))
        elif tool.probe and not probe_ok(tool, exe):
            out.append(
                f"tool {tool.name} ({exe}) fails its check `{' '.join(tool.probe)}`: "
                + how_to_install(tool.source, tool.package)
            )
    for pkg in inv.packages.values():
        if not Path(pkg.file).exists():
            out.append(
                f"missing Debian package {pkg.package} ({pkg.name}: no {pkg.file}): "
                f"apt-get install {pkg.package}, or run scripts/setup.sh"
            )
    return out


def dpkg_installed(packages: list[str]) -> set[str]:
    """The packages dpkg reports as installed (one dpkg-query call for all)."""
    if not packages:
        return set()
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages], capture_output=True, text=True
    )
    installed = set()
    for line in res.stdout.splitlines():
        name, _, status = line.partition(" ")
        if status.strip() == "install ok installed":
            installed.add(name.split(":")[0])
    return installed


def apt_missing(inv: Inventory, root: Path = ROOT, euid: int | None = None) -> list[str]:
    """The Debian packages setup must install: named by an entry that applies here and not
    installed — except any_vendor packages when all any_vendor programs are present and pass
    their probes (Node.js from another vendor)."""
    euid = os.geteuid() if euid is None else euid
    tools = [t for t in inv.tools.values() if t.source == "apt" and t.applies(euid)]
    wanted = list(dict.fromkeys([t.package for t in tools] + [p.package for p in inv.packages.values()]))
    installed = dpkg_installed(wanted)
    vendor = [t for t in tools if t.any_vendor]
    located = [(t, locate(t, root)) for t in vendor]
    vendor_ok = all(exe and (not t.probe or probe_ok(t, exe)) for t, exe in located)
    out = []
    for pkg in wanted:
        if pkg in installed:
            continue
        users = [t for t in tools if t.package == pkg]
        if users and all(t.any_vendor for t in users) and vendor_ok:
            continue
        out.append(pkg)
    return out


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "check"
    inv = load()
    if cmd == "apt-packages":
        print("\n".join(inv.apt_packages()))
        return 0
    if cmd == "apt-missing":
        print(" ".join(apt_missing(inv)))
        return 0
    if cmd == "check":
        found = problems(inv)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            apt = sorted(
                {ln.split("Debian package ", 1)[1].split()[0] for ln in found if "Debian package " in ln}
            )
            if apt:
                print(f"(all Debian packages at once: apt-get install -y {' '.join(apt)})", file=sys.stderr)
            print(f"{len(found)} missing (the list: scripts/tools.toml)", file=sys.stderr)
            return 1
        if "-q" not in argv:
            print(f"all {len(inv.tools)} tools and {len(inv.packages)} packages present", file=sys.stderr)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
