"""Executor building blocks that need no control plane: config, keys, envelopes, redaction,
error classification, notification rendering."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from postgrest.exceptions import APIError
from pydantic import ValidationError

from executor import secrets as sec
from executor.config import ExecutorSettings
from executor.control import classify
from executor.log import SECRETS, SecretRegistry, setup_logging
from executor.notify import render, teams_card

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "RACKPILOT_SUPABASE_URL": "http://127.0.0.1:1",
    "RACKPILOT_SUPABASE_KEY": "service-key-xyz",
    "RACKPILOT_SITE": "lab",
}


def settings(monkeypatch, tmp_path, **env) -> ExecutorSettings:
    for k, v in {**BASE, "RACKPILOT_STATE_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(k, v)
    return ExecutorSettings()


def test_settings_defaults_and_derived_key_path(monkeypatch, tmp_path):
    s = settings(monkeypatch, tmp_path)
    assert s.poll_interval == 5.0 and s.max_concurrent_jobs == 4 and s.heartbeat_interval == 10.0
    assert s.key_path == tmp_path / "executor_key.pem"
    assert s.supabase_key.get_secret_value() == "service-key-xyz" and "service-key-xyz" not in repr(s)


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"RACKPILOT_SUPABASE_URL": "ftp://x"}, "supabase_url"),
        ({"RACKPILOT_HEARTBEAT_INTERVAL": "20"}, "heartbeat_interval"),
        ({"RACKPILOT_MAX_CONCURRENT_JOBS": "0"}, "max_concurrent_jobs"),
        ({"RACKPILOT_POLL_INTERVAL": "-1"}, "poll_interval"),
    ],
)
def test_settings_reject_bad_values(monkeypatch, tmp_path, env, needle):
    with pytest.raises(ValidationError, match=needle):
        settings(monkeypatch, tmp_path, **env)


def _cli(args, env, cwd=ROOT):
    full = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "executor", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_validates_without_starting(tmp_path):
    envfile = tmp_path / "executor.env"
    envfile.write_text(
        "RACKPILOT_SUPABASE_URL=https://example.supabase.co\nRACKPILOT_SUPABASE_KEY=sekrit-key\n"
        "RACKPILOT_SITE=lab\n"
    )
    os.chmod(envfile, 0o640)  # it holds the service key: 0644 is refused
    ok = _cli(["--check-config", "--env-file", str(envfile)], {"RACKPILOT_STATE_DIR": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["ok"] and out["settings"]["site"] == "lab" and "sekrit-key" not in ok.stdout
    assert not (tmp_path / "executor_key.pem").exists()  # nothing was started or generated

    bad = _cli(
        ["--check-config"],
        {
            "RACKPILOT_SUPABASE_URL": "nope",
            "RACKPILOT_SUPABASE_KEY": "sekrit-key",
            "RACKPILOT_STATE_DIR": str(tmp_path),
        },
    )
    assert bad.returncode == 2
    assert "RACKPILOT_SUPABASE_URL" in bad.stderr and "RACKPILOT_SITE" in bad.stderr
    assert "Traceback" not in bad.stderr and "sekrit-key" not in bad.stderr


def test_key_pair_created_0600_and_loose_permissions_refused(tmp_path):
    path = tmp_path / "state" / "key.pem"
    kp, created = sec.load_or_create(path)
    assert created and oct(path.stat().st_mode & 0o777) == "0o600"
    kp2, created2 = sec.load_or_create(path)
    assert not created2 and kp2.public_raw == kp.public_raw
    os.chmod(path, 0o640)
    with pytest.raises(sec.KeyFilePermissionError, match="chmod 600"):
        sec.load_or_create(path)
    env = {**BASE, "RACKPILOT_STATE_DIR": str(tmp_path), "RACKPILOT_PRIVATE_KEY_PATH": str(path)}
    res = _cli([], env)
    assert res.returncode == 2 and "chmod 600" in res.stderr


def test_envelope_round_trip_and_failures(tmp_path):
    kp, _ = sec.load_or_create(tmp_path / "k.pem")
    other, _ = sec.load_or_create(tmp_path / "o.pem")
    env = sec.seal(kp.public_raw, {"password": "hunter2-very-secret"})
    assert env["kid"] == kp.kid and set(env) == {"v", "alg", "kid", "epk", "nonce", "ct"}
    assert kp.open(json.dumps(env)) == {"password": "hunter2-very-secret"}
    assert SECRETS.redact("pw=hunter2-very-secret") == "pw=***"
    with pytest.raises(sec.EnvelopeError, match="sealed to key"):
        other.open(env)
    tampered = dict(env, ct=env["ct"][:-2] + ("A" if env["ct"][-2] != "A" else "B") + env["ct"][-1])
    with pytest.raises(sec.EnvelopeError, match="authentication"):
        kp.open(tampered)
    with pytest.raises(sec.EnvelopeError, match="version"):
        kp.open(dict(env, v=2))
    with pytest.raises(sec.EnvelopeError, match="not JSON"):
        kp.open("{nope")


def test_envelope_sealed_by_the_edge_function_code_opens(tmp_path):
    """Cross-check with supabase/functions/_shared/envelope.ts, run by the real Deno."""
    deno = ROOT / ".venv" / "bin" / "deno"
    ts = ROOT / "supabase" / "functions" / "_shared" / "envelope.ts"
    if not deno.exists() or not ts.exists():
        pytest.skip("deno or envelope.ts not present")
    kp, _ = sec.load_or_create(tmp_path / "k.pem")
    script = tmp_path / "seal.ts"
    script.write_text(
        f'import {{ seal, parsePublicKey }} from "{ts.as_uri()}";\n'
        f'console.log(JSON.stringify(await seal(parsePublicKey("{kp.public_b64}"), '
        f'{{password: "from-deno-secret"}})));\n'
    )
    res = subprocess.run(
        [str(deno), "run", "--no-lock", "--no-remote", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DENO_DIR": str(ROOT / ".cache" / "deno")},
    )
    assert res.returncode == 0, res.stderr
    assert kp.open(res.stdout.strip()) == {"password": "from-deno-secret"}


def test_log_filter_redacts_whatever_the_caller_logs():
    reg = SecretRegistry()
    reg.add("s3cr3t-value")
    reg.add("ab")  # too short to redact safely: ignored
    assert reg.redact("x s3cr3t-value y ab") == "x *** y ab"
    SECRETS.add("pa55w0rd-for-logs")
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    log = logging.getLogger("rackpilot.test")
    log.info("login with %s", "pa55w0rd-for-logs", extra={"cred": {"password": "pa55w0rd-for-logs"}})
    try:
        raise RuntimeError("bad password pa55w0rd-for-logs")
    except RuntimeError:
        log.exception("failed")
    out = buf.getvalue()
    assert "pa55w0rd-for-logs" not in out and out.count("***") >= 3
    first = json.loads(out.splitlines()[0])
    assert first["msg"] == "login with ***" and first["logger"] == "rackpilot.test"


def test_error_classification():
    assert classify(httpx.ConnectError("down")) == "transient"
    assert classify(APIError({"code": "503", "message": "Service Unavailable"})) == "transient"
    assert classify(APIError({"code": "PGRST001", "message": "no connection"})) == "transient"
    assert classify(APIError({"code": "57P01", "message": "terminating connection"})) == "transient"
    assert classify(APIError({"code": "P0001", "message": "stale_epoch: job x"})) == "fenced"
    assert classify(APIError({"code": "P0001", "message": "not_resumable: step"})) == "permanent"
    assert classify(APIError({"code": "22023", "message": "invalid_argument: x"})) == "permanent"
    assert classify(APIError({"code": "08006", "message": "connection failure"})) == "transient"
    assert classify(APIError({"code": "404", "message": "Not Found"})) == "permanent"


def test_notification_rendering_redacts_and_builds_a_card():
    SECRETS.add("card-secret-123")
    subject, body = render(
        "job_failed", {"job_id": "0123456789", "type": "selftest", "error": "login card-secret-123 refused"}
    )
    assert subject == "[rackpilot] Job failed: selftest 01234567"
    assert "card-secret-123" not in body and "***" in body
    card = teams_card("job_paused", {"job_id": "j", "pause_reason": "executor_lost", "job_type": "selftest"})
    content = card["attachments"][0]["content"]
    assert card["type"] == "message" and content["type"] == "AdaptiveCard"
    assert "Executor lost" in content["body"][0]["text"]


def test_late_change_events_never_fence_a_newer_lease(monkeypatch, tmp_path):
    from executor.runner import Executor, LeasedJob
    from executor.secrets import load_or_create

    s = settings(monkeypatch, tmp_path)
    ex = Executor(s, load_or_create(s.key_path)[0])
    ex.executor_id = "me"
    session = LeasedJob(ex, {"job_id": "j1", "lease_epoch": 3, "attempts": 1})
    ex.inflight["j1"] = session
    ex.apply_job_row({"id": "j1", "lease_epoch": 2, "status": "pending", "claimed_by": None})  # late event
    ex.apply_job_row(
        {
            "id": "j1",
            "lease_epoch": 3,
            "status": "running",
            "claimed_by": "me",
            "cancel_requested_at": "2026-11-28T00:00:00Z",
        }
    )
    assert not session.fenced and session.cancel_requested
    ex.apply_job_row({"id": "j1", "lease_epoch": 4, "status": "pending", "claimed_by": None})
    assert session.fenced
