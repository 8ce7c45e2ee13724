"""Packaging and install of the executor.

* The package carries everything the executor reads: the safety policy is package data
  (executor/data/safety.yaml, a link to policies/safety.yaml that the build copies in), and
  the default RACKPILOT_POLICY_PATH points at it.
* The unit passes ``systemd-analyze verify`` (Debian's systemd), on a scratch root holding
  the paths it names.
* The install steps in the unit's header are in an order that works: every file they copy
  exists in the repository, folders exist before files go in, the state folder exists
  before ``--check-config`` runs as the service user with the env file the unit reads, and
  the documentation the unit names is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "rackpilot-executor.service"


def test_the_safety_policy_is_package_data_and_the_default(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("executor", "devstack", "console", "policies"):
        shutil.copytree(ROOT / pkg, src / pkg, symlinks=True, ignore=ignore)
    # what a wheel holds is what build_py lays out (bdist_wheel packs that folder)
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(tmp_path / "lib"),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    built = tmp_path / "lib" / "executor" / "data" / "safety.yaml"
    assert built.is_file() and not built.is_symlink()
    assert built.read_bytes() == (ROOT / "policies" / "safety.yaml").read_bytes()

    from executor.config import ExecutorSettings

    default = ExecutorSettings.model_fields["policy_path"].default
    assert default == ROOT / "executor" / "data" / "safety.yaml" and default.is_file()
    assert default.resolve() == (ROOT / "policies" / "safety.yaml").resolve()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_passes_on_the_unit(tmp_path):
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    python = root / "opt" / "rackpilot" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    (root / "etc" / "rackpilot").mkdir()
    (root / "etc" / "rackpilot" / "executor.env").write_text("")
    unit = root / "etc" / "systemd" / "system" / UNIT.name
    shutil.copy(UNIT, unit)
    res = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stderr + res.stdout


def _install_steps() -> list[list[str]]:
    text = UNIT.read_text()
    block = text[text.index("# Install") : text.index("[Unit]")]
    steps = []
    for line in block.splitlines():
        m = re.match(r"#   (\S.*)$", line)
        if m:
            for part in m.group(1).split("&&"):
                steps.append(shlex.split(part))
    return steps


def _directive(name: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^{name}=(.*)$", UNIT.read_text(), re.M)]


def test_the_install_steps_are_complete_and_in_order():
    steps = _install_steps()
    words = [s[0] for s in steps]
    assert words[0] == "apt-get" and "python3-venv" in steps[0]
    made_dirs: set[str] = set()
    installed: set[str] = set()
    order: dict[str, int] = {}
    for i, argv in enumerate(steps):
        if argv[0] == "useradd":
            order["user"] = i
        if argv[0] == "install":
            args = [a for a in argv[1:]]
            flags_with_value = {"-m", "-o", "-g"}
            plain = []
            skip = False
            for a in args:
                if skip:
                    skip = False
                    continue
                if a in flags_with_value:
                    skip = True
                    continue
                plain.append(a)
            if "-d" in plain:
                made_dirs.update(p for p in plain if p != "-d")
                if "/var/lib/rackpilot-executor" in plain:
                    order["state_dir"] = i
                continue
            *sources, dest = plain
            for src in sources:
                assert (ROOT / src).is_file(), f"install step copies {src}, which the repository lacks"
            parent = dest if dest.endswith("/") else str(Path(dest).parent)
            assert parent.rstrip("/") in made_dirs or parent.rstrip("/") in ("/etc/systemd/system",), (
                f"{dest}: its folder is not created before (step {i}: {' '.join(argv)})"
            )
            for src in sources:
                installed.add(dest + Path(src).name if dest.endswith("/") else dest)
            if "-o" in args:
                assert order.get("user", 1 << 30) < i, "a file is owned by the service user before it exists"
        if "--check-config" in argv:
            order["check"] = i
            assert argv[:3] == ["runuser", "-u", "rackpilot"], "check as the user the service runs as"
            env_file = argv[argv.index("--env-file") + 1]
            assert env_file in installed and env_file in _directive("EnvironmentFile")
        if argv[:2] == ["systemctl", "enable"]:
            order["enable"] = i
    assert order["user"] < order["state_dir"] < order["check"] < order["enable"]
    assert "/etc/systemd/system/rackpilot-executor.service" in installed
    for uri in " ".join(_directive("Documentation")).split():
        assert uri.startswith("file://") and uri[len("file://") :] in installed, (
            f"Documentation={uri} is not installed"
        )
    # the unit's own paths agree with the steps
    assert _directive("User") == ["rackpilot"] and _directive("StateDirectory") == ["rackpilot-executor"]
    assert any(
        "--check-config" in x and "/etc/rackpilot/executor.env" in x for x in _directive("ExecStartPre")
    )
