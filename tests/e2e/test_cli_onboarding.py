"""Onboarding a site from the command line, end to end on the local stack and the iDRAC lab.

The ``rackpilot`` client (console/cli.py) signs in as a user - never with the service key -
and goes through the same REST calls and edge functions as the console: an admin creates
the site, sees its executor alive, seals the iDRAC credential (the secret on standard
input), registers the server and re-keys nothing; an operator creates a power job and
watches it to completion over Realtime. Each run is a real ``python -m console.cli``
process; the transcript is printed (pytest -s shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from devstack.cli import add_user
from devstack.lab.idrac import Lab, LabThread
from tests.e2e.executor_harness import ROOT, Harness, wait_until

# the credential binding work seals the endpoints with the secret; before it, there are none to name
BINDING = (ROOT / "supabase" / "functions" / "_shared" / "endpoints.ts").exists()


@pytest.fixture
def env(stack):
    tmp = Path(tempfile.mkdtemp(prefix="rackpilot-cli-"))
    h = Harness(stack, tmp)
    lab = Lab(2, time_scale=400.0)
    lt = LabThread(lab)
    lt.start()
    try:
        yield h, lab
    finally:
        h.close()
        lt.stop()
        if not os.environ.get("RACKPILOT_TEST_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


class User:
    def __init__(self, h: Harness, role: str):
        self.email = f"cli-{role}-{uuid.uuid4().hex[:8]}@rackpilot.test"
        self.password = f"pw-{uuid.uuid4().hex}"
        add_user(h.stack, self.email, role, self.password)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RACKPILOT_", "SUPABASE_"))}
        self.env.update(
            {
                "SUPABASE_URL": h.env["SUPABASE_URL"],
                "SUPABASE_ANON_KEY": h.env["SUPABASE_ANON_KEY"],
                "RACKPILOT_CONSOLE_EMAIL": self.email,
                "RACKPILOT_CONSOLE_PASSWORD": self.password,
            }
        )
        self.role = role

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [sys.executable, "-m", "console.cli", *args],
            env={**self.env, **env},
            cwd=ROOT,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        print(f"\n[{self.role}] $ rackpilot {' '.join(args)}" + (" <<< (secret on stdin)" if stdin else ""))
        print(res.stdout.rstrip())
        if res.stderr.strip():
            print(res.stderr.rstrip())
        print(f"(exit {res.returncode})")
        return res


def test_onboarding_from_the_command_line(env):
    h, lab = env
    admin, operator = User(h, "admin"), User(h, "operator")
    site = f"cli-{uuid.uuid4().hex[:8]}"

    res = admin.run("site", "add", site, "--description", "onboarded from the command line")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["name"] == site
    assert operator.run("site", "add", f"{site}-op").returncode == 1  # RLS: sites are for admins

    ex = h.spawn("cli-ex", site=site, target_time_scale=50)
    ex.wait_log('"msg":"registered"', timeout=60)
    res = admin.run("executor", "list", "--site", site)
    assert res.returncode == 0 and "cli-ex" in res.stdout and "healthy" in res.stdout
    res = admin.run("executor", "status", f"{site}/cli-ex")
    status = json.loads(res.stdout)
    assert status["health"] == "healthy" and status["version"] and status["key_id"].startswith("x25519:")

    url = lab.url(0)
    seal_args = [
        "credentials",
        "seal",
        "--site",
        site,
        "--name",
        "idrac-root",
        "--kind",
        "idrac",
        "--username",
        "root",
    ]
    if BINDING:
        seal_args += ["--endpoint", url, "--allow-plain-http"]
    secret = "calvin"
    res = admin.run(*seal_args, stdin=secret + "\n")
    assert res.returncode == 0, res.stderr
    sealed = json.loads(res.stdout)
    assert sealed["key_ids"] == [status["key_id"]] and secret not in res.stdout + res.stderr
    # no secret on the command line: there is no option for it
    assert admin.run(*seal_args, "--secret", secret).returncode == 2
    # operators may not seal
    assert (
        operator.run(*[a if a != "idrac-root" else "idrac-2" for a in seal_args], stdin="x\n").returncode == 1
    )

    res = admin.run(
        "server",
        "add",
        "--site",
        site,
        "--name",
        "srv1",
        "--idrac",
        url,
        "--credential",
        "idrac-root",
        "--allow-plain-http",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["credential_set_id"] == sealed["credential_set_id"]
    # a credential set the site does not have: refused in words, nothing written
    res = admin.run(
        "server", "add", "--site", site, "--name", "srv2", "--idrac", url, "--credential", "nope",
        "--allow-plain-http",
    )  # fmt: skip
    assert (
        res.returncode == 1
        and f"site {site} has no credential set 'nope' (rackpilot credentials seal)" in res.stderr
    )
    res = admin.run(*[a if a != "idrac-root" else "nope" for a in seal_args], "--reseal", stdin="x\n")
    assert res.returncode == 1 and f"site {site} has no credential set 'nope' to reseal" in res.stderr
    assert h.query("select 1 from public.servers where name = 'srv2' and idrac_address = %s", url) == []

    lab.bmcs[0].power_state = "On"
    res = operator.run(
        "job",
        "create",
        "power_operation",
        "--site",
        site,
        "--server",
        "srv1",
        "--param",
        "action=force_off",
        "--watch",
        "--timeout",
        "90",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(line.startswith("step") and "completed" in line for line in lines)
    assert lines[-1].startswith("job       completed")
    job_id = json.loads(res.stdout[: res.stdout.index("\n}") + 2])["job_id"]
    wait_until(lambda: lab.bmcs[0].power_state == "Off", 10, "the BMC to be off")

    # watching a finished job ends at once with its outcome
    res = operator.run("job", "watch", job_id)
    assert res.returncode == 0 and "job       completed" in res.stdout

    # never the service key
    res = admin.run("site", "list", SUPABASE_ANON_KEY=h.env["SUPABASE_SERVICE_ROLE_KEY"])
    assert res.returncode == 2 and "never uses the service key" in res.stderr
    assert ex.terminate() == 0


def test_rekey_from_the_command_line(env):
    h, _ = env
    admin = User(h, "admin")
    a = h.spawn("cli-rk")
    a.wait_log('"msg":"registered"')
    b = h.spawn("cli-rk-new", executor_name="cli-rk")
    assert b.proc.wait(timeout=60) == 2
    new_kid = json.loads(
        subprocess.run(
            [sys.executable, "-m", "executor", "--show-public-key"],
            env=b.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )["key_id"]
    assert f"rackpilot executor rekey {h.site_name}/cli-rk --key-id {new_kid}" in b.log_text()
    res = admin.run(
        "executor", "rekey", f"{h.site_name}/cli-rk", "--key-id", new_kid, "--reason", "host rebuilt"
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["accepts_key_id"] == new_kid and out["reseal"] == []
    res = admin.run("executor", "status", f"{h.site_name}/cli-rk")
    assert json.loads(res.stdout)["rekey_key_id"] == new_kid
    b2 = h.spawn("cli-rk-new", executor_name="cli-rk")
    b2.wait_log('"msg":"registered"')
    assert a.proc.wait(timeout=30) == 2
    assert b2.terminate() == 0
    # refusals come back in the control plane's words, exit 1
    res = admin.run("executor", "rekey", f"{h.site_name}/cli-rk", "--key-id", new_kid, "--reason", "again")
    assert res.returncode == 1 and "is already bound to key" in res.stderr
