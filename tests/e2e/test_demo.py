"""`make demo`'s run-once mode, end to end, on a stack and lab of its own.

The demo is rackpilot's main job: a rolling cluster firmware update on the simulated data
centre, driven through the edge functions, REST and Realtime with the official clients,
checked against the safety invariants and the audit chain. This test runs it exactly as
`rackpilot demo --once` does and holds it to its own report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.stack.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_main_job_once_and_exits_zero():
    state = Path(tempfile.mkdtemp(prefix="rackpilot-demo-"))
    os.chmod(state, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RACKPILOT_", "SUPABASE_"))}
    env.update({"RACKPILOT_STACK_DIR": str(state), "RACKPILOT_API_PORT": str(free_port()),
                "RACKPILOT_DB_PORT": str(free_port())})
    try:
        proc = subprocess.run([sys.executable, "-m", "devstack.cli", "demo", "--once"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        for line in ("SUPABASE_URL=", "SUPABASE_ANON_KEY=", "SUPABASE_SERVICE_ROLE_KEY=", "SUPABASE_DB_URL="):
            assert line in out
        assert "self-approval refused" in out
        assert "\u2713 invariants" in out and "hash chain verified" in out
        result = json.loads(re.search(r"main job OK: (\{.*\})", out).group(1))
        assert result["hosts_updated"] == 4 and result["components_updated"] >= 4
        # run-once stops what it started: no gateway, no Postgres, no executor left behind
        status = subprocess.run([sys.executable, "-m", "devstack.cli", "dev", "status"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["gateway"] == "stopped"
        assert json.loads(status.stdout)["postgres"] == "stopped"
        # the demo users' passwords stay in the state folder, never in the output
        passwords = json.loads((state / "demo-users.json").read_text())
        assert (state / "demo-users.json").stat().st_mode & 0o077 == 0
        assert not any(pw in out for pw in passwords.values())
    finally:
        subprocess.run([sys.executable, "-m", "devstack.cli", "dev", "destroy"], cwd=ROOT, env=env,
                       capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
