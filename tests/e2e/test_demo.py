"""`make demo`'s run-once mode, end to end, on a stack and lab of its own.

The demo is rackpilot's main job: on a simulated data centre of two vCenter clusters of four
PowerEdge hosts (iDRACs, OME, firmware repository) it syncs vCenter, refreshes the Dell
inventory, reports firmware compliance, then rolls one cluster's firmware. The rollout
pauses on real blockers (a VM with a connected CD-ROM, a VM with USB passthrough); the
operator decides through ``resolve-blockers`` (power the CD-ROM VM off and back on, skip the
USB VM's host) and the job completes. The closing summary per host, the safety invariants
and the audit chain follow; beside the rollout a ZFS pair (two storage hosts behind a real
sshd) is registered and synced once, and the summary reports it. This test runs it exactly
as `rackpilot demo --once` does and holds it to its own report; interactive mode's
JupyterLab gets a test of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

from devstack.stack.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Processes (other than this one) whose command line or environment names ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if text.encode() in cmdline or text.encode() in environ:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]))
    return found


def test_demo_runs_the_main_job_once_and_exits_zero():
    state = Path(tempfile.mkdtemp(prefix="rackpilot-demo-"))
    os.chmod(state, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RACKPILOT_", "SUPABASE_"))}
    env.update(
        {
            "RACKPILOT_STACK_DIR": str(state),
            "RACKPILOT_API_PORT": str(free_port()),
            "RACKPILOT_DB_PORT": str(free_port()),
        }
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "devstack.cli", "demo", "--once"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        for line in ("SUPABASE_URL=", "SUPABASE_ANON_KEY=", "SUPABASE_SERVICE_ROLE_KEY=", "SUPABASE_DB_URL="):
            assert line in out
        # two clusters of four, every server registered, the read-only jobs before the rollout
        assert re.search(
            r"\u2713 lab \u2014 .*prod-a \(4 ESXi hosts\), prod-b \(4 ESXi hosts\) on 8 simulated "
            r"iDRACs, OpenManage Enterprise http",
            out,
        ), out[-4000:]
        assert "OME and 8 PowerEdge servers of 2 clusters registered" in out
        # the ZFS pair: two storage hosts behind a real sshd, the SSH login sealed with their pinned
        # host keys, the pair registered by the admin, one replication_sync created by the operator
        assert re.search(
            r"\u2713 zfs lab \u2014 storage hosts zfs1 \(127\.0\.0\.1:\d+\) and zfs2 \(127\.0\.0\.1:\d+\)",
            out,
        ), out[-4000:]
        assert re.search(
            r"\u2713 replication pair \u2014 vm-store: zfs1:tank/vm \u2192 zfs2:backup/vm .*registered by the "
            r"admin",
            out,
        )
        assert re.search(r"\u2713 replication_sync \u2014 job \w+ created by operator@rackpilot.local", out)
        assert re.search(
            r"\u2713 vcenter_sync \u2014 .*prod-a 4 hosts \(4 linked.*prod-b 4 hosts \(4 linked", out
        )
        assert "8/8 iDRACs read" in out
        assert re.search(r"\u2713 firmware_compliance \(before\) \u2014 .*prod-a 0 compliant, 4 with", out)
        assert "self-approval refused" in out
        # the rollout paused on the two blocker VMs, before touching anything
        assert "\u2713 blockers \u2014 the job paused before touching the cluster" in out
        assert re.search(r"build-iso on prod-a-esx01: .*\[cdrom_connected\]", out)
        assert re.search(r"license-dongle on prod-a-esx03: .*\[usb_passthrough\]", out)
        assert re.search(
            r"\u2713 resolve-blockers \u2014 operator@rackpilot.local decided build-iso \u2192 "
            r"power_off_vm, license-dongle \u2192 skip_host; job resumed",
            out,
        )
        result = json.loads(re.search(r"main job OK: (\{.*\})", out).group(1))
        assert result["paused_for_blockers"] is True and result["blockers"] == 2
        assert result["decisions"] == {"build-iso": "power_off_vm", "license-dongle": "skip_host"}
        assert (
            result["hosts_updated"] == 3
            and result["hosts_skipped"] == 1
            and result["components_updated"] >= 3
        )
        # after the rollout, compliance tells the skipped host and the other cluster apart
        assert re.search(
            r"firmware_compliance \(after\) \u2014 .*prod-a 3 compliant, 1 with \d+ updates available; "
            r"prod-b 0 compliant, 4 with",
            out,
        )
        # the summary, per host: versions before -> after, time in maintenance, blockers and decisions
        summary = out[out.index("\u2713 summary") : out.index("\u2713 invariants")]
        hosts = dict(re.findall(r"^      (prod-a-esx0\d)  (.*)$", summary, re.M))
        assert sorted(hosts) == [f"prod-a-esx0{i}" for i in range(1, 5)], summary
        for h in ("prod-a-esx01", "prod-a-esx02", "prod-a-esx04"):
            assert re.match(r"updated, \d+\.\d s in maintenance", hosts[h]), (h, hosts[h])
        assert hosts["prod-a-esx03"].startswith("skipped (skip_host decision), never in maintenance")
        assert re.search(
            r"blocker  build-iso: .* \u2192 power_off_vm by operator@rackpilot.local .*build-iso is "
            r"powered on again",
            summary,
        )
        assert re.search(r"blocker  license-dongle: .* \u2192 skip_host by operator@rackpilot.local", summary)
        assert len(re.findall(r"firmware BIOS \S+ \u2192 \S+;", summary)) == 3
        assert re.search(r"firmware BIOS [^\u2192\n]* \(unchanged\)", summary)
        assert "prod-b: not part of this job; firmware unchanged, no host in maintenance" in summary
        # ... and the pair synced: bytes, lag, last success
        assert re.search(
            r"replication vm-store  zfs1:tank/vm \u2192 zfs2:backup/vm: succeeded \(full\), \d+\.\d MB in "
            r"\d+\.\d s, lag \d+ s \(max 3600 s\), last success \d\d:\d\d:\d\dZ, snapshot "
            r"backup/vm@rackpilot_",
            summary,
        ), summary
        assert result["replication"]["status"] == "succeeded" and result["replication"]["bytes"] > 2_000_000
        assert 0 <= result["replication"]["lag_seconds"] <= 120
        # it ends with the safety invariants and the audit chain
        tail = out[out.index("\u2713 invariants") :]
        assert "no host in maintenance before its blockers were decided" in tail
        assert "\u2713 audit" in tail and "hash chain verified" in tail
        assert tail.index("\u2713 audit") < tail.index("main job OK")
        # run-once stops what it started: no gateway, no Postgres, no executor, lab or Jupyter left behind
        status = subprocess.run(
            [sys.executable, "-m", "devstack.cli", "dev", "status"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(status.stdout)["gateway"] == "stopped"
        assert json.loads(status.stdout)["postgres"] == "stopped"
        assert processes_mentioning(str(state)) == []  # the storage hosts' sshd and its sessions included
        assert not list((state / "demo-zfs").iterdir())  # the ZFS lab's folder (keys, datasets) is gone
        # the demo users' passwords stay in the state folder, never in the output
        passwords = json.loads((state / "demo-users.json").read_text())
        assert (state / "demo-users.json").stat().st_mode & 0o077 == 0
        assert not any(pw in out for pw in passwords.values())
    finally:
        subprocess.run(
            [sys.executable, "-m", "devstack.cli", "dev", "destroy"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(state, ignore_errors=True)


def test_demo_jupyter_serves_the_notebooks_as_an_operator_and_stops(tmp_path):
    """Interactive mode's JupyterLab: a copy of the notebooks, the token in the URL, only the
    public URL and anon key in its environment, gone after stop()."""
    from devstack.demo import Jupyter

    st = SimpleNamespace(cfg=SimpleNamespace(state_dir=tmp_path, project_root=ROOT))
    env = {
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_ANON_KEY": "anon-key-for-test",
        "SUPABASE_SERVICE_ROLE_KEY": "service-key-never-in-jupyter",
        "SUPABASE_DB_URL": "postgresql://never",
    }
    j = Jupyter(st, env, port=free_port())
    try:
        assert sorted(p.name for p in j.root.glob("*.ipynb")) == sorted(
            p.name for p in (ROOT / "notebooks").glob("*.ipynb")
        )
        child_env = (Path(f"/proc/{j.proc.pid}/environ").read_bytes()).split(b"\0")
        assert (
            b"SUPABASE_URL=http://127.0.0.1:9" in child_env
            and b"SUPABASE_ANON_KEY=anon-key-for-test" in child_env
        )
        assert not [
            v
            for v in child_env
            if v.startswith(
                (b"SUPABASE_SERVICE_ROLE_KEY=", b"SUPABASE_DB_URL=", b"RACKPILOT_CONSOLE_PASSWORD=")
            )
        ]
        j.wait_ready(60)
        assert j.url.endswith(f"/lab/tree/03_blockers.ipynb?token={j.token}")
        base = j.url.split("/lab/")[0]
        assert (
            httpx.get(
                f"{base}/api/contents/03_blockers.ipynb?content=0&token={j.token}", timeout=10
            ).status_code
            == 200
        )
        assert httpx.get(f"{base}/api/contents/03_blockers.ipynb?content=0", timeout=10).status_code == 403
    finally:
        j.stop()
    assert j.proc.poll() is not None
    deadline = time.monotonic() + 10
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel-less server exits with its process; nothing else may linger
    assert processes_mentioning(str(tmp_path)) == []
