"""The identity administration screen without a stack (console/models/identity_admin.py):
group mappings and directory settings refused in words, break-glass session states, a
revoke without a reason refused before anything is sent, and the screen is for admins."""

from __future__ import annotations

import datetime as dt

import pytest

from console import screens
from console.errors import ValidationFailed
from console.models.identity_admin import (
    IdentityAdmin,
    check_config,
    format_group_roles,
    parse_group_roles,
    session_state,
)


def test_group_mapping_lines() -> None:
    text = "# who may sign in\noperator: cn=ops,cn=groups,dc=example,dc=org\n\nAdmin: cn=root:x,dc=example,dc=org"
    rows = parse_group_roles(text)
    assert rows == [
        {"group": "cn=ops,cn=groups,dc=example,dc=org", "role": "operator"},
        {"group": "cn=root:x,dc=example,dc=org", "role": "admin"},
    ]
    assert parse_group_roles(format_group_roles(rows)) == rows
    with pytest.raises(ValidationFailed) as exc:
        parse_group_roles("superuser: cn=x,dc=y\noperator: ops")
    assert exc.value.problems == [
        "mapping line 1: start with a role (viewer, operator, approver, admin), a colon, then the group DN",
        "mapping line 2: the group must be a DN such as cn=ops,ou=groups,dc=example,dc=org",
    ]


def test_directory_settings_checked_in_words() -> None:
    assert check_config("executor", [], "", "", "search") == []
    assert check_config("direct", ["ldaps://idm.example.org:636"], "uid={username},dc=x", "", "ad") == []
    p = check_config("direct", ["https://idm.example.org", "ldaps://idm/path"], "uid=x", "(uid=x)", "deep")
    assert len(p) == 4 and "https://idm.example.org, ldaps://idm/path" in p[0]
    assert "must contain {username}" in p[1] and "user filter" in p[2] and "group nesting" in p[3]
    assert check_config("direct", [], "", "", "search") == [
        "directory URLs: a direct site needs at least one",
        "bind DN template: a direct site needs one",
    ]


def test_session_states_and_revoke_needs_a_reason() -> None:
    now = dt.datetime(2026, 12, 7, 1, tzinfo=dt.UTC)
    assert session_state({"expires_at": "2026-12-07T01:30:00Z"}, now) == "live"
    assert session_state({"expires_at": "2026-12-07T00:30:00Z"}, now) == "expired"
    assert (
        session_state({"expires_at": "2026-12-07T01:30:00Z", "revoked_at": "2026-12-07T00:59:00Z"}, now)
        == "revoked"
    )
    with pytest.raises(ValidationFailed) as exc:
        IdentityAdmin(None).revoke("", "too short")
    assert exc.value.problems == [
        "session: choose a live break-glass session",
        "reason: at least 10 characters; it goes to the audit log",
    ]
    s = screens.get("identity")
    assert s.min_role == "admin" and s.group == "Admin" and not s.allowed("approver")
