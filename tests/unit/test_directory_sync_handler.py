"""executor/handlers/directory_sync.py without a directory: what an executor that lacks the
RACKPILOT_IDM_* settings says, and where it reads them from (tests/integration/
test_identity_sync_job.py runs the job against slapd)."""

from __future__ import annotations

import uuid

import pytest

from executor.config import load_settings
from executor.handlers.directory_sync import DirectorySyncError, DirectorySyncHandler, _identity_settings


@pytest.fixture(autouse=True)
def _no_idm_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("RACKPILOT_IDM_"):
            monkeypatch.delenv(k)


def test_an_executor_without_directory_settings_says_which_are_missing():
    with pytest.raises(DirectorySyncError) as info:
        _identity_settings(None)
    assert "RACKPILOT_IDM_URIS" in str(info.value) and "docs/identity.md" in str(info.value)


def test_the_settings_come_from_the_executors_env_file(tmp_path, monkeypatch):
    env = tmp_path / "executor.env"
    env.write_text(
        "RACKPILOT_SUPABASE_URL=http://127.0.0.1:1\nRACKPILOT_SUPABASE_KEY=k\nRACKPILOT_SITE=dc1\n"
        "RACKPILOT_IDM_URIS=ldaps://idm1.example.org,ldaps://idm2.example.org\n"
        "RACKPILOT_IDM_PRESET=freeipa\nRACKPILOT_IDM_SUFFIX=dc=example,dc=org\n"
        "RACKPILOT_IDM_BIND_CREDENTIAL=directory-sync\n"
    )
    monkeypatch.chdir(tmp_path)  # and no env file is picked up by accident
    idm = _identity_settings(load_settings(env))
    assert idm.uris == ["ldaps://idm1.example.org", "ldaps://idm2.example.org"]
    assert (idm.nesting, idm.bind_credential) == ("memberof", "directory-sync")


def test_params_name_one_site_and_nothing_else():
    h = DirectorySyncHandler()
    h.validate({"type": "directory_sync", "params": {"site_id": str(uuid.uuid4())}})
    for bad in ({}, {"site_id": "dc1"}, {"site_id": str(uuid.uuid4()), "uris": ["ldap://evil"]}):
        with pytest.raises(DirectorySyncError):
            h.validate({"type": "directory_sync", "params": bad})


def test_only_an_executor_with_directory_settings_takes_directory_sync(tmp_path, monkeypatch):
    """The claim gives a job only to an executor that advertises its type: one without the
    RACKPILOT_IDM_* settings does not advertise directory_sync (its hourly default schedule
    would otherwise be failed by whichever executor of the site claimed it first)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from executor.runner import Executor
    from executor.secrets import KeyPair

    monkeypatch.chdir(tmp_path)
    base = "RACKPILOT_SUPABASE_URL=http://127.0.0.1:1\nRACKPILOT_SUPABASE_KEY=k\nRACKPILOT_SITE=dc1\n"
    plain = tmp_path / "plain.env"
    plain.write_text(base + f"RACKPILOT_STATE_DIR={tmp_path / 'a'}\n")
    with_idm = tmp_path / "idm.env"
    with_idm.write_text(
        base + f"RACKPILOT_STATE_DIR={tmp_path / 'b'}\n"
        "RACKPILOT_IDM_URIS=ldaps://idm1.example.org\nRACKPILOT_IDM_PRESET=freeipa\n"
        "RACKPILOT_IDM_SUFFIX=dc=example,dc=org\nRACKPILOT_IDM_BIND_CREDENTIAL=directory-sync\n"
    )
    without = Executor(load_settings(plain), KeyPair(X25519PrivateKey.generate())).job_types
    assert "directory_sync" not in without and "power_operation" in without
    assert (
        "directory_sync" in Executor(load_settings(with_idm), KeyPair(X25519PrivateKey.generate())).job_types
    )
