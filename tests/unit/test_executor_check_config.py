"""``python -m executor --check-config`` checks what start needs, offline.

It fails (exit 2, naming the setting) on an unreadable or truncated key file, a state
folder the executor cannot write, and an env file holding the service key at 0644; its
JSON report says which checks ran. Run as root, the executor child drops the capabilities
that let root ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so the modes bite
as they would for the service's own user.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY = "service-key-for-check-config-tests"
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _drop_root_file_powers() -> None:
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def check(
    tmp_path: Path, *args: str, env_file: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RACKPILOT_")}
    if env_file is None:
        env_file = tmp_path / "executor.env"
        env_file.write_text(
            f"RACKPILOT_SUPABASE_URL=https://example.supabase.co\nRACKPILOT_SUPABASE_KEY={KEY}\n"
            "RACKPILOT_SITE=lab\n"
        )
        os.chmod(env_file, 0o640)
    full.update({"RACKPILOT_STATE_DIR": str(tmp_path / "state"), **env})
    return subprocess.run(
        [sys.executable, "-m", "executor", "--check-config", "--env-file", str(env_file), *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_drop_root_file_powers,
    )


def checks(res: subprocess.CompletedProcess) -> dict[str, dict]:
    return {c["check"]: c for c in json.loads(res.stdout)["checks"]}


def test_a_good_configuration_reports_every_check_it_ran(tmp_path):
    res = check(tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is True and out["online"] is False
    assert list(checks(res)) == [
        "settings",
        "env_file_mode",
        "key_role",
        "state_dir_writable",
        "private_key",
        "policy_file",
    ]
    assert "will be created at first start" in checks(res)["private_key"]["detail"]
    assert KEY not in res.stdout + res.stderr
    assert not (tmp_path / "state").exists()  # checking creates nothing


def test_an_unreadable_key_file_fails(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = state / "executor_key.pem"
    key.write_text("placeholder")
    os.chmod(key, 0o200)  # owner may write, not read: mode passes the 0600 rule, reading fails
    res = check(tmp_path)
    assert res.returncode == 2, res.stdout
    assert checks(res)["private_key"]["ok"] is False
    assert "RACKPILOT_PRIVATE_KEY_PATH" in res.stderr and "Permission denied" in res.stderr


def test_a_truncated_key_file_fails(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = state / "executor_key.pem"
    key.write_text(_truncated_pem())
    os.chmod(key, 0o600)
    res = check(tmp_path)
    assert res.returncode == 2 and "is not a PEM private key" in res.stderr


def test_a_read_only_state_folder_fails(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    try:
        res = check(tmp_path)
    finally:
        os.chmod(state, 0o700)
    assert res.returncode == 2, res.stdout
    assert checks(res)["state_dir_writable"]["ok"] is False
    assert f"RACKPILOT_STATE_DIR: {state} is not writable" in res.stderr


def test_an_env_file_with_the_service_key_at_0644_fails(tmp_path):
    env_file = tmp_path / "executor.env"
    env_file.write_text(
        f"RACKPILOT_SUPABASE_URL=https://example.supabase.co\nRACKPILOT_SUPABASE_KEY={KEY}\n"
        "RACKPILOT_SITE=lab\n"
    )
    os.chmod(env_file, 0o644)
    res = check(tmp_path, env_file=env_file)
    assert res.returncode == 2
    assert f"{env_file} holds the service-role key with mode 0644; it must be 0640 or tighter" in res.stderr
    os.chmod(env_file, 0o640)
    assert check(tmp_path, env_file=env_file).returncode == 0


def test_a_missing_policy_file_fails(tmp_path):
    res = check(tmp_path, RACKPILOT_POLICY_PATH=str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "RACKPILOT_POLICY_PATH" in res.stderr


def test_a_missing_env_file_is_an_error(tmp_path):
    res = check(tmp_path, env_file=tmp_path / "exector.env")
    assert res.returncode == 2 and f"--env-file {tmp_path / 'exector.env'}: no such file" in res.stderr


def _truncated_pem() -> str:
    """The first lines of a private key made now: a truncated PEM file, no key in the repository."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pem = (
        X25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    return pem[:60]
