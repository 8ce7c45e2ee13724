"""supabase-js's Realtime presence and HTTP broadcast against the local stack, through Deno
(the npm cache and lock of supabase/functions; see realtime_js_client.ts)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("realtime_js_client.ts")
DENO = ROOT / ".venv" / "bin" / "deno"


def test_supabase_js_presence_http_send_and_rest_fallback(supabase_env):
    env = {
        **os.environ,
        **supabase_env,
        "RT_TOPIC": f"rt-js-{uuid.uuid4().hex[:8]}",
        "DENO_DIR": os.environ.get("DENO_DIR", str(ROOT / ".cache" / "deno")),
    }
    fn = ROOT / "supabase" / "functions"
    res = subprocess.run(
        [
            str(DENO),
            "run",
            "--frozen",
            "--config",
            str(fn / "deno.json"),
            "--lock",
            str(fn / "deno.lock"),
            "--allow-env",
            "--allow-net",
            str(SCRIPT),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {
        "track": "ok",
        "state": {"alice": ["online"]},
        "untrack": "ok",
        "httpSend": {"success": True},
        "send": "ok",
        "broadcasts": [["hello", 1], ["rest", 2]],
    }
